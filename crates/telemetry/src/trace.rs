//! W3C Trace Context (`traceparent`): continue the caller's trace with a new span for this hop,
//! or start one when the request carries none (or an invalid one).

/// The trace context of one request as it leaves this hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id (hex, lower case).
    pub trace_id: String,
    /// This hop's span id (8 bytes hex): the parent-id the next hop sees.
    pub span_id: String,
    /// The caller's span id, when the trace was continued.
    pub parent_id: Option<String>,
    /// Trace flags (hex byte).
    pub flags: String,
}

impl TraceContext {
    /// Continues `incoming` (a `traceparent` value) or starts a new sampled trace. `random`
    /// gives 24 random bytes (trace id then span id).
    pub fn continue_or_start(incoming: Option<&[u8]>, random: [u8; 24]) -> Self {
        Self::continue_or_start_sampling(incoming, random, 1.0)
    }

    /// As [`Self::continue_or_start`]; a trace this hop starts is marked sampled with
    /// probability `ratio` (decided from its random trace id), a continued one keeps its
    /// caller's decision: what OpenTelemetry calls parent-based ratio sampling.
    pub fn continue_or_start_sampling(incoming: Option<&[u8]>, random: [u8; 24], ratio: f64) -> Self {
        let span_id = hex(&random[16..]);
        match incoming.and_then(parse) {
            Some((trace_id, parent, flags)) => Self { trace_id, span_id, parent_id: Some(parent), flags },
            None => {
                let draw = u64::from_le_bytes(random[..8].try_into().unwrap_or([0; 8]));
                let sampled = (draw as f64) < ratio * u64::MAX as f64 || ratio >= 1.0;
                let flags = if sampled { "01" } else { "00" }.into();
                Self { trace_id: hex(&random[..16]), span_id, parent_id: None, flags }
            }
        }
    }

    /// The sampled flag: whether this request's span is worth exporting.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|f| f & 1 == 1)
    }

    /// The `traceparent` value to send on.
    pub fn header(&self) -> String {
        let mut h = String::with_capacity(55);
        for part in ["00-", &self.trace_id, "-", &self.span_id, "-", &self.flags] {
            h.push_str(part);
        }
        h
    }
}

/// `version-traceid-parentid-flags`; version 00 exactly, or a later version's first four
/// fields (forward compatible). All-zero ids and version ff are invalid.
fn parse(v: &[u8]) -> Option<(String, String, String)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex =
        |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = lower_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && lower_hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && lower_hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    valid.then(|| (trace.to_owned(), parent.to_owned(), flags.to_owned()))
}

/// Lower-case hex without a `format!` per byte (this runs for every request).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: [u8; 24] = [0xab; 24];

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::continue_or_start(Some(incoming), RANDOM);
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(t.header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01");
    }

    #[test]
    fn missing_or_invalid_parents_start_a_new_trace() {
        for bad in [
            &b"garbage"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let t = TraceContext::continue_or_start(Some(bad), RANDOM);
            assert_eq!(t.parent_id, None, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(t.header(), format!("00-{}-{}-01", "ab".repeat(16), "ab".repeat(8)));
        }
        assert_eq!(TraceContext::continue_or_start(None, RANDOM).parent_id, None);
    }

    #[test]
    fn new_traces_are_sampled_by_ratio_and_continued_ones_keep_their_flag() {
        let draws = |ratio: f64| {
            (0..10_000u32)
                .filter(|n| {
                    let mut r = [7u8; 24];
                    r[..8].copy_from_slice(&(u64::from(*n) * 1_844_674_407_370_955).to_le_bytes());
                    TraceContext::continue_or_start_sampling(None, r, ratio).sampled()
                })
                .count()
        };
        assert_eq!(draws(1.0), 10_000);
        assert_eq!(draws(0.0), 0);
        assert!((900..1100).contains(&draws(0.1)), "{}", draws(0.1));
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceContext::continue_or_start_sampling(Some(unsampled), RANDOM, 1.0).sampled());
        let sampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceContext::continue_or_start_sampling(Some(sampled), RANDOM, 0.0).sampled());
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let t =
            TraceContext::continue_or_start(Some(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x"), RANDOM);
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(t.flags, "00");
    }
}
