//! The master's life: start-up, the main loop, signals, reloads by
//! re-execution, and forking workers.

use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nix::sys::signal::Signal;

use super::handover::{HandedDaemon, HandedWorker, Handover, set_cloexec};
use super::scoreboard::Scoreboard;
use super::state::{Daemon, Master, TICK, mtime, send};
use super::supervisor::{Limits, Supervisor};
use super::{signals, stats};
use crate::config::{Config, MAX_WORKERS};
use crate::handlers::python;
use crate::lifecycle::{EXIT_WORKERS_FAILED, Failure, MasterCommand, ReloadKind, StopKind};
use crate::listen::Socket;
use crate::process;
use crate::worker::apps;

/// Gunicorn's first hooks, in its order, before any socket is bound (an
/// `on_starting` that makes the unix socket's directory is common): the
/// worker count is set (from nothing), then the server starts. On a reload
/// by re-execution they do not run again.
pub fn starting_hooks(cfg: &Config) -> Result<(), Failure> {
    let p = &cfg.process;
    python::share_settings_with_hooks(cfg);
    server_hook(cfg, "nworkers_changed", Some((p.processes, None)));
    // As Gunicorn, which stops when on_starting or when_ready raises.
    if !server_hook(cfg, "on_starting", None) {
        return Err("the on_starting hook raised (above): not starting".into());
    }
    Ok(())
}

/// Calls a Gunicorn server hook (one whose argument is the arbiter); false
/// when it raised.
fn server_hook(cfg: &Config, name: &str, nworkers: Option<(usize, Option<usize>)>) -> bool {
    python::call_gunicorn_hook(
        name,
        python::HookContext {
            num_workers: cfg.process.processes,
            nworkers,
            ..Default::default()
        },
    )
}

pub fn run(
    cfg: &Config,
    listeners: Vec<Socket>,
    mut handover: Option<Handover>,
) -> Result<(), Failure> {
    let p = &cfg.process;
    // Bound before the app loads: a taken address fails fast.
    let handed_stats = handover
        .as_mut()
        .map(|h| std::mem::take(&mut h.stats))
        .unwrap_or_default();
    let stats = match stats::Stats::bind(cfg, handed_stats) {
        Ok(s) => s,
        Err(e) if handover.is_some() => {
            crate::say!("oxgate: {e}; serving on without stats");
            stats::Stats::default()
        }
        Err(e) => return Err(e.into()),
    };
    // Made before the app loads, like the stats server: a bad path fails
    // the start.
    let handed_fifo = handover.as_mut().and_then(|h| h.master_fifo.take());
    let fifo = match super::fifo::MasterFifo::open_or_adopt(&p.master_fifo, handed_fifo) {
        Ok(f) => f,
        Err(e) if handover.is_some() => {
            crate::say!("oxgate: {e}; serving on without it");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let mut handover = handover;
    let sb = match &mut handover {
        Some(h) if h.scoreboard >= 0 => {
            set_cloexec(h.scoreboard, true);
            Scoreboard::adopt(h.scoreboard).or_else(|e| {
                // Another oxgate build made it (an upgrade): start a new
                // one, keeping the running workers' slots theirs.
                crate::say!(
                    "oxgate: cannot adopt the previous master's scoreboard ({e}); the counters start again from zero"
                );
                let sb = Scoreboard::create()?;
                h.workers.retain_mut(|w| match sb.occupy(w.slot, w.pid, w.id) {
                    Some(slot) => {
                        w.slot = slot;
                        true
                    }
                    None => {
                        // More than this build has slots for (none does
                        // today): stopped, not left unwatched.
                        crate::say!(
                            "oxgate: no scoreboard slot for the previous master's worker {} (pid {}); stopping it",
                            w.id,
                            w.pid
                        );
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(w.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        false
                    }
                });
                if !h.workers.is_empty() {
                    crate::say!(
                        "oxgate: until they are replaced, the previous master's {} worker(s) show no counts, and harakiri and max-requests do not see them",
                        h.workers.len()
                    );
                }
                Ok(sb)
            })
        }
        _ => Scoreboard::create(),
    }
    .map_err(|e: std::io::Error| format!("cannot create the scoreboard: {e}"))?;
    sb.name_pools(
        &cfg.fastcgi
            .apps
            .iter()
            .map(|a| super::scoreboard::pool_id(&a.mount, &a.command))
            .collect::<Vec<_>>(),
    );

    // The handlers go in before the app is imported: what the app starts
    // (threads, subprocesses) must not inherit the blocked signals, and a
    // signal sent meanwhile waits in the pipe for the main loop.
    python::drop_pythons_sigint_handler();
    let signals = signals::SignalPipe::install()?;
    super::wake::install();
    // The hooks see the settings in force (after a reload, the new ones).
    python::share_settings_with_hooks(cfg);
    let mut broken = false;
    let feeder = handover
        .is_some()
        .then(super::systemd_status::LoadingFeeder::start)
        .flatten();
    let loaded = (!p.lazy_apps).then(|| load_app_stoppably(cfg, handover.is_none()));
    // Before anything forks.
    if let Some(feeder) = feeder {
        feeder.stop();
    }
    let apps = match loaded {
        None => None,
        Some(loaded) => match loaded {
            Ok(h) => {
                if let Some(kinds) = h.describe(cfg) {
                    crate::note!("oxgate: {kinds}");
                }
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
            Err(e) => return Err(e.into()),
        },
    };
    if handover.is_none()
        && let Some(log) = &p.daemonize2
    {
        process::daemonize(log)?;
        process::write_pidfiles(p)?;
        process::detached();
    }
    // Named for this process: made once it has daemonized.
    crate::handlers::fastcgi::prepare(&cfg.fastcgi)?;
    let mut m = Master {
        cfg,
        listeners,
        apps,
        sb: Arc::new(sb),
        signals,
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
        pool_manager: Default::default(),
        sup: Supervisor::new(
            p.processes,
            Limits {
                harakiri: p.harakiri,
                worker_reload_mercy: p.worker_reload_mercy,
                reload_mercy: p.reload_mercy,
                drain_delay: p.drain_delay,
                max_worker_lifetime: p.max_worker_lifetime,
                reload_on_rss: p.reload_on_rss,
                evil_reload_on_rss: p.evil_reload_on_rss,
                reload_on_as: p.reload_on_as,
                min_worker_lifetime: p.min_worker_lifetime,
                // Gunicorn's arbiter looks again about a second after its
                // SIGABRT; real worker_abort hooks log and flush in it.
                harakiri_grace: python::has_gunicorn_hook("worker_abort")
                    .then_some(std::time::Duration::from_millis(1500)),
            },
            broken,
            Instant::now(),
        ),
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
        daemons_stopped: false,
        stats,
        fifo,
        systemd_status: super::systemd_status::SystemdStatus::from_env(Instant::now(), broken),
        queues_checked: Instant::now(),
        when_ready_after_reload: handover.is_some(),
    };

    match &handover {
        None => crate::note!(
            "oxgate {}: serving {} on {} (master pid {}, {} worker{}, {})",
            env!("CARGO_PKG_VERSION"),
            apps::app_name(cfg),
            crate::listen::describe(&m.listeners, |a| crate::frontend::tls::listener_for(a)
                .is_some()),
            std::process::id(),
            m.sup.processes,
            if m.sup.processes == 1 { "" } else { "s" },
            if !cfg.needs_python() {
                "no Python app".to_string()
            } else {
                format!(
                    "{} Python thread{} each, {}",
                    cfg.threads,
                    if cfg.threads == 1 { "" } else { "s" },
                    if p.lazy_apps {
                        "app loaded in each worker"
                    } else {
                        "app preloaded"
                    }
                )
            },
        ),
        Some(inh) => {
            m.started = inh.started();
            // The old workers still serving, which the new ones replace
            // (unless the app failed to load: then they serve on).
            let old = inh
                .workers
                .iter()
                .filter(|w| !w.asked && !w.replaced)
                .count();
            // A changed --processes: some more started, or some stopped.
            let replacing = match old.cmp(&p.processes) {
                std::cmp::Ordering::Equal => format!("replacing {old} worker(s)"),
                std::cmp::Ordering::Less => format!(
                    "replacing {old} worker(s) and starting {} more (--processes {})",
                    p.processes - old,
                    p.processes
                ),
                std::cmp::Ordering::Greater => format!(
                    "replacing {} of the {old} worker(s) and stopping the other {} (--processes {})",
                    p.processes,
                    old - p.processes,
                    p.processes
                ),
            };
            crate::note!(
                "oxgate: {} reload: master pid {} re-executed, {}",
                inh.reload.name(),
                std::process::id(),
                if broken {
                    format!("the {} old worker(s) serve on", inh.workers.len())
                } else if inh.reload == ReloadKind::Brutal {
                    // Killed and reaped before the exec: none was handed over.
                    format!("the old workers killed, starting {}", p.processes)
                } else {
                    replacing
                }
            );
            // Gunicorn's HUP calls on_reload in its master, which lives on,
            // once the config is read again: here, in the re-executed one.
            if inh.reload == ReloadKind::Graceful {
                server_hook(cfg, "on_reload", None);
            }
            super::effects::continue_ages(&m.sb);
            m.adopt(inh);
            // RELOADING=1 was said: systemd waits for READY=1, which the
            // old workers serving on deserve (no new one will say it).
            if broken {
                process::sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
            }
        }
    }
    if handover.is_none()
        && let Some(notice) = process::root_without_uid_notice(p.uid.as_deref())
    {
        crate::note!("{notice}");
    }
    // Gunicorn's quirk, which real hooks rely on: ready before the first
    // fork. After a reload, once it is done (`when_ready_after_reload`).
    if handover.is_none() && !server_hook(cfg, "when_ready", None) {
        return Err("the when_ready hook raised (above): not starting".into());
    }
    m.main_loop();
    if let Some(f) = &m.fifo {
        f.remove();
    }
    server_hook(cfg, "on_exit", None);
    if let Some(message) = m.sup.fatal {
        return Err(Failure {
            message,
            status: EXIT_WORKERS_FAILED,
        });
    }
    crate::note!("oxgate: master stopped");
    Ok(())
}

impl Master<'_> {
    fn adopt(&mut self, inh: &Handover) {
        let workers = inh
            .workers
            .iter()
            .map(|w| (w.pid, w.id, w.slot, w.asked, w.replaced));
        self.supervise(|sup, fx| sup.adopt(workers, inh.reload, fx, Instant::now()));
        for handed in &inh.daemons {
            match self.daemons.get_mut(handed.index) {
                Some(d) => d.pid = Some(handed.pid),
                None => crate::say!(
                    "oxgate: error: daemon pid {} has no --attach-daemon in the new configuration; it keeps running unwatched",
                    handed.pid
                ),
            }
        }
    }

    fn main_loop(&mut self) {
        loop {
            let mut fds = self.stats.poll_fds();
            let stats_fds = fds.len();
            if let Some(f) = &self.fifo {
                fds.push(libc::pollfd {
                    fd: f.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let fifo_at = fds.len();
            // A worker's news in the scoreboard ends the wait; the tick
            // below reads it.
            if let Some(fd) = super::wake::fd() {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let signals = self.signals.wait(TICK, &mut fds);
            super::wake::drain();
            let fifo_ready = fds[stats_fds..fifo_at].iter().any(|p| p.revents != 0);
            let fds = &fds[..stats_fds];
            if fds.iter().any(|p| p.revents != 0) || self.stats.has_clients() {
                let mut stats = std::mem::take(&mut self.stats);
                stats.serve(fds, &|want| self.render_stats(want));
                self.stats = stats;
            }
            for sig in signals {
                self.on_signal(sig);
            }
            if fifo_ready {
                self.on_fifo();
            }
            self.reap();
            // Stopping too: a stop's mercy may outlast WatchdogSec.
            if let Some(status) = &mut self.systemd_status
                && let Some(message) = status.due(&self.sb, Instant::now())
            {
                process::sd_notify(&message);
            }
            if self.sup.workers_stopping() {
                let mut workers_gone = false;
                self.supervise(|sup, fx| workers_gone = sup.stop_tick(fx, Instant::now()));
                self.publish_health();
                self.close_sockets();
                self.stop_daemons();
                if workers_gone {
                    self.stop_pool_manager();
                }
                if workers_gone
                    && self.daemons.iter().all(|d| d.pid.is_none())
                    && self.pool_manager.pid.is_none()
                {
                    return;
                }
                continue;
            }
            self.say_full_queues();
            // Before the workers: the pools' processes start meanwhile.
            self.run_pool_manager();
            // Draining, the workers are supervised as usual until the delay
            // is over (harakiri, respawns, readiness).
            self.supervise(|sup, fx| sup.tick(fx, Instant::now()));
            crate::log::statsd::workers(self.sup.workers.len());
            if self.sup.draining() {
                self.supervise(|sup, fx| {
                    sup.stop_tick(fx, Instant::now());
                });
            }
            self.publish_health();
            self.run_daemons();
            // A stop under way (a drain) is not turned into a reload by a
            // touched file.
            if !self.sup.stopping() {
                self.check_touched();
            }
            self.keep_log();
        }
    }

    /// Once the workers stop, the master's copies of the listening sockets
    /// close too: with the workers' gone, a new connection is refused at
    /// once (a balancer retries it elsewhere) instead of waiting in a
    /// backlog nobody will accept from.
    fn close_sockets(&mut self) {
        self.listeners.clear();
    }

    /// What the workers answer `--health-path` with, from the supervisor.
    fn publish_health(&self) {
        self.sb.header().health.store(
            self.sup.health() as u32,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Commands written to `--master-fifo`, each as its signal would be.
    fn on_fifo(&mut self) {
        use super::fifo::FifoCommand;
        let Some(fifo) = &mut self.fifo else { return };
        // A reload re-executes the master: it comes after the rest of what
        // was read with it ("r-" does both), the last one asked.
        let mut reload = None;
        for (c, command) in fifo.read() {
            let Some((command, what)) = command else {
                crate::say!(
                    "oxgate: --master-fifo: {:?} is not a command oxgate has (r, R, w, W, c, q, Q, l, +, -, 0-9)",
                    char::from(c)
                );
                continue;
            };
            crate::note!("oxgate: --master-fifo: {:?} ({what})", char::from(c));
            match command {
                FifoCommand::Signal(sig)
                    if matches!(
                        MasterCommand::from_signal(sig),
                        Some(MasterCommand::Reload(_))
                    ) =>
                {
                    reload = Some(sig);
                }
                FifoCommand::Signal(sig) => self.on_signal(sig),
                // A stop, then its second asking, as two SIGINTs are: the
                // master stops, and the workers are killed at once. (Not
                // through on_signal: its lines named SIGINTs never sent.)
                FifoCommand::StopNow => {
                    if !self.sup.stopping() {
                        self.stop(StopKind::Graceful);
                        self.publish_health();
                    }
                    self.stop(StopKind::Immediate);
                }
                FifoCommand::Slot(n) => {
                    let Some(fifo) = &mut self.fifo else { return };
                    match fifo.switch(n) {
                        Ok(path) => {
                            crate::note!("oxgate: --master-fifo: now reading {}", path.display())
                        }
                        Err(e) => crate::say!("oxgate: --master-fifo: {e}"),
                    }
                }
            }
        }
        if let Some(sig) = reload {
            self.on_signal(sig);
        }
    }

    fn on_signal(&mut self, sig: i32) {
        let stopping = self.sup.stopping();
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
                let interrupt = matches!(sig, libc::SIGINT | libc::SIGQUIT);
                let quick = interrupt && self.cfg.process.quick_stop_on_int;
                if quick {
                    crate::note!(
                        "oxgate: {} received, stopping at once (--quick-stop-on-int, Gunicorn's quick shutdown)",
                        signals::name(sig)
                    );
                } else {
                    crate::note!(
                        "oxgate: {} received, stopping gracefully (requests in flight finish; a second SIGINT or SIGQUIT stops at once)",
                        signals::name(sig)
                    );
                }
                // Gunicorn's workers get SIGQUIT on a stop by SIGINT or
                // SIGQUIT, call worker_int and exit (`--quick-stop-on-int`);
                // without that, they call it and stop gracefully on the
                // SIGTERM that follows.
                if quick || (interrupt && python::has_gunicorn_hook("worker_int")) {
                    for w in &self.sup.workers {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(w.pid),
                            Signal::SIGQUIT,
                        );
                    }
                }
                self.stop(StopKind::Graceful);
                // The health check fails from now, not from the next tick.
                self.publish_health();
            }
            MasterCommand::ReopenLog => self.reopen_log(),
            _ if stopping => {}
            MasterCommand::Reload(kind) => {
                // Gunicorn's upgrade procedure goes on to stop "the old
                // master" by its pid: here that is this process, which a
                // stop would end with the service.
                if sig == libc::SIGUSR2 && self.cfg.process.quick_stop_on_int {
                    crate::say!(
                        "oxgate: SIGUSR2: the master replaces its workers in this process, with the same pid; there is no old master to stop afterwards (a TERM or QUIT to this pid stops the service)"
                    );
                }
                self.reexec(kind);
            }
            MasterCommand::AddWorker => {
                if self.sup.processes < MAX_WORKERS {
                    self.sup.processes += 1;
                    crate::note!(
                        "oxgate: one worker more (SIGTTIN, or + on the master FIFO): now {}",
                        self.sup.processes
                    );
                    self.workers_changed(self.sup.processes - 1);
                }
            }
            MasterCommand::RemoveWorker => {
                let mut removed = false;
                self.supervise(|sup, fx| removed = sup.remove_one(fx, Instant::now()));
                if removed {
                    crate::note!(
                        "oxgate: one worker fewer (SIGTTOU, or - on the master FIFO): now {}",
                        self.sup.processes
                    );
                    self.workers_changed(self.sup.processes + 1);
                }
            }
        }
    }

    /// Gunicorn's nworkers_changed hook, after SIGTTIN or SIGTTOU.
    fn workers_changed(&self, old: usize) {
        python::call_gunicorn_hook(
            "nworkers_changed",
            python::HookContext {
                num_workers: self.sup.processes,
                nworkers: Some((self.sup.processes, Some(old))),
                ..Default::default()
            },
        );
    }

    /// Begins a stop of the given kind. The workers stop through the
    /// supervisor, the daemons in the main loop (`stop_daemons`).
    fn stop(&mut self, kind: StopKind) {
        // Before the workers are told: each reads it to know its deadline.
        self.sb
            .header()
            .master_stopping
            .store(1, std::sync::atomic::Ordering::Release);
        self.supervise(|sup, fx| sup.stop(kind, fx, Instant::now()));
        if kind == StopKind::Immediate {
            self.signal_daemons(Signal::SIGKILL);
        }
    }

    /// While the master stops (however the stop began: a signal, or the
    /// supervisor after the app failed to load): the daemons get SIGTERM
    /// once, and SIGKILL after --reload-mercy, whatever the workers do.
    fn stop_daemons(&mut self) {
        let super::supervisor::MasterState::Stopping { since } = self.sup.state else {
            return;
        };
        if !self.daemons_stopped {
            self.daemons_stopped = true;
            self.signal_daemons(Signal::SIGTERM);
        } else if since.elapsed() > self.cfg.process.reload_mercy {
            self.signal_daemons(Signal::SIGKILL);
        }
    }

    /// Sends `sig` to the attached daemons.
    fn signal_daemons(&self, sig: Signal) {
        for d in &self.daemons {
            // The group it leads (a shell and what it started); a daemon
            // an older image started in the master's group, alone.
            if let Some(pid) = d.pid
                && nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig).is_err()
            {
                send(pid, sig);
            }
            if let Some(pid) = d.pid_from_file() {
                send(pid, sig);
            }
        }
    }

    /// Once a second, a line for each socket whose listen queue is full,
    /// as uWSGI's master writes it: the connections past it are refused or
    /// dropped by the kernel, and alerts are set on this line.
    fn say_full_queues(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.queues_checked) < std::time::Duration::from_secs(1) {
            return;
        }
        self.queues_checked = now;
        for sock in &self.listeners {
            let (queue, max) = stats::listen_queue(sock);
            if max > 0 && queue >= max {
                crate::say!(
                    "oxgate: *** listen queue of socket \"{}\" (fd: {}) full !!! ({queue}/{max}) ***",
                    sock.addr,
                    sock.listener.raw_fd()
                );
            }
        }
    }

    /// Re-executes the master binary (new code, new config), handing over
    /// the sockets, the scoreboard and the running workers.
    pub(super) fn reexec(&mut self, kind: ReloadKind) {
        if self.cfg.process.exit_on_reload {
            crate::note!(
                "oxgate: {} reload requested; stopping gracefully instead (--exit-on-reload)",
                kind.name()
            );
            self.stop(StopKind::Graceful);
            self.publish_health();
            return;
        }
        crate::note!("oxgate: {} reload requested", kind.name());
        // The new image reads the certificates again; one that cannot (a
        // renewal that wrote a bad file) would not start. The reload is
        // refused instead, and the certificates read before keep serving.
        if let Err(why) = crate::frontend::tls::load(self.cfg, &process::start_dir()) {
            crate::say!(
                "oxgate: {} reload refused: {why}; still serving with the certificates read before",
                kind.name()
            );
            return;
        }
        // The new image reads the configuration again: one it cannot use
        // (a typo in an edited file) would end the whole service. It is
        // read first by the same command with --check-config, and the
        // reload refused if that fails: the old image serves on.
        let activated = self.listeners.iter().any(|s| s.activated);
        if let Err(why) = check_new_config(activated) {
            crate::say!(
                "oxgate: {} reload refused: {why}; still serving with the configuration read before",
                kind.name()
            );
            return;
        }
        // A stop that came during the checks ends the reload here; the
        // main loop stops. (Its flag stays set for it.)
        if self.signals.stop_arrived() {
            // A stop's own business, routine: quiet at --log-level warning.
            crate::note!(
                "oxgate: {} reload abandoned: a stop came meanwhile",
                kind.name()
            );
            return;
        }
        // With the clock's time, which systemd's Type=notify-reload (the
        // unit that sends SIGHUP itself) matches with the reload it asked
        // for; without it, `systemctl reload` times out there.
        process::sd_notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::sys::clock::now_us()
        ));
        let mut stats = std::mem::take(&mut self.stats);
        stats.finish_clients(STATS_FINISH, &|want| self.render_stats(want));
        self.stats = stats;
        if kind == ReloadKind::Brutal {
            self.supervise(|sup, fx| sup.signal_all(Signal::SIGKILL, fx, Instant::now()));
        }
        self.reap_killed();
        let mut hand = Handover::new(kind, self.sb.raw_fd(), self.started);
        for s in &self.listeners {
            hand.add_listener(s);
        }
        set_cloexec(self.sb.raw_fd(), false);
        for w in self.sup.workers.iter().filter(|w| !w.killed()) {
            hand.workers.push(HandedWorker {
                pid: w.pid,
                id: w.id,
                slot: w.slot,
                asked: w.asked(),
                replaced: matches!(w.replacement, super::supervisor::Replacement::By(_)),
            });
        }
        for (index, d) in self.daemons.iter().enumerate() {
            if let Some(pid) = d.pid {
                hand.daemons.push(HandedDaemon { index, pid });
            }
        }
        hand.stats = self.stats.hand_over();
        if let Some(f) = &self.fifo {
            set_cloexec(f.raw_fd(), false);
            hand.master_fifo = Some(super::handover::HandedFifo {
                fd: f.raw_fd(),
                slot: f.slot(),
            });
        }
        let (key, value) = hand.to_env();
        let hook_cx = python::HookContext {
            num_workers: self.cfg.process.processes,
            ..Default::default()
        };
        // Gunicorn's USR2 (a new master) calls pre_exec; its HUP's
        // on_reload runs in the next image, with the config read again.
        if kind != ReloadKind::Graceful {
            python::call_gunicorn_hook("pre_exec", hook_cx);
        }
        // From here the signals wait, blocked, through the exec, for the
        // next image's handlers (not their default action, which kills).
        // Blocked after the hooks, whose children would inherit the mask.
        // Those taken in since the check above (on another of the
        // process's threads, or before the block) are sent again, so that
        // they wait too; a stop among them ends the reload.
        let blocked = signals::Blocked::new();
        let arrived = self.signals.take_arrived();
        for &sig in &arrived {
            blocked.keep_pending(sig);
        }
        let stop_came = arrived.iter().any(|&s| signals::is_stop(s));
        // The pools are this image's: its manager ends once the workers
        // that use them are gone. The next image makes its own.
        crate::handlers::fastcgi::release_all();
        let (program, arg0, args) = python::relaunch_command();
        let mut next = std::process::Command::new(program);
        next.arg0(arg0)
            .args(args)
            .current_dir(process::start_dir())
            .env(key, value);
        if activated {
            next.env(crate::lifecycle::SYSTEMD_SOCKETS_ENV, "1");
        }
        // The next image's watchdog feeder starts once it runs: the time
        // counts from here.
        if super::systemd_status::watchdog_every().is_some() {
            process::sd_notify("WATCHDOG=1");
        }
        let why = if stop_came {
            "abandoned: a stop came meanwhile".to_string()
        } else {
            format!("failed, cannot re-execute oxgate: {}", next.exec())
        };
        // Only reached without an exec: carry on with the old image (the
        // signals kept pending are handled once unblocked).
        drop(blocked);
        crate::handlers::fastcgi::keep_all();
        if stop_came {
            crate::note!("oxgate: {} reload {why}", kind.name());
        } else {
            crate::say!("oxgate: {} reload {why}", kind.name());
        }
        for fd in hand
            .listeners
            .iter()
            .map(|s| s.fd)
            .chain(hand.stats.iter().map(|s| s.fd))
        {
            set_cloexec(fd, true);
        }
        set_cloexec(self.sb.raw_fd(), true);
        if let Some(f) = &self.fifo {
            set_cloexec(f.raw_fd(), true);
        }
    }

    /// Workers killed and not reaped yet (a brutal reload's, a harakiri's)
    /// are not handed over: they are reaped here, for a moment at most,
    /// and their scoreboard slots freed, which the new image could not do
    /// (each brutal reload used to lose a generation of slots).
    fn reap_killed(&mut self) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        let mut reaped = Vec::new();
        loop {
            for w in self.sup.workers.iter().filter(|w| w.killed()) {
                let pid = nix::unistd::Pid::from_raw(w.pid);
                if !reaped.contains(&w.pid)
                    && !matches!(
                        waitpid(pid, Some(WaitPidFlag::WNOHANG)),
                        Ok(WaitStatus::StillAlive)
                    )
                {
                    self.sb.release(w.slot);
                    reaped.push(w.pid);
                }
            }
            let left = self.sup.workers.iter().filter(|w| w.killed()).count() > reaped.len();
            if !left || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.sup.workers.retain(|w| !reaped.contains(&w.pid));
    }

    fn render_stats(&self, want: stats::Want) -> String {
        let snap = stats::Snapshot {
            cfg: self.cfg,
            sb: &self.sb,
            workers: self
                .sup
                .workers
                .iter()
                .map(|w| stats::WorkerView {
                    id: w.id,
                    pid: w.pid,
                    slot: w.slot,
                    ready: w.ready,
                    stopping: w.asked(),
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

/// Imports the app (preloading) with TERM, INT and QUIT ending the process
/// meanwhile: an import that hangs (a database connect without a timeout)
/// would otherwise keep the master deaf to them, as it reads them only in
/// its main loop, after the import. (Not a thread watching: a thread's
/// allocator arena stays reserved in the workers, which --limit-as counts.)
/// Only at the first start (`stoppable`): after a reload the old workers
/// serve meanwhile, and a stop is theirs to finish gracefully, after it.
/// The master's signals stay its own: what the app set at import for one
/// of them is undone, and said.
fn load_app_stoppably(cfg: &Config, stoppable: bool) -> Result<apps::Apps, String> {
    let actions = signals::Actions::current();
    signals::LOADING.store(stoppable, std::sync::atomic::Ordering::Release);
    let result = apps::load_app(cfg);
    signals::LOADING.store(false, std::sync::atomic::Ordering::Release);
    let taken = actions.restore_changed();
    if !taken.is_empty() {
        let names: Vec<String> = taken.into_iter().map(signals::name).collect();
        crate::say!(
            "oxgate: the app set its own handling of {} at import; the master's is kept (the app's does not run in the master or the workers)",
            names.join(", ")
        );
    }
    result
}

/// The longest a reload waits for the stats clients it accepted to be
/// answered (the stats server's own limit for one is 3 s; a well-behaved
/// one needs a millisecond).
const STATS_FINISH: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest a reload waits for its configuration check.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The most of what a configuration check says that is kept (its end),
/// to say why it failed, and the lines of it said.
const CHECK_SAID: usize = 16 << 10;
const CHECK_LINES: usize = 20;

/// Runs the command a reload would run, with `--check-config`: what it
/// says is wrong, if it refuses the configuration.
fn check_new_config(activated_sockets: bool) -> Result<(), String> {
    use std::io::Read;
    let (program, arg0, args) = python::relaunch_command();
    let mut check = std::process::Command::new(program);
    if activated_sockets {
        check.env(crate::lifecycle::SYSTEMD_SOCKETS_ENV, "1");
    }
    let mut child = check
        .arg0(arg0)
        .args(args)
        .arg("--check-config")
        .env(process::RELOAD_CHECK_ENV, "1")
        .current_dir(process::start_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run oxgate to check the configuration: {e}"))?;
    // Read as it comes: a check that says more than a pipe holds (a
    // Gunicorn config file that prints) would otherwise wait on the master
    // while it waits for the check.
    let mut err = child.stderr.take().and_then(|err| {
        let fd = std::os::fd::OwnedFd::from(err);
        crate::sys::set_nonblocking(&fd).then(|| std::fs::File::from(fd))
    });
    let mut said = Vec::new();
    let mut drain = |err: &mut Option<std::fs::File>| {
        let mut buf = [0u8; 8192];
        while let Some(e) = err.as_mut() {
            match e.read(&mut buf) {
                Ok(0) => *err = None,
                // The end is what says why (a traceback's last line):
                // the start of a long one is let go of.
                Ok(n) => {
                    said.extend_from_slice(&buf[..n]);
                    if said.len() > 2 * CHECK_SAID {
                        said.drain(..said.len() - CHECK_SAID);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    };
    // The master supervises nothing meanwhile: bounded (an @(exec://...)
    // that hangs, say).
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut fed = Instant::now();
    let status = loop {
        drain(&mut err);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                // systemd's watchdog (WatchdogSec=), fed meanwhile (a
                // no-op without one).
                if fed.elapsed() >= std::time::Duration::from_secs(1) {
                    process::sd_notify("WATCHDOG=1");
                    fed = Instant::now();
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "checking the configuration took over {}s",
                    CHECK_TIMEOUT.as_secs()
                ));
            }
        }
    };
    if status.success() {
        return Ok(());
    }
    drain(&mut err);
    let said = String::from_utf8_lossy(&said);
    let lines: Vec<&str> = said.lines().collect();
    // Its last lines, where an error and a traceback's end are.
    let why = lines[lines.len().saturating_sub(CHECK_LINES)..]
        .iter()
        .filter(|l| !l.contains("warning:"))
        .map(|l| l.trim_start_matches("oxgate: "))
        .collect::<Vec<_>>()
        .join("; ");
    Err(if why.is_empty() {
        format!("the configuration does not check ({status})")
    } else {
        format!("the configuration does not check: {why}")
    })
}
