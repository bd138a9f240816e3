//! The front ends: each turns bytes from a socket into `Request`s for a
//! `Handler`, and its `Response`s back into bytes.

pub mod gateway;
pub mod http;
pub mod tls;

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
