//! The signal mask.

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

/// Unblocks every signal in this thread: a worker does this once it counts
/// its stops (`count_stops`), and signals that waited, blocked, since its
/// fork (a stop sent early) are delivered now.
pub fn unblock_all() {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

static STOPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static COUNTING: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// In a new worker, before it unblocks its signals and loads the app:
/// counts every SIGTERM from now on, so that a stop that comes before the
/// serving loop's own handler is neither lost nor fatal (`stops`).
pub fn count_stops() {
    COUNTING.get_or_init(|| {
        // SAFETY: the action only adds to an atomic counter, which is
        // async-signal-safe; it allocates, locks and blocks nothing.
        let _ = unsafe {
            signal_hook::low_level::register(signal_hook::consts::SIGTERM, || {
                STOPS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            })
        };
    });
}

/// How many SIGTERMs arrived since `count_stops`; `None` if not counting.
pub fn stops() -> Option<usize> {
    COUNTING
        .get()
        .map(|()| STOPS.load(std::sync::atomic::Ordering::Acquire))
}

/// When this process's stop must be over: its master kills it then. Set
/// when the stop begins, and brought forward if the stop turns out to be
/// the master's, with less time, rather than a reload's.
static STOP_DEADLINE: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

pub fn set_stop_deadline(at: std::time::Instant) {
    *STOP_DEADLINE.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
}

/// The time left before the stop's deadline, if a stop began.
pub fn stop_time_left() -> Option<std::time::Duration> {
    STOP_DEADLINE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|d| d.saturating_duration_since(std::time::Instant::now()))
}
