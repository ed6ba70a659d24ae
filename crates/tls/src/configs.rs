//! rustls client and server configurations built from the node's current SVID and trust
//! bundle, rebuilt on every rotation. Handshakes take the latest `Arc`; open connections keep
//! what they negotiated.
use crate::SpiffeServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use weir_identity::{SpiffeId, Svid, SvidStore, TrustBundle};

/// The node's TLS configurations.
pub struct TlsConfigs {
    provider: Arc<CryptoProvider>,
    secret_extraction: bool,
    built: RwLock<Built>,
}

struct Built {
    server: Arc<ServerConfig>,
    client_auth: (Vec<rustls::pki_types::CertificateDer<'static>>, Arc<Svid>),
    roots: Arc<RootCertStore>,
    clients: HashMap<SpiffeId, Arc<ClientConfig>>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigs").field("secret_extraction", &self.secret_extraction).finish_non_exhaustive()
    }
}

impl TlsConfigs {
    /// The SPIFFE ID these configurations present.
    pub fn id(&self) -> SpiffeId {
        self.built.read().unwrap_or_else(|p| p.into_inner()).client_auth.1.id.clone()
    }

    /// Builds configurations for TLS 1.3 only. `suites` restricts cipher suites (e.g. to those
    /// the kernel can take over); `secret_extraction` must be on for the kTLS hand-off.
    pub fn new(
        svid: Arc<Svid>,
        bundle: &TrustBundle,
        suites: Option<&[SupportedCipherSuite]>,
        secret_extraction: bool,
    ) -> Result<Self, rustls::Error> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // AES-128-GCM first: cheapest with AES-NI and offloadable by every kTLS kernel.
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        let preferred =
            [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256];
        provider.cipher_suites = preferred
            .into_iter()
            .filter(|s| suites.is_none_or(|allowed| allowed.iter().any(|a| a.suite() == s.suite())))
            .collect();
        if provider.cipher_suites.is_empty() {
            return Err(rustls::Error::General("no usable TLS 1.3 cipher suite".into()));
        }
        let provider = Arc::new(provider);
        let built = Self::build(&provider, secret_extraction, svid, bundle)?;
        Ok(Self { provider, secret_extraction, built: RwLock::new(built) })
    }

    fn build(
        provider: &Arc<CryptoProvider>,
        secret_extraction: bool,
        svid: Arc<Svid>,
        bundle: &TrustBundle,
    ) -> Result<Built, rustls::Error> {
        let mut roots = RootCertStore::empty();
        for r in &bundle.roots {
            roots.add(r.clone())?;
        }
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(svid.chain.clone(), svid.private_key())?;
        // No tickets: nothing may arrive after the switch to kTLS except application data.
        server.send_tls13_tickets = 0;
        server.enable_secret_extraction = secret_extraction;
        Ok(Built { server: Arc::new(server), client_auth: (svid.chain.clone(), svid), roots, clients: HashMap::new() })
    }

    /// Rebuilds everything for a new SVID or bundle.
    pub fn update(&self, svid: Arc<Svid>, bundle: &TrustBundle) -> Result<(), rustls::Error> {
        let built = Self::build(&self.provider, self.secret_extraction, svid, bundle)?;
        *self.built.write().unwrap_or_else(|p| p.into_inner()) = built;
        Ok(())
    }

    /// The server configuration for inbound handshakes.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.built.read().unwrap_or_else(|p| p.into_inner()).server.clone()
    }

    /// The client configuration for a peer that must present `expected`.
    pub fn client(&self, expected: &SpiffeId) -> Result<Arc<ClientConfig>, rustls::Error> {
        if let Some(c) = self.built.read().unwrap_or_else(|p| p.into_inner()).clients.get(expected) {
            return Ok(c.clone());
        }
        let mut built = self.built.write().unwrap_or_else(|p| p.into_inner());
        let verifier = SpiffeServerVerifier::new(built.roots.clone(), expected.clone(), self.provider.clone());
        let mut client = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(built.client_auth.0.clone(), built.client_auth.1.private_key())?;
        client.enable_secret_extraction = self.secret_extraction;
        // The peer is named by its SPIFFE ID, not a DNS name: send no SNI.
        client.enable_sni = false;
        let client = Arc::new(client);
        built.clients.insert(expected.clone(), client.clone());
        Ok(client)
    }

    /// Rebuilds the configurations whenever `store` publishes a new SVID or bundle. Returns
    /// when the store is dropped.
    pub async fn follow(self: Arc<Self>, store: Arc<SvidStore>) {
        let mut svids = store.subscribe();
        let mut bundles = store.subscribe_bundle();
        loop {
            tokio::select! {
                r = svids.changed() => if r.is_err() { return },
                r = bundles.changed() => if r.is_err() { return },
            }
            let (svid, bundle) = (svids.borrow_and_update().clone(), bundles.borrow_and_update().clone());
            if let Err(e) = self.update(svid, &bundle) {
                tracing::error!(error = %e, "could not rebuild TLS configuration after rotation; keeping the previous one");
            }
        }
    }
}

/// The SPIFFE ID of the peer's leaf certificate, after a completed handshake.
pub fn peer_spiffe_id(conn: &rustls::CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    weir_identity::spiffe_id_of_der(leaf.as_ref()).ok()
}
