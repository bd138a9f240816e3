//! A worker's life after the fork: reset what the master set up, load the
//! app if it was not preloaded, serve until asked to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;

use bytes::Bytes;
use tokio::signal::unix::SignalKind;

use super::scoreboard::{CORES, Retire, Scoreboard, http_version_of};
use super::signals::SignalPipe;
use super::{EXIT_APP_EDITED, EXIT_APP_LOAD, EXIT_APP_STARTUP, EXIT_LIFESPAN_STARTUP};
use crate::config::Config;
use crate::handlers::python;
use crate::listen::Protocol;
use crate::listen::{Listener, Socket};
use crate::process;
use crate::request::{Outcome, RequestObserver, Var, VarName};
use crate::worker::apps::{self, Apps};
use crate::worker::reqlog::{Counts, RequestLog};
use crate::worker::serve;

pub struct Setup<'a> {
    pub cfg: &'a Config,
    pub listeners: &'a [Socket],
    pub apps: Option<Apps>,
    pub sb: Arc<Scoreboard>,
    pub slot: usize,
    pub id: u32,
    /// Gunicorn's `worker.age`, for its hooks.
    pub age: u64,
    pub master_pid: libc::pid_t,
    /// The master's signal pipe, released in the child.
    pub signals: &'a SignalPipe,
    /// The master's stats sockets, closed in the child.
    pub stats_fds: &'a [std::os::fd::RawFd],
}

pub fn run(s: Setup<'_>) -> ! {
    process::mark_worker();
    if let Some(title) = s.cfg.process.titles.worker(s.id) {
        crate::sys::proctitle::set(&title);
    }
    // First: every thread the worker starts from here on (the output
    // reader, the runtime, the app's) inherits the policy.
    if s.cfg.process.sched_batch {
        process::sched_batch_or_say(&format!("worker {}", s.id));
    }
    // What the app writes on stdout and stderr goes to the loggers, when
    // there are any (uWSGI's log master).
    if let Err(e) = crate::log::route::capture_output() {
        crate::say!("oxgate: worker {}: {e}", s.id);
    }
    s.signals.release_in_child();
    for &fd in s.stats_fds {
        // The master's `Stats` in this process's memory is not dropped (a
        // worker ends with _exit), so its sockets are let go of here.
        crate::sys::void_fd(fd);
    }
    // A stop sent from here on is remembered (the serving loop looks at
    // it first), so the signals can be unblocked now: the app, loaded
    // below with --lazy-apps, and what it starts must not inherit them
    // blocked.
    crate::sys::signals::count_stops();
    // Before the signals are unblocked: a reopen the master passes on
    // while the app is still loading is not lost.
    crate::log::file::install_reopen_handler(libc::SIGUSR1);
    crate::sys::signals::unblock_all();
    // The master coordinates stops: a Ctrl-C reaches the whole process
    // group, but a worker stops only when its master says so (SIGTERM,
    // gracefully; or, with --quick-stop-on-int, the SIGQUIT the master
    // passes on). So these are caught, and only noted (the note is what
    // worker_int reads). Caught rather than
    // ignored: exec resets a caught signal to its default, but keeps an
    // ignored one ignored, and CGI scripts and the app's subprocesses must
    // start with the defaults. (A handler of their own would also cost
    // every CGI spawn its fast path: posix_spawn instead of fork.)
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        let _ = signal_hook::flag::register(sig, INTERRUPTED.clone());
    }
    // SIGTSTP, which the master ignores (and so this fork with it), is
    // caught for the same reason: a CGI script gets its default.
    for sig in [libc::SIGHUP, libc::SIGTSTP] {
        let _ = signal_hook::flag::register(sig, Arc::new(AtomicBool::new(false)));
    }
    // A child the app forks and lets return into the server exits.
    crate::sys::forked::watch();
    // Die with the master; and if it is already gone, do not start.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != s.master_pid {
        exit_now(1);
    }
    let p = &s.cfg.process;
    // Gunicorn's worker hooks, in a worker (before the app loads, after it
    // has, and on the way out).
    let hook = |name: &str| {
        let cx = python::HookContext {
            worker_pid: Some(std::process::id() as i32),
            age: s.age,
            num_workers: p.processes,
            nworkers: None,
        };
        match name {
            "worker_exit" => worker_exit_once(cx),
            _ => python::call_gunicorn_hook(name, cx),
        }
    };
    // A worker whose post_fork or post_worker_init raises failed to boot:
    // Gunicorn stops the server then, and so does this exit status.
    if !hook("post_fork") {
        hook("worker_exit");
        exit_now(EXIT_APP_STARTUP);
    }
    if let Some(limit) = p.limit_as {
        // --limit-as bounds the app: the address space oxgate reserves for
        // itself, unused until needed, is not counted in it (uWSGI has no
        // such reservations, and a limit that fit an app under uWSGI left
        // it no room here). The sendfile range is made now, under no limit.
        if let Err(e) = crate::frontend::http::reserve_sendfile_placeholder() {
            crate::say!("oxgate: worker {}: cannot reserve address space: {e}", s.id);
            exit_now(1);
        }
        let own = crate::sys::heap::arena_reserve_bytes()
            + super::scoreboard::MAPPED_SIZE as u64
            + crate::frontend::http::SENDFILE_PLACEHOLDER_SIZE as u64;
        let limit = limit.saturating_add(own);
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit);
    }
    let apps = match s.apps {
        Some(h) => h,
        None => match apps::load_app(s.cfg) {
            Ok(h) => h,
            Err(e) => {
                crate::say!("oxgate: worker {}: {e}", s.id);
                if let Some(every) = p.py_autoreload {
                    // As uvicorn's and Gunicorn's --reload: an app that
                    // does not load (a typo saved) waits for the edit that
                    // fixes it, rather than stopping the server or being
                    // started again and again with its traceback.
                    crate::note!(
                        "oxgate: worker {}: waiting for a change to the app's files (--py-autoreload)",
                        s.id
                    );
                    wait_for_an_edit(every);
                    hook("worker_exit");
                    exit_now(EXIT_APP_EDITED);
                }
                // Gunicorn calls worker_exit however the worker ends.
                hook("worker_exit");
                exit_now(EXIT_APP_LOAD);
            }
        },
    };
    // post_worker_init before an ASGI app's lifespan startup, as Gunicorn's
    // UvicornWorker calls it before its server starts: what the hook sets
    // up (instrumentation) sees the app's startup.
    if !hook("post_worker_init") {
        hook("worker_exit");
        exit_now(EXIT_APP_STARTUP);
    }
    if let Err(e) = apps.start(Some(s.id)) {
        crate::say!("oxgate: worker {}: {e}", s.id);
        hook("worker_exit");
        // The master stops if no worker has been ready yet; after that,
        // this worker is tried again and the others serve on.
        exit_now(EXIT_LIFESPAN_STARTUP);
    }
    python::install_stack_dump(libc::SIGUSR2);
    let hook_cx = python::HookContext {
        worker_pid: Some(std::process::id() as i32),
        age: s.age,
        num_workers: p.processes,
        nworkers: None,
    };
    call_hooks_on_signals(hook_cx, p.quick_stop_on_int);
    if let Some(every) = p.py_autoreload
        && s.id == 1
        && apps.python.is_some()
    {
        watch_modules(every, s.master_pid);
    }
    // The scoreboard outlives every connection: the worker holds it until
    // it exits, so one more reference held for good costs nothing.
    let sb: &'static Scoreboard = Box::leak(Box::new(s.sb.clone()));
    crate::frontend::tls::count_failed_handshakes_in(
        &sb.slot(s.slot).counters.tls_handshake_failures,
    );
    let _ = crate::handlers::fastcgi::COUNTERS.set(&sb.slot(s.slot).pools[..]);
    let _ = crate::worker::conn_limit::REACHED_COUNTER
        .set(&sb.slot(s.slot).counters.max_connections_reached);
    let _ =
        crate::frontend::http::REFUSED_STREAMS.set(&sb.slot(s.slot).counters.http2_streams_refused);
    apps.set_observer(Arc::new(SlotObserver {
        sb: s.sb.clone(),
        slot: s.slot,
        max_requests: p
            .max_requests
            // uWSGI's (id - 1) · delta: worker 1 stops at N.
            .map(|n| {
                n + u64::from(s.id.saturating_sub(1)) * p.max_requests_delta
                    + jitter(p.max_requests_jitter)
            }),
        log: s
            .cfg
            .log
            .active()
            .then(|| RequestLog::new(s.cfg.log.clone(), apps.cores(), s.id)),
    }));
    let listeners: Vec<Socket> = s
        .listeners
        .iter()
        .filter_map(|sock| {
            let listener = match &sock.listener {
                Listener::Tcp(t) => Listener::Tcp(t.try_clone().ok()?),
                Listener::Unix(u, p) => Listener::Unix(u.try_clone().ok()?, p.clone()),
            };
            Some(Socket {
                addr: sock.addr.clone(),
                listener,
                protocol: sock.protocol,
                activated: sock.activated,
            })
        })
        .collect();
    // The master's copies, in this process's memory, are let go of: the
    // serving loop closes its own at a stop, and with these held too the
    // socket stayed open until the worker's last request was done, so a
    // connection made meanwhile waited in a backlog no one accepted from,
    // then was reset, instead of being refused at once (a balancer or
    // nginx then tries another server).
    for sock in s.listeners {
        crate::sys::void_fd(sock.listener.raw_fd());
    }
    // The stop must be over when the master kills the worker: at
    // --reload-mercy when the master stops, else (a reload, a recycle) at
    // --worker-reload-mercy; the master says which in the scoreboard before
    // it signals. An ASGI app's shutdown (its requests' coroutines ending,
    // then the lifespan shutdown) gets the last part of it, so that a
    // request held open to the end (an event stream) does not leave it
    // none.
    let asgi = apps.asgi.is_some();
    let (worker_reload_mercy, reload_mercy) = (p.worker_reload_mercy, p.reload_mercy);
    let stopping_sb = s.sb.clone();
    let stop_times = move || {
        let master_stopping = stopping_sb.header().master_stopping.load(Ordering::Acquire) == 1;
        let budget = if master_stopping {
            reload_mercy
        } else {
            worker_reload_mercy
        };
        let reserve = if asgi {
            crate::config::asgi_shutdown_reserve(budget)
        } else {
            Duration::ZERO
        };
        serve::StopTimes {
            mercy: budget - reserve,
            budget,
        }
    };
    let sb = s.sb.clone();
    let slot = s.slot;
    let result = serve::runtime().and_then(|rt| {
        rt.block_on(async {
            apps.on_runtime();
            if s.cfg.process.reaper {
                tokio::spawn(crate::worker::reaper::run());
            }
            serve::serve(
                listeners,
                apps.front_handler(s.cfg, s.sb.clone()),
                serve::front_ends(s.cfg),
                &[(SignalKind::terminate(), "SIGTERM")],
                stop_times,
                || {
                    sb.slot(slot).ready.store(1, Ordering::Release);
                    super::wake::poke();
                },
                || apps.going_away(),
            )
            .await
        })
    });
    // The runtime is gone: what its last tasks left for after their
    // writes (a WSGI result's close(), the request's log line) runs now.
    crate::request::after_write::finish();
    apps.stop();
    crate::handlers::cgi::kill_running_scripts();
    if INTERRUPTED.load(Ordering::Relaxed) {
        // The hook's thread may not have had its turn before the stop.
        worker_int_once(hook_cx);
    }
    hook("worker_exit");
    if let Err(e) = result {
        crate::say!("oxgate: worker {}: {e}", s.id);
        exit_now(1);
    }
    python::run_atexit(s.cfg.process.reload_mercy);
    exit_now(0);
}

/// Gunicorn's `worker_int` (on SIGINT or SIGQUIT: a Ctrl-C, or the
/// master's stop on one) and `worker_abort` (on the master's harakiri
/// notice, SIGUSR2, after the stack dump: Gunicorn's SIGABRT), when the
/// config file defines them. They run on a thread of their own, since the
/// app's may be stuck. The stop itself stays the master's, but for
/// `--quick-stop-on-int`: then SIGINT and SIGQUIT end the worker at once,
/// after `worker_int` and `worker_exit`, as Gunicorn's worker exits.
fn call_hooks_on_signals(cx: python::HookContext, quick_stop: bool) {
    let mut wanted = Vec::new();
    if quick_stop || python::has_gunicorn_hook("worker_int") {
        wanted.extend([libc::SIGINT, libc::SIGQUIT]);
    }
    if python::has_gunicorn_hook("worker_abort") {
        wanted.push(libc::SIGUSR2);
    }
    if wanted.is_empty() {
        return;
    }
    let mut signals = match signal_hook::iterator::Signals::new(&wanted) {
        Ok(s) => s,
        Err(e) => {
            crate::say!("oxgate: cannot watch the signals of worker_int and worker_abort: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == libc::SIGUSR2 {
                python::call_gunicorn_hook("worker_abort", cx);
            } else {
                worker_int_once(cx);
                if quick_stop {
                    worker_exit_once(cx);
                    exit_now(0);
                }
            }
        }
    });
}

/// A SIGINT or SIGQUIT reached this worker (a worker ignores them
/// otherwise: the master coordinates stops).
static INTERRUPTED: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Calls `worker_int` the first time only: a Ctrl-C reaches the worker and
/// its master both, and the master passes its stop on; Gunicorn's worker,
/// exiting on the first, calls it once.
fn worker_int_once(cx: python::HookContext) {
    static CALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    call_once(&CALLED, "worker_int", cx);
}

/// Calls `worker_exit` the first time only, as Gunicorn's worker, which
/// exits once: a quick stop's thread and the end of `run` may both come to
/// it (the quick stop exits while it holds the lock).
fn worker_exit_once(cx: python::HookContext) -> bool {
    static CALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    call_once(&CALLED, "worker_exit", cx)
}

/// Calls hook `name` unless `called` says it was; the lock makes a worker
/// on its way out wait for a call under way.
fn call_once(called: &std::sync::Mutex<bool>, name: &str, cx: python::HookContext) -> bool {
    let mut called = called.lock().unwrap_or_else(|e| e.into_inner());
    if *called {
        return true;
    }
    *called = true;
    python::call_gunicorn_hook(name, cx)
}

/// Ends the worker at once: a forked child must not run the exit handlers
/// it inherited from the master (atexit, Rust's and C's stdio flushing),
/// which belong to the master's state.
fn exit_now(code: i32) -> ! {
    crate::log::route::end_capture();
    // SAFETY: _exit ends the process without touching shared state; it is
    // async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// Returns once a file that `watched_files` names changes, appears or
/// goes: polled every `every`, as uWSGI's --py-autoreload polls.
fn wait_for_an_edit(every: std::time::Duration) {
    let before = python::watched_files();
    while python::watched_files() == before {
        std::thread::sleep(every);
    }
}

/// `--py-autoreload`: one worker watches the loaded modules' files and asks
/// the master for a graceful reload when one changes.
fn watch_modules(every: std::time::Duration, master: libc::pid_t) {
    std::thread::spawn(move || {
        let mut seen = python::watched_files();
        loop {
            std::thread::sleep(every);
            for (path, mtime) in python::watched_files() {
                match seen.insert(path.clone(), mtime) {
                    Some(before) if before != mtime => {
                        crate::note!("oxgate: {path} changed, reloading (--py-autoreload)");
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(master),
                            Signal::SIGHUP,
                        );
                        // Watching on: a reload that fails (the edit did
                        // not import) keeps this worker serving, and the
                        // fix, saved next, must reload too.
                    }
                    _ => {}
                }
            }
        }
    });
}

/// Writes each request's start and end into the worker's scoreboard slot,
/// and the request log.
struct SlotObserver {
    sb: Arc<Scoreboard>,
    slot: usize,
    max_requests: Option<u64>,
    log: Option<RequestLog>,
}

impl RequestObserver for SlotObserver {
    fn started(&self, core: usize, vars: &[(VarName, Bytes)], protocol: Protocol) {
        if let Some(log) = &self.log {
            log.started(core, vars, protocol);
        }
        // One pass over the variables for the four the scoreboard shows,
        // and the one it counts by when the request ends.
        let (mut method, mut uri, mut path, mut addr) = (&b""[..], &b""[..], &b""[..], &b""[..]);
        let mut version = 0;
        for (name, value) in vars {
            match name {
                VarName::Known(Var::REQUEST_METHOD) => method = value,
                VarName::Known(Var::REQUEST_URI) => uri = value,
                VarName::Known(Var::PATH_INFO) => path = value,
                VarName::Known(Var::REMOTE_ADDR) => addr = value,
                VarName::Known(Var::SERVER_PROTOCOL) => version = http_version_of(value),
                _ => {}
            }
        }
        let uri = if uri.is_empty() { path } else { uri };
        let c = &self.sb.slot(self.slot).cores[core.min(CORES - 1)];
        c.http_version.store(version, Ordering::Relaxed);
        c.begin(&[method, b" ", uri, b" from ", addr]);
    }

    fn answered(&self, vars: &[(VarName, Bytes)], o: &Outcome, elapsed_us: u64) {
        let slot = self.sb.slot(self.slot);
        if let Some((_, v)) = vars
            .iter()
            .find(|(name, _)| *name == VarName::Known(Var::SERVER_PROTOCOL))
        {
            slot.counters.count_http_version(http_version_of(v));
        }
        let counts = self.count(o, elapsed_us, true);
        if let Some(log) = &self.log {
            log.answered(vars, o, elapsed_us, counts);
        }
        self.count_towards_max_requests(counts.worker);
    }

    fn finished(&self, core: usize, o: &Outcome) {
        let slot = self.sb.slot(self.slot);
        let c = &slot.cores[core.min(CORES - 1)];
        let started = c.started_us.load(Ordering::Relaxed);
        let rt = crate::sys::clock::now_us().saturating_sub(started);
        slot.counters
            .count_http_version(c.http_version.load(Ordering::Relaxed));
        c.end();
        // A core another request has ended since (a core index past the
        // scoreboard's): then the time is not known.
        let counts = self.count(o, rt, started != 0);
        let avg = slot.avg_rt.load(Ordering::Relaxed);
        slot.avg_rt.store(
            if avg == 0 { rt } else { (avg + rt) / 2 },
            Ordering::Relaxed,
        );
        if let Some(log) = &self.log {
            log.finished(core, o, counts);
        }
        self.count_towards_max_requests(counts.worker);
    }
}

impl SlotObserver {
    /// What every request adds to the figures, however it was served,
    /// `rt` µs after it came (when that is known, for StatsD): its place
    /// among the worker's and the server's requests.
    fn count(&self, o: &Outcome, rt: u64, rt_known: bool) -> Counts {
        let slot = self.sb.slot(self.slot);
        let worker = slot.counters.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let total = self.sb.header().requests.fetch_add(1, Ordering::Relaxed) + 1;
        if o.failed {
            slot.counters.exceptions.fetch_add(1, Ordering::Relaxed);
            crate::log::statsd::log_counter("exception");
        }
        crate::log::statsd::request(o.status, rt_known.then_some(rt));
        slot.counters.record(
            o.protocol as usize,
            o.handler,
            o.status,
            o.header_bytes + o.body_bytes,
            rt,
        );
        Counts { worker, total }
    }

    /// `--max-requests`, whatever served the request (Python, a FastCGI
    /// pool, CGI, static files): the worker asks to be replaced.
    fn count_towards_max_requests(&self, n: u64) {
        if self.max_requests.is_some_and(|m| n >= m) {
            let retire = &self.sb.slot(self.slot).retire;
            if retire.swap(Retire::MaxRequests as u32, Ordering::AcqRel) == 0 {
                super::wake::poke();
            }
        }
    }
}

/// A random 0..=max for this worker (Gunicorn's `max_requests_jitter`). The
/// hasher's keys come from the OS once per process image, and workers share
/// them through fork, so the pid is what makes each worker's draw its own.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % (max + 1)
}
