//! Side processes run beside the workers (`--attach-daemon`,
//! `--smart-attach-daemon`): started, restarted with back-off, stopped.

use std::os::unix::process::CommandExt;
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
            let mut command = std::process::Command::new("/bin/sh");
            // A process group of its own, stopped whole (a shell's children
            // too), as uWSGI stops its daemons; and killed with the master
            // if the master is (for a command the shell execs in its place).
            command.arg("-c").arg(&d.command).process_group(0);
            // SAFETY: the closure runs in the child between fork and exec,
            // and only calls prctl(2), which is async-signal-safe and
            // allocates nothing.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match command.spawn() {
                Ok(child) => {
                    let pid = child.id() as libc::pid_t;
                    crate::note!("oxgate: started daemon {:?} (pid {pid})", d.command);
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
