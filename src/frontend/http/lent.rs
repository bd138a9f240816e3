//! A connection's stream lent to hyper's I/O stack, so that an idle
//! connection can be parked (conn.rs): taken from hyper, whose state is
//! freed, while the socket stays open, registered with the event loop as
//! it was.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::context::ConnCtx;
use super::sendfile::SendFile;

/// Where a parked connection's stream comes back to.
pub(super) type Home<S> = Arc<Mutex<Option<S>>>;

pub(super) struct Lent<S> {
    /// Some until dropped.
    stream: Option<S>,
    ctx: Arc<ConnCtx>,
    home: Home<S>,
}

impl<S> Lent<S> {
    pub(super) fn new(stream: S, ctx: Arc<ConnCtx>, home: Home<S>) -> Lent<S> {
        Lent {
            stream: Some(stream),
            ctx,
            home,
        }
    }

    fn stream(&self) -> &S {
        self.stream.as_ref().expect("lent until dropped")
    }

    fn pinned(&mut self) -> Pin<&mut S>
    where
        S: Unpin,
    {
        Pin::new(self.stream.as_mut().expect("lent until dropped"))
    }
}

/// Dropped with hyper's connection: the stream goes home if the
/// connection is being parked, or is to linger (`ConnCtx::linger`), else
/// it closes.
impl<S> Drop for Lent<S> {
    fn drop(&mut self) {
        if self.ctx.parking.load(std::sync::atomic::Ordering::Relaxed)
            || self.ctx.linger.load(std::sync::atomic::Ordering::Relaxed)
        {
            *self.home.lock().unwrap_or_else(|e| e.into_inner()) = self.stream.take();
        }
    }
}

impl<S: AsRawFd> AsRawFd for Lent<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.stream().as_raw_fd()
    }
}

impl<S: SendFile> SendFile for Lent<S> {
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: RawFd,
        offset: &mut libc::off_t,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let sent = self.stream().poll_sendfile(cx, file, offset, len);
        self.ctx.note_write(sent.is_pending());
        sent
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lent<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.pinned().poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lent<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = self.pinned().poll_write(cx, buf);
        self.ctx.note_write(written.is_pending());
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = self.pinned().poll_write_vectored(cx, bufs);
        self.ctx.note_write(written.is_pending());
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream().is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pinned().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pinned().poll_shutdown(cx)
    }
}
