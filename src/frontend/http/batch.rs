//! Batched flushing: a connection's response waits until the event loop has
//! run the other connections that were ready, then the flusher writes them
//! all, one after another.
//!
//! Writing each response the moment it is ready wakes the client side once
//! per response. When the app takes a while (Flask: ~60 µs), the client is
//! idle between responses, and each wake-up is a cross-CPU interrupt that
//! cost ~10 µs of kernel time per request here (perf: sock_def_readable).
//! bjoern's event loop batches by construction; this gives oxgate the same.
//! The flusher writes the queued bytes itself, back to back, so a queued
//! response costs its connection no second poll. Under light load a flush
//! waits for nothing: the flusher is the only other task ready. A response
//! produced quickly (under `BATCH_AFTER` from the read that brought its
//! request) is written at once: the client is then still busy, and queueing
//! would cost more than it saves (hello-world: +1.5 µs of user CPU per
//! request). But not when many connections are busy at once (over
//! `BUSY_CONNECTIONS` with a request in the last `ACTIVITY_WINDOW`): a
//! client with that many connections has gone back to waiting on most of
//! them, and each response written at once wakes it again. At 1,000
//! connections, batching every response gave 1.30× the requests/s of
//! writing them at once; at 10 it gave 0.90×, and at 50 and 256 about the
//! same (bench/results/concurrency.md).

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, send};
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
const KEEP_ROOM: usize = 1024 * 4;
/// Connections with a request in the last `ACTIVITY_WINDOW` above which
/// every response waits for the batch.
const BUSY_CONNECTIONS: u32 = 128;
/// Long enough that under load each of 1,000 connections sends a request
/// within it, short enough to follow the load as it changes.
const ACTIVITY_WINDOW: Duration = Duration::from_millis(10);

/// How many connections of this worker had a request in the current and
/// in the previous `ACTIVITY_WINDOW`.
struct Activity {
    started: Instant,
    window: u32,
    now: u32,
    before: u32,
}

thread_local! {
    static ACTIVITY: std::cell::RefCell<Activity> = std::cell::RefCell::new(Activity {
        started: Instant::now(),
        window: 1,
        now: 0,
        before: 0,
    });
}

impl Activity {
    /// A connection whose last request came in window `seen` (0: none
    /// yet) has another at `at`.
    fn note(&mut self, seen: &mut u32, at: Instant) {
        let elapsed = at.saturating_duration_since(self.started);
        if elapsed >= ACTIVITY_WINDOW {
            self.before = if elapsed >= 2 * ACTIVITY_WINDOW {
                0
            } else {
                self.now
            };
            self.now = 0;
            self.window = self.window.wrapping_add(1).max(1);
            self.started = at;
        }
        if *seen != self.window {
            *seen = self.window;
            self.now += 1;
        }
    }

    fn busy(&self) -> bool {
        self.now.max(self.before) > BUSY_CONNECTIONS
    }
}

/// A connection's bytes not yet written. Its own task writes them, unless
/// they are queued: then the flusher does, at the end of the turn.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// In the flush queue, for the flusher to write.
    queued: bool,
    /// The flusher found the socket full: the task writes the rest itself,
    /// when the socket has room.
    stalled: bool,
    /// What the flusher's write failed with, for the task to return.
    error: Option<io::Error>,
    /// The connection is gone: its descriptor may be another's now.
    closed: bool,
    /// hyper may hold bytes of a response still to write: it wrote past
    /// the outbox (a large write, a file), and has not flushed since. It
    /// flushes the socket only with its own buffer empty.
    hyper_holds: bool,
    /// The task, for the flusher to wake when it leaves it bytes or an error.
    waker: Option<Waker>,
}

/// A connection's outbox, and what the flusher needs to write it.
struct Queued {
    outbox: Arc<Mutex<Outbox>>,
    fd: RawFd,
    progress: Arc<TaskCounter>,
}

/// The worker's queue of connections waiting for their turn to flush.
#[derive(Default)]
pub struct FlushQueue {
    waiting: Mutex<Vec<Queued>>,
    notify: Notify,
}

fn lock(outbox: &Mutex<Outbox>) -> MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

impl FlushQueue {
    /// Runs forever on the worker's event loop: every time connections have
    /// queued, writes what each has, in the order they queued; then the
    /// work left for after the writes (`request::after_write`).
    pub async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        // Work left for after the responses are written runs here, once
        // they are.
        let queue = self.clone();
        crate::request::after_write::install_runner(Box::new(move || queue.notify.notify_one()));
        loop {
            self.notify.notified().await;
            std::mem::swap(
                &mut batch,
                &mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()),
            );
            for q in batch.drain(..) {
                let mut o = lock(&q.outbox);
                if !o.queued || o.closed {
                    // Its task took it back (a large write, a file, the
                    // end of the connection) or it is gone.
                    continue;
                }
                o.queued = false;
                write_out(&mut o, q.fd, &q.progress);
            }
            crate::request::after_write::run_left();
        }
    }

    fn enqueue(&self, queued: Queued) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(queued);
        self.notify.notify_one();
    }
}

/// The flusher's write of one outbox: whatever the socket does not take at
/// once (it is full) or an error goes back to the connection's task.
fn write_out(o: &mut Outbox, fd: RawFd, progress: &TaskCounter) {
    let mut sent = 0;
    while sent < o.buf.len() {
        match send(
            fd,
            &o.buf[sent..],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(0) => {
                o.error = Some(io::ErrorKind::WriteZero.into());
                break;
            }
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                o.stalled = true;
                break;
            }
            Err(e) => {
                o.error = Some(e.into());
                break;
            }
        }
    }
    if sent > 0 {
        progress.bump();
        o.buf.drain(..sent);
        shrink(&mut o.buf);
    }
    if (o.stalled || o.error.is_some())
        && let Some(w) = o.waker.take()
    {
        w.wake();
    }
}

/// Leaves the task's waker for the flusher, unless the one there already
/// wakes the same task.
fn keep_waker(o: &mut Outbox, cx: &Context<'_>) {
    if !o.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        o.waker = Some(cx.waker().clone());
    }
}

/// A keep-alive connection that once sent a large head does not keep its
/// room while it waits.
fn shrink(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > KEEP_ROOM {
        *buf = Vec::new();
    }
}

pub struct BatchedIo<S> {
    inner: S,
    /// Successful writes to the socket, for the connection's watchdog.
    progress: Arc<TaskCounter>,
    /// The files behind body frames that stand for them (sendfile.rs).
    files: Arc<FileQueue>,
    fd: RawFd,
    queue: Arc<FlushQueue>,
    outbox: Arc<Mutex<Outbox>>,
    /// A write of the outbox by the task is under way (the socket was full).
    draining: bool,
    /// When the last read brought data: the start of the request's work.
    read_at: Option<Instant>,
    /// The `Activity` window of that read (0: none yet).
    seen_window: u32,
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
            outbox: Arc::default(),
            draining: false,
            read_at: None,
            seen_window: 0,
        }
    }
}

impl<S> BatchedIo<S> {
    /// What sends this connection's 103 Early Hints, through its outbox.
    pub(super) fn early_hints(&self) -> OutboxHints {
        OutboxHints {
            outbox: self.outbox.clone(),
            queue: self.queue.clone(),
            fd: self.fd,
            progress: self.progress.clone(),
        }
    }

    /// What tells whether the outbox is written out.
    pub(super) fn written(&self) -> Written {
        Written(self.outbox.clone())
    }
}

/// A connection's outbox, seen from its task (`ConnCtx::idle_in_hyper`).
pub(super) struct Written(Arc<Mutex<Outbox>>);

impl super::context::Drained for Written {
    /// Every byte queued has been written, and nothing failed.
    fn all_out(&self) -> bool {
        let o = lock(&self.0);
        o.buf.is_empty()
            && !o.queued
            && !o.stalled
            && !o.hyper_holds
            && o.error.is_none()
            && !o.closed
    }
}

/// Puts a 103 in a connection's outbox, behind whatever of the last
/// response is still there and ahead of the final head (hyper writes it
/// only once the handler has answered), and has the flusher write it at
/// the end of the event loop's turn: the app, on a thread of its own, is
/// still making the response.
pub(super) struct OutboxHints {
    outbox: Arc<Mutex<Outbox>>,
    queue: Arc<FlushQueue>,
    fd: RawFd,
    progress: Arc<TaskCounter>,
}

impl crate::request::EarlyHints for OutboxHints {
    fn send(&self, links: &[bytes::Bytes]) -> bool {
        if crate::request::early_hints_fault(links).is_some() {
            return false;
        }
        let mut o = lock(&self.outbox);
        // A client that does not read its responses gets no more bytes
        // queued for it: hints are worth nothing that late. Nor may a 103
        // go out while hyper still holds some of the last response: it
        // would land in that response's body. (hyper 1.12 reads the next
        // request only once the last response is flushed, except when
        // the last request's body ends after its response did.)
        if o.closed || o.error.is_some() || o.hyper_holds || o.buf.len() > BATCH_MAX {
            return false;
        }
        o.buf
            .extend_from_slice(&crate::request::early_hints_head(links));
        // Queued already, or the socket was full and the task writes it
        // all once there is room.
        if o.queued || o.stalled {
            return true;
        }
        o.queued = true;
        drop(o);
        self.queue.enqueue(Queued {
            outbox: self.outbox.clone(),
            fd: self.fd,
            progress: self.progress.clone(),
        });
        true
    }
}

impl<S: AsyncWrite + Unpin> BatchedIo<S> {
    /// Writes out the outbox itself, taking it back from the flusher if it
    /// was queued; Ready(Ok) once it is empty.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut o = lock(&self.outbox);
        if let Some(e) = o.error.take() {
            return Poll::Ready(Err(e));
        }
        o.queued = false;
        while !o.buf.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &o.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    o.buf.drain(..n);
                    self.progress.bump();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        o.stalled = false;
        shrink(&mut o.buf);
        Poll::Ready(Ok(()))
    }

    /// Appends to the outbox what fits in a batch; None if `len` does not.
    fn buffer(&mut self, len: usize, put: impl FnOnce(&mut Vec<u8>)) -> Option<io::Result<usize>> {
        let mut o = lock(&self.outbox);
        if let Some(e) = o.error.take() {
            return Some(Err(e));
        }
        if o.buf.len() + len > BATCH_MAX {
            return None;
        }
        put(&mut o.buf);
        Some(Ok(len))
    }
}

/// hyper drops a connection it cuts (an app error mid-response, a short
/// body) without flushing: what the app produced before the fault still
/// goes out, so the client sees the partial response, then the close. The
/// flusher, which may still hold the outbox, must not write to the
/// descriptor once it is closed (and perhaps reused).
impl<S> Drop for BatchedIo<S> {
    fn drop(&mut self) {
        let mut o = lock(&self.outbox);
        o.closed = true;
        if !o.buf.is_empty() {
            // Best effort and never blocking: a small buffer fits the socket's.
            let _ = send(
                self.fd,
                &o.buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // What the flusher handed back (a full socket, an error) is written
        // here too: a reader (a WebSocket session waiting for the client)
        // may have nothing more to write, and so never flush again.
        let handed_back = {
            let mut o = lock(&self.outbox);
            // For the flusher to wake, should what it writes (a queued
            // response, a 103) find the socket full.
            keep_waker(&mut o, cx);
            o.stalled || o.error.is_some()
        };
        if handed_back && let Poll::Ready(Err(e)) = self.drain(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = Instant::now();
            self.read_at = Some(now);
            let seen = &mut self.seen_window;
            ACTIVITY.with(|a| a.borrow_mut().note(seen, now));
        }
        res
    }
}

impl<S: AsyncWrite + SendFile + Unpin> BatchedIo<S> {
    /// A frame standing for file bytes: what is buffered goes first (held
    /// back for the file's first bytes), then the file, from the kernel's
    /// page cache to the socket.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        self.hyper_holds();
        self.send_head_corked();
        std::task::ready!(self.drain(cx))?;
        let sent = std::task::ready!(self.files.poll_send(cx, &self.inner, len))?;
        self.progress.bump();
        Poll::Ready(Ok(sent))
    }
}

impl<S> BatchedIo<S> {
    /// Notes that hyper writes past the outbox, until it flushes.
    fn hyper_holds(&self) {
        lock(&self.outbox).hyper_holds = true;
    }

    /// Sends what is buffered (the response's head) with MSG_MORE: the
    /// kernel holds it for the file bytes that follow, as nginx's
    /// `tcp_nopush` does, so a small file leaves in one segment with its
    /// head rather than after it in a second. The sendfile that ends the
    /// file, sent without MSG_MORE, pushes both. Whatever this leaves (a
    /// full socket, an error) is `drain`'s to write or report.
    fn send_head_corked(&mut self) {
        let mut o = lock(&self.outbox);
        if o.buf.is_empty() || o.error.is_some() {
            return;
        }
        let flags = MsgFlags::from_bits_retain(libc::MSG_MORE)
            | MsgFlags::MSG_DONTWAIT
            | MsgFlags::MSG_NOSIGNAL;
        if let Ok(n) = send(self.fd, &o.buf, flags) {
            o.buf.drain(..n);
            self.progress.bump();
        }
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
        if let Some(res) = self.buffer(data.len(), |buf| buf.extend_from_slice(data)) {
            return Poll::Ready(res);
        }
        // Large: send what is buffered, then write through.
        self.hyper_holds();
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
        let put = |buf: &mut Vec<u8>| {
            for b in bufs {
                buf.extend_from_slice(b);
            }
        };
        if let Some(res) = self.buffer(total, put) {
            return Poll::Ready(res);
        }
        self.hyper_holds();
        std::task::ready!(self.drain(cx))?;
        let n = std::task::ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs))?;
        self.progress.bump();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.draining {
            let mut o = lock(&this.outbox);
            if let Some(e) = o.error.take() {
                return Poll::Ready(Err(e));
            }
            // hyper flushes the socket only once its own buffer is empty.
            o.hyper_holds = false;
            if o.buf.is_empty() || o.queued {
                // Nothing to write, or the flusher will.
                drop(o);
                return Pin::new(&mut this.inner).poll_flush(cx);
            }
            let quick = this.read_at.is_none_or(|t| t.elapsed() < BATCH_AFTER)
                && !ACTIVITY.with(|a| a.borrow().busy());
            if !quick && !o.stalled {
                // The flusher writes it at the end of the turn; hyper goes
                // on as if it were written (a later write or the end of
                // the connection takes it back first).
                o.queued = true;
                keep_waker(&mut o, cx);
                drop(o);
                this.queue.enqueue(Queued {
                    outbox: this.outbox.clone(),
                    fd: this.fd,
                    progress: this.progress.clone(),
                });
                return Pin::new(&mut this.inner).poll_flush(cx);
            }
            this.draining = true;
        }
        std::task::ready!(this.drain(cx))?;
        this.draining = false;
        lock(&this.outbox).hyper_holds = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingWaker(AtomicUsize);
    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn outbox_with(bytes: &[u8]) -> (Outbox, Arc<CountingWaker>) {
        let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let outbox = Outbox {
            buf: bytes.to_vec(),
            waker: Some(Waker::from(woken.clone())),
            ..Outbox::default()
        };
        (outbox, woken)
    }

    #[test]
    fn the_flusher_writes_the_whole_outbox_and_leaves_the_task_asleep() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut o, woken) = outbox_with(b"HTTP/1.1 200 OK\r\n\r\n");
        let progress = TaskCounter::default();
        write_out(&mut o, ours.as_raw_fd(), &progress);
        assert!(o.buf.is_empty() && !o.stalled && o.error.is_none());
        assert_eq!(progress.get(), 1);
        assert_eq!(woken.0.load(Ordering::Relaxed), 0);
        let mut got = [0u8; 19];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn a_full_socket_leaves_the_rest_to_the_task_and_wakes_it() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // Fill the socket until it takes no more.
        let chunk = vec![b'x'; 64 * 1024];
        while nix::sys::socket::send(ours.as_raw_fd(), &chunk, MsgFlags::MSG_DONTWAIT).is_ok() {}
        let (mut o, woken) = outbox_with(b"the next response");
        write_out(&mut o, ours.as_raw_fd(), &TaskCounter::default());
        assert!(o.stalled);
        assert_eq!(o.buf, b"the next response");
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_write_goes_back_to_the_task_as_its_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let (mut o, woken) = outbox_with(b"nobody reads this");
        write_out(&mut o, ours.as_raw_fd(), &TaskCounter::default());
        assert_eq!(
            o.error.as_ref().map(io::Error::kind),
            Some(io::ErrorKind::BrokenPipe)
        );
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn activity_counts_each_busy_connection_once_a_window() {
        let t0 = Instant::now();
        let mut a = Activity {
            started: t0,
            window: 1,
            now: 0,
            before: 0,
        };
        let mut seen = vec![0u32; 200];
        // 100 connections, three requests each, in one window: 100.
        for _ in 0..3 {
            for s in seen.iter_mut().take(100) {
                a.note(s, t0);
            }
        }
        assert_eq!(a.now, 100);
        assert!(!a.busy());
        // 200 in the next window: busy, and still busy in the one after
        // that, which remembers it.
        let t1 = t0 + ACTIVITY_WINDOW;
        for s in seen.iter_mut() {
            a.note(s, t1);
        }
        assert!(a.busy());
        let t2 = t1 + ACTIVITY_WINDOW;
        a.note(&mut seen[0], t2);
        assert_eq!((a.now, a.before), (1, 200));
        assert!(a.busy());
        // After a quiet spell of two windows, nothing is remembered.
        let t4 = t2 + 2 * ACTIVITY_WINDOW;
        a.note(&mut seen[0], t4);
        assert_eq!((a.now, a.before), (1, 0));
        assert!(!a.busy());
    }

    #[tokio::test]
    async fn a_read_writes_what_the_flusher_handed_back() {
        use tokio::io::AsyncReadExt;
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut io = BatchedIo::new(ours, Arc::default(), Arc::default(), Arc::default());
        {
            let mut o = lock(&io.outbox);
            o.buf = b"left behind".to_vec();
            o.stalled = true;
        }
        // Nothing comes to read, but the bytes go out meanwhile.
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(100), io.read(&mut buf)).await;
        assert!(read.is_err(), "nothing was sent to read");
        let mut got = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), theirs.read_exact(&mut got))
            .await
            .expect("the handed-back bytes were written")
            .unwrap();
        assert_eq!(&got, b"left behind");
        assert!(!lock(&io.outbox).stalled);
    }

    #[test]
    fn a_large_buffer_is_not_kept_between_responses() {
        let mut buf = Vec::with_capacity(KEEP_ROOM * 4);
        shrink(&mut buf);
        assert_eq!(buf.capacity(), 0);
        let mut small = Vec::with_capacity(256);
        shrink(&mut small);
        assert_eq!(small.capacity(), 256);
    }
}
