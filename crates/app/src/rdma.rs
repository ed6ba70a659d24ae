//! RDMA in the mesh: Weir cannot proxy RDMA bytes, so it controls and observes what it can.
//!
//! Owns: bootstraps of services marked `rdma_bootstrap` recorded as RDMA session intents (who
//! talked to whom, when); each workload's RDMA allowance written to its cgroup's `rdma.max` (0
//! handles and objects unless allowed: the kernel refuses resource creation); and a watch over
//! the kernel's queue pairs, each joined pid → workload → SPIFFE ID and judged once connected:
//! a QP whose workload had no recorded bootstrap is flagged (metric, log line, `/rdma`).
//! Missing devices, controller or netlink support are reported with the reason; nothing stops.
use crate::core::conn::Shared;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use weir_probe::rdma_cgroup::{self, RdmaLimit};
use weir_probe::rdma_res::QueuePair;
use weir_telemetry::rdma::{BootstrapLabels, PortCounterLabels, RdmaWorkloadLabels};

/// Intents remembered at most (oldest go first).
const MAX_INTENTS: usize = 4096;
/// How long after its bootstrap a workload's new queue pairs count as authorized.
const INTENT_TTL: Duration = Duration::from_secs(300);
/// How often the kernel's queue pairs are read.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// One bootstrap carried through the mesh.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Intent {
    pub at_unix_ms: u64,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    pub service: String,
    /// The workload of this node on this end, when known.
    pub workload: Option<String>,
    /// The SPIFFE IDs of this end and the other.
    pub local_id: String,
    pub peer_id: String,
}

/// A queue pair as `/rdma` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QpView {
    pub device: String,
    pub port: Option<u32>,
    pub lqpn: u32,
    pub rqpn: Option<u32>,
    pub qp_type: &'static str,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub workload: Option<String>,
    pub identity: Option<String>,
    /// `None` until connected (RTR or later): only then has a bootstrap happened.
    pub authorized: Option<bool>,
}

/// The node's RDMA state.
pub(crate) struct Rdma {
    /// Weir's parent cgroup, relative to the v2 root as /proc/PID/cgroup says it, and the
    /// workloads' names and IDs.
    cgroup: PathBuf,
    workloads: Vec<(String, String)>,
    /// Inbound services that carry bootstraps, with the workload serving each.
    pub inbound: std::sync::RwLock<HashMap<String, Option<String>>>,
    intents: Mutex<VecDeque<Intent>>,
    /// Verdicts of connected QPs, by (device, QP number, pid): judged once, kept while they live.
    verdicts: Mutex<HashMap<(String, u32, u32), bool>>,
    last: Mutex<Result<Vec<QpView>, String>>,
}

impl Rdma {
    pub fn new(config: &weir_config::Config) -> Self {
        let workloads = config.workloads.iter().map(|w| (w.name.clone(), w.id.to_string())).collect();
        Self {
            cgroup: PathBuf::from("/").join(&config.kernel.cgroup),
            workloads,
            inbound: std::sync::RwLock::new(bootstrap_services(config)),
            intents: Mutex::new(VecDeque::new()),
            verdicts: Mutex::new(HashMap::new()),
            last: Mutex::new(Err("not read yet".into())),
        }
    }

    /// Records one bootstrap and counts it.
    pub fn record(&self, shared: &Shared, intent: Intent) {
        tracing::info!(
            direction = intent.direction,
            service = intent.service,
            workload = intent.workload.as_deref().unwrap_or("none"),
            local_id = intent.local_id,
            peer_id = intent.peer_id,
            "RDMA bootstrap recorded"
        );
        let labels = BootstrapLabels { service: intent.service.clone(), direction: intent.direction };
        shared.metrics.rdma.bootstraps.get_or_create(&labels).inc();
        let mut intents = self.intents.lock().unwrap_or_else(|p| p.into_inner());
        if intents.len() >= MAX_INTENTS {
            intents.pop_front();
        }
        intents.push_back(intent);
    }

    /// `/rdma`: the recorded intents and the queue pairs as last read.
    pub fn report(&self) -> String {
        let intents: Vec<Intent> = self.intents.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (qps, unavailable) = match last {
            Ok(qps) => (qps, None),
            Err(reason) => (Vec::new(), Some(reason)),
        };
        serde_json::json!({ "unavailable": unavailable, "intents": intents, "queue_pairs": qps }).to_string()
    }

    /// Whether `workload` had a bootstrap recorded within the intent lifetime.
    fn bootstrapped(&self, workload: &str, now: SystemTime) -> bool {
        let since = weir_telemetry::records::unix_ms(now.checked_sub(INTENT_TTL).unwrap_or(SystemTime::UNIX_EPOCH));
        let intents = self.intents.lock().unwrap_or_else(|p| p.into_inner());
        intents.iter().any(|i| i.at_unix_ms >= since && i.workload.as_deref() == Some(workload))
    }

    /// The workload whose cgroup holds `pid`, if any.
    fn workload_of(&self, pid: u32) -> Option<&(String, String)> {
        let path = weir_probe::procs::cgroup_of(pid)?;
        let name = std::path::Path::new(&path).strip_prefix(&self.cgroup).ok()?.to_str()?;
        self.workloads.iter().find(|(n, _)| n == name)
    }
}

/// An inbound connection to `service` from `peer` passed policy: a bootstrap if the service
/// carries them.
pub(crate) fn note_inbound(shared: &Shared, peer: &weir_identity::SpiffeId, service: &str) {
    let Some(rdma) = &shared.rdma else { return };
    let Some(workload) = rdma.inbound.read().unwrap_or_else(|p| p.into_inner()).get(service).cloned() else {
        return;
    };
    let workload_id = workload.as_ref().and_then(|w| rdma.workloads.iter().find(|(n, _)| n == w));
    let local_id = workload_id.map_or_else(|| shared.tls.id().to_string(), |(_, id)| id.clone());
    let at_unix_ms = weir_telemetry::records::unix_ms(SystemTime::now());
    let (service, peer_id) = (service.to_owned(), peer.to_string());
    rdma.record(shared, Intent { at_unix_ms, direction: "inbound", service, workload, local_id, peer_id });
}

/// An outbound connection on a route that carries bootstraps reached its peer, presenting the
/// SVID in `tls` (the captured workload's, or the node's).
pub(crate) fn note_outbound(
    shared: &Shared,
    route: &weir_config::OutboundRoute,
    local_id: &weir_identity::SpiffeId,
    workload: Option<&str>,
) {
    let (Some(rdma), true) = (&shared.rdma, route.rdma_bootstrap) else { return };
    let intent = Intent {
        at_unix_ms: weir_telemetry::records::unix_ms(SystemTime::now()),
        direction: "outbound",
        service: route.service.clone(),
        workload: workload.map(str::to_owned),
        local_id: local_id.to_string(),
        peer_id: route.peer_id.to_string(),
    };
    rdma.record(shared, intent);
}

/// Inbound services marked `rdma_bootstrap`, with their serving workloads.
pub(crate) fn bootstrap_services(config: &weir_config::Config) -> HashMap<String, Option<String>> {
    let services = config.inbound.iter().flat_map(|i| &i.services);
    services.filter(|s| s.rdma_bootstrap).map(|s| (s.name.clone(), s.workload.clone())).collect()
}

/// Whether this config asks for any of it (no RDMA setting: no watch, no cgroup writes).
pub(crate) fn wanted(config: &weir_config::Config) -> bool {
    config.workloads.iter().any(|w| w.rdma.is_some())
        || config.outbound.iter().any(|r| r.rdma_bootstrap)
        || config.inbound.iter().flat_map(|i| &i.services).any(|s| s.rdma_bootstrap)
}

/// Writes every workload's allowance for every RDMA device. `Err`: why no limit could be
/// written (the caller logs it; RDMA use is then limited only by the devices).
pub(crate) fn apply_limits(config: &weir_config::Config, shared: &Shared, devices: &[String]) -> Result<(), String> {
    for w in &config.workloads {
        let allowed = i64::from(w.rdma.is_some());
        shared.metrics.rdma.allowed.get_or_create(&RdmaWorkloadLabels { workload: w.name.clone() }).set(allowed);
    }
    let root = weir_ebpf::cgroup::v2_root().map_err(|e| e.to_string())?;
    rdma_cgroup::controller_available(&root).map_err(|e| e.to_string())?;
    if devices.is_empty() {
        return Err("no RDMA devices: nothing to limit yet".into());
    }
    for w in &config.workloads {
        let dir = root.join(&config.kernel.cgroup).join(&w.name);
        rdma_cgroup::enable(&root, &dir).map_err(|e| format!("workload {}: {e}", w.name))?;
        let (hca_handle, hca_object) = match w.rdma {
            None => (Some(0), Some(0)),
            Some(a) => (a.max_handles, a.max_objects),
        };
        let limits: Vec<_> = devices.iter().map(|d| RdmaLimit { device: d.clone(), hca_handle, hca_object }).collect();
        rdma_cgroup::set_max(&dir, &limits).map_err(|e| format!("workload {}: {e}", w.name))?;
        match w.rdma {
            None => tracing::info!(workload = w.name, ?devices, "RDMA denied: rdma.max 0 handles, 0 objects"),
            Some(a) => {
                tracing::info!(workload = w.name, ?devices, max_handles = ?a.max_handles, max_objects = ?a.max_objects, "RDMA allowed")
            }
        }
    }
    Ok(())
}

/// Every `WATCH_EVERY`: re-applies limits when the device set changes, reads the queue pairs
/// and judges the newly connected ones.
pub(crate) async fn watch(config: weir_config::Config, shared: std::sync::Arc<Shared>) {
    let Some(rdma) = &shared.rdma else { return };
    let mut devices: Option<Vec<String>> = None;
    let mut said: Option<String> = None;
    loop {
        let now_devices = match weir_probe::rdma::devices() {
            weir_probe::Probe::Known { value } => value.into_iter().map(|d| d.name).collect(),
            _ => Vec::new(),
        };
        if devices.as_ref() != Some(&now_devices) {
            if let Err(reason) = apply_limits(&config, &shared, &now_devices) {
                tracing::warn!(%reason, "RDMA limits not written");
            }
            devices = Some(now_devices);
        }
        let read = tokio::task::spawn_blocking(weir_probe::rdma_res::queue_pairs).await;
        let result = match read {
            Ok(Ok(qps)) => Ok(judge(rdma, &shared, qps)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        shared.metrics.rdma.available.set(i64::from(result.is_ok()));
        if let Err(reason) = &result {
            if said.as_ref() != Some(reason) {
                tracing::warn!(%reason, "RDMA queue pairs unavailable");
                said = Some(reason.clone());
            }
        }
        *rdma.last.lock().unwrap_or_else(|p| p.into_inner()) = result;
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Joins each queue pair to its workload and judges the connected ones; sets the gauges.
fn judge(rdma: &Rdma, shared: &Shared, qps: Vec<QueuePair>) -> Vec<QpView> {
    let now = SystemTime::now();
    let mut verdicts = rdma.verdicts.lock().unwrap_or_else(|p| p.into_inner());
    let mut live = std::collections::HashSet::new();
    let mut per_workload: HashMap<String, (i64, i64)> =
        rdma.workloads.iter().map(|(n, _)| (n.clone(), (0, 0))).collect();
    let mut views = Vec::new();
    for qp in qps {
        let Some(pid) = qp.pid else { continue }; // the kernel's own QPs (ib_core's GSI)
        let owner = rdma.workload_of(pid);
        let connected = qp.state.is_connected();
        let key = (qp.device.clone(), qp.lqpn, pid);
        let authorized = connected.then(|| {
            live.insert(key.clone());
            *verdicts.entry(key).or_insert_with(|| {
                let ok = owner.is_some_and(|(name, _)| rdma.bootstrapped(name, now));
                if !ok {
                    tracing::warn!(
                        device = qp.device,
                        qpn = qp.lqpn,
                        pid,
                        comm = qp.owner_name().unwrap_or_default(),
                        workload = owner.map_or("none", |(n, _)| n.as_str()),
                        "RDMA queue pair outside any recorded bootstrap"
                    );
                }
                ok
            })
        });
        if let Some(ok) = authorized {
            let counts = per_workload.entry(owner.map_or("none".into(), |(n, _)| n.clone())).or_default();
            counts.0 += 1;
            counts.1 += i64::from(!ok);
        }
        views.push(QpView {
            device: qp.device.clone(),
            port: qp.port,
            lqpn: qp.lqpn,
            rqpn: qp.rqpn,
            qp_type: qp.qp_type.name(),
            state: qp.state.name(),
            pid: Some(pid),
            comm: qp.owner_name(),
            workload: owner.map(|(n, _)| n.clone()),
            identity: owner.map(|(_, id)| id.clone()),
            authorized,
        });
    }
    verdicts.retain(|k, _| live.contains(k));
    let m = &shared.metrics.rdma;
    for (workload, (qps, flagged)) in per_workload {
        let labels = RdmaWorkloadLabels { workload };
        m.qps.get_or_create(&labels).set(qps);
        m.unauthorized_qps.get_or_create(&labels).set(flagged);
    }
    views
}

/// Port counters of every RDMA device, for a scrape.
pub(crate) fn port_counters(shared: &Shared) {
    let weir_probe::Probe::Known { value: devices } = weir_probe::rdma::devices() else { return };
    for d in devices {
        for p in d.ports {
            for c in p.counters {
                let labels = PortCounterLabels { device: d.name.clone(), port: p.port.clone(), counter: c.name };
                let v = i64::try_from(c.value).unwrap_or(i64::MAX);
                shared.metrics.rdma.port_counters.get_or_create(&labels).set(v);
            }
        }
    }
}
