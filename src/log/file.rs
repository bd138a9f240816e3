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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static PATH: OnceLock<CString> = OnceLock::new();

/// Remembers where the log goes, for reopening (also from a signal handler).
pub fn set_path(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        let _ = PATH.set(c);
    }
}

pub fn path() -> Option<PathBuf> {
    PATH.get()
        .map(|c| PathBuf::from(std::ffi::OsStr::from_bytes(c.as_bytes())))
}

/// Opens the log path again and puts it behind fds 1 and 2. Only
/// async-signal-safe calls: it also runs inside a signal handler.
pub fn reopen() -> bool {
    let Some(path) = PATH.get() else {
        return false;
    };
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o640,
        );
        if fd < 0 {
            return false;
        }
        libc::dup2(fd, 1);
        libc::dup2(fd, 2);
        libc::close(fd);
    }
    true
}

extern "C" fn on_reopen_signal(_sig: libc::c_int) {
    let saved = unsafe { *libc::__errno_location() };
    reopen();
    unsafe { *libc::__errno_location() = saved };
}

/// Makes `sig` reopen the log file in this process (workers, `--no-master`).
pub fn install_reopen_handler(sig: libc::c_int) {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_reopen_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// The size of the file behind stderr, if it is a regular file.
fn stderr_size() -> Option<u64> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    Some(st.st_size as u64)
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
    if let Err(e) = std::fs::rename(&path, &target) {
        crate::say!(
            "oxgate: cannot rotate the log {} to {}: {e}",
            path.display(),
            target.display()
        );
        return None;
    }
    reopen().then_some(target)
}

/// `--log-maxsize` without a master: a thread looks at the size.
pub fn spawn_rotator(max: u64, backup: Option<PathBuf>) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            rotate_if_big(max, backup.as_deref());
        }
    });
}
