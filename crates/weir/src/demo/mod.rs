//! `weir demo`: Weir's main job on the embedded default, end to end, on this machine.
//!
//! Creates a CA, starts two `weir run` processes (client side and server side) from the
//! embedded default config, a sample HTTP backend, drives real traffic through the mesh (many
//! small requests, a large download, an upload, a request the L7 policy denies, a trace that
//! must reach the backend, and an impostor that must be refused), then
//! prints what happened and stops everything it started.
pub mod backend;
mod summary;
pub mod traffic;

use anyhow::Context;

/// The demo service speaks HTTP: the server node reads each head, applies this policy, and
/// splices the bodies.
const L7: &str = "protocol = \"http\"\n[[inbound.services.http.rules]]\naction = \"deny\"\npath_prefix = \"/admin\"\n";

/// Options of `weir demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Small requests to send (1 KiB responses).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Keep-alive connections for the small requests.
    #[arg(long, default_value_t = 20)]
    pub connections: usize,
    /// Size of the large download, MiB.
    #[arg(long, default_value_t = 256)]
    pub large_mib: usize,
    /// Keep the working directory (configs, CA, node logs) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("weir-demo.").tempdir()?;
    let ca = weir_identity::Ca::init(&dir.path().join("ca"), "weir.local")?;
    let backend = backend::start().await.context("sample backend")?;
    let opts = weir_bench::local_mesh::Options { service_toml: L7, ..Default::default() };
    let mesh = weir_bench::local_mesh::Mesh::start_with(dir.path(), ca.dir(), backend, opts).await?;
    println!("Weir demo: two nodes, one trust domain (weir.local), a sample HTTP backend (working directory {}, kept with --keep)", dir.path().display());
    if let Ok(guest) = std::env::var("WEIR_IN_GUEST") {
        println!("Running in a {guest} guest kernel: kTLS is real, its crypto is emulated or generic C, so speeds below are not meaningful.");
    }

    let small =
        traffic::small_requests(mesh.outbound, args.requests, args.connections).await.context("small requests")?;
    let large = traffic::large_download(mesh.outbound, args.large_mib << 20).await.context("large download")?;
    let upload = traffic::upload_echo(mesh.outbound, 16 << 20).await.context("upload")?;
    let impostor = traffic::impostor(mesh.inbound, &ca, &mesh.server_id).await.context("impostor")?;
    let l7 = traffic::l7_checks(mesh.outbound).await.context("L7 checks")?;

    let report = summary::Report::gather(&mesh, small, large, upload, impostor, l7).await?;
    print!("{report}");
    mesh.stop();
    if args.keep {
        println!("kept {}", dir.keep().display());
    }
    report.verdict()
}
