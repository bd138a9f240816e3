//! The HTTP/1.1 front end: hyper parses and frames; this module only turns
//! hyper's request into the protocol-neutral [`Request`] and a [`Response`]
//! back into hyper's.

mod batch;
mod sendfile;

pub use batch::FlushQueue;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode;
use std::os::fd::AsRawFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::request::cgi::{header_var, split_host};
use crate::request::{ConnInfo, Handler};
use crate::request::{
    BodyError, BodyStream, ChunkSource, Request, RequestBody, Response, ResponseBody, Var, VarName,
};

/// Bodies up to this size are read before the app is called, so the call
/// can run inline on the event loop; larger or chunked ones stream.
const INLINE_BODY_MAX: u64 = 64 * 1024;

pub struct HttpSettings {
    pub limit_post: Option<u64>,
    pub max_head: usize,
    pub head_timeout: Duration,
}

/// A connected stream whose pending bytes can be looked at without
/// consuming them.
pub trait Peek:
    AsyncRead + AsyncWrite + sendfile::SendFile + AsRawFd + Unpin + Send + Sync + 'static
{
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Peek for tokio::net::TcpStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::TcpStream::readable(self)
    }
}

impl Peek for tokio::net::UnixStream {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::UnixStream::readable(self)
    }
}

/// hyper answers any HTTP version other than 1.x with 400; clients deserve
/// 505 when the request is well formed but names a version we do not speak
/// (HTTP/2.0 without TLS, say). Looks at the connection's first request line.
async fn unsupported_version<S: Peek>(stream: &S) -> Option<String> {
    stream.readable().await.ok()?;
    let mut buf = [0u8; 1024];
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let line = buf.get(..usize::try_from(n).ok()?)?;
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

/// Serves one connection until it closes, or until `shutdown` fires and the
/// request in flight (if any) is done.
pub async fn serve_connection<S: Peek>(
    mut stream: S,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    flush: Arc<FlushQueue>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if let Ok(Some(version)) =
        tokio::time::timeout(settings.head_timeout, unsupported_version(&stream)).await
    {
        let body = format!("{version} is not supported; use HTTP/1.1\n");
        let reply = format!(
            "HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let files = Arc::new(sendfile::FileQueue::default());
    let progress = Arc::new(TaskCounter::default());
    let io = TokioIo::new(batch::BatchedIo::new(
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
    });
    let ctx = conn_ctx.clone();
    // Made at its size, so that a buffer it moves on to is no smaller.
    let arena = std::cell::RefCell::new(BytesMut::with_capacity(ARENA_SIZE));
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let ctx = ctx.clone();
        ctx.begun.bump();
        let (parts, body) = req.into_parts();
        let head = convert_head(
            &parts,
            body,
            &ctx.info,
            &ctx.settings,
            &mut arena.borrow_mut(),
        );
        // The request's header map, emptied, carries the response's
        // headers; hyper keeps that map to parse the next request into,
        // so a keep-alive connection allocates no header maps.
        let mut headers = parts.headers;
        headers.clear();
        async move { Ok::<_, Infallible>(handle(head, headers, ctx).await) }
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
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stop = async {
        tokio::select! {
            biased;
            _ = shutdown.changed() => true,
            () = idle_watchdog(&conn_ctx) => false,
        }
    };
    match race_rarely(conn.as_mut(), stop).await {
        Either::Main(res) => return log_conn_error(res),
        Either::Side(false) => return, // idle
        Either::Side(true) => {}       // shutting down
    }
    // A connection accepted just before the stop has a request on its way
    // (or already in the socket): hyper would see it idle and close it
    // unread. Serve that first request, bounded by the head timeout.
    let begun = &conn_ctx.begun;
    if begun.get() == 0 {
        let first = async {
            while begun.get() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            res = conn.as_mut() => return log_conn_error(res),
            _ = tokio::time::timeout(settings.head_timeout, first) => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        res = conn.as_mut() => log_conn_error(res),
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
async fn idle_watchdog(ctx: &ConnCtx) {
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

enum Either<A, B> {
    Main(A),
    Side(B),
}

/// Runs `main` and `side` until either is done, polling `side` only when
/// its own waker fired (and once at first), not every time the task wakes
/// for `main`: a connection wakes twice per request, and its shutdown
/// watch and watchdog timer cost a lock and a timer lookup to poll.
async fn race_rarely<A: Future + ?Sized, B: Future>(
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

fn log_conn_error(res: Result<(), hyper::Error>) {
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

/// A connection's share of the worker, for each of its requests.
struct ConnCtx {
    info: ConnInfo,
    handler: Arc<dyn Handler>,
    settings: Arc<HttpSettings>,
    files: Arc<sendfile::FileQueue>,
    /// Requests this connection has begun; a stop waits for the first one.
    begun: TaskCounter,
    /// Requests whose response body hyper is done with (`Finished`): all
    /// of it queued to be written, or dropped.
    finished: TaskCounter,
    /// Writes to the socket (by `BatchedIo`), for the watchdog.
    progress: Arc<TaskCounter>,
}

/// A count that only the connection's own task adds to (others may read
/// it): no atomic read-modify-write.
#[derive(Default)]
struct TaskCounter(AtomicU64);

impl TaskCounter {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.0.store(self.get() + 1, Ordering::Relaxed);
    }
}

/// Counts a request as finished when its response body is dropped: hyper
/// drops it once the body is queued to be written, or the connection is
/// gone.
struct Finished(Arc<ConnCtx>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.bump();
    }
}

async fn handle(
    head: Result<Headed, Response>,
    headers: http::HeaderMap,
    ctx: Arc<ConnCtx>,
) -> hyper::Response<OxBody> {
    let request = match async { to_request(head?, &ctx.settings).await }.await {
        Ok(r) => r,
        Err(resp) => return to_hyper(resp, headers, true, ctx),
    };
    let resp = ctx.handler.clone().handle(request).await;
    to_hyper(resp, headers, false, ctx)
}

fn static_bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Collects CGI variables whose values are copied into one shared buffer,
/// the connection's: no allocation per variable, nor (once the previous
/// request's values are dropped) per request. Each value is split off the
/// buffer as it is written, so the list is built once.
struct VarsBuilder<'a> {
    arena: &'a mut BytesMut,
    vars: Vec<(VarName, Bytes)>,
}

impl VarsBuilder<'_> {
    fn put(&mut self, name: Var, value: Bytes) {
        self.vars.push((VarName::Known(name), value));
    }

    /// Copies `parts` into the arena as one value, joined by `sep`.
    fn copy<'p>(&mut self, name: VarName, sep: &[u8], parts: impl IntoIterator<Item = &'p [u8]>) {
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                self.arena.extend_from_slice(sep);
            }
            self.arena.extend_from_slice(part);
        }
        let value = if self.arena.is_empty() {
            Bytes::new()
        } else {
            self.arena.split().freeze()
        };
        self.vars.push((name, value));
    }
}

/// The room a connection keeps for its requests' CGI values.
const ARENA_SIZE: usize = 2048;

/// A request whose head is already converted, its body still to read.
struct Headed {
    vars: Vec<(VarName, Bytes)>,
    body: Incoming,
    is_head: bool,
}

/// Converts the head, synchronously: called in the service itself, so that
/// hyper's request (whose URI and headers point into hyper's read buffer)
/// is gone before hyper reads ahead on the connection. Held until the
/// service future first runs, it made hyper allocate a new 8 KiB read
/// buffer for every request.
fn convert_head(
    parts: &http::request::Parts,
    body: Incoming,
    info: &ConnInfo,
    settings: &HttpSettings,
    arena: &mut BytesMut,
) -> Result<Headed, Response> {
    // Values beyond the buffer (rare) move on to a new one.
    crate::request::ready_arena(arena, ARENA_SIZE, ARENA_SIZE);
    let mut v = VarsBuilder {
        arena,
        // Ten variables besides the headers, and room for a SCRIPT_NAME.
        vars: crate::request::vars_with_capacity(11 + parts.headers.keys_len()),
    };
    match parts.method.as_str() {
        "GET" => v.put(Var::REQUEST_METHOD, static_bytes("GET")),
        "POST" => v.put(Var::REQUEST_METHOD, static_bytes("POST")),
        "HEAD" => v.put(Var::REQUEST_METHOD, static_bytes("HEAD")),
        m => v.copy(VarName::Known(Var::REQUEST_METHOD), b"", [m.as_bytes()]),
    }
    let path = parts.uri.path();
    let decoded: std::borrow::Cow<'_, [u8]> = percent_decode(path.as_bytes()).into();
    v.copy(VarName::Known(Var::PATH_INFO), b"", [&*decoded]);
    v.copy(
        VarName::Known(Var::QUERY_STRING),
        b"",
        [parts.uri.query().unwrap_or("").as_bytes()],
    );
    let raw_uri = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
    v.copy(VarName::Known(Var::REQUEST_URI), b"", [raw_uri.as_bytes()]);
    v.put(
        Var::SERVER_PROTOCOL,
        match parts.version {
            http::Version::HTTP_10 => static_bytes("HTTP/1.0"),
            _ => static_bytes("HTTP/1.1"),
        },
    );
    v.put(Var::REQUEST_SCHEME, static_bytes("http"));

    // SERVER_NAME/PORT come from Host (as gunicorn does), else the socket.
    let host = parts
        .headers
        .get(header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => {
            let (name, port) = split_host(h);
            v.copy(VarName::Known(Var::SERVER_NAME), b"", [name]);
            match port.filter(|p| !p.is_empty()) {
                Some(p) => v.copy(VarName::Known(Var::SERVER_PORT), b"", [p]),
                None => v.put(Var::SERVER_PORT, info.local_port()),
            }
        }
        None => {
            v.put(Var::SERVER_NAME, info.local_name());
            v.put(Var::SERVER_PORT, info.local_port());
        }
    }
    if let Some((addr, port)) = info.peer() {
        v.put(Var::REMOTE_ADDR, addr.clone());
        v.put(Var::REMOTE_PORT, port.clone());
    }

    let mut content_length = None;
    // The values of a repeated header come one after another.
    let mut headers = parts.headers.iter().peekable();
    while let Some((name, first)) = headers.next() {
        let rest = std::iter::from_fn(|| headers.next_if(|(n, _)| *n == name).map(|(_, v)| v));
        if *name == header::CONTENT_LENGTH {
            // hyper has already refused conflicting or malformed lengths.
            content_length = std::str::from_utf8(first.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            v.copy(VarName::Known(Var::CONTENT_LENGTH), b"", [first.as_bytes()]);
            rest.for_each(drop);
            continue;
        }
        if *name == header::CONTENT_TYPE {
            v.copy(VarName::Known(Var::CONTENT_TYPE), b"", [first.as_bytes()]);
            rest.for_each(drop);
            continue;
        }
        // "X_Forwarded_For" would pass for "X-Forwarded-For" once both become
        // HTTP_X_FORWARDED_FOR; like nginx, drop names with underscores.
        if name.as_str().contains('_') {
            rest.for_each(drop);
            continue;
        }
        let sep: &[u8] = if *name == header::COOKIE {
            b"; "
        } else {
            b", "
        };
        v.copy(
            header_var(name.as_str()),
            sep,
            std::iter::once(first).chain(rest).map(|h| h.as_bytes()),
        );
    }
    let vars = v.vars;

    if let (Some(limit), Some(len)) = (settings.limit_post, content_length)
        && len > limit
    {
        return Err(Response::plain(
            413,
            "Content Too Large",
            "Request body too large\n",
        ));
    }

    Ok(Headed {
        vars,
        body,
        is_head: parts.method == http::Method::HEAD,
    })
}

/// The request with its body: read whole when small, else streamed.
async fn to_request(head: Headed, settings: &HttpSettings) -> Result<Request, Response> {
    let Headed {
        vars,
        body,
        is_head,
    } = head;
    let body = if body.is_end_stream() {
        RequestBody::Empty
    } else if body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= INLINE_BODY_MAX)
    {
        match body.collect().await {
            Ok(c) => RequestBody::Full(c.to_bytes()),
            Err(_) => {
                return Err(Response::plain(
                    400,
                    "Bad Request",
                    "Incomplete request body\n",
                ));
            }
        }
    } else {
        RequestBody::Stream(BodyStream::new(IncomingChunks {
            body,
            limit: settings.limit_post,
            seen: 0,
        }))
    };
    Ok(Request {
        vars,
        body,
        is_head,
        protocol: crate::listen::Protocol::Http,
    })
}

/// A request body still arriving from hyper.
struct IncomingChunks {
    body: Incoming,
    limit: Option<u64>,
    seen: u64,
}

impl ChunkSource for IncomingChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            return match Pin::new(&mut self.body).poll_frame(cx) {
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
                    Err(_) => continue, // trailers
                },
            };
        }
    }
}

/// The response body as hyper sees it.
struct OxBody {
    kind: BodyKind,
    /// The connection, told when the body is done with.
    conn: Finished,
}

enum BodyKind {
    Empty,
    Full(Option<Bytes>),
    Stream {
        first: Option<Bytes>,
        rest: BodyStream,
        /// An error held back one poll, so hyper flushes what the app
        /// produced before it cuts the connection.
        failed: Option<BodyError>,
        /// Bytes of the file region last handed to the connection's
        /// FileQueue (to go out with sendfile) still to be stood for by
        /// frames.
        file_left: u64,
    },
}

impl Body for OxBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            BodyKind::Empty => Poll::Ready(None),
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Stream {
                first,
                rest,
                failed,
                file_left,
            } => {
                if let Some(e) = failed.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if let Some(b) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                if *file_left == 0
                    && let Some(region) = rest.take_file()
                {
                    *file_left = region.len;
                    this.conn.0.files.push(region);
                }
                if *file_left > 0 {
                    let frame = sendfile::placeholder(
                        usize::try_from(*file_left).unwrap_or(sendfile::FRAME_MAX),
                    );
                    *file_left -= frame.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                match rest.poll_chunk(cx) {
                    Poll::Ready(Some(Err(e))) => {
                        *failed = Some(e);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    other => other.map(|c| c.map(|r| r.map(Frame::data))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Empty => true,
            BodyKind::Full(b) => b.is_none(),
            BodyKind::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Empty => SizeHint::with_exact(0),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Stream { .. } => SizeHint::default(),
        }
    }
}

/// hyper's response for `resp`, its headers put in `headers` (empty).
fn to_hyper(
    resp: Response,
    mut headers: http::HeaderMap,
    close: bool,
    conn: Arc<ConnCtx>,
) -> hyper::Response<OxBody> {
    let kind = match resp.body {
        ResponseBody::Empty => BodyKind::Empty,
        ResponseBody::Full(b) => BodyKind::Full(Some(b)),
        ResponseBody::Stream { first, rest } => BodyKind::Stream {
            first,
            rest,
            failed: None,
            file_left: 0,
        },
    };
    let mut out = hyper::Response::new(OxBody {
        kind,
        conn: Finished(conn),
    });
    *out.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(reason) = resp.reason
        && out.status().canonical_reason() != Some(reason.as_str())
        && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes())
    {
        out.extensions_mut().insert(reason);
    }
    let mut list = resp.headers;
    for (name, value) in list.drain(..) {
        // Names and values were validated when the app set them.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) {
            headers.append(n, v);
        }
    }
    crate::request::recycle_headers(list);
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    *out.headers_mut() = headers;
    out
}
