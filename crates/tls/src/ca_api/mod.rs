//! The built-in CA over the network: `weir ca serve` ([`CaServer`]) and the planes' client
//! ([`RemoteCa`], an [`IdentitySource`](weir_identity::IdentitySource)).
//!
//! One exchange per TLS 1.3 connection. The server presents a certificate its own CA issued
//! for [`server_id`] (`spiffe://<td>/weir/ca`); the client checks it chains to a root it was
//! given and carries that ID. The client then sends one JSON line, a [`Request`]: its token,
//! the SPIFFE ID it wants, a CSR for a key it made (the private key never leaves the plane) and
//! the lifetime it wants. The server answers one JSON line, a [`Response`]: the certificate
//! chain and the trust bundle, or the reason for a refusal; then it closes. Clients are
//! authenticated by token and may only ask for the IDs the clients file lists for them
//! ([`Clients`]). Owns the wire format, the server and the client; the certificate profile is
//! `weir_identity::Ca`'s.
use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_identity::SpiffeId;

mod client;
mod clients;
mod server;

pub use client::RemoteCa;
pub use clients::{Client, Clients, ClientsError, IdPattern, Token};
pub use server::{CaServer, Refusal, ServerError, ServerStats, MAX_CONNECTIONS, SERVER_TIMEOUT};

/// The largest request or response line, newline included: a CSR is under 1 KiB, a chain and
/// a bundle of a few roots a few KiB.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// How long the client waits to connect, and for each read and write.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The SPIFFE ID the CA's server certificate carries.
pub fn server_id(trust_domain: &str) -> Result<SpiffeId, weir_identity::SpiffeIdError> {
    format!("spiffe://{trust_domain}/weir/ca").parse()
}

/// What a client asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The client's secret, from its token file.
    pub token: String,
    /// The SPIFFE ID the certificate must carry.
    pub id: String,
    /// A PEM CSR for the client's key; only its key is used.
    pub csr_pem: String,
    /// The lifetime wanted; the server caps it.
    pub ttl_secs: u64,
}

/// What the server answers: `chain_pem` and `bundle_pem`, or `error`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// The certificate, leaf first, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_pem: Option<String>,
    /// The roots to verify peers against, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_pem: Option<String>,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
