//! Weir's kernel path: the eBPF programs in `bpf/weir.bpf.c` (built by clang in `build.rs`),
//! loaded with aya and attached to Weir's parent cgroup, so every workload cgroup under it
//! inherits them.
//!
//! Owns: finding cgroup v2 and bpffs, the parent and workload cgroups, loading and attaching
//! (or adopting programs a previous Weir left pinned), compiling L4 rules and capture targets
//! into map entries, reading back original destinations and per-connection L4 facts, and
//! detaching everything on a clean stop. Nothing is ever attached to the root cgroup.
//! Does not own what the rules are (`weir-policy`) or what Weir does with captured
//! connections (`weir-app`).
#![forbid(unsafe_code)]

pub mod cgroup;
mod layout;
mod maps;

pub use layout::ConnFacts;
pub use maps::{Capture, Counters, OriginalDestinations, Plan, WorkloadPlan};

use aya::maps::SockHash;
use aya::programs::{CgroupSockAddr, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use weir_sys::bpf::CgroupAttach;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir.bpf.o"));

const PROGRAMS: [(&str, CgroupAttach); 3] = [
    ("weir_connect4", CgroupAttach::Connect4),
    ("weir_connect6", CgroupAttach::Connect6),
    ("weir_sockops", CgroupAttach::SockOps),
];

/// Kernel-path failures. Each names what is missing or what failed: the kernel path is never
/// silently unenforced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// cgroup v2 is missing or a cgroup operation failed.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// bpffs could not be mounted or a pin could not be made or removed.
    #[error("bpffs: {0}")]
    Bpffs(String),
    /// Loading or verifying the BPF object failed (missing CAP_BPF/CAP_SYS_ADMIN, old kernel).
    #[error("loading eBPF programs (needs root or CAP_BPF + CAP_NET_ADMIN, and a kernel with cgroup BPF): {0}")]
    Load(String),
    /// A map operation failed.
    #[error("eBPF map {map}: {reason}")]
    Map {
        /// The map.
        map: &'static str,
        /// Why.
        reason: String,
    },
}

/// Where the kernel path lives.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent cgroup, relative to the cgroup v2 root (never empty: never the root itself).
    pub cgroup: String,
    /// bpffs folder for Weir's pins.
    pub pin_dir: PathBuf,
}

/// The loaded and attached kernel path.
pub struct KernelPath {
    bpf: Ebpf,
    parent: PathBuf,
    pin_dir: PathBuf,
    adopted: bool,
}

impl std::fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPath")
            .field("parent", &self.parent)
            .field("pin_dir", &self.pin_dir)
            .field("adopted", &self.adopted)
            .finish()
    }
}

impl KernelPath {
    /// Loads the programs and attaches them to the parent cgroup, or adopts the attachment a
    /// previous Weir left pinned (policy stayed enforced meanwhile).
    pub fn start(opts: &Options) -> Result<Self, Error> {
        if opts.cgroup.trim_matches('/').is_empty() {
            return Err(Error::Cgroup("refusing to attach to the root cgroup: set kernel.cgroup".into()));
        }
        let parent = cgroup::v2_root()?.join(opts.cgroup.trim_matches('/'));
        cgroup::ensure(&parent)?;
        let bpffs = opts.pin_dir.parent().unwrap_or(Path::new("/sys/fs/bpf"));
        std::fs::create_dir_all(bpffs).map_err(|e| Error::Bpffs(format!("{}: {e}", bpffs.display())))?;
        weir_sys::bpf::ensure_bpffs(bpffs).map_err(|e| Error::Bpffs(format!("{}: {e}", bpffs.display())))?;
        std::fs::create_dir_all(&opts.pin_dir).map_err(|e| Error::Bpffs(format!("{}: {e}", opts.pin_dir.display())))?;

        let mut bpf = EbpfLoader::new()
            .default_map_pin_directory(&opts.pin_dir)
            .load(OBJECT)
            .map_err(|e| Error::Load(e.to_string()))?;
        let adopted = PROGRAMS.iter().all(|(name, _)| link_pin(&opts.pin_dir, name).exists());
        if !adopted {
            let cg = std::fs::File::open(&parent).map_err(|e| Error::Cgroup(format!("{}: {e}", parent.display())))?;
            for (name, attach) in PROGRAMS {
                let pin = link_pin(&opts.pin_dir, name);
                let _ = std::fs::remove_file(&pin);
                let prog = bpf
                    .program_mut(name)
                    .ok_or_else(|| Error::Load(format!("program {name} missing from the object")))?;
                let fd = match attach {
                    CgroupAttach::SockOps => {
                        let p: &mut SockOps = prog.try_into().map_err(|e| Error::Load(format!("{name}: {e}")))?;
                        p.load().map_err(|e| Error::Load(format!("{name}: {e}")))?;
                        p.fd().map_err(|e| Error::Load(format!("{name}: {e}")))?.as_fd().try_clone_to_owned()
                    }
                    _ => {
                        let p: &mut CgroupSockAddr =
                            prog.try_into().map_err(|e| Error::Load(format!("{name}: {e}")))?;
                        p.load().map_err(|e| Error::Load(format!("{name}: {e}")))?;
                        p.fd().map_err(|e| Error::Load(format!("{name}: {e}")))?.as_fd().try_clone_to_owned()
                    }
                }
                .map_err(|e| Error::Load(format!("{name}: {e}")))?;
                let link = weir_sys::bpf::link_cgroup(fd.as_fd(), cg.as_fd(), attach)
                    .map_err(|e| Error::Load(format!("{name}: {e}")))?;
                weir_sys::bpf::pin(link.as_fd(), &pin).map_err(|e| Error::Bpffs(format!("{}: {e}", pin.display())))?;
            }
            // sk_msg attaches to the (pinned) sockhash, not to a cgroup: the attachment lives as
            // long as the map, so the link handle is deliberately not kept (dropping it would
            // detach the program).
            let map = bpf.map("weir_http_socks").ok_or_else(|| Error::Load("map weir_http_socks missing".into()))?;
            let socks: SockHash<_, u64> =
                SockHash::try_from(map).map_err(|e| Error::Load(format!("weir_http_socks: {e}")))?;
            let socks_fd = socks.fd().try_clone().map_err(|e| Error::Load(format!("weir_http_socks: {e}")))?;
            let prog: &mut SkMsg = bpf
                .program_mut("weir_http_count")
                .ok_or_else(|| Error::Load("program weir_http_count missing".into()))?
                .try_into()
                .map_err(|e| Error::Load(format!("weir_http_count: {e}")))?;
            prog.load().map_err(|e| Error::Load(format!("weir_http_count: {e}")))?;
            let link = prog.attach(&socks_fd).map_err(|e| Error::Load(format!("weir_http_count: {e}")))?;
            std::mem::forget(prog.take_link(link).map_err(|e| Error::Load(format!("weir_http_count: {e}")))?);
            tracing::info!(cgroup = %parent.display(), pins = %opts.pin_dir.display(), "eBPF programs attached");
        } else {
            tracing::info!(cgroup = %parent.display(), pins = %opts.pin_dir.display(), "adopted eBPF programs left attached by a previous Weir");
        }
        Ok(Self { bpf, parent, pin_dir: opts.pin_dir.clone(), adopted })
    }

    /// True when the programs were already attached by a previous Weir.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The cgroup of a workload (created by `apply`).
    pub fn workload_cgroup(&self, name: &str) -> PathBuf {
        self.parent.join(name)
    }

    /// Detaches everything: removes the link pins (the kernel detaches the programs), the map
    /// pins and the pin folder, and the empty workload cgroups.
    pub fn detach(self) -> Result<(), Error> {
        let Self { bpf, parent, pin_dir, .. } = self;
        drop(bpf);
        let entries = std::fs::read_dir(&pin_dir).map_err(|e| Error::Bpffs(format!("{}: {e}", pin_dir.display())))?;
        for e in entries.flatten() {
            std::fs::remove_file(e.path()).map_err(|err| Error::Bpffs(format!("{}: {err}", e.path().display())))?;
        }
        std::fs::remove_dir(&pin_dir).map_err(|e| Error::Bpffs(format!("{}: {e}", pin_dir.display())))?;
        if let Ok(children) = std::fs::read_dir(&parent) {
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                if let Err(e) = cgroup::remove(&c.path()) {
                    tracing::warn!(error = %e, "workload cgroup left in place");
                }
            }
        }
        cgroup::remove(&parent)?;
        tracing::info!("eBPF programs detached, pins removed");
        Ok(())
    }
}

fn link_pin(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("link_{program}"))
}
