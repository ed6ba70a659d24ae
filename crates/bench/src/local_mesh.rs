//! Two `weir run` processes on this machine (client side and server side) built from the
//! embedded default config with ports and one route filled in: used by `weir demo` and
//! `weir bench`. Or, for the bench's host/DPU path, the client side as two planes: a host
//! plane (`role = "host"`, the kernel path capturing a workload's connections) and its DPU
//! (`role = "dpu"`, the wire's mTLS), the host channel between them on loopback.
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weir_identity::SpiffeId;

/// Two running nodes. Dropping it stops them.
pub struct Mesh {
    children: Vec<Child>,
    /// The client side's outbound listener: apps connect here.
    pub outbound: SocketAddr,
    /// The server side's inbound (mesh) listener.
    pub inbound: SocketAddr,
    /// The client side's admin endpoint (the host plane's, with planes).
    pub client_admin: SocketAddr,
    /// The server side's admin endpoint.
    pub server_admin: SocketAddr,
    /// The identity the client side presents.
    pub client_id: SpiffeId,
    /// The identity the server side presents.
    pub server_id: SpiffeId,
    /// With planes: the host plane's config and the workload whose connections it captures
    /// (apps reach `outbound` from inside it, e.g. with `weir exec`).
    pub workload: Option<(PathBuf, &'static str)>,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Settings beyond the defaults of [`Mesh::start`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    /// Run both nodes under `taskset -c` with these CPUs.
    pub pin: Option<&'a str>,
    /// TOML appended to the server node's `echo` service, e.g. `protocol = "http"` followed by
    /// its `[inbound.services.http]` tables.
    pub service_toml: &'a str,
    /// `RUST_LOG` for both nodes (overrides their configured level), e.g. to turn off the
    /// per-request access log.
    pub rust_log: Option<&'a str>,
    /// Both nodes with `[ktls] mode = "off"`: userspace TLS even where the kernel has kTLS.
    pub ktls_off: bool,
}

impl Mesh {
    /// Starts both nodes with SVIDs from the CA in `ca_dir`, configs and logs in `dir`; the
    /// server node offers service `echo` at `backend`. `pin` runs them under `taskset -c`.
    pub async fn start(dir: &Path, ca_dir: &Path, backend: SocketAddr, pin: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(dir, ca_dir, backend, Options { pin, ..Options::default() }).await
    }

    /// As [`Mesh::start`], with `opts`.
    pub async fn start_with(dir: &Path, ca_dir: &Path, backend: SocketAddr, opts: Options<'_>) -> anyhow::Result<Self> {
        let (outbound, inbound, client_admin, server_admin) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let client_id = SpiffeId::workload("weir.local", "demo", "client")?;
        let server_id = SpiffeId::workload("weir.local", "demo", "server")?;
        let ktls = if opts.ktls_off { "[ktls]\nmode = \"off\"" } else { "[ktls]\nmode = \"auto\"" };
        let base = |name: &str, sa: &str, admin: SocketAddr| {
            weir_config::DEFAULT
                .replace("name = \"weir\"", &format!("name = \"{name}\""))
                .replace("namespace = \"default\"", "namespace = \"demo\"")
                .replace("service_account = \"weir-node\"", &format!("service_account = \"{sa}\""))
                .replace("/var/lib/weir/ca", &ca_dir.display().to_string())
                .replace("create_ca_if_missing = true", "create_ca_if_missing = false")
                .replace("127.0.0.1:15000", &admin.to_string())
                .replace("[ktls]\nmode = \"auto\"", ktls)
        };
        let server = base("server-node", "server", server_admin).replace("0.0.0.0:15008", &inbound.to_string())
            + &format!(
                "\n[[inbound.services]]\nname = \"echo\"\nbackend = \"{backend}\"\nallow = [\"{client_id}\"]\n{}\n",
                opts.service_toml
            );
        let client = base("client-node", "client", client_admin).replace("listen = \"0.0.0.0:15008\"", &format!("listen = \"{}\"", free_port()?))
            + &format!("\n[[outbound]]\nlisten = \"{outbound}\"\nservice = \"echo\"\npeer = \"{inbound}\"\npeer_id = \"{server_id}\"\n");
        let mut mesh = Self {
            children: Vec::new(),
            outbound,
            inbound,
            client_admin,
            server_admin,
            client_id,
            server_id,
            workload: None,
        };
        for (name, text) in [("server", server), ("client", client)] {
            mesh.spawn(dir, name, &text, &opts)?;
        }
        for admin in [server_admin, client_admin] {
            mesh.wait_ready(admin).await?;
        }
        Ok(mesh)
    }

    /// As [`Mesh::start_with`], the client side as a host plane and its DPU (root: the host
    /// plane attaches the kernel path to cgroup `weir-bench-<pid>`). The DPU holds the
    /// workload's SVID and originates the wire's mTLS as it; the server admits the workload.
    pub async fn start_planes(
        dir: &Path,
        ca_dir: &Path,
        backend: SocketAddr,
        opts: Options<'_>,
    ) -> anyhow::Result<Self> {
        const WORKLOAD: &str = "bench";
        let (inbound, server_admin, host_admin, dpu_admin) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let (channel, control, capture_listen) = (free_port()?, free_port()?, free_port()?);
        // A loopback address nothing listens on: the kernel path sends its connections to the
        // host plane's capture listener.
        let outbound: SocketAddr = format!("127.0.0.77:{}", free_port()?.port()).parse()?;
        let id = |sa: &str| SpiffeId::workload("weir.local", "demo", sa);
        let (workload_id, server_id, dpu_id, host_id) = (id(WORKLOAD)?, id("server")?, id("dpu")?, id("host")?);
        let ktls = if opts.ktls_off { "off" } else { "auto" };
        let common = |name: &str, admin: SocketAddr| {
            format!(
                "trust_domain = \"weir.local\"\n[node]\nname = \"{name}\"\n[identity]\nnamespace = \"demo\"\nservice_account = \"{name}\"\n\
                 ca_dir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n[ktls]\nmode = \"{ktls}\"\n",
                ca_dir.display()
            )
        };
        let key_file = dir.join("host-channel.key");
        let key: String = weir_tls::host_channel::HostKey::fresh_bytes()?.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&key_file, format!("{key}\n"))?;
        let tag = format!("weir-bench-{}", std::process::id());
        let server = common("server", server_admin)
            + &format!(
                "[inbound]\nlisten = \"{inbound}\"\n[[inbound.services]]\nname = \"echo\"\nbackend = \"{backend}\"\nallow = [\"{workload_id}\"]\n{}\n",
                opts.service_toml
            );
        let dpu = format!(
            "role = \"dpu\"\n{}[[outbound]]\nservice = \"echo\"\npeer = \"{inbound}\"\npeer_id = \"{server_id}\"\n\
             [host_channel]\nlisten = \"{channel}\"\nkey_file = \"{}\"\nworkloads = [\"{workload_id}\"]\n\
             [host_channel.control]\naddr = \"{control}\"\npeer_id = \"{host_id}\"\n",
            common("dpu", dpu_admin),
            key_file.display(),
        );
        let host = format!(
            "role = \"host\"\n{}[kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"{capture_listen}\"\n\
             [[workloads]]\nname = \"{WORKLOAD}\"\nservice_account = \"{WORKLOAD}\"\n[[outbound]]\nservice = \"echo\"\ncapture = [\"{outbound}\"]\n\
             [dpu]\nhost_channel = \"{channel}\"\nkey_file = \"{}\"\n[dpu.control]\naddr = \"{control}\"\npeer_id = \"{dpu_id}\"\n",
            common("host", host_admin),
            key_file.display(),
        );
        let mut mesh = Self {
            children: Vec::new(),
            outbound,
            inbound,
            client_admin: host_admin,
            server_admin,
            client_id: workload_id,
            server_id,
            workload: Some((dir.join("host.toml"), WORKLOAD)),
        };
        for (name, text) in [("server", server), ("dpu", dpu), ("host", host)] {
            mesh.spawn(dir, name, &text, &opts)?;
        }
        // Each plane is ready only once the other is: the host last.
        for admin in [server_admin, dpu_admin, host_admin] {
            mesh.wait_ready(admin).await?;
        }
        Ok(mesh)
    }

    /// Writes `name.toml` in `dir` and starts `weir run` on it, its log in `name.log`.
    fn spawn(&mut self, dir: &Path, name: &str, config: &str, opts: &Options<'_>) -> anyhow::Result<()> {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let exe = std::env::current_exe()?;
        let mut cmd = match opts.pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        if let Some(filter) = opts.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start the {name} node"))?;
        self.children.push(child);
        Ok(())
    }

    async fn wait_ready(&mut self, admin: SocketAddr) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Ok((200, _)) = crate::http_client::get_text(admin, "/readyz").await {
                return Ok(());
            }
            for c in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("a node exited during start-up ({status}); see its log");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("node with admin {admin} not ready after 30 s")
    }

    /// Process ids of the nodes (server first; with planes, then the DPU, then the host plane).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The process on the app's own host: the client node, or the host plane (started last).
    pub fn app_side_pid(&self) -> Option<u32> {
        self.children.last().map(Child::id)
    }

    /// Stops both nodes (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(mut self) {
        self.stop_children();
    }

    fn stop_children(&mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.children {
            for _ in 0..50 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop_children();
    }
}
