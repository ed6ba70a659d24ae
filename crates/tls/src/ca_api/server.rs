//! `weir ca serve`: the CA answering [`Request`]s over TLS 1.3.
//!
//! The decision for one request ([`CaServer::answer`]) is a plain function of the bytes and
//! the clients file; the loop around it bounds everything a client controls: at most
//! [`MAX_CONNECTIONS`] at once, [`MAX_MESSAGE`] bytes, and [`SERVER_TIMEOUT`] for the
//! handshake, the read and the write.
use super::{server_id, Clients, Request, Response, MAX_MESSAGE};
use rustls::ServerConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_identity::{Ca, SpiffeId, Validity};

/// Connections served at once; more are closed at accept (counted as `busy`).
pub const MAX_CONNECTIONS: usize = 64;
/// Time allowed for each of handshake, request read and answer write.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the server's own certificate; a new one is issued at half of it.
const SERVER_CERT_TTL: Duration = Duration::from_secs(3600);

/// Why a request was refused: the label of the refusal counter and of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Not one JSON request line, or too long.
    Malformed,
    /// No client holds this token.
    BadToken,
    /// The ID is not a SPIFFE ID of this trust domain.
    BadId,
    /// The client may not ask for this ID.
    NotAllowed,
    /// The CSR does not parse, its signature does not verify or its key is not P-256.
    BadCsr,
    /// The CA could not sign (its files, its key).
    Internal,
    /// Too many connections at once.
    Busy,
}

impl Refusal {
    /// Stable label.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadToken => "bad_token",
            Self::BadId => "bad_id",
            Self::NotAllowed => "not_allowed",
            Self::BadCsr => "bad_csr",
            Self::Internal => "internal",
            Self::Busy => "busy",
        }
    }
}

/// Counts since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Certificates issued.
    pub issued: u64,
    /// Refusals by reason.
    pub refused: BTreeMap<Refusal, u64>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The server's certificate could not be issued.
    #[error("server certificate: {0}")]
    Identity(#[from] weir_identity::Error),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The CA server.
pub struct CaServer {
    ca: Ca,
    clients: Clients,
    max_ttl: Duration,
    id: SpiffeId,
    tls: Mutex<ServerTls>,
    stats: Mutex<ServerStats>,
    permits: Arc<tokio::sync::Semaphore>,
}

struct ServerTls {
    config: Arc<ServerConfig>,
    renew_at: SystemTime,
}

impl std::fmt::Debug for CaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaServer").field("id", &self.id).field("clients", &self.clients.len()).finish_non_exhaustive()
    }
}

impl CaServer {
    /// A server for `ca` answering `clients`, capping lifetimes at `max_ttl`.
    pub fn new(ca: Ca, clients: Clients, max_ttl: Duration) -> Result<Arc<Self>, ServerError> {
        let id = server_id(ca.trust_domain()).map_err(weir_identity::Error::from)?;
        let tls = server_tls(&ca, &id)?;
        Ok(Arc::new(Self {
            ca,
            clients,
            max_ttl,
            id,
            tls: Mutex::new(tls),
            stats: Mutex::new(ServerStats::default()),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }))
    }

    /// The SPIFFE ID the server presents.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Counts since start.
    pub fn stats(&self) -> ServerStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Accepts and answers connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "CA server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.count(Refusal::Busy);
                tracing::warn!(%peer, "CA server: too many connections; closed");
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = me.connection(sock, peer).await {
                    tracing::info!(%peer, error = e, "CA server: connection ended without an answer");
                }
            });
        }
    }

    async fn connection(&self, sock: TcpStream, peer: SocketAddr) -> Result<(), String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls_config());
        let mut tls = within("TLS handshake", acceptor.accept(sock)).await?;
        let mut line = Vec::new();
        let limit = (&mut tls).take(MAX_MESSAGE as u64);
        within("read", tokio::io::BufReader::new(limit).read_until(b'\n', &mut line)).await?;
        let answer = if line.len() >= MAX_MESSAGE && !line.ends_with(b"\n") {
            self.refuse(Refusal::Malformed, None, peer, format!("request longer than {MAX_MESSAGE} bytes"))
        } else {
            self.answer(&line, peer)
        };
        let mut out = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
        out.push(b'\n');
        within("write", tls.write_all(&out)).await?;
        within("close", tls.shutdown()).await
    }

    /// The answer to one request line from `peer`.
    pub fn answer(&self, line: &[u8], peer: SocketAddr) -> Response {
        let req: Request = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => return self.refuse(Refusal::Malformed, None, peer, format!("malformed request: {e}")),
        };
        let Some(client) = self.clients.authenticate(&req.token) else {
            return self.refuse(Refusal::BadToken, None, peer, "unknown token".into());
        };
        let who = Some(client.name.as_str());
        let id: SpiffeId = match req.id.parse() {
            Ok(id) => id,
            Err(e) => return self.refuse(Refusal::BadId, who, peer, format!("{:?} is not a SPIFFE ID: {e}", req.id)),
        };
        if id.trust_domain() != self.ca.trust_domain() {
            let reason = format!("id {id} is not in trust domain {}", self.ca.trust_domain());
            return self.refuse(Refusal::BadId, who, peer, reason);
        }
        // Never the server's own identity, whatever a wildcard in the clients file says.
        if id == self.id || !client.allows(&id) {
            let reason = format!("id {id} not allowed for client {}", client.name);
            return self.refuse(Refusal::NotAllowed, who, peer, reason);
        }
        let ttl = Duration::from_secs(req.ttl_secs).clamp(Duration::from_secs(1), self.max_ttl);
        let chain = match self.ca.issue_for_csr(&id, &req.csr_pem, Validity::starting_now(ttl)) {
            Ok(c) => c,
            Err(e @ weir_identity::Error::Parse { .. }) => {
                return self.refuse(Refusal::BadCsr, who, peer, format!("bad CSR: {e}"))
            }
            Err(e) => return self.refuse(Refusal::Internal, who, peer, format!("cannot sign: {e}")),
        };
        let bundle = match self.ca.bundle_pem() {
            Ok(b) => b,
            Err(e) => return self.refuse(Refusal::Internal, who, peer, format!("cannot read the trust bundle: {e}")),
        };
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).issued += 1;
        tracing::info!(client = client.name, %peer, %id, ttl_secs = ttl.as_secs(), "certificate issued");
        Response { chain_pem: Some(chain), bundle_pem: Some(bundle), error: None }
    }

    fn refuse(&self, why: Refusal, client: Option<&str>, peer: SocketAddr, reason: String) -> Response {
        self.count(why);
        tracing::warn!(client = client.unwrap_or("(unknown)"), %peer, refusal = why.as_label(), %reason, "request refused");
        Response { error: Some(reason), ..Response::default() }
    }

    fn count(&self, why: Refusal) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()).refused.entry(why).or_default() += 1;
    }

    /// The current TLS configuration; its certificate is re-issued once past half its life,
    /// keeping the old one if that fails (it is still valid for half its lifetime).
    fn tls_config(&self) -> Arc<ServerConfig> {
        let mut tls = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if SystemTime::now() >= tls.renew_at {
            match server_tls(&self.ca, &self.id) {
                Ok(new) => {
                    tracing::info!(id = %self.id, "CA server certificate re-issued");
                    *tls = new;
                }
                Err(e) => {
                    tracing::error!(error = %e, "CA server certificate could not be re-issued; keeping the current one")
                }
            }
        }
        tls.config.clone()
    }
}

fn server_tls(ca: &Ca, id: &SpiffeId) -> Result<ServerTls, ServerError> {
    let svid = ca.issue(id, Validity::starting_now(SERVER_CERT_TTL))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(svid.chain.clone(), svid.private_key())?;
    // One exchange per connection: nothing to resume.
    config.send_tls13_tickets = 0;
    Ok(ServerTls { config: Arc::new(config), renew_at: svid.rotation_due() })
}

async fn within<T, E: std::fmt::Display>(
    step: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(SERVER_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{step}: {e}")),
        Err(_) => Err(format!("{step}: timed out after {} s", SERVER_TIMEOUT.as_secs())),
    }
}
