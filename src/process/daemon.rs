//! `--logto` and `--daemonize`: stdout and stderr into a log file, and
//! detaching from the terminal.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout};

pub use crate::log::route::udp_log_address;

use crate::handlers::python;

/// Where the log goes, said for reopening: a file (a UDP address is not
/// one, and is never reopened).
pub fn remember_log_path(path: &Path) {
    if udp_log_address(path).is_none() {
        crate::log::file::set_path(path);
    }
}

/// Opens the log for appending: `O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC`,
/// mode 0640 (less the umask). A UDP address (`--daemonize HOST:PORT`)
/// is a logger's (`log::route`, which sends each line there): behind fds
/// 1 and 2 goes /dev/null.
fn open_log(path: &Path) -> Result<File, String> {
    if udp_log_address(path).is_some() {
        return std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("cannot open /dev/null: {e}"));
    }
    if path.as_os_str().as_bytes().contains(&0) {
        return Err("NUL in path".to_string());
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
}

/// The write end of the pipe the parent of [`daemonize`] waits on.
static READY: std::sync::Mutex<Option<std::os::fd::OwnedFd>> = std::sync::Mutex::new(None);

/// Tells the parent of [`daemonize`] that the daemon is ready (its
/// sockets bound, its pidfiles written), so it exits 0; nothing when this
/// process did not daemonize, or has said so already.
pub fn detached() {
    let ready = READY.lock().ok().and_then(|mut r| r.take());
    if let Some(fd) = ready {
        let _ = nix::unistd::write(&fd, b"r");
    }
}

/// Puts `log` behind fds 1 and 2; `log` itself is closed when dropped.
fn onto_stdout_stderr(log: File) {
    let _ = dup2_stdout(log.as_fd());
    let _ = dup2_stderr(log.as_fd());
    // The loggers' `stdio`, if they are installed already (--daemonize2).
    crate::log::route::replace_original(std::os::fd::AsRawFd::as_raw_fd(&log));
}

/// Whether stderr is the file at `path` already: a master re-executed for
/// a reload has the log the old one put there, which after --uid it may
/// not open again.
pub fn stderr_is(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(file), Ok(err)) = (
        std::fs::metadata(path),
        nix::sys::stat::fstat(std::io::stderr().as_fd()),
    ) else {
        return false;
    };
    file.dev() == err.st_dev && file.ino() == err.st_ino
}

/// Sends stdout and stderr to `path` (appending), like uWSGI's --logto;
/// stderr alone when a logger writes to stdout (Gunicorn's `errorlog`
/// file with `accesslog = "-"`: each its own stream, as there).
pub fn redirect_output(path: &Path, keep_stdout: bool) -> Result<(), String> {
    let log = open_log(path)?;
    remember_log_path(path);
    if keep_stdout {
        let _ = dup2_stderr(log.as_fd());
        crate::log::route::replace_original(std::os::fd::AsRawFd::as_raw_fd(&log));
    } else {
        onto_stdout_stderr(log);
    }
    Ok(())
}

/// Detaches from the terminal: fork, new session, stdin from /dev/null,
/// stdout and stderr to `log`. The parent exits once the daemon calls
/// [`detached`] (0), or ends before it (1): so when the command returns,
/// the pidfile names the daemon (systemd's `Type=forking` reads it then),
/// and a daemon that could not start is not reported as started.
pub fn daemonize(log: &Path) -> Result<(), String> {
    // Open first, so a bad path is reported on the terminal.
    let file = open_log(log)?;
    remember_log_path(log);
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {}", std::io::Error::from(e)))?;
    // When Python runs in this process (`--daemonize2` after the app
    // loaded, or an interpreter that hosts oxgate), the fork takes the
    // interpreter's hooks, as `os.fork()` would.
    let forked = if python::python_running() {
        match python::fork() {
            Err(e) => Err(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))),
            Ok(0) => Ok(ForkResult::Child),
            Ok(pid) => Ok(ForkResult::Parent {
                child: nix::unistd::Pid::from_raw(pid),
            }),
        }
    } else {
        // SAFETY: fork's contract is that in a multithreaded process the child
        // may only make async-signal-safe calls until it execs, because the
        // other threads' locks are copied in whatever state they were in. oxgate
        // has started no other thread when it daemonizes: `--daemonize` runs in
        // startup::run before anything is spawned, and `--daemonize2` runs after
        // the app loaded but before the runtime, the Python thread pool (started
        // on first use) or any worker exists. So the child, which carries on as
        // the whole server, finds no lock owned by a thread that did not come
        // along. (Threads the app itself started at import are the exception,
        // as for preforked workers: they do not survive the fork, and the master
        // warns about them.)
        unsafe { nix::unistd::fork() }
    };
    match forked {
        Err(e) => return Err(format!("cannot fork: {}", std::io::Error::from(e))),
        Ok(ForkResult::Child) => {
            drop(ready_read);
            if let Ok(mut ready) = READY.lock() {
                *ready = Some(ready_write);
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_write);
            let mut byte = [0u8; 1];
            let status = loop {
                match nix::unistd::read(&ready_read, &mut byte) {
                    Ok(1) => break 0,
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => {
                        eprintln!(
                            "oxgate: the daemon (pid {child}) ended before it was ready: see {}",
                            log.display()
                        );
                        break 1;
                    }
                }
            };
            // SAFETY: _exit(2) takes an integer and never returns; it has no
            // precondition. It is used rather than exit() so the parent runs
            // no atexit handler and flushes no C stdio buffer that the child,
            // which owns the same state, will flush itself.
            unsafe { libc::_exit(status) }
        }
    }
    let _ = nix::unistd::setsid();
    if let Ok(null) = File::open("/dev/null") {
        let _ = dup2_stdin(null.as_fd());
    }
    onto_stdout_stderr(file);
    Ok(())
}
