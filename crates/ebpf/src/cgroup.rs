//! cgroup v2 paths: where the hierarchy is mounted (read from mountinfo: it is not always
//! /sys/fs/cgroup), Weir's parent cgroup and the workload cgroups under it.
use crate::Error;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The cgroup v2 mount point of this mount namespace.
pub fn v2_root() -> Result<PathBuf, Error> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Cgroup(format!("/proc/self/mountinfo: {e}")))?;
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .ok_or_else(|| Error::Cgroup("no cgroup v2 hierarchy is mounted (the kernel path needs cgroup v2)".into()))
}

/// Creates `dir` (and parents) if missing.
pub fn ensure(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Cgroup(format!("{}: {e}", dir.display())))
}

/// The kernel's id of a cgroup: its inode number on cgroup v2.
pub fn id(dir: &Path) -> Result<u64, Error> {
    Ok(std::fs::metadata(dir).map_err(|e| Error::Cgroup(format!("{}: {e}", dir.display())))?.ino())
}

/// Moves the calling process into the cgroup at `dir`.
pub fn enter(dir: &Path) -> Result<(), Error> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, "0\n").map_err(|e| Error::Cgroup(format!("{}: {e}", procs.display())))
}

/// Removes an empty cgroup; a cgroup that still holds processes stays (and says so).
pub fn remove(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Cgroup(format!("{}: {e}", dir.display()))),
    }
}
