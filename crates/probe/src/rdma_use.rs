//! Who uses RDMA on this host: the kernel's queue pairs grouped by their owners' cgroups, with
//! each cgroup's RDMA use and limits (`rdma.current`, `rdma.max`). A Weir workload is the
//! cgroup `<kernel.cgroup>/<name>`; a queue pair outside any workload is one no bootstrap
//! policy covered.
use crate::report::Probe;
use crate::{rdma_cgroup, rdma_res};
use serde::Serialize;
use std::collections::BTreeMap;

/// The RDMA use of one cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaUse {
    /// The cgroup v2 path of the owning processes (`/` for the root).
    pub cgroup: String,
    /// Queue pairs its processes own.
    pub queue_pairs: u32,
    /// How many of them are connected (RTR or later).
    pub connected: u32,
    /// Its `rdma.current` lines (unknown where the controller is off).
    pub current: Probe<Vec<String>>,
    /// Its `rdma.max` lines.
    pub max: Probe<Vec<String>>,
}

/// Every cgroup that owns a queue pair now.
pub fn by_cgroup() -> Probe<Vec<RdmaUse>> {
    let qps = match rdma_res::queue_pairs() {
        Ok(qps) => qps,
        Err(e) => return Probe::unknown(e.to_string()),
    };
    let mut groups: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for qp in qps {
        let Some(pid) = qp.pid else { continue };
        let cgroup = crate::procs::cgroup_of(pid).unwrap_or_else(|| "(unknown: the owner exited)".to_owned());
        let counts = groups.entry(cgroup).or_default();
        counts.0 += 1;
        counts.1 += u32::from(qp.state.is_connected());
    }
    let root = rdma_cgroup::v2_root().ok();
    let lines = |name: &str, cgroup: &str| match &root {
        Some(root) => match std::fs::read_to_string(root.join(cgroup.trim_start_matches('/')).join(name)) {
            Ok(t) => Probe::known(t.lines().map(|l| l.trim().to_owned()).collect()),
            Err(e) => Probe::unknown(format!("{name}: {e}")),
        },
        None => Probe::unknown("no cgroup v2 hierarchy"),
    };
    let uses = groups
        .into_iter()
        .map(|(cgroup, (queue_pairs, connected))| RdmaUse {
            current: lines("rdma.current", &cgroup),
            max: lines("rdma.max", &cgroup),
            cgroup,
            queue_pairs,
            connected,
        })
        .collect();
    Probe::known(uses)
}
