//! Pipes and splice(2): the kernel-side buffer that lets bytes move socket -> socket without
//! entering userspace.
use crate::SyscallError;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking pipe sized for splicing.
#[derive(Debug)]
pub struct Pipe {
    /// Read end.
    pub read: OwnedFd,
    /// Write end.
    pub write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Creates a pipe and asks the kernel for `size` bytes of capacity. The kernel may grant
    /// less (`pipe-user-pages-soft` for unprivileged users); `capacity()` says what was granted.
    pub fn with_capacity(size: usize) -> Result<Self, SyscallError> {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid array of two c_ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(SyscallError::last("pipe2"));
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        // SAFETY: F_SETPIPE_SZ on an fd we own; failure is harmless (the default size stays).
        let granted = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        let capacity = if granted > 0 {
            granted as usize
        } else {
            // SAFETY: F_GETPIPE_SZ on an fd we own.
            let cur = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            usize::try_from(cur).unwrap_or(65536)
        };
        Ok(Self { read, write, capacity })
    }

    /// Bytes the pipe can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Flags for one splice call.
#[derive(Debug, Clone, Copy)]
pub enum SpliceFlags {
    /// More data follows soon: lets a kTLS socket fill whole records.
    More,
    /// This is the end of what is available now.
    Flush,
}

/// splice(2) up to `len` bytes from `from` to `to` without blocking on the pipe side.
/// Returns the bytes moved; 0 means end of stream on `from`.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize, flags: SpliceFlags) -> Result<usize, SyscallError> {
    let mut f = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    if let SpliceFlags::More = flags {
        f |= libc::SPLICE_F_MORE;
    }
    // SAFETY: both fds are valid for the duration of the call (borrowed); null offsets are
    // required for pipes and sockets.
    let n =
        unsafe { libc::splice(from.as_raw_fd(), std::ptr::null_mut(), to.as_raw_fd(), std::ptr::null_mut(), len, f) };
    if n < 0 {
        return Err(SyscallError::last("splice"));
    }
    Ok(n as usize)
}
