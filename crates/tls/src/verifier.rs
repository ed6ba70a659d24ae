//! Verifies a server's SVID: the chain must end at a root of our trust bundle and the leaf's
//! single URI SAN must be the SPIFFE ID the route expects. DNS names play no part.
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::sync::Arc;
use weir_identity::SpiffeId;

/// A `ServerCertVerifier` for one expected peer identity.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// Accepts only servers presenting `expected`, chained to `roots`.
    pub fn new(roots: Arc<RootCertStore>, expected: SpiffeId, provider: Arc<CryptoProvider>) -> Self {
        Self { roots, expected, provider }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let got = weir_identity::spiffe_id_of_der(end_entity.as_ref())
            .map_err(|e| Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e)))))?;
        if got != self.expected {
            tracing::warn!(expected = %self.expected, got = %got, "peer presented the wrong SPIFFE ID");
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weir_identity::{Ca, IdentitySource, Validity};

    fn verify(v: &SpiffeServerVerifier, svid: &weir_identity::Svid) -> Result<ServerCertVerified, Error> {
        let name = ServerName::try_from("weir.mesh").expect("name");
        v.verify_server_cert(&svid.chain[0], &svid.chain[1..], &name, &[], UnixTime::now())
    }

    #[test]
    fn a_bundle_with_two_roots_accepts_both_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Ca::init(&dir.path().join("old"), "weir.local").expect("old ca");
        let new = Ca::init(&dir.path().join("new"), "weir.local").expect("new ca");
        let other = Ca::init(&dir.path().join("other"), "weir.local").expect("unrelated ca");
        let mut bundle = old.trust_bundle().expect("bundle");
        bundle.merge(new.trust_bundle().expect("bundle"));
        let mut roots = RootCertStore::empty();
        for r in &bundle.roots {
            roots.add(r.clone()).expect("root");
        }
        let server = SpiffeId::workload("weir.local", "default", "server").expect("id");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let v = SpiffeServerVerifier::new(Arc::new(roots), server.clone(), provider);
        let valid = Validity::starting_now(Duration::from_secs(600));
        assert!(verify(&v, &old.issue(&server, valid).expect("svid")).is_ok(), "old root still trusted");
        assert!(verify(&v, &new.issue(&server, valid).expect("svid")).is_ok(), "new root trusted");
        assert!(verify(&v, &other.issue(&server, valid).expect("svid")).is_err(), "a root outside the bundle is not");
        let wrong = SpiffeId::workload("weir.local", "default", "impostor").expect("id");
        assert_eq!(
            verify(&v, &new.issue(&wrong, valid).expect("svid")).map(|_| ()),
            Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)),
            "right root, wrong SPIFFE ID"
        );
    }
}
