//! The master's life: start-up, the main loop, signals, reloads by
//! re-execution, and forking workers.

use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use nix::sys::signal::Signal;

use super::handover::{HandedDaemon, HandedWorker, Handover, set_cloexec};
use super::scoreboard::{Cause, Scoreboard};
use super::state::{Daemon, Master, State, TICK, Worker, mtime, send};
use super::{child, signals, stats};
use crate::config::{Config, MAX_WORKERS};
use crate::handlers::python;
use crate::lifecycle::{MasterCommand, ReloadKind, StopKind};
use crate::listen::Socket;
use crate::process;
use crate::worker::apps;

pub fn run(cfg: &Config, listeners: Vec<Socket>, handover: Option<Handover>) -> Result<(), String> {
    let p = &cfg.process;
    // Bound before the app loads: a taken address fails fast.
    let stats = match stats::Stats::bind(cfg) {
        Ok(s) => s,
        Err(e) if handover.is_some() => {
            crate::say!("oxgate: {e}; serving on without stats");
            stats::Stats::default()
        }
        Err(e) => return Err(e),
    };
    let sb = match &handover {
        Some(h) if h.scoreboard >= 0 => {
            set_cloexec(h.scoreboard, true);
            Scoreboard::adopt(h.scoreboard)
        }
        _ => Scoreboard::create(),
    }
    .map_err(|e| format!("cannot create the scoreboard: {e}"))?;

    let mut broken = false;
    let apps = if p.lazy_apps {
        None
    } else {
        match apps::load_app(cfg) {
            Ok(h) => {
                python::prepare_preload_fork();
                Some(h)
            }
            Err(e) if handover.is_some() => {
                crate::say!(
                    "oxgate: reload failed, the old workers keep serving: {e}\noxgate: fix the app and reload again"
                );
                broken = true;
                None
            }
            Err(e) => return Err(e),
        }
    };
    if handover.is_none()
        && let Some(log) = &p.daemonize2
    {
        process::daemonize(log)?;
        if let Some(pidfile) = &p.pidfile {
            process::write_pidfile(pidfile)?;
        }
    }
    let signals = signals::SignalPipe::install()?;

    let mut m = Master {
        cfg,
        listeners,
        apps,
        sb: Arc::new(sb),
        signals,
        workers: Vec::new(),
        daemons: p
            .attach_daemons
            .iter()
            .map(|c| (c.clone(), None))
            .chain(
                p.smart_attach_daemons
                    .iter()
                    .map(|(f, c)| (c.clone(), Some(f.clone()))),
            )
            .map(|(command, pidfile)| Daemon {
                command,
                pidfile,
                pid: None,
                started: Instant::now(),
                failures: 0,
                next_start: Instant::now(),
            })
            .collect(),
        processes: p.processes,
        state: State::Running,
        reload: None,
        failures: 0,
        next_spawn: Instant::now(),
        ever_ready: false,
        broken,
        fatal: None,
        touched: p
            .touch_reload
            .iter()
            .map(|f| (f.clone(), mtime(f), ReloadKind::Graceful))
            .chain(
                p.touch_chain_reload
                    .iter()
                    .map(|f| (f.clone(), mtime(f), ReloadKind::Chain)),
            )
            .collect(),
        touched_logreopen: cfg
            .log_files
            .touch_reopen
            .iter()
            .map(|f| (f.clone(), mtime(f)))
            .collect(),
        started: SystemTime::now(),
        notified: false,
        stats,
    };

    match &handover {
        None => crate::say!(
            "oxgate {}: serving {} on {} (master pid {}, {} worker{}, {} Python thread{} each, {})",
            env!("CARGO_PKG_VERSION"),
            apps::app_name(cfg),
            crate::listen::describe(&m.listeners),
            std::process::id(),
            m.processes,
            if m.processes == 1 { "" } else { "s" },
            cfg.threads,
            if cfg.threads == 1 { "" } else { "s" },
            if p.lazy_apps {
                "app loaded in each worker"
            } else {
                "app preloaded"
            },
        ),
        Some(inh) => {
            m.started = inh.started();
            crate::say!(
                "oxgate: {} reload: master pid {} re-executed, replacing {} worker(s)",
                inh.reload.name(),
                std::process::id(),
                inh.workers.len()
            );
            m.adopt(inh);
        }
    }
    m.main_loop();
    if let Some(e) = m.fatal {
        return Err(e);
    }
    crate::say!("oxgate: master stopped");
    Ok(())
}

impl Master<'_> {
    fn adopt(&mut self, inh: &Handover) {
        let now = Instant::now();
        for w in &inh.workers {
            self.workers.push(Worker {
                pid: w.pid,
                id: w.id,
                slot: w.slot,
                started: now,
                ready: true,
                replace: !self.broken,
                replaced_by: None,
                stop_sent: None,
                killed: false,
                harakiri_sent: None,
                harakiri_info: None,
            });
        }
        self.ever_ready = true;
        for handed in &inh.daemons {
            match self.daemons.get_mut(handed.index) {
                Some(d) => d.pid = Some(handed.pid),
                None => crate::say!(
                    "oxgate: error: daemon pid {} has no --attach-daemon in the new configuration; it keeps running unwatched",
                    handed.pid
                ),
            }
        }
        if self.broken {
            return;
        }
        self.count_respawn(Cause::Reload, inh.workers.len() as u64);
        self.reload = Some((inh.reload, now));
        if inh.reload == ReloadKind::Brutal {
            // Killed by the previous image before it re-executed.
            for w in &mut self.workers {
                w.killed = true;
                w.stop_sent = Some(now);
            }
        }
    }

    fn main_loop(&mut self) {
        loop {
            let mut fds = self.stats.poll_fds();
            let signals = self.signals.wait(TICK, &mut fds);
            if fds.iter().any(|p| p.revents != 0) || self.stats.has_clients() {
                let mut stats = std::mem::take(&mut self.stats);
                stats.serve(&fds, &|want| self.render_stats(want));
                self.stats = stats;
            }
            for sig in signals {
                self.on_signal(sig);
            }
            self.reap();
            if let State::Stopping { since } = self.state {
                if self.workers.is_empty() && self.daemons.iter().all(|d| d.pid.is_none()) {
                    return;
                }
                if since.elapsed() > self.cfg.process.reload_mercy {
                    crate::say!(
                        "oxgate: workers still busy after --reload-mercy {}s, killing them",
                        self.cfg.process.reload_mercy.as_secs()
                    );
                    self.kill_all(Signal::SIGKILL);
                }
                continue;
            }
            self.supervise();
            self.schedule();
            self.run_daemons();
            self.check_touched();
            self.keep_log();
        }
    }

    fn on_signal(&mut self, sig: i32) {
        let stopping = matches!(self.state, State::Stopping { .. });
        let Some(command) = MasterCommand::from_signal(sig) else {
            return;
        };
        match command {
            MasterCommand::ChildExited => {}
            MasterCommand::Stop { repeatable } if stopping => {
                if repeatable {
                    crate::say!(
                        "oxgate: second {}, killing the workers now",
                        signals::name(sig)
                    );
                    self.stop(StopKind::Immediate);
                }
            }
            MasterCommand::Stop { .. } => {
                crate::say!(
                    "oxgate: {} received, stopping gracefully (requests in flight finish; a second SIGINT stops at once)",
                    signals::name(sig)
                );
                self.stop(StopKind::Graceful);
            }
            _ if stopping => {}
            MasterCommand::Reload(kind) => self.reexec(kind),
            MasterCommand::AddWorker => {
                if self.processes < MAX_WORKERS {
                    self.processes += 1;
                    crate::say!("oxgate: SIGTTIN: now {} workers", self.processes);
                }
            }
            MasterCommand::RemoveWorker => {
                if self.processes > 1 {
                    self.processes -= 1;
                    crate::say!("oxgate: SIGTTOU: now {} workers", self.processes);
                    let newest = self
                        .workers
                        .iter_mut()
                        .filter(|w| !w.replace && w.stop_sent.is_none())
                        .max_by_key(|w| w.id);
                    if let Some(w) = newest {
                        w.stop_sent = Some(Instant::now());
                        send(w.pid, Signal::SIGTERM);
                    }
                }
            }
            MasterCommand::ReopenLog => self.reopen_log(),
        }
    }

    /// Begins a stop of the given kind.
    fn stop(&mut self, kind: StopKind) {
        match kind {
            StopKind::Graceful => {
                self.state = State::Stopping {
                    since: Instant::now(),
                };
                process::sd_notify("STOPPING=1");
                self.kill_all(Signal::SIGTERM);
            }
            StopKind::Immediate => self.kill_all(Signal::SIGKILL),
        }
    }

    pub(super) fn kill_all(&mut self, sig: Signal) {
        if matches!(self.state, State::Stopping { .. }) {
            for d in &self.daemons {
                for pid in d.pid.into_iter().chain(d.pid_from_file()) {
                    send(pid, sig);
                }
            }
        }
        let now = Instant::now();
        for w in &mut self.workers {
            if sig == Signal::SIGKILL {
                w.killed = true;
            }
            w.stop_sent.get_or_insert(now);
            send(w.pid, sig);
        }
    }

    /// Re-executes the master binary (new code, new config), handing over
    /// the sockets, the scoreboard and the running workers.
    pub(super) fn reexec(&mut self, kind: ReloadKind) {
        crate::say!("oxgate: {} reload requested", kind.name());
        process::sd_notify("RELOADING=1");
        if kind == ReloadKind::Brutal {
            self.kill_all(Signal::SIGKILL);
        }
        let mut hand = Handover::new(kind, self.sb.raw_fd(), self.started);
        for s in &self.listeners {
            hand.add_listener(s);
        }
        set_cloexec(self.sb.raw_fd(), false);
        for w in self.workers.iter().filter(|w| !w.killed) {
            hand.workers.push(HandedWorker {
                pid: w.pid,
                id: w.id,
                slot: w.slot,
            });
        }
        for (index, d) in self.daemons.iter().enumerate() {
            if let Some(pid) = d.pid {
                hand.daemons.push(HandedDaemon { index, pid });
            }
        }
        let (key, value) = hand.to_env();
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(
                std::env::args_os()
                    .next()
                    .unwrap_or_else(|| "oxgate".into()),
            )
            .args(args)
            .env(key, value)
            .exec();
        // Only reached if exec failed: carry on with the old image.
        crate::say!("oxgate: reload failed, cannot re-execute oxgate: {err}");
        for s in &hand.listeners {
            set_cloexec(s.fd, true);
        }
        set_cloexec(self.sb.raw_fd(), true);
    }

    pub(super) fn spawn(&mut self, id: u32) -> Option<libc::pid_t> {
        let Some(slot) = self.sb.claim(-1, id) else {
            crate::say!("oxgate: no free scoreboard slot for worker {id}");
            return None;
        };
        self.sb
            .id_stats(id)
            .respawns
            .fetch_add(1, Ordering::Relaxed);
        let master_pid = nix::unistd::getpid().as_raw();
        // Until the worker's own handlers are in place, a stop sent to it
        // waits, blocked, instead of running the master's handler there.
        let blocked = signals::Blocked::new();
        let pid = if self.apps.is_some() {
            python::fork()
        } else {
            // SAFETY: the master is single-threaded (no runtime exists in
            // it), so the child may run any code after the fork.
            unsafe { libc::fork() }
        };
        if pid != 0 {
            drop(blocked);
        }
        match pid {
            -1 => {
                crate::say!(
                    "oxgate: cannot fork worker {id}: {}",
                    std::io::Error::last_os_error()
                );
                self.sb.release(slot);
                None
            }
            0 => child::run(child::Setup {
                cfg: self.cfg,
                listeners: &self.listeners,
                apps: self.apps.clone(),
                sb: self.sb.clone(),
                slot,
                id,
                master_pid,
                signals: &self.signals,
            }),
            pid => {
                self.sb.slot(slot).pid.store(pid, Ordering::Release);
                self.workers.push(Worker {
                    pid,
                    id,
                    slot,
                    started: Instant::now(),
                    ready: false,
                    replace: false,
                    replaced_by: None,
                    stop_sent: None,
                    killed: false,
                    harakiri_sent: None,
                    harakiri_info: None,
                });
                Some(pid)
            }
        }
    }

    fn render_stats(&self, want: stats::Want) -> String {
        let snap = stats::Snapshot {
            cfg: self.cfg,
            sb: &self.sb,
            workers: self
                .workers
                .iter()
                .map(|w| stats::WorkerView {
                    id: w.id,
                    pid: w.pid,
                    slot: w.slot,
                    ready: w.ready,
                    stopping: w.stop_sent.is_some(),
                })
                .collect(),
            sockets: &self.listeners,
        };
        match want {
            stats::Want::Json => stats::render_json(&snap),
            stats::Want::Metrics => stats::render_metrics(&snap),
        }
    }
}
