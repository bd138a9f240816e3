//! A supervised pool of FastCGI processes (`--fastcgi-app`): the roles of
//! spawn-fcgi and php-fpm. Each process gets a listening unix socket of its
//! own on fd 0 (FCGI_LISTENSOCK_FILENO, the convention php-cgi, Perl's FCGI,
//! Ruby's fcgi and flup follow) and serves one request at a time; oxgate
//! keeps one connection to it (FCGI_KEEP_CONN) and sends it a request only
//! when it is idle, so requests queue here, not in its backlog.
//!
//! Each worker runs its share of the pool's processes, so that the total is
//! `--fastcgi-app-processes`, and owns them: it knows which process serves
//! which request, so a request over the timeout gets its process killed and
//! replaced, and a process that has served `--fastcgi-app-max-requests` is
//! replaced before the next. A process that exits (php-cgi does after 500
//! requests) is started again at its next request; the request its kept
//! connection was closed under is sent again, so none fails. The processes
//! die with their worker (PR_SET_PDEATHSIG); a reload's new workers start
//! new ones while the old finish their requests.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::client::{self, Conn, Failure, Output, Release};
use super::php::PhpCgi;
use crate::config::ProcessManager;
use crate::listen::Address;
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
    /// The pool's total, over all workers.
    pub processes: usize,
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
    /// Idle processes kept ready, over all workers (dynamic).
    pub spare: (usize, usize),
    pub idle_timeout: Duration,
    /// Its place among the `--fastcgi-app` pools: its figures' place in
    /// `COUNTERS`.
    pub index: usize,
}

/// A pool's figures in one worker, read by the master from the scoreboard
/// (summed over the workers) for the stats and metrics: php-fpm's status
/// page, per pool. Only atomics, as shared memory must be.
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
    fn decrement(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }
}

/// This worker's figures for each pool, by `PoolSpec::index`: set by the
/// worker layer to its scoreboard slot's (pools past its length are not
/// counted).
pub static COUNTERS: OnceLock<&'static [PoolCounters]> = OnceLock::new();

/// A request waiting for an idle process, as long as it waits (a client
/// that leaves meanwhile drops it).
struct Waiting(&'static PoolCounters);

impl Drop for Waiting {
    fn drop(&mut self) {
        PoolCounters::decrement(&self.0.waiting);
    }
}

pub struct Pool {
    spec: PoolSpec,
    /// Made in the worker, at the first request (the handler may be built
    /// in the master, before the fork).
    slots: OnceLock<Slots>,
}

struct Slots {
    slots: Vec<Arc<Slot>>,
    idle: Arc<Semaphore>,
    /// Where the sockets are.
    dir: PathBuf,
}

/// One process's place: its socket, and the process while it runs.
struct Slot {
    addr: Address,
    listener: UnixListener,
    /// `None` while leased to a request.
    state: Mutex<Option<SlotState>>,
}

#[derive(Default)]
struct SlotState {
    child: Option<Child>,
    conn: Option<Conn>,
    requests: u64,
    /// Killed (timeout, recycling): wait for it before starting the next.
    doomed: bool,
    /// Its kept connection closed under a request: maybe it is exiting.
    suspect: bool,
    failures: u32,
    started: Option<Instant>,
    pid: u32,
    /// When its last request ended.
    last_used: Option<Instant>,
    /// Requests since the serving process started (php-cgi's forked
    /// child: see `PhpCgi::cap`).
    served: u64,
    /// The process group to kill with the process (it leads its own),
    /// until it is killed or seen ended: once the process is reaped and
    /// the group empty, the number may be another's.
    group: Option<u32>,
}

impl SlotState {
    /// Kills the process and whatever it started (php-cgi's forked child).
    fn kill(&mut self) {
        match (self.group.take(), &mut self.child) {
            (Some(group), _) => kill_group(group),
            (None, Some(child)) => {
                let _ = child.start_kill();
            }
            (None, None) => {}
        }
    }

    /// Whether the process has ended (or there is none). When it is first
    /// seen ended, what it left in its group goes at once: php-cgi's
    /// forked child, which would serve on with no parent.
    fn has_ended(&mut self) -> bool {
        let ended = self
            .child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
        if ended && let Some(group) = self.group.take() {
            kill_group(group);
        }
        ended
    }

    /// php-cgi's forked child ended while its parent lives (php-cgi
    /// forks the next itself): counted as the process's exit would be, and
    /// the next child counts its requests from none.
    fn child_ended(&mut self, stats: Option<&PoolCounters>) {
        self.served = 0;
        if let Some(s) = stats {
            s.process_exits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A slot taken for one request. Dropped unreturned (the request was
/// cancelled: its client left), it gives the slot back all the same, so
/// that the idle count and the slots never disagree, with its process
/// killed.
struct Lease {
    slot: Arc<Slot>,
    state: SlotState,
    _permit: OwnedSemaphorePermit,
    max_requests: Option<u64>,
    /// When the serving process exits by itself, and whether that is
    /// `--fastcgi-app-max-requests` (see `PhpCgi`).
    cap: Option<(u64, bool)>,
    /// The process started forks the one that serves (php-cgi).
    prefork: bool,
    returned: bool,
    /// Kills the process at the request's deadline, whether or not the
    /// response is being read (a client that stops reading would hold
    /// the process otherwise).
    watchdog: Option<tokio::task::AbortHandle>,
    /// Logs the request if it runs past `--fastcgi-app-slowlog`.
    slow: Option<tokio::task::AbortHandle>,
    /// Counted busy while it is held (a request's lease).
    busy: Option<&'static PoolCounters>,
}

impl Pool {
    pub fn new(spec: PoolSpec) -> Pool {
        Pool {
            spec,
            slots: OnceLock::new(),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.spec.name
    }

    fn prefork(&self) -> bool {
        self.spec.php.as_ref().is_some_and(|p| p.prefork)
    }

    fn cap(&self) -> Option<(u64, bool)> {
        let php = self.spec.php.as_ref()?;
        Some((php.cap?, php.cap_is_ours))
    }

    /// This worker's figures for this pool, once the worker has set them.
    fn stats(&self) -> Option<&'static PoolCounters> {
        COUNTERS.get()?.get(self.spec.index)
    }

    /// Stops the processes (and reaps them) and removes the sockets'
    /// directory, as the worker ends: it does not leave that to
    /// PR_SET_PDEATHSIG and whoever reaps orphans.
    pub fn clean_up(&self) {
        let Some(slots) = self.slots.get() else {
            return;
        };
        for slot in &slots.slots {
            let Some(mut state) = slot.state.lock().ok().and_then(|mut s| s.take()) else {
                continue;
            };
            let pid = state.child.as_mut().and_then(|c| c.id());
            state.kill();
            if let Some(pid) = pid {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
            }
        }
        let _ = std::fs::remove_dir_all(&slots.dir);
    }

    /// This worker's share of the pool: the total over the workers, the
    /// first ones taking one more when it does not divide.
    fn share(total: usize) -> usize {
        let workers = WORKERS.get().copied().unwrap_or(1).max(1);
        let id = WORKER_ID.get().copied().unwrap_or(1).max(1);
        let share = total / workers + usize::from((id - 1) % workers < total % workers);
        share.max(1)
    }

    fn slots(&self, pool_index: usize) -> Result<&Slots, String> {
        if let Some(s) = self.slots.get() {
            return Ok(s);
        }
        let n = Pool::share(self.spec.processes);
        // In a directory of this worker's own, mode 0700: a pool's sockets
        // take requests that name any script, so no other user may
        // connect (an abstract socket cannot be kept from them).
        let dir =
            std::env::temp_dir().join(format!("oxgate-fcgi-{}-{pool_index}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        remove_stale_dirs();
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot make the pool's directory {}: {e}", dir.display()))?;
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.join(format!("{i}.sock"));
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("cannot make the pool's socket {}: {e}", path.display()))?;
            slots.push(Arc::new(Slot {
                addr: Address::Unix(path),
                listener,
                state: Mutex::new(Some(SlotState::default())),
            }));
        }
        let made = Slots {
            idle: Arc::new(Semaphore::new(slots.len())),
            slots,
            dir,
        };
        Ok(self.slots.get_or_init(|| made))
    }

    /// Takes an idle process's slot, waiting for one.
    /// `first`: the request's first lease (a retry after a kept connection
    /// closed is not counted again as one that found every process busy).
    async fn lease(&self, pool_index: usize, first: bool) -> Result<Lease, String> {
        let slots = self.slots(pool_index)?;
        let stats = self.stats();
        let waiting = match stats {
            Some(s) if slots.idle.available_permits() == 0 => {
                if first {
                    s.max_children_reached.fetch_add(1, Ordering::Relaxed);
                }
                let n = s.waiting.fetch_add(1, Ordering::Relaxed) + 1;
                s.max_waiting.fetch_max(n, Ordering::Relaxed);
                Some(Waiting(s))
            }
            _ => None,
        };
        let permit = slots
            .idle
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        drop(waiting);
        // A permit is an idle slot: busy ones hold theirs, and so does the
        // upkeep while it looks at one. One whose process runs comes first,
        // so that a process is started only when none is idle.
        let take = |want_running: bool| {
            slots.slots.iter().find_map(|slot| {
                let mut guard = slot.state.lock().ok()?;
                let state = guard.as_ref()?;
                let runs = state.child.is_some() && !state.doomed && !state.suspect;
                if want_running && !runs {
                    return None;
                }
                Some((slot.clone(), guard.take()?))
            })
        };
        let (slot, state) = take(true)
            .or_else(|| take(false))
            .ok_or("no idle slot despite a permit")?;
        if let Some(s) = stats {
            s.busy.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Lease {
            slot,
            state,
            _permit: permit,
            max_requests: self.spec.max_requests,
            cap: self.cap(),
            prefork: self.prefork(),
            returned: false,
            watchdog: None,
            slow: None,
            busy: stats,
        })
    }

    /// One request to an idle process: its head, and the body to stream.
    pub async fn call(
        &self,
        pool_index: usize,
        params: &[(Vec<u8>, Vec<u8>)],
        body: RequestBody,
        timeout: Option<Duration>,
    ) -> Result<(Head, Bytes, Output), Failure> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let records = client::request_records(params, true);
        let method = params
            .iter()
            .find(|(k, _)| k == b"REQUEST_METHOD")
            .map_or(&b""[..], |(_, v)| &v[..]);
        let idempotent = matches!(method, b"GET" | b"HEAD" | b"OPTIONS");
        let again = client::replayable(&body);
        let mut body = Some(body);
        let name = self.spec.name.clone();
        let stats = self.stats();
        let mut lease = self
            .lease(pool_index, true)
            .await
            .map_err(Failure::Broken)?;
        if let Some(s) = stats {
            s.requests.fetch_add(1, Ordering::Relaxed);
        }
        // It waited for a process past its deadline: answered as a
        // timeout without sending it, so that the process is not killed.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            if let Some(s) = stats {
                s.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            lease.put_back();
            return Err(Failure::Timeout);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let suspect = std::mem::take(&mut lease.state.suspect);
            if let Err(e) = self.ensure_running(&mut lease, suspect).await {
                lease.finish(None, true);
                return Err(Failure::Connect(e));
            }
            // A kept connection the process closed while idle (php-cgi at
            // its own request cap, as it exits): another idle process takes
            // the request, and this one is looked at (and replaced) when it
            // is next taken, or by the upkeep, out of this request's way.
            if attempt <= MAX_ATTEMPTS && lease.state.conn.as_mut().is_some_and(Conn::closed) {
                if self.prefork() {
                    lease.state.child_ended(stats);
                }
                lease.state.conn = None;
                lease.state.suspect = true;
                lease.put_back();
                lease = self
                    .lease(pool_index, false)
                    .await
                    .map_err(Failure::Broken)?;
                continue;
            }
            let reused = lease.state.conn.is_some();
            let conn = match lease.state.conn.take() {
                Some(c) => c,
                None => match Conn::connect(&lease.slot.addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        lease.finish(None, true);
                        return Err(Failure::Connect(e));
                    }
                },
            };
            if let Some(d) = deadline {
                let pid = lease.state.pid;
                let watchdog = tokio::spawn(async move {
                    tokio::time::sleep_until(d).await;
                    kill_group(pid);
                });
                lease.watchdog = Some(watchdog.abort_handle());
            }
            if let Some(after) = self.spec.slowlog
                && lease.slow.is_none()
            {
                let (pid, name) = (lease.state.pid, name.clone());
                let uri = params
                    .iter()
                    .find(|(k, _)| k == b"REQUEST_URI")
                    .map_or_else(String::new, |(_, v)| {
                        String::from_utf8_lossy(v).into_owned()
                    });
                let slow = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(s) = stats {
                        s.slow_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    crate::say!(
                        "oxgate: FastCGI pool {name}: slow request: pid {pid}, {uri}, running for {}s (--fastcgi-app-slowlog)",
                        after.as_secs()
                    );
                });
                lease.slow = Some(slow.abort_handle());
            }
            let this_body = body.take().expect("a body to send");
            let exchanged = {
                let child = lease.state.child.as_mut();
                let exchange = client::exchange_on(conn, &records, this_body, &name);
                let ended = async {
                    match child {
                        // A clean exit is a process at its own request cap
                        // (php-cgi's 500), which reads no more requests: as
                        // if the request was never sent. Dead otherwise (a
                        // signal, a crash): not sent again, since it may
                        // have been the request that killed it.
                        Some(c) => match c.wait().await {
                            Ok(status) if status.success() => {
                                Failure::Unsent(format!("its process exited ({status})"))
                            }
                            status => Failure::NoHead(format!(
                                "its process ended ({})",
                                status.map_or_else(|e| e.to_string(), |s| s.to_string())
                            )),
                        },
                        None => std::future::pending().await,
                    }
                };
                let raced = async {
                    tokio::select! {
                        r = exchange => r,
                        f = ended => Err(f),
                    }
                };
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, raced)
                        .await
                        .unwrap_or(Err(Failure::Timeout)),
                    None => raced.await,
                }
            };
            // A failed exchange looks at the process: one that ended takes
            // its group with it at once. One that lives, whose connection
            // closed before any reply, lost php-cgi's forked child.
            if let Err(failure) = &exchanged
                && !lease.state.has_ended()
                && self.prefork()
                && matches!(failure, Failure::NoReply(_))
            {
                lease.state.child_ended(stats);
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
                    return Ok((head, first, Output::new(conn, name, deadline, release)));
                }
                // The kept connection closed just as the request went out:
                // sent again elsewhere if the process cannot have read it
                // (the write failed), or if sending it twice does no harm.
                Err(f @ (Failure::Unsent(_) | Failure::NoReply(_)))
                    if reused
                        && again.is_some()
                        && attempt <= MAX_ATTEMPTS
                        && (idempotent || matches!(f, Failure::Unsent(_))) =>
                {
                    body = again.as_ref().and_then(client::replayable);
                    lease.abort_watchdog();
                    lease.state.suspect = true;
                    lease.put_back();
                    lease = self
                        .lease(pool_index, false)
                        .await
                        .map_err(Failure::Broken)?;
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

    /// Keeps the processes as `--fastcgi-app-pm` asks, for as long as the
    /// worker runs: static starts them all, dynamic keeps the spare ones
    /// between the bounds (this worker's share of them), ondemand and
    /// dynamic stop those idle past the idle timeout.
    pub async fn maintain(self: Arc<Self>, pool_index: usize) {
        let spec = &self.spec;
        let Ok(slots) = self.slots(pool_index) else {
            return;
        };
        let workers = WORKERS.get().copied().unwrap_or(1).max(1);
        let (min_spare, max_spare) = (
            spec.spare.0.div_ceil(workers),
            spec.spare
                .1
                .div_ceil(workers)
                .max(spec.spare.0.div_ceil(workers)),
        );
        let every =
            (spec.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let mut idle_running = 0;
            let mut idle_stopped = Vec::new();
            for slot in &slots.slots {
                // Only a slot no request holds, taken as a request would.
                let Ok(permit) = slots.idle.clone().try_acquire_owned() else {
                    break;
                };
                let Some(mut state) = slot.state.lock().ok().and_then(|mut s| s.take()) else {
                    drop(permit);
                    continue;
                };
                let running = !state.has_ended() && !state.doomed && !state.suspect;
                let idle_for = state.last_used.or(state.started).map(|t| t.elapsed());
                let want_stop = running
                    && spec.pm != ProcessManager::Static
                    && idle_for.is_some_and(|d| d >= spec.idle_timeout)
                    && (spec.pm == ProcessManager::Ondemand || idle_running >= max_spare);
                if want_stop {
                    state.kill();
                    if let Some(mut child) = state.child.take() {
                        if let Some(s) = self.stats() {
                            PoolCounters::decrement(&s.processes);
                        }
                        crate::say!(
                            "oxgate: FastCGI pool {}: stopped process {}, idle {}s",
                            spec.name,
                            state.pid,
                            idle_for.map_or(0, |d| d.as_secs())
                        );
                        tokio::spawn(async move {
                            let _ = child.wait().await;
                        });
                    }
                    state.conn = None;
                    state.requests = 0;
                } else if running {
                    idle_running += 1;
                } else {
                    idle_stopped.push(slot.clone());
                }
                if let Ok(mut s) = slot.state.lock() {
                    *s = Some(state);
                }
                drop(permit);
            }
            let want = match spec.pm {
                ProcessManager::Static => slots.slots.len(),
                ProcessManager::Dynamic => min_spare,
                ProcessManager::Ondemand => 0,
            };
            for slot in idle_stopped
                .into_iter()
                .take(want.saturating_sub(idle_running))
            {
                let Ok(permit) = slots.idle.clone().try_acquire_owned() else {
                    break;
                };
                let Some(state) = slot.state.lock().ok().and_then(|mut s| s.take()) else {
                    continue;
                };
                let mut lease = Lease {
                    slot: slot.clone(),
                    state,
                    _permit: permit,
                    max_requests: spec.max_requests,
                    cap: self.cap(),
                    prefork: self.prefork(),
                    returned: false,
                    watchdog: None,
                    slow: None,
                    busy: None,
                };
                let suspect = std::mem::take(&mut lease.state.suspect);
                if let Err(e) = self.ensure_running(&mut lease, suspect).await {
                    crate::say!("oxgate: FastCGI pool {}: cannot start: {e}", spec.name);
                }
                lease.put_back();
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Starts the slot's process if it is not running. `suspect`: its
    /// connection just closed, maybe as it exits: given a moment to.
    async fn ensure_running(&self, lease: &mut Lease, suspect: bool) -> std::io::Result<()> {
        let state = &mut lease.state;
        if let Some(child) = &mut state.child {
            let ended = if state.doomed {
                // Killed: reaped before the next starts.
                Some(child.wait().await?)
            } else if suspect && !self.prefork() {
                tokio::time::timeout(Duration::from_millis(500), child.wait())
                    .await
                    .ok()
                    .transpose()?
            } else {
                child.try_wait()?
            };
            match ended {
                None => return Ok(()),
                Some(status) => {
                    // Whatever it started goes with it: php-cgi's forked
                    // child, left serving the socket if its parent died.
                    state.has_ended();
                    // Died at once, having served nothing: a broken command,
                    // not one at its request cap.
                    let quick = state.requests == 0
                        && state
                            .started
                            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                    // One doomed was counted out when it was doomed; it ended
                    // unasked if something other than our SIGKILL ended it
                    // (it crashed, or exited at its own cap, under a
                    // request).
                    if let Some(s) = self.stats() {
                        use std::os::unix::process::ExitStatusExt;
                        if !state.doomed {
                            PoolCounters::decrement(&s.processes);
                        }
                        if !state.doomed || status.signal() != Some(libc::SIGKILL) {
                            s.process_exits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if !state.doomed {
                        crate::say!(
                            "oxgate: FastCGI pool {}: process {} ended ({status}); starting another",
                            self.spec.name,
                            state.pid,
                        );
                    }
                    state.failures = if quick && !state.doomed {
                        state.failures + 1
                    } else {
                        0
                    };
                    state.child = None;
                    state.conn = None;
                    state.doomed = false;
                    state.requests = 0;
                }
            }
        }
        if state.failures > 0 {
            // One that dies at once is not started in a loop.
            let wait = Duration::from_millis(100 << state.failures.min(8));
            tokio::time::sleep(wait).await;
        }
        let child = self.spawn(&lease.slot)?;
        state.pid = child.id().unwrap_or(0);
        state.group = child.id();
        state.child = Some(child);
        state.served = 0;
        state.started = Some(Instant::now());
        Ok(())
    }

    fn spawn(&self, slot: &Slot) -> std::io::Result<Child> {
        // Connections left in the backlog belong to requests already
        // answered (a 502, a 504, a client gone): the new process must not
        // run them.
        slot.listener.set_nonblocking(true)?;
        while slot.listener.accept().is_ok() {}
        slot.listener.set_nonblocking(false)?;
        let listener: OwnedFd = slot.listener.try_clone()?.into();
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .env_clear()
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(listener))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Out of the terminal's group: a Ctrl-C goes to the master.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.spec.cwd {
            command.current_dir(dir);
        }
        // Dies with its worker, however the worker ends. php-cgi that
        // forks is sent SIGTERM instead, on which it kills its child too
        // (a SIGKILL would leave the child serving the socket).
        let death = if self.prefork() {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one prctl(2) call, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(death).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn()?;
        if let Some(s) = self.stats() {
            s.process_starts.fetch_add(1, Ordering::Relaxed);
            s.processes.fetch_add(1, Ordering::Relaxed);
        }
        crate::say!(
            "oxgate: FastCGI pool {}: started process {} on {}",
            self.spec.name,
            child.id().unwrap_or(0),
            slot.addr
        );
        Ok(child)
    }
}

impl Lease {
    /// Gives the slot back unused.
    fn put_back(mut self) {
        self.give_back();
    }

    fn abort_watchdog(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Some(w) = self.slow.take() {
            w.abort();
        }
    }

    fn give_back(&mut self) {
        self.abort_watchdog();
        self.returned = true;
        if let Some(s) = self.busy.take() {
            PoolCounters::decrement(&s.busy);
        }
        if let Ok(mut slot) = self.slot.state.lock() {
            *slot = Some(std::mem::take(&mut self.state));
        }
    }

    /// Gives the slot back: the kept connection after a whole exchange; the
    /// process killed when asked (a timeout, a broken exchange) or at its
    /// request cap.
    fn finish(mut self, conn: Option<Conn>, kill: bool) {
        self.abort_watchdog();
        let stats = self.busy;
        let state = &mut self.state;
        state.requests += 1;
        state.served += 1;
        state.conn = conn;
        state.last_used = Some(Instant::now());
        if let Some((cap, ours)) = self.cap
            && state.served >= cap
        {
            // It exits after this request by itself, closing the kept
            // connection: dropped here, so that no request is sent on it
            // meanwhile. The next connects anew, and waits in the socket's
            // backlog for php-cgi's next child; without one, for the
            // process that replaces this one, started once it has exited.
            state.conn = None;
            state.served = 0;
            if !self.prefork {
                state.suspect = true;
            } else if !kill && let Some(s) = stats {
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
        let recycle = self.max_requests.is_some_and(|n| state.requests >= n);
        if recycle
            && !kill
            && let Some(s) = stats
        {
            s.process_recycles.fetch_add(1, Ordering::Relaxed);
        }
        if (kill || recycle) && state.child.is_some() && !state.doomed {
            state.kill();
            state.doomed = true;
            state.conn = None;
            if let Some(s) = stats {
                PoolCounters::decrement(&s.processes);
            }
        }
        self.give_back();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.returned {
            // Cut off mid-exchange (its client left): the process may run
            // the request for long yet, and the next would wait behind it.
            // It is replaced instead.
            self.state.conn = None;
            if self.state.child.is_some() && !self.state.doomed {
                self.state.kill();
                self.state.doomed = true;
                if let Some(s) = self.busy {
                    PoolCounters::decrement(&s.processes);
                }
            }
            self.give_back();
        }
        // The permit goes back after this, once the slot is back.
    }
}

/// Kills a pool process and whatever it started: its process group, of
/// which it is the leader (`process_group(0)`).
fn kill_group(pid: u32) {
    if pid > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the socket directories of workers that are gone without
/// removing theirs (killed): `oxgate-fcgi-PID-N` with no process PID.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("oxgate-fcgi-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if pid > 0 && gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The number of workers, and this worker's number (from 1), for each
/// worker's share of a pool: set by the worker layer.
pub static WORKERS: OnceLock<usize> = OnceLock::new();
pub static WORKER_ID: OnceLock<usize> = OnceLock::new();
