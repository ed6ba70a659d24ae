//! SVIDs (an X.509 chain whose leaf carries exactly one SPIFFE URI SAN, plus its key) and trust
//! bundles.
use crate::{Error, SpiffeId};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::time::{Duration, SystemTime};

/// An X.509 SVID: the certificate chain, its private key and the facts read from the leaf.
pub struct Svid {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub id: SpiffeId,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pem: (String, String),
    /// Leaf serial number, hex.
    pub serial: String,
    /// Leaf validity start.
    pub not_before: SystemTime,
    /// Leaf validity end.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Parses a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &chain_pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| parse_err("SVID certificate PEM", e))?;
        let leaf = chain.first().ok_or_else(|| parse_err("SVID certificate PEM", "no certificate"))?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| parse_err("SVID key PEM", e))?
            .ok_or_else(|| parse_err("SVID key PEM", "no private key"))?;
        let facts = LeafFacts::read(leaf)?;
        Ok(Self {
            id: facts.id,
            serial: facts.serial,
            not_before: facts.not_before,
            not_after: facts.not_after,
            chain,
            key,
            pem: (String::from_utf8_lossy(chain_pem).into_owned(), String::from_utf8_lossy(key_pem).into_owned()),
        })
    }

    /// The private key (a copy; rustls takes ownership).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The chain and key as PEM, for `weir ca issue`.
    pub fn to_pem(&self) -> (&str, &str) {
        (&self.pem.0, &self.pem.1)
    }

    /// The midpoint of the validity window: when a node fetches its next SVID.
    pub fn rotation_due(&self) -> SystemTime {
        let life = self.not_after.duration_since(self.not_before).unwrap_or(Duration::ZERO);
        self.not_before + life / 2
    }

    /// True when `now` is outside the validity window.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after || now < self.not_before
    }
}

/// The facts Weir reads from a leaf certificate.
pub(crate) struct LeafFacts {
    pub id: SpiffeId,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafFacts {
    pub(crate) fn read(der: &CertificateDer<'_>) -> Result<Self, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| parse_err("certificate", e))?;
        let id = spiffe_id_of(&cert)?;
        let ts =
            |t: x509_parser::time::ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
        Ok(Self {
            id,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: ts(cert.validity().not_before),
            not_after: ts(cert.validity().not_after),
        })
    }
}

/// The SPIFFE ID of a certificate: its one and only URI SAN.
pub fn spiffe_id_of_der(der: &[u8]) -> Result<SpiffeId, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| parse_err("certificate", e))?;
    spiffe_id_of(&cert)
}

fn spiffe_id_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<SpiffeId, Error> {
    use x509_parser::extensions::GeneralName;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| parse_err("subjectAltName", e))?
        .ok_or_else(|| parse_err("certificate", "no subjectAltName: not an SVID"))?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => Ok(uri.parse()?),
        (None, _) => Err(parse_err("certificate", "no URI SAN: not an SVID")),
        (Some(_), Some(_)) => Err(parse_err("certificate", "more than one URI SAN: not an SVID")),
    }
}

/// The roots that peers of one trust domain are verified against. Several roots may be present
/// while a CA rotates.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    /// The trust domain the roots speak for.
    pub trust_domain: String,
    /// Root certificates.
    pub roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Parses one or more PEM certificates.
    pub fn from_pem(trust_domain: &str, pem: &[u8]) -> Result<Self, Error> {
        let roots: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .map_err(|e| parse_err("trust bundle PEM", e))?;
        if roots.is_empty() {
            return Err(parse_err("trust bundle PEM", "no certificate"));
        }
        Ok(Self { trust_domain: trust_domain.to_owned(), roots })
    }

    /// Adds the roots of `other` (same trust domain), e.g. the next CA during a rotation.
    pub fn merge(&mut self, other: TrustBundle) {
        for r in other.roots {
            if !self.roots.contains(&r) {
                self.roots.push(r);
            }
        }
    }
}

fn parse_err(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::Parse { what: what.to_owned(), reason: reason.to_string() }
}
