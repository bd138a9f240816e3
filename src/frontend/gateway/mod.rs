//! Gateway-protocol front ends (uwsgi and SCGI; FastCGI to come): a web
//! server in front (nginx's uwsgi_pass, scgi_pass) sends CGI variables and
//! the body; the answer is an HTTP response (uwsgi: with a status line;
//! SCGI: CGI-style, with a `Status:` header), then the connection closes.
//! The variables are normalised as protocols.md §7.2 says, into the same
//! protocol-neutral request the HTTP front end makes.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};

use crate::request::{ConnInfo, Handler};
use crate::request::cgi::normalise;
use crate::listen::Protocol;
use crate::proto::{fastcgi, scgi, uwsgi};
use crate::request::{
    BodyError, BodyStream, ChunkSource, Request, RequestBody, Response, ResponseBody, Var, VarName,
};

/// Bodies up to this size are read before the app is called (see http).
const INLINE_BODY_MAX: u64 = 64 * 1024;

pub struct GatewaySettings {
    /// Largest vars block (`--buffer-size`; uwsgi's own maximum is 65535).
    pub max_vars: usize,
    pub limit_post: Option<u64>,
    /// For the head and each body read.
    pub timeout: Duration,
}

/// One parsed request head, whatever the protocol.
enum Parsed {
    Request {
        vars: Vec<(Bytes, Bytes)>,
        strip_script_name: bool,
    },
    /// uwsgi's ping: answer the pong header.
    Ping,
}

/// The head of a request, `None` until enough bytes arrived; an error says
/// what was wrong and whether the client spoke HTTP instead.
fn parse_head(
    protocol: Protocol,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<Parsed>, (String, bool)> {
    match protocol {
        Protocol::Uwsgi => match uwsgi::parse(buf, limit) {
            Ok(None) => Ok(None),
            Ok(Some(h)) => match h.modifier1 {
                0 | 30 => Ok(Some(Parsed::Request {
                    vars: h.vars,
                    strip_script_name: h.modifier1 == 30,
                })),
                100 => Ok(Some(Parsed::Ping)),
                m => Err((
                    format!(
                        "modifier1 {m} refused: oxgate serves WSGI (modifier1 0, 30) and ping (100)"
                    ),
                    false,
                )),
            },
            Err(e) => Err((e.to_string(), e == uwsgi::Error::LooksLikeHttp)),
        },
        Protocol::Scgi => match scgi::parse(buf, limit) {
            Ok(None) => Ok(None),
            Ok(Some(vars)) => Ok(Some(Parsed::Request {
                vars,
                strip_script_name: false,
            })),
            Err(e) => Err((e.to_string(), e == scgi::Error::LooksLikeHttp)),
        },
        Protocol::Http | Protocol::Fastcgi => unreachable!("served by their own front ends"),
    }
}

/// Serves one gateway connection: one request, then close. `buf` holds
/// bytes already read from it (by the fast path).
pub async fn serve<S>(
    stream: S,
    protocol: Protocol,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
    mut buf: BytesMut,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (raw, strip_script_name) = loop {
        match parse_head(protocol, &mut buf, settings.max_vars) {
            Ok(Some(Parsed::Request {
                vars,
                strip_script_name,
            })) => break (vars, strip_script_name),
            Ok(Some(Parsed::Ping)) => {
                let _ = wr.write_all(&uwsgi::PONG).await;
                let _ = wr.shutdown().await;
                return;
            }
            Ok(None) => {}
            Err((e, http)) => {
                crate::say!("oxgate: {} request refused: {e}", protocol.name());
                if http {
                    let text = format!(
                        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n\
                         This socket speaks the {} protocol, not HTTP.\n",
                        protocol.name()
                    );
                    let _ = wr.write_all(text.as_bytes()).await;
                }
                let _ = wr.shutdown().await;
                return;
            }
        }
        match tokio::time::timeout(settings.timeout, rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return, // closed, failed or too slow before a whole head
        }
    };
    let (vars, content_length, is_head) = normalise(raw, &info, strip_script_name);
    if let (Some(limit), Some(len)) = (settings.limit_post, content_length)
        && len > limit
    {
        write_response(
            &mut wr,
            protocol,
            &status_line_version(&vars),
            Response::plain(413, "Content Too Large", "Request body too large\n"),
        )
        .await;
        return;
    }
    let len = content_length.unwrap_or(0);
    let body = if len == 0 {
        RequestBody::Empty
    } else if len <= INLINE_BODY_MAX {
        // Small: read it all now, so the app can run inline.
        while (buf.len() as u64) < len {
            match tokio::time::timeout(settings.timeout, rd.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return, // the front end went away mid-body
            }
        }
        buf.truncate(len as usize);
        RequestBody::Full(buf.split().freeze())
    } else {
        let prefix = buf.split().freeze();
        let prefix = prefix.slice(..prefix.len().min(len as usize));
        RequestBody::Stream(BodyStream::new(SocketBody {
            rd: Some(rd),
            remaining: len - prefix.len() as u64,
            pending: (!prefix.is_empty()).then_some(prefix),
            timeout: settings.timeout,
            sleep: None,
        }))
    };
    let version = status_line_version(&vars);
    let response = host
        .clone()
        .handle(Request {
            vars,
            body,
            is_head,
            protocol,
        })
        .await;
    write_response(&mut wr, protocol, &version, response).await;
}

/// The HTTP version a uwsgi status line carries: the request's, else 1.1.
fn status_line_version(vars: &[(VarName, Bytes)]) -> Bytes {
    vars.iter()
        .find(|(k, _)| *k == VarName::Known(Var::SERVER_PROTOCOL))
        .map(|(_, v)| v.clone())
        .filter(|v| v.starts_with(b"HTTP/1."))
        .unwrap_or_else(|| Bytes::from_static(b"HTTP/1.1"))
}

/// The status line (uwsgi) or Status: header (SCGI), and the headers.
fn response_head(protocol: Protocol, version: &[u8], resp: &Response) -> Vec<u8> {
    let reason = resp.reason.clone().unwrap_or_else(|| {
        http::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown")
            .to_string()
    });
    let mut head = Vec::with_capacity(256);
    if protocol == Protocol::Scgi {
        head.extend_from_slice(b"Status:");
    } else {
        head.extend_from_slice(version);
    }
    head.extend_from_slice(format!(" {} {reason}\r\n", resp.status).as_bytes());
    for (name, value) in &resp.headers {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes the response (no chunking: the front end frames it for its
/// client) and closes the connection. uwsgi needs an HTTP/1.x status line
/// (Apache's mod_proxy_uwsgi refuses anything else); SCGI is a CGI
/// response, with `Status:`.
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    protocol: Protocol,
    version: &[u8],
    resp: Response,
) {
    let mut head = response_head(protocol, version, &resp);
    // The headers may hold a share of a larger buffer: not kept while a
    // long response streams.
    let Response { body, headers, .. } = resp;
    drop(headers);
    let result = async {
        match body {
            ResponseBody::Empty => wr.write_all(&head).await,
            ResponseBody::Full(b) => {
                head.extend_from_slice(&b);
                wr.write_all(&head).await
            }
            ResponseBody::Stream { first, mut rest } => {
                if let Some(b) = first {
                    head.extend_from_slice(&b);
                }
                wr.write_all(&head).await?;
                while let Some(chunk) = rest.chunk().await {
                    match chunk {
                        Ok(b) => wr.write_all(&b).await?,
                        // The app failed mid-response: cut the connection, so
                        // the front end sees an incomplete response.
                        Err(e) => return Err(std::io::Error::other(e.message)),
                    }
                }
                Ok(())
            }
        }
    }
    .await;
    if result.is_ok() {
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
    }
}

/// A body after the vars: exactly CONTENT_LENGTH bytes from the socket.
struct SocketBody<R> {
    rd: Option<ReadHalf<R>>,
    pending: Option<Bytes>,
    remaining: u64,
    timeout: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<R: AsyncRead + Send + 'static> ChunkSource for SocketBody<R> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let Some(rd) = self.rd.as_mut() else {
            return Poll::Ready(None);
        };
        let want = self.remaining.min(64 * 1024) as usize;
        let mut tmp = vec![0u8; want];
        let mut rb = tokio::io::ReadBuf::new(&mut tmp);
        match std::pin::Pin::new(rd).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                self.sleep = None;
                let n = rb.filled().len();
                if n == 0 {
                    self.rd = None;
                    return Poll::Ready(Some(Err(BodyError::new(
                        400,
                        format!(
                            "the front end closed the connection {} bytes short of CONTENT_LENGTH",
                            self.remaining
                        ),
                    ))));
                }
                self.remaining -= n as u64;
                tmp.truncate(n);
                Poll::Ready(Some(Ok(Bytes::from(tmp))))
            }
            Poll::Ready(Err(e)) => {
                self.rd = None;
                Poll::Ready(Some(Err(BodyError::new(
                    400,
                    format!("reading the request body: {e}"),
                ))))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if sleep.as_mut().poll(cx).is_ready() {
                    self.rd = None;
                    return Poll::Ready(Some(Err(BodyError::new(
                        400,
                        format!(
                            "no request body bytes for {}s (--socket-timeout)",
                            timeout.as_secs()
                        ),
                    ))));
                }
                Poll::Pending
            }
        }
    }
}

/// Reads FastCGI records from the connection; shared by the connection
/// loop and a request body still arriving.
struct FcgiReader<R> {
    rd: ReadHalf<R>,
    buf: BytesMut,
    timeout: Duration,
}

impl<R: AsyncRead> FcgiReader<R> {
    /// The next record; `Ok(None)` when the front end closed.
    async fn record(&mut self) -> Result<Option<fastcgi::Record>, String> {
        loop {
            if let Some(r) = fastcgi::parse_record(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(Some(r));
            }
            match tokio::time::timeout(self.timeout, self.rd.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    return Err(format!(
                        "no bytes for {}s (--socket-timeout)",
                        self.timeout.as_secs()
                    ));
                }
            }
        }
    }
}

type SharedReader<R> = Arc<tokio::sync::Mutex<FcgiReader<R>>>;

/// What GET_VALUES asks and oxgate answers: connections are plenty, one
/// request at a time per connection (no multiplexing).
fn get_values_result(query: &Bytes, threads: usize) -> Vec<u8> {
    let mut known: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for (name, _) in fastcgi::parse_pairs(query).unwrap_or_default() {
        let value = match &name[..] {
            b"FCGI_MAX_CONNS" => b"1024".to_vec(),
            b"FCGI_MAX_REQS" => threads.to_string().into_bytes(),
            b"FCGI_MPXS_CONNS" => b"0".to_vec(),
            _ => continue,
        };
        let name: &[u8] = match &name[..] {
            b"FCGI_MAX_CONNS" => b"FCGI_MAX_CONNS",
            b"FCGI_MAX_REQS" => b"FCGI_MAX_REQS",
            _ => b"FCGI_MPXS_CONNS",
        };
        known.push((name, value));
    }
    let refs: Vec<(&[u8], &[u8])> = known.iter().map(|(k, v)| (*k, &v[..])).collect();
    let mut out = Vec::new();
    fastcgi::write_records(
        &mut out,
        fastcgi::GET_VALUES_RESULT,
        0,
        &fastcgi::encode_pairs(&refs),
    );
    out
}

/// Serves a FastCGI connection: requests one after another while the front
/// end keeps the connection (FCGI_KEEP_CONN), as nginx's upstream
/// keepalive does.
pub async fn serve_fastcgi<S>(
    stream: S,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
    threads: usize,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let reader: SharedReader<S> = Arc::new(tokio::sync::Mutex::new(FcgiReader {
        rd,
        buf: BytesMut::with_capacity(16 * 1024),
        timeout: settings.timeout,
    }));
    loop {
        match fastcgi_request(&reader, &mut wr, &info, &host, &settings, threads).await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                crate::say!("oxgate: fastcgi connection closed: {e}");
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// One request; `Ok(true)` to keep the connection for the next.
async fn fastcgi_request<S, W>(
    reader: &SharedReader<S>,
    wr: &mut W,
    info: &ConnInfo,
    host: &Arc<dyn Handler>,
    settings: &GatewaySettings,
    threads: usize,
) -> Result<bool, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // Wait for BEGIN_REQUEST, answering management records meanwhile.
    let (id, keep) = loop {
        let Some(rec) = reader.lock().await.record().await? else {
            return Ok(false);
        };
        match (rec.kind, rec.request_id) {
            (fastcgi::GET_VALUES, 0) => {
                let reply = get_values_result(&rec.content, threads);
                wr.write_all(&reply).await.map_err(|e| e.to_string())?;
            }
            (kind, 0) => {
                let mut out = Vec::new();
                fastcgi::unknown_type(&mut out, kind);
                wr.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            (fastcgi::BEGIN_REQUEST, id) => {
                let (role, flags) =
                    fastcgi::parse_begin(&rec.content).map_err(|e| e.to_string())?;
                let keep = flags & fastcgi::KEEP_CONN != 0;
                if role != fastcgi::RESPONDER {
                    crate::say!("oxgate: fastcgi role {role} refused: oxgate is a RESPONDER");
                    let mut out = Vec::new();
                    fastcgi::end_request(&mut out, id, 0, fastcgi::UNKNOWN_ROLE);
                    wr.write_all(&out).await.map_err(|e| e.to_string())?;
                    if keep {
                        continue;
                    }
                    return Ok(false);
                }
                break (id, keep);
            }
            _ => {} // records of inactive requests are ignored (spec §2.5)
        }
    };
    // PARAMS until its empty record; a second request on this connection
    // meanwhile is refused (no multiplexing), an abort ends this one.
    let mut params = BytesMut::new();
    loop {
        let Some(rec) = reader.lock().await.record().await? else {
            return Ok(false);
        };
        match rec.kind {
            fastcgi::PARAMS if rec.request_id == id => {
                if rec.content.is_empty() {
                    break;
                }
                if params.len() + rec.content.len() > settings.max_vars {
                    let e = fastcgi::Error::TooLarge {
                        size: params.len() + rec.content.len(),
                        limit: settings.max_vars,
                    };
                    return Err(e.to_string());
                }
                params.extend_from_slice(&rec.content);
            }
            fastcgi::ABORT_REQUEST if rec.request_id == id => {
                let mut out = Vec::new();
                fastcgi::end_request(&mut out, id, 0, fastcgi::REQUEST_COMPLETE);
                wr.write_all(&out).await.map_err(|e| e.to_string())?;
                return Ok(keep);
            }
            fastcgi::BEGIN_REQUEST if rec.request_id != id => {
                let mut out = Vec::new();
                fastcgi::end_request(&mut out, rec.request_id, 0, fastcgi::CANT_MPX_CONN);
                wr.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            fastcgi::GET_VALUES if rec.request_id == 0 => {
                let reply = get_values_result(&rec.content, threads);
                wr.write_all(&reply).await.map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    let raw = fastcgi::parse_pairs(&params.freeze()).map_err(|e| e.to_string())?;
    let (vars, content_length, is_head) = normalise(raw, info, false);
    // The body: STDIN records until the empty one. Up to INLINE_BODY_MAX
    // is read now (a GET's empty STDIN comes at once; nginx sends an empty
    // CONTENT_LENGTH then), so the app can run inline; more streams on.
    let mut stdin_done = false;
    let streamed_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut first = BytesMut::new();
    if content_length.is_none_or(|n| n <= INLINE_BODY_MAX) {
        while !stdin_done && first.len() as u64 <= INLINE_BODY_MAX {
            let Some(rec) = reader.lock().await.record().await? else {
                return Ok(false);
            };
            if rec.kind == fastcgi::STDIN && rec.request_id == id {
                if rec.content.is_empty() {
                    stdin_done = true;
                } else {
                    first.extend_from_slice(&rec.content);
                }
            }
        }
    }
    let body = if stdin_done && first.is_empty() {
        RequestBody::Empty
    } else if stdin_done {
        RequestBody::Full(first.freeze())
    } else {
        RequestBody::Stream(BodyStream::new(FcgiBody {
            reader: reader.clone(),
            id,
            pending: (!first.is_empty()).then(|| first.freeze()),
            done: streamed_done.clone(),
            fut: None,
        }))
    };
    let response = host
        .clone()
        .handle(Request {
            vars,
            body,
            is_head,
            protocol: Protocol::Fastcgi,
        })
        .await;
    // STDOUT: a CGI response, then the empty STDOUT and END_REQUEST.
    // The same CGI head as SCGI's.
    let mut head = response_head(Protocol::Scgi, b"", &response);
    let Response { body, headers, .. } = response;
    drop(headers);
    let mut out = Vec::with_capacity(head.len() + 64);
    match body {
        ResponseBody::Empty => fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &head),
        ResponseBody::Full(b) => {
            head.extend_from_slice(&b);
            fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &head);
        }
        ResponseBody::Stream { first, mut rest } => {
            if let Some(b) = first {
                head.extend_from_slice(&b);
            }
            fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &head);
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
            while let Some(chunk) = rest.chunk().await {
                // An app failing mid-response: close without END_REQUEST,
                // so the front end sees the response is incomplete.
                let chunk = chunk.map_err(|e| e.message)?;
                fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &chunk);
                wr.write_all(&out).await.map_err(|e| e.to_string())?;
                out.clear();
            }
        }
    }
    fastcgi::write_records(&mut out, fastcgi::STDOUT, id, b"");
    fastcgi::end_request(&mut out, id, 0, fastcgi::REQUEST_COMPLETE);
    wr.write_all(&out).await.map_err(|e| e.to_string())?;
    wr.flush().await.map_err(|e| e.to_string())?;
    if !keep {
        return Ok(false);
    }
    // A body the app did not read to its end: skip the rest of it, so the
    // next request starts at a record boundary.
    if !stdin_done && !streamed_done.load(std::sync::atomic::Ordering::Acquire) {
        loop {
            let Some(rec) = reader.lock().await.record().await? else {
                return Ok(false);
            };
            if rec.kind == fastcgi::STDIN && rec.request_id == id && rec.content.is_empty() {
                break;
            }
        }
    }
    Ok(true)
}

type RecordFuture<R> = std::pin::Pin<
    Box<dyn Future<Output = (Result<Option<fastcgi::Record>, String>, SharedReader<R>)> + Send>,
>;

/// A FastCGI request body still arriving: STDIN records of one request.
struct FcgiBody<R> {
    reader: SharedReader<R>,
    id: u16,
    /// Read before the app was called.
    pending: Option<Bytes>,
    /// Set at the empty STDIN record, for the connection loop.
    done: Arc<std::sync::atomic::AtomicBool>,
    fut: Option<RecordFuture<R>>,
}

impl<R: AsyncRead + Send + 'static> ChunkSource for FcgiBody<R> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if let Some(p) = self.pending.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        loop {
            if self.done.load(std::sync::atomic::Ordering::Acquire) {
                return Poll::Ready(None);
            }
            let fut = self.fut.get_or_insert_with(|| {
                let reader = self.reader.clone();
                Box::pin(async move {
                    let r = reader.lock().await.record().await;
                    (r, reader)
                })
            });
            let (result, _) = std::task::ready!(fut.as_mut().poll(cx));
            self.fut = None;
            return Poll::Ready(match result {
                Ok(None) => Some(Err(BodyError::new(
                    400,
                    "the front end closed the connection mid-body",
                ))),
                Err(e) => Some(Err(BodyError::new(400, e))),
                Ok(Some(rec)) if rec.kind == fastcgi::STDIN && rec.request_id == self.id => {
                    if rec.content.is_empty() {
                        self.done.store(true, std::sync::atomic::Ordering::Release);
                        None
                    } else {
                        Some(Ok(rec.content))
                    }
                }
                Ok(Some(_)) => continue, // other records: not this body's
            });
        }
    }
}

/// A connection accepted as a raw descriptor: nothing registered with the
/// event loop yet.
pub enum RawConn {
    Tcp(std::os::fd::OwnedFd),
    Unix(std::os::fd::OwnedFd),
}

/// The fast path for one-request-per-connection protocols (uwsgi, SCGI),
/// where a front end such as nginx connects, sends the whole request at
/// once and waits. If the request has arrived and the response goes out in
/// one non-blocking send, the connection never touches the event loop: no
/// registration, no wake-up (nginx → uwsgi went from ~38 to ~N µs of server
/// CPU per request). Anything that would block takes the ordinary path.
pub async fn serve_fast(
    conn: RawConn,
    protocol: Protocol,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
) {
    use std::os::fd::AsRawFd;
    let fd = match &conn {
        RawConn::Tcp(fd) | RawConn::Unix(fd) => fd.as_raw_fd(),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let n = unsafe {
        libc::recv(
            fd,
            buf.spare_capacity_mut().as_mut_ptr().cast(),
            buf.capacity(),
            libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        unsafe { buf.set_len(n as usize) };
    }
    // Parse a copy: if the request is incomplete, the ordinary path starts
    // again from the same bytes.
    let mut probe = buf.clone();
    let parsed = parse_head(protocol, &mut probe, settings.max_vars);
    let complete = match &parsed {
        Ok(Some(Parsed::Request { vars, .. })) => {
            let len = vars
                .iter()
                .find(|(k, _)| &k[..] == b"CONTENT_LENGTH")
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
                .unwrap_or(0);
            len <= INLINE_BODY_MAX && probe.len() as u64 >= len
        }
        _ => false,
    };
    if !complete {
        return fallback(conn, protocol, host, settings, buf).await;
    }
    let Ok(Some(Parsed::Request {
        vars: raw,
        strip_script_name,
    })) = parsed
    else {
        unreachable!("checked above")
    };
    let info = ConnInfo::new(None, None);
    let (vars, content_length, is_head) = normalise(raw, &info, strip_script_name);
    if let (Some(limit), Some(len)) = (settings.limit_post, content_length)
        && len > limit
    {
        return fallback(conn, protocol, host, settings, buf).await;
    }
    let len = content_length.unwrap_or(0) as usize;
    let body = if len == 0 {
        RequestBody::Empty
    } else {
        RequestBody::Full(probe.split_to(len).freeze())
    };
    let version = status_line_version(&vars);
    let response = host
        .clone()
        .handle(Request {
            vars,
            body,
            is_head,
            protocol,
        })
        .await;
    // A whole response in one buffer goes out with one non-blocking send.
    let whole = match &response.body {
        ResponseBody::Empty => Some(Bytes::new()),
        ResponseBody::Full(b) => Some(b.clone()),
        ResponseBody::Stream { .. } => None,
    };
    if let Some(body) = whole {
        let mut out = response_head(protocol, &version, &response);
        out.extend_from_slice(&body);
        let mut sent = 0;
        while sent < out.len() {
            let n = unsafe {
                libc::send(
                    fd,
                    out[sent..].as_ptr().cast(),
                    out.len() - sent,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                break;
            }
            sent += n as usize;
        }
        if sent == out.len() {
            return; // dropping the descriptor closes the connection
        }
        let rest = out.split_off(sent);
        if let Some(mut wr) = register(conn) {
            let _ = wr.write_all(&rest).await;
            let _ = wr.shutdown().await;
        }
        return;
    }
    if let Some(mut wr) = register(conn) {
        write_response(&mut wr, protocol, &version, response).await;
    }
}

/// The connection as an event-loop stream, to await what would block.
fn register(conn: RawConn) -> Option<Box<dyn AsyncWriteUnpin>> {
    match conn {
        RawConn::Tcp(fd) => {
            let s = std::net::TcpStream::from(fd);
            Some(Box::new(tokio::net::TcpStream::from_std(s).ok()?))
        }
        RawConn::Unix(fd) => {
            let s = std::os::unix::net::UnixStream::from(fd);
            Some(Box::new(tokio::net::UnixStream::from_std(s).ok()?))
        }
    }
}

trait AsyncWriteUnpin: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> AsyncWriteUnpin for T {}

async fn fallback(
    conn: RawConn,
    protocol: Protocol,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
    buf: BytesMut,
) {
    let info = ConnInfo::new(None, None);
    match conn {
        RawConn::Tcp(fd) => {
            if let Ok(s) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)) {
                serve(s, protocol, info, host, settings, buf).await;
            }
        }
        RawConn::Unix(fd) => {
            if let Ok(s) =
                tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
            {
                serve(s, protocol, info, host, settings, buf).await;
            }
        }
    }
}
