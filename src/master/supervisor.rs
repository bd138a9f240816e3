//! The supervisor's decisions: which worker to start, stop, kill or
//! replace, and when. It makes no system call: it is told what happened (a
//! worker exited, a stop or reload was asked for, time passed and the
//! scoreboard shows this) and acts through [`Effects`], which the master
//! implements with fork and kill (`run.rs`) and the tests with a record.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::scoreboard::Cause;
use crate::lifecycle::{ReloadKind, StopKind};
use crate::request::health::Health;

pub type Pid = i32;

/// A worker that dies sooner than this after its start counts as failing
/// to start; repeated failures back off up to `MAX_BACKOFF` (no fork bomb).
pub const QUICK_DEATH: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Workers that die one after another before any worker was ever ready,
/// after which the app is taken as one that cannot be loaded (some 3 s
/// of back-off: a first start that fails once, say killed as memory ran
/// short, is tried again).
pub const NEVER_READY_STOP: u32 = 5;
/// Between the stack-dump signal and the kill, for the dump to be written.
pub const HARAKIRI_DUMP_TIME: Duration = Duration::from_millis(300);
/// The exit status of a worker that could not load the app.
pub const EXIT_APP_LOAD: i32 = 22;
/// A worker's exit status when a Gunicorn hook that boots it (post_fork,
/// post_worker_init) raised: Gunicorn halts then, and so does the server.
pub const EXIT_APP_STARTUP: i32 = 3;
/// A worker's exit status when the app's ASGI lifespan startup failed (as
/// uvicorn's). Preloaded or not, it runs in each worker and may fail in one
/// alone (a database down a moment): the server stops only if no worker
/// has ever been ready, as uvicorn and Gunicorn stop when their first
/// fails; after that (a reload, a recycle), the worker is started again
/// with back-off while the others serve.
pub const EXIT_LIFESPAN_STARTUP: i32 = 4;
/// A worker's exit status when the app did not load and, with
/// `--py-autoreload`, a file it imports (or the one that failed) has
/// changed since: it is started again at once, as uvicorn's and
/// Gunicorn's reloaders import the app again after an edit, not counted as
/// a failure, and never a reason to stop.
pub const EXIT_APP_EDITED: i32 = 23;

/// The back-off after `failures` quick deaths in a row: 0.2 s, doubling,
/// up to `MAX_BACKOFF`.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 << failures.min(7)).min(MAX_BACKOFF)
}

/// Whether a worker is to be replaced by a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// No: it counts towards --processes.
    No,
    /// Yes (a reload, --max-requests, --max-worker-lifetime, memory), and
    /// no replacement runs yet.
    Wanted,
    /// Yes, and this worker replaces it; it stops once that one is ready.
    By(Pid),
}

/// Whether a worker has been asked to stop, or killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    No,
    /// Sent SIGTERM at `since`: it finishes its requests within
    /// --worker-reload-mercy, then is killed.
    Asked {
        since: Instant,
    },
    /// Over --harakiri: its stack was asked for (SIGUSR2) at `since`; it is
    /// killed `HARAKIRI_DUMP_TIME` later.
    Harakiri {
        since: Instant,
        info: String,
        /// It had been asked to stop before (it is not replaced again).
        asked: bool,
    },
    /// Sent SIGKILL, waiting to be reaped: after harakiri (what it was
    /// running), or after it was asked to stop (`asked`: its end is
    /// expected).
    Killed {
        harakiri: Option<String>,
        asked: bool,
    },
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub pid: Pid,
    pub id: u32,
    pub slot: usize,
    pub started: Instant,
    /// It has said (in the scoreboard) that it accepts connections.
    pub ready: bool,
    /// Ready and alive past `QUICK_DEATH`: it ended a run of failures.
    pub proven: bool,
    pub replacement: Replacement,
    pub stop: Stop,
}

impl Worker {
    /// Asked to stop (SIGTERM), whether or not it was killed since.
    pub fn asked(&self) -> bool {
        matches!(
            self.stop,
            Stop::Asked { .. }
                | Stop::Harakiri { asked: true, .. }
                | Stop::Killed { asked: true, .. }
        )
    }

    pub fn killed(&self) -> bool {
        matches!(self.stop, Stop::Killed { .. })
    }

    /// Counts towards --processes: not being replaced, not asked to stop.
    fn serving(&self) -> bool {
        self.replacement == Replacement::No && !self.asked()
    }

    fn harakiri_info(&self) -> Option<&str> {
        match &self.stop {
            Stop::Harakiri { info, .. } => Some(info),
            Stop::Killed { harakiri, .. } => harakiri.as_deref(),
            _ => None,
        }
    }
}

/// What the scoreboard shows of one worker, read by the master.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub ready: bool,
    /// It reached --max-requests (the worker says so itself).
    pub max_requests_reached: bool,
    pub requests: u64,
}

/// The limits a worker is held to (from the configuration).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub harakiri: Option<Duration>,
    pub worker_reload_mercy: Duration,
    pub reload_mercy: Duration,
    /// `--drain-delay`.
    pub drain_delay: Option<Duration>,
    pub max_worker_lifetime: Option<Duration>,
    pub reload_on_rss: Option<u64>,
    pub evil_reload_on_rss: Option<u64>,
    /// `--reload-on-as`: the address space (virtual size), in bytes.
    pub reload_on_as: Option<u64>,
    /// `--min-worker-lifetime`: a worker whose address space is over the
    /// limit from its start is not replaced more often than this.
    pub min_worker_lifetime: Duration,
    /// Between a harakiri's stack dump and its kill, when longer than
    /// `HARAKIRI_DUMP_TIME`: Gunicorn's worker_abort hook runs in it.
    pub harakiri_grace: Option<Duration>,
}

/// How the supervisor acts on the world.
pub trait Effects {
    /// Forks worker `id`; its pid and scoreboard slot, or `None`.
    fn spawn(&mut self, id: u32) -> Option<(Pid, usize)>;
    fn signal(&mut self, pid: Pid, sig: Signal);
    fn say(&mut self, line: String);
    /// A routine line (a planned replacement, a reload's progress), which
    /// `--log-level warning` leaves out.
    fn note(&mut self, line: String);
    /// Counts respawns for the stats.
    fn respawned(&mut self, cause: Cause, n: u64);
    /// Counts a harakiri of worker `id` for the stats.
    fn harakiri(&mut self, id: u32);
    /// Tells systemd (READY=1…).
    fn notify(&mut self, state: &str);
    /// Read on every tick: kept cheap (no text).
    fn seen(&mut self, w: &Worker) -> Seen;
    /// Its longest-running request: how long, and "GET /x from 1.2.3.4"
    /// (asked only under --harakiri).
    fn longest_request(&mut self, w: &Worker) -> Option<(Duration, String)>;
    /// What it is running now (for the log line when it dies).
    fn running(&mut self, w: &Worker) -> Vec<String>;
    /// A worker's (virtual size, resident memory) in bytes.
    fn memory(&mut self, pid: Pid) -> (u64, u64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterState {
    Running,
    /// A graceful stop with `--drain-delay`: the health check fails while
    /// the workers go on serving, until `until`; then `Stopping`.
    Draining {
        until: Instant,
    },
    Stopping {
        since: Instant,
    },
}

pub struct Supervisor {
    pub workers: Vec<Worker>,
    /// --processes, changed by SIGTTIN/SIGTTOU.
    pub processes: usize,
    pub state: MasterState,
    /// The reload in progress, if any, and when it began.
    pub reload: Option<(ReloadKind, Instant)>,
    /// Quick deaths in a row, and when the next worker may start.
    failures: u32,
    next_spawn: Instant,
    ever_ready: bool,
    /// The app failed to load after a reload: the old workers keep serving.
    pub broken: bool,
    /// Why the master must exit with an error.
    pub fatal: Option<String>,
    /// systemd has been told READY=1.
    notified: bool,
    /// Every worker was serving at once, once (or the workers were taken
    /// over serving, after a reload): the health check may pass.
    ready_once: bool,
    limits: Limits,
}

impl Supervisor {
    pub fn new(processes: usize, limits: Limits, broken: bool, now: Instant) -> Supervisor {
        Supervisor {
            workers: Vec::new(),
            processes,
            state: MasterState::Running,
            reload: None,
            failures: 0,
            next_spawn: now,
            ever_ready: false,
            broken,
            fatal: None,
            notified: false,
            ready_once: false,
            limits,
        }
    }

    /// `--drain-delay` after a stop was asked for: the workers serve on (and
    /// are supervised as usual) while the health check fails.
    pub fn draining(&self) -> bool {
        matches!(self.state, MasterState::Draining { .. })
    }

    /// The workers stop (not only drain): the master waits for them to go.
    pub fn workers_stopping(&self) -> bool {
        matches!(self.state, MasterState::Stopping { .. })
    }

    /// Draining or stopping: no reloads, no added or removed workers.
    pub fn stopping(&self) -> bool {
        matches!(
            self.state,
            MasterState::Stopping { .. } | MasterState::Draining { .. }
        )
    }

    /// What `--health-path` answers now.
    pub fn health(&self) -> Health {
        match self.state {
            MasterState::Draining { .. } | MasterState::Stopping { .. } => Health::Draining,
            MasterState::Running if !self.ready_once => Health::Starting,
            MasterState::Running => {
                // A worker asked to stop still finishes its requests, and
                // its replacement is on the way: only workers that are gone
                // or killed do not count.
                if self.workers.iter().any(|w| w.ready && !w.killed()) {
                    Health::Serving
                } else {
                    Health::NoWorker
                }
            }
        }
    }

    /// The workers a re-executed master takes over from its previous image.
    pub fn adopt(
        &mut self,
        workers: impl IntoIterator<Item = (Pid, u32, usize, bool, bool)>,
        kind: ReloadKind,
        fx: &mut dyn Effects,
        now: Instant,
    ) {
        let mut n = 0;
        let mut workers: Vec<_> = workers.into_iter().collect();
        workers.sort_by_key(|&(_, id, ..)| id);
        for (pid, id, slot, asked, replaced) in workers {
            let (replacement, stop) = if asked || replaced {
                // The previous image's own old worker (a reload during a
                // reload or a recycle), finishing its requests or with its
                // replacement on the way: it leaves, and is not replaced a
                // second time (its replacement, handed over too, is).
                if !asked {
                    fx.signal(pid, Signal::SIGTERM);
                }
                (Replacement::No, Stop::Asked { since: now })
            } else if self.broken {
                (Replacement::No, Stop::No)
            } else if n as usize >= self.processes {
                // More workers than the configuration now asks for (it
                // was edited, or SIGTTIN added some): the surplus stops,
                // as uWSGI and Gunicorn come back from a reload with the
                // configured count.
                if kind != ReloadKind::Brutal {
                    fx.signal(pid, Signal::SIGTERM);
                }
                (Replacement::No, Stop::Asked { since: now })
            } else if kind == ReloadKind::Brutal {
                // Killed by the previous image before it re-executed.
                n += 1;
                let killed = Stop::Killed {
                    harakiri: None,
                    asked: true,
                };
                (Replacement::Wanted, killed)
            } else {
                n += 1;
                (Replacement::Wanted, Stop::No)
            };
            self.workers.push(Worker {
                pid,
                id,
                slot,
                started: now,
                ready: true,
                proven: true,
                replacement,
                stop,
            });
        }
        self.ever_ready = true;
        self.ready_once = true;
        if !self.broken {
            fx.respawned(Cause::Reload, n);
            self.reload = Some((kind, now));
        }
    }

    /// Sends `sig` to every worker: SIGTERM asks them to stop, SIGKILL
    /// kills them.
    pub fn signal_all(&mut self, sig: Signal, fx: &mut dyn Effects, now: Instant) {
        for w in &mut self.workers {
            // One already asked (a reload's old worker, a recycled one)
            // goes on finishing its requests: a second SIGTERM would make
            // it stop at once, cutting responses still going out.
            if sig == Signal::SIGTERM && w.stop != Stop::No {
                continue;
            }
            w.stop = match (&w.stop, sig) {
                (Stop::Killed { harakiri, .. }, _) => Stop::Killed {
                    harakiri: harakiri.clone(),
                    asked: true,
                },
                (Stop::Harakiri { info, .. }, Signal::SIGKILL) => Stop::Killed {
                    harakiri: Some(info.clone()),
                    asked: true,
                },
                (_, Signal::SIGKILL) => Stop::Killed {
                    harakiri: None,
                    asked: true,
                },
                (Stop::No, _) => Stop::Asked { since: now },
                (other, _) => other.clone(),
            };
            fx.signal(w.pid, sig);
        }
    }

    /// A stop of the master.
    pub fn stop(&mut self, kind: StopKind, fx: &mut dyn Effects, now: Instant) {
        match kind {
            StopKind::Graceful => {
                fx.notify("STOPPING=1");
                match self.limits.drain_delay {
                    // Before the first READY=1 no balancer sends here yet.
                    Some(delay) if self.state == MasterState::Running && self.ready_once => {
                        fx.note(format!(
                            "oxgate: draining for {:.1}s (the health check fails; the workers serve on), then stopping",
                            delay.as_secs_f64()
                        ));
                        self.state = MasterState::Draining { until: now + delay };
                    }
                    _ => self.begin_stop(fx, now),
                }
            }
            StopKind::Immediate => {
                // Out of a drain too: no worker is replaced, and the master
                // ends once they are reaped (it respawned them, and waited
                // out the whole drain).
                if !matches!(self.state, MasterState::Stopping { .. }) {
                    self.state = MasterState::Stopping { since: now };
                }
                self.signal_all(Signal::SIGKILL, fx, now);
            }
        }
    }

    /// SIGTTOU: one worker fewer, the newest serving one stops.
    pub fn remove_one(&mut self, fx: &mut dyn Effects, now: Instant) -> bool {
        if self.processes <= 1 {
            return false;
        }
        self.processes -= 1;
        if let Some(w) = self
            .workers
            .iter_mut()
            .filter(|w| w.serving() && w.stop == Stop::No)
            .max_by_key(|w| w.id)
        {
            w.stop = Stop::Asked { since: now };
            fx.signal(w.pid, Signal::SIGTERM);
        }
        true
    }

    /// The workers are told to stop; requests in flight finish.
    fn begin_stop(&mut self, fx: &mut dyn Effects, now: Instant) {
        self.state = MasterState::Stopping { since: now };
        self.signal_all(Signal::SIGTERM, fx, now);
    }

    /// A stopping master is done when every worker is gone; after
    /// --reload-mercy the rest are killed (each tick until they are). A
    /// draining one begins to stop when the delay is over.
    pub fn stop_tick(&mut self, fx: &mut dyn Effects, now: Instant) -> bool {
        if let MasterState::Draining { until } = self.state
            && (now >= until || self.workers.is_empty())
        {
            self.begin_stop(fx, now);
        }
        let since = match self.state {
            MasterState::Running | MasterState::Draining { .. } => return false,
            MasterState::Stopping { since } => since,
        };
        if self.workers.is_empty() {
            return true;
        }
        if now.duration_since(since) > self.limits.reload_mercy {
            fx.say(format!(
                "oxgate: workers still busy after --reload-mercy {}s, killing them",
                self.limits.reload_mercy.as_secs()
            ));
            self.signal_all(Signal::SIGKILL, fx, now);
        }
        false
    }

    /// A worker was reaped: it ended as `exit` says.
    pub fn exited(&mut self, pid: Pid, exit: Exit, fx: &mut dyn Effects, now: Instant) {
        let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let mut w = self.workers.remove(i);
        // Readiness is otherwise read on a tick: a worker that became ready,
        // served and died between two ticks (an app's os._exit(3) on its
        // first request, on a loaded machine) was ready all the same.
        if !w.ready && fx.seen(&w).ready {
            w.ready = true;
            self.ever_ready = true;
        }
        let how = exit.describe();
        let lived = now.duration_since(w.started);
        let running = fx.running(&w);
        // Whoever this worker was replacing, or was replaced by, moves on.
        for other in &mut self.workers {
            if other.replacement == Replacement::By(pid) {
                other.replacement = Replacement::Wanted;
            }
        }
        // A draining master still supervises: only a stop lets workers go.
        let stopping = matches!(self.state, MasterState::Stopping { .. });
        let harakiri = w.harakiri_info().map(str::to_string);
        let asked = w.asked();
        if harakiri.is_some() && !stopping {
            fx.respawned(Cause::Harakiri, 1);
        } else if !asked && !stopping {
            fx.respawned(Cause::Crash, 1);
        }
        if let Some(info) = &harakiri {
            fx.say(format!(
                "oxgate: worker {} (pid {}) {how} by harakiri while running {info}",
                w.id, w.pid
            ));
            if asked {
                return; // it was leaving: no back-off, no replacement
            }
        } else if asked {
            if !stopping && !w.killed() {
                fx.note(format!(
                    "oxgate: worker {} (pid {}) stopped ({how})",
                    w.id, w.pid
                ));
            }
            return;
        } else if exit == Exit::Code(EXIT_APP_EDITED) {
            fx.note(format!(
                "oxgate: worker {} (pid {}): the app's files changed, loading it again (--py-autoreload)",
                w.id, w.pid
            ));
        } else {
            let doing = if !w.ready {
                // Never ready: it died loading the app (--lazy-apps) or
                // starting, not idle.
                "before it was ready (loading or starting the app)".to_string()
            } else if running.is_empty() {
                "while idle".to_string()
            } else {
                format!("while running {}", running.join("; "))
            };
            fx.say(format!(
                "oxgate: worker {} (pid {}) {how} {doing}, after {:.1}s",
                w.id,
                w.pid,
                lived.as_secs_f64()
            ));
        }
        if stopping {
            return;
        }
        if self.broken {
            // No app to fork a replacement from: say so, and once no
            // worker is left, stop with an error rather than sit there
            // serving nothing (a supervisor such as systemd restarts it).
            let left = self.workers.iter().filter(|w| !w.asked()).count();
            fx.say(format!(
                "oxgate: worker {} cannot be replaced: the app failed to load at the last reload (fix it and reload); {left} worker(s) left",
                w.id
            ));
            if left == 0 {
                self.fatal = Some("no worker left, and the app fails to load".into());
                fx.notify("STOPPING=1");
                self.begin_stop(fx, now);
            }
            return;
        }
        if exit == Exit::Code(EXIT_APP_EDITED) {
            self.next_spawn = now;
            return;
        }
        let load_failed = exit == Exit::Code(EXIT_APP_LOAD);
        // These stops have nothing to drain: no worker can serve.
        if load_failed && !self.ever_ready {
            self.fatal = Some("the app could not be loaded in the workers (see above)".into());
            fx.notify("STOPPING=1");
            self.begin_stop(fx, now);
            return;
        }
        // A worker that was ready and exits with 3 is an app's own
        // os._exit(3) mid-request: replaced, as any death.
        if (exit == Exit::Code(EXIT_APP_STARTUP) && !w.ready)
            || (exit == Exit::Code(EXIT_LIFESPAN_STARTUP) && !self.ever_ready)
        {
            self.fatal = Some("the app's startup failed (see above)".into());
            fx.notify("STOPPING=1");
            self.begin_stop(fx, now);
            return;
        }
        if w.ready && !running.is_empty() {
            // Killed by a request (a URL that crashes the app, hit again and
            // again): the app starts well, and its next worker is needed at
            // once, as uWSGI and Gunicorn replace it; a start-up back-off
            // left every worker's share unserved for up to 10 s.
        } else if lived < QUICK_DEATH || !w.ready {
            self.failures += 1;
            // An app that kills every worker that loads it (a segfault in
            // an extension, os._exit at import) cannot be loaded, as one
            // that raises cannot: the server stops, as uvicorn's does,
            // rather than restart workers for ever, looking healthy to
            // Docker or systemd while serving nothing. Not while another
            // worker is still loading it (a large model, the others
            // killed as memory ran short): that one may yet be ready.
            let loading = self.workers.iter().any(|o| !o.ready && !o.asked());
            if !w.ready && !self.ever_ready && !loading && self.failures >= NEVER_READY_STOP {
                fx.say(format!(
                    "oxgate: {} workers in a row died before any was ready: the app cannot be loaded; stopping",
                    self.failures
                ));
                self.fatal = Some("no worker could load the app (see above)".into());
                fx.notify("STOPPING=1");
                self.begin_stop(fx, now);
                return;
            }
            let wait = backoff(self.failures);
            self.next_spawn = now + wait;
            fx.say(format!(
                "oxgate: worker {} died {:.1}s after it started ({} in a row); no worker starts for {:.1}s",
                w.id,
                lived.as_secs_f64(),
                self.failures,
                wait.as_secs_f64()
            ));
        } else {
            self.failures = 0;
        }
    }

    /// Readiness, the limits (mercy, harakiri, recycling), then starting
    /// and stopping workers to keep --processes and finish reloads.
    pub fn tick(&mut self, fx: &mut dyn Effects, now: Instant) {
        self.watch(fx, now);
        self.schedule(fx, now);
    }

    fn watch(&mut self, fx: &mut dyn Effects, now: Instant) {
        let limits = self.limits.clone();
        for w in &mut self.workers {
            let seen = fx.seen(w);
            if !w.ready && seen.ready {
                w.ready = true;
                self.ever_ready = true;
            }
            // Ready is not enough to end a run of failures: a worker that
            // dies a moment after it became ready is as broken (its back-off
            // must grow). One that has served a while is not.
            if w.ready && !w.proven && now.duration_since(w.started) >= QUICK_DEATH {
                w.proven = true;
                self.failures = 0;
            }
            match &w.stop {
                Stop::Killed { .. } => continue,
                Stop::Asked { since } => {
                    if now.duration_since(*since) > limits.worker_reload_mercy {
                        fx.say(format!(
                            "oxgate: worker {} (pid {}) still busy after --worker-reload-mercy {}s, killing it",
                            w.id,
                            w.pid,
                            limits.worker_reload_mercy.as_secs()
                        ));
                        w.stop = Stop::Killed {
                            harakiri: None,
                            asked: true,
                        };
                        fx.signal(w.pid, Signal::SIGKILL);
                        continue;
                    }
                    // Still finishing its requests: harakiri holds for
                    // them as for any (a stuck one would otherwise run
                    // until the mercy is over).
                }
                Stop::Harakiri { since, info, asked } => {
                    let grace = limits.harakiri_grace.unwrap_or(HARAKIRI_DUMP_TIME);
                    if now.duration_since(*since) > grace {
                        w.stop = Stop::Killed {
                            harakiri: Some(info.clone()),
                            asked: *asked,
                        };
                        fx.signal(w.pid, Signal::SIGKILL);
                    }
                    continue;
                }
                Stop::No => {}
            }
            // Harakiri: dump the stack first, kill a moment later.
            if let Some(limit) = limits.harakiri
                && let Some((ran, info)) = fx.longest_request(w).filter(|(ran, _)| *ran > limit)
            {
                // With threads, the kill cuts the worker's other requests
                // too: each is named, as uWSGI names every core's.
                let others: Vec<String> =
                    fx.running(w).into_iter().filter(|r| *r != info).collect();
                fx.say(format!(
                    // uWSGI's words first, which alerts match.
                    "oxgate: *** HARAKIRI ON WORKER {} (pid: {}, try: 1) ***: it has run {info} for {:.1}s (--harakiri {}s); its Python stack follows, then it is killed{}",
                    w.id,
                    w.pid,
                    ran.as_secs_f64(),
                    limit.as_secs(),
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(", cutting too: {}", others.join("; "))
                    }
                ));
                fx.harakiri(w.id);
                let asked = matches!(w.stop, Stop::Asked { .. });
                w.stop = Stop::Harakiri {
                    since: now,
                    info,
                    asked,
                };
                fx.signal(w.pid, Signal::SIGUSR2);
                continue;
            }
            if w.replacement != Replacement::No || matches!(w.stop, Stop::Asked { .. }) {
                continue;
            }
            let mut why = None;
            let mut cause = Cause::MaxRequests;
            // As uWSGI: a worker is not replaced for its request count
            // before it has run --min-worker-lifetime (it serves on
            // meanwhile), so a small --max-requests under load does not
            // fork a worker every few milliseconds.
            if seen.max_requests_reached
                && now.duration_since(w.started) >= limits.min_worker_lifetime
            {
                why = Some(format!(
                    "served {} requests (--max-requests)",
                    seen.requests
                ));
            } else if let Some(life) = limits.max_worker_lifetime
                && now.duration_since(w.started) > life
            {
                cause = Cause::Lifetime;
                why = Some(format!(
                    "has run {}s (--max-worker-lifetime)",
                    life.as_secs()
                ));
            } else if limits.reload_on_rss.is_some()
                || limits.evil_reload_on_rss.is_some()
                || limits.reload_on_as.is_some()
            {
                let (vsz, rss) = fx.memory(w.pid);
                if limits.evil_reload_on_rss.is_some_and(|l| rss > l) {
                    fx.say(format!(
                        "oxgate: worker {} (pid {}) uses {} MB (--evil-reload-on-rss), killing it",
                        w.id,
                        w.pid,
                        rss >> 20
                    ));
                    w.replacement = Replacement::Wanted;
                    w.stop = Stop::Killed {
                        harakiri: None,
                        asked: true,
                    };
                    fx.signal(w.pid, Signal::SIGKILL);
                    fx.respawned(Cause::Rss, 1);
                    continue;
                }
                // As uWSGI, which looks after each request: a worker that
                // has served none is not replaced (one that starts over the
                // limit would be replaced without end).
                if limits.reload_on_rss.is_some_and(|l| rss > l) && w.ready && seen.requests > 0 {
                    cause = Cause::Rss;
                    why = Some(format!("uses {} MB (--reload-on-rss)", rss >> 20));
                } else if limits.reload_on_as.is_some_and(|l| vsz >= l)
                    && w.ready
                    && now.duration_since(w.started) >= limits.min_worker_lifetime
                {
                    // Counted with the resident-memory replacements: both
                    // are a memory limit.
                    cause = Cause::Rss;
                    why = Some(format!(
                        "has an address space of {} MB (--reload-on-as)",
                        vsz >> 20
                    ));
                }
            }
            if let Some(why) = why {
                fx.respawned(cause, 1);
                fx.note(format!(
                    "oxgate: worker {} (pid {}) {why}, replacing it",
                    w.id, w.pid
                ));
                w.replacement = Replacement::Wanted;
            }
        }
    }

    /// Starts replacements and new workers; stops the replaced ones.
    fn schedule(&mut self, fx: &mut dyn Effects, now: Instant) {
        if self.broken {
            return;
        }
        let chain = matches!(self.reload, Some((ReloadKind::Chain, _)));
        // A replaced worker stops once its replacement is ready.
        let ready: Vec<Pid> = self
            .workers
            .iter()
            .filter(|w| w.ready)
            .map(|w| w.pid)
            .collect();
        for w in &mut self.workers {
            if let Replacement::By(by) = w.replacement
                && w.stop == Stop::No
                && ready.contains(&by)
            {
                w.stop = Stop::Asked { since: now };
                fx.signal(w.pid, Signal::SIGTERM);
            }
        }
        // Replacements: all at once, or one at a time in a chain reload.
        let in_flight = self
            .workers
            .iter()
            .any(|w| matches!(w.replacement, Replacement::By(_)) && !w.killed());
        let waiting: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.replacement == Replacement::Wanted && !w.asked()
            })
            .collect();
        for (n, i) in waiting.into_iter().enumerate() {
            if now < self.next_spawn || (chain && (in_flight || n > 0)) {
                break;
            }
            let id = self.workers[i].id;
            if let Some(pid) = self.start(id, fx, now) {
                self.workers[i].replacement = Replacement::By(pid);
            }
        }
        // Keep --processes workers that are not on their way out.
        let serving = self.workers.iter().filter(|w| w.serving()).count();
        let to_replace = self
            .workers
            .iter()
            .filter(|w| w.replacement == Replacement::Wanted && !w.asked())
            .count();
        let missing = self.processes.saturating_sub(serving + to_replace);
        for _ in 0..missing {
            if now < self.next_spawn {
                break;
            }
            let id = (1..)
                .find(|id| {
                    !self
                        .workers
                        .iter()
                        .any(|w| w.id == *id && w.replacement == Replacement::No)
                })
                .expect("ids are unbounded");
            self.start(id, fx, now);
        }
        // A reload is done when no old worker is left.
        if let Some((kind, since)) = self.reload
            && self
                .workers
                .iter()
                .all(|w| w.replacement == Replacement::No)
            && self.workers.iter().all(|w| w.ready)
        {
            fx.note(format!(
                "oxgate: {} reload done in {:.2}s: {} worker(s) serving",
                kind.name(),
                now.duration_since(since).as_secs_f64(),
                self.workers.len()
            ));
            self.reload = None;
        }
        if !self.notified
            && !self.workers.is_empty()
            && self.workers.iter().all(|w| w.ready)
            && self.reload.is_none()
        {
            self.notified = true;
            self.ready_once = true;
            fx.notify("READY=1");
        }
    }

    fn start(&mut self, id: u32, fx: &mut dyn Effects, now: Instant) -> Option<Pid> {
        let (pid, slot) = fx.spawn(id)?;
        self.workers.push(Worker {
            pid,
            id,
            slot,
            started: now,
            ready: false,
            proven: false,
            replacement: Replacement::No,
            stop: Stop::No,
        });
        Some(pid)
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// This signal killed it.
    Signal(i32),
}

impl Exit {
    /// "exited with status 1", "was killed by signal 9 (SIGKILL)"…
    pub fn describe(self) -> String {
        match self {
            Exit::Code(code) => format!("exited with status {code}"),
            Exit::Signal(sig) => {
                format!("was killed by signal {sig} ({})", super::signals::name(sig))
            }
        }
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
