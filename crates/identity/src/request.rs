//! Asking a remote CA for an SVID without giving it the private key: [`KeyRequest`] makes the
//! key pair on this plane and a certificate signing request (CSR) for it, then checks that the
//! certificate the CA sends back certifies exactly that key and the SPIFFE ID asked for.
//! Owns no networking: the transport is `weir_tls::ca_api`.
use crate::{Error, SpiffeId, Svid};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};

/// A fresh ECDSA P-256 key pair and a CSR for it.
pub struct KeyRequest {
    key: KeyPair,
    csr_pem: String,
}

impl std::fmt::Debug for KeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRequest").finish_non_exhaustive()
    }
}

impl KeyRequest {
    /// Generates the key pair and signs a CSR with it. The CSR names nothing: the CA puts the
    /// SPIFFE ID it was asked for (and allows) into the certificate, and ignores any name here.
    pub fn new() -> Result<Self, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr_pem = params.serialize_request(&key)?.pem()?;
        Ok(Self { key, csr_pem })
    }

    /// The CSR, PEM.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The SVID made of the CA's answer (`chain_pem`, leaf first) and this key. Refused when
    /// the leaf certifies another key or carries another SPIFFE ID than `id`.
    pub fn into_svid(self, chain_pem: &str, id: &SpiffeId) -> Result<Svid, Error> {
        let svid = Svid::from_pem(chain_pem.as_bytes(), self.key.serialize_pem().as_bytes())?;
        let bad = |reason: String| Error::Parse { what: "certificate from the CA".into(), reason };
        if &svid.id != id {
            return Err(bad(format!("carries {} instead of {id}", svid.id)));
        }
        let (_, leaf) = x509_parser::parse_x509_certificate(svid.chain[0].as_ref()).map_err(|e| bad(e.to_string()))?;
        if leaf.public_key().subject_public_key.data.as_ref() != self.key.public_key_raw() {
            return Err(bad("certifies another key than the one this plane asked for".into()));
        }
        Ok(svid)
    }
}

/// `Ok` when the CSR's subject public key is an EC key on P-256 (a 65-byte uncompressed point).
pub(crate) fn check_p256(csr_pem: &str) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let pem = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| format!("not PEM: {e}"))?.1;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| format!("not a CSR: {e}"))?;
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
    let point = spki.subject_public_key.data.as_ref();
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err("the key is not ECDSA P-256".into());
    }
    if point.len() != 65 || point[0] != 0x04 {
        return Err("the key is not an uncompressed P-256 point".into());
    }
    Ok(())
}
