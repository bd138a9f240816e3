//! Whether this process is a child an app forked from a worker: one that
//! returns from the app into the server instead of exiting (`os.fork()`
//! with no `os._exit` in the child) would go on serving as a worker the
//! master knows nothing of, past harakiri, recycling and reloads.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static FORKED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_fork_in_child() {
    // Async-signal-safe: one atomic store.
    FORKED.store(true, Ordering::Relaxed);
}

/// From now on, a fork in this process marks its child. Called in each
/// worker once it has started (its own fork from the master is not one).
pub fn watch() {
    static REGISTERED: Once = Once::new();
    FORKED.store(false, Ordering::Relaxed);
    REGISTERED.call_once(|| {
        // SAFETY: pthread_atfork keeps a pointer to a function with the C
        // ABI that lives as long as the program, and calls it in the child
        // of each fork(), where it does one atomic store; the other two
        // handlers are none.
        unsafe {
            libc::pthread_atfork(None, None, Some(note_fork_in_child));
        }
    });
}

/// True in a child forked after `watch`.
pub fn in_forked_child() -> bool {
    FORKED.load(Ordering::Relaxed)
}
