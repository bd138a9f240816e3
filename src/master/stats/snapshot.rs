//! What the stats are made from, and what a client asks for.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::listen::Socket;
use crate::master::scoreboard::{Counters, Scoreboard};

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

impl Snapshot<'_> {
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
