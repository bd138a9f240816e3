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

static START_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Records the directory oxgate was started in, before `--chdir` moves it:
/// a master re-executing itself on reload starts again from there, so a
/// relative config file or script path on its command line still resolves.
pub fn remember_start_dir() {
    if let Ok(dir) = std::env::current_dir() {
        let _ = START_DIR.set(dir);
    }
}

/// Where oxgate was started (the current directory if not recorded).
pub fn start_dir() -> std::path::PathBuf {
    START_DIR
        .get()
        .cloned()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| "/".into())
}

/// Moves the calling thread, and what it starts from now on, to
/// SCHED_BATCH (`--sched-batch`), or says why it keeps the usual policy.
pub fn sched_batch_or_say(who: &str) {
    if let Err(e) = crate::sys::sched::batch_this_thread() {
        crate::say!(
            "oxgate: {who}: cannot switch to SCHED_BATCH ({e}); keeping the usual scheduling policy (--sched-batch=false stops trying)"
        );
    }
}
