//! Plain socket options that std and tokio do not expose.
use crate::SyscallError;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Makes the next close of this socket send a RST instead of a FIN (`SO_LINGER` = 0), so a
/// reset seen on one leg of a hop is passed on to the other leg rather than hidden as EOF.
pub fn abort_on_close(fd: BorrowedFd<'_>) -> Result<(), SyscallError> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is a valid, correctly sized option value for SO_LINGER.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(SyscallError::last("setsockopt(SO_LINGER)"));
    }
    Ok(())
}

/// Raises the open-file limit as far as allowed: to `fs.nr_open` where privileged, else the
/// soft limit to the hard one. Each proxied connection holds two sockets and up to two pipes.
/// Returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64, SyscallError> {
    // SAFETY: rlimit is plain old data; getrlimit fills it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(SyscallError::last("getrlimit(RLIMIT_NOFILE)"));
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(max) = nr_open.filter(|&m| m > lim.rlim_max) {
        let wide = libc::rlimit { rlim_cur: max, rlim_max: max };
        // SAFETY: a valid pointer to an initialised rlimit; EPERM (unprivileged) is handled below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wide) } == 0 {
            return Ok(max);
        }
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: a valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
        return Err(SyscallError::last("setrlimit(RLIMIT_NOFILE)"));
    }
    Ok(lim.rlim_cur)
}

/// Half-closes a socket (`shutdown(SHUT_WR)`): the peer reads EOF, the other direction stays
/// open.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> Result<(), SyscallError> {
    // SAFETY: shutdown on a borrowed, open fd.
    if unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
        return Err(SyscallError::last("shutdown(SHUT_WR)"));
    }
    Ok(())
}
