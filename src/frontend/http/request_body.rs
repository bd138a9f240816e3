//! A request body from hyper or h2: its limits (`--limit-post`, trailers, the
//! `--min-body-rate` a client must keep up), and the read-ahead that keeps
//! a slow upload from holding an app thread.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::context::HttpSettings;
use crate::request::{
    AheadInMemory, BodyError, BodyStream, ChunkSource, RequestBody, SpilledAhead,
};

/// The most reserved for a body read ahead before its bytes come.
const RESERVED_AT_ONCE: u64 = 1 << 20;
/// How far a body may fall behind `--min-body-rate` before it is cut:
/// room for a slow start, and for a stall on a mobile link.
const RATE_GRACE: Duration = Duration::from_secs(5);

/// A request body as the connection's protocol delivers it.
pub(super) enum WireBody {
    /// HTTP/1.1, from hyper.
    Http1(Incoming),
    /// HTTP/2, from h2 (`http2.rs`).
    Http2(H2Body),
}

impl WireBody {
    /// Whether the request has no body at all.
    pub(super) fn is_end_stream(&self) -> bool {
        match self {
            WireBody::Http1(b) => b.is_end_stream(),
            WireBody::Http2(b) => b.is_end_stream(),
        }
    }

    /// What is left of the body, when its head gave its length (HTTP/1.1's
    /// Content-Length, less what hyper has handed out).
    fn length(&self) -> Option<u64> {
        match self {
            WireBody::Http1(b) => b.size_hint().exact(),
            WireBody::Http2(_) => None,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        match self {
            WireBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(|e| e.to_string()),
            WireBody::Http2(b) => b.poll_frame(cx).map_err(|e| e.to_string()),
        }
    }
}

/// A request body from h2, as hyper's `Incoming` gave it: each chunk's
/// room in the window given back as it is taken, then the trailers.
pub(super) struct H2Body {
    recv: RecvStream,
    data_done: bool,
    /// The request's Content-Length, and how much of the body came.
    declared: Option<u64>,
    received: u64,
    /// Sends the 100 (Continue) the client waits for, at the first read.
    go_on: Option<Box<dyn FnOnce() + Send>>,
    /// How far the body has come, for the stream's task once the
    /// response is sent (`UploadProgress`).
    progress: Arc<UploadProgress>,
}

/// How far an HTTP/2 request body has come, told by the body to its
/// stream's task, which no longer has it: the task holds the response's
/// end while the client is still sending (`http2.rs`).
#[derive(Default)]
pub(super) struct UploadProgress {
    /// Its request said its length.
    declared: bool,
    /// Its request asked for a 100 (Continue) first.
    awaits_continue: bool,
    taken: AtomicU64,
    end: AtomicU8,
    /// Woken when `end` is set.
    ended: tokio::sync::Notify,
}

/// How an HTTP/2 request body ended, if it has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum UploadEnd {
    /// Not yet: the client may be sending.
    Open,
    /// All of it came.
    Whole,
    /// Dropped before it was whole (the app's host read as much of an
    /// unread body as it reads), or failed.
    Abandoned,
}

impl UploadProgress {
    pub(super) fn new(declared: bool, awaits_continue: bool) -> UploadProgress {
        UploadProgress {
            declared,
            awaits_continue,
            ..UploadProgress::default()
        }
    }

    pub(super) fn end(&self) -> UploadEnd {
        match self.end.load(Ordering::Acquire) {
            0 => UploadEnd::Open,
            1 => UploadEnd::Whole,
            _ => UploadEnd::Abandoned,
        }
    }

    /// The bytes taken so far.
    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Whether a response's end may wait for the rest of this upload:
    /// one still coming, of a declared length, from a client not waiting
    /// for a 100 (Continue) to send it.
    pub(super) fn may_be_held(&self) -> bool {
        self.end() == UploadEnd::Open
            && self.declared
            && !(self.awaits_continue && self.taken() == 0)
    }

    /// Until the body ends (or may have: `end` says).
    pub(super) async fn ended(&self) {
        self.ended.notified().await;
    }

    fn ends(&self, how: UploadEnd) {
        let code = match how {
            UploadEnd::Open => return,
            UploadEnd::Whole => 1,
            UploadEnd::Abandoned => 2,
        };
        if self
            .end
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ended.notify_one();
        }
    }
}

impl H2Body {
    pub(super) fn new(
        recv: RecvStream,
        declared: Option<u64>,
        go_on: Option<Box<dyn FnOnce() + Send>>,
        progress: Arc<UploadProgress>,
    ) -> H2Body {
        H2Body {
            recv,
            data_done: false,
            declared,
            received: 0,
            go_on,
            progress,
        }
    }

    /// A reset with NO_ERROR ends the body only when the body is whole
    /// (RFC 9113 §8.1: a client that has its answer early stops sending
    /// the rest); before, it is an upload given up, as any other reset,
    /// and must not reach the app as complete (§8.1.1: a body short of its
    /// Content-Length is malformed). hyper ends the body at any NO_ERROR.
    fn ended_by(&self, e: &h2::Error) -> bool {
        e.reason() == Some(Reason::NO_ERROR) && self.declared == Some(self.received)
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if let Some(go_on) = self.go_on.take() {
            go_on();
        }
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.received += data.len() as u64;
                    self.progress.taken.store(self.received, Ordering::Relaxed);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) if self.ended_by(&e) => return self.whole(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => self.whole(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => self.whole(None),
            Err(e) if e.reason() == Some(Reason::NO_ERROR) => self.whole(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn whole<T>(&self, last: Option<T>) -> Poll<Option<T>> {
        self.progress.ends(UploadEnd::Whole);
        Poll::Ready(last)
    }

    /// Reads what the client still sends of a body refused unread (a 413
    /// for its declared length), and drops it, up to what the app's hosts
    /// read on of a body their app left (`UNREAD_BODY_DRAIN`). Dropped at
    /// once, it reset the stream under the answer: curl, still sending,
    /// failed (error 92; "Empty reply" waiting for its 100) without
    /// showing the 413, where HTTP/1.1's lingering close let it read it.
    pub(super) fn drain_in_background(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut left = crate::request::UNREAD_BODY_DRAIN as u64;
            while left > 0 {
                match std::future::poll_fn(|cx| self.poll_frame(cx)).await {
                    Some(Ok(frame)) => {
                        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                        left = left.saturating_sub(n);
                    }
                    _ => break,
                }
            }
        });
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        // (A body already whole stays so.)
        self.progress.ends(UploadEnd::Abandoned);
    }
}

/// A request body still arriving.
pub(super) struct IncomingChunks {
    body: WireBody,
    limit: Option<u64>,
    seen: u64,
    rate: RateGuard,
}

impl IncomingChunks {
    pub(super) fn new(body: WireBody, settings: &HttpSettings) -> IncomingChunks {
        IncomingChunks {
            body,
            limit: settings.limit_post,
            seen: 0,
            rate: RateGuard {
                min_rate: settings.min_body_rate,
                max_stall: settings.head_timeout,
                waited: Duration::ZERO,
                waiting_since: None,
                timer: None,
            },
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            return match self.body.poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::new(
                    400,
                    format!("reading the request body: {e}"),
                )))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.seen += data.len() as u64;
                        if self.limit.is_some_and(|l| self.seen > l) {
                            return Poll::Ready(Some(Err(BodyError::new(
                                413,
                                "request body larger than --limit-post",
                            ))));
                        }
                        Poll::Ready(Some(Ok(data)))
                    }
                    // Trailers: the app never sees them, but one that would
                    // reframe or reroute the request refuses it, as Gunicorn does.
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) if t.keys().any(super::strict::forbidden_trailer) => {
                            Poll::Ready(Some(Err(BodyError::new(
                                400,
                                "a forbidden field in the request's trailers",
                            ))))
                        }
                        _ => continue,
                    },
                },
            };
        }
    }
}

impl ChunkSource for IncomingChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let polled = self.poll_frame(cx);
        if polled.is_ready() {
            self.rate.arrived();
            return polled;
        }
        match self.rate.poll_too_slow(cx, self.seen) {
            Some(why) => Poll::Ready(Some(Err(BodyError::new(408, why)))),
            None => Poll::Pending,
        }
    }
}

/// `--min-body-rate`: a body must arrive at `min_rate` bytes a second,
/// counting only the time oxgate waits for the client, never the time the
/// app takes between its reads (then the client is held back by TCP, not
/// slow). A body may lag by `RATE_GRACE`. And whatever it has sent, a
/// client may not stall for longer than `--socket-timeout` (as nginx's
/// client_body_timeout): a fast start banks no hour of silence.
struct RateGuard {
    /// 0: no rate, only the stall.
    min_rate: u64,
    max_stall: Duration,
    /// Time spent waiting for the client, before the current wait.
    waited: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateGuard {
    fn arrived(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }

    /// Called when the body is pending: why the client is too slow, if it
    /// is; if not, a wake-up is set for when it would be.
    fn poll_too_slow(&mut self, cx: &mut Context<'_>, seen: u64) -> Option<&'static str> {
        const SLOW: &str = "request body slower than --min-body-rate";
        const STALLED: &str = "request body stalled for --socket-timeout";
        let now = Instant::now();
        let since = *self.waiting_since.get_or_insert(now);
        let mut due = since + self.max_stall;
        let mut why = STALLED;
        if self.min_rate > 0 {
            // The wait after which `seen` bytes are less than the rate asks.
            let allowed = RATE_GRACE + Duration::from_secs_f64(seen as f64 / self.min_rate as f64);
            let Some(left) = allowed.checked_sub(self.waited) else {
                return Some(SLOW);
            };
            if since + left < due {
                due = since + left;
                why = SLOW;
            }
        }
        if now >= due {
            return Some(why);
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        // Ready only once `due` has passed: too slow.
        timer.as_mut().poll(cx).is_ready().then_some(why)
    }
}

/// Reads a body until it ends or `ahead` bytes have come: whole, or the
/// part read followed by the rest still to come. In memory while the
/// process's bodies being read ahead are within their budget, else in a
/// temporary file (`AheadInMemory`).
pub(super) async fn read_ahead(
    mut chunks: IncomingChunks,
    ahead: u64,
) -> Result<RequestBody, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    let mut held = AheadInMemory::default();
    let mut spilled: Option<SpilledAhead> = None;
    loop {
        let chunk = std::future::poll_fn(|cx| chunks.poll_chunk(cx)).await;
        let data = match chunk {
            None => {
                return match spilled {
                    Some(file) => file.into_body(None).await,
                    None => Ok(match first {
                        None => RequestBody::Full(Bytes::new()),
                        Some(b) if more.is_empty() => RequestBody::Full(held.keep_with(b)),
                        Some(_) => RequestBody::Full(held.keep_with(more.freeze())),
                    }),
                };
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(data)) => data,
        };
        let read = match &mut spilled {
            Some(file) => {
                file.push(&data).await?;
                file.len()
            }
            None => {
                // Counted against the budget: the chunk itself (hyper's),
                // then what the copy's buffer grows by.
                let capacity = more.capacity();
                let fits = match &first {
                    // Most bodies come in one piece: kept as it is, not
                    // copied.
                    None => {
                        let n = data.len();
                        first = Some(data);
                        held.try_hold(n)
                    }
                    Some(b) => {
                        if more.is_empty() {
                            // Room for the body's length at once (grown by
                            // doubling, the copy held up to twice it), up
                            // to a mebibyte: a length is only what the
                            // client says. (Reserved in full, one client's
                            // 600 MB Content-Length, then 5 bytes, took
                            // 600 MB, or aborted the worker under
                            // --limit-as.)
                            let read = (b.len() + data.len()) as u64;
                            let room = chunks.body.length().map_or(0, |left| read + left);
                            more.reserve(room.min(ahead).min(RESERVED_AT_ONCE) as usize);
                            more.extend_from_slice(b);
                            // hyper's buffer is let go; what is left marks
                            // that the body is in `more`.
                            first = Some(Bytes::new());
                        }
                        more.extend_from_slice(&data);
                        held.try_hold(more.capacity() - capacity)
                    }
                };
                if fits {
                    if more.is_empty() {
                        first.as_ref().map_or(0, |b| b.len() as u64)
                    } else {
                        more.len() as u64
                    }
                } else {
                    // Past the budget: this body goes on in a file.
                    let mut file = SpilledAhead::new()?;
                    match first.take() {
                        Some(b) if more.is_empty() => file.push(&b).await?,
                        _ => file.push(&more).await?,
                    }
                    (more, held) = (BytesMut::new(), AheadInMemory::default());
                    let read = file.len();
                    spilled = Some(file);
                    read
                }
            }
        };
        if read >= ahead {
            if let Some(file) = spilled {
                return file.into_body(Some(BodyStream::new(chunks))).await;
            }
            let part = if more.is_empty() {
                first.take().unwrap_or_default()
            } else {
                more.freeze()
            };
            let part = held.keep_with(part);
            return Ok(RequestBody::Stream(BodyStream::new(ReadAhead {
                part: Some(part),
                rest: chunks,
            })));
        }
    }
}

/// A body for a handler that takes it as it comes: whole if it came with
/// its head (most small ones do), a look that does not wait; else a
/// stream, with what had come first. Not looked at when the client waits
/// for `100 Continue`, which the look would send (hyper sends it when the
/// body is first read): the app's first read sends it.
pub(super) fn as_it_comes(
    mut chunks: IncomingChunks,
    awaits_continue: bool,
) -> Result<RequestBody, BodyError> {
    if awaits_continue {
        return Ok(RequestBody::Stream(BodyStream::new(chunks)));
    }
    // (The frame itself, not `poll_chunk`: the rate guard's clock must not
    // start before the app asks for the body, or the app's own time until
    // then would count as the client's.)
    let mut look = Context::from_waker(std::task::Waker::noop());
    Ok(match chunks.poll_frame(&mut look) {
        Poll::Ready(None) => RequestBody::Full(Bytes::new()),
        Poll::Ready(Some(Err(e))) => return Err(e),
        Poll::Ready(Some(Ok(data))) if chunks.body.is_end_stream() => RequestBody::Full(data),
        Poll::Ready(Some(Ok(data))) => RequestBody::Stream(BodyStream::new(ReadAhead {
            part: Some(data),
            rest: chunks,
        })),
        Poll::Pending => RequestBody::Stream(BodyStream::new(chunks)),
    })
}

/// A body's part read ahead, then the rest as it arrives.
struct ReadAhead {
    part: Option<Bytes>,
    rest: IncomingChunks,
}

impl ChunkSource for ReadAhead {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        match self.part.take() {
            Some(part) => Poll::Ready(Some(Ok(part))),
            None => self.rest.poll_chunk(cx),
        }
    }
}
