//! The workers' way to wake the master at once when the scoreboard holds
//! news for it (a worker ready, one asking to be replaced), instead of at
//! its next tick: with a tick of 100 ms, a worker past --max-requests
//! served hundreds more requests before its replacement was even started.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

/// (the master's end, the workers' end), made before the first fork.
static WAKE: OnceLock<(UnixDatagram, UnixDatagram)> = OnceLock::new();

/// Makes the pair; the workers forked from now on inherit it. A master
/// image after a reload makes its own: the workers it adopts wake the
/// previous image's, which nobody reads, and are seen at the next tick.
pub fn install() {
    if let Ok((read, write)) = UnixDatagram::pair() {
        let _ = read.set_nonblocking(true);
        let _ = write.set_nonblocking(true);
        let _ = WAKE.set((read, write));
    }
}

/// The master's end, to poll.
pub fn fd() -> Option<RawFd> {
    WAKE.get().map(|(read, _)| read.as_raw_fd())
}

/// Empties the master's end.
pub fn drain() {
    if let Some((read, _)) = WAKE.get() {
        let mut buf = [0u8; 64];
        while read.recv(&mut buf).is_ok_and(|n| n > 0) {}
    }
}

/// From a worker: the master looks at the scoreboard now. A full queue
/// means a wake-up is pending already.
pub fn poke() {
    if let Some((_, write)) = WAKE.get() {
        // Non-blocking since `install`.
        let _ = write.send(&[1]);
    }
}
