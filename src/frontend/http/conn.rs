//! One HTTP connection: HTTP/1.1, or HTTP/2 (h2c with prior knowledge, or
//! chosen by ALPN over TLS). hyper drives it, and rustls its TLS; this file
//! picks which, and adds the idle watchdog, the graceful stop and the call
//! to the handler.

use crate::request::{ConnInfo, GoingAway, Handler};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::batch::FlushQueue;
use super::context::{ConnCtx, HttpSettings, TaskCounter};
use super::framing_watch::FramingWatch;
use super::http2::serve_http2;
pub use super::peek::Peek;
use super::request_body::WireBody;
use super::service::on_request;
use super::watch::{Either, Quiet, idle_watchdog, race_rarely, stop_or_idle};
use crate::frontend::tls::TlsListener;

/// What a cleartext connection's first line says it speaks.
pub(super) enum Opening {
    /// HTTP/2's connection preface: h2c with prior knowledge.
    Http2,
    /// A well-formed request line naming a version hyper does not speak:
    /// hyper would answer 400; the client deserves 505.
    Unsupported(String),
}

/// Looks at the connection's first request line (without taking it).
/// `None` means HTTP/1.x, or too little to tell: hyper's to read.
pub(super) async fn opening<S: Peek>(stream: &S) -> Option<Opening> {
    const PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";
    stream.readable().await.ok()?;
    let mut buf = [0u8; 1024];
    use nix::sys::socket::{MsgFlags, recv};
    let mut n = 0;
    // A preface cut short by the network (its first bytes in one segment):
    // the rest is waited for, a little, before the connection is taken for
    // HTTP/1.1. (The socket stays readable while peeked bytes wait: a
    // short sleep, not readiness, paces the look.)
    for _ in 0..100 {
        n = recv(
            stream.as_raw_fd(),
            &mut buf,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        if n == 0 || n >= PREFACE_LINE.len() || !PREFACE_LINE.starts_with(&buf[..n]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let line = buf.get(..n)?;
    let line = &line[..line.iter().position(|&c| c == b'\n')?];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // RFC 9113 §3.4: the preface opens with "PRI * HTTP/2.0".
    if line == b"PRI * HTTP/2.0" {
        return Some(Opening::Http2);
    }
    let version = line.rsplit(|&c| c == b' ').next()?;
    let rest = version.strip_prefix(b"HTTP/")?;
    let (major, minor) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
    (major != 1 || minor > 1).then(|| Opening::Unsupported(format!("HTTP/{major}.{minor}")))
}

/// Answers a connection hyper never gets to see, and closes it.
async fn refuse<S: Peek>(mut stream: S, status: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Refuses a PROXY header from a peer `--proxy-allow-from` does not list,
/// saying so in the log.
async fn refuse_proxy_header<S: Peek>(stream: S, info: &ConnInfo) {
    let peer = info
        .peer_addr()
        .map_or_else(|| "?".to_string(), |p| p.ip().to_string());
    crate::say!(
        "oxgate: a PROXY header from {peer}, which --proxy-allow-from does not list: refused (add the balancer's address to --proxy-allow-from)"
    );
    refuse(
        stream,
        "403 Forbidden",
        "PROXY header from a peer not allowed\n",
    )
    .await;
}

/// How long a stop leaves an idle keep-alive connection open for a request
/// its client may be sending.
const NEXT_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Waits for what comes before a connection's first request (a PROXY
/// header, its first bytes), for `--socket-timeout` at most, and once the
/// server stops, for `NEXT_REQUEST_GRACE` more at most: such a connection
/// has no request in flight, and a stop waited the whole timeout for one
/// that sent nothing (a browser's preconnect, a balancer's spare). None:
/// not in time.
async fn before_a_request<F: std::future::Future>(
    fut: F,
    head_timeout: Duration,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Option<F::Output> {
    let deadline = tokio::time::Instant::now() + head_timeout;
    let mut fut = std::pin::pin!(fut);
    let mut stop = shutdown.clone();
    if !*stop.borrow_and_update() {
        tokio::select! {
            out = &mut fut => return Some(out),
            () = tokio::time::sleep_until(deadline) => return None,
            _ = stop.wait_for(|stopping| *stopping) => {}
        }
    }
    let grace = deadline.min(tokio::time::Instant::now() + NEXT_REQUEST_GRACE);
    tokio::time::timeout_at(grace, fut).await.ok()
}

/// Serves one connection until it closes, or until `shutdown` fires and the
/// request in flight (if any) is done.
pub async fn serve_connection<S: Peek>(
    mut stream: S,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    flush: Arc<FlushQueue>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    going_away: GoingAway,
) {
    // Both made first, with the task and before any request's
    // allocations, which they outlast: amid a request's freed memory they
    // would keep a page of it resident while the connection is parked.
    // The information is shared by the connection's hyper connections (a
    // clone of its `Bytes` would allocate).
    let home = super::lent::Home::default();
    let mut info = Arc::new(info);
    if let Some(pp) = &settings.proxy_protocol
        && pp.believes(info.peer_addr())
    {
        match before_a_request(pp.read(&mut stream), settings.head_timeout, &shutdown).await {
            Some(Ok(Some(client))) => info = Arc::new(Arc::unwrap_or_clone(info).with_peer(client)),
            Some(Ok(None)) => {}
            Some(Err(why)) => {
                crate::say!("oxgate: connection refused: {why}");
                return refuse(stream, "400 Bad Request", &format!("{why}\n")).await;
            }
            // No header, no request: the head timeout, or a stop.
            None => return,
        }
    } else if settings.proxy_protocol.is_some() {
        let header = before_a_request(
            super::proxy_header::ProxyProtocol::starts_with_header(&stream),
            settings.head_timeout,
            &shutdown,
        )
        .await;
        match header {
            Some(false) => {}
            // Nothing in --socket-timeout, or a stop: closed, not given
            // the head timeout a second time.
            None => return,
            Some(true) => {
                // As Gunicorn refuses it: read as a request, it was a 400
                // for an "invalid HTTP version", naming neither PROXY nor
                // the list.
                return refuse_proxy_header(stream, &info).await;
            }
        }
    }
    if let Some(tls) = settings.tls.clone() {
        // Boxed, as HTTP/2 below: the task of every connection is as
        // large as its largest path, and these hold large state (rustls',
        // h2's) that HTTP/1.1 in clear, most connections, does not.
        return Box::pin(serve_tls(
            stream, info, host, settings, &tls, shutdown, going_away,
        ))
        .await;
    }
    let opened = before_a_request(opening(&stream), settings.head_timeout, &shutdown).await;
    match opened.ok_or(()) {
        Ok(Some(Opening::Http2)) if settings.http2_max_streams.is_some() => {
            let ctx = conn_ctx(info, host, settings, false, Some(stream.as_raw_fd()));
            let io = Progress::new(stream, ctx.clone());
            return Box::pin(serve_http2(io, ctx, shutdown)).await;
        }
        Ok(Some(Opening::Http2)) => {
            let body = "HTTP/2 is turned off here (--http2-off); use HTTP/1.1\n";
            return refuse(stream, "505 HTTP Version Not Supported", body).await;
        }
        Ok(Some(Opening::Unsupported(version))) => {
            let body = format!("{version} is not supported; use HTTP/1.1\n");
            return refuse(stream, "505 HTTP Version Not Supported", &body).await;
        }
        // Not a byte in --socket-timeout, or within the grace after a
        // stop: closed now, not given to hyper, whose own head timeout
        // would start over (twice the time, for a connection that may only
        // be holding a slot), and which a stop would wait for.
        Err(()) => return,
        _ => {}
    }
    // A stop came before the connection's first request (within the
    // grace): that request is answered with a close.
    let mut stopping = *shutdown.borrow();
    let mut shutdown = shutdown;
    loop {
        let ctx = conn_ctx(info.clone(), host.clone(), settings.clone(), true, None);
        let batched = super::batch::BatchedIo::new(
            super::lent::Lent::new(stream, ctx.clone(), home.clone()),
            flush.clone(),
            ctx.files.clone(),
            ctx.progress.clone(),
        );
        if ctx.settings.early_hints {
            let _ = ctx.early_hints.set(Arc::new(batched.early_hints()));
        }
        let _ = ctx.outbox.set(Box::new(batched.written()));
        let io = TokioIo::new(FramingWatch::new(batched, ctx.clone()));
        let how = if stopping {
            Http1::Stopping
        } else {
            Http1::Parkable
        };
        let ended = ctx.clone();
        let Some(wait) = serve_http1(io, ctx, &mut shutdown, going_away.clone(), how).await else {
            let lingering = ended.linger.load(Ordering::Relaxed);
            let back = home.lock().unwrap_or_else(|e| e.into_inner()).take();
            if lingering && let Some(stream) = back {
                linger(stream).await;
            }
            // Ended: its buffers are freed as a parked one's are, and a
            // burst of connections that close (Connection: close, health
            // checks, a flood of unfinished heads) leaves the worker at its
            // peak memory unless they are given back the same way.
            crate::frontend::release_freed_memory_soon();
            return;
        };
        // Parked: the task keeps the socket and nothing else until the
        // client's next bytes come.
        let Some(parked) = home.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        stream = parked;
        crate::frontend::release_freed_memory_soon();
        let stopped = *shutdown.borrow_and_update()
            || tokio::select! {
                biased;
                ready = stream.readable() => match ready {
                    Ok(()) => false,
                    Err(_) => return,
                },
                _ = shutdown.changed() => true,
                () = tokio::time::sleep(wait) => return,
            };
        if stopped {
            // As for an idle connection hyper holds: a moment for a
            // request its client may be sending, answered with a close.
            match tokio::time::timeout(NEXT_REQUEST_GRACE, stream.readable()).await {
                Ok(Ok(())) => stopping = true,
                _ => return,
            }
        }
    }
}

/// How long a lingering close reads what the client still sends at most,
/// and how long it waits for each read (nginx's `lingering_time` and
/// `lingering_timeout`).
const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// Ends a connection whose last request's body was left unread: the write
/// side first (the answer is out), then its bytes read and dropped until
/// the client closes, or stops sending for `LINGER_TIMEOUT`, or
/// `LINGER_TIME` has passed. Closed at once, the unread bytes would make
/// the kernel reset the connection, and the client might lose the answer.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.shutdown().await;
    let limits = crate::frontend::DrainLimits {
        max: u64::MAX,
        each: LINGER_TIMEOUT,
        until: Some(tokio::time::Instant::now() + LINGER_TIME),
    };
    crate::frontend::drain_input(&mut stream, limits).await;
}

/// How `serve_http1` may end an idle connection.
enum Http1 {
    /// Over TLS: by closing it.
    Closing,
    /// In clear: also by parking it (`park`).
    Parkable,
    /// The worker stops (the connection was parked when it began to).
    Stopping,
}

/// An `--https-socket`'s connection: the TLS handshake (bounded by the
/// head timeout), then HTTP/2 if ALPN chose it, else HTTP/1.1.
async fn serve_tls<S: Peek>(
    stream: S,
    info: Arc<ConnInfo>,
    host: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    tls: &TlsListener,
    shutdown: tokio::sync::watch::Receiver<bool>,
    going_away: GoingAway,
) {
    // Plain HTTP sent to the TLS port (`http://` for `https://`): a 400
    // that says so, as nginx answers, rather than a TLS alert the client
    // shows as garbage ("Received HTTP/0.9"). A handshake opens with a
    // record of type 22; a request line, with a letter. One deadline for
    // the look and the handshake together.
    let deadline = tokio::time::Instant::now() + settings.head_timeout;
    if let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
        let mut first = [0u8; 1];
        let peeked = nix::sys::socket::recv(
            stream.as_raw_fd(),
            &mut first,
            nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        );
        // Closed before a byte came: a load balancer's TCP health check,
        // not a failed handshake (nginx logs it at info level alone).
        if matches!(peeked, Ok(0)) {
            return;
        }
        if matches!(peeked, Ok(1)) && first[0].is_ascii_uppercase() {
            // Still a failed handshake, counted and logged as one.
            crate::frontend::tls::handshake_failed(
                &std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "plain HTTP sent to the TLS port (answered 400)",
                ),
                info.peer_addr(),
            );
            let mut stream = stream;
            let body = "The plain HTTP request was sent to HTTPS port\n";
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            // The request is read and let go, not left to reset the
            // connection under the answer.
            return linger(stream).await;
        }
    }
    let stream = match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(why)) => return crate::frontend::tls::handshake_failed(&why, info.peer_addr()),
        Err(_) => {
            let why = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no handshake within --socket-timeout",
            );
            return crate::frontend::tls::handshake_failed(&why, info.peer_addr());
        }
    };
    let (_, session) = stream.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2") && settings.http2_max_streams.is_some();
    let info = Arc::new(Arc::unwrap_or_clone(info).with_tls(tls.settled(session)));
    let socket = h2.then(|| stream.get_ref().0.as_raw_fd());
    let ctx = conn_ctx(info, host, settings, false, socket);
    let io = Progress::new(stream, ctx.clone());
    if h2 {
        serve_http2(io, ctx, shutdown).await;
    } else {
        let io = TokioIo::new(FramingWatch::new(io, ctx.clone()));
        let mut shutdown = shutdown;
        serve_http1(io, ctx, &mut shutdown, going_away, Http1::Closing).await;
    }
}

/// What every request of the connection needs, behind one reference
/// count: the service clones it once per request.
fn conn_ctx(
    info: Arc<ConnInfo>,
    handler: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    sendfile: bool,
    socket: Option<std::os::fd::RawFd>,
) -> Arc<ConnCtx> {
    Arc::new(ConnCtx {
        info,
        handler,
        settings,
        files: Arc::new(super::sendfile::FileQueue::default()),
        sendfile,
        progress: Arc::new(TaskCounter::default()),
        begun: TaskCounter::default(),
        finished: TaskCounter::default(),
        upgrade: std::sync::Mutex::new(None),
        closing: AtomicBool::new(false),
        switched: AtomicBool::new(false),
        flawed_head: std::sync::OnceLock::new(),
        early_hints: std::sync::OnceLock::new(),
        outbox: std::sync::OnceLock::new(),
        settled_heads: std::sync::atomic::AtomicU64::new(0),
        parking: AtomicBool::new(false),
        linger: AtomicBool::new(false),
        write_blocked: AtomicBool::new(false),
        socket,
    })
}

/// Serves HTTP/1.1 on `io` (cleartext through `BatchedIo`, or TLS) until
/// the connection closes, or until `shutdown` fires and the request in
/// flight (if any) is done.
///
/// A connection `Http1::Parkable` that stays idle (`PARK_AFTER`) is parked
/// instead: hyper lets it go without closing it, and what returns is how
/// much longer it may stay idle. Its stream is back home (`Lent`).
async fn serve_http1<I>(
    io: I,
    conn_ctx: Arc<ConnCtx>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    going_away: GoingAway,
    how: Http1,
) -> Option<Duration>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let settings = conn_ctx.settings.clone();
    let ctx = conn_ctx.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        ctx.begun.bump();
        let (parts, body) = req.into_parts();
        // No 1xx for an HTTP/1.0 client (RFC 9110 §15.2), and none over
        // TLS, whose connections hyper writes alone.
        let hints = match parts.version {
            http::Version::HTTP_11 => ctx.early_hints.get().cloned(),
            _ => None,
        };
        on_request(ctx.clone(), parts, WireBody::Http1(body), None, hints)
    });
    // httparse's defaults stay: no space before the first header name, no
    // obs-fold. The framing tracker's quick reading of a head (h1_framing.rs,
    // `quick_head`) relies on every header line hyper takes beginning with
    // its name.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // Body frames go down to BatchedIo as they are, never copied into
        // hyper's buffer: file frames depend on it (sendfile.rs). So must
        // `pipeline_flush` stay off: it switches hyper to copying.
        .writev(true)
        // hyper's own head timeout arms a timer for every request, a
        // tenth of a hello-world request's CPU; `idle_watchdog` does its
        // job with one timer per connection.
        .header_read_timeout(None)
        .keep_alive(settings.keepalive != Some(Duration::ZERO))
        .max_buf_size(settings.h1_max_buf());
    // hyper's default; another count costs a heap allocation per request.
    if settings.max_headers != 100 {
        builder.max_headers(settings.max_headers);
    }
    // Boxed: parking frees it, and the task stays small.
    let mut conn = Box::pin(builder.serve_connection(io, service).with_upgrades());
    if !matches!(how, Http1::Stopping) {
        let side = stop_or_idle(shutdown, &conn_ctx, matches!(how, Http1::Parkable));
        match race_rarely(conn.as_mut(), side).await {
            Either::Main(res) => {
                after_http(res, &conn_ctx, going_away).await;
                return None;
            }
            Either::Side(Quiet::Stop) => {}
            Either::Side(Quiet::Idle) => return None,
            Either::Side(Quiet::Parkable(wait)) => {
                conn_ctx.parking.store(true, Ordering::Relaxed);
                conn.as_mut().graceful_shutdown();
                match park(conn.as_mut(), &conn_ctx).await {
                    Poll::Ready(true) => return Some(wait), // `conn` dropped: the stream goes home
                    Poll::Ready(false) => return None,
                    // hyper was not idle after all: it has been told to end
                    // the connection, and it does so, once done with it.
                    Poll::Pending => {
                        tokio::select! {
                            res = conn.as_mut() => after_http(res, &conn_ctx, going_away).await,
                            _ = idle_watchdog(&conn_ctx, false) => {}
                        }
                        return None;
                    }
                }
            }
        }
    }
    // Between requests, hyper would see the connection idle and close it at
    // once. But a client may have sent its next request already: one
    // accepted just before the stop, or a keep-alive client (a proxy's
    // pool, a load generator) that sends as soon as it has its answer. It
    // would find the connection closed under that request. So every
    // response from now on says `Connection: close`, after which hyper
    // closes; an idle connection is left open a moment for that next
    // request (a new one: for the head timeout).
    conn_ctx.closing.store(true, Ordering::Relaxed);
    // A response under way may have sent its head, without the close,
    // before the stop: its client will send the next request as soon as it
    // has the body. It finishes first (or ends the connection itself).
    // (A client that stopped reading it is dropped by the watchdog.)
    let stuck = idle_watchdog(&conn_ctx, false);
    tokio::pin!(stuck);
    while conn_ctx.begun.get() != conn_ctx.finished.get() {
        tokio::select! {
            res = conn.as_mut() => {
                after_http(res, &conn_ctx, going_away).await;
                return None;
            }
            _ = &mut stuck => return None,
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let wait = if conn_ctx.begun.get() == 0 {
        settings.head_timeout
    } else {
        NEXT_REQUEST_GRACE
    };
    tokio::select! {
        res = conn.as_mut() => {
            after_http(res, &conn_ctx, going_away).await;
            return None;
        }
        () = tokio::time::sleep(wait) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        res = conn.as_mut() => after_http(res, &conn_ctx, going_away).await,
        // hyper waits for a head begun but never finished.
        _ = idle_watchdog(&conn_ctx, false) => {}
    }
    None
}

/// Takes an idle connection from hyper without closing it: hyper, told
/// to stop (and that the connection is `parking`), finds the connection
/// idle and ends at once, without a shutdown of the socket
/// (`FramingWatch`); once `conn` is dropped, its stream is back home
/// (`Lent`). Ready(true) when so; Ready(false) when hyper ended otherwise
/// (the connection closes); Pending when hyper, which was not idle after
/// all, still has work: it ends the connection once done, with a shutdown,
/// as a stop would.
async fn park<C>(mut conn: Pin<&mut C>, ctx: &ConnCtx) -> Poll<bool>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    // An idle hyper connection ends in this poll.
    let ended = std::future::poll_fn(|cx| Poll::Ready(conn.as_mut().poll(cx))).await;
    let parked = match ended {
        Poll::Ready(res) => Poll::Ready(res.is_ok() && ctx.begun.get() == ctx.finished.get()),
        Poll::Pending => Poll::Pending,
    };
    if parked != Poll::Ready(true) {
        ctx.parking.store(false, Ordering::Relaxed);
    }
    parked
}

/// A stream that counts its writes for the idle watchdog, as `BatchedIo`
/// does for cleartext HTTP/1.1.
struct Progress<T> {
    inner: T,
    ctx: Arc<ConnCtx>,
}

impl<T> Progress<T> {
    fn new(inner: T, ctx: Arc<ConnCtx>) -> Progress<T> {
        Progress { inner, ctx }
    }

    fn count(&self, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            self.ctx.progress.bump();
        }
        self.ctx.note_write(written.is_pending());
        written
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Progress<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Progress<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(super) fn log_conn_error(res: Result<(), hyper::Error>, info: &ConnInfo) {
    if let Err(e) = res {
        // Clients that go away, time out or send garbage are routine; only
        // a response cut short by the app is worth a line. A head hyper
        // answered 400 itself (a target with a raw `"`, `<` or `>`, which
        // the http crate's URI refuses) gets one a minute at most, so that
        // the 400s a client sees are explained somewhere.
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        if e.is_parse() {
            static SAID: crate::log::say::Throttle = crate::log::say::Throttle::new();
            if let Some(held) = SAID.pass(60) {
                let from = super::convert::from_peer(info);
                let more = match held {
                    0 => String::new(),
                    n => format!("; {n} more since the last such line"),
                };
                crate::say!(
                    "oxgate: a request head was answered {}: {e}{from} (said at most once a minute{more})",
                    parse_error_status(&e)
                );
            }
        } else if std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<crate::request::BodyError>())
            .is_some_and(|b| b.logged)
        {
            // Said once already, where it happened.
        } else if e.is_user() || src.as_deref().is_some_and(|s| s.contains("app")) {
            crate::say!(
                "oxgate: connection closed: {e}{}",
                src.map(|s| format!(": {s}")).unwrap_or_default()
            );
        }
    }
}

/// The status hyper answered a head it could not parse with: 431 for a
/// head over --buffer-size, 414 for a target over it, else 400.
fn parse_error_status(e: &hyper::Error) -> &'static str {
    if !e.is_parse_too_large() {
        "400 Bad Request"
    } else if e.to_string().contains("URI") {
        "414 URI Too Long"
    } else {
        "431 Request Header Fields Too Large"
    }
}

/// The connection's HTTP part is over: if its last response was a 101,
/// the session the handler gave runs on the connection's bytes now.
async fn after_http(res: Result<(), hyper::Error>, ctx: &ConnCtx, going_away: GoingAway) {
    log_conn_error(res, &ctx.info);
    let upgrade = ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((on_upgrade, session)) = upgrade {
        // An error: the client left before the 101 was written.
        if let Ok(upgraded) = on_upgrade.await {
            session(Box::new(TokioIo::new(upgraded)), going_away).await;
        }
    }
}
