//! Compiling a [`Plan`] (workloads, their L4 rules, capture targets) into the pinned maps, and
//! reading facts back. Updates add new entries before removing stale ones, so a rule change
//! never opens a window where neither the old nor the new rule holds.
use crate::{cgroup, layout, ConnFacts, Error, KernelPath};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use std::collections::HashSet;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use weir_policy::WorkloadL4;

/// One workload as the kernel sees it.
#[derive(Debug, Clone)]
pub struct WorkloadPlan {
    /// Small non-zero id (map keys, metrics).
    pub id: u32,
    /// Name: also its cgroup's directory name under Weir's parent cgroup.
    pub name: String,
    /// Its L4 rules.
    pub l4: WorkloadL4,
    /// Count its HTTP/1.x requests in the kernel (sk_msg; its sockets join a sockhash).
    pub count_http: bool,
}

/// The node's capture listener, where captured connections are sent.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// For IPv4 (and IPv4-mapped) destinations.
    pub v4: Ipv4Addr,
    /// For IPv6 destinations.
    pub v6: Ipv6Addr,
    /// Port of both.
    pub port: u16,
}

/// Everything the kernel path enforces.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Workloads.
    pub workloads: Vec<WorkloadPlan>,
    /// Mesh-service destinations to capture, with the index of the route serving each.
    pub services: Vec<(SocketAddr, u32)>,
    /// Where to send captured connections; `None`: no capture.
    pub capture: Option<Capture>,
}

/// The programs' counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// connect() calls refused by a deny rule.
    pub denied: u64,
    /// connect() calls refused by a connection limit.
    pub limited: u64,
    /// Connections sent to the node's capture listener.
    pub captured: u64,
    /// Sockets whose bookkeeping entry could not be stored (map full).
    pub map_full: u64,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map { map, reason: e.to_string() }
}

impl KernelPath {
    fn map_data(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        self.bpf.map_mut(name).ok_or(Error::Map { map: name, reason: "missing from the object".into() })
    }

    /// Makes the maps say exactly what `plan` says. Creates the workload cgroups.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), Error> {
        let mut ids = Vec::new();
        for w in &plan.workloads {
            let dir = self.workload_cgroup(&w.name);
            cgroup::ensure(&dir)?;
            ids.push((
                cgroup::id(&dir)?,
                layout::workload(w.id, w.l4.max_connections, if w.count_http { layout::COUNT_HTTP } else { 0 }),
            ));
        }
        let mut workloads: HashMap<&mut MapData, u64, [u8; 12]> =
            HashMap::try_from(self.map_data("weir_workloads")?).map_err(map_err("weir_workloads"))?;
        sync_hash(&mut workloads, ids, "weir_workloads")?;

        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for w in &plan.workloads {
            for (n, r) in w.l4.deny.iter().enumerate() {
                match r.addr {
                    IpAddr::V4(a) => {
                        v4.push((Key::new(64 + u32::from(r.prefix), layout::deny4(w.id, r.port, a)), n as u32))
                    }
                    IpAddr::V6(a) => {
                        v6.push((Key::new(64 + u32::from(r.prefix), layout::deny6(w.id, r.port, a)), n as u32))
                    }
                }
            }
        }
        let mut deny4: LpmTrie<&mut MapData, [u8; 12], u32> =
            LpmTrie::try_from(self.map_data("weir_deny4")?).map_err(map_err("weir_deny4"))?;
        sync_trie(&mut deny4, v4, "weir_deny4")?;
        let mut deny6: LpmTrie<&mut MapData, [u8; 24], u32> =
            LpmTrie::try_from(self.map_data("weir_deny6")?).map_err(map_err("weir_deny6"))?;
        sync_trie(&mut deny6, v6, "weir_deny6")?;

        let services = plan.services.iter().map(|(dst, route)| (layout::service(*dst), *route)).collect();
        let mut svc: HashMap<&mut MapData, [u8; 20], u32> =
            HashMap::try_from(self.map_data("weir_services")?).map_err(map_err("weir_services"))?;
        sync_hash(&mut svc, services, "weir_services")?;

        let mut cap: Array<&mut MapData, [u8; 24]> =
            Array::try_from(self.map_data("weir_capture")?).map_err(map_err("weir_capture"))?;
        cap.set(0, layout::capture(plan.capture.map(|c| (c.v4, c.v6, c.port))), 0).map_err(map_err("weir_capture"))?;
        Ok(())
    }

    /// Takes the original-destination map out of the loader, for the capture listener to use
    /// under its own lock: a capture accept must never wait behind a telemetry map walk.
    /// Call once; later calls fail.
    pub fn original_destinations(&mut self) -> Result<OriginalDestinations, Error> {
        let map = self
            .bpf
            .take_map("weir_orig_dst")
            .ok_or(Error::Map { map: "weir_orig_dst", reason: "already taken".into() })?;
        let map = HashMap::try_from(map).map_err(map_err("weir_orig_dst"))?;
        Ok(OriginalDestinations { map: std::sync::Mutex::new(map) })
    }

    /// Every connection the sockops program has seen (open, and recently closed).
    pub fn connections(&mut self) -> Result<Vec<ConnFacts>, Error> {
        let m: HashMap<&mut MapData, [u8; 40], [u8; 88]> =
            HashMap::try_from(self.map_data("weir_conn_stats")?).map_err(map_err("weir_conn_stats"))?;
        Ok(m.iter().filter_map(Result::ok).map(|(k, v)| layout::conn_facts(&k, &v)).collect())
    }

    /// Open connections per workload id, as the limit counts them.
    pub fn open_connections(&mut self, workload: u32) -> Result<i64, Error> {
        let m: HashMap<&mut MapData, u32, i64> =
            HashMap::try_from(self.map_data("weir_conns")?).map_err(map_err("weir_conns"))?;
        match m.get(&workload, 0) {
            Ok(n) => Ok(n),
            Err(aya::maps::MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(map_err("weir_conns")(e)),
        }
    }

    /// Kernel-counted HTTP/1.x requests: (workload id, method, count).
    pub fn http_requests(&mut self) -> Result<Vec<(u32, &'static str, u64)>, Error> {
        let m: HashMap<&mut MapData, [u8; 8], u64> =
            HashMap::try_from(self.map_data("weir_http_requests")?).map_err(map_err("weir_http_requests"))?;
        Ok(m.iter()
            .filter_map(Result::ok)
            .map(|(k, n)| {
                let workload = u32::from_ne_bytes([k[0], k[1], k[2], k[3]]);
                let method = u32::from_ne_bytes([k[4], k[5], k[6], k[7]]) as usize;
                (workload, layout::METHODS.get(method).copied().unwrap_or("OTHER"), n)
            })
            .collect())
    }

    /// The programs' counters.
    pub fn counters(&mut self) -> Result<Counters, Error> {
        let m: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_data("weir_counters")?).map_err(map_err("weir_counters"))?;
        let get = |i: u32| m.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        Ok(Counters { denied: get(0), limited: get(1), captured: get(2), map_full: get(3) })
    }
}

fn sync_hash<K: aya::Pod + Eq + Hash, V: aya::Pod>(
    m: &mut HashMap<&mut MapData, K, V>,
    want: Vec<(K, V)>,
    name: &'static str,
) -> Result<(), Error> {
    let keep: HashSet<K> = want.iter().map(|(k, _)| *k).collect();
    for (k, v) in &want {
        m.insert(k, v, 0).map_err(map_err(name))?;
    }
    let stale: Vec<K> = m.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
    for k in stale {
        m.remove(&k).map_err(map_err(name))?;
    }
    Ok(())
}

fn sync_trie<K: aya::Pod + Eq + Hash>(
    m: &mut LpmTrie<&mut MapData, K, u32>,
    want: Vec<(Key<K>, u32)>,
    name: &'static str,
) -> Result<(), Error> {
    let keep: HashSet<(u32, K)> = want.iter().map(|(k, _)| (k.prefix_len(), k.data())).collect();
    for (k, v) in &want {
        m.insert(k, v, 0).map_err(map_err(name))?;
    }
    let stale: Vec<Key<K>> =
        m.keys().filter_map(Result::ok).filter(|k| !keep.contains(&(k.prefix_len(), k.data()))).collect();
    for k in stale {
        m.remove(&k).map_err(map_err(name))?;
    }
    Ok(())
}

/// Original destinations of captured connections, keyed by their source address.
pub struct OriginalDestinations {
    map: std::sync::Mutex<HashMap<MapData, [u8; 20], [u8; 32]>>,
}

impl std::fmt::Debug for OriginalDestinations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginalDestinations")
    }
}

impl OriginalDestinations {
    /// The workload and original destination of the captured connection from `src` (the
    /// capture listener's peer address). The entry is consumed.
    pub fn take(&self, src: SocketAddr) -> Result<Option<(u32, SocketAddr)>, Error> {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = layout::source(src);
        match m.get(&key, 0) {
            Ok(v) => {
                let _ = m.remove(&key);
                let (workload, dst) = layout::sock_info(&v);
                Ok(dst.map(|d| (workload, d)))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err("weir_orig_dst")(e)),
        }
    }
}
