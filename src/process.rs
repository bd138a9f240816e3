//! Process plumbing: daemonizing, log files, pidfiles, privileges, and
//! signalling a running master through its pidfile.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::Control;

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

/// The signals a master answers to (documented in the README).
pub fn control_signal(what: Control) -> libc::c_int {
    match what {
        Control::Stop => libc::SIGTERM,
        Control::Reload => libc::SIGHUP,
        Control::ChainReload => libc::SIGRTMIN() + 1,
        Control::BrutalReload => libc::SIGRTMIN() + 2,
    }
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
    if unsafe { libc::kill(pid, control_signal(what)) } != 0 {
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
    let verb = match what {
        Control::Stop => "stop",
        Control::Reload => "reload",
        Control::ChainReload => "chain reload",
        Control::BrutalReload => "brutal reload",
    };
    eprintln!("oxgate: asked the master (pid {pid}) to {verb}");
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
