//! Walking a chunked body (RFC 9112 §7.1) without touching its data: the decoder consumes
//! chunk-size lines, the CRLF after each chunk and the trailer section, and tells the caller
//! how many data bytes come next, which the caller moves (splices) itself.
use crate::Error;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// What comes next in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More framing bytes are needed.
    NeedMore,
    /// The next `n` bytes are chunk data: move them, then call [`Decoder::data_moved`].
    Data(u64),
    /// The body (trailers included) is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// A chunked-body walker.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl Decoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes framing from the start of `buf` (never data bytes): returns how many bytes
    /// were consumed and what comes next.
    pub fn advance(&mut self, buf: &[u8]) -> Result<(usize, Step), Error> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            match self.state {
                State::Done => return Ok((used, Step::Done)),
                State::Data(n) => return Ok((used, Step::Data(n))),
                State::Size => {
                    let Some(line) = line(rest, MAX_LINE)? else { return Ok((used, Step::NeedMore)) };
                    let size = chunk_size(&rest[..line - 2])?;
                    used += line;
                    self.state = if size == 0 { State::Trailers(0) } else { State::Data(size) };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Ok((used, Step::NeedMore));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(Error::BadChunk("chunk data not followed by CRLF"));
                    }
                    used += 2;
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = line(rest, MAX_TRAILERS - seen)? else {
                        return Ok((used, Step::NeedMore));
                    };
                    let field = &rest[..line - 2];
                    used += line;
                    if field.is_empty() {
                        self.state = State::Done;
                    } else {
                        trailer_field(field)?;
                        self.state = State::Trailers(seen + line);
                    }
                }
            }
        }
    }

    /// Records that `n` data bytes of the current chunk were moved.
    pub fn data_moved(&mut self, n: u64) {
        if let State::Data(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
        }
    }
}

/// Length of the CRLF-terminated line at the start of `b`, CRLF included; `None` if no line end
/// yet. A bare CR or LF is an error; so is a line longer than `max`.
fn line(b: &[u8], max: usize) -> Result<Option<usize>, Error> {
    for (i, &c) in b.iter().enumerate() {
        if i >= max {
            return Err(Error::BadChunk("line too long"));
        }
        match c {
            b'\n' => return Err(Error::BadChunk("bare LF")),
            b'\r' => {
                return match b.get(i + 1) {
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(Error::BadChunk("bare CR")),
                    None => Ok(None),
                }
            }
            _ => {}
        }
    }
    if b.len() >= max {
        return Err(Error::BadChunk("line too long"));
    }
    Ok(None)
}

/// `chunk-size [ chunk-ext ]`: 1 to 16 hex digits, then optional `;ext` parts.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::BadChunk("missing chunk size"));
    }
    if digits > 16 {
        return Err(Error::BadChunk("chunk size overflow"));
    }
    let ext = &line[digits..];
    let ext_start = ext.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(ext.len());
    if ext_start < ext.len() && ext[ext_start] != b';' {
        return Err(Error::BadChunk("invalid character after chunk size"));
    }
    if ext.iter().any(|c| *c < 0x20 && *c != b'\t' || *c == 0x7f) {
        return Err(Error::BadChunk("control character in chunk extension"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| Error::BadChunk("chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| Error::BadChunk("chunk size overflow"))
}

/// A trailer field line: a token, a colon (no whitespace before it), a value without controls.
fn trailer_field(field: &[u8]) -> Result<(), Error> {
    let colon = field.iter().position(|c| *c == b':').ok_or(Error::BadChunk("trailer without a colon"))?;
    let name = &field[..colon];
    let valid_name =
        !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b));
    if !valid_name {
        return Err(Error::BadChunk("invalid trailer name"));
    }
    if field[colon + 1..].iter().any(|c| *c < 0x20 && *c != b'\t' || *c == 0x7f) {
        return Err(Error::BadChunk("control character in a trailer"));
    }
    // RFC 9110 §6.5.1: framing fields are not allowed in trailers; a recipient that merged them
    // into the head would re-frame the message.
    const FRAMING: [&[u8]; 4] = [b"content-length", b"transfer-encoding", b"host", b"trailer"];
    if FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        return Err(Error::BadChunk("framing field in trailers"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_fields_in_trailers_are_refused() {
        for t in ["Content-Length: 5", "transfer-encoding: chunked", "Host: x", "Trailer: a"] {
            let body = format!("1\r\na\r\n0\r\n{t}\r\n\r\n");
            assert_eq!(
                walk(body.as_bytes()).expect_err("refused"),
                Error::BadChunk("framing field in trailers"),
                "{t}"
            );
        }
        assert!(walk(b"1\r\na\r\n0\r\nX-Checksum: 1\r\n\r\n").is_ok());
    }

    /// Walks `body` completely, pretending to move data bytes; returns the data bytes.
    fn walk(body: &[u8]) -> Result<(Vec<u8>, usize), Error> {
        let mut d = Decoder::new();
        let (mut pos, mut data) = (0, Vec::new());
        loop {
            let (used, step) = d.advance(&body[pos..])?;
            pos += used;
            match step {
                Step::Done => return Ok((data, pos)),
                Step::NeedMore => return Err(Error::BadChunk("test input ended early")),
                Step::Data(n) => {
                    let take = (n as usize).min(body.len() - pos);
                    data.extend_from_slice(&body[pos..pos + take]);
                    pos += take;
                    d.data_moved(take as u64);
                    if take == 0 {
                        return Err(Error::BadChunk("test input ended early"));
                    }
                }
            }
        }
    }

    #[test]
    fn walks_chunks_extensions_and_trailers() {
        let body = b"5\r\nhello\r\n6;name=value;x\r\n world\r\nA \t;ext\r\n0123456789\r\n0\r\nExpires: never\r\nX-T: 1\r\n\r\nNEXT";
        let (data, used) = walk(body).expect("valid body");
        assert_eq!(data, b"hello world0123456789");
        assert_eq!(&body[used..], b"NEXT", "stops exactly at the end of the body");
    }

    #[test]
    fn asks_for_more_at_every_split_point() {
        let body = b"3\r\nabc\r\n0\r\n\r\n";
        for split in 0..body.len() {
            let mut d = Decoder::new();
            let (used, step) = d.advance(&body[..split]).expect("prefix is fine");
            assert!(used <= split);
            assert!(matches!(step, Step::NeedMore | Step::Data(_)), "split {split}: {step:?}");
        }
    }

    #[test]
    fn rejects_malformed_chunks() {
        let cases: &[(&[u8], &str)] = &[
            (b"\r\n", "missing chunk size"),
            (b"g\r\n", "missing chunk size"),
            (b"-1\r\n", "missing chunk size"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "invalid character after chunk size"),
            (b"5 5\r\nhello\r\n0\r\n\r\n", "invalid character after chunk size"),
            (b"11111111111111111\r\n", "chunk size overflow"),
            (b"5\nhello\r\n", "bare LF"),
            (b"5\rhello\r\n", "bare CR"),
            (b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"0\r\nBad Name: x\r\n\r\n", "invalid trailer name"),
            (b"0\r\nNoColon\r\n\r\n", "trailer without a colon"),
            (b"0\r\nX: a\x01b\r\n\r\n", "control character in a trailer"),
            (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", "control character in chunk extension"),
        ];
        for (input, want) in cases {
            assert_eq!(walk(input), Err(Error::BadChunk(want)), "input {:?}", String::from_utf8_lossy(input));
        }
        let long = format!("5;{}\r\n", "x".repeat(MAX_LINE));
        assert_eq!(walk(long.as_bytes()), Err(Error::BadChunk("line too long")));
        assert_eq!(Error::BadChunk("x").status(), 400);
    }
}
