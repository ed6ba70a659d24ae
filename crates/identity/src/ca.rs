//! Weir's built-in certificate authority: an ECDSA P-256 root kept in a directory
//! (`ca.key` 0600, `ca.pem`, `bundle.pem`, `trust-domain`) that issues short-lived SVIDs.
use crate::{Error, IdentitySource, SpiffeId, Svid, TrustBundle};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "ca.pem";
const BUNDLE_FILE: &str = "bundle.pem";
const TRUST_DOMAIN_FILE: &str = "trust-domain";

/// The validity window of a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from (nearly) now for `ttl`. The start is backdated by a tenth of the lifetime
    /// (at most a minute) so a peer whose clock is slightly behind still accepts it.
    pub fn starting_now(ttl: Duration) -> Self {
        let now = SystemTime::now();
        let skew = (ttl / 10).min(Duration::from_secs(60));
        Self { not_before: now - skew, not_after: now + ttl }
    }
}

/// A loaded CA: its root certificate and signing key.
pub struct Ca {
    dir: PathBuf,
    trust_domain: String,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new root in `dir` (made 0700) for `trust_domain`. Refuses to overwrite one.
    pub fn init(dir: &Path, trust_domain: &str) -> Result<Self, Error> {
        // Validate the trust domain the same way peers' IDs are validated.
        SpiffeId::workload(trust_domain, "x", "x")?;
        if dir.join(KEY_FILE).exists() {
            return Err(Error::CaExists(dir.to_owned()));
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))?;
        write_file(&dir.join(TRUST_DOMAIN_FILE), trust_domain.as_bytes(), 0o644)?;
        Self::new_root(dir, trust_domain)
    }

    /// Replaces the signing root with a new one and appends it to the bundle. The old root
    /// stays in the bundle, so SVIDs it signed keep verifying until they expire; nodes pick up
    /// the new bundle at their next rotation.
    pub fn rotate(dir: &Path) -> Result<Self, Error> {
        let old = Self::load(dir)?;
        Self::new_root(dir, &old.trust_domain)
    }

    fn new_root(dir: &Path, trust_domain: &str) -> Result<Self, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("Weir root CA {trust_domain}"));
        dn.push(DnType::OrganizationName, trust_domain);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        let validity = Validity::starting_now(Duration::from_secs(10 * 365 * 24 * 3600));
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        write_file(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&dir.join(CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        // The bundle may later hold several roots (old and new during a CA rotation).
        append_file(&dir.join(BUNDLE_FILE), cert_pem.as_bytes())?;
        Ok(Self { dir: dir.to_owned(), trust_domain: trust_domain.to_owned(), cert_pem, key })
    }

    /// Loads an existing CA from `dir`.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(&dir.join(name), e));
        let key_pem = read(KEY_FILE)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| Error::Parse { what: dir.join(KEY_FILE).display().to_string(), reason: e.to_string() })?;
        Ok(Self {
            dir: dir.to_owned(),
            trust_domain: read(TRUST_DOMAIN_FILE)?.trim().to_owned(),
            cert_pem: read(CERT_FILE)?,
            key,
        })
    }

    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The trust bundle as PEM, read from the directory each time (a `weir ca rotate` adds
    /// roots to it).
    pub fn bundle_pem(&self) -> Result<String, Error> {
        let path = self.dir.join(BUNDLE_FILE);
        std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
    }

    /// Issues an SVID for `id` valid over `validity`. The ID must be in this CA's trust domain.
    pub fn issue(&self, id: &SpiffeId, validity: Validity) -> Result<Svid, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = self.leaf(id, validity, &key)?;
        Svid::from_pem(cert.as_bytes(), key.serialize_pem().as_bytes())
    }

    /// Issues a certificate for `id` over the public key of a PEM certificate signing request,
    /// with the same profile as [`Ca::issue`]: the private key stays with whoever made the
    /// request. The request's signature must verify (proof that its maker holds the key) and
    /// its key must be ECDSA P-256; anything else it asks for (names, SANs, extensions) is
    /// ignored, so the certificate carries exactly `id`. Returns the certificate as PEM.
    pub fn issue_for_csr(&self, id: &SpiffeId, csr_pem: &str, validity: Validity) -> Result<String, Error> {
        let bad = |reason: String| Error::Parse { what: "certificate signing request".into(), reason };
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| bad(e.to_string()))?;
        crate::request::check_p256(csr_pem).map_err(bad)?;
        // rcgen names the key's algorithm after the request's signature algorithm: a P-256 key
        // must have signed with SHA-256, or the certificate would name the wrong curve.
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(bad("not signed with ECDSA P-256 SHA-256".into()));
        }
        self.leaf(id, validity, &csr.public_key)
    }

    /// The SVID profile: one URI SAN, signature and key agreement, client and server auth.
    fn leaf(&self, id: &SpiffeId, validity: Validity, key: &impl rcgen::PublicKeyData) -> Result<String, Error> {
        if id.trust_domain() != self.trust_domain {
            return Err(Error::Parse {
                what: id.to_string(),
                reason: format!("not in this CA's trust domain {}", self.trust_domain),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = id.as_str().try_into().map_err(|e: rcgen::Error| Error::Generate(e))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyAgreement];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        Ok(params.signed_by(key, &issuer)?.pem())
    }
}

impl IdentitySource for Ca {
    fn fetch_svid(&self, id: &SpiffeId, ttl: Duration) -> Result<Svid, Error> {
        self.issue(id, Validity::starting_now(ttl))
    }

    fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        TrustBundle::from_pem(&self.trust_domain, self.bundle_pem()?.as_bytes())
    }
}

fn random_serial() -> Result<SerialNumber, Error> {
    // A fresh P-256 key is 32 random bytes from the system RNG: reuse it as a serial source
    // rather than pulling in another RNG crate.
    let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let der = k.public_key_raw();
    let mut bytes = der[1..17].to_vec();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and never a leading zero byte
    Ok(SerialNumber::from_slice(&bytes))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(data).map_err(|e| Error::io(path, e))
}

fn append_file(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut f =
        std::fs::OpenOptions::new().append(true).create(true).mode(0o644).open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(data).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_writes_private_key_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        Ca::init(&ca_dir, "weir.local").expect("init");
        let mode = std::fs::metadata(ca_dir.join(KEY_FILE)).expect("key exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "CA key must be private");
        assert!(matches!(Ca::init(&ca_dir, "weir.local"), Err(Error::CaExists(_))));
        let loaded = Ca::load(&ca_dir).expect("load");
        assert_eq!(loaded.trust_domain(), "weir.local");
    }

    #[test]
    fn rotation_keeps_the_old_root_in_the_bundle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = Ca::init(dir.path(), "weir.local").expect("init");
        let new = Ca::rotate(dir.path()).expect("rotate");
        assert_ne!(old.root_pem(), new.root_pem());
        assert_eq!(new.trust_domain(), "weir.local");
        let bundle = new.trust_bundle().expect("bundle");
        assert_eq!(bundle.roots.len(), 2, "old and new roots");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the new key is private too");
    }

    #[test]
    fn issues_svid_with_one_uri_san() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::init(dir.path(), "weir.local").expect("init");
        let id = SpiffeId::workload("weir.local", "default", "client").expect("id");
        let svid = ca.fetch_svid(&id, Duration::from_secs(3600)).expect("issue");
        assert_eq!(svid.id, id);
        assert!(svid.not_after > SystemTime::now() + Duration::from_secs(3500));
        let other = SpiffeId::workload("other.domain", "default", "client").expect("id");
        assert!(ca.fetch_svid(&other, Duration::from_secs(60)).is_err(), "foreign trust domain must be refused");
    }
}
