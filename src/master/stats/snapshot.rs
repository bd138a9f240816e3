//! What the stats are made from, and what a client asks for.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::handlers::fastcgi::PoolCounters;
use crate::listen::Socket;
use crate::master::scoreboard::{Counters, MAX_POOLS, Scoreboard};

/// A worker as the master sees it, for the stats.
pub struct WorkerView {
    pub id: u32,
    pub pid: i32,
    pub slot: usize,
    pub ready: bool,
    pub stopping: bool,
}

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Json,
    Metrics,
}

/// What the stats are made from.
pub struct Snapshot<'a> {
    pub cfg: &'a Config,
    pub sb: &'a Scoreboard,
    pub workers: Vec<WorkerView>,
    pub sockets: &'a [Socket],
}

/// A `--fastcgi-app` pool's figures, summed over the workers.
pub struct PoolFigures {
    /// Its command, as the log names it.
    pub name: String,
    pub mount: String,
    pub processes: u64,
    pub busy: u64,
    pub idle: u64,
    pub waiting: u64,
    /// The most requests that waited at once in one worker.
    pub max_waiting: u64,
    pub requests: u64,
    pub slow_requests: u64,
    pub timeouts: u64,
    pub max_children_reached: u64,
    pub process_starts: u64,
    pub process_exits: u64,
    pub process_recycles: u64,
}

impl Snapshot<'_> {
    /// The FastCGI pools' figures, in `--fastcgi-app` order (the first
    /// `MAX_POOLS`).
    pub(super) fn pools(&self) -> Vec<PoolFigures> {
        let h = self.sb.header();
        self.cfg
            .fastcgi
            .apps
            .iter()
            .take(MAX_POOLS)
            .enumerate()
            .map(|(i, app)| {
                // The workers' figures, and the manager's (the processes).
                let live: Vec<&PoolCounters> = self
                    .workers
                    .iter()
                    .map(|w| &self.sb.slot(w.slot).pools[i])
                    .chain([&h.pool_managers[i]])
                    .collect();
                let gone = &h.retired_pools[i];
                let gauge = |f: &dyn Fn(&PoolCounters) -> &AtomicU64| {
                    live.iter().map(|p| load(f(p))).sum::<u64>()
                };
                let counter = |f: &dyn Fn(&PoolCounters) -> &AtomicU64| load(f(gone)) + gauge(f);
                let (processes, busy) = (gauge(&|p| &p.processes), gauge(&|p| &p.busy));
                PoolFigures {
                    name: app.command.join(" "),
                    mount: app.mount.clone(),
                    processes,
                    busy,
                    idle: processes.saturating_sub(busy),
                    waiting: gauge(&|p| &p.waiting),
                    max_waiting: live
                        .iter()
                        .map(|p| load(&p.max_waiting))
                        .chain([load(&gone.max_waiting)])
                        .max()
                        .unwrap_or(0),
                    requests: counter(&|p| &p.requests),
                    slow_requests: counter(&|p| &p.slow_requests),
                    timeouts: counter(&|p| &p.timeouts),
                    max_children_reached: counter(&|p| &p.max_children_reached),
                    process_starts: counter(&|p| &p.process_starts),
                    process_exits: counter(&|p| &p.process_exits),
                    process_recycles: counter(&|p| &p.process_recycles),
                }
            })
            .collect()
    }

    /// A counter summed over the workers gone and the live ones.
    pub(super) fn total(&self, f: &dyn Fn(&Counters) -> u64) -> u64 {
        f(&self.sb.header().retired)
            + self
                .workers
                .iter()
                .map(|w| f(&self.sb.slot(w.slot).counters))
                .sum::<u64>()
    }
}

pub(super) fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
