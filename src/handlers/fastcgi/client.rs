//! oxgate as a FastCGI client: one request over a connection to a FastCGI
//! server (php-fpm, a pool process), and, where asked, the connections kept
//! between requests (FCGI_KEEP_CONN, nginx's `fastcgi_keep_conn`).
//!
//! A server oxgate does not manage (`--fastcgi-pass`) gets a connection per
//! request, as nginx gives it by default: php-cgi and php-fpm children
//! serve a kept connection and nothing else until it closes, so idle
//! connections kept by one oxgate worker would hold every child while
//! another worker's new connection waits in the backlog, unanswered.
//!
//! The request goes out whole (BEGIN_REQUEST, PARAMS, then STDIN, from
//! the body the handler has already read whole: `request::spooled`) before
//! the response is read, as nginx does with its buffered request bodies. STDOUT is read up to the end of the CGI head,
//! then streamed on as the body; STDERR goes to the log; END_REQUEST gives
//! the connection back (see `pool` for what is done with a kept one).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::listen::Address;
use crate::proto::cgi_response::{self, Head};
use crate::proto::fastcgi;
use crate::request::{BodyError, ChunkSource, CountedBody, RequestBody};

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The one request id used: oxgate sends one request at a time on a
/// connection, as nginx does.
const ID: u16 = 1;
/// The most idle connections kept to one server.
const MAX_IDLE: usize = 32;

/// A FastCGI server and the connections kept to it.
pub struct Upstream {
    pub addr: Address,
    /// Whether connections are kept between requests.
    keep: bool,
    idle: Mutex<Vec<Conn>>,
}

/// A connection and what was read from it but not parsed yet.
pub struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// A STDERR line the last record cut off: PHP's lines straddle
    /// records, and a log line is whole.
    stderr_line: Vec<u8>,
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum Failure {
    Connect(std::io::Error),
    /// The request could not be written: the server never read it.
    Unsent(String),
    /// The server closed the connection, or broke it, before any reply:
    /// it may have read the request.
    NoReply(String),
    /// Something else broke the exchange.
    Broken(String),
    /// The server ended the request without a valid head.
    NoHead(String),
    /// `--fastcgi-app-timeout` passed.
    Timeout,
}

impl Upstream {
    pub fn new(addr: Address, keep: bool) -> Upstream {
        Upstream {
            addr,
            keep,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        Conn::connect(&self.addr).await
    }

    fn checkout(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    fn checkin(&self, conn: Conn) {
        if self.keep
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

impl Conn {
    pub async fn connect(addr: &Address) -> std::io::Result<Conn> {
        let io: Box<dyn Io> = match addr {
            Address::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str()).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Address::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            Address::Fd(n) => {
                return Err(std::io::Error::other(format!(
                    "fd://{n} names a socket to listen on, not an address to connect to"
                )));
            }
            Address::Abstract(name) => {
                // std's connect blocks (a full backlog): off the event loop.
                let name = name.clone();
                let s = tokio::task::spawn_blocking(move || {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                    std::os::unix::net::UnixStream::connect_addr(&addr)
                })
                .await
                .map_err(std::io::Error::other)??;
                s.set_nonblocking(true)?;
                Box::new(tokio::net::UnixStream::from_std(s)?)
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            stderr_line: Vec::new(),
        })
    }
}

impl Conn {
    fn poll_record(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<fastcgi::Record>, String>> {
        loop {
            match fastcgi::parse_record(&mut self.buf) {
                Ok(Some(r)) => return Poll::Ready(Ok(Some(r))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e.to_string())),
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    return Poll::Ready(Ok(None));
                }
                Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
            }
        }
    }

    /// Whether a kept connection was closed by the server while idle (a
    /// php-cgi at its request cap closes it as it exits): looked at without
    /// waiting.
    pub fn closed(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        // Ready: the end of the stream, an error, or bytes nobody asked for.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut read)
            .is_ready()
    }

    async fn record(&mut self) -> Result<Option<fastcgi::Record>, String> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }
}

/// One request: its params (name, value) and body.
pub struct Call {
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: RequestBody,
    pub timeout: Option<Duration>,
    /// What the log calls the app.
    pub name: Arc<str>,
}

/// What the log calls the app while it answers one request: its name and
/// the request (`php-cgi (GET /err.php)`), so that what the script writes
/// to FCGI_STDERR (PHP's errors) says which request it came from, as
/// nginx's "FastCGI sent in stderr" lines do.
pub fn serving(name: &str, params: &[(Vec<u8>, Vec<u8>)]) -> Arc<str> {
    let get = |n: &[u8]| {
        params
            .iter()
            .find(|(k, _)| k == n)
            .map_or(std::borrow::Cow::Borrowed(""), |(_, v)| {
                String::from_utf8_lossy(v)
            })
    };
    Arc::from(format!(
        "{name} ({} {})",
        get(b"REQUEST_METHOD"),
        get(b"REQUEST_URI")
    ))
}

/// Sends the request and reads the response head; the first body bytes
/// read with it come back beside it.
pub async fn call(upstream: &Arc<Upstream>, call: Call) -> Result<(Head, Bytes, Output), Failure> {
    let deadline = call.timeout.map(|t| Instant::now() + t);
    let within = |fut| async move {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, fut)
                .await
                .unwrap_or(Err(Failure::Timeout)),
            None => fut.await,
        }
    };
    within(Box::pin(exchange(upstream, call, deadline))).await
}

/// BEGIN_REQUEST and the PARAMS stream of a request.
pub fn request_records(params: &[(Vec<u8>, Vec<u8>)], keep: bool) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = params.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let mut out = Vec::with_capacity(1024);
    let flags = if keep { fastcgi::KEEP_CONN } else { 0 };
    fastcgi::begin_request(&mut out, ID, fastcgi::RESPONDER, flags);
    fastcgi::write_records(
        &mut out,
        fastcgi::PARAMS,
        ID,
        &fastcgi::encode_pairs(&pairs),
    );
    fastcgi::write_records(&mut out, fastcgi::PARAMS, ID, b"");
    out
}

/// A body that can be sent again (on a new connection), if it is whole.
pub fn replayable(body: &RequestBody) -> Option<RequestBody> {
    match body {
        RequestBody::Empty => Some(RequestBody::Empty),
        RequestBody::Full(b) => Some(RequestBody::Full(b.clone())),
        RequestBody::Stream(_) => None,
    }
}

/// One exchange on `conn`: the request out, the response head in.
pub async fn exchange_on(
    mut conn: Conn,
    records: &[u8],
    body: RequestBody,
    name: &str,
) -> Result<(Head, Bytes, Conn), Failure> {
    send(&mut conn, records, body)
        .await
        .map_err(Failure::Unsent)?;
    read_head(conn, name).await
}

async fn exchange(
    upstream: &Arc<Upstream>,
    call: Call,
    deadline: Option<Instant>,
) -> Result<(Head, Bytes, Output), Failure> {
    let records = request_records(&call.params, upstream.keep);
    let conn = match upstream.checkout() {
        Some(c) => c,
        None => upstream.connect().await.map_err(Failure::Connect)?,
    };
    let (head, first, conn) = exchange_on(conn, &records, call.body, &call.name).await?;
    let upstream = upstream.clone();
    let release: Release = Box::new(move |conn, _| {
        if let Some(conn) = conn {
            upstream.checkin(conn);
        }
    });
    Ok((head, first, Output::new(conn, call.name, deadline, release)))
}

async fn send(conn: &mut Conn, head: &[u8], body: RequestBody) -> Result<(), String> {
    let io = &mut conn.io;
    // Room for the records of what is sent in one write (a header for
    // each 64 KiB of content).
    let whole = match &body {
        RequestBody::Full(b) => b.len() + (b.len() / 65535 + 1) * 8,
        _ => 0,
    };
    let mut records = Vec::with_capacity(head.len() + whole + 16);
    records.extend_from_slice(head);
    match body {
        RequestBody::Empty => {}
        RequestBody::Full(b) => fastcgi::write_records(&mut records, fastcgi::STDIN, ID, &b),
        RequestBody::Stream(mut stream) => {
            // The head goes at once: the body may be long in coming.
            io.write_all(&records).await.map_err(|e| e.to_string())?;
            records.clear();
            while let Some(chunk) = stream.chunk().await {
                let chunk = chunk.map_err(|e| e.message)?;
                fastcgi::write_records(&mut records, fastcgi::STDIN, ID, &chunk);
                io.write_all(&records).await.map_err(|e| e.to_string())?;
                records.clear();
            }
        }
    }
    // A whole request goes in one write: the server, reading a record at a
    // time, wakes once for it rather than once more for the end of STDIN.
    fastcgi::write_records(&mut records, fastcgi::STDIN, ID, b"");
    io.write_all(&records).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())
}

/// STDOUT up to the end of the CGI head.
async fn read_head(mut conn: Conn, name: &str) -> Result<(Head, Bytes, Conn), Failure> {
    let mut out = BytesMut::new();
    let mut any = false;
    loop {
        let rec = match conn.record().await {
            Ok(Some(r)) => r,
            Ok(None) if !any => return Err(Failure::NoReply("closed before replying".into())),
            Ok(None) => return Err(Failure::NoHead("closed in the headers".into())),
            Err(e) if !any => return Err(Failure::NoReply(e)),
            Err(e) => return Err(Failure::NoHead(e)),
        };
        any = true;
        // A reply came, but a broken one (not a reason to try another
        // process): one request at a time goes over a connection, and a
        // record for another, taken as ours, could give one client
        // another's response.
        if let Some(why) = not_ours(&rec) {
            return Err(Failure::NoHead(why));
        }
        match rec.kind {
            fastcgi::STDOUT => {
                out.extend_from_slice(&rec.content);
                match cgi_response::parse(&out, false) {
                    Ok(Some(head)) => {
                        if let Some(said) = head.dropped_said() {
                            crate::say!("oxgate: FastCGI {name}: {said}");
                        }
                        let first = out.split_off(head.len).freeze();
                        return Ok((head, first, conn));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::NoHead(e.to_string())),
                }
            }
            fastcgi::STDERR => conn.log_stderr(name, &rec.content),
            fastcgi::END_REQUEST => {
                conn.end_stderr(name);
                return Err(Failure::NoHead(if out.is_empty() {
                    "the request ended with no output".into()
                } else {
                    "the request ended in the headers".into()
                }));
            }
            _ => {}
        }
    }
}

/// Why a record is not one of this connection's one request, if it is not.
fn not_ours(rec: &fastcgi::Record) -> Option<String> {
    (rec.request_id != ID).then(|| {
        format!(
            "a record for request {}, where {ID} is the only one",
            rec.request_id
        )
    })
}

impl Conn {
    /// Logs a STDERR record's whole lines; the end of one the record cuts
    /// off is waited for (up to `STDERR_LINE_MAX`: php-fpm's log_limit is
    /// 1 KiB).
    fn log_stderr(&mut self, name: &str, content: &[u8]) {
        self.stderr_line.extend_from_slice(content);
        while let Some(end) = self.stderr_line.iter().position(|&b| b == b'\n') {
            say_stderr(name, &self.stderr_line[..end]);
            self.stderr_line.drain(..=end);
        }
        if self.stderr_line.len() > STDERR_LINE_MAX {
            self.end_stderr(name);
        }
    }

    /// Logs what is left of STDERR: the request ended.
    fn end_stderr(&mut self, name: &str) {
        say_stderr(name, &self.stderr_line);
        self.stderr_line.clear();
    }
}

/// The longest STDERR line waited for; a longer one is logged in parts.
const STDERR_LINE_MAX: usize = 16 << 10;

fn say_stderr(name: &str, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.is_empty() {
        crate::say!("oxgate: FastCGI {name}: {}", String::from_utf8_lossy(line));
    }
}

/// Given the connection back once a response ends: `Some` after a whole
/// exchange (it may carry the next request), `None` when it broke off;
/// and whether the timeout cut it.
pub type Release = Box<dyn FnOnce(Option<Conn>, bool) + Send>;

/// The rest of STDOUT, as a response body.
pub struct Output {
    /// With a grace: a response whose client left is read to its end, for
    /// that long at most, so that its process can be given back whole.
    drain: Option<Duration>,
    conn: Option<Conn>,
    release: Option<Release>,
    timed_out: bool,
    name: Arc<str>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    finished: bool,
    on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
    sent: u64,
}

impl Output {
    pub fn new(conn: Conn, name: Arc<str>, deadline: Option<Instant>, release: Release) -> Output {
        Output {
            drain: None,
            conn: Some(conn),
            release: Some(release),
            timed_out: false,
            name,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            finished: false,
            on_end: None,
            sent: 0,
        }
    }

    /// Has a response whose client leaves read on to its end, for `grace`
    /// at most, and at most `ABANDONED_OUTPUT` of it, its bytes dropped.
    pub fn drained_when_abandoned(mut self, grace: Duration) -> Output {
        self.drain = Some(grace);
        self
    }

    fn end(&mut self, whole: bool) {
        self.finished = true;
        let conn = self.conn.take();
        // A connection goes back only after a whole exchange, and with
        // nothing read past its end: bytes after END_REQUEST would be
        // taken for the next request's answer.
        if let Some(release) = self.release.take() {
            release(conn.filter(|c| whole && c.buf.is_empty()), self.timed_out);
        }
        if let Some(f) = self.on_end.take() {
            f(self.sent, whole);
        }
    }
}

impl CountedBody for Output {
    fn on_end(mut self, f: Box<dyn FnOnce(u64, bool) + Send>) -> Output {
        self.on_end = Some(f);
        self
    }

    fn add_sent(&mut self, n: u64) {
        self.sent += n;
    }
}

impl ChunkSource for Output {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(d) = &mut self.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            self.timed_out = true;
            self.end(false);
            crate::say!(
                "oxgate: FastCGI {}: over --fastcgi-app-timeout mid-response; cut",
                self.name
            );
            return Poll::Ready(Some(Err(BodyError::new(504, "over --fastcgi-app-timeout"))));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let rec = match conn.poll_record(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(rec))) => match not_ours(&rec) {
                    None => rec,
                    Some(why) => {
                        self.end(false);
                        return Poll::Ready(Some(Err(BodyError::new(502, why))));
                    }
                },
                Poll::Ready(Ok(None)) => {
                    self.end(false);
                    return Poll::Ready(Some(Err(BodyError::new(
                        502,
                        "the FastCGI server closed the connection mid-response",
                    ))));
                }
                Poll::Ready(Err(e)) => {
                    self.end(false);
                    return Poll::Ready(Some(Err(BodyError::new(502, e))));
                }
            };
            match rec.kind {
                fastcgi::STDOUT if !rec.content.is_empty() => {
                    self.sent += rec.content.len() as u64;
                    return Poll::Ready(Some(Ok(rec.content)));
                }
                fastcgi::STDERR => conn.log_stderr(&self.name, &rec.content),
                fastcgi::END_REQUEST => {
                    conn.end_stderr(&self.name);
                    self.end(true);
                    return Poll::Ready(None);
                }
                _ => {}
            }
        }
    }
}

/// The most output of an abandoned response read and dropped: more is a
/// download nobody takes, and its process is replaced instead.
const ABANDONED_OUTPUT: u64 = 1 << 20;

impl Drop for Output {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The client left mid-response: the request is over for it (logged
        // and counted now), and the process finishes the script unheard.
        if let Some(grace) = self.drain
            && !self.timed_out
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Some(conn) = self.conn.take()
            && let Some(release) = self.release.take()
        {
            self.finished = true;
            if let Some(f) = self.on_end.take() {
                f(self.sent, false);
            }
            let until = Instant::now() + grace;
            let until = match &self.deadline {
                Some(d) => until.min(d.deadline()),
                None => until,
            };
            runtime.spawn(drain(conn, self.name.clone(), until, release));
            return;
        }
        self.end(false);
    }
}

/// Reads an abandoned response to its END_REQUEST, dropping its output,
/// then gives the connection back; or, cut short (`until`, too much
/// output, a broken exchange), has the process replaced.
async fn drain(mut conn: Conn, name: Arc<str>, until: Instant, release: Release) {
    let mut dropped = 0u64;
    let whole = loop {
        let rec = match tokio::time::timeout_at(until, conn.record()).await {
            Ok(Ok(Some(rec))) if not_ours(&rec).is_none() => rec,
            _ => break false,
        };
        match rec.kind {
            fastcgi::STDOUT => {
                dropped += rec.content.len() as u64;
                if dropped > ABANDONED_OUTPUT {
                    break false;
                }
            }
            fastcgi::STDERR => conn.log_stderr(&name, &rec.content),
            fastcgi::END_REQUEST => {
                conn.end_stderr(&name);
                break true;
            }
            _ => {}
        }
    };
    if !whole {
        crate::say!(
            "oxgate: FastCGI {name}: a request whose client left had not ended by its deadline (or wrote over {} KiB more): its process is replaced",
            ABANDONED_OUTPUT >> 10
        );
    }
    release(Some(conn).filter(|c| whole && c.buf.is_empty()), false);
}
