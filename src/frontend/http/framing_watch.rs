//! The I/O layer under hyper that watches an HTTP/1.1 connection's request
//! bytes ([`FramingTracker`]) for a head hyper would serve but that must be
//! refused: one with both Content-Length and Transfer-Encoding, which
//! hyper reads as chunked without a trace, or with a bare LF, extra empty
//! lines or a raw non-ASCII target. It notes the head in the connection's
//! context, and the service refuses that request with 400 (`on_request`).
//! Everything else passes through untouched.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::context::ConnCtx;
use crate::proto::h1_framing::FramingTracker;

pub(super) struct FramingWatch<S> {
    inner: S,
    tracker: FramingTracker,
    ctx: Arc<ConnCtx>,
}

impl<S> FramingWatch<S> {
    pub(super) fn new(inner: S, ctx: Arc<ConnCtx>) -> FramingWatch<S> {
        let settings = &ctx.settings;
        // The limits hyper is given (`serve_http1`).
        let tracker = FramingTracker::new(settings.max_head.max(8192), settings.max_headers);
        FramingWatch {
            inner,
            tracker,
            ctx,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.tracker.following() {
            if self.ctx.switched.load(Ordering::Relaxed) {
                // After a 101 the bytes are the new protocol's: nothing
                // to follow, and nothing to keep.
                self.tracker.stop();
            } else if let Some(flawed) = self.tracker.feed(&buf.filled()[before..]) {
                // (At most one per connection: the tracker stops after it.)
                let _ = self.ctx.flawed_head.set(flawed);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
