//! [`RemoteCa`]: SVIDs from a `weir ca serve` over the network, for a plane whose CA is not on
//! its own disk. Blocking I/O with short timeouts: `IdentitySource` is synchronous, and
//! `SvidStore` calls it on a blocking thread.
use super::{server_id, Request, Response, Token, CLIENT_TIMEOUT, MAX_MESSAGE};
use crate::SpiffeServerVerifier;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_identity::{Error, IdentitySource, KeyRequest, SpiffeId, Svid, TrustBundle};

/// A CA reached at `host:port`, verified by a root given in config and by its SPIFFE ID.
pub struct RemoteCa {
    addr: String,
    trust_domain: String,
    token: String,
    tls: Arc<ClientConfig>,
    anchor: TrustBundle,
    /// The bundle of the last answer: it may hold more roots than the anchor (a CA rotation).
    bundle: Mutex<Option<TrustBundle>>,
}

impl std::fmt::Debug for RemoteCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCa").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl RemoteCa {
    /// A client of the CA at `addr` (`host:port`) for `trust_domain`, trusting the PEM
    /// `anchor_pem` for the server's certificate and sending `token`.
    pub fn new(addr: &str, trust_domain: &str, anchor_pem: &[u8], token: String) -> Result<Self, Error> {
        let anchor = TrustBundle::from_pem(trust_domain, anchor_pem)?;
        let mut roots = RootCertStore::empty();
        for r in &anchor.roots {
            roots.add(r.clone()).map_err(|e| Error::Parse { what: "CA trust anchor".into(), reason: e.to_string() })?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = SpiffeServerVerifier::new(Arc::new(roots), server_id(trust_domain)?, provider.clone());
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Parse { what: "TLS configuration".into(), reason: e.to_string() })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // The server is named by its SPIFFE ID, not a DNS name.
        tls.enable_sni = false;
        Ok(Self {
            addr: addr.to_owned(),
            trust_domain: trust_domain.to_owned(),
            token,
            tls: Arc::new(tls),
            anchor,
            bundle: Mutex::new(None),
        })
    }

    /// Like [`RemoteCa::new`], reading the anchor and the token from files (errors name them).
    pub fn from_files(addr: &str, trust_domain: &str, anchor: &Path, token_file: &Path) -> Result<Self, Error> {
        let pem = std::fs::read(anchor).map_err(|e| Error::Io { path: anchor.to_owned(), source: e })?;
        let token =
            Token::read_secret(token_file).map_err(|reason| Error::Parse { what: "CA token file".into(), reason })?;
        Self::new(addr, trust_domain, &pem, token)
    }

    /// The CA's address, as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn fail(&self, step: &'static str, reason: impl std::fmt::Display) -> Error {
        Error::Remote { ca: self.addr.clone(), step, reason: reason.to_string() }
    }

    fn io_fail(&self, step: &'static str, e: std::io::Error) -> Error {
        match e.kind() {
            // A blocking socket's read timeout surfaces as WouldBlock.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                self.fail(step, format!("timed out after {} s", CLIENT_TIMEOUT.as_secs()))
            }
            _ => self.fail(step, e),
        }
    }

    /// One request, one answer.
    fn exchange(&self, request: &Request) -> Result<Response, Error> {
        let addrs = self.addr.to_socket_addrs().map_err(|e| self.fail("resolve", e))?;
        let mut last = None;
        let mut sock = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CLIENT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut sock = match (sock, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(self.io_fail("connect", e)),
            (None, None) => return Err(self.fail("resolve", "no address")),
        };
        let set = |s: &TcpStream| {
            s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
            s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
            s.set_nodelay(true)
        };
        set(&sock).map_err(|e| self.fail("connect", e))?;
        // No SNI is sent; rustls still wants a name, which the SPIFFE verifier ignores.
        let name = ServerName::try_from("weir-ca.invalid").map_err(|e| self.fail("connect", e))?;
        let mut conn = ClientConnection::new(self.tls.clone(), name).map_err(|e| self.fail("TLS handshake", e))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => self.fail(
                    "TLS handshake",
                    format!("{e} (the CA must present {} chained to the configured bundle)", self.server_id()),
                ),
                _ => self.io_fail("TLS handshake", e),
            })?;
        }
        let mut tls = StreamOwned::new(conn, sock);
        let mut line = serde_json::to_vec(request).map_err(|e| self.fail("send", e))?;
        line.push(b'\n');
        tls.write_all(&line).and_then(|()| tls.flush()).map_err(|e| self.io_fail("send", e))?;
        let mut answer = Vec::new();
        let limit = (&mut tls).take(MAX_MESSAGE as u64);
        std::io::BufReader::new(limit).read_until(b'\n', &mut answer).map_err(|e| self.io_fail("receive", e))?;
        if !answer.ends_with(b"\n") {
            let why = if answer.is_empty() { "closed without an answer" } else { "answer cut short or too long" };
            return Err(self.fail("receive", why));
        }
        serde_json::from_slice(&answer).map_err(|e| self.fail("answer", format!("not a CA answer: {e}")))
    }

    fn server_id(&self) -> String {
        server_id(&self.trust_domain).map_or_else(|e| e.to_string(), |id| id.to_string())
    }
}

impl IdentitySource for RemoteCa {
    fn fetch_svid(&self, id: &SpiffeId, ttl: Duration) -> Result<Svid, Error> {
        let key = KeyRequest::new()?;
        let request = Request {
            token: self.token.clone(),
            id: id.to_string(),
            csr_pem: key.csr_pem().to_owned(),
            ttl_secs: ttl.as_secs(),
        };
        let answer = self.exchange(&request)?;
        if let Some(reason) = answer.error {
            return Err(self.fail("refused", reason));
        }
        let (Some(chain), Some(bundle)) = (answer.chain_pem, answer.bundle_pem) else {
            return Err(self.fail("answer", "neither a certificate and bundle nor an error"));
        };
        let bundle =
            TrustBundle::from_pem(&self.trust_domain, bundle.as_bytes()).map_err(|e| self.fail("answer", e))?;
        let svid = key.into_svid(&chain, id).map_err(|e| self.fail("answer", e))?;
        *self.bundle.lock().unwrap_or_else(|p| p.into_inner()) = Some(bundle);
        Ok(svid)
    }

    fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        let last = self.bundle.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(last.unwrap_or_else(|| self.anchor.clone()))
    }
}
