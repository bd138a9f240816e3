//! `--max-connections`: how many connections a worker holds open at once.
//! Past it, its accept loops stop accepting, and new connections wait in
//! the listen backlog (served as soon as one closes, or by another worker)
//! rather than being taken and refused: nothing is lost, and the kernel's
//! backlog, not the worker's file descriptors, absorbs the surge.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Notify, mpsc};

/// Where this process counts the times it stopped accepting at the limit,
/// for the stats and metrics: its scoreboard slot, set by the worker.
pub static REACHED_COUNTER: OnceLock<&'static AtomicU64> = OnceLock::new();

pub(super) struct ConnLimit {
    open: AtomicUsize,
    max: usize,
    freed: Notify,
    /// The limit is logged once a minute at most.
    logged_at: crate::log::say::Throttle,
}

/// One open connection's place; freed when the connection ends. It also
/// holds the connection's share of the worker's liveness (a stop waits
/// until every one is gone).
pub(super) struct Slot {
    limit: Arc<ConnLimit>,
    _alive: mpsc::Sender<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.limit.open.fetch_sub(1, Ordering::Relaxed) == self.limit.max {
            self.limit.freed.notify_waiters();
        }
    }
}

impl ConnLimit {
    pub(super) fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            open: AtomicUsize::new(0),
            max: max.max(1),
            freed: Notify::new(),
            logged_at: crate::log::say::Throttle::new(),
        })
    }

    pub(super) fn has_room(&self) -> bool {
        self.open.load(Ordering::Relaxed) < self.max
    }

    /// Returns once a connection may be accepted.
    pub(super) async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.has_room() {
                return;
            }
            self.log_full();
            freed.await;
        }
    }

    fn log_full(&self) {
        if self.logged_at.ready(60) {
            crate::say!(
                "oxgate: worker at --max-connections {}: new connections wait in the listen backlog",
                self.max
            );
        }
    }

    pub(super) fn take(self: &Arc<Self>, alive: mpsc::Sender<()>) -> Slot {
        // Counted as the limit is reached, once however many accept loops
        // then wait.
        if self.open.fetch_add(1, Ordering::Relaxed) + 1 == self.max
            && let Some(counter) = REACHED_COUNTER.get()
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Slot {
            limit: self.clone(),
            _alive: alive,
        }
    }
}

/// The default: what the open-files limit leaves after the worker's own
/// files (logs, the app's files, pool sockets).
pub fn default_max() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    (soft.min(1 << 20) as usize).saturating_sub(64).max(16)
}
