//! The outbound side: where mesh services are (the directory, the way to the DPU), opening a
//! mesh connection to a peer node, and the listeners local apps connect to (L4 and HTTP).
pub(crate) mod http;
pub(crate) mod listener;
