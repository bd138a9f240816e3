//! The FastCGI driver: a RESPONDER over records, with keep-conn
//! (many requests on one connection), GET_VALUES and aborts.

use crate::listen::Protocol;
use crate::proto::fastcgi;
use crate::request::cgi::{Normalised, normalise};
use crate::request::{BodyError, BodyStream, ChunkSource, RequestBody, Response, ResponseBody};
use crate::request::{ConnInfo, Handler, body_too_large};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};

use super::files::{CALL_MAX, SocketFiles};
use super::response::{next_chunk, response_head};
use super::settings::{GatewaySettings, WATCH_AFTER};

/// Reads FastCGI records from the connection; shared by the connection
/// loop and a request body still arriving.
pub(super) struct FcgiReader<R> {
    rd: ReadHalf<R>,
    buf: BytesMut,
    timeout: Duration,
    /// FCGI_MAX_REQS, for GET_VALUES.
    threads: usize,
    /// Answers owed to records read while a request is under way (a
    /// second request refused, GET_VALUES): the writer sends them at its
    /// next write. Apart from the reader's lock, which a request body
    /// still arriving holds while it waits.
    control: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// What a record read while a request is under way is to it.
pub(super) enum Sorted {
    /// One of its own (PARAMS, STDIN).
    Ours(fastcgi::Record),
    /// The front end gave it up (FCGI_ABORT_REQUEST).
    Aborted,
    /// Another's, answered in `control` or ignored.
    Other,
}

impl<R: AsyncRead> FcgiReader<R> {
    /// The next record, within --socket-timeout; `Ok(None)` when the front
    /// end closed.
    async fn record(&mut self) -> Result<Option<fastcgi::Record>, String> {
        self.next_record(true).await
    }

    /// The next record, however long the front end takes to send it: on a
    /// kept connection whose response is out, the time is the web server's
    /// (Apache's `enablereuse=on` pools it, idle, with the rest of an
    /// early-answered body never sent).
    async fn record_unhurried(&mut self) -> Result<Option<fastcgi::Record>, String> {
        self.next_record(false).await
    }

    async fn next_record(&mut self, timed: bool) -> Result<Option<fastcgi::Record>, String> {
        loop {
            if let Some(r) = fastcgi::parse_record(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(Some(r));
            }
            let more = if timed {
                self.fill().await?
            } else {
                self.next_request().await?
            };
            if !more {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes, waiting as long as the front end keeps the
    /// connection (for a kept connection's next request: nginx closes its
    /// idle upstream connections itself, after its `keepalive_timeout`;
    /// php-fpm waits as long); `Ok(false)` when it closed. Safe to cancel:
    /// bytes are only ever appended to the buffer.
    async fn next_request(&mut self) -> Result<bool, String> {
        match self.rd.read_buf(&mut self.buf).await {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads more bytes within --socket-timeout; `Ok(false)` when the
    /// front end closed.
    async fn fill(&mut self) -> Result<bool, String> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.next_request())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no bytes for {}s (--socket-timeout)",
                    timeout.as_secs()
                ))
            })
    }
}

/// The most of the answers owed to other requests and management records
/// kept until they can be written.
const OWED_MAX: usize = 64 * 1024;

impl<R> FcgiReader<R> {
    /// Puts a record back, to be read next: a BEGIN_REQUEST found while
    /// the last request's unread body was being skipped is the next
    /// request's.
    fn put_back(&mut self, rec: &fastcgi::Record) {
        let mut raw = Vec::with_capacity(8 + rec.content.len() + self.buf.len());
        fastcgi::write_records(&mut raw, rec.kind, rec.request_id, &rec.content);
        raw.extend_from_slice(&self.buf);
        self.buf = BytesMut::from(&raw[..]);
    }

    /// Sorts a record read while request `id` is under way. Others are
    /// answered as the spec asks, in `control`: a second request on the
    /// connection is refused (no multiplexing), a management query is
    /// answered, and an unknown one said so; records of inactive requests
    /// are ignored (§2.5).
    fn sort(&self, rec: fastcgi::Record, id: u16) -> Sorted {
        if rec.request_id == id {
            return match rec.kind {
                fastcgi::ABORT_REQUEST => Sorted::Aborted,
                _ => Sorted::Ours(rec),
            };
        }
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        // Answers wait while the app reads its body; a peer that sends
        // records by the million meanwhile gets no more of them past this,
        // rather than the worker's memory (no sane peer comes near it).
        if control.len() >= OWED_MAX {
            return Sorted::Other;
        }
        match (rec.kind, rec.request_id) {
            (kind, 0) => management_reply(kind, &rec.content, self.threads, &mut control),
            (fastcgi::BEGIN_REQUEST, other) => {
                fastcgi::end_request(&mut control, other, 0, fastcgi::CANT_MPX_CONN);
            }
            _ => {}
        }
        Sorted::Other
    }
}

/// The answer to a management record (request id 0): GET_VALUES' result,
/// or UNKNOWN_TYPE.
fn management_reply(kind: u8, content: &Bytes, threads: usize, out: &mut Vec<u8>) {
    match kind {
        fastcgi::GET_VALUES => out.extend(get_values_result(content, threads)),
        kind => fastcgi::unknown_type(out, kind),
    }
}

/// Writes the answers owed (see `FcgiReader::control`), if any.
async fn write_owed<W: AsyncWrite + Unpin>(
    control: &std::sync::Mutex<Vec<u8>>,
    wr: &mut W,
) -> Result<(), String> {
    let mut out = Vec::new();
    owed(control, &mut out);
    if !out.is_empty() {
        wr.write_all(&out).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Takes the answers owed (see `FcgiReader::control`) into `out`, ahead of
/// what is written next.
fn owed(control: &std::sync::Mutex<Vec<u8>>, out: &mut Vec<u8>) {
    let mut control = control.lock().unwrap_or_else(|e| e.into_inner());
    if !control.is_empty() {
        out.append(&mut control);
    }
}

/// The next record for request `id`, with what is owed to others written
/// first; `Ok(None)` when the front end closed.
async fn next_for<R: AsyncRead, W: AsyncWrite + Unpin>(
    reader: &SharedReader<R>,
    id: u16,
    wr: &mut W,
) -> Result<Option<Sorted>, String> {
    let (sorted, control) = {
        let mut r = reader.lock().await;
        let Some(rec) = r.record().await? else {
            return Ok(None);
        };
        (r.sort(rec, id), r.control.clone())
    };
    write_owed(&control, wr).await?;
    Ok(Some(sorted))
}

/// What the next record means to request `id` before its app is called.
enum Next {
    Own(fastcgi::Record),
    Other,
    /// The request is over (aborted, END_REQUEST sent; or the connection
    /// closed): whether the connection serves on.
    Over(bool),
}

/// The next record for request `id` before its app is called: an abort
/// ends it with END_REQUEST alone (§5.4).
async fn next_own<R: AsyncRead, W: AsyncWrite + Unpin>(
    reader: &SharedReader<R>,
    id: u16,
    wr: &mut W,
    keep: bool,
) -> Result<Next, String> {
    Ok(match next_for(reader, id, wr).await? {
        None => Next::Over(false),
        Some(Sorted::Aborted) => {
            let mut out = Vec::new();
            fastcgi::end_request(&mut out, id, 0, fastcgi::REQUEST_COMPLETE);
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
            Next::Over(keep)
        }
        Some(Sorted::Other) => Next::Other,
        Some(Sorted::Ours(rec)) => Next::Own(rec),
    })
}

/// How the web server gave up a request whose app is at work.
enum Left {
    Aborted,
    Closed,
}

/// Returns when the web server aborts request `id` or closes the
/// connection; other records are answered meanwhile (in `control`).
/// Waits as long as the app takes: no --socket-timeout here.
async fn front_end_left<R: AsyncRead>(reader: &SharedReader<R>, id: u16) -> Left {
    let mut r = reader.lock().await;
    loop {
        match fastcgi::parse_record(&mut r.buf) {
            Ok(Some(rec)) => {
                if let Sorted::Aborted = r.sort(rec, id) {
                    return Left::Aborted;
                }
            }
            Ok(None) => match r.next_request().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return Left::Closed,
            },
            Err(_) => return Left::Closed,
        }
    }
}

pub(super) type SharedReader<R> = Arc<tokio::sync::Mutex<FcgiReader<R>>>;

/// What GET_VALUES asks and oxgate answers: connections are plenty, one
/// request at a time per connection (no multiplexing).
pub(super) fn get_values_result(query: &Bytes, threads: usize) -> Vec<u8> {
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

/// How long a stop leaves an idle kept connection open for a request its
/// web server may be sending (as the HTTP front end's grace).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves a FastCGI connection: requests one after another while the front
/// end keeps the connection (FCGI_KEEP_CONN), as nginx's upstream
/// keepalive does.
pub async fn serve_fastcgi<S>(
    stream: S,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
    threads: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    // SAFETY: `files` is used only below, while `wr` holds the stream
    // that owns the socket.
    let mut files =
        unsafe { SocketFiles::new(stream.as_raw_fd()) }.with_stall_timeout(settings.timeout);
    let (rd, wr) = tokio::io::split(stream);
    let mut wr = super::stall::StallGuard::new(wr, settings.timeout);
    let reader: SharedReader<S> = Arc::new(tokio::sync::Mutex::new(FcgiReader {
        rd,
        buf: BytesMut::with_capacity(16 * 1024),
        timeout: settings.timeout,
        threads,
        control: Arc::default(),
    }));
    // A request was served whole on this connection (kept by the web server).
    let mut served = false;
    // The stop came: the request being read is the connection's last.
    let mut last = false;
    loop {
        // Between requests (nginx's `fastcgi_keep_conn on`), a graceful stop
        // closes the connection; a request already begun is served first.
        let idle = reader.lock().await.buf.is_empty();
        if idle {
            let next = || async {
                let mut r = reader.lock().await;
                if served {
                    r.next_request().await
                } else {
                    r.fill().await
                }
            };
            let more = tokio::select! {
                // A request already in the socket is served first: closing
                // with unread bytes would reset the connection (a 502).
                biased;
                // The first request within --socket-timeout (a connection
                // that sends nothing holds a --max-connections place);
                // a kept one's next, whenever the web server sends it.
                more = next() => Some(more),
                _ = stop.wait_for(|stopping| *stopping) => None,
            };
            let more = match more {
                Some(more) => more,
                // A moment for a request the web server may be sending
                // as the stop comes: nginx and Apache take a kept
                // connection from their cache as it is closed, and answer
                // that request 502 or 503 (the HTTP side's grace too).
                None => match tokio::time::timeout(STOP_GRACE, next()).await {
                    Ok(more) => {
                        last = true;
                        more
                    }
                    Err(_) => break,
                },
            };
            match more {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    crate::say!("oxgate: fastcgi connection closed: {e}");
                    break;
                }
            }
        }
        match fastcgi_request(
            &reader, &mut wr, &mut files, &info, &host, &settings, threads,
        )
        .await
        {
            Ok(true) if !last => served = true,
            Ok(true) | Ok(false) => break,
            Err(Failure::Cut(e)) => {
                crate::say!("oxgate: fastcgi response cut, connection reset: {e}");
                if files.is_unix() {
                    let _ = wr.write_all(&fastcgi::CUT_MARK).await;
                    let _ = wr.flush().await;
                }
                files.reset_on_close();
                return;
            }
            Err(Failure::Broken(e)) => {
                crate::say!("oxgate: fastcgi connection closed: {e}");
                // An HTTP client is told, as the uwsgi and SCGI sockets
                // tell it.
                if crate::proto::looks_like_http(&reader.lock().await.buf) {
                    let text = super::response::not_http(Protocol::Fastcgi);
                    let _ = wr.write_all(text.as_bytes()).await;
                }
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
}

/// The most file bytes one STDOUT record carries: whole pages (a record
/// holds up to 65,535 bytes), so that each sendfile of a file sent from its
/// start begins on a page.
const FILE_RECORD_MAX: u64 = 15 * 4096;

/// Why a request ended its connection.
pub(super) enum Failure {
    /// The connection or the request is broken: closed.
    Broken(String),
    /// The app failed mid-response, or ended short of its Content-Length:
    /// the connection is reset, not closed. Every web server then cuts
    /// the client's response at once. Closed (with or without
    /// END_REQUEST), one or another of them takes the response as
    /// finished: nginx without `fastcgi_keep_conn` left the client
    /// waiting 75 s for the bytes its Content-Length promised; Apache,
    /// given END_REQUEST, ends its chunked body as if whole.
    Cut(String),
}

impl From<String> for Failure {
    fn from(why: String) -> Failure {
        Failure::Broken(why)
    }
}

/// One request; `Ok(true)` to keep the connection for the next.
pub(super) async fn fastcgi_request<S, W>(
    reader: &SharedReader<S>,
    wr: &mut W,
    files: &mut SocketFiles,
    info: &ConnInfo,
    host: &Arc<dyn Handler>,
    settings: &GatewaySettings,
    threads: usize,
) -> Result<bool, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // The whole head (BEGIN_REQUEST and the params) within the timeout,
    // not each read: a head trickled a byte at a time would hold the
    // connection for ever. (The wait for a first byte is the caller's.)
    let head_deadline = tokio::time::Instant::now() + settings.timeout;
    let too_slow = || {
        format!(
            "no whole FastCGI request head within {}s (--socket-timeout)",
            settings.timeout.as_secs()
        )
    };
    // Wait for BEGIN_REQUEST, answering management records meanwhile.
    let (id, keep) = loop {
        let next = async { reader.lock().await.record().await };
        let Some(rec) = tokio::time::timeout_at(head_deadline, next)
            .await
            .map_err(|_| too_slow())??
        else {
            return Ok(false);
        };
        match (rec.kind, rec.request_id) {
            (kind, 0) => {
                let mut out = Vec::new();
                management_reply(kind, &rec.content, threads, &mut out);
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
        let next = tokio::time::timeout_at(head_deadline, next_own(reader, id, wr, keep))
            .await
            .map_err(|_| too_slow())?;
        let rec = match next? {
            Next::Own(rec) => rec,
            Next::Other => continue,
            Next::Over(keep) => return Ok(keep),
        };
        if rec.kind != fastcgi::PARAMS {
            continue;
        }
        if rec.content.is_empty() {
            break;
        }
        if params.len() + rec.content.len() > settings.max_vars {
            let e = fastcgi::Error::TooLarge {
                size: params.len() + rec.content.len(),
                limit: settings.max_vars,
            };
            return Err(e.to_string().into());
        }
        params.extend_from_slice(&rec.content);
    }
    let raw = fastcgi::parse_pairs(&params.freeze()).map_err(|e| e.to_string())?;
    // (STDIN's records frame the body: a bad CONTENT_LENGTH is no length.)
    let Normalised {
        vars,
        content_length,
        is_head,
        repeated_headers,
        ..
    } = normalise(raw, info, false);
    // Over --limit-post: the 413 goes out, and the body is skipped below.
    let too_large = body_too_large(settings.limit_post, content_length, &vars);
    // The body: STDIN records until the empty one. Up to `read_ahead`
    // is read now (a GET's empty STDIN comes at once; nginx sends an empty
    // CONTENT_LENGTH then), so the app can run inline; more streams on.
    let mut stdin_done = false;
    let streamed_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Set by the streamed body at an abort: no STDOUT is owed then.
    let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let control = reader.lock().await.control.clone();
    let mut first = BytesMut::new();
    // (An app that takes its body as it comes, read_ahead 0, is called
    // with the first bytes: a GET's empty STDIN is read, as it is there.)
    let ahead = settings.read_ahead;
    if too_large.is_none() && (ahead == 0 || content_length.is_none_or(|n| n <= ahead)) {
        while !stdin_done && first.len() as u64 <= ahead {
            // Given up before the app was called: it is not.
            let rec = match next_own(reader, id, wr, keep).await? {
                Next::Own(rec) => rec,
                Next::Other => continue,
                Next::Over(keep) => return Ok(keep),
            };
            if rec.kind == fastcgi::STDIN {
                if rec.content.is_empty() {
                    stdin_done = true;
                } else {
                    first.extend_from_slice(&rec.content);
                }
            }
        }
    }
    let refused = too_large.or_else(|| {
        let fault = stdin_fault(
            first.len() as u64,
            stdin_done,
            content_length,
            settings.limit_post,
        )?;
        Some(match fault.status {
            413 => Response::plain(413, "Content Too Large", "Request body too large\n"),
            _ => Response::plain(
                400,
                "Bad Request",
                "The request body is not its CONTENT_LENGTH\n",
            ),
        })
    });
    let body = if refused.is_some() || (stdin_done && first.is_empty()) {
        RequestBody::Empty
    } else if stdin_done {
        RequestBody::Full(first.freeze())
    } else {
        RequestBody::Stream(BodyStream::new(FcgiBody {
            reader: reader.clone(),
            id,
            seen: first.len() as u64,
            pending: (!first.is_empty()).then(|| first.freeze()),
            done: streamed_done.clone(),
            aborted: aborted.clone(),
            fut: None,
            length: content_length,
            limit: settings.limit_post,
        }))
    };
    let response = match refused {
        Some(r) => r,
        None => {
            let answering = host.clone().handle(super::oneshot::gateway_request(
                vars,
                is_head,
                repeated_headers,
                body,
                Protocol::Fastcgi,
            ));
            let mut answering = std::pin::pin!(answering);
            // (The timer is made only for an answer not ready at once.)
            let quick = tokio::select! {
                biased;
                response = &mut answering => Some(response),
                () = async { tokio::time::sleep(WATCH_AFTER).await } => None,
            };
            if let Some(response) = quick {
                response
            } else if stdin_done {
                // The whole request is in: while the app works, the web
                // server's abort (FCGI_ABORT_REQUEST) or close, as its
                // client left, drops the request, as hyper drops it when
                // an HTTP client leaves (an ASGI app's receive() says
                // http.disconnect; a long-poll ends). A streamed body's
                // reads see them themselves.
                tokio::select! {
                    biased;
                    response = &mut answering => response,
                    left = front_end_left(reader, id) => {
                        return match left {
                            Left::Aborted => {
                                let mut out = Vec::new();
                                owed(&control, &mut out);
                                fastcgi::end_request(&mut out, id, 0, fastcgi::REQUEST_COMPLETE);
                                wr.write_all(&out).await.map_err(|e| e.to_string())?;
                                Ok(keep)
                            }
                            Left::Closed => Ok(false),
                        };
                    }
                }
            } else {
                answering.await
            }
        }
    };
    // STDOUT: a CGI response, then the empty STDOUT and END_REQUEST.
    // The same CGI head as SCGI's.
    let is_aborted = || aborted.load(std::sync::atomic::Ordering::Acquire);
    let mut head = response_head(Protocol::Scgi, b"", &response);
    let Response { body, headers, .. } = response;
    drop(headers);
    let mut out = Vec::with_capacity(head.len() + 64);
    owed(&control, &mut out);
    // Aborted while the app read its body: END_REQUEST alone.
    let body = if is_aborted() {
        head.clear();
        ResponseBody::Empty
    } else {
        body
    };
    match body {
        ResponseBody::Empty if head.is_empty() => {}
        ResponseBody::Empty | ResponseBody::Upgrade(_) => {
            fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &head)
        }
        ResponseBody::Full(b) => {
            head.extend_from_slice(&b);
            fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &head);
        }
        ResponseBody::Stream { first, mut rest } => {
            if let Some(b) = first {
                head.extend_from_slice(&b);
            }
            // `out` holds what is not written yet: it goes with a file that
            // follows at once, else before the next chunk is waited for.
            fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &head);
            loop {
                if let Some(region) = rest.take_file() {
                    // STDOUT records whose content comes from the file: each
                    // header goes out, then its share by sendfile.
                    let (mut offset, mut left) = (region.offset, region.len);
                    files.another_file();
                    let mut warmed_to = offset;
                    while left > 0 {
                        let len = left.min(FILE_RECORD_MAX);
                        // A window ahead of the records, each too small to
                        // be worth asking the page cache about.
                        if offset + len > warmed_to {
                            let window = left.min(CALL_MAX);
                            files.warm(&region.fd, offset, window).await;
                            warmed_to = offset + window;
                        }
                        out.extend_from_slice(&fastcgi::header(fastcgi::STDOUT, id, len as u16));
                        // A file that shrank under it ends the response
                        // short: cut, as an app's failure is.
                        files
                            .send(&out, &region.fd, offset, len)
                            .await
                            .map_err(|e| match e.kind() {
                                std::io::ErrorKind::UnexpectedEof => Failure::Cut(e.to_string()),
                                _ => Failure::Broken(e.to_string()),
                            })?;
                        out.clear();
                        (offset, left) = (offset + len, left - len);
                    }
                    continue;
                }
                let next = next_chunk(&mut rest, &mut out, wr)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(chunk) = next else {
                    break;
                };
                owed(&control, &mut out);
                // Aborted mid-response (the body is read as it streams):
                // the rest is not wanted.
                if is_aborted() {
                    break;
                }
                // An app failing mid-response (or ending short of its
                // Content-Length): what it sent, then the connection is
                // reset (`Failure::Cut`).
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let _ = wr.write_all(&out).await;
                        let _ = wr.flush().await;
                        return Err(Failure::Cut(e.message));
                    }
                };
                fastcgi::write_records(&mut out, fastcgi::STDOUT, id, &chunk);
            }
        }
    }
    owed(&control, &mut out);
    if !is_aborted() {
        fastcgi::write_records(&mut out, fastcgi::STDOUT, id, b"");
    }
    fastcgi::end_request(&mut out, id, 0, fastcgi::REQUEST_COMPLETE);
    wr.write_all(&out).await.map_err(|e| e.to_string())?;
    wr.flush().await.map_err(|e| e.to_string())?;
    // A body the app did not read to its end (or refused, 413) is skipped.
    // On a kept connection, so that the next request starts at a record
    // boundary. On one that ends here, after the end is said (the web
    // server reads to it without kept connections), so that the web server
    // still sending it reads the answer rather than a reset (nginx
    // answered 502 for a 413); and at most `DRAIN_MAX` of it. The app's
    // input may still be draining it (WSGI reads an unread body to its end)
    // through the same reader: whoever reads the empty STDIN record says so
    // while it holds the reader, and neither reads on once it is said, so
    // that neither takes the next request's records.
    if !stdin_done {
        if !keep {
            let _ = wr.shutdown().await;
        }
        let mut skipped = 0u64;
        loop {
            let mut r = reader.lock().await;
            if streamed_done.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            // (Past --socket-timeout, a kept connection was closed under
            // Apache, which gave the next request to it: a 503.)
            let next = if keep {
                r.record_unhurried().await
            } else {
                r.record().await
            };
            let rec = match next {
                Ok(Some(rec)) => rec,
                Ok(None) => return Ok(false),
                Err(e) if keep => return Err(e.into()),
                // The connection ends here anyway.
                Err(_) => return Ok(false),
            };
            // The end was said: a new request may begin before the rest
            // of this one's body is sent, and Apache's mod_proxy_fcgi
            // sends none of it once it has END_REQUEST (its kept
            // connections, `enablereuse=on`, then carry the next request,
            // with the same id). It is served, not skipped as this body.
            if rec.kind == fastcgi::BEGIN_REQUEST {
                r.put_back(&rec);
                streamed_done.store(true, std::sync::atomic::Ordering::Release);
                break;
            }
            skipped += rec.content.len() as u64;
            let over = match r.sort(rec, id) {
                Sorted::Ours(rec) => rec.kind == fastcgi::STDIN && rec.content.is_empty(),
                // Its STDIN ends here too.
                Sorted::Aborted => true,
                Sorted::Other => false,
            };
            if over {
                streamed_done.store(true, std::sync::atomic::Ordering::Release);
            }
            drop(r);
            if keep {
                write_owed(&control, wr).await?;
            }
            if over || (!keep && skipped > crate::frontend::DRAIN_MAX) {
                break;
            }
        }
    }
    Ok(keep)
}

/// Why `seen` bytes of STDIN (all of it, if `ended`) are not the request's
/// body, as uwsgi and SCGI bodies are held to their CONTENT_LENGTH: more
/// than it, or fewer at the end (400); with no length, more than
/// --limit-post (413).
fn stdin_fault(
    seen: u64,
    ended: bool,
    length: Option<u64>,
    limit: Option<u64>,
) -> Option<BodyError> {
    match length {
        Some(n) if seen > n || (ended && seen < n) => Some(BodyError::new(
            400,
            format!("{seen} bytes of STDIN for a CONTENT_LENGTH of {n}"),
        )),
        None if limit.is_some_and(|limit| seen > limit) => {
            Some(BodyError::new(413, "STDIN runs past --limit-post"))
        }
        _ => None,
    }
}

pub(super) type RecordFuture<R> = std::pin::Pin<
    Box<dyn Future<Output = (Result<Option<Sorted>, String>, SharedReader<R>)> + Send>,
>;

/// A FastCGI request body still arriving: STDIN records of one request.
pub(super) struct FcgiBody<R> {
    reader: SharedReader<R>,
    id: u16,
    /// Read before the app was called.
    pending: Option<Bytes>,
    /// Set at the empty STDIN record, for the connection loop.
    done: Arc<std::sync::atomic::AtomicBool>,
    /// Set at the request's FCGI_ABORT_REQUEST (with `done`: no more
    /// STDIN comes).
    aborted: Arc<std::sync::atomic::AtomicBool>,
    fut: Option<RecordFuture<R>>,
    /// The body's bytes so far, its CONTENT_LENGTH, and --limit-post for
    /// a body without one: STDIN past either is refused, as is STDIN that
    /// ends short of the length.
    seen: u64,
    length: Option<u64>,
    limit: Option<u64>,
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
                let (reader, done, id) = (self.reader.clone(), self.done.clone(), self.id);
                Box::pin(async move {
                    let mut guard = reader.lock().await;
                    // Ended meanwhile (the connection loop read the end):
                    // the body is whole, and the next records are not its.
                    if done.load(std::sync::atomic::Ordering::Acquire) {
                        drop(guard);
                        let end = fastcgi::Record {
                            kind: fastcgi::STDIN,
                            request_id: id,
                            content: Bytes::new(),
                        };
                        return (Ok(Some(Sorted::Ours(end))), reader);
                    }
                    let r = match guard.record().await {
                        // Its own id begun again: the front end has given
                        // up sending this body (Apache's, once it has the
                        // answer), and the next request is there. Its
                        // body ends, and the record waits for the loop.
                        Ok(Some(rec))
                            if rec.kind == fastcgi::BEGIN_REQUEST && rec.request_id == id =>
                        {
                            guard.put_back(&rec);
                            Ok(Some(Sorted::Ours(fastcgi::Record {
                                kind: fastcgi::STDIN,
                                request_id: id,
                                content: Bytes::new(),
                            })))
                        }
                        Ok(Some(rec)) => Ok(Some(guard.sort(rec, id))),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                    match &r {
                        Ok(Some(Sorted::Ours(rec)))
                            if rec.kind == fastcgi::STDIN && rec.content.is_empty() =>
                        {
                            done.store(true, std::sync::atomic::Ordering::Release);
                        }
                        Ok(Some(Sorted::Aborted)) => {
                            done.store(true, std::sync::atomic::Ordering::Release);
                        }
                        _ => {}
                    }
                    drop(guard);
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
                Ok(Some(Sorted::Aborted)) => {
                    self.aborted
                        .store(true, std::sync::atomic::Ordering::Release);
                    Some(Err(BodyError::new(
                        400,
                        "the front end aborted the request (FCGI_ABORT_REQUEST)",
                    )))
                }
                Ok(Some(Sorted::Ours(rec))) if rec.kind == fastcgi::STDIN => {
                    let ended = rec.content.is_empty();
                    if ended {
                        self.done.store(true, std::sync::atomic::Ordering::Release);
                    }
                    self.seen += rec.content.len() as u64;
                    match stdin_fault(self.seen, ended, self.length, self.limit) {
                        Some(fault) => Some(Err(fault)),
                        None if ended => None,
                        None => Some(Ok(rec.content)),
                    }
                }
                Ok(Some(_)) => continue, // other records: not this body's
            });
        }
    }
}
