//! The eBPF kernel path at run time: original destinations, workloads, captured services, the
//! capture listener, and the kernel's facts folded into metrics.
pub(crate) mod capture;
pub(crate) mod facts;
