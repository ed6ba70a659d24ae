//! Authorization rules and their evaluation, as pure functions of (rules, facts).
//!
//! Owns: the inbound allow-lists (which SPIFFE IDs may reach which local service; default
//! deny). Does not own how rules are loaded (`weir-config`) or enforced on sockets
//! (`weir-app`), nor their compilation to eBPF maps (`weir-ebpf`). Also: per-workload L4 rules
//! ([`WorkloadL4`]), and L7 rules on HTTP/1.1 request heads with per-route rate limits
//! ([`HttpPolicy`], [`decide`]).
#![forbid(unsafe_code)]

mod http;
mod l4;

pub use http::{
    decide, normalize_path, Action, HeaderMatch, HttpPolicy, HttpRule, HttpVerdict, PathMatch, RateLimit, RateLimiter,
    RequestFacts,
};
pub use l4::{DenyRule, WorkloadL4};

use std::collections::{BTreeSet, HashMap};
use weir_identity::SpiffeId;

/// Who may reach each local service. A service absent from the map, or present with an
/// empty allow-list, admits nobody.
#[derive(Debug, Clone, Default)]
pub struct InboundPolicy {
    services: HashMap<String, BTreeSet<SpiffeId>>,
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Refuse, with the reason.
    Deny(DenyReason),
}

/// Why a connection was refused. `as_label` is its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The requested service is not served here.
    UnknownService,
    /// The peer's identity is not on the service's allow-list.
    NotAllowed,
}

impl DenyReason {
    /// A stable, low-cardinality label.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::UnknownService => "unknown_service",
            Self::NotAllowed => "not_allowed",
        }
    }
}

impl InboundPolicy {
    /// Adds (or extends) a service's allow-list.
    pub fn allow(&mut self, service: &str, ids: impl IntoIterator<Item = SpiffeId>) {
        self.services.entry(service.to_owned()).or_default().extend(ids);
    }

    /// Decides whether `peer` may reach `service`.
    pub fn authorize(&self, service: &str, peer: &SpiffeId) -> Decision {
        match self.services.get(service) {
            None => Decision::Deny(DenyReason::UnknownService),
            Some(allowed) if allowed.contains(peer) => Decision::Allow,
            Some(_) => Decision::Deny(DenyReason::NotAllowed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().expect("valid test id")
    }

    #[test]
    fn default_deny_and_exact_allow() {
        let mut p = InboundPolicy::default();
        let client = id("spiffe://weir.local/ns/default/sa/client");
        assert_eq!(p.authorize("echo", &client), Decision::Deny(DenyReason::UnknownService));
        p.allow("echo", []);
        assert_eq!(
            p.authorize("echo", &client),
            Decision::Deny(DenyReason::NotAllowed),
            "empty allow-list admits nobody"
        );
        p.allow("echo", [client.clone()]);
        assert_eq!(p.authorize("echo", &client), Decision::Allow);
        assert_eq!(
            p.authorize("echo", &id("spiffe://weir.local/ns/default/sa/intruder")),
            Decision::Deny(DenyReason::NotAllowed)
        );
        assert_eq!(
            p.authorize("echo", &id("spiffe://other.local/ns/default/sa/client")),
            Decision::Deny(DenyReason::NotAllowed)
        );
        assert_eq!(p.authorize("other", &client), Decision::Deny(DenyReason::UnknownService));
    }
}
