//! The master: owns the sockets, forks the workers, watches them, and never
//! runs app code after a fork.
//!
//! Signals (see also README "Signals"):
//! * SIGHUP: graceful reload. The master re-executes itself (so a preloaded
//!   app is imported afresh), keeping its sockets and its workers; it forks
//!   a new generation and stops each old worker once its replacement is
//!   ready. No connection is refused meanwhile: the sockets never close.
//! * SIGRTMIN+1: chain reload, the same one worker at a time.
//! * SIGRTMIN+2: brutal reload: old workers are killed first.
//! * SIGTERM, SIGINT, SIGQUIT: graceful stop (bounded by --reload-mercy);
//!   a second SIGINT or SIGQUIT kills the workers at once.
//! * SIGTTIN / SIGTTOU: one worker more / fewer.
//! * SIGUSR1: reopen the log file (for logrotate).

pub mod scoreboard;
mod signals;
mod stats;
mod child;

use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::listen::{Address, Listener, Protocol, Socket};
use crate::process;
use crate::handlers::python;
use crate::worker::apps::{self, Apps};
use scoreboard::{CORES, Cause, Retire, Scoreboard};

use crate::config::MAX_WORKERS;

/// How often the master looks at its workers (harakiri resolution).
const TICK: Duration = Duration::from_millis(100);
/// A worker that dies sooner than this after its start counts as failing
/// to start; repeated failures back off up to `MAX_BACKOFF` (no fork bomb).
const QUICK_DEATH: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a smart daemon has to write its pidfile after it was started.
const SMART_DAEMON_GRACE: Duration = Duration::from_secs(3);
/// Between the stack-dump signal and the kill, for the dump to be written.
const HARAKIRI_DUMP_TIME: Duration = Duration::from_millis(300);
/// The exit status of a worker that could not load the app.
pub const EXIT_APP_LOAD: i32 = 22;
const INHERIT_ENV: &str = "OXGATE_INHERIT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReloadMode {
    /// All new workers at once, then the old ones stop.
    Graceful,
    /// One worker at a time, each replacement ready before its old one stops.
    Chain,
    /// Old workers are killed at once.
    Brutal,
}

impl ReloadMode {
    fn name(self) -> &'static str {
        match self {
            ReloadMode::Graceful => "graceful",
            ReloadMode::Chain => "chain",
            ReloadMode::Brutal => "brutal",
        }
    }
}

/// What a master image hands to the next one when it re-executes itself.
pub struct Inherited {
    listeners: Vec<(String, RawFd, Protocol)>,
    scoreboard: RawFd,
    workers: Vec<(libc::pid_t, u32, usize)>,
    /// (index in the config's daemon list, pid)
    daemons: Vec<(usize, libc::pid_t)>,
    mode: ReloadMode,
    started: SystemTime,
}

impl Inherited {
    /// Reads (and removes, so the app never sees it) the hand-over.
    pub fn take_from_env() -> Option<Inherited> {
        let text = std::env::var(INHERIT_ENV).ok()?;
        // SAFETY: still single-threaded.
        unsafe { std::env::remove_var(INHERIT_ENV) };
        let mut inh = Inherited {
            listeners: Vec::new(),
            scoreboard: -1,
            workers: Vec::new(),
            daemons: Vec::new(),
            mode: ReloadMode::Graceful,
            started: SystemTime::now(),
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "listen" => {
                    let (fd, rest) = value.split_once(' ')?;
                    let (protocol, addr) = rest.split_once(' ')?;
                    inh.listeners.push((
                        addr.to_string(),
                        fd.parse().ok()?,
                        Protocol::from_name(protocol)?,
                    ));
                }
                "scoreboard" => inh.scoreboard = value.parse().ok()?,
                "worker" => {
                    let mut f = value.split(' ').map(|v| v.parse::<i64>().ok());
                    let (pid, id, slot) = (f.next()??, f.next()??, f.next()??);
                    inh.workers
                        .push((pid as libc::pid_t, id as u32, slot as usize));
                }
                "daemon" => {
                    let (i, pid) = value.split_once(' ')?;
                    inh.daemons.push((i.parse().ok()?, pid.parse().ok()?));
                }
                "mode" => {
                    inh.mode = match value {
                        "chain" => ReloadMode::Chain,
                        "brutal" => ReloadMode::Brutal,
                        _ => ReloadMode::Graceful,
                    }
                }
                "since" => {
                    let ms: u64 = value.parse().ok()?;
                    inh.started = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
                }
                _ => {}
            }
        }
        Some(inh)
    }

    /// Every socket the previous image had, systemd's included.
    pub fn listeners(&self) -> Vec<Socket> {
        self.listeners
            .iter()
            .filter_map(|(addr, fd, protocol)| {
                let addr = crate::listen::parse(addr).ok()?;
                set_cloexec(*fd, true);
                let fd = *fd;
                let l = match &addr {
                    Address::Tcp(_) => {
                        Listener::Tcp(unsafe { std::net::TcpListener::from_raw_fd(fd) })
                    }
                    Address::Unix(p) => Listener::Unix(
                        unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) },
                        Some(p.clone()),
                    ),
                    Address::Abstract(_) => Listener::Unix(
                        unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) },
                        None,
                    ),
                };
                Some(Socket {
                    addr,
                    listener: l,
                    protocol: *protocol,
                })
            })
            .collect()
    }
}

fn set_cloexec(fd: RawFd, on: bool) {
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        libc::fcntl(fd, libc::F_SETFD, flags);
    }
}

/// One worker process as the master sees it.
struct Worker {
    pid: libc::pid_t,
    id: u32,
    slot: usize,
    started: Instant,
    ready: bool,
    /// To be replaced (old generation, max-requests, lifetime, memory).
    replace: bool,
    /// The pid of the worker replacing this one.
    replaced_by: Option<libc::pid_t>,
    /// When it was asked to stop (SIGTERM).
    stop_sent: Option<Instant>,
    killed: bool,
    harakiri_sent: Option<Instant>,
    /// What it was running when harakiri struck, for the exit log line.
    harakiri_info: Option<String>,
}

/// A side process run beside the workers (`--attach-daemon`,
/// `--smart-attach-daemon`).
struct Daemon {
    command: String,
    /// Smart daemons daemonize themselves and write their pid here.
    pidfile: Option<PathBuf>,
    /// The child we started (for smart daemons, only until it detaches).
    pid: Option<libc::pid_t>,
    started: Instant,
    failures: u32,
    next_start: Instant,
}

impl Daemon {
    fn pid_from_file(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = std::fs::read_to_string(self.pidfile.as_ref()?)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (pid > 1 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }
}

enum State {
    Running,
    Stopping { since: Instant },
}

struct Master<'a> {
    cfg: &'a Config,
    listeners: Vec<Socket>,
    /// The preloaded apps (none with --lazy-apps).
    apps: Option<Apps>,
    sb: Arc<Scoreboard>,
    signals: signals::SignalPipe,
    workers: Vec<Worker>,
    daemons: Vec<Daemon>,
    processes: usize,
    state: State,
    /// The reload in progress, if any, and when it began.
    reload: Option<(ReloadMode, Instant)>,
    failures: u32,
    next_spawn: Instant,
    ever_ready: bool,
    /// The app failed to load after a reload: keep the old workers.
    broken: bool,
    fatal: Option<String>,
    touched: Vec<(PathBuf, Option<SystemTime>, ReloadMode)>,
    touched_logreopen: Vec<(PathBuf, Option<SystemTime>)>,
    started: SystemTime,
    /// systemd has been told READY=1.
    notified: bool,
    stats: stats::Stats,
}

pub fn run(
    cfg: &Config,
    listeners: Vec<Socket>,
    inherited: Option<Inherited>,
) -> Result<(), String> {
    let p = &cfg.process;
    // Bound before the app loads: a taken address fails fast.
    let stats = match stats::Stats::bind(cfg) {
        Ok(s) => s,
        Err(e) if inherited.is_some() => {
            crate::say!("oxgate: {e}; serving on without stats");
            stats::Stats::default()
        }
        Err(e) => return Err(e),
    };
    let sb = match &inherited {
        Some(i) if i.scoreboard >= 0 => {
            set_cloexec(i.scoreboard, true);
            Scoreboard::adopt(i.scoreboard)
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
            Err(e) if inherited.is_some() => {
                crate::say!(
                    "oxgate: reload failed, the old workers keep serving: {e}\noxgate: fix the app and reload again"
                );
                broken = true;
                None
            }
            Err(e) => return Err(e),
        }
    };
    if inherited.is_none()
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
            .map(|f| (f.clone(), mtime(f), ReloadMode::Graceful))
            .chain(
                p.touch_chain_reload
                    .iter()
                    .map(|f| (f.clone(), mtime(f), ReloadMode::Chain)),
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

    match &inherited {
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
            m.started = inh.started;
            crate::say!(
                "oxgate: {} reload: master pid {} re-executed, replacing {} worker(s)",
                inh.mode.name(),
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

fn mtime(f: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(f).and_then(|m| m.modified()).ok()
}

impl Master<'_> {
    fn adopt(&mut self, inh: &Inherited) {
        let now = Instant::now();
        for &(pid, id, slot) in &inh.workers {
            self.workers.push(Worker {
                pid,
                id,
                slot,
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
        for &(i, pid) in &inh.daemons {
            if let Some(d) = self.daemons.get_mut(i) {
                d.pid = Some(pid);
            }
        }
        if self.broken {
            return;
        }
        self.count_respawn(Cause::Reload, inh.workers.len() as u64);
        self.reload = Some((inh.mode, now));
        if inh.mode == ReloadMode::Brutal {
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
                    self.kill_all(libc::SIGKILL);
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

    // Guards on these arms would fall through to the arms below them.
    #[allow(clippy::collapsible_match)]
    fn on_signal(&mut self, sig: i32) {
        let stopping = matches!(self.state, State::Stopping { .. });
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT if stopping => {
                if sig != libc::SIGTERM {
                    crate::say!(
                        "oxgate: second {}, killing the workers now",
                        signals::name(sig)
                    );
                    self.kill_all(libc::SIGKILL);
                }
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                crate::say!(
                    "oxgate: {} received, stopping gracefully (requests in flight finish; a second SIGINT stops at once)",
                    signals::name(sig)
                );
                self.state = State::Stopping {
                    since: Instant::now(),
                };
                process::sd_notify("STOPPING=1");
                self.kill_all(libc::SIGTERM);
            }
            _ if stopping => {}
            libc::SIGHUP => self.reexec(ReloadMode::Graceful),
            libc::SIGTTIN => {
                if self.processes < MAX_WORKERS {
                    self.processes += 1;
                    crate::say!("oxgate: SIGTTIN: now {} workers", self.processes);
                }
            }
            libc::SIGTTOU => {
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
                        unsafe { libc::kill(w.pid, libc::SIGTERM) };
                    }
                }
            }
            libc::SIGUSR1 => self.reopen_log(),
            s if s == libc::SIGRTMIN() + 1 => self.reexec(ReloadMode::Chain),
            s if s == libc::SIGRTMIN() + 2 => self.reexec(ReloadMode::Brutal),
            _ => {}
        }
    }

    fn kill_all(&mut self, sig: i32) {
        if matches!(self.state, State::Stopping { .. }) {
            for d in &self.daemons {
                for pid in d.pid.into_iter().chain(d.pid_from_file()) {
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
        let now = Instant::now();
        for w in &mut self.workers {
            if sig == libc::SIGKILL {
                w.killed = true;
            }
            w.stop_sent.get_or_insert(now);
            unsafe { libc::kill(w.pid, sig) };
        }
    }

    /// Re-executes the master binary (new code, new config), handing over
    /// the sockets, the scoreboard and the running workers.
    fn reexec(&mut self, mode: ReloadMode) {
        crate::say!("oxgate: {} reload requested", mode.name());
        process::sd_notify("RELOADING=1");
        if mode == ReloadMode::Brutal {
            self.kill_all(libc::SIGKILL);
        }
        let mut hand = String::new();
        for s in &self.listeners {
            let fd = match &s.listener {
                Listener::Tcp(t) => t.as_raw_fd(),
                Listener::Unix(u, _) => u.as_raw_fd(),
            };
            set_cloexec(fd, false);
            hand.push_str(&format!("listen {fd} {} {}\n", s.protocol.name(), s.addr));
        }
        set_cloexec(self.sb.raw_fd(), false);
        hand.push_str(&format!("scoreboard {}\n", self.sb.raw_fd()));
        for w in self.workers.iter().filter(|w| !w.killed) {
            hand.push_str(&format!("worker {} {} {}\n", w.pid, w.id, w.slot));
        }
        for (i, d) in self.daemons.iter().enumerate() {
            if let Some(pid) = d.pid {
                hand.push_str(&format!("daemon {i} {pid}\n"));
            }
        }
        hand.push_str(&format!("mode {}\n", mode.name()));
        let since = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        hand.push_str(&format!("since {since}\n"));
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(
                std::env::args_os()
                    .next()
                    .unwrap_or_else(|| "oxgate".into()),
            )
            .args(args)
            .env(INHERIT_ENV, hand)
            .exec();
        // Only reached if exec failed: carry on with the old image.
        crate::say!("oxgate: reload failed, cannot re-execute oxgate: {err}");
        for s in &self.listeners {
            let fd = match &s.listener {
                Listener::Tcp(t) => t.as_raw_fd(),
                Listener::Unix(u, _) => u.as_raw_fd(),
            };
            set_cloexec(fd, true);
        }
        set_cloexec(self.sb.raw_fd(), true);
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some(d) = self.daemons.iter_mut().find(|d| d.pid == Some(pid)) {
                d.pid = None;
                let lived = d.started.elapsed();
                let smart = d.pidfile.is_some();
                // A smart daemon's launcher exits 0 once it has detached.
                let expected =
                    matches!(self.state, State::Stopping { .. }) || (smart && status == 0);
                if !expected {
                    d.failures = if lived < QUICK_DEATH {
                        d.failures + 1
                    } else {
                        0
                    };
                    let backoff = if d.failures == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(100 << d.failures.min(7)).min(MAX_BACKOFF)
                    };
                    d.next_start = Instant::now() + backoff;
                    crate::say!(
                        "oxgate: daemon {:?} (pid {pid}) {}; restarting in {:.1}s",
                        d.command,
                        describe_status(status),
                        backoff.as_secs_f64()
                    );
                }
                continue;
            }
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.remove(i);
            self.sb.release(w.slot);
            self.on_exit(w, status);
        }
    }

    fn on_exit(&mut self, w: Worker, status: i32) {
        let how = describe_status(status);
        let lived = w.started.elapsed();
        // Whoever this worker was replacing, or was replaced by, moves on.
        for other in &mut self.workers {
            if other.replaced_by == Some(w.pid) {
                other.replaced_by = None;
            }
        }
        let stopping = matches!(self.state, State::Stopping { .. });
        if w.harakiri_info.is_some() && !stopping {
            self.count_respawn(Cause::Harakiri, 1);
        } else if w.stop_sent.is_none() && !stopping {
            self.count_respawn(Cause::Crash, 1);
        }
        if let Some(info) = &w.harakiri_info {
            crate::say!(
                "oxgate: worker {} (pid {}) {how} by harakiri while running {info}",
                w.id,
                w.pid
            );
        } else if w.stop_sent.is_some() {
            if !matches!(self.state, State::Stopping { .. }) && !w.killed {
                crate::say!("oxgate: worker {} (pid {}) stopped ({how})", w.id, w.pid);
            }
            return;
        } else {
            let doing = self.sb.slot(w.slot).cores[..self.cfg.threads.min(CORES)]
                .iter()
                .filter(|c| c.started_us.load(Ordering::Acquire) != 0)
                .map(|c| c.info())
                .collect::<Vec<_>>();
            let doing = if doing.is_empty() {
                "while idle".to_string()
            } else {
                format!("while running {}", doing.join("; "))
            };
            crate::say!(
                "oxgate: worker {} (pid {}) {how} {doing}, after {:.1}s",
                w.id,
                w.pid,
                lived.as_secs_f64()
            );
        }
        if matches!(self.state, State::Stopping { .. }) {
            return;
        }
        let load_failed = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_APP_LOAD;
        if load_failed && !self.ever_ready {
            self.fatal = Some("the app could not be loaded in the workers (see above)".into());
            self.state = State::Stopping {
                since: Instant::now(),
            };
            self.kill_all(libc::SIGTERM);
            return;
        }
        if lived < QUICK_DEATH || !w.ready {
            self.failures += 1;
            let backoff = Duration::from_millis(100 << self.failures.min(7)).min(MAX_BACKOFF);
            self.next_spawn = Instant::now() + backoff;
            crate::say!(
                "oxgate: worker {} died {:.1}s after it started ({} in a row); next start in {:.1}s",
                w.id,
                lived.as_secs_f64(),
                self.failures,
                backoff.as_secs_f64()
            );
        } else {
            self.failures = 0;
        }
    }

    /// Readiness, recycling and limits.
    fn supervise(&mut self) {
        let p = &self.cfg.process;
        let now_us = crate::sys::clock::now_us();
        for w in &mut self.workers {
            let slot = self.sb.slot(w.slot);
            if !w.ready && slot.ready.load(Ordering::Acquire) != 0 {
                w.ready = true;
                self.ever_ready = true;
                self.failures = 0;
            }
            if w.stop_sent.is_some() {
                if !w.killed
                    && w.stop_sent
                        .is_some_and(|t| t.elapsed() > p.worker_reload_mercy)
                {
                    crate::say!(
                        "oxgate: worker {} (pid {}) still busy after --worker-reload-mercy {}s, killing it",
                        w.id,
                        w.pid,
                        p.worker_reload_mercy.as_secs()
                    );
                    w.killed = true;
                    unsafe { libc::kill(w.pid, libc::SIGKILL) };
                }
                continue;
            }
            // Harakiri: dump the stack first, kill a moment later.
            if let Some(limit) = p.harakiri {
                if let Some(sent) = w.harakiri_sent {
                    if sent.elapsed() > HARAKIRI_DUMP_TIME && !w.killed {
                        w.killed = true;
                        unsafe { libc::kill(w.pid, libc::SIGKILL) };
                    }
                } else if let Some(core) =
                    slot.cores[..self.cfg.threads.min(CORES)].iter().find(|c| {
                        let s = c.started_us.load(Ordering::Acquire);
                        s != 0 && now_us.saturating_sub(s) > limit.as_micros() as u64
                    })
                {
                    let info = core.info();
                    let ran = now_us.saturating_sub(core.started_us.load(Ordering::Acquire));
                    crate::say!(
                        "oxgate: HARAKIRI: worker {} (pid {}) has run {info} for {:.1}s (--harakiri {}s); its Python stack follows, then it is killed",
                        w.id,
                        w.pid,
                        ran as f64 / 1e6,
                        limit.as_secs()
                    );
                    w.harakiri_sent = Some(Instant::now());
                    w.harakiri_info = Some(info);
                    self.sb.header().harakiri.fetch_add(1, Ordering::Relaxed);
                    self.sb
                        .id_stats(w.id)
                        .harakiri
                        .fetch_add(1, Ordering::Relaxed);
                    unsafe { libc::kill(w.pid, libc::SIGUSR2) };
                }
            }
            if w.replace {
                continue;
            }
            let mut why = None;
            let mut cause = Cause::MaxRequests;
            if slot.retire.load(Ordering::Acquire) == Retire::MaxRequests as u32 {
                why = Some(format!(
                    "served {} requests (--max-requests)",
                    slot.counters.requests.load(Ordering::Relaxed)
                ));
            } else if let Some(life) = p.max_worker_lifetime
                && w.started.elapsed() > life
            {
                cause = Cause::Lifetime;
                why = Some(format!(
                    "has run {}s (--max-worker-lifetime)",
                    life.as_secs()
                ));
            } else if p.reload_on_rss.is_some() || p.evil_reload_on_rss.is_some() {
                let rss = process::memory(Some(w.pid)).1;
                if p.evil_reload_on_rss.is_some_and(|l| rss > l) {
                    crate::say!(
                        "oxgate: worker {} (pid {}) uses {} MB (--evil-reload-on-rss), killing it",
                        w.id,
                        w.pid,
                        rss >> 20
                    );
                    w.replace = true;
                    w.killed = true;
                    w.stop_sent = Some(Instant::now());
                    unsafe { libc::kill(w.pid, libc::SIGKILL) };
                    self.sb.header().respawns[Cause::Rss as usize].fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if p.reload_on_rss.is_some_and(|l| rss > l) {
                    cause = Cause::Rss;
                    why = Some(format!("uses {} MB (--reload-on-rss)", rss >> 20));
                }
            }
            if let Some(why) = why {
                self.sb.header().respawns[cause as usize].fetch_add(1, Ordering::Relaxed);
                crate::say!(
                    "oxgate: worker {} (pid {}) {why}, replacing it",
                    w.id,
                    w.pid
                );
                w.replace = true;
            }
        }
    }

    /// Starts replacements and new workers; stops the replaced ones.
    fn schedule(&mut self) {
        if self.broken {
            return;
        }
        let now = Instant::now();
        let chain = matches!(self.reload, Some((ReloadMode::Chain, _)));
        // A replaced worker stops once its replacement is ready.
        let ready: Vec<libc::pid_t> = self
            .workers
            .iter()
            .filter(|w| w.ready)
            .map(|w| w.pid)
            .collect();
        for w in &mut self.workers {
            if w.replace
                && w.stop_sent.is_none()
                && w.replaced_by.is_some_and(|r| ready.contains(&r))
            {
                w.stop_sent = Some(now);
                unsafe { libc::kill(w.pid, libc::SIGTERM) };
            }
        }
        // Replacements: all at once, or one at a time in a chain reload.
        let in_flight = self
            .workers
            .iter()
            .any(|w| w.replace && w.replaced_by.is_some() && !w.killed);
        let waiting: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.replace && w.replaced_by.is_none() && w.stop_sent.is_none()
            })
            .collect();
        for (n, i) in waiting.into_iter().enumerate() {
            if now < self.next_spawn || (chain && (in_flight || n > 0)) {
                break;
            }
            let id = self.workers[i].id;
            if let Some(pid) = self.spawn(id) {
                self.workers[i].replaced_by = Some(pid);
            }
        }
        // Keep --processes workers that are not on their way out.
        let serving = self
            .workers
            .iter()
            .filter(|w| !w.replace && w.stop_sent.is_none())
            .count();
        let to_replace = self
            .workers
            .iter()
            .filter(|w| w.replace && w.replaced_by.is_none() && w.stop_sent.is_none())
            .count();
        let missing = self.processes.saturating_sub(serving + to_replace);
        for _ in 0..missing {
            if now < self.next_spawn {
                break;
            }
            let id = (1..)
                .find(|id| !self.workers.iter().any(|w| w.id == *id && !w.replace))
                .expect("ids are unbounded");
            self.spawn(id);
        }
        // A reload is done when no old worker is left.
        if let Some((mode, since)) = self.reload
            && !self.workers.iter().any(|w| w.replace)
            && self.workers.iter().all(|w| w.ready)
        {
            crate::say!(
                "oxgate: {} reload done in {:.2}s: {} worker(s) serving",
                mode.name(),
                since.elapsed().as_secs_f64(),
                self.workers.len()
            );
            self.reload = None;
        }
        if !self.notified
            && !self.workers.is_empty()
            && self.workers.iter().all(|w| w.ready)
            && self.reload.is_none()
        {
            self.notified = true;
            process::sd_notify(&format!("READY=1\nMAINPID={}", std::process::id()));
        }
    }

    fn count_respawn(&self, cause: Cause, n: u64) {
        self.sb.header().respawns[cause as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn spawn(&mut self, id: u32) -> Option<libc::pid_t> {
        let Some(slot) = self.sb.claim(-1, id) else {
            crate::say!("oxgate: no free scoreboard slot for worker {id}");
            return None;
        };
        self.sb
            .id_stats(id)
            .respawns
            .fetch_add(1, Ordering::Relaxed);
        let master_pid = unsafe { libc::getpid() };
        let pid = if self.apps.is_some() {
            python::fork()
        } else {
            unsafe { libc::fork() }
        };
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
                signal_fds: self.signals.fds(),
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

    /// Starts the attached daemons that are not running.
    fn run_daemons(&mut self) {
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

    /// Reopens the log file here and in every worker (logrotate, SIGUSR1).
    fn reopen_log(&self) {
        if crate::log::file::reopen() {
            for w in &self.workers {
                unsafe { libc::kill(w.pid, libc::SIGUSR1) };
            }
        }
    }

    /// `--log-maxsize` and `--touch-logreopen`.
    fn keep_log(&mut self) {
        let files = &self.cfg.log_files;
        if let Some(max) = files.maxsize
            && let Some(to) = crate::log::file::rotate_if_big(max, files.backupname.as_deref())
        {
            crate::say!(
                "oxgate: log rotated to {} (--log-maxsize {max})",
                to.display()
            );
            for w in &self.workers {
                unsafe { libc::kill(w.pid, libc::SIGUSR1) };
            }
        }
        let mut reopen = false;
        for (path, seen) in &mut self.touched_logreopen {
            let now = mtime(path);
            if now.is_some() && now != *seen {
                *seen = now;
                reopen = true;
            }
        }
        if reopen {
            self.reopen_log();
            crate::say!("oxgate: log reopened (--touch-logreopen)");
        }
    }

    fn check_touched(&mut self) {
        let mut reload = None;
        for (path, seen, mode) in &mut self.touched {
            let now = mtime(path);
            if now.is_some() && now != *seen {
                *seen = now;
                crate::say!("oxgate: {} was touched", path.display());
                reload = Some(*mode);
            }
        }
        if let Some(mode) = reload {
            self.reexec(mode);
        }
    }
}

fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("was killed by signal {sig} ({})", signals::name(sig))
    } else if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else {
        format!("ended (status {status:#x})")
    }
}
