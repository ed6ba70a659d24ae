//! `weir ca init|issue|rotate|show|serve`: the built-in CA from the command line, and on the
//! network for planes that do not hold its directory (`serve`; the server is
//! `weir_tls::ca_api`).
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;
use weir_identity::{Ca, IdentitySource, SpiffeId};
use weir_tls::ca_api::{CaServer, Clients};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root (ECDSA P-256) in DIR; the key is written 0600.
    Init {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "weir.local")]
        trust_domain: String,
    },
    /// Issue an SVID for a SPIFFE ID, as PEM files.
    Issue {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The SPIFFE ID, e.g. spiffe://weir.local/ns/default/sa/client.
        #[arg(long)]
        id: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Output certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Output private key (PEM, written 0600).
        #[arg(long)]
        key: PathBuf,
    },
    /// Replace the signing root; the old root stays in the trust bundle until you remove it.
    Rotate {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show the CA: trust domain, root, bundle size.
    Show {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Serve the CA over TLS 1.3 to the clients listed in FILE (token + allowed SPIFFE IDs);
    /// planes use it with `[identity] ca_url`. Runs until SIGTERM or Ctrl-C.
    Serve {
        /// CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Listen address, e.g. 0.0.0.0:8450.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Clients file (TOML): [[clients]] name, token_file, ids.
        #[arg(long)]
        clients: PathBuf,
        /// Longest SVID lifetime granted, in seconds; longer requests are capped.
        #[arg(long, default_value_t = 86_400)]
        max_ttl_secs: u64,
    },
}

pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { dir, trust_domain } => {
            Ca::init(&dir, &trust_domain)?;
            println!("created CA for trust domain {trust_domain} in {}", dir.display());
        }
        CaCommand::Issue { dir, id, ttl_secs, cert, key } => {
            let ca = Ca::load(&dir)?;
            let id: SpiffeId = id.parse().context("--id")?;
            let svid = ca.fetch_svid(&id, Duration::from_secs(ttl_secs))?;
            let (chain, key_pem) = svid.to_pem();
            std::fs::write(&cert, chain).with_context(|| cert.display().to_string())?;
            write_private(&key, key_pem.as_bytes())?;
            println!(
                "issued {} serial {} valid {ttl_secs}s -> {} {}",
                svid.id,
                svid.serial,
                cert.display(),
                key.display()
            );
        }
        CaCommand::Rotate { dir } => {
            let ca = Ca::rotate(&dir)?;
            println!(
                "new root for {} in {}; bundle now holds {} roots",
                ca.trust_domain(),
                dir.display(),
                ca.trust_bundle()?.roots.len()
            );
        }
        CaCommand::Show { dir } => {
            let ca = Ca::load(&dir)?;
            let bundle = ca.trust_bundle()?;
            println!("trust domain: {}", ca.trust_domain());
            println!("directory:    {}", dir.display());
            println!("bundle roots: {}", bundle.roots.len());
            print!("{}", ca.root_pem());
        }
        CaCommand::Serve { dir, listen, clients, max_ttl_secs } => serve(&dir, listen, &clients, max_ttl_secs)?,
    }
    Ok(())
}

fn serve(
    dir: &std::path::Path,
    listen: std::net::SocketAddr,
    clients: &std::path::Path,
    max_ttl_secs: u64,
) -> anyhow::Result<()> {
    let ca = Ca::load(dir)?;
    let clients = Clients::load(clients, ca.trust_domain())?;
    let count = clients.len();
    let server = CaServer::new(ca, clients, Duration::from_secs(max_ttl_secs.max(1)))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let at = listener.local_addr().unwrap_or(listen);
        tracing::info!(listen = %at, id = %server.id(), clients = count, max_ttl_secs, "CA serving");
        let serving = tokio::spawn(server.clone().serve(listener));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        serving.abort();
        let stats = server.stats();
        let refused: Vec<String> = stats.refused.iter().map(|(r, n)| format!("{}={n}", r.as_label())).collect();
        tracing::info!(issued = stats.issued, refused = refused.join(","), "CA server stopped");
        Ok(())
    })
}

fn write_private(path: &std::path::Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(data).with_context(|| path.display().to_string())
}
