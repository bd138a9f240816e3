//! Leaves that import nothing from the crate: clocks, local time, /proc
//! readers, the heap and the stderr writer.

pub mod clock;
pub mod forked;
pub mod glob;
pub mod heap;
pub mod pagecache;
pub mod procfs;
pub mod proctitle;
pub mod sched;
pub mod signals;
pub mod time;

/// Points descriptor `fd` at /dev/null: closes what it was, as `close`
/// would, but leaves the number taken, so that whatever in this process
/// still holds it as its own (the master's structures in a forked worker,
/// dropped if a panic unwinds there) closes /dev/null, not a descriptor
/// opened since under the same number.
pub fn void_fd(fd: std::os::fd::RawFd) {
    let Ok(null) = std::fs::File::open("/dev/null") else {
        let _ = nix::unistd::close(fd);
        return;
    };
    if std::os::fd::AsRawFd::as_raw_fd(&null) == fd {
        // `fd` was not open, and /dev/null (close-on-exec, as std opens
        // files) took its number: that is the voided state, kept.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
        return;
    }
    // Close-on-exec, as the descriptor it replaces was: a CGI script or a
    // program the app runs does not inherit it.
    // SAFETY: dup3 takes two integers and a flag and touches no memory of
    // ours; `fd` is one this process's caller owns (a copy inherited
    // through fork), and `null` stays open for the call.
    if unsafe { libc::dup3(std::os::fd::AsRawFd::as_raw_fd(&null), fd, libc::O_CLOEXEC) } < 0 {
        let _ = nix::unistd::close(fd);
    }
}

/// Makes the socket's close a reset (SO_LINGER with a zero timeout): the
/// peer is told the exchange failed, not that it ended.
pub fn reset_on_close(sock: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from `linger`,
    // a local that lives through the call; a bad `sock` is an error
    // return, not undefined behaviour.
    unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// How many bytes written to the socket `sock` the peer has not yet
/// taken (TIOCOUTQ, which is SIOCOUTQ: for TCP, those not yet
/// acknowledged), or None where it cannot be told.
pub fn unsent_bytes(sock: std::os::fd::RawFd) -> Option<u32> {
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int through the pointer, to `queued`,
    // a local that lives through the call; a bad `sock` is an error
    // return, not undefined behaviour.
    let r = unsafe { libc::ioctl(sock, libc::TIOCOUTQ, &raw mut queued) };
    (r == 0).then(|| u32::try_from(queued).unwrap_or(0))
}

/// Whether `sock` is a unix socket, where a close cannot be a reset.
pub fn is_unix_socket(sock: std::os::fd::RawFd) -> bool {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    getsockname::<SockaddrStorage>(sock).is_ok_and(|a| a.family() == Some(AddressFamily::Unix))
}

/// sendfile(2): up to `len` bytes of `file` from `offset` (which it
/// advances) to the socket `sock`.
pub fn sendfile(
    sock: std::os::fd::RawFd,
    file: std::os::fd::RawFd,
    offset: &mut libc::off_t,
    len: usize,
) -> std::io::Result<usize> {
    // SAFETY: sendfile takes two descriptors, which the caller keeps open
    // for the call, and `offset`, a live, exclusive reference it updates.
    let n = unsafe { libc::sendfile(sock, file, offset, len) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes all of `buf` with as few write() calls as it takes (one, but
/// for a short write or EINTR).
pub fn write_all_to(
    fd: std::os::fd::BorrowedFd<'_>,
    mut buf: &[u8],
) -> Result<(), nix::errno::Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A log file opened for appending: write-only, created 0640 (less the
/// umask), close-on-exec. Only async-signal-safe calls (nix's `open` passes
/// the `CStr` straight to open(2), with no allocation): reopening a log
/// runs it in a signal handler.
pub fn open_append(path: &std::ffi::CStr) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
}

/// A log file's path made absolute (so that a reopen after --chdir finds
/// the same file), as the C string open(2) takes.
pub fn log_path(path: &std::path::Path) -> Result<std::ffi::CString, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL byte in the path", path.display()))
}

/// Sets O_NONBLOCK on a descriptor; whether it could be.
pub fn set_nonblocking(fd: &impl std::os::fd::AsFd) -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(fd, FcntlArg::F_GETFL)
        .and_then(|flags| {
            let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
            fcntl(fd, FcntlArg::F_SETFL(flags))
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn a_voided_descriptor_keeps_its_number_on_dev_null_closed_on_exec() {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        // Its owner keeps it, as the master's structures in a worker do,
        // and closes /dev/null in the end.
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        // A descriptor without close-on-exec, as a dup2 leaves one.
        fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        super::void_fd(file.as_raw_fd());
        let target = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        assert_eq!(target, std::path::Path::new("/dev/null"));
        let flags = FdFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFD).unwrap());
        assert!(flags.contains(FdFlag::FD_CLOEXEC));
    }
}
