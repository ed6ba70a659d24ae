//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), validated per the SPIFFE ID specification.
use std::fmt;
use std::str::FromStr;

/// A validated SPIFFE ID. Weir issues the `/ns/<ns>/sa/<sa>` form; any valid path is accepted
/// from peers (a SPIRE-issued SVID may use another layout).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    trust_domain_len: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// Missing `spiffe://`.
    #[error("must start with spiffe://")]
    Scheme,
    /// Empty trust domain.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// Trust domain has a character outside `[a-z0-9.-_]`.
    #[error("trust domain has an invalid character {0:?} (allowed: a-z 0-9 . - _)")]
    TrustDomainChar(char),
    /// Path is empty or `/` (a workload ID needs a path).
    #[error("path is empty")]
    EmptyPath,
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("path has an empty segment")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("path has a dot segment")]
    DotSegment,
    /// A path character outside `[A-Za-z0-9.-_]`.
    #[error("path has an invalid character {0:?} (allowed: A-Z a-z 0-9 . - _)")]
    PathChar(char),
    /// Longer than 2048 bytes.
    #[error("longer than 2048 bytes")]
    TooLong,
}

impl SpiffeId {
    /// Builds the Weir workload form `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn workload(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain (no scheme).
    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len().."spiffe://".len() + self.trust_domain_len]
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.uri["spiffe://".len() + self.trust_domain_len..]
    }

    /// The namespace of a `/ns/<ns>/sa/<sa>` ID.
    pub fn namespace(&self) -> Option<&str> {
        self.ns_sa().map(|(ns, _)| ns)
    }

    /// The service account of a `/ns/<ns>/sa/<sa>` ID.
    pub fn service_account(&self) -> Option<&str> {
        self.ns_sa().map(|(_, sa)| sa)
    }

    fn ns_sa(&self) -> Option<(&str, &str)> {
        let mut it = self.path().strip_prefix('/')?.split('/');
        match (it.next(), it.next(), it.next(), it.next(), it.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The full URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if let Some(c) = td.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
            return Err(SpiffeIdError::TrustDomainChar(c));
        }
        if path.is_empty() || path == "/" {
            return Err(SpiffeIdError::EmptyPath);
        }
        for seg in path[1..].split('/') {
            match seg {
                "" => return Err(SpiffeIdError::EmptySegment),
                "." | ".." => return Err(SpiffeIdError::DotSegment),
                _ => {}
            }
            if let Some(c) = seg.chars().find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_')) {
                return Err(SpiffeIdError::PathChar(c));
            }
        }
        Ok(Self { uri: s.to_owned(), trust_domain_len: td.len() })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_form() {
        let id: SpiffeId = "spiffe://weir.local/ns/default/sa/client".parse().expect("valid id");
        assert_eq!(id.trust_domain(), "weir.local");
        assert_eq!(id.path(), "/ns/default/sa/client");
        assert_eq!(id.namespace(), Some("default"));
        assert_eq!(id.service_account(), Some("client"));
        assert_eq!(id, SpiffeId::workload("weir.local", "default", "client").expect("valid"));
    }

    #[test]
    fn accepts_other_paths_without_ns_sa() {
        let id: SpiffeId = "spiffe://example.org/spire/agent/x_1-A.b".parse().expect("valid id");
        assert_eq!(id.namespace(), None);
        assert_eq!(id.service_account(), None);
    }

    #[test]
    fn rejects_malformed_ids() {
        let cases: &[(&str, SpiffeIdError)] = &[
            ("http://weir.local/ns/a/sa/b", SpiffeIdError::Scheme),
            ("spiffe:/weir.local/ns/a", SpiffeIdError::Scheme),
            ("spiffe:///ns/a/sa/b", SpiffeIdError::EmptyTrustDomain),
            ("spiffe://Weir.local/ns/a", SpiffeIdError::TrustDomainChar('W')),
            ("spiffe://weir.local:443/ns/a", SpiffeIdError::TrustDomainChar(':')),
            ("spiffe://user@weir.local/ns/a", SpiffeIdError::TrustDomainChar('@')),
            ("spiffe://weir.local", SpiffeIdError::EmptyPath),
            ("spiffe://weir.local/", SpiffeIdError::EmptyPath),
            ("spiffe://weir.local/ns//sa", SpiffeIdError::EmptySegment),
            ("spiffe://weir.local/ns/a/", SpiffeIdError::EmptySegment),
            ("spiffe://weir.local/ns/../sa", SpiffeIdError::DotSegment),
            ("spiffe://weir.local/ns/./sa", SpiffeIdError::DotSegment),
            ("spiffe://weir.local/ns/a?x=1", SpiffeIdError::PathChar('?')),
            ("spiffe://weir.local/ns/a#f", SpiffeIdError::PathChar('#')),
            ("spiffe://weir.local/ns/a%20b", SpiffeIdError::PathChar('%')),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SpiffeId>().as_ref(), Err(want), "input {input}");
        }
        let long = format!("spiffe://a/{}", "x".repeat(2048));
        assert_eq!(long.parse::<SpiffeId>(), Err(SpiffeIdError::TooLong));
    }
}
