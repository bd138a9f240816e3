//! The FastCGI pools' manager process (`--fastcgi-app`): the master forks
//! it beside the workers, starts it again with back-off if it dies, and
//! stops it once the workers are gone. It starts and replaces the pools'
//! processes (`handlers::fastcgi::manager`), which every worker shares.

use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::sys::signal::Signal;

use super::state::{Master, send};
use super::supervisor::{Exit, QUICK_DEATH, backoff};
use crate::handlers::fastcgi;

impl Master<'_> {
    /// Starts the manager if there are pools and it is not running.
    pub(super) fn run_pool_manager(&mut self) {
        let m = &self.pool_manager;
        if self.cfg.fastcgi.apps.is_empty()
            || m.pid.is_some()
            || Instant::now() < m.next_start
            || self.sup.stopping()
        {
            return;
        }
        let master_pid = nix::unistd::getpid().as_raw();
        // Until the manager's own handlers are in place, a stop sent to it
        // waits, blocked, instead of running the master's handler there.
        let blocked = super::signals::Blocked::new();
        match super::effects::fork() {
            Ok(0) => self.pool_manager_child(master_pid),
            Ok(pid) => {
                drop(blocked);
                crate::note!("oxgate: FastCGI pool manager started (pid {pid})");
                self.pool_manager.pid = Some(pid);
                self.pool_manager.started = Instant::now();
            }
            Err(e) => {
                drop(blocked);
                crate::say!("oxgate: cannot fork the FastCGI pool manager: {e}");
                self.pool_manager.next_start = Instant::now() + backoff(1);
            }
        }
    }

    fn pool_manager_child(&self, master_pid: libc::pid_t) -> ! {
        self.signals.release_in_child();
        // The master's sockets are the master's and the workers': with the
        // manager holding none, a stopped master's port refuses at once.
        for fd in self
            .stats
            .poll_fds()
            .iter()
            .map(|p| p.fd)
            .chain(self.fifo.as_ref().map(|f| f.raw_fd()))
            .chain(self.listeners.iter().map(|s| match &s.listener {
                crate::listen::Listener::Tcp(t) => t.as_raw_fd(),
                crate::listen::Listener::Unix(u, _) => u.as_raw_fd(),
            }))
        {
            crate::sys::void_fd(fd);
        }
        // The signals stay blocked until the manager handles SIGTERM.
        // Told apart from the workers in ps and /proc (its comm).
        let _ = nix::sys::prctl::set_name(c"oxgate-pools");
        if let Some(title) = self.cfg.process.titles.pools() {
            crate::sys::proctitle::set(&title);
        }
        // Dies with the master (and its processes with it, by their own
        // PR_SET_PDEATHSIG); if the master is already gone, does not start.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        let code = if nix::unistd::getppid().as_raw() != master_pid {
            1
        } else {
            // Held until the process ends, which it does with _exit.
            let sb: &'static std::sync::Arc<super::scoreboard::Scoreboard> =
                Box::leak(Box::new(self.sb.clone()));
            let _ = fastcgi::COUNTERS.set(&sb.header().pool_managers[..]);
            match fastcgi::serve_pools(&self.cfg.fastcgi) {
                Ok(()) => 0,
                Err(e) => {
                    crate::say!("oxgate: FastCGI pool manager: {e}");
                    1
                }
            }
        };
        // SAFETY: _exit ends the process without running the master's
        // destructors (its sockets, its stats server) in this copy of it.
        unsafe { libc::_exit(code) }
    }

    /// The manager ended: started again with back-off, unless the master is
    /// stopping.
    pub(super) fn pool_manager_ended(&mut self, exit: Exit) {
        let m = &mut self.pool_manager;
        let Some(pid) = m.pid.take() else {
            return;
        };
        if self.sup.stopping() {
            return;
        }
        m.failures = if m.started.elapsed() < QUICK_DEATH {
            m.failures + 1
        } else {
            0
        };
        let wait = if m.failures == 0 {
            std::time::Duration::ZERO
        } else {
            backoff(m.failures)
        };
        m.next_start = Instant::now() + wait;
        crate::say!(
            "oxgate: FastCGI pool manager (pid {pid}) {}; restarting in {:.1}s",
            exit.describe(),
            wait.as_secs_f64()
        );
    }

    /// Asks the manager to stop its processes and end (the workers are
    /// gone); kills it if it has not within `--reload-mercy`.
    pub(super) fn stop_pool_manager(&mut self) {
        let Some(pid) = self.pool_manager.pid else {
            return;
        };
        match self.pool_manager.stopped {
            None => {
                self.pool_manager.stopped = Some(Instant::now());
                send(pid, Signal::SIGTERM);
            }
            Some(at) if at.elapsed() > self.cfg.process.reload_mercy => {
                send(pid, Signal::SIGKILL);
            }
            Some(_) => {}
        }
    }
}
