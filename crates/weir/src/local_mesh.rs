//! Two `weir run` processes on this machine (client side and server side) built from the
//! embedded default config with ports and one route filled in: used by `weir demo` and
//! `weir bench`.
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weir_identity::SpiffeId;

/// Two running nodes. Dropping it stops them.
pub struct Mesh {
    children: Vec<Child>,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub client_admin: SocketAddr,
    pub server_admin: SocketAddr,
    pub client_id: SpiffeId,
    pub server_id: SpiffeId,
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
        let pin = opts.pin;
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
        let mut mesh =
            Self { children: Vec::new(), outbound, inbound, client_admin, server_admin, client_id, server_id };
        for (name, text) in [("server", server), ("client", client)] {
            let cfg = dir.join(format!("{name}.toml"));
            std::fs::write(&cfg, text)?;
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let exe = std::env::current_exe()?;
            let mut cmd = match pin {
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
            mesh.children.push(child);
        }
        for admin in [server_admin, client_admin] {
            mesh.wait_ready(admin).await?;
        }
        Ok(mesh)
    }

    async fn wait_ready(&mut self, admin: SocketAddr) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Ok((200, _)) = crate::demo::traffic::get_text(admin, "/readyz").await {
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

    /// Process ids of the nodes (server first).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
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
