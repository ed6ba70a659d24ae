//! A node: start-up composes the core, the per-concern state and the role's listeners;
//! reload swaps what can change in place.
pub(crate) mod start;
