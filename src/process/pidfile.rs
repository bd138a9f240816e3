//! `--pidfile`, `--pidfile2`.

use std::path::Path;

/// Writes this process's pid. A symlink at `path` is refused, not
/// followed: in a directory others can write to (/tmp), it would let them
/// aim a root master's write at any file.
pub fn write_pidfile(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                format!("cannot write pidfile {}: it is a symlink", path.display())
            }
            _ => format!("cannot write pidfile {}: {e}", path.display()),
        })
}
