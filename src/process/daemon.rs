//! `--logto` and `--daemonize`: stdout and stderr into a log file, and
//! detaching from the terminal.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout};

use crate::handlers::python;

/// Opens the log for appending: `O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC`,
/// mode 0640 (less the umask).
fn open_log(path: &Path) -> Result<File, String> {
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

/// Puts `log` behind fds 1 and 2; `log` itself is closed when dropped.
fn onto_stdout_stderr(log: File) {
    let _ = dup2_stdout(log.as_fd());
    let _ = dup2_stderr(log.as_fd());
    // The loggers' `stdio`, if they are installed already (--daemonize2).
    crate::log::route::replace_original(std::os::fd::AsRawFd::as_raw_fd(&log));
}

/// Sends stdout and stderr to `path` (appending), like uWSGI's --logto;
/// stderr alone when a logger writes to stdout (Gunicorn's `errorlog`
/// file with `accesslog = "-"`: each its own stream, as there).
pub fn redirect_output(path: &Path, keep_stdout: bool) -> Result<(), String> {
    let log = open_log(path)?;
    crate::log::file::set_path(path);
    if keep_stdout {
        let _ = dup2_stderr(log.as_fd());
        crate::log::route::replace_original(std::os::fd::AsRawFd::as_raw_fd(&log));
    } else {
        onto_stdout_stderr(log);
    }
    Ok(())
}

/// Detaches from the terminal: fork (the parent exits 0), new session,
/// stdin from /dev/null, stdout and stderr to `log`.
pub fn daemonize(log: &Path) -> Result<(), String> {
    // Open first, so a bad path is reported on the terminal.
    let file = open_log(log)?;
    crate::log::file::set_path(log);
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
        Ok(ForkResult::Child) => {}
        Ok(ForkResult::Parent { .. }) => {
            // SAFETY: _exit(2) takes an integer and never returns; it has no
            // precondition. It is used rather than exit() so the parent runs
            // no atexit handler and flushes no C stdio buffer that the child,
            // which owns the same state, will flush itself.
            unsafe { libc::_exit(0) }
        }
    }
    let _ = nix::unistd::setsid();
    if let Ok(null) = File::open("/dev/null") {
        let _ = dup2_stdin(null.as_fd());
    }
    onto_stdout_stderr(file);
    Ok(())
}
