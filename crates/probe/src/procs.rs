//! Processes from /proc: who holds which socket (`/proc/PID/fd/*` → `socket:[INODE]`) and which
//! processes run a given program (comm or argv[0] basename). A process that exits or denies
//! access mid-walk is skipped: the walk is a snapshot, never an error.

use serde::Serialize;
use std::collections::HashMap;

/// A process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Its `comm` (the kernel's 15-byte name).
    pub comm: String,
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_owned()).unwrap_or_default()
}

/// Socket inode → processes with an fd on it.
pub fn socket_owners() -> HashMap<u64, Vec<Process>> {
    let mut owners: HashMap<u64, Vec<Process>> = HashMap::new();
    for pid in pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        let mut name = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else { continue };
            let list = owners.entry(inode).or_default();
            // A process with many fds on one socket (dup) is listed once.
            if !list.iter().any(|p| p.pid == pid) {
                list.push(Process { pid, comm: name.get_or_insert_with(|| comm(pid)).clone() });
            }
        }
    }
    owners
}

/// `socket:[123]` → 123.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The cgroup v2 path of process `pid` (`/weir/cart`, relative to the hierarchy's root), from
/// the `0::` line of /proc/PID/cgroup; `None` when the process is gone.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

/// Processes whose comm or argv[0] basename is `program`.
pub fn running(program: &str) -> Vec<Process> {
    pids()
        .filter_map(|pid| {
            let comm = comm(pid);
            let argv0 = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = argv0.split(|b| *b == 0).next().unwrap_or_default();
            let base = String::from_utf8_lossy(argv0.rsplit(|b| *b == b'/').next().unwrap_or_default()).into_owned();
            (comm == program || base == program).then_some(Process { pid, comm })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[4026532]"), Some(4026532));
        for bad in ["pipe:[1]", "socket:[]", "socket:[12", "socket:[x]", "/dev/null"] {
            assert_eq!(socket_inode(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_process_owns_its_listener() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}")).expect("fd").ino();
        let owners = socket_owners();
        let me = std::process::id();
        assert!(owners.get(&inode).is_some_and(|o| o.iter().any(|p| p.pid == me)), "inode {inode}: {owners:?}");
    }
}
