//! A `--fastcgi-app` pool's manager: the roles of php-fpm's master and
//! spawn-fcgi. It starts the processes, each on its own listening socket
//! (fd 0), replaces those that end, keeps as many as `--fastcgi-app-pm`
//! asks, and puts a token in the pool's pipe for each process it makes
//! available (see `shared`). The workers do the rest: they take an idle
//! process's token, send it a request, and give the token back, or have
//! the process killed when it must be replaced.
//!
//! Under a master, the managers of all pools run in one process the master
//! forks and watches ([`serve`]); in a single process (`--no-master`), they
//! run on its event loop.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pool::{
    PoolCounters, PoolSpec, children_running, kill_children_left, kill_process, sigkill_group,
    stats_of, stop_process,
};
use super::shared::{self, CAUSE_ASKED, CAUSE_NONE, Shared, now_ms};
use crate::config::ProcessManager;

/// A process that ends this soon after it started, having served nothing,
/// is a broken command: it is started again with back-off, not in a loop.
const QUICK_DEATH: Duration = Duration::from_secs(1);

/// The manager's view of one row.
#[derive(Default)]
struct RowState {
    started: Option<Instant>,
    /// Stopped by the manager (idle): not replaced.
    stopping: bool,
    failures: u32,
    /// Started again at this moment (back-off).
    start_at: Option<Instant>,
}

/// A process that ended: its row and pid, and how.
type Ended = (usize, i32, std::io::Result<ExitStatus>);

/// Runs one pool's manager until the pool is released and no worker uses
/// it any more (`until_released`), or for good (the single process, where
/// the pool ends with the process).
pub async fn manage(spec: Arc<PoolSpec>, shared: &'static Shared, until_released: bool) {
    let stats = stats_of(spec.index);
    let n = shared.rows();
    // A manager started again (its predecessor died, and its processes
    // with it, but not whatever they started): every token out is stale.
    while shared.take().is_some() {}
    for i in 0..n {
        let r = shared.row(i);
        r.token_out.store(0, Ordering::Release);
        let pid = r.pid.swap(0, Ordering::AcqRel);
        if pid != 0 {
            sigkill_group(pid);
            if let Some(s) = stats {
                PoolCounters::decrement(&s.processes);
            }
        }
        r.holder.store(0, Ordering::Relaxed);
        r.cause.store(CAUSE_NONE, Ordering::Relaxed);
    }
    let demand = match shared.demand_fd().and_then(|fd| {
        // SAFETY: the AsyncFd owns the fd (a copy of the pipe's read end
        // made for it), so it stays open, the same description, while it
        // lives.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(Into::into)
    }) {
        Ok(d) => d,
        Err(e) => {
            crate::say!("oxgate: FastCGI pool {}: {e}", spec.name);
            return;
        }
    };
    let (min_spare, max_spare) = (spec.spare.0.min(n), spec.spare.1.max(spec.spare.0));
    let mut m = Manager {
        spec: &spec,
        shared,
        stats,
        rows: (0..n).map(|_| RowState::default()).collect(),
        ended: mpsc::unbounded_channel(),
        said_full: None,
    };
    let initial = match spec.pm {
        ProcessManager::Static => n,
        ProcessManager::Dynamic => min_spare.max(1),
        ProcessManager::Ondemand => 0,
    };
    for i in 0..initial {
        m.start(i);
    }
    let every = (spec.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(ended) = m.ended.1.recv() => m.ended(ended),
            ready = demand.readable() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                drain(demand.get_ref());
                // Those waiting, less the idle processes they are about to
                // take (a token just put in).
                let waiting = shared.waiting();
                if spec.pm != ProcessManager::Static {
                    m.start_more(waiting.saturating_sub(shared.idle()));
                }
            }
            _ = tick.tick() => {
                if until_released
                    && shared.header().released.load(Ordering::Acquire) != 0
                    && !shared.used()
                {
                    m.stop_all().await;
                    let _ = std::fs::remove_dir_all(&shared.dir);
                    return;
                }
                m.tick(min_spare, max_spare);
            }
        }
    }
}

/// Empties a nonblocking pipe.
fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 64];
    while matches!(nix::unistd::read(fd, &mut b), Ok(k) if k > 0) {}
}

struct Manager<'a> {
    spec: &'a PoolSpec,
    shared: &'static Shared,
    stats: Option<&'static PoolCounters>,
    rows: Vec<RowState>,
    ended: (mpsc::UnboundedSender<Ended>, mpsc::UnboundedReceiver<Ended>),
    /// When the log last said every process was busy with requests
    /// waiting (php-fpm's "reached pm.max_children").
    said_full: Option<Instant>,
}

/// How often, at most, the log says a pool is full.
const SAY_FULL_EVERY: Duration = Duration::from_secs(60);

impl Manager<'_> {
    /// Starts processes in up to `k` rows that have none.
    fn start_more(&mut self, k: usize) {
        let free: Vec<usize> = (0..self.rows.len())
            .filter(|&i| self.is_free(i))
            .take(k)
            .collect();
        for i in free {
            self.start(i);
        }
    }

    /// A row with no process, none being started.
    fn is_free(&self, i: usize) -> bool {
        self.shared.row(i).pid.load(Ordering::Acquire) == 0
            && self.rows[i].start_at.is_none()
            && !self.rows[i].stopping
    }

    /// Starts row `i`'s process, and makes it available.
    fn start(&mut self, i: usize) {
        let row = self.shared.row(i);
        // Cleared first: a worker that retires the token from now on says
        // so again.
        row.cause.store(CAUSE_NONE, Ordering::Release);
        let token_out = row.token_out.load(Ordering::Acquire) == 1;
        if !token_out {
            // Connections left in the backlog belong to requests already
            // answered (a 504, a client gone): the new process must not
            // run them, nor take a request from what remains of the last
            // (see `renew_listener`). With a token out, one may be its
            // holder's, waiting for this process.
            self.shared.discard_backlog(i);
            if let Err(e) = self.shared.renew_listener(i) {
                crate::say!(
                    "oxgate: FastCGI pool {}: cannot renew the socket {}: {e}",
                    self.spec.name,
                    self.shared.addrs[i]
                );
            }
        }
        self.rows[i].start_at = None;
        match self.shared.listener(i).and_then(|l| self.spawn(l)) {
            Ok(mut child) => {
                let pid = child.id().map_or(0, |p| p as i32);
                if let Some(stderr) = child.stderr.take() {
                    tokio::spawn(relay_stderr(stderr, self.spec.name.clone(), pid));
                }
                row.requests.store(0, Ordering::Relaxed);
                row.served.store(0, Ordering::Relaxed);
                row.last_used_ms.store(now_ms(), Ordering::Relaxed);
                // SeqCst, as a worker retiring the token writes token_out
                // and then reads this: one of the two sees the other's.
                row.pid.store(pid, Ordering::SeqCst);
                self.rows[i].started = Some(Instant::now());
                if let Some(s) = self.stats {
                    s.process_starts.fetch_add(1, Ordering::Relaxed);
                    s.processes.fetch_add(1, Ordering::Relaxed);
                }
                crate::say!(
                    "oxgate: FastCGI pool {}: started process {pid} on {}",
                    self.spec.name,
                    self.shared.addrs[i]
                );
                // (Not "starting" again until it has shown it lives:
                // `tick`. Cleared here, --health-path read 200 after every
                // start of a command that fails at once.)
                let tx = self.ended.0.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    let _ = tx.send((i, pid, status));
                });
                if !token_out {
                    self.shared.issue(i);
                } else if row.token_out.load(Ordering::SeqCst) == 0 {
                    // Its holder retired the token while this one started
                    // (and saw no process to kill): this one may have taken
                    // the request it gave up from the backlog. Replaced
                    // again, from a clean backlog, with a new token.
                    row.cause
                        .store(super::shared::CAUSE_ASKED, Ordering::Release);
                    self.kill(pid);
                }
            }
            Err(e) => {
                crate::say!(
                    "oxgate: FastCGI pool {}: cannot start {}: {e}",
                    self.spec.name,
                    self.spec.program.display()
                );
                // Whoever waits for this process is answered 502 now, and
                // whoever waits for any while none runs.
                self.shared.discard_backlog(i);
                self.shared
                    .header()
                    .start_failing
                    .store(1, Ordering::Release);
                self.failed(i);
            }
        }
    }

    /// Row `i` failed to start or died at once: tried again after a
    /// growing delay.
    fn failed(&mut self, i: usize) {
        let r = &mut self.rows[i];
        r.failures += 1;
        r.start_at = Some(Instant::now() + Duration::from_millis(100 << r.failures.min(8)));
    }

    fn ended(&mut self, (i, pid, status): Ended) {
        let row = self.shared.row(i);
        if row.pid.load(Ordering::Acquire) != pid {
            return;
        }
        row.pid.store(0, Ordering::Release);
        let cause = row.cause.swap(CAUSE_NONE, Ordering::AcqRel);
        // Killed unbidden (a crash, a kill -9 from outside): its forked
        // child (php-cgi's) would serve on with no parent, and can no
        // longer be told apart from the rest of its group, which goes
        // with it. One stopped on purpose had its children stopped then
        // (`stop_process`), and one that exited left none serving.
        let killed_unbidden = matches!(&status, Ok(s) if s.signal().is_some());
        if killed_unbidden && cause == CAUSE_NONE && !self.rows[i].stopping {
            sigkill_group(pid);
        }
        if let Some(s) = self.stats {
            PoolCounters::decrement(&s.processes);
        }
        if std::mem::take(&mut self.rows[i].stopping) {
            return;
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        let quick = cause == CAUSE_NONE
            && row.requests.load(Ordering::Relaxed) == 0
            && self.rows[i]
                .started
                .is_some_and(|t| t.elapsed() < QUICK_DEATH);
        if cause == CAUSE_NONE {
            if let Some(s) = self.stats {
                s.process_exits.fetch_add(1, Ordering::Relaxed);
            }
            crate::say!(
                "oxgate: FastCGI pool {}: process {pid} ended ({status}); starting another",
                self.spec.name
            );
        }
        let token_out = row.token_out.load(Ordering::Acquire) == 1;
        if quick {
            // A broken command (a script with a syntax error, a wrapper
            // that exits): the request waiting for it is answered 502 now,
            // and so is whoever waits while no process runs, as when the
            // command cannot be started at all; it is started again with
            // back-off (which a good start clears). Its token is retired:
            // a request that took it would wait in the backlog for the
            // next try; the next start issues another.
            row.token_out.store(0, Ordering::Release);
            self.shared.discard_backlog(i);
            self.shared
                .header()
                .start_failing
                .store(1, Ordering::Release);
            self.failed(i);
        } else {
            self.rows[i].failures = 0;
            if self.spec.pm == ProcessManager::Static || token_out || cause != CAUSE_NONE {
                self.start(i);
            }
        }
    }

    /// The upkeep: starts due (back-off), the spare processes (dynamic), and
    /// stops those idle past the idle timeout (dynamic, ondemand).
    fn tick(&mut self, min_spare: usize, max_spare: usize) {
        let now = Instant::now();
        self.say_if_full(now);
        // Starting again, once a process has outlived a quick death or
        // served a request.
        let lives = (0..self.rows.len()).any(|i| {
            let row = self.shared.row(i);
            row.pid.load(Ordering::Acquire) != 0
                && (row.requests.load(Ordering::Relaxed) > 0
                    || self.rows[i].started.is_some_and(|t| now - t >= QUICK_DEATH))
        });
        if lives {
            self.shared
                .header()
                .start_failing
                .store(0, Ordering::Release);
        }
        for i in 0..self.rows.len() {
            if self.rows[i].start_at.is_some_and(|t| t <= now) {
                self.start(i);
            }
        }
        // A worker that died (killed) took the tokens it held: their
        // processes are replaced, with new tokens.
        for i in 0..self.rows.len() {
            let row = self.shared.row(i);
            let holder = row.holder.load(Ordering::Acquire);
            if holder != 0
                && row.token_out.load(Ordering::Acquire) == 1
                && !shared::alive(holder)
                && row
                    .holder
                    .compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                row.cause.store(CAUSE_ASKED, Ordering::Release);
                row.token_out.store(0, Ordering::Release);
                match row.pid.load(Ordering::Acquire) {
                    0 if self.rows[i].start_at.is_none() && !self.rows[i].stopping => self.start(i),
                    0 => {}
                    pid => self.kill(pid),
                }
            }
        }
        // Users found gone (killed) are dropped, with their waiting
        // requests and their count (a worker alone again keeps its
        // connections).
        let _ = self.shared.used();
        // Requests waiting with no idle process for them (their ask may
        // have come while a process was stopping).
        if self.spec.pm != ProcessManager::Static {
            let waiting = self.shared.waiting();
            self.start_more(waiting.saturating_sub(self.shared.idle()));
        }
        if self.spec.pm == ProcessManager::Dynamic {
            let idle = self.shared.idle();
            if idle < min_spare {
                self.start_more(min_spare - idle);
            }
        }
        if self.spec.pm == ProcessManager::Static {
            return;
        }
        let timeout_ms = self.spec.idle_timeout.as_millis() as u64;
        let now_ms = now_ms();
        // Out of the pipe for a moment: every idle process's token. Those
        // kept go back at once; a worker that finds the pipe empty
        // meanwhile waits for them.
        let tokens: Vec<_> = std::iter::from_fn(|| self.shared.take()).collect();
        let mut kept = 0;
        for t in tokens {
            if !self.shared.current(t) {
                continue;
            }
            let row = self.shared.row(t.row);
            let idle_ms = now_ms.saturating_sub(row.last_used_ms.load(Ordering::Relaxed));
            let pid = row.pid.load(Ordering::Acquire);
            let stop = pid != 0
                && idle_ms >= timeout_ms
                && (self.spec.pm == ProcessManager::Ondemand || kept >= max_spare);
            if stop {
                self.rows[t.row].stopping = true;
                row.token_out.store(0, Ordering::Release);
                crate::say!(
                    "oxgate: FastCGI pool {}: stopped process {pid}, idle {}s",
                    self.spec.name,
                    idle_ms / 1000
                );
                self.kill(pid);
            } else {
                kept += 1;
                self.shared.give(t);
            }
        }
    }

    /// php-fpm's warning that sizes pools: every process runs and is busy,
    /// and requests wait for one (the counter in the stats alone went
    /// unseen). Once a minute at most.
    fn say_if_full(&mut self, now: Instant) {
        let full =
            self.shared.all_running() && self.shared.idle() == 0 && self.shared.waiting() > 0;
        if full && self.said_full.is_none_or(|t| now - t >= SAY_FULL_EVERY) {
            self.said_full = Some(now);
            let busy = match self.rows.len() {
                1 => "its one process is busy".to_string(),
                n => format!("its {n} processes are all busy"),
            };
            crate::say!(
                "oxgate: FastCGI pool {}: {busy} and requests wait \
                 (php-fpm's pm.max_children reached); consider raising --fastcgi-app-processes",
                self.spec.name
            );
        }
    }

    /// Stops a process and its serving children at once.
    fn kill(&self, pid: i32) {
        kill_process(pid);
    }

    /// Stops every process and waits for them: their children have a
    /// second to finish the requests they serve.
    async fn stop_all(&mut self) {
        let mut stopped = Vec::new();
        for i in 0..self.rows.len() {
            self.rows[i].stopping = true;
            self.rows[i].start_at = None;
            let pid = self.shared.row(i).pid.load(Ordering::Acquire);
            if pid != 0 {
                stopped.push(stop_process(pid, self.spec.stop_signal()));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while (0..self.rows.len()).any(|i| self.shared.row(i).pid.load(Ordering::Acquire) != 0) {
            match tokio::time::timeout_at(deadline, self.ended.1.recv()).await {
                Ok(Some(e)) => self.ended(e),
                _ => break,
            }
        }
        while stopped.iter().any(|children| children_running(children)) && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for children in &stopped {
            kill_children_left(children);
        }
    }

    fn spawn(
        &self,
        listener: std::os::unix::net::UnixListener,
    ) -> std::io::Result<tokio::process::Child> {
        let listener: OwnedFd = listener.into();
        let spec = self.spec;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(user_env())
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(listener))
            .stdout(Stdio::null())
            // Relayed a line at a time, with the pool's name and the
            // process's pid (php-fpm's catch_workers_output).
            .stderr(Stdio::piped())
            // Out of the terminal's group: a Ctrl-C goes to the master. And
            // a group of its own, killed whole (php-cgi's forked child).
            .process_group(0);
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        // Dies with the manager, however it ends.
        let death = spec.stop_signal();
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the child between fork and exec and
        // makes a prctl(2) and a getppid(2) call, both async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(death).map_err(std::io::Error::from)?;
                // The manager died before the signal was set: none would come.
                // ESRCH, not a message: nothing may allocate between fork and
                // exec (another thread may have held the allocator's lock).
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        command.spawn()
    }
}

/// The longest line of a process's stderr logged as one: a longer one goes
/// out in pieces this long.
const STDERR_LINE_MAX: usize = 8192;

/// Logs what a pool process (and whatever it forked) writes to its stderr,
/// each line marked with the pool and the process, until the last holder
/// of the pipe closes it.
async fn relay_stderr(stderr: tokio::process::ChildStderr, pool: Arc<str>, pid: i32) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut lines = tokio::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut lines)
            .take(STDERR_LINE_MAX as u64)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !text.is_empty() {
            crate::say!(
                "oxgate: FastCGI pool {pool}: process {pid} said into stderr: {}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

/// The pools' specs and shared parts, for a manager.
pub type Pools = Vec<(Arc<PoolSpec>, &'static Shared)>;

/// The manager process's life, forked by the master: every pool's manager
/// on an event loop of its own, until each pool is released and unused,
/// or SIGTERM (the master stops), on which every process is stopped.
pub fn run_all(pools: Pools) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        // Blocked since the fork, so that a stop sent meanwhile waits for
        // this handler.
        crate::sys::signals::unblock_all();
        let mut tasks = tokio::task::JoinSet::new();
        for (spec, shared) in pools.iter().cloned() {
            tasks.spawn(manage(spec, shared, true));
        }
        tokio::select! {
            _ = async { while tasks.join_next().await.is_some() {} } => {}
            _ = term.recv() => {
                tasks.abort_all();
                for (spec, shared) in &pools {
                    stop_now(spec, shared);
                }
            }
        }
        Ok(())
    })
}

/// Stops a pool's processes at once, and removes its sockets: the end of
/// the manager (SIGTERM) or of the single process.
pub fn stop_now(spec: &PoolSpec, shared: &Shared) {
    let pids: Vec<i32> = (0..shared.rows())
        .map(|i| shared.row(i).pid.swap(0, Ordering::AcqRel))
        .filter(|&p| p > 0)
        .collect();
    let stopped: Vec<_> = pids
        .iter()
        .map(|&pid| stop_process(pid, spec.stop_signal()))
        .collect();
    for &pid in &pids {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
    // A second for their children to end, then they are killed.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while stopped.iter().any(|children| children_running(children))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for children in &stopped {
        kill_children_left(children);
    }
    let _ = std::fs::remove_dir_all(&shared.dir);
}

/// USER and HOME of the user the processes run as, as php-fpm gives its
/// children (a script that runs composer or git needs HOME); the rest of
/// the environment is what `--fastcgi-app-env` gives, which may set these
/// too.
fn user_env() -> Vec<(&'static str, std::ffi::OsString)> {
    match nix::unistd::User::from_uid(nix::unistd::geteuid()) {
        Ok(Some(user)) => vec![
            ("USER", user.name.into()),
            ("HOME", user.dir.into_os_string()),
        ],
        _ => Vec::new(),
    }
}
