//! The body of a started response as the front end pulls it: chunks from an
//! inline call, from a pooled call's channel, or a file to send.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use pyo3::prelude::*;
use tokio::sync::mpsc;

use super::call::{Call, log_late_error};
use super::host::Core;
use crate::request::{BodyError, ChunkSource, FileBody, FileRegion};

/// The body of a response that is a file: sent (or read) by the front end,
/// then the app's iterable is closed and the request is over.
/// `pooled`: the app's `close()` runs on a Python thread, not on the event
/// loop (where waiting for the GIL would hold up every connection).
pub(super) fn file_body(
    region: FileRegion,
    mut call: Call,
    mut core: Core,
    thread: Option<usize>,
) -> FileBody {
    FileBody::new(region, move |end| {
        core.chunk(end.sent as usize);
        core.outcome.failed = end.failed;
        let host = core.host.clone();
        let finish = move || {
            Python::attach(|py| call.close(py));
            drop(core); // the request is over: counted and logged, without the GIL
        };
        // On the thread the call ran on (`thread`), which has its
        // `threading.local()` data; inline on the event loop otherwise.
        match (host.pool.get().and_then(Option::as_ref), thread) {
            (Some(pool), Some(thread)) => pool.submit_to(thread, finish),
            _ => finish(),
        }
    })
}

/// Pulls chunks from an inline call as the connection can take them.
pub(super) struct InlineChunks {
    call: Option<Call>,
    /// Held until the response is done: the request runs until then.
    core: Option<Core>,
    /// A chunk went out since the app last ran. The app runs on the event
    /// loop's thread and may take its time over the next one (a generator
    /// that waits for an event): the loop turns once first, so that the
    /// front end writes what it has (PEP 3333: a block must not wait for
    /// the next), as uWSGI's and Gunicorn's workers write each chunk.
    sent_since: bool,
    turn: Option<Turn>,
}

/// One turn of the event loop: tokio's `yield_now`, done only once the
/// runtime has woken the task again, after the tasks already woken (the
/// flusher among them). (`yield_now` alone is ready at its second poll,
/// and hyper may poll the body twice in one turn.)
struct Turn {
    yielded: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    woken: Arc<WokenFlag>,
}

struct WokenFlag {
    woken: AtomicBool,
    /// The task that polled last: registered at each poll, so that a body
    /// polled from another task than before is still woken.
    task: atomic_waker::AtomicWaker,
}

impl std::task::Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Turn {
    /// Pending until the runtime's wake came.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before the flag is read: a wake in between is seen.
        self.woken.task.register(cx.waker());
        if !self.woken.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.woken.clone());
        self.yielded.as_mut().poll(&mut Context::from_waker(&waker))
    }

    fn start(cx: &mut Context<'_>) -> Option<Turn> {
        let woken = Arc::new(WokenFlag {
            woken: AtomicBool::new(false),
            task: atomic_waker::AtomicWaker::new(),
        });
        woken.task.register(cx.waker());
        let mut yielded: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(tokio::task::yield_now());
        let waker = Waker::from(woken.clone());
        match yielded.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => None,
            Poll::Pending => Some(Turn { yielded, woken }),
        }
    }
}

impl InlineChunks {
    /// `first_sent`: the response's first chunk went out with its head.
    pub(super) fn new(call: Call, core: Core, first_sent: bool) -> InlineChunks {
        InlineChunks {
            call: Some(call),
            core: Some(core),
            sent_since: first_sent,
            turn: None,
        }
    }
}

impl ChunkSource for InlineChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(None);
        };
        if self.sent_since {
            match &mut self.turn {
                None => {
                    self.turn = Turn::start(cx);
                    if self.turn.is_some() {
                        return Poll::Pending;
                    }
                }
                Some(turn) => std::task::ready!(turn.poll(cx)),
            }
            self.turn = None;
            self.sent_since = false;
        }
        let mut deferred = false;
        let next = Python::attach(|py| match call.next_chunk(py) {
            Ok(Some(b)) => {
                if let Some(core) = self.core.as_mut() {
                    core.chunk(b.len());
                }
                self.sent_since = true;
                Some(Ok(b))
            }
            // A close() that proved slow runs after the body's end is
            // written (the Drop below), not before.
            Ok(None) => {
                match &self.core {
                    Some(core) if core.host.defers_close() => deferred = true,
                    Some(core) => core.host.close_inline(py, call),
                    None => call.close(py),
                }
                None
            }
            Err(e) => {
                let error = log_late_error(py, call, e);
                call.close(py);
                Some(Err(error))
            }
        });
        if !matches!(next, Some(Ok(_))) && !deferred {
            self.call = None;
            if let Some(mut core) = self.core.take() {
                core.outcome.failed = next.is_some();
            }
        }
        Poll::Ready(next)
    }
}

/// The body is done with: at its end, or before it (hyper drops a sized
/// one once its length went out, and one whose client left). An app whose
/// close() proved slow (Flask's `call_on_close` work, Django's
/// `request_finished` handlers) has it run after the response is written,
/// as Gunicorn and uWSGI run it, so that it does not hold the response
/// back; the request (its core: the slot, the log line) lasts until then.
impl Drop for InlineChunks {
    fn drop(&mut self) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        let core = self.core.take();
        if core.as_ref().is_some_and(|c| c.host.defers_close()) {
            crate::request::after_write::after_write(move || {
                Python::attach(|py| call.close(py));
                drop(core);
            });
            return;
        }
        Python::attach(|py| match &core {
            Some(core) => core.host.close_inline(py, &mut call),
            None => call.close(py),
        });
    }
}

/// Chunks produced by a pooled call on a Python thread.
pub(super) struct ChannelChunks(pub(super) mpsc::Receiver<Result<Bytes, BodyError>>);

impl ChunkSource for ChannelChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.0.poll_recv(cx)
    }
}
