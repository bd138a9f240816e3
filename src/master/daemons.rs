//! Side processes run beside the workers (`--attach-daemon`,
//! `--smart-attach-daemon`): started, restarted with back-off, stopped.

use std::time::Instant;

use super::state::{Master, SMART_DAEMON_GRACE};
use super::supervisor::MAX_BACKOFF;

impl Master<'_> {
    /// Starts the attached daemons that are not running.
    pub(super) fn run_daemons(&mut self) {
        let now = Instant::now();
        for d in &mut self.daemons {
            if d.pid.is_some() || now < d.next_start || d.pid_from_file().is_some() {
                continue;
            }
            match std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&d.command)
                .spawn()
            {
                Ok(child) => {
                    let pid = child.id() as libc::pid_t;
                    crate::say!("oxgate: started daemon {:?} (pid {pid})", d.command);
                    d.pid = Some(pid);
                    d.started = now;
                    if d.pidfile.is_some() {
                        // Its launcher exits as it detaches, maybe before the
                        // pidfile is written: look again only after a while.
                        d.next_start = now + SMART_DAEMON_GRACE;
                    }
                }
                Err(e) => {
                    crate::say!("oxgate: cannot start daemon {:?}: {e}", d.command);
                    d.next_start = now + MAX_BACKOFF;
                }
            }
        }
    }
}
