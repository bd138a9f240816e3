//! The signal mask.

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

/// Unblocks every signal in this thread: a worker does this once its own
/// handlers are in place, and signals that waited, blocked, since its fork
/// (a stop sent early) are delivered now.
pub fn unblock_all() {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
