//! The host channel between a host plane and its DPU: its keys, and sealing and checking the
//! preambles that open each connection. Used by both roles; belongs to neither.
pub(crate) mod keys;
