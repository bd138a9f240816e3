//! The supervisor's decisions, driven with a fake world: no process is
//! forked or signalled, time is a value.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::*;

/// Records what the supervisor did; answers what the scoreboard would.
#[derive(Default)]
struct Fake {
    next_pid: Pid,
    spawned: Vec<(u32, Pid)>,
    signals: Vec<(Pid, Signal)>,
    said: Vec<String>,
    counts: Vec<(Cause, u64)>,
    harakiri: Vec<u32>,
    notified: Vec<String>,
    seen: HashMap<Pid, Seen>,
    longest: HashMap<Pid, (Duration, String)>,
    running: HashMap<Pid, Vec<String>>,
    rss: HashMap<Pid, u64>,
    vsz: HashMap<Pid, u64>,
}

impl Effects for Fake {
    fn spawn(&mut self, id: u32) -> Option<(Pid, usize)> {
        self.next_pid += 1;
        let pid = 1000 + self.next_pid;
        self.spawned.push((id, pid));
        Some((pid, self.next_pid as usize))
    }
    fn signal(&mut self, pid: Pid, sig: Signal) {
        self.signals.push((pid, sig));
    }
    fn say(&mut self, line: String) {
        self.said.push(line);
    }
    fn note(&mut self, line: String) {
        self.said.push(line);
    }
    fn respawned(&mut self, cause: Cause, n: u64) {
        self.counts.push((cause, n));
    }
    fn harakiri(&mut self, id: u32) {
        self.harakiri.push(id);
    }
    fn notify(&mut self, state: &str) {
        self.notified.push(state.to_string());
    }
    fn seen(&mut self, w: &Worker) -> Seen {
        self.seen.get(&w.pid).cloned().unwrap_or_default()
    }
    fn longest_request(&mut self, w: &Worker) -> Option<(Duration, String)> {
        self.longest.get(&w.pid).cloned()
    }
    fn running(&mut self, w: &Worker) -> Vec<String> {
        self.running.get(&w.pid).cloned().unwrap_or_default()
    }
    fn memory(&mut self, pid: Pid) -> (u64, u64) {
        let vsz = self.vsz.get(&pid).copied().unwrap_or(0);
        (vsz, self.rss.get(&pid).copied().unwrap_or(0))
    }
}

impl Fake {
    fn ready(&mut self, pid: Pid) {
        self.seen.entry(pid).or_default().ready = true;
    }
    fn take_signals(&mut self) -> Vec<(Pid, Signal)> {
        std::mem::take(&mut self.signals)
    }
    fn said(&self, text: &str) -> bool {
        self.said.iter().any(|l| l.contains(text))
    }
}

const SIGTERM_STATUS: Exit = Exit::Signal(Signal::SIGTERM as i32);
const SIGKILL_STATUS: Exit = Exit::Signal(Signal::SIGKILL as i32);
fn exit_status(code: i32) -> Exit {
    Exit::Code(code)
}

fn limits() -> Limits {
    Limits {
        worker_reload_mercy: Duration::from_secs(60),
        reload_mercy: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// A supervisor with `n` workers started and ready, and the fake world.
fn running(n: usize, limits: Limits) -> (Supervisor, Fake, Instant) {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(n, limits, false, t0);
    let mut fx = Fake::default();
    sup.tick(&mut fx, t0);
    assert_eq!(fx.spawned.len(), n);
    for (_, pid) in fx.spawned.clone() {
        fx.ready(pid);
    }
    let t = t0 + Duration::from_secs(5);
    sup.tick(&mut fx, t);
    assert!(sup.workers.iter().all(|w| w.ready));
    (sup, fx, t)
}

fn pids(sup: &Supervisor) -> Vec<Pid> {
    sup.workers.iter().map(|w| w.pid).collect()
}

#[test]
fn starts_processes_workers_then_tells_systemd() {
    let (sup, fx, _) = running(3, limits());
    assert_eq!(
        fx.spawned.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(fx.notified, ["READY=1"]);
    assert_eq!(sup.workers.len(), 3);
}

#[test]
fn a_crashed_worker_is_respawned_with_its_id() {
    let (mut sup, mut fx, t) = running(2, limits());
    let dead = fx.spawned[0].1;
    fx.running
        .insert(dead, vec!["GET /boom from 127.0.0.1".into()]);
    sup.exited(dead, SIGKILL_STATUS, &mut fx, t);
    assert!(fx.said("was killed by signal 9 (SIGKILL) while running GET /boom"));
    assert_eq!(fx.counts, [(Cause::Crash, 1)]);
    sup.tick(&mut fx, t);
    assert_eq!(fx.spawned.last().unwrap().0, 1);
    assert_eq!(sup.workers.len(), 2);
}

#[test]
fn quick_deaths_back_off_exponentially() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(1, limits(), false, t0);
    let mut fx = Fake::default();
    let mut t = t0;
    sup.tick(&mut fx, t);
    sup.tick(&mut fx, t);
    // The app loaded once (ready), so a load failure is not fatal later.
    fx.ready(fx.spawned[0].1);
    sup.tick(&mut fx, t);
    for (n, expected) in [200, 400, 800, 1600].into_iter().enumerate() {
        let pid = sup.workers[0].pid;
        t += Duration::from_millis(100);
        sup.exited(pid, exit_status(1), &mut fx, t);
        let starts = fx.spawned.len();
        sup.tick(&mut fx, t + Duration::from_millis(expected - 1));
        assert_eq!(
            fx.spawned.len(),
            starts,
            "restarted before the back-off (try {n})"
        );
        t += Duration::from_millis(expected);
        sup.tick(&mut fx, t);
        assert_eq!(
            fx.spawned.len(),
            starts + 1,
            "not restarted after the back-off (try {n})"
        );
    }
    assert!(fx.said("(4 in a row); no worker starts for 1.6s"));
    assert_eq!(backoff(20), MAX_BACKOFF);
}

#[test]
fn a_worker_killed_by_its_request_is_replaced_at_once_however_young() {
    // A URL that crashes the app, hit again and again: each worker it
    // kills was ready and serving, so no start-up back-off holds up the
    // next one (it held every start for up to 10 s).
    let (mut sup, mut fx, mut t) = running(2, limits());
    for n in 0..5 {
        let dead = sup.workers[0].pid;
        fx.running
            .insert(dead, vec!["GET /segv from 127.0.0.1".into()]);
        t += Duration::from_millis(200);
        sup.exited(dead, SIGKILL_STATUS, &mut fx, t);
        let starts = fx.spawned.len();
        sup.tick(&mut fx, t);
        assert_eq!(fx.spawned.len(), starts + 1, "replaced at once (crash {n})");
        fx.ready(fx.spawned.last().unwrap().1);
        sup.tick(&mut fx, t);
    }
    assert!(!fx.said("in a row"));
    // One that dies idle as soon as it is ready is still a broken start.
    let dead = sup.workers[0].pid;
    sup.exited(
        dead,
        SIGKILL_STATUS,
        &mut fx,
        t + Duration::from_millis(100),
    );
    assert!(fx.said("(1 in a row)"));
}

#[test]
fn workers_that_all_die_before_any_was_ready_stop_the_master() {
    // A segfault at import kills each worker that loads the app: after
    // NEVER_READY_STOP in a row, the app cannot be loaded, and the
    // server stops (uvicorn exits) rather than restart workers for ever.
    let t0 = Instant::now();
    let mut sup = Supervisor::new(1, limits(), false, t0);
    let mut fx = Fake::default();
    let mut t = t0;
    sup.tick(&mut fx, t);
    for n in 1..NEVER_READY_STOP {
        let pid = fx.spawned.last().unwrap().1;
        sup.exited(pid, SIGKILL_STATUS, &mut fx, t);
        assert!(!sup.stopping(), "stopped after {n}");
        t += MAX_BACKOFF;
        sup.tick(&mut fx, t);
    }
    let pid = fx.spawned.last().unwrap().1;
    sup.exited(pid, SIGKILL_STATUS, &mut fx, t);
    assert!(sup.stopping() && sup.fatal.is_some());
    assert!(fx.said("died before any was ready: the app cannot be loaded"));
}

#[test]
fn workers_dying_while_another_still_loads_do_not_stop_the_master() {
    // A large model loading in one worker while the others are killed as
    // memory runs short: the one loading may yet be ready.
    let t0 = Instant::now();
    let mut sup = Supervisor::new(2, limits(), false, t0);
    let mut fx = Fake::default();
    let mut t = t0;
    sup.tick(&mut fx, t);
    let loading = fx.spawned[0].1;
    for _ in 0..2 * NEVER_READY_STOP {
        let pid = sup.workers.iter().find(|w| w.pid != loading).unwrap().pid;
        sup.exited(pid, SIGKILL_STATUS, &mut fx, t);
        assert!(!sup.stopping());
        t += MAX_BACKOFF;
        sup.tick(&mut fx, t);
    }
}

#[test]
fn an_app_that_never_loads_stops_the_master() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(2, limits(), false, t0);
    let mut fx = Fake::default();
    sup.tick(&mut fx, t0);
    let first = fx.spawned[0].1;
    sup.exited(first, exit_status(EXIT_APP_LOAD), &mut fx, t0);
    assert!(sup.stopping() && sup.fatal.is_some());
    assert_eq!(fx.take_signals(), [(fx.spawned[1].1, Signal::SIGTERM)]);
}

#[test]
fn an_app_edited_after_it_failed_to_load_is_loaded_again_at_once() {
    // --py-autoreload: the worker waited for the edit, then left: not a
    // failure, no back-off, and not a reason to stop, ready or not.
    let t0 = Instant::now();
    let mut sup = Supervisor::new(1, limits(), false, t0);
    let mut fx = Fake::default();
    sup.tick(&mut fx, t0);
    for n in 1..=3 {
        let pid = fx.spawned.last().unwrap().1;
        sup.exited(pid, exit_status(EXIT_APP_EDITED), &mut fx, t0);
        assert!(!sup.stopping() && sup.fatal.is_none());
        sup.tick(&mut fx, t0);
        assert_eq!(fx.spawned.len(), 1 + n, "started again at once (edit {n})");
    }
    assert!(fx.said("the app's files changed, loading it again"));
    assert!(!fx.said("in a row"));
}

#[test]
fn max_requests_replaces_the_worker_before_stopping_it() {
    let (mut sup, mut fx, t) = running(1, limits());
    let old = fx.spawned[0].1;
    let seen = fx.seen.entry(old).or_default();
    seen.max_requests_reached = true;
    seen.requests = 100;
    sup.tick(&mut fx, t);
    assert!(fx.said("served 100 requests (--max-requests), replacing it"));
    assert_eq!(fx.counts, [(Cause::MaxRequests, 1)]);
    // The replacement starts with the same id; the old one keeps serving.
    let (id, new) = *fx.spawned.last().unwrap();
    assert_eq!((id, fx.spawned.len()), (1, 2));
    assert!(fx.take_signals().is_empty());
    sup.tick(&mut fx, t);
    assert!(
        fx.take_signals().is_empty(),
        "stopped before its replacement was ready"
    );
    fx.ready(new);
    sup.tick(&mut fx, t);
    assert_eq!(fx.take_signals(), [(old, Signal::SIGTERM)]);
    sup.exited(old, SIGTERM_STATUS, &mut fx, t);
    assert_eq!(pids(&sup), [new]);
}

#[test]
fn max_requests_waits_for_the_min_worker_lifetime() {
    let l = Limits {
        min_worker_lifetime: Duration::from_secs(10),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(1, l);
    let old = fx.spawned[0].1;
    let seen = fx.seen.entry(old).or_default();
    seen.max_requests_reached = true;
    seen.requests = 3;
    // Younger than 10 s: it serves on, not replaced.
    sup.tick(&mut fx, t + Duration::from_secs(1));
    assert_eq!(fx.spawned.len(), 1);
    assert!(fx.counts.is_empty());
    sup.tick(&mut fx, t + Duration::from_secs(10));
    assert!(fx.said("served 3 requests (--max-requests), replacing it"));
    assert_eq!(fx.spawned.len(), 2);
}

#[test]
fn lifetime_and_memory_limits() {
    let l = Limits {
        max_worker_lifetime: Some(Duration::from_secs(3600)),
        evil_reload_on_rss: Some(500 << 20),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(2, l);
    let (a, b) = (fx.spawned[0].1, fx.spawned[1].1);
    fx.rss.insert(b, 600 << 20);
    sup.tick(&mut fx, t);
    assert!(fx.said("uses 600 MB (--evil-reload-on-rss), killing it"));
    assert!(fx.take_signals().contains(&(b, Signal::SIGKILL)));
    sup.tick(&mut fx, t + Duration::from_secs(3601));
    assert!(fx.said("has run 3600s (--max-worker-lifetime), replacing it"));
    assert!(
        sup.workers
            .iter()
            .any(|w| w.pid == a && matches!(w.replacement, Replacement::By(_)))
    );
    let l = Limits {
        reload_on_as: Some(2048 << 20),
        min_worker_lifetime: Duration::from_secs(10),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(2, l);
    let (a, b) = (fx.spawned[0].1, fx.spawned[1].1);
    fx.vsz.insert(a, 1024 << 20);
    fx.vsz.insert(b, 3000 << 20);
    sup.tick(&mut fx, t);
    assert!(
        !fx.said("--reload-on-as"),
        "not before --min-worker-lifetime"
    );
    sup.tick(&mut fx, t + Duration::from_secs(11));
    assert!(fx.said("has an address space of 3000 MB (--reload-on-as), replacing it"));
    assert!(
        !fx.said(&format!("(pid {a}) has an address space")),
        "the worker under the limit stays"
    );
    // --reload-on-rss, as uWSGI looks at it after a request: not before
    // the worker has served one.
    let l = Limits {
        reload_on_rss: Some(10 << 20),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(1, l);
    let a = fx.spawned[0].1;
    fx.rss.insert(a, 20 << 20);
    sup.tick(&mut fx, t);
    assert!(!fx.said("--reload-on-rss"), "not before a request");
    fx.seen.get_mut(&a).unwrap().requests = 1;
    sup.tick(&mut fx, t);
    assert!(fx.said("uses 20 MB (--reload-on-rss), replacing it"));
}

#[test]
fn harakiri_dumps_the_stack_then_kills() {
    let l = Limits {
        harakiri: Some(Duration::from_secs(30)),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(1, l);
    let w = fx.spawned[0].1;
    fx.longest
        .insert(w, (Duration::from_secs(29), "GET /slow".into()));
    sup.tick(&mut fx, t);
    assert!(fx.take_signals().is_empty());
    fx.longest
        .insert(w, (Duration::from_secs(31), "GET /slow".into()));
    sup.tick(&mut fx, t);
    assert_eq!(fx.take_signals(), [(w, Signal::SIGUSR2)]);
    assert_eq!(fx.harakiri, [1]);
    sup.tick(&mut fx, t + HARAKIRI_DUMP_TIME / 2);
    assert!(
        fx.take_signals().is_empty(),
        "killed before the stack was written"
    );
    sup.tick(&mut fx, t + HARAKIRI_DUMP_TIME * 2);
    assert_eq!(fx.take_signals(), [(w, Signal::SIGKILL)]);
    sup.exited(w, SIGKILL_STATUS, &mut fx, t + HARAKIRI_DUMP_TIME * 2);
    assert!(fx.said("by harakiri while running GET /slow"));
    assert_eq!(fx.counts, [(Cause::Harakiri, 1)]);
}

#[test]
fn a_worker_abort_hook_gets_its_grace_before_the_kill() {
    let l = Limits {
        harakiri: Some(Duration::from_secs(30)),
        harakiri_grace: Some(Duration::from_millis(1500)),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(1, l);
    let w = fx.spawned[0].1;
    fx.longest
        .insert(w, (Duration::from_secs(31), "GET /slow".into()));
    sup.tick(&mut fx, t);
    assert_eq!(fx.take_signals(), [(w, Signal::SIGUSR2)]);
    sup.tick(&mut fx, t + Duration::from_secs(1));
    assert!(
        fx.take_signals().is_empty(),
        "killed inside the hook's grace"
    );
    sup.tick(&mut fx, t + Duration::from_secs(2));
    assert_eq!(fx.take_signals(), [(w, Signal::SIGKILL)]);
}

#[test]
fn a_worker_slow_to_stop_is_killed_after_its_mercy() {
    let l = Limits {
        worker_reload_mercy: Duration::from_secs(10),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(2, l);
    assert!(sup.remove_one(&mut fx, t));
    let newest = fx.spawned[1].1;
    assert_eq!(fx.take_signals(), [(newest, Signal::SIGTERM)]);
    sup.tick(&mut fx, t + Duration::from_secs(9));
    assert!(fx.take_signals().is_empty());
    assert_eq!(fx.spawned.len(), 2, "a worker asked to stop was replaced");
    sup.tick(&mut fx, t + Duration::from_secs(11));
    assert_eq!(fx.take_signals(), [(newest, Signal::SIGKILL)]);
}

/// A master re-executed for a reload adopts the old workers.
fn reloaded(kind: ReloadKind, n: usize) -> (Supervisor, Fake, Instant, Vec<Pid>) {
    let t = Instant::now();
    let mut sup = Supervisor::new(n, limits(), false, t);
    let mut fx = Fake::default();
    let old: Vec<Pid> = (1..=n as i32).map(|i| 100 + i).collect();
    sup.adopt(
        old.iter()
            .enumerate()
            .map(|(i, p)| (*p, i as u32 + 1, i, false, false)),
        kind,
        &mut fx,
        t,
    );
    assert_eq!(fx.counts, [(Cause::Reload, n as u64)]);
    (sup, fx, t, old)
}

/// A re-executed master (`broken`: its app failed to load) that took over
/// `workers`: (pid, id, slot, asked to stop, being replaced).
fn adopted(
    processes: usize,
    broken: bool,
    workers: &[(Pid, u32, usize, bool, bool)],
) -> (Supervisor, Fake, Instant) {
    let t = Instant::now();
    let mut sup = Supervisor::new(processes, limits(), broken, t);
    let mut fx = Fake::default();
    sup.adopt(workers.iter().copied(), ReloadKind::Graceful, &mut fx, t);
    (sup, fx, t)
}

#[test]
fn a_graceful_reload_starts_every_replacement_at_once() {
    let (mut sup, mut fx, t, old) = reloaded(ReloadKind::Graceful, 3);
    sup.tick(&mut fx, t);
    assert_eq!(fx.spawned.len(), 3);
    assert!(fx.take_signals().is_empty());
    for (_, new) in fx.spawned.clone() {
        fx.ready(new);
    }
    sup.tick(&mut fx, t);
    let mut stopped = fx.take_signals();
    stopped.sort();
    assert_eq!(
        stopped,
        old.iter()
            .map(|p| (*p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    for p in &old {
        sup.exited(*p, SIGTERM_STATUS, &mut fx, t);
    }
    sup.tick(&mut fx, t + Duration::from_secs(1));
    assert!(fx.said("graceful reload done in 1.00s: 3 worker(s) serving"));
    assert_eq!(fx.notified, ["READY=1"]);
}

#[test]
fn a_reload_comes_back_with_the_configured_worker_count() {
    // Four old workers (the file said 4, or SIGTTIN added two); the new
    // configuration says 2: two are replaced, the other two stop.
    let (mut sup, mut fx, t) = adopted(
        2,
        false,
        &[
            (104, 4, 3, false, false),
            (101, 1, 0, false, false),
            (103, 3, 2, false, false),
            (102, 2, 1, false, false),
        ],
    );
    let mut stopped = fx.take_signals();
    stopped.sort();
    assert_eq!(stopped, [(103, Signal::SIGTERM), (104, Signal::SIGTERM)]);
    sup.tick(&mut fx, t);
    assert_eq!(
        fx.spawned.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2]
    );
    for (_, new) in fx.spawned.clone() {
        fx.ready(new);
    }
    sup.tick(&mut fx, t);
    for p in [101, 102, 103, 104] {
        sup.exited(p, SIGTERM_STATUS, &mut fx, t);
    }
    sup.tick(&mut fx, t + Duration::from_secs(1));
    assert!(fx.said("2 worker(s) serving"), "{:?}", fx.said);
    assert_eq!(sup.workers.len(), 2);
    // SIGTTOU now counts from the true number.
    assert!(sup.remove_one(&mut fx, t));
    assert_eq!(sup.processes, 1);
}

#[test]
fn a_chain_reload_replaces_one_worker_at_a_time() {
    let (mut sup, mut fx, t, old) = reloaded(ReloadKind::Chain, 3);
    for round in 0..3 {
        sup.tick(&mut fx, t);
        sup.tick(&mut fx, t);
        assert_eq!(
            fx.spawned.len(),
            round + 1,
            "round {round}: more than one at a time"
        );
        let new = fx.spawned[round].1;
        fx.ready(new);
        sup.tick(&mut fx, t);
        let stopped = fx.take_signals();
        assert_eq!(stopped.len(), 1);
        let (gone, sig) = stopped[0];
        assert_eq!(sig, Signal::SIGTERM);
        assert!(old.contains(&gone));
        // The next replacement waits until the old worker has ended.
        sup.tick(&mut fx, t);
        assert_eq!(fx.spawned.len(), round + 1);
        sup.exited(gone, SIGTERM_STATUS, &mut fx, t);
    }
    sup.tick(&mut fx, t);
    assert!(fx.said("chain reload done"));
    assert_eq!(sup.workers.len(), 3);
}

#[test]
fn a_brutal_reload_starts_new_workers_without_waiting() {
    let (mut sup, mut fx, t, old) = reloaded(ReloadKind::Brutal, 2);
    sup.tick(&mut fx, t);
    assert_eq!(fx.spawned.len(), 2);
    assert!(
        fx.take_signals().is_empty(),
        "they were killed before the re-exec"
    );
    for p in &old {
        sup.exited(*p, SIGKILL_STATUS, &mut fx, t);
    }
    assert!(fx.counts.iter().all(|(c, _)| *c == Cause::Reload));
}

#[test]
fn a_graceful_stop_waits_then_kills_after_the_mercy() {
    let l = Limits {
        reload_mercy: Duration::from_secs(5),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(2, l);
    sup.stop(StopKind::Graceful, &mut fx, t);
    assert_eq!(fx.notified.last().map(String::as_str), Some("STOPPING=1"));
    assert!(fx.take_signals().iter().all(|(_, s)| *s == Signal::SIGTERM));
    assert!(!sup.stop_tick(&mut fx, t + Duration::from_secs(4)));
    assert!(fx.take_signals().is_empty());
    assert!(!sup.stop_tick(&mut fx, t + Duration::from_secs(6)));
    assert_eq!(fx.take_signals().len(), 2);
    for (_, p) in fx.spawned.clone() {
        sup.exited(p, SIGKILL_STATUS, &mut fx, t + Duration::from_secs(6));
    }
    assert!(sup.stop_tick(&mut fx, t + Duration::from_secs(6)));
    assert!(fx.counts.is_empty(), "a stop is not a crash");
}

#[test]
fn after_a_failed_reload_the_old_workers_keep_serving() {
    let (mut sup, mut fx, t) = adopted(
        2,
        true,
        &[(101, 1, 0, false, false), (102, 2, 1, false, false)],
    );
    sup.tick(&mut fx, t);
    assert!(fx.spawned.is_empty() && fx.signals.is_empty());
    assert!(sup.reload.is_none());
}

#[test]
fn health_passes_once_every_worker_serves_and_while_one_does() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(2, limits(), false, t0);
    let mut fx = Fake::default();
    assert_eq!(sup.health(), Health::Starting);
    sup.tick(&mut fx, t0);
    let first = fx.spawned[0].1;
    fx.ready(first);
    sup.tick(&mut fx, t0);
    // One of two is not enough to start with (nor for READY=1).
    assert_eq!(sup.health(), Health::Starting);
    fx.ready(fx.spawned[1].1);
    sup.tick(&mut fx, t0);
    assert_eq!(
        (sup.health(), fx.notified.clone()),
        (Health::Serving, vec!["READY=1".to_string()])
    );
    // Afterwards one serving worker is enough; none is not.
    sup.exited(first, SIGKILL_STATUS, &mut fx, t0);
    assert_eq!(sup.health(), Health::Serving);
    let second = fx.spawned[1].1;
    sup.exited(second, SIGKILL_STATUS, &mut fx, t0);
    assert_eq!(sup.health(), Health::NoWorker);
}

#[test]
fn a_drain_fails_the_health_check_and_serves_on_until_the_delay() {
    let delay = Duration::from_secs(5);
    let (mut sup, mut fx, t) = running(
        2,
        Limits {
            drain_delay: Some(delay),
            ..limits()
        },
    );
    sup.stop(StopKind::Graceful, &mut fx, t);
    assert_eq!(sup.health(), Health::Draining);
    assert!(sup.stopping());
    assert!(fx.notified.contains(&"STOPPING=1".to_string()));
    // The workers go on serving through the delay.
    assert!(!sup.stop_tick(&mut fx, t + delay - Duration::from_millis(1)));
    assert!(fx.take_signals().is_empty());
    assert!(!sup.stop_tick(&mut fx, t + delay));
    let mut told = fx.take_signals();
    told.sort();
    assert_eq!(
        told,
        pids(&sup)
            .into_iter()
            .map(|p| (p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    for pid in pids(&sup) {
        sup.exited(pid, exit_status(0), &mut fx, t + delay);
    }
    assert!(sup.stop_tick(&mut fx, t + delay));
}

#[test]
fn an_immediate_stop_cuts_a_drain_short() {
    let (mut sup, mut fx, t) = running(
        1,
        Limits {
            drain_delay: Some(Duration::from_secs(30)),
            ..limits()
        },
    );
    sup.stop(StopKind::Graceful, &mut fx, t);
    sup.stop(StopKind::Immediate, &mut fx, t);
    let pid = pids(&sup)[0];
    assert_eq!(fx.take_signals(), [(pid, Signal::SIGKILL)]);
    // Out of the drain: the master's loop supervises no more (it went on
    // doing so, replaced the killed worker, and waited out the drain).
    assert!(sup.workers_stopping() && !sup.draining());
    sup.exited(pid, SIGKILL_STATUS, &mut fx, t);
    assert!(sup.stop_tick(&mut fx, t + Duration::from_secs(1)));
}

#[test]
fn without_a_drain_delay_a_stop_begins_at_once() {
    let (mut sup, mut fx, t) = running(1, limits());
    sup.stop(StopKind::Graceful, &mut fx, t);
    assert_eq!(fx.take_signals(), [(pids(&sup)[0], Signal::SIGTERM)]);
    assert_eq!(sup.health(), Health::Draining);
}

#[test]
fn workers_taken_over_after_a_reload_keep_the_health_check_passing() {
    let (sup, _, _) = adopted(
        2,
        false,
        &[(501, 1, 0, false, false), (502, 2, 1, false, false)],
    );
    assert_eq!(sup.health(), Health::Serving);
}

#[test]
fn a_draining_master_replaces_a_crashed_worker_and_ends_when_none_is_left() {
    let delay = Duration::from_secs(10);
    let (mut sup, mut fx, t) = running(
        1,
        Limits {
            drain_delay: Some(delay),
            ..limits()
        },
    );
    sup.stop(StopKind::Graceful, &mut fx, t);
    let first = pids(&sup)[0];
    sup.exited(first, SIGKILL_STATUS, &mut fx, t);
    sup.tick(&mut fx, t + Duration::from_secs(2));
    assert_eq!(
        fx.spawned.len(),
        2,
        "the crashed worker is replaced while draining"
    );
    // Should every worker go during the drain, the stop proper begins.
    let second = pids(&sup)[0];
    sup.exited(second, exit_status(0), &mut fx, t + Duration::from_secs(3));
    assert!(sup.stop_tick(&mut fx, t + Duration::from_secs(3)));
    assert!(sup.workers_stopping());
}

#[test]
fn a_fatal_app_error_stops_without_draining() {
    let t = Instant::now();
    let limits = Limits {
        drain_delay: Some(Duration::from_secs(30)),
        ..limits()
    };
    let mut sup = Supervisor::new(1, limits.clone(), false, t);
    let mut fx = Fake::default();
    sup.tick(&mut fx, t);
    // A booting hook (post_fork) raised, before the worker was ready.
    let pid = fx.spawned[0].1;
    sup.exited(pid, exit_status(EXIT_APP_STARTUP), &mut fx, t);
    assert!(sup.workers_stopping() && sup.fatal.is_some());
    assert!(sup.stop_tick(&mut fx, t));
    // A ready worker's 3 is the app's own exit mid-request: replaced.
    let (mut sup, mut fx, t) = running(1, limits);
    let pid = pids(&sup)[0];
    sup.exited(pid, exit_status(EXIT_APP_STARTUP), &mut fx, t);
    assert!(sup.fatal.is_none() && !sup.workers_stopping());
}

#[test]
fn a_worker_that_became_ready_and_died_between_two_ticks_was_ready() {
    // Its slot says ready, but no tick read it before the reap: its exit 3
    // is the app's own, not a failed start (CI saw the server stop).
    let t = Instant::now();
    let mut sup = Supervisor::new(1, limits(), false, t);
    let mut fx = Fake::default();
    sup.tick(&mut fx, t);
    let pid = fx.spawned[0].1;
    fx.seen.entry(pid).or_default().ready = true;
    sup.exited(
        pid,
        exit_status(EXIT_APP_STARTUP),
        &mut fx,
        t + Duration::from_secs(1),
    );
    assert!(sup.fatal.is_none() && !sup.workers_stopping());
    assert!(
        fx.said("while idle"),
        "not said to have died before it was ready"
    );
}

#[test]
fn a_lazy_startup_failure_stops_only_before_any_worker_was_ready() {
    // Before: nothing can serve, and the port would stay bound with
    // nothing behind it (uvicorn and Gunicorn stop).
    let t0 = Instant::now();
    let mut sup = Supervisor::new(2, limits(), false, t0);
    let mut fx = Fake::default();
    sup.tick(&mut fx, t0);
    let pid = fx.spawned[0].1;
    sup.exited(pid, exit_status(EXIT_LIFESPAN_STARTUP), &mut fx, t0);
    assert!(sup.fatal.is_some() && sup.workers_stopping());
    // After: the others serve, and this one is tried again.
    let (mut sup, mut fx, t) = running(2, limits());
    let pid = pids(&sup)[0];
    sup.exited(pid, exit_status(EXIT_LIFESPAN_STARTUP), &mut fx, t);
    assert!(sup.fatal.is_none() && !sup.workers_stopping());
}

#[test]
fn deaths_soon_after_readiness_still_back_off() {
    // A worker that becomes ready and dies 0.4 s later is as broken as one
    // that never gets ready: its restarts wait longer each time.
    let t0 = Instant::now();
    let mut sup = Supervisor::new(1, limits(), false, t0);
    let mut fx = Fake::default();
    let mut t = t0;
    sup.tick(&mut fx, t);
    for expected in [200, 400, 800] {
        let pid = sup.workers[0].pid;
        fx.ready(pid);
        t += Duration::from_millis(100);
        sup.tick(&mut fx, t);
        t += Duration::from_millis(300);
        sup.exited(pid, exit_status(1), &mut fx, t);
        let starts = fx.spawned.len();
        sup.tick(&mut fx, t + Duration::from_millis(expected - 1));
        assert_eq!(fx.spawned.len(), starts, "restarted before {expected} ms");
        t += Duration::from_millis(expected);
        sup.tick(&mut fx, t);
        assert_eq!(fx.spawned.len(), starts + 1);
    }
    assert!(fx.said("(3 in a row); no worker starts for 0.8s"));
    // One that lives past QUICK_DEATH ends the run.
    let pid = sup.workers[0].pid;
    fx.ready(pid);
    sup.tick(&mut fx, t + QUICK_DEATH * 2);
    let said = fx.said.len();
    let starts = fx.spawned.len();
    sup.exited(pid, exit_status(1), &mut fx, t + QUICK_DEATH * 3);
    sup.tick(&mut fx, t + QUICK_DEATH * 3);
    assert!(!fx.said[said..].iter().any(|l| l.contains("in a row")));
    assert_eq!(fx.spawned.len(), starts + 1, "restarted at once");
}

#[test]
fn a_second_sigterm_spares_workers_already_finishing() {
    // A reload's (or a recycle's) old worker finishes its requests; a stop
    // that follows must not send it the second SIGTERM that cuts them.
    let (mut sup, mut fx, t) = running(2, limits());
    assert!(sup.remove_one(&mut fx, t));
    let asked = fx.spawned[1].1;
    let other = fx.spawned[0].1;
    assert_eq!(fx.take_signals(), [(asked, Signal::SIGTERM)]);
    sup.signal_all(Signal::SIGTERM, &mut fx, t);
    assert_eq!(fx.take_signals(), [(other, Signal::SIGTERM)]);
    // SIGKILL still reaches every one.
    sup.signal_all(Signal::SIGKILL, &mut fx, t);
    assert_eq!(fx.take_signals().len(), 2);
}

#[test]
fn harakiri_holds_for_a_worker_asked_to_stop() {
    let l = Limits {
        harakiri: Some(Duration::from_secs(30)),
        ..limits()
    };
    let (mut sup, mut fx, t) = running(2, l);
    assert!(sup.remove_one(&mut fx, t));
    let asked = fx.spawned[1].1;
    fx.take_signals();
    fx.longest
        .insert(asked, (Duration::from_secs(31), "GET /stuck".into()));
    sup.tick(&mut fx, t + Duration::from_secs(1));
    assert_eq!(fx.take_signals(), [(asked, Signal::SIGUSR2)]);
    sup.tick(&mut fx, t + Duration::from_secs(1) + HARAKIRI_DUMP_TIME * 2);
    assert_eq!(fx.take_signals(), [(asked, Signal::SIGKILL)]);
    // It was leaving: its end is no crash to replace or back off from.
    let later = t + Duration::from_secs(2) + HARAKIRI_DUMP_TIME * 2;
    sup.exited(asked, SIGKILL_STATUS, &mut fx, later);
    sup.tick(&mut fx, later);
    assert_eq!(fx.spawned.len(), 2);
    assert!(!fx.said("in a row"));
}

#[test]
fn a_reload_during_a_reload_replaces_only_the_workers_not_leaving() {
    // Four workers: one old one already asked to stop (finishing its
    // requests), three to replace. Three replacements, not four: the
    // worker count comes back to --processes.
    let (mut sup, mut fx, t) = adopted(
        3,
        false,
        &[
            (101, 1, 0, true, false),
            (102, 1, 1, false, false),
            (103, 2, 2, false, false),
            (104, 3, 3, false, false),
        ],
    );
    assert_eq!(fx.counts, [(Cause::Reload, 3)]);
    sup.tick(&mut fx, t);
    assert_eq!(fx.spawned.len(), 3);
    assert!(
        fx.take_signals().is_empty(),
        "the leaving worker is not asked twice"
    );
    for (_, pid) in fx.spawned.clone() {
        fx.ready(pid);
    }
    let later = t + Duration::from_secs(1);
    sup.tick(&mut fx, later);
    sup.exited(101, SIGTERM_STATUS, &mut fx, later);
    for pid in [102, 103, 104] {
        sup.exited(pid, SIGTERM_STATUS, &mut fx, later);
    }
    sup.tick(&mut fx, later + Duration::from_secs(1));
    assert_eq!(sup.workers.len(), 3);
    assert_eq!(fx.spawned.len(), 3);
}

#[test]
fn after_a_failed_reload_a_dead_worker_is_named_and_the_last_one_stops_the_master() {
    let (mut sup, mut fx, t) = adopted(
        2,
        true,
        &[(101, 1, 0, false, false), (102, 2, 1, false, false)],
    );
    sup.exited(101, exit_status(1), &mut fx, t);
    assert!(fx.said("worker 1 cannot be replaced"));
    assert!(fx.said("1 worker(s) left"));
    assert!(sup.fatal.is_none());
    sup.exited(102, SIGKILL_STATUS, &mut fx, t);
    assert_eq!(
        sup.fatal.as_deref(),
        Some("no worker left, and the app fails to load")
    );
    assert!(fx.spawned.is_empty());
}

#[test]
fn a_reload_while_a_worker_is_being_replaced_asks_it_to_stop_and_replaces_only_its_replacement() {
    // Worker 1 (101) was being replaced by 104, not ready yet (a recycle or
    // a chain reload under way): 101 is asked to stop, and 104, 102 and 103
    // are replaced: three replacements for --processes 3.
    let (mut sup, mut fx, t) = adopted(
        3,
        false,
        &[
            (101, 1, 0, false, true),
            (102, 2, 1, false, false),
            (103, 3, 2, false, false),
            (104, 1, 3, false, false),
        ],
    );
    assert_eq!(fx.take_signals(), [(101, Signal::SIGTERM)]);
    assert_eq!(fx.counts, [(Cause::Reload, 3)]);
    sup.tick(&mut fx, t);
    assert_eq!(fx.spawned.len(), 3);
}
