//! A `--fastcgi-app` pool, as a worker uses it: the roles of spawn-fcgi and
//! php-fpm. Each process has a listening unix socket of its own on fd 0
//! (FCGI_LISTENSOCK_FILENO, the convention php-cgi, Perl's FCGI, Ruby's
//! fcgi and flup follow) and serves one request at a time. A worker takes
//! an idle process's token from the pool's pipe (see `shared`), sends it
//! the request, and gives the token back, so requests wait here for an
//! idle process, not in a backlog behind a busy one.
//!
//! The processes are the master's, shared by every worker: the pool's
//! manager (`manager`) starts and replaces them. The worker that holds a
//! process knows which request it runs, so a request over the timeout gets
//! its process killed (and replaced), and a process that has served
//! `--fastcgi-app-max-requests` is replaced before the next. A process
//! that exits by itself (php-cgi does after 500 requests) keeps its
//! socket, where the next request waits for the process that replaces it,
//! so none fails.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::client::{self, Conn, Failure, Output, Release};
use super::php::PhpCgi;
use super::shared::{self, CAUSE_ASKED, Row, Shared, Token};
use crate::config::ProcessManager;
use crate::proto::cgi_response::Head;
use crate::request::RequestBody;

/// The most times one request is sent (kept connections found closed).
const MAX_ATTEMPTS: usize = 8;

/// What a pool runs, and how many.
pub struct PoolSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The whole environment: nothing of oxgate's own (php-fpm's clear_env).
    pub env: Vec<(OsString, OsString)>,
    pub max_requests: Option<u64>,
    /// What is known of php-cgi, when it is the program.
    pub php: Option<PhpCgi>,
    /// Where the processes run.
    pub cwd: Option<PathBuf>,
    /// What the log calls the pool: its command.
    pub name: Arc<str>,
    pub pm: ProcessManager,
    /// Requests running longer are logged.
    pub slowlog: Option<Duration>,
    /// Idle processes kept ready (dynamic).
    pub spare: (usize, usize),
    pub idle_timeout: Duration,
    /// Its place among the `--fastcgi-app` pools: its figures' place in
    /// `COUNTERS`.
    pub index: usize,
}

impl PoolSpec {
    /// The process started forks the one that serves (php-cgi).
    pub fn prefork(&self) -> bool {
        self.php.as_ref().is_some_and(|p| p.prefork)
    }

    /// What a process's serving children are sent when the pool stops
    /// (`stop_process`): php-cgi's child ends after the request it serves
    /// on SIGTERM; others are killed.
    pub fn stop_signal(&self) -> nix::sys::signal::Signal {
        if self.prefork() {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGKILL
        }
    }
}

/// A pool's figures in one worker, or in its manager (the processes),
/// read by the master from the scoreboard (summed) for the stats and
/// metrics: php-fpm's status page, per pool. Only atomics, as shared
/// memory must be.
#[repr(C)]
#[derive(Default)]
pub struct PoolCounters {
    /// Processes running (busy or idle).
    pub processes: AtomicU64,
    /// Processes serving a request (or being started for one).
    pub busy: AtomicU64,
    /// Requests waiting for an idle process.
    pub waiting: AtomicU64,
    /// The most requests that waited at once (php-fpm's max listen queue).
    pub max_waiting: AtomicU64,
    pub requests: AtomicU64,
    /// Requests that ran past `--fastcgi-app-slowlog`.
    pub slow_requests: AtomicU64,
    /// Requests stopped at `--fastcgi-app-timeout` (their process killed).
    pub timeouts: AtomicU64,
    /// Requests that found every process busy (php-fpm's max children
    /// reached, counted per request).
    pub max_children_reached: AtomicU64,
    pub process_starts: AtomicU64,
    /// Processes that ended unasked (crashed, or exited at their own
    /// request cap, as php-cgi does).
    pub process_exits: AtomicU64,
    /// Processes replaced at `--fastcgi-app-max-requests`.
    pub process_recycles: AtomicU64,
}

impl PoolCounters {
    /// The counters, without the gauges (processes, busy, waiting) that
    /// end with their worker.
    fn counters(&self) -> [&AtomicU64; 7] {
        [
            &self.requests,
            &self.slow_requests,
            &self.timeouts,
            &self.max_children_reached,
            &self.process_starts,
            &self.process_exits,
            &self.process_recycles,
        ]
    }

    /// Adds a finished worker's counters into these (and its high-water
    /// mark, as a high-water mark).
    pub fn absorb(&self, other: &PoolCounters) {
        for (a, b) in self.counters().into_iter().zip(other.counters()) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.max_waiting
            .fetch_max(other.max_waiting.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn clear(&self) {
        for c in self.counters().into_iter().chain([
            &self.processes,
            &self.busy,
            &self.waiting,
            &self.max_waiting,
        ]) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// One less in a gauge, never below zero.
    pub(super) fn decrement(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }
}

/// This process's figures for each pool, by `PoolSpec::index`: set by the
/// worker layer to its scoreboard slot's, and in the manager to the
/// scoreboard's own (pools past its length are not counted).
pub static COUNTERS: OnceLock<&'static [PoolCounters]> = OnceLock::new();

/// A request waiting for an idle process, as long as it waits (a client
/// that leaves meanwhile drops it): counted in the worker's figures and
/// in the pool's (for its manager), at the worker's place.
struct Waiting(Option<&'static PoolCounters>, Option<&'static AtomicU32>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            PoolCounters::decrement(&s.waiting);
        }
        if let Some(w) = self.1 {
            let _ = w.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        }
    }
}

pub struct Pool {
    spec: Arc<PoolSpec>,
    /// Keeps its connections to the processes (FCGI_KEEP_CONN): only when
    /// one worker uses the pool. A kept connection holds its process (it
    /// reads the next request from it), so with more workers each would
    /// hold processes the others wait for.
    keep: bool,
    /// The token pipe on this worker's event loop, made at the first
    /// request (the pool may be built in the master, before the fork).
    tokens: OnceLock<AsyncFd<OwnedFd>>,
    /// This worker's kept connections, by row, with the pid they reach.
    kept: Mutex<Vec<Option<(i32, Conn)>>>,
    /// This worker's requests waiting for a process take turns (first come,
    /// first served): only the one whose turn it is watches the pipe, so a
    /// token put in wakes one request, not every one waiting.
    turn: tokio::sync::Mutex<()>,
    /// This worker's requests waiting (or about to).
    waiting_here: AtomicUsize,
    /// A token this worker gave back straight to its own next request,
    /// without the pipe (`keep`: no other worker uses the pool).
    handed: Mutex<Vec<Token>>,
    handed_in: tokio::sync::Notify,
    /// The idle processes' tokens, kept here rather than in the pipe when
    /// this worker is the pool's only user and the pool is static (the
    /// manager looks in the pipe only for idle ones to stop): a request
    /// takes one, and gives it back, with no system call.
    stash: Option<Mutex<Vec<Token>>>,
    /// The worker is stopping: what it keeps goes back to the pool, for the
    /// worker that replaces it.
    leaving: AtomicBool,
    /// This worker's place among the pool's users.
    user: OnceLock<usize>,
}

/// This process's pid, once it uses a pool (getpid is a system call).
static MY_PID: AtomicI32 = AtomicI32::new(0);

fn my_pid() -> i32 {
    match MY_PID.load(Ordering::Relaxed) {
        0 => std::process::id() as i32,
        pid => pid,
    }
}

/// One of this worker's requests waiting for a process: when the last one
/// leaves (served, or its client gone), a token handed to it goes back in
/// the pipe.
struct WaitingHere<'a>(&'a Pool, &'static Shared);

impl Drop for WaitingHere<'_> {
    fn drop(&mut self) {
        if self.0.waiting_here.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.flush_handed(self.1);
        }
    }
}

/// A process taken for one request: its token. Dropped unreturned (the
/// request was cancelled: its client left), it has the process killed and
/// replaced, as it may run the request for long yet.
struct Lease {
    pool: Arc<Pool>,
    shared: &'static Shared,
    token: Token,
    /// A kept connection to the process, when there is one.
    conn: Option<Conn>,
    returned: bool,
    /// Kills the process at the request's deadline, whether or not the
    /// response is being read (a client that stops reading would hold
    /// the process otherwise).
    watchdog: Option<tokio::task::AbortHandle>,
    /// Logs the request if it runs past `--fastcgi-app-slowlog`.
    slow: Option<tokio::task::AbortHandle>,
    /// Counted busy while it is held.
    busy: Option<&'static PoolCounters>,
}

/// This worker's figures for a pool, once the worker has set them.
pub(super) fn stats_of(index: usize) -> Option<&'static PoolCounters> {
    COUNTERS.get()?.get(index)
}

impl Pool {
    pub fn new(spec: PoolSpec) -> Pool {
        // No kept connection to php-cgi children that share a socket: one
        // at its request cap closes its connection just as a request goes
        // out on it, and a POST cannot be sent again. A new connection for
        // each request is taken by a child that is serving.
        let shared = spec.php.as_ref().is_some_and(|p| p.children_share_a_socket);
        let keep = WORKERS.get().copied().unwrap_or(1) <= 1 && !shared;
        Pool {
            keep,
            tokens: OnceLock::new(),
            kept: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
            waiting_here: AtomicUsize::new(0),
            handed: Mutex::new(Vec::new()),
            handed_in: tokio::sync::Notify::new(),
            stash: (keep && spec.pm == ProcessManager::Static).then(|| Mutex::new(Vec::new())),
            leaving: AtomicBool::new(false),
            user: OnceLock::new(),
            spec: Arc::new(spec),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.spec.name
    }

    fn prefork(&self) -> bool {
        self.spec.prefork()
    }

    fn cap(&self) -> Option<(u64, bool)> {
        let php = self.spec.php.as_ref()?;
        Some((php.cap?, php.cap_is_ours))
    }

    fn stats(&self) -> Option<&'static PoolCounters> {
        stats_of(self.spec.index)
    }

    fn shared(&self) -> Result<&'static Shared, String> {
        shared::get(self.spec.index)
            .map(|s| &**s)
            .ok_or_else(|| "the pool's shared table is missing".to_string())
    }

    /// Its last process could not be started, or died at once.
    pub fn start_failing(&self) -> bool {
        self.shared()
            .is_ok_and(|s| s.header().start_failing.load(Ordering::Acquire) != 0)
    }

    pub fn spec(&self) -> &Arc<PoolSpec> {
        &self.spec
    }

    /// Joins the pool, on the worker's event loop: the worker is a user of
    /// it from now on. Its shared parts, when they exist.
    pub fn start(self: &Arc<Self>) -> Option<&'static Shared> {
        let shared = self.shared().ok()?;
        MY_PID.store(std::process::id() as i32, Ordering::Relaxed);
        match shared.register(my_pid()) {
            Some(i) => {
                let _ = self.user.set(i);
            }
            None => crate::say!(
                "oxgate: FastCGI pool {}: too many workers share it",
                self.spec.name
            ),
        }
        // Asked to stop, the worker may still finish long requests: what it
        // keeps idle (tokens, connections holding their processes) goes
        // back at once, for the worker that replaces it.
        if let Ok(mut stop) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            let pool = self.clone();
            tokio::spawn(async move {
                stop.recv().await;
                pool.leaving.store(true, Ordering::Release);
                pool.give_up_idle(shared);
            });
        }
        Some(shared)
    }

    /// Gives the pool back what this worker keeps idle: its stashed tokens
    /// and its kept connections (each holds its process).
    fn give_up_idle(&self, shared: &Shared) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.clear();
        }
        self.flush_stash(shared);
    }

    fn flush_stash(&self, shared: &Shared) {
        if let Some(stash) = &self.stash {
            give_all(stash, shared);
        }
    }

    /// Whether this worker may keep connections and tokens: it is the
    /// pool's only user (another starts while it is replaced), and is not
    /// stopping.
    fn alone(&self, shared: &Shared) -> bool {
        self.keep && !self.leaving.load(Ordering::Acquire) && shared.alone()
    }

    /// Leaves the pool as the worker ends.
    pub fn clean_up(&self) -> Option<&'static Shared> {
        let shared = self.shared().ok()?;
        self.give_up_idle(shared);
        shared.unregister(my_pid());
        Some(shared)
    }

    fn tokens(&self, shared: &Shared) -> Result<&AsyncFd<OwnedFd>, String> {
        if let Some(t) = self.tokens.get() {
            return Ok(t);
        }
        let watch = |e: std::io::Error| format!("cannot watch the pool's tokens: {e}");
        let fd = shared.tokens_fd().map_err(watch)?;
        // SAFETY: the AsyncFd owns `fd` (a copy of the pipe's read end made
        // for it), so it stays open, the same description, while it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| watch(e.into()))?;
        Ok(self.tokens.get_or_init(|| fd))
    }

    /// The tokens handed to this worker's next requests, back in the pipe:
    /// no request of this worker waits for them any more.
    fn flush_handed(&self, shared: &Shared) {
        give_all(&self.handed, shared);
    }

    /// Gives a token back: straight to this worker's next request when one
    /// waits and no other worker uses the pool; else to the stash, or in
    /// the pipe.
    fn give(&self, shared: &Shared, token: Token) {
        let alone = self.alone(shared);
        if alone && self.waiting_here.load(Ordering::Acquire) > 0 {
            if let Ok(mut handed) = self.handed.lock() {
                handed.push(token);
            }
            self.handed_in.notify_one();
            // The last waiter may have left meanwhile.
            if self.waiting_here.load(Ordering::Acquire) == 0 {
                self.flush_handed(shared);
            }
            return;
        }
        if alone && let Some(mut stash) = self.stash.as_ref().and_then(|s| s.lock().ok()) {
            stash.push(token);
            return;
        }
        shared.give(token);
        if !alone {
            // Another worker uses the pool now: what this one keeps idle
            // would hold processes from it.
            self.give_up_idle(shared);
        }
    }

    /// A token this worker keeps idle: handed to its waiting requests, or
    /// in its stash.
    fn kept_token(&self, shared: &Shared) -> Option<Token> {
        let handed = self.handed.lock().ok().and_then(|mut h| h.pop());
        handed.or_else(|| {
            let mut stash = self.stash.as_ref()?.lock().ok()?;
            std::iter::from_fn(|| stash.pop()).find(|&t| shared.current(t))
        })
    }

    /// Takes an idle process, waiting for one.
    async fn lease(self: &Arc<Self>) -> Result<Lease, String> {
        let shared = self.shared()?;
        let stats = self.stats();
        let tokens = self.tokens(shared)?;
        // At once, when none of this worker's requests waits before it.
        let quick = if self.waiting_here.load(Ordering::Acquire) == 0 {
            let stashed = self.kept_token(shared);
            if stashed.is_some() && !self.alone(shared) {
                self.flush_stash(shared);
            }
            stashed.or_else(|| shared.take().filter(|&t| shared.current(t)))
        } else {
            None
        };
        let mut waiting = None;
        let token = match quick {
            Some(t) => t,
            None => {
                self.waiting_here.fetch_add(1, Ordering::AcqRel);
                let _here = WaitingHere(self, shared);
                // Counted waiting from here, whether or not its turn has
                // come: the stats' queue, and what the manager starts
                // processes for.
                let here = self.user.get().map(|&i| &shared.header().waiting[i]);
                if let Some(w) = here {
                    w.fetch_add(1, Ordering::AcqRel);
                }
                if let Some(s) = stats {
                    // php-fpm's max children reached: every process runs
                    // (not one still to start).
                    if shared.all_running() {
                        s.max_children_reached.fetch_add(1, Ordering::Relaxed);
                    }
                    let n = s.waiting.fetch_add(1, Ordering::Relaxed) + 1;
                    // php-fpm's max listen queue is the pool's: the requests
                    // of every worker waiting at once, not this one's alone
                    // (the stats show the largest any worker saw).
                    let pool_wide = match here {
                        Some(_) => shared.waiting() as u64,
                        None => 0,
                    };
                    s.max_waiting.fetch_max(n.max(pool_wide), Ordering::Relaxed);
                }
                waiting = Some(Waiting(stats, here));
                if self.spec.pm != ProcessManager::Static {
                    shared.ask();
                }
                let _turn = self.turn.lock().await;
                loop {
                    if shared.cannot_start() {
                        return Err(format!(
                            "no process of FastCGI pool {} could be started (see the log)",
                            self.spec.name
                        ));
                    }
                    let taken = match self.kept_token(shared).or_else(|| shared.take()) {
                        Some(t) => Some(t),
                        None => {
                            tokio::select! {
                                _ = self.handed_in.notified() => None,
                                // To look at `cannot_start` again.
                                _ = tokio::time::sleep(Duration::from_millis(250)) => None,
                                ready = tokens.readable() => {
                                    let mut ready = ready.map_err(|e| e.to_string())?;
                                    match ready.try_io(|_| {
                                        shared
                                            .take()
                                            .ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
                                    }) {
                                        Ok(Ok(t)) => Some(t),
                                        _ => None,
                                    }
                                }
                            }
                        }
                    };
                    // A stale token (its row was reset since) is dropped.
                    if let Some(t) = taken
                        && shared.current(t)
                    {
                        break t;
                    }
                }
            }
        };
        drop(waiting);
        let row = shared.row(token.row);
        row.holder.store(my_pid(), Ordering::Release);
        if let Some(s) = stats {
            s.busy.fetch_add(1, Ordering::Relaxed);
        }
        let pid = row.pid.load(Ordering::Acquire);
        let conn = self.keep.then(|| self.kept_conn(token.row, pid)).flatten();
        Ok(Lease {
            pool: self.clone(),
            shared,
            token,
            conn,
            returned: false,
            watchdog: None,
            slow: None,
            busy: stats,
        })
    }

    /// This worker's kept connection to row `row`, if it reaches process
    /// `pid` (one started since is another process).
    fn kept_conn(&self, row: usize, pid: i32) -> Option<Conn> {
        let mut kept = self.kept.lock().ok()?;
        match kept.get_mut(row)?.take() {
            Some((p, conn)) if p == pid => Some(conn),
            _ => None,
        }
    }

    fn keep_conn(&self, row: usize, pid: i32, conn: Conn) {
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() <= row {
                kept.resize_with(row + 1, || None);
            }
            kept[row] = Some((pid, conn));
        }
    }

    /// One request to an idle process: its head, and the body to stream.
    pub async fn call(
        self: &Arc<Self>,
        params: &[(Vec<u8>, Vec<u8>)],
        body: RequestBody,
        timeout: Option<Duration>,
    ) -> Result<(Head, Bytes, Output), Failure> {
        // The script's time starts when a process takes the request, as
        // php-fpm's request_terminate_timeout starts when a child accepts
        // it: a burst queued behind busy processes is not cut short. The
        // wait is bounded all the same: a process holds a request at most
        // that long, and a pool that cannot start one answers 502.
        let records = client::request_records(params, self.keep);
        let method = params
            .iter()
            .find(|(k, _)| k == b"REQUEST_METHOD")
            .map_or(&b""[..], |(_, v)| &v[..]);
        let idempotent = matches!(method, b"GET" | b"HEAD" | b"OPTIONS");
        let again = client::replayable(&body);
        let name = self.spec.name.clone();
        let stats = self.stats();
        let leased = self.lease().await;
        if let Some(s) = stats {
            s.requests.fetch_add(1, Ordering::Relaxed);
        }
        let lease = leased.map_err(Failure::Broken)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let uri = self.spec.slowlog.map(|_| {
            params
                .iter()
                .find(|(k, _)| k == b"REQUEST_URI")
                .map_or_else(String::new, |(_, v)| {
                    String::from_utf8_lossy(v).into_owned()
                })
        });
        // From here the request runs in a task of its own: a client that
        // leaves does not cut its script off mid-way (php-fpm's children
        // run on too), it is given `ABANDONED_GRACE` to end (see `Output`).
        let (left, client_gone) = tokio::sync::oneshot::channel::<()>();
        let run = Exchange {
            lease,
            records,
            body: Some(body),
            again,
            idempotent,
            deadline,
            uri,
            serving: client::serving(&name, params),
            name,
        };
        let task = tokio::spawn(self.clone().run(run, client_gone));
        let answer = task.await;
        drop(left);
        answer.unwrap_or_else(|e| Err(Failure::NoHead(format!("the exchange failed: {e}"))))
    }

    /// The exchange with the leased process, until its response head.
    async fn run(
        self: Arc<Self>,
        run: Exchange,
        client_gone: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(Head, Bytes, Output), Failure> {
        // Nothing is sent on `client_gone`: it ends when the caller drops
        // its end, its client having left.
        let grace = async {
            let _ = client_gone.await;
            tokio::time::sleep(ABANDONED_GRACE).await;
        };
        let Exchange {
            mut lease,
            records,
            mut body,
            again,
            idempotent,
            deadline,
            uri,
            name,
            serving,
        } = run;
        tokio::pin!(grace);
        let stats = self.stats();
        let row: &'static Row = lease.shared.row(lease.token.row);
        let addr = &lease.shared.addrs[lease.token.row];
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A kept connection the process closed while idle (php-cgi's
            // child at its request cap, or a process that ended): the
            // request goes on a new one, which waits in the socket's
            // backlog for the process that takes over.
            if lease.conn.as_mut().is_some_and(Conn::closed) {
                if self.prefork() {
                    child_ended(row, stats);
                }
                lease.conn = None;
            }
            let reused = lease.conn.is_some();
            let conn = match lease.conn.take() {
                Some(c) => c,
                None => match Conn::connect(addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        lease.finish(None, true);
                        return Err(Failure::Connect(e));
                    }
                },
            };
            if let Some(d) = deadline
                && lease.watchdog.is_none()
            {
                let (shared, token) = (lease.shared, lease.token);
                let watchdog = tokio::spawn(async move {
                    tokio::time::sleep_until(d).await;
                    // Marked as `Lease::retire` marks it: the manager
                    // takes the exit for one it asked for (not a crash to
                    // count), and the lease, its token gone, kills no
                    // successor when the response ends.
                    if shared.current(token) {
                        row.cause.store(CAUSE_ASKED, Ordering::Release);
                        row.holder.store(0, Ordering::Relaxed);
                        row.token_out.store(0, Ordering::SeqCst);
                    }
                    kill_process(row.pid.load(Ordering::SeqCst));
                });
                lease.watchdog = Some(watchdog.abort_handle());
            }
            if let Some(after) = self.spec.slowlog
                && lease.slow.is_none()
            {
                let name = name.clone();
                let uri = uri.clone().unwrap_or_default();
                let slow = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(s) = stats {
                        s.slow_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    crate::say!(
                        "oxgate: FastCGI pool {name}: slow request: pid {}, {uri}, running for {}s (--fastcgi-app-slowlog)",
                        row.pid.load(Ordering::Acquire),
                        after.as_secs()
                    );
                });
                lease.slow = Some(slow.abort_handle());
            }
            let this_body = body.take().expect("a body to send");
            let sent_at = Instant::now();
            let exchange = client::exchange_on(conn, &records, this_body, &serving);
            let timed = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, exchange)
                        .await
                        .unwrap_or(Err(Failure::Timeout)),
                    None => exchange.await,
                }
            };
            let exchanged = tokio::select! {
                biased;
                done = timed => done,
                // Nobody waits for it any more, and its grace is over.
                () = &mut grace => {
                    lease.finish(None, true);
                    return Err(Failure::NoHead("its client left".into()));
                }
            };
            // A connection closed before any reply while the process lives
            // lost php-cgi's forked child.
            if let Err(Failure::NoReply(_)) = &exchanged
                && self.prefork()
                && shared::alive(row.pid.load(Ordering::Acquire))
            {
                child_ended(row, stats);
            }
            match exchanged {
                Ok((head, first, conn)) => {
                    let release: Release = Box::new(move |conn, timed_out| {
                        // A response cut short leaves the process mid-way:
                        // it is replaced.
                        let broken = conn.is_none();
                        if timed_out && let Some(s) = stats {
                            s.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        lease.finish(conn, timed_out || broken);
                    });
                    let output = Output::new(conn, serving, deadline, release)
                        .drained_when_abandoned(ABANDONED_GRACE);
                    return Ok((head, first, output));
                }
                // The kept connection closed just as the request went out:
                // sent again on a new one if the process cannot have read it
                // (the write failed), or if sending it twice does no harm:
                // a safe method, and a close that came at once. A process
                // that dies later was running the request (killed, crashed):
                // its script may have done its work, and is not run twice.
                Err(f @ (Failure::Unsent(_) | Failure::NoReply(_)))
                    if reused
                        && again.is_some()
                        && attempt <= MAX_ATTEMPTS
                        && (matches!(f, Failure::Unsent(_))
                            || idempotent && sent_at.elapsed() < CLOSED_AS_SENT) =>
                {
                    body = again.as_ref().and_then(client::replayable);
                }
                Err(e) => {
                    if matches!(e, Failure::Timeout)
                        && let Some(s) = stats
                    {
                        s.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    // Whatever the process was doing, it is replaced.
                    lease.finish(None, true);
                    return Err(e);
                }
            }
        }
    }
}

/// How soon after a request went out on a kept connection the close that
/// lost it came, for the request to be sent again (a safe method only): a
/// process at its request cap (php-cgi's PHP_FCGI_MAX_REQUESTS) closes the
/// connection as it exits, right after its last response, without reading
/// the request. Later, the process was running it.
const CLOSED_AS_SENT: Duration = Duration::from_millis(200);

/// How long a request whose client left may still run, to end as it
/// would have (its output read and dropped) and give its process back.
/// Past it, or past `ABANDONED_OUTPUT` of output, the process is killed
/// and replaced, as the next request would wait behind it. A minute: work
/// that is fired and forgotten on purpose (WordPress's wp-cron, a loopback
/// request with `ignore_user_abort(true)`) runs to its end, as under
/// php-fpm; --fastcgi-app-timeout still bounds it.
const ABANDONED_GRACE: Duration = Duration::from_secs(60);

/// A leased request on its way to its process (`Pool::run`).
struct Exchange {
    lease: Lease,
    records: Vec<u8>,
    body: Option<RequestBody>,
    again: Option<RequestBody>,
    idempotent: bool,
    deadline: Option<Instant>,
    /// REQUEST_URI, for the slow log.
    uri: Option<String>,
    name: Arc<str>,
    /// The name and the request, for what the script writes to stderr.
    serving: Arc<str>,
}

/// Puts every token of a worker's list back in the pipe.
fn give_all(tokens: &Mutex<Vec<Token>>, shared: &Shared) {
    let tokens = tokens
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    for t in tokens {
        shared.give(t);
    }
}

/// php-cgi's forked child ended while its parent lives (php-cgi forks the
/// next itself): counted as the process's exit would be, and the next
/// child counts its requests from none.
fn child_ended(row: &Row, stats: Option<&PoolCounters>) {
    row.served.store(0, Ordering::Relaxed);
    if let Some(s) = stats {
        s.process_exits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Lease {
    fn abort_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(w) = self.slow.take() {
            w.abort();
        }
    }

    fn row(&self) -> &'static Row {
        self.shared.row(self.token.row)
    }

    /// The token back in the pipe, and a kept connection kept.
    fn give_back(&mut self) {
        self.abort_watchdog();
        self.returned = true;
        if let Some(s) = self.busy.take() {
            PoolCounters::decrement(&s.busy);
        }
        let row = self.row();
        if let Some(conn) = self.conn.take() {
            self.pool
                .keep_conn(self.token.row, row.pid.load(Ordering::Acquire), conn);
        }
        self.pool.give(self.shared, self.token);
    }

    /// The process is killed and replaced (by the manager, which puts a
    /// new token in): its token is not given back.
    fn retire(&mut self) {
        self.abort_watchdog();
        self.returned = true;
        self.conn = None;
        if let Some(s) = self.busy.take() {
            PoolCounters::decrement(&s.busy);
        }
        let row = self.row();
        if !self.shared.current(self.token) {
            return;
        }
        // A process that has ended by itself already (it crashed, or
        // exited, mid-request: the exchange broke for that) is not one we
        // asked to end: the manager logs how it ended, as php-fpm logs
        // "exited on signal 11".
        let ended_itself = crate::sys::procfs::is_zombie(row.pid.load(Ordering::Acquire));
        if !ended_itself {
            row.cause.store(CAUSE_ASKED, Ordering::Release);
        }
        row.holder.store(0, Ordering::Relaxed);
        // SeqCst, as `Manager::start` publishes the pid and then reads
        // this: one of the two sees the other's write.
        row.token_out.store(0, Ordering::SeqCst);
        let pid = row.pid.load(Ordering::SeqCst);
        if pid != 0 {
            kill_process(pid);
        } else {
            // No process to end: the manager is told to start one.
            self.shared.ask();
        }
    }

    /// After a request: the process given back with the kept connection
    /// after a whole exchange; killed when asked (a timeout, a broken
    /// exchange) or at `--fastcgi-app-max-requests`.
    fn finish(mut self, conn: Option<Conn>, kill: bool) {
        self.abort_watchdog();
        let stats = self.busy;
        let row = self.row();
        let requests = row.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let served = row.served.fetch_add(1, Ordering::AcqRel) + 1;
        row.last_used_ms.store(shared::now_ms(), Ordering::Relaxed);
        self.conn = if self.pool.alone(self.shared) {
            conn
        } else {
            None
        };
        if let Some((cap, ours)) = self.pool.cap()
            && served >= cap
        {
            // It exits after this request by itself, closing the kept
            // connection: dropped here, so that no request is sent on it
            // meanwhile. The next connects anew, and waits in the socket's
            // backlog for php-cgi's next child, or for the process that
            // replaces this one.
            self.conn = None;
            row.served.store(0, Ordering::Relaxed);
            if self.pool.prefork()
                && !kill
                && let Some(s) = stats
            {
                // php-cgi's child ends at the cap, and php-cgi forks the
                // next: a recycle when the cap is ours, an exit of its own
                // (as without the fork) when it is php-cgi's.
                let counter = if ours {
                    &s.process_recycles
                } else {
                    &s.process_exits
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        let recycle = self.pool.spec.max_requests.is_some_and(|n| requests >= n);
        if recycle
            && !kill
            && let Some(s) = stats
        {
            s.process_recycles.fetch_add(1, Ordering::Relaxed);
        }
        if kill || recycle {
            self.retire();
        } else {
            self.give_back();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.returned {
            // Cut off mid-exchange (its client left): the process may run
            // the request for long yet, and the next would wait behind it.
            // It is replaced instead.
            self.retire();
        }
    }
}

/// Kills a pool process's whole process group, of which it is the leader
/// (`process_group(0)`): only for one that died unbidden, whose forked
/// children (php-cgi's) lost their parent and cannot be told apart from
/// the rest of the group any more.
pub(super) fn sigkill_group(pid: i32) {
    if pid > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// How long a pool process may take to stop on SIGSTOP (it is woken to
/// take it, on a busy machine after others have run).
const HOLD_STILL_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Stops a pool process and the processes it forked to serve (php-cgi's
/// child), and nothing else. The jobs its scripts left running in the
/// background (`exec("convert ... > /dev/null &")`) are in its process
/// group too, and php-fpm, which signals its children one by one, leaves
/// them running; a group kill took them with it.
///
/// php-cgi that forks kills its whole group itself on SIGTERM, so it is
/// not sent one: it is held still (SIGSTOP, so that it forks no child
/// while they are listed), its children are listed, and it is killed; its
/// children are sent `children_signal` (SIGTERM: php-cgi's child ends
/// after the request it serves). Returns them.
pub(super) fn stop_process(
    pid: i32,
    children_signal: nix::sys::signal::Signal,
) -> Vec<StoppedChild> {
    stop_process_within(pid, children_signal, WRAPPED_DEPTH)
}

/// A child `stop_process` signalled: its pid, and the process group it
/// was in then (a pid reused since is in another).
#[derive(Clone, Copy)]
pub(super) struct StoppedChild {
    pid: i32,
    group: i32,
}

impl StoppedChild {
    /// It still runs (in the group it was in: not a pid reused since).
    fn running(self) -> bool {
        crate::sys::procfs::live_group_of(self.pid) == Some(self.group)
    }
}

/// How many processes deep a pool's command may start php-cgi: a wrapper
/// that forks (`timeout`, `runuser`) starts it as a child, and php-cgi
/// that forks then leads a group of its own (its `setsid()` works there).
const WRAPPED_DEPTH: u32 = 3;

fn stop_process_within(
    pid: i32,
    children_signal: nix::sys::signal::Signal,
    depth: u32,
) -> Vec<StoppedChild> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if pid <= 0 || kill(Pid::from_raw(pid), Signal::SIGSTOP).is_err() {
        return Vec::new();
    }
    // kill(2) returns before the signal is taken.
    let deadline = std::time::Instant::now() + HOLD_STILL_WITHIN;
    while !crate::sys::procfs::is_stopped_or_gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    let children = crate::sys::procfs::children_of(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let mut stopped = Vec::new();
    for &child in &children {
        // A child leading a group of its own is a process that serves
        // (php-cgi behind a wrapper that forks): stopped the same way,
        // with its own children, which would serve on orphaned.
        match crate::sys::procfs::live_group_of(child) {
            Some(group) if group == child && depth > 0 => {
                stopped.extend(stop_process_within(child, children_signal, depth - 1));
            }
            Some(group) => {
                let _ = kill(Pid::from_raw(child), children_signal);
                stopped.push(StoppedChild { pid: child, group });
            }
            None => {}
        }
    }
    stopped
}

/// Kills those of a stopped pool process's children (`stop_process`) that
/// are still running.
pub(super) fn kill_children_left(children: &[StoppedChild]) {
    for c in children {
        if c.running() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether any of a stopped pool process's children still runs.
pub(super) fn children_running(children: &[StoppedChild]) -> bool {
    children.iter().any(|c| c.running())
}

/// Stops a pool process and its serving children at once (a timeout, a
/// broken exchange, an idle process, a worker gone).
pub(super) fn kill_process(pid: i32) {
    stop_process(pid, nix::sys::signal::Signal::SIGKILL);
}

/// The number of workers, for whether a worker keeps its connections to
/// the processes: set by the worker layer.
pub static WORKERS: OnceLock<usize> = OnceLock::new();

/// Set when the pools' managers run in this process (no master).
pub static IN_PROCESS: AtomicBool = AtomicBool::new(false);
