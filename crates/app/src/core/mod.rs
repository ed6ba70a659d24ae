//! The node's core: what every connection uses whatever the node's role (metrics, records,
//! spans, TLS configurations, SVIDs, kTLS support, limits, ids, readiness), and the
//! bookkeeping around one connection. Knows no role, no listener and no policy.
pub(crate) mod conn;
pub(crate) mod otlp;
pub(crate) mod preamble;
pub(crate) mod role;
pub(crate) mod sampler;
