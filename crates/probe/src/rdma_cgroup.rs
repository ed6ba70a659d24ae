//! The cgroup v2 `rdma` controller: whether the kernel has it, enabling it down to a cgroup,
//! and a cgroup's `rdma.max` (limits) and `rdma.current` (usage) per RDMA device.
//!
//! The controller counts two resources per device (Documentation/admin-guide/cgroup-v2.rst):
//! `hca_handle`, one per open device context (every `ibv_open_device`), and `hca_object`,
//! every verbs object (PD, CQ, QP, MR, ...). A process over its cgroup's limit gets EAGAIN from
//! the verbs call. Owns reading and writing those files; does not own creating cgroups or
//! moving processes (the caller's), nor RDMA devices themselves ([`crate::rdma`]).

use std::path::{Path, PathBuf};

/// The controller's name in `cgroup.controllers` and `cgroup.subtree_control`.
const CONTROLLER: &str = "rdma";

/// A cgroup's limits on one RDMA device; `None` is `max` (no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaLimit {
    /// RDMA device name (`mlx5_0`, `rxe0`).
    pub device: String,
    /// Open device contexts allowed.
    pub hca_handle: Option<u32>,
    /// Verbs objects (PDs, CQs, QPs, MRs, ...) allowed.
    pub hca_object: Option<u32>,
}

/// A cgroup's use of one RDMA device (`rdma.current`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaUsage {
    /// RDMA device name.
    pub device: String,
    /// Open device contexts.
    pub hca_handle: u32,
    /// Verbs objects.
    pub hca_object: u32,
}

/// Why the rdma controller or a cgroup's rdma files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RdmaCgroupError {
    /// The kernel has no rdma controller, or no cgroup v2 hierarchy is mounted.
    #[error("rdma cgroup controller unavailable: {0}")]
    Unavailable(String),
    /// Reading or writing a cgroup file failed (ENODEV when writing a limit for a device the
    /// kernel does not know).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A file's content did not parse.
    #[error("{path}: malformed line {line:?}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A request that cannot be carried out as asked (a device name with whitespace, a cgroup
    /// outside the hierarchy).
    #[error("invalid rdma cgroup request: {0}")]
    Invalid(String),
}

/// The cgroup v2 mount point, from /proc/self/mountinfo (hybrid hosts mount it at
/// /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup).
pub fn v2_root() -> Result<PathBuf, RdmaCgroupError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| io("/proc/self/mountinfo", e))?;
    v2_root_in(&info).ok_or_else(|| RdmaCgroupError::Unavailable("no cgroup v2 hierarchy is mounted".into()))
}

/// The first cgroup2 mount point of a mountinfo text.
pub fn v2_root_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// Mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b, octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the kernel offers the rdma controller: `rdma` in the root's `cgroup.controllers`.
pub fn controller_available(root: &Path) -> Result<(), RdmaCgroupError> {
    let path = root.join("cgroup.controllers");
    let controllers = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    if has(&controllers, CONTROLLER) {
        Ok(())
    } else {
        Err(RdmaCgroupError::Unavailable(format!(
            "{} lists {:?}: no rdma (kernel built without CONFIG_CGROUP_RDMA, or the controller is bound to a v1 hierarchy)",
            path.display(),
            controllers.trim()
        )))
    }
}

/// Whether `cgroup` has the rdma controller (its parent enabled it): `rdma` in its own
/// `cgroup.controllers`, so `rdma.max` exists and is enforced.
pub fn enabled(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.controllers")).is_ok_and(|c| has(&c, CONTROLLER))
}

/// Enables the rdma controller for `cgroup`: writes `+rdma` to `cgroup.subtree_control` of
/// every cgroup from `root` down to `cgroup`'s parent that lacks it. `cgroup` must lie under
/// `root`. A parent that holds processes itself refuses (EBUSY: cgroup v2's no-internal-process
/// rule), so put processes in leaves.
pub fn enable(root: &Path, cgroup: &Path) -> Result<(), RdmaCgroupError> {
    controller_available(root)?;
    let rel = cgroup
        .strip_prefix(root)
        .map_err(|_| RdmaCgroupError::Invalid(format!("{} is not under {}", cgroup.display(), root.display())))?;
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        let control = dir.join("cgroup.subtree_control");
        let now = std::fs::read_to_string(&control).map_err(|e| io(&control, e))?;
        if !has(&now, CONTROLLER) {
            std::fs::write(&control, "+rdma").map_err(|e| io(&control, e))?;
        }
        dir.push(part);
    }
    Ok(())
}

/// Sets `cgroup`'s limits, one device per write (the kernel parses one device per write).
/// Devices not named keep their limits.
pub fn set_max(cgroup: &Path, limits: &[RdmaLimit]) -> Result<(), RdmaCgroupError> {
    let path = cgroup.join("rdma.max");
    for limit in limits {
        std::fs::write(&path, format_limit(limit)?).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The line `rdma.max` takes for one device: `rxe0 hca_handle=2 hca_object=max`.
pub fn format_limit(limit: &RdmaLimit) -> Result<String, RdmaCgroupError> {
    if limit.device.is_empty() || limit.device.contains(char::is_whitespace) {
        return Err(RdmaCgroupError::Invalid(format!("device name {:?}", limit.device)));
    }
    let value = |v: Option<u32>| v.map_or_else(|| "max".to_owned(), |n| n.to_string());
    Ok(format!("{} hca_handle={} hca_object={}", limit.device, value(limit.hca_handle), value(limit.hca_object)))
}

/// `cgroup`'s limits per device (every device the kernel knows, `max` where unset).
pub fn read_max(cgroup: &Path) -> Result<Vec<RdmaLimit>, RdmaCgroupError> {
    let path = cgroup.join("rdma.max");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    parse_max(&text).map_err(|(line, reason)| RdmaCgroupError::Malformed { path, line, reason })
}

/// `cgroup`'s use per device.
pub fn read_current(cgroup: &Path) -> Result<Vec<RdmaUsage>, RdmaCgroupError> {
    let path = cgroup.join("rdma.current");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    parse_current(&text).map_err(|(line, reason)| RdmaCgroupError::Malformed { path, line, reason })
}

/// Parses `rdma.max`: one device a line, `max` for no limit. Errors name the line and why.
fn parse_max(text: &str) -> Result<Vec<RdmaLimit>, (String, String)> {
    lines(text, |device, handle, object| RdmaLimit { device, hca_handle: handle, hca_object: object })
}

/// Parses `rdma.current`: like `rdma.max`, but `max` is not a usage.
fn parse_current(text: &str) -> Result<Vec<RdmaUsage>, (String, String)> {
    let limits = parse_max(text)?;
    limits
        .into_iter()
        .map(|l| match (l.hca_handle, l.hca_object) {
            (Some(hca_handle), Some(hca_object)) => Ok(RdmaUsage { device: l.device, hca_handle, hca_object }),
            _ => Err((format_limit(&l).unwrap_or_default(), "\"max\" is not a usage".into())),
        })
        .collect()
}

/// Each line is `DEVICE hca_handle=V hca_object=V` (the kernel writes both keys, in this order,
/// with a trailing space); a key may be missing (read as max), unknown keys are refused.
fn lines<T>(text: &str, make: impl Fn(String, Option<u32>, Option<u32>) -> T) -> Result<Vec<T>, (String, String)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fail = |reason: String| (line.to_owned(), reason);
        let mut words = line.split_whitespace();
        let device = words.next().ok_or_else(|| fail("no device".into()))?.to_owned();
        let (mut handle, mut object) = (None, None);
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| fail(format!("{word:?} is not key=value")))?;
            let value = match value {
                "max" => None,
                n => Some(n.parse::<u32>().map_err(|e| fail(format!("{key}: {e}")))?),
            };
            match key {
                "hca_handle" => handle = value,
                "hca_object" => object = value,
                _ => return Err(fail(format!("unknown resource {key:?}"))),
            }
        }
        out.push(make(device, handle, object));
    }
    Ok(out)
}

/// Whether a space-separated controller list names `controller`.
fn has(list: &str, controller: &str) -> bool {
    list.split_whitespace().any(|c| c == controller)
}

fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RdmaCgroupError {
    RdmaCgroupError::Io { path: path.into(), source }
}

#[cfg(test)]
mod tests;
