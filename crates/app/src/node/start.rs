//! Start-up and shutdown of Weir in any role (node, dpu, host): identity, kTLS detection, TLS
//! configurations, listeners, the planes' control connection and the admin endpoint.
use crate::admin;
use crate::channel::keys::{ChannelKeys, Plane};
use crate::core::conn::{Shared, Workload, WorkloadSvid};
use crate::inbound::listener as inbound;
use crate::kernel::capture;
use crate::outbound::listener as outbound;
use crate::planes::control::OtherPlane;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weir_config::{CaSource, Config, KernelMode, KtlsMode, Role};
use weir_identity::{Ca, IdentitySource, SvidStore};
use weir_policy::InboundPolicy;
use weir_tls::ca_api::RemoteCa;
use weir_tls::ktls::{self, Support};
use weir_tls::TlsConfigs;

/// A running node. Dropping it stops its listeners (open connections end with the runtime).
pub struct Node {
    config: Config,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    inbound_addr: Option<SocketAddr>,
    outbound_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CA or SVID could not be had.
    #[error("identity: {0}")]
    Identity(#[from] weir_identity::Error),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The eBPF kernel path could not start: never run silently unenforced.
    #[error(
        "kernel path: {0} (it needs root, or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN, with cgroup v2 and bpffs; \
         set kernel.mode = \"off\" to run with explicit listeners only)"
    )]
    Kernel(#[from] weir_ebpf::Error),
    /// A listener could not bind.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host channel's key file is missing or not a key.
    #[error("host_channel.key_file {path}: {reason}")]
    HostKey {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl Node {
    /// Brings a node up: every listener is bound when this returns.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let source = identity_source(&config)?;
        let store =
            SvidStore::new_blocking(source.clone(), config.identity.id.clone(), config.identity.svid_ttl).await?;
        let svid = store.current();
        tracing::info!(id = %svid.id, serial = %svid.serial, "SVID issued");

        let support = match config.ktls.mode {
            KtlsMode::Off => Support::Unavailable("kTLS turned off in config (ktls.mode = \"off\")".into()),
            KtlsMode::Auto => match ktls::detect().await {
                Support::Available(k) => Support::Available(k.with_records_per_key(config.ktls.records_per_key)),
                unavailable => unavailable,
            },
        };
        let suites = match &support {
            Support::Available(k) => {
                let rekey = match &k.rekey {
                    ktls::Rekey::Supported => "TLS 1.3 KeyUpdate followed and sent".to_owned(),
                    ktls::Rekey::Unsupported(why) => format!("{why}: sessions end at the record limit"),
                };
                tracing::info!(suites = ?k.suites.iter().map(|s| s.suite()).collect::<Vec<_>>(), %rekey, records_per_key = k.records_per_key, "kernel TLS available: mesh connections use kTLS + splice");
                Some(k.suites.as_slice())
            }
            Support::Unavailable(reason) => {
                tracing::warn!(%reason, "kernel TLS unavailable: mesh connections use userspace TLS (never plaintext)");
                None
            }
        };
        let tls = Arc::new(TlsConfigs::new(svid, &store.bundle(), suites, suites.is_some())?);

        let policy = inbound_policy(&config);
        let mut backends = inbound::Backends::new();
        let handshake_timeout = config.inbound.as_ref().map_or(Duration::from_secs(10), |i| i.handshake_timeout);
        for s in config.inbound.iter().flat_map(|i| &i.services) {
            backends.insert(s.name.clone(), inbound::Backend { addr: s.backend, on_host: s.on_host });
        }
        let limits = weir_forward::Limits::default();
        let suites: Option<Vec<_>> = suites.map(<[_]>::to_vec);
        let suites = suites.as_deref();
        let mut shared = Shared::new(tls.clone(), store.clone(), support.clone(), limits, policy, handshake_timeout);
        shared.directory = config.outbound.iter().map(|r| (r.service.clone(), Arc::new(r.clone()))).collect();
        shared.metrics.ktls_enabled.set(i64::from(shared.ktls_available()));
        *shared.http.get_mut().unwrap_or_else(|p| p.into_inner()) = http_services(&config);
        let mut tasks = vec![tokio::spawn(store.clone().run_rotation()), tokio::spawn(tls.follow(store.clone()))];
        let bind = |what, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
        };

        let mut capture_listeners = Vec::new();
        if config.kernel.mode == KernelMode::Ebpf {
            for (n, w) in config.workloads.iter().enumerate() {
                // A host plane's workloads have their SVIDs on the DPU, which does their TLS.
                let svid = if matches!(config.role, Role::Host(_)) {
                    None
                } else {
                    let (svid, rotating) = svid_for(&source, &w.id, config.identity.svid_ttl, suites).await?;
                    tasks.extend(rotating);
                    Some(svid)
                };
                let workload =
                    Workload { name: w.name.clone(), l4: std::sync::RwLock::new(w.l4.clone()), id: w.id.clone(), svid };
                shared.workloads.insert(n as u32 + 1, workload);
            }
            for route in &config.outbound {
                let route = Arc::new(route.clone());
                for dst in &route.capture {
                    shared.captured.insert(*dst, route.clone());
                }
            }
            let v4 = config.kernel.capture_listen;
            capture_listeners.push(bind("capture", v4).await?);
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v4.port()));
            match TcpListener::bind(v6).await {
                Ok(l) => capture_listeners.push(l),
                Err(e) => {
                    tracing::warn!(error = %e, addr = %v6, "no IPv6 capture listener: captured IPv6 connections will be refused")
                }
            }
            let plan = kernel_plan(&config);
            let opts =
                weir_ebpf::Options { cgroup: config.kernel.cgroup.clone(), pin_dir: config.kernel.pin_dir.clone() };
            let mut kernel = weir_ebpf::KernelPath::start(&opts)?;
            kernel.apply(&plan)?;
            tracing::info!(
                workloads = config.workloads.len(),
                captured_services = shared.captured.len(),
                adopted = kernel.adopted(),
                "kernel path enforcing"
            );
            shared.orig_dst = Some(kernel.original_destinations()?);
            shared.kernel = std::sync::Mutex::new(Some(kernel));
        }
        let mut channel = None;
        let mut from_dpu = None;
        let mut plane = None;
        match &config.role {
            Role::Node => {}
            Role::Dpu(h) => {
                let keys = ChannelKeys::new(Plane::Dpu, host_key(&h.key_file)?, h.window);
                let keys = Arc::new(keys.map_err(|e| key_error(&h.key_file, e))?);
                let rotations = shared.metrics.channel_key_rotations.clone();
                tasks.push(tokio::spawn(crate::channel::keys::run_rotation(keys.clone(), h.key_rotation, rotations)));
                shared.channel_keys = Some(keys);
                let mut workloads = std::collections::HashMap::new();
                for id in &h.workloads {
                    let (svid, rotating) = svid_for(&source, id, config.identity.svid_ttl, suites).await?;
                    tasks.extend(rotating);
                    workloads.insert(id.clone(), svid.tls);
                    shared.acting_for.push((id.to_string(), svid.store));
                }
                channel = Some((h, Arc::new(crate::planes::dpu::HostChannel { workloads })));
                let other = Arc::new(OtherPlane::new("host", h.control.interval, l7_placed_here(&config)));
                plane = Some(Arc::new(crate::planes::plane::Plane::Dpu { other, outbox: Default::default() }));
            }
            Role::Host(d) => {
                // Inbound preambles are made by the DPU a moment before: its default window.
                let keys = ChannelKeys::new(Plane::Host, host_key(&d.key_file)?, Duration::from_secs(30));
                shared.channel_keys = Some(Arc::new(keys.map_err(|e| key_error(&d.key_file, e))?));
                shared.to_dpu = Some(crate::planes::host::ToDpu { addr: d.host_channel });
                let backends = std::mem::take(&mut backends);
                from_dpu = Some(Arc::new(crate::planes::host::FromDpu { backends }));
                let other = Arc::new(OtherPlane::new("dpu", d.control.interval, l7_placed_here(&config)));
                plane = Some(Arc::new(crate::planes::plane::Plane::Host { other, wire_facts: Default::default() }));
            }
        }

        if crate::rdma::wanted(&config) {
            shared.rdma = Some(crate::rdma::Rdma::new(&config));
        }
        shared.span_ratio = config.telemetry.span_sample_ratio;
        if let Some(endpoint) = &config.telemetry.otlp_endpoint {
            let (spans, task) = crate::core::otlp::Spans::start(
                endpoint,
                config.telemetry.otlp_queue,
                &config.node_name,
                &shared.metrics,
            );
            tracing::info!(endpoint, "request spans exported over OTLP/gRPC");
            shared.spans = Some(spans);
            tasks.push(task);
        }
        if let Some(plane) = &plane {
            shared.role = plane.clone();
        }
        let shared = Arc::new(shared);
        if let (Some(plane), Some(link)) = (&plane, config.role.control()) {
            if let Some((h, channel)) = channel {
                let l = bind("host channel", h.listen).await?;
                let control = bind("control", link.addr).await?;
                tracing::info!(listen = %local_addr(&l, h.listen), control = %local_addr(&control, link.addr), workloads = h.workloads.len(), "dpu role: host channel open");
                tasks.push(tokio::spawn(crate::planes::dpu::serve(l, channel, shared.clone())));
                tasks.push(tokio::spawn(crate::planes::control::serve(
                    control,
                    link.clone(),
                    shared.clone(),
                    plane.clone(),
                )));
            } else {
                tracing::info!(dpu = %link.addr, "host role: captured connections go to the DPU");
                tasks.push(tokio::spawn(crate::planes::control::connect(link.clone(), shared.clone(), plane.clone())));
            }
        }
        tasks.push(tokio::spawn(crate::core::sampler::run(shared.clone(), config.telemetry.tcp_sample_interval)));
        if shared.rdma.is_some() {
            tasks.push(tokio::spawn(crate::rdma::watch(config.clone(), shared.clone())));
        }
        for l in capture_listeners {
            tasks.push(tokio::spawn(capture::serve(l, shared.clone())));
        }
        if config.kernel.mode == KernelMode::Ebpf {
            tasks.push(tokio::spawn(crate::kernel::facts::collect(shared.clone())));
        }

        let admin_listener = bind("admin", config.admin).await?;
        let admin_addr = local_addr(&admin_listener, config.admin);
        tasks.push(tokio::spawn(admin::serve(admin_listener, shared.clone())));

        let mut inbound_addr = None;
        if let Some(i) = &config.inbound {
            let l = bind("inbound", i.listen).await?;
            inbound_addr = Some(local_addr(&l, i.listen));
            match from_dpu {
                Some(from_dpu) => {
                    tasks.push(tokio::spawn(crate::planes::host::serve_inbound(l, from_dpu, shared.clone())))
                }
                None => tasks.push(tokio::spawn(inbound::serve(l, Arc::new(backends), shared.clone()))),
            }
        }
        let mut outbound_addrs = Vec::new();
        for route in &config.outbound {
            let Some(listen) = route.listen else { continue };
            let l = bind("outbound", listen).await?;
            outbound_addrs.push(local_addr(&l, listen));
            tasks.push(tokio::spawn(outbound::serve(l, Arc::new(route.clone()), shared.clone())));
        }
        tracing::info!(node = config.node_name, admin = %admin_addr, inbound = ?inbound_addr, outbound = ?outbound_addrs, "node ready");
        Ok(Self { config, shared, tasks, inbound_addr, outbound_addrs, admin_addr })
    }

    /// Where the inbound listener is bound.
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound_addr
    }

    /// Where each outbound route with a listen address is bound, in config order.
    pub fn outbound_addrs(&self) -> &[SocketAddr] {
        &self.outbound_addrs
    }

    /// Where the admin endpoint is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The SVID store (current SVID, rotation state).
    pub fn identity(&self) -> &Arc<SvidStore> {
        &self.shared.store
    }

    /// The Prometheus text of this node's metrics.
    pub fn metrics_text(&self) -> String {
        admin::metrics_text(&self.shared)
    }

    /// The records of the mesh connections open now (what `/connections` lists).
    pub fn connections(&self) -> Vec<weir_telemetry::records::RecordView> {
        admin::connections(&self.shared)
    }

    /// Mesh connections open now.
    pub fn active_connections(&self) -> i64 {
        admin::active_connections(&self.shared)
    }

    /// Applies what can change while running: inbound allow-lists and workloads' L4 rules
    /// (kernel maps are updated in place: no re-attach, open connections stay). Anything else
    /// that differs (listeners, routes, services, workloads, identity) is refused with the
    /// reason, and the running configuration stays as it was.
    pub fn reload(&self, new: &Config) -> Result<(), String> {
        let old = &self.config;
        let names = |c: &Config| c.workloads.iter().map(|w| w.name.clone()).collect::<Vec<_>>();
        let services = |c: &Config| {
            c.inbound
                .as_ref()
                .map(|i| i.services.iter().map(|s| (s.name.clone(), s.backend, s.on_host)).collect::<Vec<_>>())
        };
        let routes = |c: &Config| {
            c.outbound
                .iter()
                .map(|r| (r.listen, r.capture.clone(), r.service.clone(), r.peer, r.peer_id.clone(), r.http.clone()))
                .collect::<Vec<_>>()
        };
        let mut needs_restart = Vec::new();
        if names(old) != names(new) {
            needs_restart.push("workloads (added, removed or renamed)");
        }
        if services(old) != services(new)
            || old.inbound.as_ref().map(|i| i.listen) != new.inbound.as_ref().map(|i| i.listen)
        {
            needs_restart.push("inbound listener or services");
        }
        if routes(old) != routes(new) {
            needs_restart.push("outbound routes");
        }
        if old.kernel.mode != new.kernel.mode
            || old.kernel.cgroup != new.kernel.cgroup
            || old.kernel.pin_dir != new.kernel.pin_dir
        {
            needs_restart.push("kernel");
        }
        if old.identity.id != new.identity.id || old.admin != new.admin {
            needs_restart.push("identity or admin");
        }
        if old.role != new.role {
            needs_restart.push("role or host channel");
        }
        if !needs_restart.is_empty() {
            return Err(format!("changes to {} need a restart; nothing was applied", needs_restart.join(", ")));
        }
        if let Some(k) = self.shared.kernel.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            k.apply(&kernel_plan(new)).map_err(|e| e.to_string())?;
        }
        for (n, w) in new.workloads.iter().enumerate() {
            if let Some(run) = self.shared.workloads.get(&(n as u32 + 1)) {
                *run.l4.write().unwrap_or_else(|p| p.into_inner()) = w.l4.clone();
            }
        }
        *self.shared.policy.write().unwrap_or_else(|p| p.into_inner()) = inbound_policy(new);
        if let Some(rdma) = &self.shared.rdma {
            *rdma.inbound.write().unwrap_or_else(|p| p.into_inner()) = crate::rdma::bootstrap_services(new);
        }
        // Rate-limit buckets start afresh: their keys are positions in the old rule set.
        *self.shared.http.write().unwrap_or_else(|p| p.into_inner()) = http_services(new);
        tracing::info!("configuration reloaded: allow-lists, HTTP rules and L4 rules applied");
        Ok(())
    }

    /// Stops accepting, then waits up to `grace` for open connections to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.active_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kernel = self.shared.kernel.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(k) = kernel {
            if let Err(e) = k.detach() {
                tracing::error!(error = %e, "could not detach the kernel path");
            }
        }
        tracing::info!(open = self.active_connections(), "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The tasks that keep an SVID fresh: rotation, and the TLS configurations following it.
type Rotating = [JoinHandle<()>; 2];

/// The CA this node's SVIDs come from: the built-in one in a directory (created when the
/// config says so), or a `weir ca serve` over the network.
fn identity_source(config: &Config) -> Result<Arc<dyn IdentitySource>, StartError> {
    match &config.identity.ca {
        CaSource::Local { dir, create_if_missing } => {
            let ca = match Ca::load(dir) {
                Err(weir_identity::Error::Io { .. }) if *create_if_missing => {
                    tracing::info!(dir = %dir.display(), trust_domain = config.trust_domain, "creating the built-in CA");
                    Ca::init(dir, &config.trust_domain)?
                }
                other => other?,
            };
            Ok(Arc::new(ca))
        }
        CaSource::Remote { addr, bundle, token_file } => {
            tracing::info!(ca = addr, bundle = %bundle.display(), "SVIDs from a remote CA");
            Ok(Arc::new(RemoteCa::from_files(addr, &config.trust_domain, bundle, token_file)?))
        }
    }
}

/// An SVID store for `id` and the TLS configurations that present it, with their tasks.
async fn svid_for(
    source: &Arc<dyn IdentitySource>,
    id: &weir_identity::SpiffeId,
    ttl: Duration,
    suites: Option<&[rustls::SupportedCipherSuite]>,
) -> Result<(WorkloadSvid, Rotating), StartError> {
    let store = SvidStore::new_blocking(source.clone(), id.clone(), ttl).await?;
    let tls = Arc::new(TlsConfigs::new(store.current(), &store.bundle(), suites, suites.is_some())?);
    let tasks = [tokio::spawn(store.clone().run_rotation()), tokio::spawn(tls.clone().follow(store.clone()))];
    Ok((WorkloadSvid { tls, store }, tasks))
}

/// The services whose HTTP heads this plane handles on the host-channel path. Outbound: a
/// host plane's L7 routing sends to its splits' services; a DPU runs L7 on its `protocol =
/// "http"` routes. Inbound (`inbound NAME`): a service with `protocol = "http"` on the host
/// plane, or on the DPU when its backend is on the host.
fn l7_placed_here(config: &Config) -> Vec<String> {
    let http = config.outbound.iter().filter_map(|r| Some((r, r.http.as_ref()?)));
    let mut services: Vec<String> = match config.role {
        Role::Host(_) => {
            http.flat_map(|(_, h)| h.routes.iter().flat_map(|r| r.split.iter().map(|(s, _)| s.clone()))).collect()
        }
        _ => http.map(|(r, _)| r.service.clone()).collect(),
    };
    let host = matches!(config.role, Role::Host(_));
    let inbound = config.inbound.iter().flat_map(|i| &i.services).filter(|s| s.http.is_some() && (host || s.on_host));
    services.extend(inbound.map(|s| format!("inbound {}", s.name)));
    services.sort();
    services.dedup();
    services
}

/// The host channel's first key: the file's hex digits (whitespace ignored).
fn host_key(path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    let text = std::fs::read_to_string(path).map_err(|e| key_error(path, e))?;
    let hex: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    crate::channel::keys::from_hex(&hex)
        .ok_or_else(|| key_error(path, "not hex digits (make one with `openssl rand -hex 32`)"))
}

fn key_error(path: &std::path::Path, reason: impl std::fmt::Display) -> StartError {
    StartError::HostKey { path: path.to_owned(), reason: reason.to_string() }
}

/// What the kernel path enforces for `config`: workloads (ids from 1, in config order), their
/// rules, and the captured services.
fn kernel_plan(config: &Config) -> weir_ebpf::Plan {
    let workloads = config
        .workloads
        .iter()
        .enumerate()
        .map(|(n, w)| weir_ebpf::WorkloadPlan {
            id: n as u32 + 1,
            name: w.name.clone(),
            l4: w.l4.clone(),
            count_http: w.count_http,
        })
        .collect();
    let services = config
        .outbound
        .iter()
        .enumerate()
        .flat_map(|(n, r)| r.capture.iter().map(move |dst| (*dst, n as u32)))
        .collect();
    let capture = match config.kernel.capture_listen {
        SocketAddr::V4(a) => {
            Some(weir_ebpf::Capture { v4: *a.ip(), v6: std::net::Ipv6Addr::LOCALHOST, port: a.port() })
        }
        SocketAddr::V6(_) => None,
    };
    weir_ebpf::Plan { workloads, services, capture }
}

/// Inbound allow-lists from `config` (default deny).
fn http_services(config: &Config) -> HashMap<String, Arc<crate::l7::http1::HttpService>> {
    let services = config.inbound.iter().flat_map(|i| &i.services);
    services
        .filter_map(|s| Some((s.name.clone(), Arc::new(crate::l7::http1::HttpService::new(s.http.clone()?)))))
        .collect()
}

fn inbound_policy(config: &Config) -> InboundPolicy {
    let mut policy = InboundPolicy::default();
    for s in config.inbound.iter().flat_map(|i| &i.services) {
        policy.allow(&s.name, s.allow.iter().cloned());
    }
    policy
}

fn local_addr(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}
