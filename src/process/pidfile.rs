//! `--pidfile`, `--pidfile2`.

use std::path::Path;

/// Writes this process's pid. A symlink at `path` is refused, not
/// followed: in a directory others can write to (/tmp), it would let them
/// aim a root master's write at any file.
pub fn write_pidfile(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let why = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => {
            format!("cannot write pidfile {}: it is a symlink", path.display())
        }
        _ => format!("cannot write pidfile {}: {e}", path.display()),
    };
    // The one written before the privileges are dropped is rewritten
    // through the descriptor opened then (after --daemonize2's fork): the
    // unprivileged process may not open it again.
    if let Ok(mut kept) = KEPT.lock()
        && let Some((kept_path, file)) = kept.as_mut()
        && kept_path == path
    {
        file.set_len(0).map_err(why)?;
        return std::os::unix::fs::FileExt::write_all_at(
            &*file,
            format!("{}\n", std::process::id()).as_bytes(),
            0,
        )
        .map_err(why);
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(why)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(why)?;
    if let Ok(mut kept) = KEPT.lock()
        && kept.is_none()
    {
        *kept = Some((path.to_path_buf(), file));
    }
    Ok(())
}

/// Whether the pidfile names this process already: a master re-executed
/// for a reload keeps its pid, and after --uid may not open the file again
/// (it warned so at each reload).
pub fn names_this_process(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.trim() == std::process::id().to_string())
}

/// `--pidfile` and `--pidfile2` once more, after `--daemonize2`'s fork:
/// written at start-up, they named the process that has just exited.
pub fn write_pidfiles(p: &crate::config::ProcessConfig) -> Result<(), String> {
    for pidfile in [&p.pidfile, &p.pidfile2].into_iter().flatten() {
        write_pidfile(pidfile)?;
    }
    Ok(())
}

/// The first pidfile written, still open.
static KEPT: std::sync::Mutex<Option<(std::path::PathBuf, std::fs::File)>> =
    std::sync::Mutex::new(None);

/// `--pidfile-exclusive`: an error when `path` names a running process
/// other than this one (Gunicorn's "Already running on PID"). A missing,
/// empty or unreadable pidfile, or one naming no process, is no obstacle.
pub fn refuse_live_pidfile(path: &Path) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    if pid <= 0 || pid as u32 == std::process::id() {
        return Ok(());
    }
    // Signal 0: whether the process exists (EPERM: it does, another
    // user's).
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        _ => Err(format!(
            "already running on pid {pid} (or pidfile {} is stale: remove it if no server runs)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_pid_refuses_and_a_dead_or_own_one_does_not() {
        let dir = std::env::temp_dir().join(format!("oxgate-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.pid");
        assert_eq!(refuse_live_pidfile(&path), Ok(()), "no file");
        std::fs::write(&path, "1\n").unwrap();
        let refused = refuse_live_pidfile(&path).unwrap_err();
        assert!(
            refused.starts_with("already running on pid 1 "),
            "{refused}"
        );
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(refuse_live_pidfile(&path), Ok(()), "our own");
        // A child that has exited and been reaped: its pid names nothing.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(&path, format!("{gone}\n")).unwrap();
        assert_eq!(refuse_live_pidfile(&path), Ok(()), "a dead one");
        std::fs::write(&path, "not a pid").unwrap();
        assert_eq!(refuse_live_pidfile(&path), Ok(()), "garbage");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
