//! The `dpu` and `host` roles: what each plane holds (channel keys, the other plane's state,
//! the DPU's record outbox, the host's view of the wire leg), the control connection between
//! them, and each role's listeners.
pub(crate) mod control;
pub(crate) mod dpu;
pub(crate) mod host;
pub(crate) mod plane;
pub(crate) mod wire_facts;
