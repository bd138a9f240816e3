//! One HTTP/1.1 connection: hyper drives it; this file adds the idle
//! watchdog, the graceful stop and the call to the handler.

use crate::request::{ConnInfo, GoingAway, Handler, Response, ResponseBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use super::batch::FlushQueue;
use super::body::{OxBody, to_hyper};
use super::context::{ConnCtx, HttpSettings, TaskCounter};
use super::convert::{Headed, convert_head, to_request};
pub use super::peek::Peek;

/// hyper answers any HTTP version other than 1.x with 400; clients deserve
/// 505 when the request is well formed but names a version we do not speak
/// (HTTP/2.0 without TLS, say). Looks at the connection's first request line.
pub(super) async fn unsupported_version<S: Peek>(stream: &S) -> Option<String> {
    stream.readable().await.ok()?;
    let mut buf = [0u8; 1024];
    use nix::sys::socket::{MsgFlags, recv};
    let n = recv(
        stream.as_raw_fd(),
        &mut buf,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let line = buf.get(..n)?;
    let line = &line[..line.iter().position(|&c| c == b'\n')?];
    let version = line
        .strip_suffix(b"\r")
        .unwrap_or(line)
        .rsplit(|&c| c == b' ')
        .next()?;
    let rest = version.strip_prefix(b"HTTP/")?;
    let (major, minor) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
    (major != 1 || minor > 1).then(|| format!("HTTP/{major}.{minor}"))
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

/// How long a stop leaves an idle keep-alive connection open for a request
/// its client may be sending.
const NEXT_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it closes, or until `shutdown` fires and the
/// request in flight (if any) is done.
pub async fn serve_connection<S: Peek>(
    mut stream: S,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    flush: Arc<FlushQueue>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    going_away: GoingAway,
) {
    let mut info = info;
    if let Some(pp) = &settings.proxy_protocol
        && pp.believes(info.peer_addr())
    {
        match tokio::time::timeout(settings.head_timeout, pp.read(&mut stream)).await {
            Ok(Ok(Some(client))) => info = info.with_peer(client),
            Ok(Ok(None)) => {}
            Ok(Err(why)) => {
                crate::say!("oxgate: connection refused: {why}");
                return refuse(stream, "400 Bad Request", &format!("{why}\n")).await;
            }
            Err(_) => return, // no header, no request: the head timeout
        }
    }
    if let Ok(Some(version)) =
        tokio::time::timeout(settings.head_timeout, unsupported_version(&stream)).await
    {
        let body = format!("{version} is not supported; use HTTP/1.1\n");
        return refuse(stream, "505 HTTP Version Not Supported", &body).await;
    }
    let files = Arc::new(super::sendfile::FileQueue::default());
    let progress = Arc::new(TaskCounter::default());
    let io = TokioIo::new(super::batch::BatchedIo::new(
        stream,
        flush,
        files.clone(),
        progress.clone(),
    ));
    // What every request of the connection needs, behind one reference
    // count: the service clones it once per request.
    let conn_ctx = Arc::new(ConnCtx {
        info,
        handler: host,
        settings: settings.clone(),
        files,
        progress,
        begun: TaskCounter::default(),
        finished: TaskCounter::default(),
        upgrade: std::sync::Mutex::new(None),
        closing: AtomicBool::new(false),
    });
    let ctx = conn_ctx.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let ctx = ctx.clone();
        ctx.begun.bump();
        let (mut parts, body) = req.into_parts();
        // Only requests that ask to upgrade have one.
        let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let mut head = convert_head(&parts, body, &ctx.info, &ctx.settings);
        if let Ok(h) = &mut head {
            h.upgradable = on_upgrade.is_some();
        }
        // The request's header map, emptied, carries the response's
        // headers; hyper keeps that map to parse the next request into,
        // so a keep-alive connection allocates no header maps.
        let mut headers = parts.headers;
        headers.clear();
        async move { Ok::<_, Infallible>(handle(head, headers, on_upgrade, ctx).await) }
    });
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
        .max_buf_size(settings.max_head.max(8192));
    // hyper's default; another count costs a heap allocation per request.
    if settings.max_headers != 100 {
        builder.max_headers(settings.max_headers);
    }
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let stop = async {
        tokio::select! {
            biased;
            _ = shutdown.changed() => true,
            () = idle_watchdog(&conn_ctx) => false,
        }
    };
    match race_rarely(conn.as_mut(), stop).await {
        Either::Main(res) => return after_http(res, &conn_ctx, going_away).await,
        Either::Side(false) => return, // idle
        Either::Side(true) => {}       // shutting down
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
    let stuck = idle_watchdog(&conn_ctx);
    tokio::pin!(stuck);
    while conn_ctx.begun.get() != conn_ctx.finished.get() {
        tokio::select! {
            res = conn.as_mut() => return after_http(res, &conn_ctx, going_away).await,
            () = &mut stuck => return,
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let wait = if conn_ctx.begun.get() == 0 {
        settings.head_timeout
    } else {
        NEXT_REQUEST_GRACE
    };
    tokio::select! {
        res = conn.as_mut() => return after_http(res, &conn_ctx, going_away).await,
        () = tokio::time::sleep(wait) => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        res = conn.as_mut() => after_http(res, &conn_ctx, going_away).await,
        // hyper waits for a head begun but never finished.
        () = idle_watchdog(&conn_ctx) => {}
    }
}

/// Returns once the connection has gone a whole `--socket-timeout` with
/// nothing to show: no request begun, none in progress, and nothing written
/// to the client. So an idle keep-alive connection, a client that trickles
/// its head, or one that stops reading a response the app has finished
/// (as uWSGI's timeout on each write) is closed after one to two timeouts.
/// A request being served, however long its app takes, and a response the
/// client is still reading keep the connection open.
pub(super) async fn idle_watchdog(ctx: &ConnCtx) {
    let timeout = ctx.settings.head_timeout;
    let sleep = tokio::time::sleep(timeout);
    tokio::pin!(sleep);
    let state = || (ctx.begun.get(), ctx.progress.get());
    let mut seen = state();
    loop {
        sleep.as_mut().await;
        let now = state();
        if now == seen && ctx.finished.get() == now.0 {
            return;
        }
        seen = now;
        sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
    }
}

pub(super) enum Either<A, B> {
    Main(A),
    Side(B),
}

/// Runs `main` and `side` until either is done, polling `side` only when
/// its own waker fired (and once at first), not every time the task wakes
/// for `main`: a connection wakes twice per request, and its shutdown
/// watch and watchdog timer cost a lock and a timer lookup to poll.
pub(super) async fn race_rarely<A: Future + ?Sized, B: Future>(
    mut main: Pin<&mut A>,
    side: B,
) -> Either<A::Output, B::Output> {
    struct SideWaker {
        woken: std::sync::atomic::AtomicBool,
        task: atomic_waker::AtomicWaker,
    }
    impl std::task::Wake for SideWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Release);
            self.task.wake();
        }
    }
    tokio::pin!(side);
    let flag = Arc::new(SideWaker {
        woken: std::sync::atomic::AtomicBool::new(true),
        task: atomic_waker::AtomicWaker::new(),
    });
    let side_waker = std::task::Waker::from(flag.clone());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = main.as_mut().poll(cx) {
            return Poll::Ready(Either::Main(v));
        }
        // Registered before the flag is read: a wake-up after the read
        // still reaches the task.
        flag.task.register(cx.waker());
        if flag.woken.load(Ordering::Acquire) && flag.woken.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&side_waker);
            if let Poll::Ready(v) = side.as_mut().poll(&mut side_cx) {
                return Poll::Ready(Either::Side(v));
            }
        }
        Poll::Pending
    })
    .await
}

pub(super) fn log_conn_error(res: Result<(), hyper::Error>) {
    if let Err(e) = res {
        // Clients that go away, time out or send garbage are routine; only
        // a response cut short by the app is worth a line.
        let src = std::error::Error::source(&e).map(|s| s.to_string());
        if e.is_user() || src.as_deref().is_some_and(|s| s.contains("app")) {
            crate::say!(
                "oxgate: connection closed: {e}{}",
                src.map(|s| format!(": {s}")).unwrap_or_default()
            );
        }
    }
}

/// The connection's HTTP part is over: if its last response was a 101,
/// the session the handler gave runs on the connection's bytes now.
async fn after_http(res: Result<(), hyper::Error>, ctx: &ConnCtx, going_away: GoingAway) {
    log_conn_error(res);
    let upgrade = ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((on_upgrade, session)) = upgrade {
        // An error: the client left before the 101 was written.
        if let Ok(upgraded) = on_upgrade.await {
            session(Box::new(TokioIo::new(upgraded)), going_away).await;
        }
    }
}

pub(super) async fn handle(
    head: Result<Headed, Response>,
    headers: http::HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ctx: Arc<ConnCtx>,
) -> hyper::Response<OxBody> {
    let request = match async { to_request(head?, &ctx.settings).await }.await {
        Ok(r) => r,
        Err(resp) => return to_hyper(resp, headers, true, ctx),
    };
    let mut resp = ctx.handler.clone().handle(request).await;
    if matches!(resp.body, ResponseBody::Upgrade(_)) {
        let body = std::mem::replace(&mut resp.body, ResponseBody::Empty);
        match (body, on_upgrade, resp.status) {
            (ResponseBody::Upgrade(session), Some(on), 101) => {
                *ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some((on, session));
            }
            _ => {
                crate::say!("oxgate: a handler answered a request that cannot upgrade with a 101");
                resp = Response::plain(500, "Internal Server Error", "Internal Server Error\n");
            }
        }
    }
    // (Not a 101: the connection is the session's from then on.)
    let closing = ctx.closing.load(Ordering::Relaxed) && resp.status != 101;
    to_hyper(resp, headers, closing, ctx)
}
