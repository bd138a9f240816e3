//! `--pidfile`, `--pidfile2`.

use std::path::Path;

pub fn write_pidfile(path: &Path) -> Result<(), String> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write pidfile {}: {e}", path.display()))
}
