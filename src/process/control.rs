//! `--stop`/`--reload`/`--chain-reload`/`--brutal-reload PIDFILE`: signals a
//! running master.

use std::path::Path;

use crate::lifecycle::Control;

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
    // SAFETY: kill(2) takes two integers and reads or writes no memory of
    // this process; `pid > 1`, so it never signals a process group. (Not
    // nix's kill: its `Signal` cannot name the real-time signals that the
    // chain and brutal reloads use, SIGRTMIN+1 and +2.)
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
