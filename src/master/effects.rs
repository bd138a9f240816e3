//! The supervisor's hands: the system calls behind `supervisor::Effects`
//! (fork, kill, the scoreboard, /proc, systemd), and reaping children.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::child;
use super::scoreboard::{Cause, Core, Retire, Scoreboard};
use super::signals::{self, SignalPipe};
use super::state::{Master, send};
use super::supervisor::{Effects, Exit, Pid, QUICK_DEATH, Seen, Worker, backoff};
use crate::config::Config;
use crate::handlers::python;
use crate::listen::Socket;
use crate::process;
use crate::worker::apps::Apps;

/// What `Effects` needs of the master: borrowed field by field, so the
/// supervisor (another field) can be borrowed mutably beside it.
pub(super) struct System<'m> {
    pub(super) cfg: &'m Config,
    pub(super) listeners: &'m [Socket],
    pub(super) apps: &'m Option<Apps>,
    pub(super) sb: &'m Arc<Scoreboard>,
    pub(super) signals: &'m SignalPipe,
    /// The stats server, whose listeners and clients a worker lets go of:
    /// else the next master image could not bind the stats address while
    /// the old workers finish.
    pub(super) stats: &'m super::stats::Stats,
    /// The master FIFO, which a worker lets go of too.
    pub(super) fifo: Option<std::os::fd::RawFd>,
}

impl System<'_> {
    /// The cores of a worker that are running a request.
    fn busy_cores(&self, w: &Worker) -> impl Iterator<Item = &Core> {
        self.sb.slot(w.slot).busy_cores()
    }
}

/// Forks the master: 0 in the child, the child's pid in the master. A
/// master that runs Python (it preloaded the app, or the interpreter hosts
/// oxgate) forks with the interpreter's hooks.
pub(super) fn fork() -> std::io::Result<libc::pid_t> {
    if python::python_running() {
        python::fork()
    } else {
        // SAFETY: the master is single-threaded (no runtime exists in it),
        // so the child may run any code after the fork.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            pid => Ok(pid),
        }
    }
}

/// Gunicorn's `worker.age`: how many workers this master has started.
static WORKERS_STARTED: AtomicU64 = AtomicU64::new(0);

/// After a re-execution, the ages go on from the workers handed over, as
/// in Gunicorn's master, which a HUP keeps (a hook that names files or
/// ports by age would reuse the old workers' while they finish).
pub(super) fn continue_ages(sb: &Scoreboard) {
    let last = sb
        .live()
        .map(|s| s.age.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    WORKERS_STARTED.fetch_max(last, Ordering::Relaxed);
}

impl Effects for System<'_> {
    fn spawn(&mut self, id: u32) -> Option<(Pid, usize)> {
        let Some(slot) = self.sb.claim(-1, id) else {
            crate::say!("oxgate: no free scoreboard slot for worker {id}");
            return None;
        };
        let age = WORKERS_STARTED.fetch_add(1, Ordering::Relaxed) + 1;
        python::call_gunicorn_hook(
            "pre_fork",
            python::HookContext {
                age,
                num_workers: self.cfg.process.processes,
                ..Default::default()
            },
        );
        let before = self
            .sb
            .id_stats(id)
            .respawns
            .fetch_add(1, Ordering::Relaxed);
        let master_pid = nix::unistd::getpid().as_raw();
        // Until the worker's own handlers are in place, a stop sent to it
        // waits, blocked, instead of running the master's handler there.
        let blocked = signals::Blocked::new();
        let forked = fork();
        // The child keeps the signals blocked until its handlers are in.
        if !forked.as_ref().is_ok_and(|&pid| pid == 0) {
            drop(blocked);
        }
        match forked {
            Err(e) => {
                crate::say!("oxgate: cannot fork worker {id}: {e}");
                self.sb.release(slot);
                None
            }
            Ok(0) => child::run(child::Setup {
                cfg: self.cfg,
                listeners: self.listeners,
                apps: self.apps.clone(),
                sb: self.sb.clone(),
                slot,
                id,
                age,
                master_pid,
                signals: self.signals,
                stats_fds: &self
                    .stats
                    .poll_fds()
                    .iter()
                    .map(|p| p.fd)
                    .chain(self.fifo)
                    .collect::<Vec<_>>(),
            }),
            Ok(pid) => {
                self.sb.slot(slot).pid.store(pid, Ordering::Release);
                self.sb.slot(slot).age.store(age, Ordering::Relaxed);
                // The hooks' `server.WORKERS` gets it, the object its
                // pre_fork was given (no hook of that name: no call).
                python::call_gunicorn_hook(
                    "_forked",
                    python::HookContext {
                        worker_pid: Some(pid),
                        age,
                        num_workers: self.cfg.process.processes,
                        ..Default::default()
                    },
                );
                // uWSGI's "Respawned uWSGI worker N (new pid: P)": a worker
                // started in place of one that ran (a crash, a recycle, a
                // reload), which log watchers look for.
                if before > 0 {
                    crate::note!("oxgate: respawned worker {id} (new pid: {pid})");
                }
                Some((pid, slot))
            }
        }
    }

    fn signal(&mut self, pid: Pid, sig: Signal) {
        send(pid, sig);
    }

    fn say(&mut self, line: String) {
        crate::say!("{line}");
    }

    fn note(&mut self, line: String) {
        crate::note!("{line}");
    }

    fn respawned(&mut self, cause: Cause, n: u64) {
        self.sb.header().respawns[cause as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn harakiri(&mut self, id: u32) {
        self.sb.header().harakiri.fetch_add(1, Ordering::Relaxed);
        // Gunicorn logs a worker timeout as critical.
        crate::log::statsd::log_counter("critical");
        self.sb
            .id_stats(id)
            .harakiri
            .fetch_add(1, Ordering::Relaxed);
    }

    fn notify(&mut self, state: &str) {
        if state == "READY=1" {
            process::sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        } else {
            process::sd_notify(state);
        }
    }

    fn seen(&mut self, w: &Worker) -> Seen {
        let slot = self.sb.slot(w.slot);
        Seen {
            ready: slot.ready.load(Ordering::Acquire) != 0,
            max_requests_reached: slot.retire.load(Ordering::Acquire) == Retire::MaxRequests as u32,
            requests: slot.counters.requests.load(Ordering::Relaxed),
        }
    }

    fn longest_request(&mut self, w: &Worker) -> Option<(Duration, String)> {
        let now_us = crate::sys::clock::now_us();
        self.busy_cores(w)
            .map(|c| {
                (
                    now_us.saturating_sub(c.started_us.load(Ordering::Acquire)),
                    c,
                )
            })
            .max_by_key(|(ran, _)| *ran)
            .map(|(ran, c)| (Duration::from_micros(ran), c.info()))
    }

    fn running(&mut self, w: &Worker) -> Vec<String> {
        self.busy_cores(w).map(|c| c.info()).collect()
    }

    fn memory(&mut self, pid: Pid) -> (u64, u64) {
        crate::sys::procfs::memory(Some(pid))
    }
}

impl Master<'_> {
    /// The supervisor with the system calls behind it.
    pub(super) fn supervise(
        &mut self,
        f: impl FnOnce(&mut super::supervisor::Supervisor, &mut System<'_>),
    ) {
        let mut system = System {
            cfg: self.cfg,
            listeners: &self.listeners,
            apps: &self.apps,
            sb: &self.sb,
            signals: &self.signals,
            stats: &self.stats,
            fifo: self.fifo.as_ref().map(|f| f.raw_fd()),
        };
        f(&mut self.sup, &mut system);
        // What when_ready started in the master (a metrics server on a
        // thread) went with the previous image, where Gunicorn's master,
        // which a HUP keeps, keeps it.
        if self.when_ready_after_reload && self.sup.reload.is_none() {
            self.when_ready_after_reload = false;
            let cx = python::HookContext {
                num_workers: self.cfg.process.processes,
                ..Default::default()
            };
            if !python::call_gunicorn_hook("when_ready", cx) {
                crate::say!(
                    "oxgate: the when_ready hook raised (above) after the reload; serving on"
                );
            }
        }
    }

    /// Reaps every child that ended: workers go to the supervisor, daemons
    /// are restarted with back-off.
    pub(super) fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid.as_raw(), Exit::Code(code)),
                WaitStatus::Signaled(pid, sig, _) => (pid.as_raw(), Exit::Signal(sig as i32)),
                _ => continue, // stopped or continued: still alive
            };
            if self.pool_manager.pid == Some(pid) {
                self.pool_manager_ended(exit);
                continue;
            }
            if let Some(d) = self.daemons.iter_mut().find(|d| d.pid == Some(pid)) {
                d.pid = None;
                let lived = d.started.elapsed();
                let smart = d.pidfile.is_some();
                // A smart daemon's launcher exits 0 once it has detached.
                let expected = self.sup.stopping() || (smart && exit == Exit::Code(0));
                if !expected {
                    d.failures = if lived < QUICK_DEATH {
                        d.failures + 1
                    } else {
                        0
                    };
                    let backoff = if d.failures == 0 {
                        Duration::ZERO
                    } else {
                        backoff(d.failures)
                    };
                    d.next_start = Instant::now() + backoff;
                    crate::say!(
                        "oxgate: daemon {:?} (pid {pid}) {}; restarting in {:.1}s",
                        d.command,
                        exit.describe(),
                        backoff.as_secs_f64()
                    );
                }
                continue;
            }
            if let Some(w) = self.sup.workers.iter().find(|w| w.pid == pid) {
                let slot = w.slot;
                let age = self.sb.slot(slot).age.load(Ordering::Relaxed);
                // The supervisor reads what it was running before the slot
                // is released.
                self.supervise(|sup, fx| sup.exited(pid, exit, fx, Instant::now()));
                self.sb.release(slot);
                python::call_gunicorn_hook(
                    "child_exit",
                    python::HookContext {
                        worker_pid: Some(pid),
                        age,
                        num_workers: self.cfg.process.processes,
                        ..Default::default()
                    },
                );
            }
        }
    }
}
