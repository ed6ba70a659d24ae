//! The host channel's key on both planes, and its rotation.
//!
//! The key file holds the first key. After that the DPU makes a fresh key every
//! `host_channel.key_rotation_secs` and sends it to the host plane over the control connection
//! (mTLS, each side's identity checked). Each plane verifies what it receives under the new and
//! the previous key, so a rotation refuses nothing in flight. Each plane seals with a key only
//! once the other verifies it: the host as soon as it has the key (the DPU made it), the DPU
//! (inbound preambles) once the host's state line names the key as installed. The DPU does not
//! rotate again before that, so the two planes are never more than one key apart.
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use weir_identity::SpiffeId;
use weir_tls::host_channel::{Error, HostKey, HostRequest, Verifier};
use weir_tls::preamble::Request;

/// Which plane holds the keys: it decides which direction each key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plane {
    Host,
    Dpu,
}

/// One plane's channel keys.
pub(crate) struct ChannelKeys {
    plane: Plane,
    /// Checks the other plane's preambles (the DPU: the host's outbound ones; the host: the
    /// DPU's inbound ones), under the current and the previous key.
    verifier: Mutex<Verifier>,
    state: Mutex<State>,
}

struct State {
    /// The newest key's bytes and fingerprint.
    bytes: Vec<u8>,
    fingerprint: String,
    /// What this plane seals with (the host: outbound under the newest key; the DPU: inbound
    /// under the newest key the host has installed).
    seal: HostKey,
    /// The DPU: the newest key is not yet installed on the host.
    unacknowledged: bool,
}

impl ChannelKeys {
    /// Keys from the key file's `bytes`, accepting preambles within `window` of the clock.
    pub fn new(plane: Plane, bytes: Vec<u8>, window: Duration) -> Result<Self, Error> {
        let (outbound, inbound) = (HostKey::new(&bytes)?, HostKey::inbound(&bytes)?);
        let fingerprint = outbound.fingerprint();
        let (check, seal) = match plane {
            Plane::Dpu => (outbound, inbound),
            Plane::Host => (inbound, outbound),
        };
        let state = State { bytes, fingerprint, seal, unacknowledged: false };
        Ok(Self { plane, verifier: Mutex::new(Verifier::new(check, window)), state: Mutex::new(state) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a preamble from the other plane (form, MAC, freshness, replay).
    pub fn check(&self, buf: &[u8], now: SystemTime) -> Result<HostRequest, Error> {
        self.verifier.lock().unwrap_or_else(|p| p.into_inner()).check(buf, now)
    }

    /// A preamble for a connection of `id` (the host: its workload; the DPU: the remote caller).
    pub fn seal(&self, id: &SpiffeId, request: &Request) -> Result<Vec<u8>, Error> {
        self.state().seal.seal_now(id, request)
    }

    /// The newest key's fingerprint (in this plane's state line).
    pub fn fingerprint(&self) -> String {
        self.state().fingerprint.clone()
    }

    /// The DPU: makes a fresh key and verifies under it from now on. Skipped while the host
    /// has not installed the last one. `Ok(false)`: skipped.
    pub fn rotate(&self) -> Result<bool, Error> {
        let mut state = self.state();
        if self.plane != Plane::Dpu || state.unacknowledged {
            return Ok(false);
        }
        let bytes = HostKey::fresh_bytes()?;
        let outbound = HostKey::new(&bytes)?;
        state.fingerprint = outbound.fingerprint();
        state.bytes = bytes;
        state.unacknowledged = true;
        self.verifier.lock().unwrap_or_else(|p| p.into_inner()).rekey(outbound);
        Ok(true)
    }

    /// The DPU: the newest key as hex, to send, with its fingerprint.
    pub fn newest(&self) -> (String, String) {
        let state = self.state();
        (state.bytes.iter().map(|b| format!("{b:02x}")).collect(), state.fingerprint.clone())
    }

    /// The DPU: the host plane says it seals with the key of `fingerprint`; if that is the
    /// newest, inbound preambles are sealed with it from now on.
    pub fn installed_on_host(&self, fingerprint: &str) -> Result<(), Error> {
        let mut state = self.state();
        if self.plane == Plane::Dpu && state.unacknowledged && state.fingerprint == fingerprint {
            state.seal = HostKey::inbound(&state.bytes)?;
            state.unacknowledged = false;
            tracing::info!(key = fingerprint, "host channel key installed on both planes");
        }
        Ok(())
    }

    /// The host: installs the DPU's newest key (`hex`); does nothing if it is the one in use.
    /// `Ok(true)`: a new key.
    pub fn install(&self, hex: &str) -> Result<bool, String> {
        let bytes = from_hex(hex).ok_or("a key line that is not hex")?;
        let outbound = HostKey::new(&bytes).map_err(|e| e.to_string())?;
        let inbound = HostKey::inbound(&bytes).map_err(|e| e.to_string())?;
        let mut state = self.state();
        if self.plane != Plane::Host || outbound.fingerprint() == state.fingerprint {
            return Ok(false);
        }
        state.fingerprint = outbound.fingerprint();
        tracing::info!(key = state.fingerprint, "host channel key from the DPU installed");
        state.bytes = bytes;
        state.seal = outbound;
        self.verifier.lock().unwrap_or_else(|p| p.into_inner()).rekey(inbound);
        Ok(true)
    }
}

/// Bytes from hex digits; `None` if any pair is not hex.
pub(crate) fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// The DPU: rotates every `every`, forever, counting each new key in `rotations`.
pub(crate) async fn run_rotation(
    keys: std::sync::Arc<ChannelKeys>,
    every: Duration,
    rotations: prometheus_client::metrics::counter::Counter,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        match keys.rotate() {
            Ok(true) => {
                rotations.inc();
                tracing::info!(key = keys.fingerprint(), "new host channel key, sent to the host plane");
            }
            Ok(false) => tracing::warn!("host channel key not rotated: the host plane has not installed the last one"),
            Err(e) => tracing::error!(error = %e, "host channel key rotation failed"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use weir_tls::preamble::Protocol;

    fn id() -> SpiffeId {
        SpiffeId::workload("weir.local", "shop", "cart").unwrap()
    }

    fn request() -> Request {
        Request { service: "orders".into(), protocol: Protocol::Tcp }
    }

    #[test]
    fn a_rotation_refuses_nothing_in_flight_and_old_keys_expire() {
        let window = Duration::from_secs(30);
        let (dpu, host) = (
            ChannelKeys::new(Plane::Dpu, vec![7; 32], window).unwrap(),
            ChannelKeys::new(Plane::Host, vec![7; 32], window).unwrap(),
        );
        let now = SystemTime::now;
        assert_eq!(dpu.fingerprint(), host.fingerprint(), "one key file, one key");
        let before = host.seal(&id(), &request()).unwrap();

        assert!(dpu.rotate().unwrap());
        assert!(!dpu.rotate().unwrap(), "no second rotation before the host has the first");
        assert!(dpu.check(&before, now()).is_ok(), "sealed before the rotation: still accepted");
        let inbound = dpu.seal(&id(), &request()).unwrap();
        assert!(host.check(&inbound, now()).is_ok(), "the DPU seals with the old key until the host has the new");

        let (hex, fingerprint) = dpu.newest();
        host.install(&hex).unwrap();
        assert_eq!(host.fingerprint(), fingerprint);
        assert!(dpu.check(&host.seal(&id(), &request()).unwrap(), now()).is_ok(), "the host seals with the new key");
        dpu.installed_on_host(&fingerprint).unwrap();
        assert!(host.check(&dpu.seal(&id(), &request()).unwrap(), now()).is_ok(), "and so does the DPU");

        assert!(dpu.rotate().unwrap());
        host.install(&dpu.newest().0).unwrap();
        let stale = ChannelKeys::new(Plane::Host, vec![7; 32], window).unwrap().seal(&id(), &request()).unwrap();
        assert_eq!(dpu.check(&stale, now()), Err(Error::Mac), "the key file's key, two rotations on");
        assert!(host.install("zz").is_err() && host.install("abcd").is_err(), "not hex; too short");
    }
}
