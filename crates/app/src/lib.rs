//! Wiring of one Weir node: identity, TLS, policy and telemetry put together behind the
//! listeners of a role.
//!
//! Owns: node start-up and shutdown ([`Node`]), the outbound listener (local app -> peer node),
//! the inbound listener (peer node -> local backend), the handshake + preamble + authorization
//! sequence, the HTTP/1.1 hooks of `protocol = "http"` services, and the admin endpoint. Delegates: TLS to `weir-tls`, byte moving to
//! `weir-forward`, decisions to `weir-policy`, metric families to `weir-telemetry`.
#![forbid(unsafe_code)]

mod admin;
mod channel;
mod core;
mod inbound;
mod kernel;
mod l7;
mod node;
mod outbound;
mod planes;
mod rdma;

pub use node::start::{Node, StartError};
pub use weir_sys::{abort_on_close, raise_fd_limit};
