//! Who a workload is, and how it proves it.
//!
//! Owns: [`SpiffeId`] (parsed once, typed), the built-in [`Ca`] that issues short-lived X.509
//! SVIDs, [`TrustBundle`]s with one or more roots, the [`IdentitySource`] trait (the CA is one
//! implementation, `weir_tls::ca_api::RemoteCa` another), [`KeyRequest`] (a key made here and a CSR
//! for a remote CA), and [`SvidStore`], which rotates a node's SVID at half its lifetime. Does not own TLS configuration: see `weir-tls`.
#![forbid(unsafe_code)]

mod ca;
mod request;
mod spiffe;
mod store;
mod svid;

pub use ca::{Ca, Validity};
pub use request::KeyRequest;
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use store::{RotationState, SvidStore};
pub use svid::{spiffe_id_of_der, Svid, TrustBundle};

/// Anything that can hand out this node's current SVID and the trust bundle to verify peers.
pub trait IdentitySource: Send + Sync + 'static {
    /// A fresh SVID for `id`, valid for about `ttl` (a source may choose its own lifetime).
    fn fetch_svid(&self, id: &SpiffeId, ttl: std::time::Duration) -> Result<Svid, Error>;
    /// The roots peers are verified against.
    fn trust_bundle(&self) -> Result<TrustBundle, Error>;
}

/// Identity failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the CA or an SVID could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or signing failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key could not be parsed.
    #[error("{what}: {reason}")]
    Parse {
        /// What was being parsed.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A SPIFFE ID was malformed.
    #[error(transparent)]
    SpiffeId(#[from] SpiffeIdError),
    /// The CA exists already (refusing to overwrite a root).
    #[error("a CA already exists in {0}")]
    CaExists(std::path::PathBuf),
    /// A CA reached over the network could not be asked, or refused: the text names the CA's
    /// address and the step that failed, because it ends up on the other plane's `/readyz`.
    #[error("CA {ca}: {step}: {reason}")]
    Remote {
        /// The CA's address, as configured.
        ca: String,
        /// What failed: `connect`, `TLS handshake`, `send`, `receive`, `refused`, `answer`.
        step: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}
