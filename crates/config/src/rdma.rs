//! RDMA settings (DESIGN.md: Weir cannot proxy RDMA, it controls who bootstraps it and who may
//! hold its resources): a workload's RDMA allowance (`[workloads.rdma]`, absent = none, enforced
//! by the cgroup `rdma` controller), and which services carry RDMA bootstraps
//! (`rdma_bootstrap = true`), whose connections are recorded as session intents.
use crate::raw::{RawConfig, RawWorkloadRdma};
use crate::typed::{ranged, Check};

/// What a workload may hold on each RDMA device (`None`: no limit beyond the device's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaAllowance {
    /// Open device contexts (`hca_handle`).
    pub max_handles: Option<u32>,
    /// Verbs objects: PDs, MRs, CQs, QPs (`hca_object`).
    pub max_objects: Option<u32>,
}

/// `[workloads.rdma]` of workload `n`: `None` when absent (the workload may not use RDMA).
pub(crate) fn allowance(c: &mut Check<'_>, n: usize, r: Option<&RawWorkloadRdma>) -> Option<Option<RdmaAllowance>> {
    let Some(r) = r else { return Some(None) };
    let p = |f: &str| format!("workloads[{n}].rdma.{f}");
    let limit = |c: &mut Check<'_>, v: &Option<toml::Spanned<i64>>, f: &str| match v {
        Some(v) => c.value(v, &p(f), ranged(0, i64::from(u32::MAX))).map(|v| Some(v as u32)),
        None => Some(None),
    };
    let max_handles = limit(c, &r.max_handles, "max_handles");
    let max_objects = limit(c, &r.max_objects, "max_objects");
    Some(Some(RdmaAllowance { max_handles: max_handles?, max_objects: max_objects? }))
}

/// An inbound service's `workload` must be one of this node's workloads.
pub(crate) fn check_serving_workloads(c: &mut Check<'_>, raw: &RawConfig) {
    let names: Vec<&str> = raw.workloads.iter().filter_map(|w| w.name.as_ref().map(|n| n.get_ref().as_str())).collect();
    for (n, s) in raw.inbound.iter().flat_map(|i| i.services.iter()).enumerate() {
        if let Some(w) = &s.workload {
            if !names.contains(&w.get_ref().as_str()) {
                let reason = format!("{:?} is not a workload of this node ([[workloads]] name)", w.get_ref());
                c.error(&format!("inbound.services[{n}].workload"), Some(w.span().start), reason);
            }
        }
    }
}
