//! Whether this process is a worker or the master.

use std::sync::atomic::{AtomicBool, Ordering};

static IS_WORKER: AtomicBool = AtomicBool::new(false);

/// Set in a worker right after the fork.
pub fn mark_worker() {
    IS_WORKER.store(true, Ordering::Relaxed);
}

pub fn is_worker() -> bool {
    IS_WORKER.load(Ordering::Relaxed)
}
