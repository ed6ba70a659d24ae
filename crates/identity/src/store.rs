//! The node's current SVID and its rotation at half-life.
//!
//! New handshakes read the latest SVID through a `watch` channel; open connections keep the
//! keys they negotiated, so rotation never touches them.
use crate::{IdentitySource, SpiffeId, Svid, TrustBundle};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the last rotation attempt did, for `/readyz` and metrics.
#[derive(Debug, Clone, Default)]
pub struct RotationState {
    /// When the last attempt ran.
    pub last_attempt: Option<SystemTime>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
    /// Successful rotations since start.
    pub rotations: u64,
    /// Failed attempts since start.
    pub failures: u64,
}

/// Holds the node's SVID and trust bundle and keeps them fresh.
pub struct SvidStore {
    source: Arc<dyn IdentitySource>,
    id: SpiffeId,
    ttl: Duration,
    svid: watch::Sender<Arc<Svid>>,
    bundle: watch::Sender<Arc<TrustBundle>>,
    state: Mutex<RotationState>,
}

impl std::fmt::Debug for SvidStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidStore").field("id", &self.id).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl SvidStore {
    /// Fetches the first SVID and bundle; fails if either cannot be had.
    pub fn new(source: Arc<dyn IdentitySource>, id: SpiffeId, ttl: Duration) -> Result<Arc<Self>, crate::Error> {
        let svid = source.fetch_svid(&id, ttl)?;
        let bundle = source.trust_bundle()?;
        Ok(Arc::new(Self {
            source,
            id,
            ttl,
            svid: watch::Sender::new(Arc::new(svid)),
            bundle: watch::Sender::new(Arc::new(bundle)),
            state: Mutex::new(RotationState::default()),
        }))
    }

    /// The SPIFFE ID this store holds an SVID for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The current SVID.
    pub fn current(&self) -> Arc<Svid> {
        self.svid.borrow().clone()
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.bundle.borrow().clone()
    }

    /// Notified on every new SVID.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Svid>> {
        self.svid.subscribe()
    }

    /// Notified on every new trust bundle.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<TrustBundle>> {
        self.bundle.subscribe()
    }

    /// The last rotation attempt.
    pub fn rotation_state(&self) -> RotationState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// `Ok` when the SVID is valid now and the last rotation attempt did not fail.
    pub fn readiness(&self, now: SystemTime) -> Result<(), String> {
        let svid = self.current();
        let failed = self.rotation_state().last_error.map(|e| format!("last SVID rotation failed: {e}"));
        if svid.is_expired(now) {
            // An SVID expires because rotation kept failing: say why, not only that.
            let expired = format!("SVID {} (serial {}) is outside its validity window", svid.id, svid.serial);
            return Err(failed.map_or(expired.clone(), |f| format!("{expired}; {f}")));
        }
        failed.map_or(Ok(()), Err)
    }

    /// Fetches a new SVID and bundle now.
    pub fn rotate(&self) -> Result<(), crate::Error> {
        let result = self.source.fetch_svid(&self.id, self.ttl).and_then(|s| Ok((s, self.source.trust_bundle()?)));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.last_attempt = Some(SystemTime::now());
        match result {
            Ok((svid, bundle)) => {
                tracing::info!(id = %svid.id, serial = %svid.serial, "SVID rotated");
                state.rotations += 1;
                state.last_error = None;
                self.svid.send_replace(Arc::new(svid));
                self.bundle.send_replace(Arc::new(bundle));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "SVID rotation failed");
                state.failures += 1;
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Fetches the first SVID and bundle on a blocking thread: for async callers, since a
    /// source may wait on the network (a remote CA) and must not hold a runtime worker.
    pub async fn new_blocking(
        source: Arc<dyn IdentitySource>,
        id: SpiffeId,
        ttl: Duration,
    ) -> Result<Arc<Self>, crate::Error> {
        let what = id.to_string();
        tokio::task::spawn_blocking(move || Self::new(source, id, ttl))
            .await
            .map_err(|e| crate::Error::Parse { what, reason: format!("SVID fetch task: {e}") })?
    }

    /// Rotates at each SVID's half-life, forever; after a failure retries with backoff (1 s
    /// doubling to 30 s) until it succeeds. Each attempt runs on a blocking thread, so a slow
    /// or unreachable CA never holds a runtime worker.
    pub async fn run_rotation(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let due = self.current().rotation_due();
            let wait = due.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            loop {
                let me = self.clone();
                match tokio::task::spawn_blocking(move || me.rotate()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => {} // recorded and logged by `rotate`
                    Err(e) => tracing::error!(error = %e, "SVID rotation task failed"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            backoff = Duration::from_secs(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, Error};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A CA that can be told to fail, like an unreachable SPIRE agent.
    struct Flaky {
        ca: Ca,
        broken: AtomicBool,
    }

    impl IdentitySource for Flaky {
        fn fetch_svid(&self, id: &SpiffeId, ttl: Duration) -> Result<Svid, Error> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(Error::Parse { what: "identity source".into(), reason: "unreachable".into() });
            }
            self.ca.fetch_svid(id, ttl)
        }

        fn trust_bundle(&self) -> Result<TrustBundle, Error> {
            self.ca.trust_bundle()
        }
    }

    #[test]
    fn failed_rotation_makes_the_node_unready_until_a_rotation_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source =
            Arc::new(Flaky { ca: Ca::init(dir.path(), "weir.local").expect("ca"), broken: AtomicBool::new(false) });
        let id = SpiffeId::workload("weir.local", "default", "node").expect("id");
        let store = SvidStore::new(source.clone(), id, Duration::from_secs(60)).expect("store");
        let first = store.current().serial.clone();
        assert_eq!(store.readiness(SystemTime::now()), Ok(()));

        source.broken.store(true, Ordering::SeqCst);
        assert!(store.rotate().is_err());
        let err = store.readiness(SystemTime::now()).expect_err("unready after a failed rotation");
        assert!(err.contains("rotation failed") && err.contains("unreachable"), "{err}");
        assert_eq!(store.current().serial, first, "the old SVID stays in use");
        let later = SystemTime::now() + Duration::from_secs(3600);
        let err = store.readiness(later).expect_err("expired after failed rotations");
        assert!(err.contains("outside its validity window") && err.contains("unreachable"), "expiry and why: {err}");
        assert_eq!(store.rotation_state().failures, 1);

        source.broken.store(false, Ordering::SeqCst);
        store.rotate().expect("rotation");
        assert_eq!(store.readiness(SystemTime::now()), Ok(()));
        assert_ne!(store.current().serial, first, "a new SVID after a successful rotation");
    }

    #[test]
    fn an_expired_svid_makes_the_node_unready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca: Arc<dyn IdentitySource> = Arc::new(Ca::init(dir.path(), "weir.local").expect("ca"));
        let id = SpiffeId::workload("weir.local", "default", "node").expect("id");
        let store = SvidStore::new(ca, id, Duration::from_secs(60)).expect("store");
        let later = SystemTime::now() + Duration::from_secs(3600);
        let err = store.readiness(later).expect_err("expired");
        assert!(err.contains("outside its validity window"), "{err}");
    }
}
