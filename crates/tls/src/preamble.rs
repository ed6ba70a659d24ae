//! The Weir preamble: the first bytes inside TLS, before the switch to kTLS.
//!
//! Client -> server: `"WEIR" version(1) name_len(1) name protocol(1)` names the destination
//! service. Server -> client: `"WEIR" version(1) status(1)`. The client sends nothing else until
//! the status arrives, so each side's userspace TLS buffer is empty when keys move to the
//! kernel. Sans-IO: this module only encodes and decodes bytes.

const MAGIC: &[u8; 4] = b"WEIR";
const VERSION: u8 = 1;
/// Longest service name (a DNS name).
pub const MAX_SERVICE_LEN: usize = 253;
/// Bytes before the variable part of a request: magic, version, name length.
pub const REQUEST_HEADER_LEN: usize = 6;
/// Length of a response.
pub const RESPONSE_LEN: usize = 6;

/// What the byte stream carries after the preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Opaque bytes.
    Tcp,
    /// HTTP/1.1 (the receiver may read heads).
    Http1,
}

/// The client's request: which service it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Destination service name.
    pub service: String,
    /// Payload protocol.
    pub protocol: Protocol,
}

/// The server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Connected to the service; bytes may flow.
    Ok,
    /// The client's identity may not reach the service.
    Denied,
    /// No such service on this node.
    UnknownService,
    /// The service's backend could not be reached.
    Unavailable,
}

/// A malformed preamble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not starting with `WEIR`.
    #[error("bad magic")]
    Magic,
    /// A version this build does not speak.
    #[error("unsupported preamble version {0}")]
    Version(u8),
    /// Service name empty or longer than 253 bytes.
    #[error("service name length {0} out of range 1..=253")]
    NameLength(usize),
    /// Service name with characters outside `[a-z0-9.-_]`.
    #[error("service name has invalid characters")]
    NameChars,
    /// Unknown protocol or status byte.
    #[error("unknown code {0}")]
    Code(u8),
}

impl Request {
    /// Encodes the request. Fails on a name the decoder would reject.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        check_name(self.service.as_bytes())?;
        let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + self.service.len() + 1);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.service.len() as u8);
        out.extend_from_slice(self.service.as_bytes());
        out.push(match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Http1 => 1,
        });
        Ok(out)
    }

    /// Reads the fixed header: returns how many more bytes the request needs.
    pub fn decode_header(header: &[u8; REQUEST_HEADER_LEN]) -> Result<usize, Error> {
        check_magic_version(&header[..5])?;
        let len = header[5] as usize;
        if len == 0 || len > MAX_SERVICE_LEN {
            return Err(Error::NameLength(len));
        }
        Ok(len + 1)
    }

    /// Decodes the variable part that `decode_header` asked for.
    pub fn decode_body(body: &[u8]) -> Result<Self, Error> {
        let (name, proto) = body.split_at(body.len().saturating_sub(1));
        check_name(name)?;
        let protocol = match proto.first() {
            Some(0) => Protocol::Tcp,
            Some(1) => Protocol::Http1,
            Some(&c) => return Err(Error::Code(c)),
            None => return Err(Error::NameLength(0)),
        };
        let service = std::str::from_utf8(name).map_err(|_| Error::NameChars)?.to_owned();
        Ok(Self { service, protocol })
    }
}

impl Status {
    /// Encodes a response.
    pub fn encode(self) -> [u8; RESPONSE_LEN] {
        let code = match self {
            Self::Ok => 0,
            Self::Denied => 1,
            Self::UnknownService => 2,
            Self::Unavailable => 3,
        };
        [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, code]
    }

    /// Decodes a response.
    pub fn decode(b: &[u8; RESPONSE_LEN]) -> Result<Self, Error> {
        check_magic_version(&b[..5])?;
        match b[5] {
            0 => Ok(Self::Ok),
            1 => Ok(Self::Denied),
            2 => Ok(Self::UnknownService),
            3 => Ok(Self::Unavailable),
            c => Err(Error::Code(c)),
        }
    }
}

fn check_magic_version(b: &[u8]) -> Result<(), Error> {
    if &b[..4] != MAGIC {
        return Err(Error::Magic);
    }
    if b[4] != VERSION {
        return Err(Error::Version(b[4]));
    }
    Ok(())
}

fn check_name(name: &[u8]) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_SERVICE_LEN {
        return Err(Error::NameLength(name.len()));
    }
    if !name.iter().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')) {
        return Err(Error::NameChars);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Request, Error> {
        let header: [u8; REQUEST_HEADER_LEN] = bytes[..REQUEST_HEADER_LEN].try_into().expect("test input has a header");
        let more = Request::decode_header(&header)?;
        assert_eq!(bytes.len(), REQUEST_HEADER_LEN + more, "test input length matches the header");
        Request::decode_body(&bytes[REQUEST_HEADER_LEN..])
    }

    #[test]
    fn request_round_trips_byte_exact() {
        let req = Request { service: "echo.default".into(), protocol: Protocol::Http1 };
        let bytes = req.encode().expect("valid request");
        assert_eq!(bytes, b"WEIR\x01\x0cecho.default\x01");
        assert_eq!(decode(&bytes), Ok(req));
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(decode(b"HTTP\x01\x01a\x00"), Err(Error::Magic));
        assert_eq!(decode(b"WEIR\x02\x01a\x00"), Err(Error::Version(2)));
        assert_eq!(Request::decode_header(b"WEIR\x01\x00"), Err(Error::NameLength(0)));
        assert_eq!(Request::decode_header(b"WEIR\x01\xfe"), Err(Error::NameLength(254)));
        assert_eq!(decode(b"WEIR\x01\x03A/b\x00"), Err(Error::NameChars));
        assert_eq!(decode(b"WEIR\x01\x01a\x07"), Err(Error::Code(7)));
        let long = Request { service: "a".repeat(254), protocol: Protocol::Tcp };
        assert_eq!(long.encode(), Err(Error::NameLength(254)));
    }

    #[test]
    fn status_round_trips_and_rejects_unknown_codes() {
        for s in [Status::Ok, Status::Denied, Status::UnknownService, Status::Unavailable] {
            assert_eq!(Status::decode(&s.encode()), Ok(s));
        }
        assert_eq!(Status::decode(b"WEIR\x01\x09"), Err(Error::Code(9)));
        assert_eq!(Status::decode(b"WEIX\x01\x00"), Err(Error::Magic));
    }
}
