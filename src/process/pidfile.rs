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

/// The first pidfile written, still open.
static KEPT: std::sync::Mutex<Option<(std::path::PathBuf, std::fs::File)>> =
    std::sync::Mutex::new(None);
