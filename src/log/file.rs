//! The log file behind stdout and stderr (`--logto`, `--daemonize`): reopening
//! it (SIGUSR1, `--touch-logreopen`, logrotate) and rotating it by size
//! (`--log-maxsize`).
//!
//! Every process writes its own lines straight to the file, each line with
//! one `write()` on an `O_APPEND` descriptor, so lines from many workers and
//! threads never interleave. A rotation renames the file and reopens the
//! path; a process that has not reopened yet keeps appending to the renamed
//! file, so no line is lost, only a few land in the older file.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::stat::{SFlag, fstat};
use nix::unistd::{dup2_stderr, dup2_stdout};

static PATH: OnceLock<CString> = OnceLock::new();
/// `--req-logger file:PATH`: request lines go to their own file, on this
/// descriptor (inherited by the workers), reopened like the main log.
static REQUEST_PATH: OnceLock<CString> = OnceLock::new();
static REQUEST_FD: AtomicI32 = AtomicI32::new(-1);

/// Opens the request log file (appending); its lines are written there
/// from now on, in this process and the workers it forks.
pub fn open_request_log(path: &Path) -> Result<(), String> {
    let c = crate::sys::log_path(path)?;
    let fd = crate::sys::open_append(&c)
        .map_err(|e| format!("cannot open the request log {}: {e}", path.display()))?;
    let _ = REQUEST_PATH.set(c);
    REQUEST_FD.store(fd.into_raw_fd(), Ordering::Relaxed);
    Ok(())
}

/// The request log's descriptor, when it has a file of its own.
fn request_log_fd() -> Option<BorrowedFd<'static>> {
    match REQUEST_FD.load(Ordering::Relaxed) {
        -1 => None,
        // SAFETY: the descriptor was opened by open_request_log and is never
        // closed: reopening puts the new file behind the same number.
        fd => Some(unsafe { BorrowedFd::borrow_raw(fd) }),
    }
}

/// A request log line: to `--req-logger`'s file when there is one, else
/// to the log with everything else.
pub fn write_request_line(buf: &[u8]) {
    if super::route::request_line(buf) {
        return;
    }
    match request_log_fd() {
        // A full disk loses the line, as for the main log; serving goes on.
        Some(fd) => {
            let _ = crate::sys::write_all_to(fd, buf);
        }
        None => super::say::write_stderr(buf),
    }
}

/// Reopens the request log path behind its descriptor (async-signal-safe,
/// as `reopen` is). Whether there is one.
fn reopen_request_log() -> bool {
    let (Some(path), fd) = (REQUEST_PATH.get(), REQUEST_FD.load(Ordering::Relaxed)) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    if let Ok(new) = crate::sys::open_append(path) {
        // SAFETY: dup3 is async-signal-safe; it puts the new file behind
        // the request log's number (closing the old file there), keeping
        // it closed on exec as dup2 would not, and does not touch `new`,
        // which is closed when dropped.
        unsafe { libc::dup3(new.as_raw_fd(), fd, libc::O_CLOEXEC) };
    }
    true
}

/// Remembers where the log goes, for reopening (also from a signal handler).
/// Made absolute now: `--chdir` moves the process after the log is opened,
/// and a reopen (logrotate's SIGUSR1) must find the same file.
pub fn set_path(path: &Path) {
    if let Ok(c) = crate::sys::log_path(path) {
        let _ = PATH.set(c);
    }
}

pub fn path() -> Option<PathBuf> {
    PATH.get()
        .map(|c| PathBuf::from(std::ffi::OsStr::from_bytes(c.as_bytes())))
}

/// Opens the log path again and puts it behind fds 1 and 2. Only
/// async-signal-safe calls: it also runs inside a signal handler. (nix's
/// `open` passes a `CStr` path straight to open(2), with no allocation;
/// `dup2` and the `close` of dropping an `OwnedFd` are async-signal-safe.)
pub fn reopen() -> bool {
    // True when either file was reopened: the master then tells the
    // workers, which write the request lines.
    let requests = reopen_request_log() | super::route::reopen();
    let Some(path) = PATH.get() else {
        return requests;
    };
    let Ok(fd) = crate::sys::open_append(path) else {
        // The request log's reopening is still the workers' to follow.
        return requests;
    };
    // With loggers, their `stdio` follows the file; and where fds 1 and 2
    // are the capture's pipe (a worker with loggers), they stay so.
    super::route::replace_original(fd.as_raw_fd());
    if !super::route::capturing() {
        let _ = dup2_stdout(&fd);
        let _ = dup2_stderr(&fd);
    }
    true
}

/// `reopen`, outside a signal handler (the master's loop): a log that
/// cannot be opened again is said, in the file the log stays on, as uWSGI
/// logs its failed open(). Silent, every line went on to the rotated file,
/// which the next rotation compressed and deleted.
pub fn reopen_saying_why_not() -> bool {
    let reopened = reopen();
    let own = [PATH.get(), REQUEST_PATH.get()].into_iter().flatten();
    for path in own.map(|c| c.as_c_str()).chain(super::route::file_paths()) {
        if let Err(e) = crate::sys::open_append(path) {
            let hint = match e {
                nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => {
                    " (--logfile-chown gives the file to --uid's user)"
                }
                _ => "",
            };
            crate::say!(
                "oxgate: cannot reopen the log {}: {}; it goes on to the file it had{hint}",
                path.to_string_lossy(),
                std::io::Error::from(e)
            );
        }
    }
    reopened
}

extern "C" fn on_reopen_signal(_sig: libc::c_int) {
    // A handler must leave errno as it found it.
    let saved = Errno::last_raw();
    reopen();
    Errno::set_raw(saved);
}

/// Makes `sig` reopen the log file in this process (workers, `--no-master`).
pub fn install_reopen_handler(sig: libc::c_int) {
    let Ok(sig) = Signal::try_from(sig) else {
        return;
    };
    let action = SigAction::new(
        SigHandler::Handler(on_reopen_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: sigaction is unsafe because the handler runs in the middle of
    // whatever the thread was doing, so it must be async-signal-safe. It is:
    // on_reopen_signal reads the path with `OnceLock::get` (one atomic load
    // that never waits, even if the handler interrupted `set_path`), calls
    // open(2), dup2(2) and close(2) only, allocates nothing, takes no lock,
    // and saves and restores errno. Replacing any previous handler for
    // `sig` is intended.
    let _ = unsafe { sigaction(sig, &action) };
}

/// The size of the file behind stderr, if it is a regular file.
fn stderr_size() -> Option<u64> {
    let st = match super::route::original_fd() {
        // SAFETY: the loggers' descriptor of the log is never closed.
        Some(fd) => fstat(unsafe { BorrowedFd::borrow_raw(fd) }).ok()?,
        None => fstat(std::io::stderr().as_fd()).ok()?,
    };
    regular_size(&st)
}

/// The size of a regular file (a log on a pipe or a tty is not rotated).
fn regular_size(st: &nix::sys::stat::FileStat) -> Option<u64> {
    (SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
        .then_some(st.st_size as u64)
}

/// `--log-maxsize`: when the log has grown past `max` bytes, renames it (to
/// `backup`, or `<log>.<unix time>` as uWSGI does, with `.N` added when that
/// name is taken) and reopens the path. The new name if it rotated: the
/// caller then tells the other processes to reopen.
pub fn rotate_if_big(max: u64, backup: Option<&Path>) -> Option<PathBuf> {
    let path = path()?;
    if stderr_size().is_none_or(|size| size <= max) {
        return None;
    }
    rotate(&path, backup)
}

/// A request logger's `maxsize=` (`--req-logger
/// file:logfile=PATH,maxsize=N`), as uWSGI rotates it: `rotate_if_big` for
/// the request log's own file.
pub fn rotate_request_log_if_big(max: u64, backup: Option<&Path>) -> Option<PathBuf> {
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(REQUEST_PATH.get()?.as_bytes()));
    if regular_size(&fstat(request_log_fd()?).ok()?)? <= max {
        return None;
    }
    rotate(&path, backup)
}

/// Renames the file at `path` and reopens the logs: the new name, if it
/// was renamed.
fn rotate(path: &Path, backup: Option<&Path>) -> Option<PathBuf> {
    let target = match backup {
        Some(b) => b.to_path_buf(),
        None => {
            let base = format!("{}.{}", path.display(), crate::sys::clock::unix_now());
            let mut name = PathBuf::from(&base);
            let mut n = 1;
            while name.exists() {
                name = PathBuf::from(format!("{base}.{n}"));
                n += 1;
            }
            name
        }
    };
    if let Err(e) = std::fs::rename(path, &target) {
        crate::say!(
            "oxgate: cannot rotate the log {} to {}: {e}",
            path.display(),
            target.display()
        );
        return None;
    }
    reopen().then_some(target)
}

/// `--log-maxsize` and a request logger's `maxsize=` without a master: a
/// thread looks at the sizes.
pub fn spawn_rotator(
    main: Option<(u64, Option<PathBuf>)>,
    requests: Option<(u64, Option<PathBuf>)>,
) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if let Some((max, backup)) = &main {
                rotate_if_big(*max, backup.as_deref());
            }
            if let Some((max, backup)) = &requests {
                rotate_request_log_if_big(*max, backup.as_deref());
            }
        }
    });
}
