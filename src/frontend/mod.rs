//! The front ends: each turns bytes from a socket into `Request`s for a
//! `Handler`, and its `Response`s back into bytes.

pub mod gateway;
pub mod http;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The most of a refused or unread body read and let go before a
/// connection is closed anyway.
pub(crate) const DRAIN_MAX: u64 = 1 << 30;

/// How much of what a peer still sends `drain_input` reads and lets go.
pub(crate) struct DrainLimits {
    /// Bytes, at most.
    pub max: u64,
    /// The longest wait for each read: a peer that pauses this long is done.
    pub each: Duration,
    /// When to stop whatever comes, if ever.
    pub until: Option<Instant>,
}

/// Reads and drops what a peer still sends after its answer went out with
/// its input unread (a 413, a body the app left): closed with unread bytes,
/// the connection is reset by the kernel, and the peer may lose the answer
/// (nginx reports a 502; a browser, a reset). Ends at the peer's end, a
/// read error, or any of `limits`.
pub(crate) async fn drain_input<R: AsyncRead + Unpin>(rd: &mut R, limits: DrainLimits) {
    let mut left = limits.max;
    let mut scratch = vec![0u8; 16 * 1024];
    while left > 0 {
        let mut next = Instant::now() + limits.each;
        if let Some(until) = limits.until {
            next = next.min(until);
        }
        let want = scratch
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        match tokio::time::timeout_at(next, rd.read(&mut scratch[..want])).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n as u64),
            _ => return,
        }
    }
}

/// Has the heap trimmed once the connections parking (or ending, over any
/// protocol) about now are done: their buffers, freed between blocks still
/// in use, would
/// otherwise stay in the worker's resident set. The trim waits for a
/// `QUIET_AFTER` with none more (the connections of one burst park over
/// about a second), five at most, and for `TRIM_EVERY` since the last
/// one: it locks the heap while it walks it (about a microsecond per free
/// block), so it must stay rare. None while no connection parks or ends.
pub(crate) fn release_freed_memory_soon() {
    static DUE: AtomicBool = AtomicBool::new(false);
    static PARKED: AtomicU64 = AtomicU64::new(0);
    static LAST: std::sync::Mutex<Option<tokio::time::Instant>> = std::sync::Mutex::new(None);
    PARKED.fetch_add(1, Ordering::Relaxed);
    if DUE.swap(true, Ordering::Relaxed) {
        return;
    }
    tokio::spawn(async {
        let last = *LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = last {
            tokio::time::sleep_until(last + TRIM_EVERY).await;
        }
        let mut seen = PARKED.load(Ordering::Relaxed);
        for _ in 0..5 {
            tokio::time::sleep(QUIET_AFTER).await;
            let now = PARKED.load(Ordering::Relaxed);
            if now == seen {
                break;
            }
            seen = now;
        }
        DUE.store(false, Ordering::Relaxed);
        *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
        let _ = tokio::task::spawn_blocking(crate::sys::heap::release_free_memory).await;
        // On this thread: the parked connections' state was freed here.
        crate::sys::heap::release_allocator_memory();
    });
}

/// The least time between two trims of the heap after parking.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// How long with no connection parking or ending makes a burst over
/// (an HTTP connection parks after a second idle).
const QUIET_AFTER: Duration = Duration::from_secs(1);
