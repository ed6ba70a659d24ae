//! RDMA metrics: bootstraps recorded as session intents, each workload's RDMA allowance, the
//! kernel's queue pairs by workload (and those outside any recorded bootstrap), and the RDMA
//! devices' port counters as the kernel reports them.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of recorded bootstraps.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BootstrapLabels {
    /// Mesh service.
    pub service: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
}

/// Labels per workload (`none`: a process in no workload cgroup).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RdmaWorkloadLabels {
    /// Workload name.
    pub workload: String,
}

/// Labels of a device port's counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortCounterLabels {
    /// Device (`mlx5_0`, `rxe0`).
    pub device: String,
    /// Port number.
    pub port: String,
    /// The kernel's counter name (`hw_counters/` ones prefixed `hw:`).
    pub counter: String,
}

/// Every RDMA metric of a node.
#[derive(Debug, Default)]
pub struct RdmaMetrics {
    /// Bootstraps carried through the mesh and recorded as RDMA session intents.
    pub bootstraps: Family<BootstrapLabels, Counter>,
    /// 1 when the workload may hold RDMA resources, 0 when its `rdma.max` is 0.
    pub allowed: Family<RdmaWorkloadLabels, Gauge>,
    /// Connected queue pairs owned by the workload's processes, as the kernel lists them.
    pub qps: Family<RdmaWorkloadLabels, Gauge>,
    /// Of those, the ones with no recorded bootstrap of their workload.
    pub unauthorized_qps: Family<RdmaWorkloadLabels, Gauge>,
    /// 1 when the kernel's RDMA resources could be read, 0 when not (the log says why).
    pub available: Gauge,
    /// Port counters of RDMA devices.
    pub port_counters: Family<PortCounterLabels, Gauge>,
}

impl RdmaMetrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "rdma_bootstraps",
            "RDMA bootstraps carried through the mesh, recorded as session intents",
            self.bootstraps.clone(),
        );
        r.register(
            "rdma_allowed",
            "1 when the workload may hold RDMA resources, 0 when its rdma.max is 0",
            self.allowed.clone(),
        );
        r.register("rdma_qps", "Connected RDMA queue pairs owned by the workload's processes", self.qps.clone());
        r.register(
            "rdma_unauthorized_qps",
            "Connected RDMA queue pairs of the workload with no recorded bootstrap",
            self.unauthorized_qps.clone(),
        );
        r.register("rdma_available", "1 when the kernel's RDMA resources could be read", self.available.clone());
        r.register(
            "rdma_port_counter",
            "RDMA device port counters, as the kernel reports them",
            self.port_counters.clone(),
        );
    }
}
