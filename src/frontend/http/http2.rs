//! HTTP/2 (h2c with prior knowledge, or TLS with ALPN h2) on the h2 crate
//! itself. hyper's HTTP/2 server is h2 underneath, but it cannot send an
//! informational response (hyper 1.12), and HTTP/2 is where browsers act
//! on 103 Early Hints. So each stream's `SendResponse` is shared between
//! the app's early hints and the final response.
//!
//! The rest is what hyper's server did, kept as it was: its settings, its
//! removal of connection-specific fields and its `Date` field, a stream
//! reset by the client cancelling its request, and a stop that sends
//! GOAWAY and lets the open streams finish.

use std::future::Future;
use std::future::poll_fn;
use std::pin::Pin;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::OxBody;
use super::context::ConnCtx;
use super::request_body::{H2Body, UploadEnd, UploadProgress, WireBody};
use super::service::{on_request, refuse_stream};
use super::watch::{Either, Quiet, idle_watchdog, race_rarely, stop_or_idle};
use crate::request::{EarlyHints, early_hints_fault};

/// hyper 1.12's settings for its HTTP/2 server, which served here before:
/// stream windows of 1 MiB (the spec's 64 KiB would hold back an upload on a
/// link with any latency), 16 KiB frames, 400 KiB buffered per stream for
/// sending, and a connection closed after 1,024 streams this server had
/// to reset. h2's own default holds the last limit: 20 streams reset by
/// the client before they are served (rapid reset, CVE-2023-44487).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// The connection's window while at most three of its streams have an
/// upload under way. With more, it grows by a stream's window for each
/// (`connection_window`): an upload whose app has not read it yet (its
/// request waiting for an app thread) holds its own window of the
/// connection's, and with a fixed connection window four such uploads
/// held all of it, so the one upload an app was reading got no more data,
/// and stalled until the body-rate guard failed it. It grows to
/// `MAX_UPLOAD_WINDOWS` at most, which bounds what one connection makes
/// the worker hold.
const CONNECTION_WINDOW: u32 = 4 * STREAM_WINDOW;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How long an idle connection's GOAWAY may take to go out before the
/// connection is closed anyway.
const GOAWAY_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves HTTP/2 on `io` until the connection closes. A stop sends
/// GOAWAY: no new streams, and the open ones finish (within the worker's
/// mercy time).
pub(super) async fn serve_http2<I>(
    io: I,
    ctx: Arc<ConnCtx>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = &ctx.settings;
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_streams(settings.http2_max_streams.unwrap_or(100))
        // `--buffer-size` bounds a request's head, decoded: HPACK cannot
        // expand a small header block into a large one. CONTINUATION
        // frames are bounded by it too. h2 counts RFC 9113's 32 bytes a
        // field besides, which a browser's cookie crumbs (one field each)
        // add up: twice the size, then the head is held to --buffer-size
        // as HTTP/1.1's is (`strict::check_head`, crumbs as one field).
        .max_header_list_size(
            u32::try_from(settings.max_head.max(8192).saturating_mul(2)).unwrap_or(u32::MAX),
        );
    // A stop during the handshake is seen once it is done: a client that
    // has just connected gets a GOAWAY, and sends its requests elsewhere,
    // rather than a connection closed under them.
    let handshake = pin!(builder.handshake::<I, Bytes>(io));
    let mut conn = match race_rarely(handshake, idle_watchdog(&ctx, false)).await {
        Either::Main(Ok(conn)) => conn,
        Either::Main(Err(e)) => return log_error(&e),
        // No preface and settings from the client in time.
        Either::Side(_) => return,
    };
    let streams = ConnStreams::default();
    let stopped = {
        let accepting = pin!(accept_streams(&mut conn, &ctx, &streams));
        let side = async {
            tokio::select! {
                quiet = stop_or_idle(&mut shutdown, &ctx, false) => Some(quiet),
                () = streams.stalls.dead() => None,
            }
        };
        match race_rarely(accepting, side).await {
            Either::Main(res) => return log_ended(res),
            Either::Side(Some(Quiet::Stop)) => true,
            // Idle; or the client takes nothing on any stream (closing it
            // ends every stream's response, and frees their threads).
            Either::Side(_) => false,
        }
    };
    if !stopped {
        // A GOAWAY first, so that a request crossing the close is known
        // unprocessed and sent again (RFC 9113 §6.8), then closed.
        conn.abrupt_shutdown(Reason::NO_ERROR);
        let _ = tokio::time::timeout(GOAWAY_FLUSH, accept_streams(&mut conn, &ctx, &streams)).await;
        return;
    }
    conn.graceful_shutdown();
    tokio::select! {
        res = accept_streams(&mut conn, &ctx, &streams) => log_ended(res),
        _ = idle_watchdog(&ctx, false) => {}
        () = streams.stalls.dead() => {}
    }
}

/// What a connection's streams share.
#[derive(Default)]
struct ConnStreams {
    /// Their stalls (`Stall`).
    stalls: Arc<ConnStalls>,
    /// How many have an upload under way (`connection_window`).
    uploads: Arc<AtomicUsize>,
    /// Whose turn it is to block the event loop (`Turns`).
    turns: Arc<Turns>,
}

/// An app the worker runs inline (`--threads 1`) blocks the event loop,
/// and the connection's task, which writes every stream's response, with
/// it: the apps of a burst of streams all ran before any response went
/// out (a page's five quick requests and one slow one were all answered
/// after the slow one; Gunicorn's one thread answers each as it is done).
/// So once the loop has gone `BATCH_MICROS` without the connection's task
/// (apps held it), the next app waits for what the others queued to be
/// written. A hello world's microseconds keep many answers in one write
/// (each written alone, h2load -m 10 served 55% fewer requests a second).
/// A response waiting for the client's window holds up no other stream.
struct Turns {
    /// Heads and first data queued since the connection's task last ran.
    unwritten: AtomicUsize,
    /// Woken when the connection's task has run with some queued.
    written: tokio::sync::Notify,
    /// When an app first ran since the connection's task last ran with
    /// nothing to write, in microseconds since `epoch` (0: none).
    batch_began: AtomicU64,
    epoch: Instant,
}

/// How long apps may hold the loop before the next waits its turn.
const BATCH_MICROS: u64 = 2000;

impl Default for Turns {
    fn default() -> Turns {
        Turns {
            unwritten: AtomicUsize::new(0),
            written: tokio::sync::Notify::new(),
            batch_began: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// A stream's waiting for its turn (`Turns::must_wait`).
#[derive(Default)]
struct TurnWait<'a> {
    written: Option<Pin<Box<tokio::sync::futures::Notified<'a>>>>,
    /// Woken by a write: once around the loop first, so that the streams
    /// it woken (given window) queue their data before this app runs.
    go_round: bool,
}

impl Turns {
    fn micros(&self, at: Instant) -> u64 {
        // (Never 0: that is "none".)
        u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX) + 1
    }

    /// Whether a stream must wait before its app may run (which it may do
    /// in any poll of its answer).
    fn must_wait<'a>(
        &'a self,
        wait: &mut TurnWait<'a>,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> bool {
        let now = self.micros(now);
        loop {
            if std::mem::take(&mut wait.go_round) {
                cx.waker().wake_by_ref();
                return true;
            }
            let began = self.batch_began.load(Ordering::Acquire);
            if began == 0 || now.saturating_sub(began) < BATCH_MICROS {
                break;
            }
            // Made before the count is read: a write after the read still
            // wakes it.
            let written = wait
                .written
                .get_or_insert_with(|| Box::pin(self.written.notified()));
            if self.unwritten.load(Ordering::Acquire) == 0 {
                break;
            }
            match written.as_mut().poll(cx) {
                Poll::Pending => return true,
                Poll::Ready(()) => {
                    wait.written = None;
                    wait.go_round = true;
                }
            }
        }
        wait.written = None;
        if self.batch_began.load(Ordering::Relaxed) == 0 {
            self.batch_began.store(now, Ordering::Release);
        }
        false
    }

    /// A response's head, or its first data, queued.
    fn queued(&self) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
    }

    /// The connection's task has run: what was queued is written (or
    /// waits for the client's window). Run with nothing to write, the
    /// loop was not held: a new batch may begin.
    fn wrote(&self) {
        if self.unwritten.load(Ordering::Relaxed) > 0 {
            self.unwritten.store(0, Ordering::Release);
            self.written.notify_waiters();
        } else if self.batch_began.load(Ordering::Relaxed) != 0 {
            self.batch_began.store(0, Ordering::Release);
        }
    }
}

/// Takes the client's streams, each served on a task of its own, until
/// the connection ends. Driving the connection (its reads and writes for
/// every stream) is part of taking them.
async fn accept_streams<I>(
    conn: &mut h2::server::Connection<I, Bytes>,
    ctx: &Arc<ConnCtx>,
    streams: &ConnStreams,
) -> Result<(), h2::Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    // Each poll of the connection writes what its streams queued.
    while let Some(accepted) = poll_fn(|cx| {
        let accepted = conn.poll_accept(cx);
        streams.turns.wrote();
        accepted
    })
    .await
    {
        let (req, respond) = accepted?;
        // Counted here, not when its task first runs: the idle watchdog
        // must not find the connection quiet in between.
        ctx.begun.bump();
        // The worker's bound on HTTP/2 requests, across its connections:
        // many connections of 100 streams each could otherwise queue
        // (and buffer the bodies of) far more requests than it serves.
        // The permit goes with the response body, until it is sent.
        let permit = ctx.settings.http2_pending.clone().try_acquire_owned();
        // Counted until the stream's task ends, the upload read or not
        // (a window kept a little longer than needed costs nothing); one
        // refused is never read.
        let upload = (permit.is_ok() && !req.body().is_end_stream())
            .then(|| Upload::begin(&streams.uploads));
        conn.set_target_window_size(connection_window(streams.uploads.load(Ordering::Relaxed)));
        // Boxed before it is spawned: tokio moves a future through several
        // calls on its way into the task, and this one is large.
        tokio::spawn(Box::pin(serve_stream(
            ctx.clone(),
            req,
            respond,
            permit.ok(),
            streams.stalls.clone(),
            upload,
            streams.turns.clone(),
        )));
    }
    Ok(())
}

/// The connection's window for `uploads` streams with an upload under
/// way: one stream's window each and one to spare, so that those waiting
/// for an app never hold back the one being read (h2 takes back what is
/// over, as the streams release it); `MAX_UPLOAD_WINDOWS` at most, which
/// bounds what one connection makes the worker hold (without a bound, one
/// client's 98 uploads held 240 MB of a worker).
fn connection_window(uploads: usize) -> u32 {
    let windows = u32::try_from(uploads.saturating_add(1)).unwrap_or(u32::MAX);
    windows
        .min(MAX_UPLOAD_WINDOWS)
        .saturating_mul(STREAM_WINDOW)
        .max(CONNECTION_WINDOW)
}

/// The most stream windows a connection's window grows to: 16 MiB, past
/// which 16 uploads waiting for an app on one connection would hold back
/// the one it reads, as 4 did.
const MAX_UPLOAD_WINDOWS: u32 = 16;

/// A stream with an upload, counted in its connection's while it lives.
struct Upload(Arc<AtomicUsize>);

impl Upload {
    fn begin(uploads: &Arc<AtomicUsize>) -> Upload {
        uploads.fetch_add(1, Ordering::Relaxed);
        Upload(Arc::clone(uploads))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's end, logged only when something other than the client
/// (which may go away, time out or send garbage) ended it.
fn log_ended(res: Result<(), h2::Error>) {
    if let Err(e) = res {
        log_error(&e);
    }
}

fn log_error(e: &h2::Error) {
    // Clients that go away, time out or send garbage are routine, as they
    // were with hyper; the rest is worth a line.
    if !(e.is_io() || e.is_remote() || e.is_go_away() || e.is_reset()) {
        crate::say!("oxgate: HTTP/2 connection closed: {e}");
    }
}

/// One stream: its request to the handler, cancelled if the client resets
/// the stream first, then the response out.
async fn serve_stream(
    ctx: Arc<ConnCtx>,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    stalls: Arc<ConnStalls>,
    upload: Option<Upload>,
    turns: Arc<Turns>,
) {
    let reply = Arc::new(StreamReply::new(respond));
    // However the task ends, a panic included, the app's hints give the
    // stream up: h2 resets a stream whose handles are all gone, where one
    // kept by an app still holding its hints would leave the client waiting.
    let _give_up = GiveUp(&reply);
    let (parts, body) = req.into_parts();
    let is_head = parts.method == http::Method::HEAD;
    let stall = ctx.settings.head_timeout;
    // `Expect: 100-continue` (RFC 9110 §10.1.1): the client is told to send
    // the body when it is first read (at once for a handler that reads it
    // ahead; at the app's first receive() for one that takes it as it
    // comes, as over HTTP/1.1), rather than after its own fallback delay;
    // h2 sends no 100 of itself. An app that answers without reading (a
    // 401, a 405) gets no 100 sent, and the client no body to send: curl
    // pumped a window's worth, then failed on the reset that ended it.
    let go_on: Option<Box<dyn FnOnce() + Send>> = (parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
        && !body.is_end_stream()
        && !declared_over_limit(&parts.headers, ctx.settings.limit_post))
    .then(|| {
        let reply = Arc::clone(&reply);
        Box::new(move || {
            // Not once the answer has gone (the app answered first).
            if let Some(respond) = reply.lock().as_mut() {
                let mut go_on = http::Response::new(());
                *go_on.status_mut() = http::StatusCode::CONTINUE;
                let _ = respond.send_informational(go_on);
            }
        }) as Box<dyn FnOnce() + Send>
    });
    let progress = Arc::new(UploadProgress::new(
        parts.headers.contains_key(header::CONTENT_LENGTH),
        go_on.is_some(),
    ));
    let answer = async {
        match permit {
            Some(permit) => {
                let hints = Arc::clone(&reply) as Arc<dyn EarlyHints>;
                let declared = parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| crate::request::cgi::content_length(v.as_bytes()));
                let body = WireBody::Http2(H2Body::new(body, declared, go_on, progress.clone()));
                match on_request(ctx, parts, body, Some(permit), Some(hints)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
            None => refuse_stream(ctx, parts).await,
        }
    };
    let mut answer = pin!(answer);
    let mut turn = TurnWait::default();
    let resp = poll_fn(|cx| {
        if !turns.must_wait(&mut turn, Instant::now(), cx)
            && let Poll::Ready(resp) = answer.as_mut().poll(cx)
        {
            return Poll::Ready(Some(resp));
        }
        // Not answered yet: a client that resets the stream cancels it.
        match reply.lock().as_mut().map(|r| r.poll_reset(cx)) {
            Some(Poll::Ready(_)) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await;
    // Taken from the hints either way: none may follow the final head, nor
    // a stream reset (h2 would still write a HEADERS frame on it).
    let respond = reply.lock().take();
    if let (Some(resp), Some(respond)) = (resp, respond) {
        let upload = upload.map(|_| &*progress);
        // Its head, about to be queued (then its first data, in send_body).
        turns.queued();
        send_response(
            respond,
            resp,
            is_head,
            Stall {
                stall,
                conn: stalls,
            },
            upload,
            &turns,
        )
        .await;
    }
}

/// How long an upload may send nothing before the response held for it
/// ends anyway (`finish_after_upload`).
const UPLOAD_QUIET: Duration = Duration::from_secs(1);

/// The response is out but for its end, and the client is still sending
/// its upload, which the app's host reads on and drops (as over HTTP/1.1):
/// the end goes once the upload is whole. A client that sends nothing for
/// `UPLOAD_QUIET` (one that waits for the end before it ends its own side)
/// gets it then. An upload the host stopped reading is cut with a reset,
/// NO_ERROR, as nginx does (RFC 9113 §8.1: the client keeps the response
/// and stops sending). Given its whole response at once, curl 7.88 read no
/// more frames on the stream: it never saw the windows the rest of its
/// upload was given, and waited with it unsent, spinning, until killed.
async fn finish_after_upload(
    tx: &mut SendStream<Bytes>,
    trailers: Option<HeaderMap>,
    upload: &UploadProgress,
) {
    let mut taken = upload.taken();
    let end = loop {
        let quiet = tokio::time::sleep(UPLOAD_QUIET);
        let reset = poll_fn(|cx| tx.poll_reset(cx));
        tokio::select! {
            _ = reset => return,
            () = upload.ended() => {}
            () = quiet => {
                if upload.taken() == taken {
                    break upload.end();
                }
                taken = upload.taken();
            }
        }
        if upload.end() != UploadEnd::Open {
            break upload.end();
        }
    };
    match (end, trailers) {
        (UploadEnd::Abandoned, _) => tx.send_reset(Reason::NO_ERROR),
        (_, Some(trailers)) => {
            let _ = tx.send_trailers(trailers);
        }
        (_, None) => {
            let _ = tx.send_data(Bytes::new(), true);
        }
    }
}

/// How long a response waits for the client to take it: `stall`
/// (`--socket-timeout`) without a window worth the name (`TAKEN`), then
/// the stream is reset. Each stream pins the app's thread while it waits
/// (a file response's thread stays with it until it is sent): a client
/// that opened 100 streams and no window held the worker for a stall
/// each, one after another, where one that stops reading over HTTP/1.1
/// holds it for one. So once one of a connection's streams was reset, one
/// that has taken nothing of its response yet waits `STARVED_WAIT`; and a
/// second reset of a stream that took nothing closes the connection
/// (`ConnStalls`). A stream that has taken data (a paused video, a slow
/// link) always has the whole stall, and a connection's streams that have
/// nothing to send (an event stream, an app still working) are not
/// counted against it.
struct Stall {
    stall: Duration,
    conn: Arc<ConnStalls>,
}

/// A window update is a round trip away: a stream whose client takes data
/// opens one within this.
const STARVED_WAIT: Duration = Duration::from_secs(1);

/// What counts as taking data: windows opened by this much while the
/// stream waited (one that lets the chunk waiting go out whole restarts
/// the wait, but is not taking). A client that opens a byte every few
/// seconds takes nothing, as one reading a byte at a time over HTTP/1.1
/// frees too little of the socket's buffer to wake its writer.
const TAKEN: usize = 16 * 1024;

/// Of a connection's streams reset for a stall: whether one was, and how
/// many had taken none of their response at all (a client that reads
/// nothing: at `UNTAKEN_CLOSE`, the connection is closed).
#[derive(Default)]
struct ConnStalls {
    starved: AtomicBool,
    untaken: AtomicUsize,
    dead: tokio::sync::Notify,
}

const UNTAKEN_CLOSE: usize = 2;

impl Stall {
    fn wait(&self, took: bool) -> Duration {
        match !took && self.conn.starved.load(Ordering::Relaxed) {
            true => self.stall.min(STARVED_WAIT),
            false => self.stall,
        }
    }

    /// A stream is reset for its stall: said (the connection's first), and
    /// the connection closed at its second stream that took nothing.
    fn reset(&self, took: bool) {
        let conn = &self.conn;
        if !conn.starved.swap(true, Ordering::Relaxed) {
            crate::say!(
                "oxgate: HTTP/2 stream reset: the client took no data of its response for --socket-timeout ({}s)",
                self.stall.as_secs()
            );
        }
        if !took && conn.untaken.fetch_add(1, Ordering::Relaxed) + 1 == UNTAKEN_CLOSE {
            crate::say!(
                "oxgate: HTTP/2 connection closed: a second stream whose client took none of its response (a client that reads nothing)"
            );
            conn.dead.notify_one();
        }
    }
}

impl ConnStalls {
    /// Until the client is found to read nothing.
    async fn dead(&self) {
        self.dead.notified().await;
    }
}

/// The head, then the body with the stream's flow control. A response
/// that has no body (to a HEAD, a 204, a 304) ends with its head, as
/// hyper does over HTTP/1.1: the body a HEAD's app made, kept for its
/// length, is dropped (closing the app's iterable). Its end waits for an
/// upload the client is still sending (`finish_after_upload`).
async fn send_response(
    mut respond: SendResponse<Bytes>,
    resp: hyper::Response<OxBody>,
    is_head: bool,
    stall: Stall,
    upload: Option<&UploadProgress>,
    turns: &Turns,
) {
    let (mut head, body) = resp.into_parts();
    strip_connection_fields(&mut head.headers);
    if !head.headers.contains_key(header::DATE) {
        head.headers.insert(header::DATE, date_now());
    }
    let status = head.status;
    let bodiless =
        status == http::StatusCode::NO_CONTENT || status == http::StatusCode::NOT_MODIFIED;
    let end = is_head || bodiless || body.is_end_stream();
    // Not for a 3xx or an error: a client stops sending on one, as curl
    // 7.88 ends its upload short at once (held, the response then got h2's
    // reset of the stream for a body short of its Content-Length). Nor for
    // an upload of no declared length (a stream that may go on as long as
    // the response does, and end only once it has: gRPC's, a telemetry
    // feed), nor for one whose client waits for a 100 never sent.
    let upload = upload.filter(|u| status.is_success() && u.may_be_held());
    if upload.is_some() {
        // The end is held for the upload, and the client must go on
        // reading the stream until it comes: curl 7.88 read nothing more
        // once it had a Content-Length's worth (`finish_after_upload`).
        // A HEAD's has no body to be read: it stays, the GET's length.
        if !is_head {
            head.headers.remove(header::CONTENT_LENGTH);
        }
    } else if !bodiless
        && !body.is_end_stream()
        && let Some(len) = body.size_hint().exact()
        && !head.headers.contains_key(header::CONTENT_LENGTH)
    {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    let hold = end && upload.is_some();
    let (mut tx, sent) =
        match respond.send_response(http::Response::from_parts(head, ()), end && !hold) {
            Ok(mut tx) if !end => {
                let sent = send_body(body, &mut tx, stall, upload, turns).await;
                (tx, sent)
            }
            Ok(tx) => {
                drop(body);
                (tx, if hold { Sent::Held(None) } else { Sent::All })
            }
            Err(_) => return respond.send_reset(Reason::INTERNAL_ERROR),
        };
    if let (Sent::Held(trailers), Some(upload)) = (sent, upload) {
        finish_after_upload(&mut tx, trailers, upload).await;
    }
}

/// How much of a response `send_body` sent.
enum Sent {
    /// All of it, or all it could (the stream reset, the body failed).
    All,
    /// All but its end (and trailers), held for the upload still coming.
    Held(Option<HeaderMap>),
}

/// Moves the body's frames into the stream as the client's window
/// allows; a reset from the client stops it, and a fault in the body
/// resets the stream (the client sees the response cut short). A window
/// that stays shut for `stall` (`--socket-timeout`) resets it too: a
/// client that takes nothing must not hold the app's thread, as one that
/// stops reading over HTTP/1.1 does not.
async fn send_body(
    body: OxBody,
    tx: &mut SendStream<Bytes>,
    stall: Stall,
    upload: Option<&UploadProgress>,
    turns: &Turns,
) -> Sent {
    // `Turns` is told of the first data queued (none queued, h2 wakes no
    // connection task to write it, so nothing is told).
    let mut first_data = true;
    // The end is held while the upload is still coming.
    let held = || upload.is_some_and(|u| u.end() == UploadEnd::Open);
    let mut body = pin!(body);
    // A chunk taken from the body, waiting for the window to open.
    let mut waiting: Option<(Bytes, bool)> = None;
    // Since when the client has taken nothing worth the name, and what it
    // took since (windows too small to count, `TAKEN`).
    let mut shut: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut trickled = 0usize;
    // Whether its client has opened a window worth the name while it
    // waited (`Stall`).
    let mut took = false;
    poll_fn(|cx| {
        loop {
            if tx.poll_reset(cx).is_ready() {
                return Poll::Ready(Sent::All);
            }
            if let Some((_, end)) = &waiting {
                let end = *end;
                while tx.capacity() == 0 {
                    match tx.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => {}
                        Poll::Ready(Some(Ok(_))) => break,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Sent::All),
                        Poll::Pending => {
                            if shut.is_none() {
                                // What counts is taken from here on.
                                trickled = 0;
                            }
                            let timer = shut.get_or_insert_with(|| {
                                Box::pin(tokio::time::sleep(stall.wait(took)))
                            });
                            if timer.as_mut().poll(cx).is_ready() {
                                stall.reset(took);
                                tx.send_reset(Reason::CANCEL);
                                return Poll::Ready(Sent::All);
                            }
                            return Poll::Pending;
                        }
                    }
                }
                // As much as the window takes, no more: h2 then frames it
                // at once, and each window the client opens is seen here
                // (given the whole chunk, h2 held it, the capacity stayed
                // 0 until it had nearly all gone, and a client reading
                // steadily but slowly was reset as if it read nothing).
                let (data, _) = waiting.as_mut().expect("waiting, checked above");
                let part = data.split_to(tx.capacity().min(data.len()));
                let last = data.is_empty();
                // The wait restarts once the chunk is out, or a window worth
                // the name came.
                trickled += part.len();
                if last || trickled >= TAKEN {
                    // Taking is a window opened while the stream waited:
                    // the client's first window is given, not taken (a
                    // client that never opens another held a full stall
                    // per stream).
                    took |= shut.is_some() && trickled >= TAKEN;
                    shut = None;
                    trickled = 0;
                }
                let hold = end && last && held();
                let sent = tx.send_data(part, end && last && !hold);
                if std::mem::take(&mut first_data) {
                    turns.queued();
                }
                if sent.is_err() {
                    return Poll::Ready(Sent::All);
                }
                if last {
                    waiting = None;
                    if hold {
                        return Poll::Ready(Sent::Held(None));
                    }
                    if end {
                        return Poll::Ready(Sent::All);
                    }
                } else {
                    tx.reserve_capacity(data.len());
                }
                continue;
            }
            match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = body.is_end_stream();
                        if data.is_empty() {
                            if end && held() {
                                return Poll::Ready(Sent::Held(None));
                            }
                            if tx.send_data(data, end).is_err() || end {
                                return Poll::Ready(Sent::All);
                            }
                        } else {
                            tx.reserve_capacity(data.len());
                            waiting = Some((data, end));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            tx.reserve_capacity(0);
                            if held() {
                                return Poll::Ready(Sent::Held(Some(trailers)));
                            }
                            let _ = tx.send_trailers(trailers);
                            return Poll::Ready(Sent::All);
                        }
                    }
                },
                Some(Err(_)) => {
                    tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(Sent::All);
                }
                None if held() => return Poll::Ready(Sent::Held(None)),
                None => {
                    let _ = tx.send_data(Bytes::new(), true);
                    return Poll::Ready(Sent::All);
                }
            }
        }
    })
    .await
}

/// A Content-Length over `--limit-post`: the answer is a 413, and the
/// client must not be asked for the body first.
fn declared_over_limit(headers: &HeaderMap, limit_post: Option<u64>) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| crate::request::cgi::content_length(v.as_bytes()));
    crate::request::over_limit_post(limit_post, declared)
}

/// What HTTP/2 forbids in a response (RFC 9113 §8.2.2): the fields of an
/// HTTP/1.1 connection, and those `Connection` names. h2 would refuse the
/// whole response for one of them.
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in [
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if let Some(named) = headers.remove(header::CONNECTION)
        && let Ok(named) = named.to_str()
    {
        for name in named.split(',') {
            headers.remove(name.trim());
        }
    }
}

/// The `Date` field's value, made once a second on each thread.
fn date_now() -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        // (The first call finds second 0, long past.)
        if last.0 != second {
            let text = httpdate::fmt_http_date(now);
            *last = (
                second,
                HeaderValue::from_str(&text).expect("an HTTP date is a valid field value"),
            );
        }
        last.1.clone()
    })
}

/// Takes the stream from the hints when dropped.
struct GiveUp<'a>(&'a StreamReply);

impl Drop for GiveUp<'_> {
    fn drop(&mut self) {
        drop(self.0.lock().take());
    }
}

/// A stream's way back to the client: the app's early hints go through
/// it, until the final response (or the stream's reset) takes it.
struct StreamReply(Mutex<Option<SendResponse<Bytes>>>, AtomicUsize);

/// The most 103s one stream may send. h2 queues a HEADERS frame whatever
/// the client has read (it bounds only DATA), so an app hinting in a loop
/// to a client that reads nothing would otherwise pile them up; a page
/// has one or two.
const HINTS_MAX: usize = 4;

impl StreamReply {
    fn new(respond: SendResponse<Bytes>) -> StreamReply {
        StreamReply(Mutex::new(Some(respond)), AtomicUsize::new(0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SendResponse<Bytes>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EarlyHints for StreamReply {
    fn send(&self, links: &[Bytes]) -> bool {
        if early_hints_fault(links).is_some() || self.1.fetch_add(1, Ordering::Relaxed) >= HINTS_MAX
        {
            return false;
        }
        let mut hint = http::Response::new(());
        *hint.status_mut() = http::StatusCode::EARLY_HINTS;
        for link in links {
            match HeaderValue::from_maybe_shared(link.clone()) {
                Ok(value) => hint.headers_mut().append(header::LINK, value),
                Err(_) => return false,
            };
        }
        // h2 queues the frame and wakes the connection's task: callable
        // from the app's thread.
        match self.lock().as_mut() {
            Some(respond) => respond.send_informational(hint).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_window_keeps_one_stream_window_beyond_its_uploads_up_to_16() {
        assert_eq!(connection_window(0), CONNECTION_WINDOW);
        assert_eq!(connection_window(3), CONNECTION_WINDOW);
        assert_eq!(connection_window(4), 5 * STREAM_WINDOW);
        assert_eq!(connection_window(15), 16 * STREAM_WINDOW);
        assert_eq!(connection_window(100), 16 * STREAM_WINDOW);
        assert_eq!(connection_window(usize::MAX), 16 * STREAM_WINDOW);
    }
}
