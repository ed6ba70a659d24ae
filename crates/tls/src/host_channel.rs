//! The host channel's identity preamble (the `dpu` and `host` roles of DESIGN.md). Between a
//! host and its DPU the bytes are plaintext (the DPU does the wire's TLS), so the identity of
//! the workload behind each connection cannot come from a handshake: the host plane names it
//! in the first bytes and authenticates them with a key the two planes share. The DPU presents
//! that workload's SVID on the wire only when the preamble verifies, is fresh and was not seen
//! before, so a host process without the key cannot borrow a workload's identity, and a
//! recorded preamble cannot be replayed. Sans-IO: bytes in, verdicts out.
//!
//! Host → DPU: `"WHC" version(1) time_ms(8, BE) nonce(16) id_len(2, BE) workload-id
//! weir-request mac(32)`, where `weir-request` is the mesh preamble's request
//! ([`crate::preamble`]: service and protocol) and `mac` is HMAC-SHA256 over everything before
//! it. DPU → host: the mesh preamble's status.
//!
//! Inbound (a DPU's service whose backend is on the host): the same preamble from the DPU to
//! the host plane, naming the remote caller instead of a workload, under a key derived from
//! the shared one for that direction ([`HostKey::inbound`]), so a preamble recorded in one
//! direction never verifies in the other.
use crate::preamble::{self, Request, REQUEST_HEADER_LEN};
use aws_lc_rs::hmac;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_identity::SpiffeId;

const MAGIC: &[u8; 3] = b"WHC";
const VERSION: u8 = 1;
/// Magic, version, time, nonce, id length.
const FIXED_LEN: usize = 4 + 8 + 16 + 2;
const MAC_LEN: usize = 32;
/// Longest workload SPIFFE ID accepted (the SPIFFE spec caps URIs at 2048 bytes).
pub const MAX_ID_LEN: usize = 2048;
/// Shortest key accepted: the MAC's own strength.
pub const MIN_KEY_LEN: usize = 32;
/// Nonces remembered at most; beyond that new connections are refused until old ones expire
/// (fail closed rather than forget a nonce that could be replayed).
pub const MAX_REMEMBERED: usize = 1 << 20;

/// A malformed, forged, stale or replayed preamble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not starting with `WHC`.
    #[error("bad magic")]
    Magic,
    /// A version this build does not speak.
    #[error("unsupported host-channel version {0}")]
    Version(u8),
    /// Workload ID empty or longer than [`MAX_ID_LEN`].
    #[error("workload id length {0} out of range 1..=2048")]
    IdLength(usize),
    /// Workload ID not a SPIFFE ID.
    #[error("workload id is not a SPIFFE ID")]
    Id,
    /// The embedded mesh request is malformed.
    #[error("mesh request: {0}")]
    Request(#[from] preamble::Error),
    /// The bytes given are not as many as the preamble's fields say.
    #[error("preamble is {got} bytes, its fields say {want}")]
    Length {
        /// Bytes given.
        got: usize,
        /// Bytes the fields add up to (0: not known from the bytes given).
        want: usize,
    },
    /// The MAC does not verify: wrong key or altered bytes.
    #[error("authentication failed")]
    Mac,
    /// Its time is further from ours than the window allows.
    #[error("stale: {0} ms from this plane's clock")]
    Stale(u64),
    /// Its nonce was seen within the window.
    #[error("replayed")]
    Replayed,
    /// Too many nonces remembered to accept another now.
    #[error("replay cache full")]
    Busy,
    /// A key shorter than [`MIN_KEY_LEN`].
    #[error("host-channel key has {0} bytes, at least 32 needed")]
    KeyLength(usize),
    /// The system's random source failed (no nonce, no preamble).
    #[error("no random nonce from the system")]
    Random,
}

impl Error {
    /// Stable metric label.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Magic | Self::Version(_) | Self::IdLength(_) | Self::Id | Self::Request(_) | Self::Length { .. } => {
                "malformed"
            }
            Self::Mac => "bad_mac",
            Self::Stale(_) => "stale",
            Self::Replayed => "replayed",
            Self::Busy => "busy",
            Self::KeyLength(_) => "key",
            Self::Random => "random",
        }
    }
}

/// What a verified preamble asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRequest {
    /// The workload on the host that opened the connection.
    pub workload: SpiffeId,
    /// The mesh service and protocol it wants.
    pub request: Request,
}

/// The key the two planes share.
pub struct HostKey(hmac::Key);

impl HostKey {
    /// A key from raw bytes (at least [`MIN_KEY_LEN`]).
    pub fn new(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::KeyLength(bytes.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// The key for the DPU → host direction (inbound connections, naming the remote caller),
    /// derived from the same shared bytes.
    pub fn inbound(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::KeyLength(bytes.len()));
        }
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, bytes), b"weir host channel: dpu to host");
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())))
    }

    /// Fresh key bytes from the system's CSPRNG (a DPU's key rotation).
    pub fn fresh_bytes() -> Result<Vec<u8>, Error> {
        let mut bytes = vec![0u8; MIN_KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Random)?;
        Ok(bytes)
    }

    /// A short name of the key, the same on both planes, that reveals nothing of it: which key
    /// the other plane installed.
    pub fn fingerprint(&self) -> String {
        let tag = hmac::sign(&self.0, b"weir host channel: key fingerprint");
        tag.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The host side: the preamble for a connection of `workload` to `request`, made now with
    /// a random nonce from the system's CSPRNG.
    pub fn seal_now(&self, workload: &SpiffeId, request: &Request) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Random)?;
        self.seal(workload, request, SystemTime::now(), nonce)
    }

    /// The preamble for a connection of `workload` to `request`, made at `now` with `nonce`
    /// (fresh and random for every connection: see [`Self::seal_now`]).
    pub fn seal(
        &self,
        workload: &SpiffeId,
        request: &Request,
        now: SystemTime,
        nonce: [u8; 16],
    ) -> Result<Vec<u8>, Error> {
        let id = workload.as_str().as_bytes();
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(Error::IdLength(id.len()));
        }
        let inner = request.encode()?;
        let mut out = Vec::with_capacity(FIXED_LEN + id.len() + inner.len() + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&millis(now).to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&inner);
        let tag = hmac::sign(&self.0, &out);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }
}

/// How many bytes a preamble starting with `buf` needs in all, once that is known (`None`:
/// read more first). Fails as soon as the bytes seen are malformed.
pub fn needed(buf: &[u8]) -> Result<Option<usize>, Error> {
    let known = read_to(buf)?;
    Ok((known.complete).then_some(known.len))
}

/// How far a reader may read, knowing `buf`: the whole preamble once its length is known,
/// else the next field that tells more. Reading exactly this much never takes a byte past it.
pub fn read_to(buf: &[u8]) -> Result<Known, Error> {
    let partial = |len| Ok(Known { len, complete: false });
    if buf.len() < FIXED_LEN {
        check_magic(buf)?;
        return partial(FIXED_LEN);
    }
    check_magic(buf)?;
    let id_len = u16::from_be_bytes([buf[28], buf[29]]) as usize;
    if id_len == 0 || id_len > MAX_ID_LEN {
        return Err(Error::IdLength(id_len));
    }
    let request_at = FIXED_LEN + id_len;
    let Some(header) = buf.get(request_at..request_at + REQUEST_HEADER_LEN) else {
        return partial(request_at + REQUEST_HEADER_LEN);
    };
    let header: &[u8; REQUEST_HEADER_LEN] = header.try_into().map_err(|_| Error::Magic)?;
    let body = Request::decode_header(header)?;
    Ok(Known { len: request_at + REQUEST_HEADER_LEN + body + MAC_LEN, complete: true })
}

/// What [`read_to`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Bytes to have read.
    pub len: usize,
    /// Whether `len` is the whole preamble.
    pub complete: bool,
}

fn check_magic(buf: &[u8]) -> Result<(), Error> {
    let n = buf.len().min(3);
    if buf[..n] != MAGIC[..n] {
        return Err(Error::Magic);
    }
    match buf.get(3) {
        Some(&v) if v != VERSION => Err(Error::Version(v)),
        _ => Ok(()),
    }
}

/// The receiving side: verifies preambles and remembers their nonces for the freshness
/// window. After a [`Verifier::rekey`] the previous key still verifies, so preambles sealed
/// just before the other plane learnt of the new key are not refused.
pub struct Verifier {
    key: HostKey,
    previous: Option<HostKey>,
    window: Duration,
    /// Nonce → its preamble's time (ms); forgotten once outside the window.
    seen: HashMap<[u8; 16], u64>,
}

impl Verifier {
    /// Accepts preambles whose time is within `window` of this plane's clock.
    pub fn new(key: HostKey, window: Duration) -> Self {
        Self { key, previous: None, window, seen: HashMap::new() }
    }

    /// Verifies under `key` from now on, and under the current key until the next rekey.
    pub fn rekey(&mut self, key: HostKey) {
        self.previous = Some(std::mem::replace(&mut self.key, key));
    }

    /// Checks the whole preamble `buf` (exactly [`needed`] bytes) at `now`: form, MAC,
    /// freshness, then replay. Only a preamble that passes all four is remembered.
    pub fn check(&mut self, buf: &[u8], now: SystemTime) -> Result<HostRequest, Error> {
        let total = needed(buf)?.ok_or(Error::Length { got: buf.len(), want: 0 })?;
        if buf.len() != total {
            return Err(Error::Length { got: buf.len(), want: total });
        }
        let (signed, tag) = buf.split_at(total - MAC_LEN);
        let under = |k: &HostKey| hmac::verify(&k.0, signed, tag).is_ok();
        if !under(&self.key) && !self.previous.as_ref().is_some_and(under) {
            return Err(Error::Mac);
        }
        let sent = u64::from_be_bytes(buf[4..12].try_into().map_err(|_| Error::Magic)?);
        let now = millis(now);
        let skew = now.abs_diff(sent);
        let window = self.window.as_millis() as u64;
        if skew > window {
            return Err(Error::Stale(skew));
        }
        let id_len = u16::from_be_bytes([buf[28], buf[29]]) as usize;
        let id = std::str::from_utf8(&signed[FIXED_LEN..FIXED_LEN + id_len]).map_err(|_| Error::Id)?;
        let workload: SpiffeId = id.parse().map_err(|_| Error::Id)?;
        let request = Request::decode_body(&signed[FIXED_LEN + id_len + REQUEST_HEADER_LEN..])?;
        let nonce: [u8; 16] = buf[12..28].try_into().map_err(|_| Error::Magic)?;
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.retain(|_, &mut t| now.abs_diff(t) <= window);
        }
        if self.seen.contains_key(&nonce) {
            return Err(Error::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Error::Busy);
        }
        self.seen.insert(nonce, sent);
        Ok(HostRequest { workload, request })
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use crate::preamble::Protocol;

    fn key(b: u8) -> HostKey {
        HostKey::new(&[b; 32]).unwrap()
    }

    fn request() -> Request {
        Request { service: "echo".into(), protocol: Protocol::Tcp }
    }

    fn workload() -> SpiffeId {
        SpiffeId::workload("weir.local", "shop", "cart").unwrap()
    }

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_sealed_preamble_verifies_once_and_its_length_is_known_early() {
        let bytes = key(1).seal(&workload(), &request(), t(1_000_000), [7; 16]).unwrap();
        assert_eq!(&bytes[..4], b"WHC\x01");
        for cut in 0..FIXED_LEN + workload().as_str().len() + REQUEST_HEADER_LEN {
            assert_eq!(needed(&bytes[..cut]), Ok(None), "{cut} bytes");
        }
        assert_eq!(needed(&bytes), Ok(Some(bytes.len())));
        let mut v = Verifier::new(key(1), Duration::from_secs(30));
        let got = v.check(&bytes, t(1_010_000)).unwrap();
        assert_eq!(got, HostRequest { workload: workload(), request: request() });
        assert_eq!(v.check(&bytes, t(1_010_001)), Err(Error::Replayed), "the same bytes again");
    }

    #[test]
    fn a_wrong_key_or_any_altered_byte_fails_authentication() {
        let bytes = key(1).seal(&workload(), &request(), t(5_000), [1; 16]).unwrap();
        let mut v = Verifier::new(key(2), Duration::from_secs(30));
        assert_eq!(v.check(&bytes, t(5_000)), Err(Error::Mac));
        let mut v = Verifier::new(key(1), Duration::from_secs(30));
        // Flip each byte after the length fields (which fail as malformed instead).
        for i in FIXED_LEN..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 0x20;
            let err = v.check(&forged, t(5_000)).unwrap_err();
            assert!(matches!(err, Error::Mac | Error::Request(_) | Error::Length { .. }), "byte {i}: {err:?}");
        }
        // Another workload of the same name length, under the MAC of the genuine preamble.
        let other =
            key(1).seal(&SpiffeId::workload("weir.local", "shop", "cars").unwrap(), &request(), t(5_000), [1; 16]);
        let mut spliced = bytes[..bytes.len() - MAC_LEN].to_vec();
        spliced.extend_from_slice(&other.unwrap()[bytes.len() - MAC_LEN..]);
        assert_eq!(v.check(&spliced, t(5_000)), Err(Error::Mac));
        assert!(v.check(&bytes, t(5_000)).is_ok(), "the genuine one still passes: failures are not remembered");
    }

    #[test]
    fn a_preamble_of_one_direction_never_verifies_in_the_other() {
        let outbound = key(1).seal(&workload(), &request(), t(5_000), [4; 16]).unwrap();
        let inbound = HostKey::inbound(&[1; 32]).unwrap().seal(&workload(), &request(), t(5_000), [5; 16]).unwrap();
        let mut at_dpu = Verifier::new(key(1), Duration::from_secs(30));
        let mut at_host = Verifier::new(HostKey::inbound(&[1; 32]).unwrap(), Duration::from_secs(30));
        assert_eq!(at_host.check(&outbound, t(5_000)), Err(Error::Mac), "host -> DPU bytes sent to the host");
        assert_eq!(at_dpu.check(&inbound, t(5_000)), Err(Error::Mac), "DPU -> host bytes sent to the DPU");
        assert!(at_host.check(&inbound, t(5_000)).is_ok() && at_dpu.check(&outbound, t(5_000)).is_ok());
        assert!(matches!(HostKey::inbound(&[1; 8]), Err(Error::KeyLength(8))));
    }

    #[test]
    fn after_a_rekey_the_new_and_the_previous_key_verify_and_the_one_before_does_not() {
        let mut v = Verifier::new(key(1), Duration::from_secs(30));
        v.rekey(key(2));
        v.rekey(key(3));
        let sealed = |k: u8, n: u8| key(k).seal(&workload(), &request(), t(5_000), [n; 16]).unwrap();
        assert!(v.check(&sealed(3, 1), t(5_000)).is_ok(), "the new key");
        assert!(v.check(&sealed(2, 2), t(5_000)).is_ok(), "the previous key");
        assert_eq!(v.check(&sealed(1, 3), t(5_000)), Err(Error::Mac), "two generations old");
        assert_eq!(key(3).fingerprint(), key(3).fingerprint());
        assert_ne!(key(3).fingerprint(), key(2).fingerprint());
        assert_eq!(key(3).fingerprint().len(), 16);
    }

    #[test]
    fn stale_and_future_preambles_are_refused() {
        let mut v = Verifier::new(key(1), Duration::from_secs(30));
        let old = key(1).seal(&workload(), &request(), t(100_000), [3; 16]).unwrap();
        assert_eq!(v.check(&old, t(130_001)), Err(Error::Stale(30_001)));
        let ahead = key(1).seal(&workload(), &request(), t(200_000), [4; 16]).unwrap();
        assert_eq!(v.check(&ahead, t(169_000)), Err(Error::Stale(31_000)));
    }

    #[test]
    fn malformed_bytes_are_named() {
        assert_eq!(needed(b"GET / HTTP/1.1\r\n"), Err(Error::Magic));
        assert_eq!(needed(b"WH"), Ok(None));
        assert_eq!(needed(b"WHC\x02"), Err(Error::Version(2)));
        let mut zero_id = b"WHC\x01".to_vec();
        zero_id.extend_from_slice(&[0; 24]);
        zero_id.extend_from_slice(&[0, 0]);
        assert_eq!(needed(&zero_id), Err(Error::IdLength(0)));
        let mut long = zero_id.clone();
        long[28..30].copy_from_slice(&2049u16.to_be_bytes());
        assert_eq!(needed(&long), Err(Error::IdLength(2049)));
        assert_eq!(HostKey::new(&[0; 31]).err(), Some(Error::KeyLength(31)));
        let not_spiffe = "https://example.com/x".parse::<SpiffeId>();
        assert!(not_spiffe.is_err(), "the parser refuses other URIs");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut v = Verifier::new(key(1), Duration::from_secs(30));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
            if seed.is_multiple_of(3) && len >= 4 {
                bytes[..4].copy_from_slice(b"WHC\x01");
            }
            if let Ok(Some(n)) = needed(&bytes) {
                if n <= bytes.len() {
                    let _ = v.check(&bytes[..n], t(0));
                }
            }
        }
    }
}
