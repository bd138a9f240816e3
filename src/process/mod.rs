//! Process plumbing: daemonizing, log files, pidfiles, privileges, and
//! signalling a running master through its pidfile.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::lifecycle::Control;

static IS_WORKER: AtomicBool = AtomicBool::new(false);

/// Set in a worker right after the fork.
pub fn mark_worker() {
    IS_WORKER.store(true, Ordering::Relaxed);
}

pub fn is_worker() -> bool {
    IS_WORKER.load(Ordering::Relaxed)
}

fn open_log(path: &Path) -> Result<libc::c_int, String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o640,
        )
    };
    if fd < 0 {
        return Err(format!(
            "cannot open log file {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// Sends stdout and stderr to `path` (appending), like uWSGI's --logto.
pub fn redirect_output(path: &Path) -> Result<(), String> {
    let fd = open_log(path)?;
    crate::log::file::set_path(path);
    unsafe {
        libc::dup2(fd, 1);
        libc::dup2(fd, 2);
        libc::close(fd);
    }
    Ok(())
}

/// Detaches from the terminal: fork (the parent exits 0), new session,
/// stdin from /dev/null, stdout and stderr to `log`.
pub fn daemonize(log: &Path) -> Result<(), String> {
    // Open first, so a bad path is reported on the terminal.
    let fd = open_log(log)?;
    crate::log::file::set_path(log);
    match unsafe { libc::fork() } {
        -1 => return Err(format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {}
        _ => unsafe { libc::_exit(0) },
    }
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        libc::dup2(fd, 1);
        libc::dup2(fd, 2);
        libc::close(fd);
    }
    Ok(())
}

pub fn write_pidfile(path: &Path) -> Result<(), String> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write pidfile {}: {e}", path.display()))
}

/// `--uid`/`--gid`: names or numbers; the group first, while still root.
pub fn drop_privileges(uid: Option<&str>, gid: Option<&str>) -> Result<(), String> {
    let user = uid.map(lookup_user).transpose()?;
    let group = match gid {
        Some(g) => Some(lookup_group(g)?),
        None => None,
    };
    if let Some(gid) = group {
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 && unsafe { libc::geteuid() } == 0 {
            return Err(format!(
                "cannot drop supplementary groups: {}",
                std::io::Error::last_os_error()
            ));
        }
        if unsafe { libc::setgid(gid) } != 0 {
            return Err(format!(
                "--gid {}: {}",
                gid,
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some((uid, name)) = user {
        if group.is_none() {
            // Also take the user's own group, as su would.
            let c = CString::new(name.clone()).unwrap_or_default();
            let pw = unsafe { libc::getpwnam(c.as_ptr()) };
            if !pw.is_null() {
                unsafe {
                    libc::initgroups(c.as_ptr(), (*pw).pw_gid);
                    libc::setgid((*pw).pw_gid);
                }
            }
        }
        if unsafe { libc::setuid(uid) } != 0 {
            return Err(format!("--uid {name}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn lookup_user(u: &str) -> Result<(libc::uid_t, String), String> {
    if let Ok(n) = u.parse::<libc::uid_t>() {
        return Ok((n, u.to_string()));
    }
    let c = CString::new(u).map_err(|_| "NUL in --uid".to_string())?;
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!("--uid {u}: no such user"));
    }
    Ok((unsafe { (*pw).pw_uid }, u.to_string()))
}

fn lookup_group(g: &str) -> Result<libc::gid_t, String> {
    if let Ok(n) = g.parse::<libc::gid_t>() {
        return Ok(n);
    }
    let c = CString::new(g).map_err(|_| "NUL in --gid".to_string())?;
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(format!("--gid {g}: no such group"));
    }
    Ok(unsafe { (*gr).gr_gid })
}

/// `--stop`/`--reload`/`--chain-reload`/`--brutal-reload PIDFILE`.
pub fn send_control(what: Control, pidfile: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(pidfile)
        .map_err(|e| format!("cannot read pidfile {}: {e}", pidfile.display()))?;
    let pid: libc::pid_t = text.trim().parse().map_err(|_| {
        format!(
            "pidfile {} does not hold a pid (it has {:?})",
            pidfile.display(),
            text.trim()
        )
    })?;
    if pid <= 1 {
        return Err(format!(
            "pidfile {} holds pid {pid}, which is not an oxgate master",
            pidfile.display()
        ));
    }
    if unsafe { libc::kill(pid, what.signal()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ESRCH) {
            format!(
                "no process with pid {pid} (from {}): is oxgate running? (stale pidfile?)",
                pidfile.display()
            )
        } else {
            format!("cannot signal pid {pid}: {e}")
        });
    }
    crate::say!("oxgate: asked the master (pid {pid}) to {}", what.verb());
    Ok(())
}

/// Tells systemd about the service's state when it runs us with
/// Type=notify (NOTIFY_SOCKET set); does nothing otherwise.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
}

/// `--chown-socket USER[:GROUP]` on a unix socket path.
pub fn chown_path(path: &Path, spec: &str) -> Result<(), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, _) = lookup_user(user)?;
    let gid = match group {
        Some(g) if !g.is_empty() => lookup_group(g)?,
        _ => u32::MAX, // (gid_t)-1: leave the group
    };
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "NUL in path".to_string())?;
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        return Err(format!(
            "--chown-socket {spec} on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sockets systemd passed us (socket activation: LISTEN_PID, LISTEN_FDS),
/// as fds 3, 4, …
pub fn systemd_sockets() -> Vec<crate::listen::Socket> {
    use std::os::fd::FromRawFd;
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !for_us || n <= 0 {
        return Vec::new();
    }
    // SAFETY: still single-threaded; the app must not see these.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let mut out = Vec::new();
    for fd in 3..3 + n {
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            );
        }
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) } != 0 {
            crate::say!("oxgate: LISTEN_FDS: fd {fd} is not a socket, ignored");
            continue;
        }
        if i32::from(addr.ss_family) == libc::AF_UNIX {
            let l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            let a = match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => crate::listen::Address::Unix(p),
                None => crate::listen::Address::Abstract(format!("systemd-fd-{fd}")),
            };
            out.push(crate::listen::Socket {
                addr: a,
                listener: crate::listen::Listener::Unix(l, None),
                protocol: crate::listen::Protocol::Http,
            });
        } else {
            let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            let a = l
                .local_addr()
                .map_or_else(|_| format!("fd{fd}"), |a| a.to_string());
            out.push(crate::listen::Socket {
                addr: crate::listen::Address::Tcp(a),
                listener: crate::listen::Listener::Tcp(l),
                protocol: crate::listen::Protocol::Http,
            });
        }
    }
    out
}

/// (virtual size, resident size) of a process in bytes, from
/// /proc/PID/statm (`None`: this process); zeros if it is gone.
pub fn memory(pid: Option<libc::pid_t>) -> (u64, u64) {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/statm"),
        None => "/proc/self/statm".to_string(),
    };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((f.next()?? * page, f.next()?? * page))
        })
        .unwrap_or((0, 0))
}
