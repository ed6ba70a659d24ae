//! The few bpf(2) and mount(2) calls aya 0.14 does not expose: creating a cgroup bpf_link we
//! can pin (so policy outlives the Weir process), pinning it, and mounting bpffs.
use crate::SyscallError;
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Cgroup attach points Weir uses (`enum bpf_attach_type`).
#[derive(Debug, Clone, Copy)]
pub enum CgroupAttach {
    /// `BPF_CGROUP_SOCK_OPS`.
    SockOps = 3,
    /// `BPF_CGROUP_INET4_CONNECT`.
    Connect4 = 10,
    /// `BPF_CGROUP_INET6_CONNECT`.
    Connect6 = 11,
}

/// `union bpf_attr`, as large as any command needs; unused bytes stay zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn put_u32(&mut self, offset: usize, v: u32) {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, v: u64) {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn call(&mut self, cmd: libc::c_long, name: &'static str) -> Result<i64, SyscallError> {
        // SAFETY: bpf(2) reads at most `size` bytes of a properly aligned, zero-filled attr.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), self.0.len() as libc::c_uint) };
        if rc < 0 {
            return Err(SyscallError::last(name));
        }
        Ok(rc)
    }
}

/// Attaches a loaded program to a cgroup through a bpf_link (`BPF_LINK_CREATE`). The link
/// lives while its fd or a pin of it exists.
pub fn link_cgroup(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach: CgroupAttach,
) -> Result<OwnedFd, SyscallError> {
    let mut attr = Attr::new();
    attr.put_u32(0, prog.as_raw_fd() as u32); // link_create.prog_fd
    attr.put_u32(4, cgroup.as_raw_fd() as u32); // link_create.target_fd
    attr.put_u32(8, attach as u32); // link_create.attach_type
    let fd = attr.call(BPF_LINK_CREATE, "bpf(BPF_LINK_CREATE)")?;
    // SAFETY: the kernel returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins a bpf object (map, program or link) at `path` on bpffs (`BPF_OBJ_PIN`).
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), SyscallError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| SyscallError {
        call: "bpf(BPF_OBJ_PIN)",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    let mut attr = Attr::new();
    attr.put_u64(0, c.as_ptr() as u64); // obj_pin.pathname
    attr.put_u32(8, fd.as_raw_fd() as u32); // obj_pin.bpf_fd
    attr.call(BPF_OBJ_PIN, "bpf(BPF_OBJ_PIN)")?;
    Ok(())
}

/// Mounts bpffs at `dir` unless one is there already.
pub fn ensure_bpffs(dir: &Path) -> Result<(), SyscallError> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|e| SyscallError {
        call: "statfs",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: statfs is plain old data; statfs(2) fills it for a valid C path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, st a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    if unsafe { libc::mount(fstype.as_ptr(), c.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } < 0 {
        return Err(SyscallError::last("mount(bpf)"));
    }
    Ok(())
}
