//! Batched flushing: a connection's response waits until the event loop has
//! run the other connections that were ready, then they are all written.
//!
//! Writing each response the moment it is ready wakes the client side once
//! per response. When the app takes a while (Flask: ~60 µs), the client is
//! idle between responses, and each wake-up is a cross-CPU interrupt that
//! cost ~10 µs of kernel time per request here (perf: sock_def_readable).
//! bjoern's event loop batches by construction; this gives oxgate the same.
//! Under light load a flush waits for nothing: the flusher is the only
//! other task ready. A response produced quickly (under `BATCH_AFTER` from
//! the read that brought its request) is written at once: the client is
//! then still busy, and the extra poll would cost more than it saves
//! (hello-world: +1.5 µs of user CPU per request).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::context::TaskCounter;
use super::sendfile::{FileQueue, SendFile, is_placeholder};

/// Writes above this size go straight to the socket: batching is for small
/// responses, copying large bodies would only cost.
const BATCH_MAX: usize = 16 * 1024;
/// Responses that took longer than this to produce wait for the batch.
const BATCH_AFTER: Duration = Duration::from_micros(20);
/// The write buffer a connection keeps between responses, at most.
const KEEP_ROOM: usize = 4096;

/// The worker's queue of connections waiting for their turn to flush.
#[derive(Default)]
pub struct FlushQueue {
    waiting: Mutex<Vec<(Arc<AtomicBool>, Waker)>>,
    notify: Notify,
}

impl FlushQueue {
    /// Runs forever on the worker's event loop: every time connections have
    /// queued, lets all of them write.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.notify.notified().await;
            let batch = std::mem::take(&mut *self.waiting.lock().expect("not poisoned"));
            for (released, waker) in batch {
                released.store(true, Ordering::Release);
                waker.wake();
            }
        }
    }

    fn enqueue(&self, released: Arc<AtomicBool>, waker: Waker) {
        self.waiting
            .lock()
            .expect("not poisoned")
            .push((released, waker));
        self.notify.notify_one();
    }
}

pub struct BatchedIo<S> {
    inner: S,
    /// Successful writes to the socket, for the connection's watchdog.
    progress: Arc<TaskCounter>,
    /// The files behind body frames that stand for them (sendfile.rs).
    files: Arc<FileQueue>,
    fd: std::os::fd::RawFd,
    queue: Arc<FlushQueue>,
    buf: Vec<u8>,
    /// Set by the flusher: this connection's turn has come.
    released: Arc<AtomicBool>,
    queued: bool,
    draining: bool,
    /// When the last read brought data: the start of the request's work.
    read_at: Option<Instant>,
}

impl<S: std::os::fd::AsRawFd> BatchedIo<S> {
    pub fn new(
        inner: S,
        queue: Arc<FlushQueue>,
        files: Arc<FileQueue>,
        progress: Arc<TaskCounter>,
    ) -> Self {
        BatchedIo {
            fd: inner.as_raw_fd(),
            inner,
            progress,
            files,
            queue,
            buf: Vec::new(),
            released: Arc::new(AtomicBool::new(false)),
            queued: false,
            draining: false,
            read_at: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> BatchedIo<S> {
    /// Writes out the buffer; Ready(Ok) once it is empty.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.buf.drain(..n);
                    self.progress.bump();
                    // A keep-alive connection that once sent a large head
                    // does not keep its room while it waits.
                    if self.buf.is_empty() && self.buf.capacity() > KEEP_ROOM {
                        self.buf = Vec::new();
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper drops a connection it cuts (an app error mid-response, a short
/// body) without flushing: what the app produced before the fault still
/// goes out, so the client sees the partial response, then the close.
impl<S> Drop for BatchedIo<S> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            // Best effort and never blocking: a small buffer fits the socket's.
            use nix::sys::socket::{MsgFlags, send};
            let _ = send(
                self.fd,
                &self.buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.read_at = Some(Instant::now());
        }
        res
    }
}

impl<S: AsyncWrite + SendFile + Unpin> BatchedIo<S> {
    /// A frame standing for file bytes: what is buffered goes first, then
    /// the file, from the kernel's page cache to the socket.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        let sent = std::task::ready!(self.files.poll_send(cx, &self.inner, len))?;
        self.progress.bump();
        Poll::Ready(Ok(sent))
    }
}

impl<S: AsyncWrite + SendFile + Unpin> AsyncWrite for BatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_placeholder(data) {
            return self.poll_send_file(cx, data.len());
        }
        if self.buf.len() + data.len() <= BATCH_MAX {
            self.buf.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        // Large: send what is buffered, then write through.
        std::task::ready!(self.drain(cx))?;
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        self.progress.bump();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Up to the first file frame: a short write is allowed, and hyper
        // comes back with the rest.
        if let Some(i) = bufs.iter().position(|b| is_placeholder(b)) {
            if i == 0 {
                return self.poll_send_file(cx, bufs[0].len());
            }
            return self.poll_write_vectored(cx, &bufs[..i]);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buf.len() + total <= BATCH_MAX {
            for b in bufs {
                self.buf.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        std::task::ready!(self.drain(cx))?;
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.progress.bump();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() && !self.draining {
            let quick = !self.queued && self.read_at.is_none_or(|t| t.elapsed() < BATCH_AFTER);
            if quick || self.released.swap(false, Ordering::AcqRel) {
                // Our turn: write, even if that takes several polls.
                self.queued = false;
                self.draining = true;
            } else {
                if !self.queued {
                    self.queued = true;
                    let released = self.released.clone();
                    self.queue.enqueue(released, cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        if self.draining {
            std::task::ready!(self.drain(cx))?;
            self.draining = false;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
