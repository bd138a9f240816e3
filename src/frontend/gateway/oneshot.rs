//! The uwsgi and SCGI driver: one request per connection (nginx's
//! uwsgi_pass, scgi_pass), read whole or streamed, then close.

use crate::listen::Protocol;
use crate::proto::{scgi, uwsgi};
use crate::request::cgi::{Normalised, normalise};
use crate::request::{BodyError, BodyStream, ChunkSource, Request, RequestBody};
use crate::request::{ConnInfo, Handler, Response, body_too_large};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};

use super::files::SocketFiles;
use super::response::{status_line_version, write_response};
use super::settings::GatewaySettings;
use super::stall::StallGuard;

/// The protocols with one request per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneShot {
    Uwsgi,
    Scgi,
}

impl OneShot {
    pub fn protocol(self) -> Protocol {
        match self {
            OneShot::Uwsgi => Protocol::Uwsgi,
            OneShot::Scgi => Protocol::Scgi,
        }
    }
}

/// One parsed request head, whatever the protocol.
pub(super) enum Parsed {
    Request {
        vars: Vec<(Bytes, Bytes)>,
        strip_script_name: bool,
    },
    /// uwsgi's ping: answer the pong header.
    Ping,
}

/// The head of a request, `None` until enough bytes arrived; an error says
/// what was wrong and whether the client spoke HTTP instead.
pub(super) fn parse_head(
    kind: OneShot,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<Parsed>, (String, bool)> {
    match kind {
        OneShot::Uwsgi => match uwsgi::parse(buf, limit) {
            Ok(None) => Ok(None),
            Ok(Some(h)) => match h.modifier1 {
                // uWSGI's CGI (9) and PHP (14) plugins have modifiers of their
                // own, which nginx configs made for them send; here the
                // request's path picks its handler (a --cgi mount, a PHP
                // pool), as for 0.
                0 | 9 | 14 | 30 => Ok(Some(Parsed::Request {
                    vars: h.vars,
                    strip_script_name: h.modifier1 == 30,
                })),
                100 => Ok(Some(Parsed::Ping)),
                m => Err((
                    format!(
                        "modifier1 {m} refused: oxgate serves apps (modifier1 0, 30; uWSGI's CGI 9 and PHP 14) and ping (100)"
                    ),
                    false,
                )),
            },
            Err(e) => Err((e.to_string(), e == uwsgi::Error::LooksLikeHttp)),
        },
        OneShot::Scgi => match scgi::parse(buf, limit) {
            Ok(None) => Ok(None),
            Ok(Some(vars)) => Ok(Some(Parsed::Request {
                vars,
                strip_script_name: false,
            })),
            Err(e) => Err((e.to_string(), e == scgi::Error::LooksLikeHttp)),
        },
    }
}

/// Serves one gateway connection: one request, then close. `buf` holds
/// bytes already read from it (by the fast path).
pub async fn serve<S>(
    stream: S,
    kind: OneShot,
    info: ConnInfo,
    host: Arc<dyn Handler>,
    settings: Arc<GatewaySettings>,
    mut buf: BytesMut,
) where
    S: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
{
    let protocol = kind.protocol();
    // SAFETY: `files` is used only below, while `wr` holds the stream
    // that owns the socket.
    let mut files =
        unsafe { SocketFiles::new(stream.as_raw_fd()) }.with_stall_timeout(settings.timeout);
    let (mut rd, wr) = tokio::io::split(stream);
    let mut wr = StallGuard::new(wr, settings.timeout);
    // The whole head within the timeout, not each read: a head trickled
    // a byte at a time would hold the connection for ever.
    let head_deadline = tokio::time::Instant::now() + settings.timeout;
    let (raw, strip_script_name) = loop {
        match parse_head(kind, &mut buf, settings.max_vars) {
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
                    let _ = wr
                        .write_all(super::response::not_http(protocol).as_bytes())
                        .await;
                }
                let _ = wr.shutdown().await;
                return;
            }
        }
        match tokio::time::timeout_at(head_deadline, rd.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) => {
                crate::say!(
                    "oxgate: {} connection closed: no whole request head within {}s (--socket-timeout)",
                    protocol.name(),
                    settings.timeout.as_secs()
                );
                return;
            }
            _ => return, // closed or failed before a whole head
        }
    };
    let Normalised {
        vars,
        content_length,
        bad_content_length,
        is_head,
        repeated_headers,
    } = normalise(raw, &info, strip_script_name);
    // Refused before the app: the answer, then what is left of the body
    // to read and let go.
    let refused = if bad_content_length {
        crate::say!(
            "oxgate: {} request refused: CONTENT_LENGTH is not a length",
            protocol.name()
        );
        // Where the body ends cannot be known: nothing more is read.
        let bad = Response::plain(400, "Bad Request", "CONTENT_LENGTH is not a length\n");
        Some((bad, 0))
    } else {
        body_too_large(settings.limit_post, content_length, &vars).map(|too_large| {
            let unread = content_length.unwrap_or(0).saturating_sub(buf.len() as u64);
            (too_large, unread)
        })
    };
    if let Some((refusal, unread)) = refused {
        write_response(
            &mut wr,
            &mut files,
            protocol,
            &status_line_version(&vars),
            refusal,
        )
        .await;
        // The body the web server is still sending is read and let go:
        // closed with it unread, the connection is reset, and nginx
        // answers 502 for the 413.
        let _ = wr.shutdown().await;
        let_go(&mut rd, unread, settings.timeout).await;
        return;
    }
    let len = content_length.unwrap_or(0);
    // The reading side, kept to watch unless a streamed body takes it; a
    // streamed body the handler let go unread gives it back (`unread`), to
    // be read to its end after the answer.
    let (body, mut watched, unread) = if len == 0 {
        (RequestBody::Empty, Some(rd), None)
    } else if len <= settings.read_ahead {
        // Small: read it all now, so the app can run inline.
        while (buf.len() as u64) < len {
            // The front end went away mid-body, or stalled: said, as a
            // larger body's end is (whoever chases nginx's 502 finds why).
            let why = match tokio::time::timeout(settings.timeout, rd.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => continue,
                Ok(Ok(_)) => format!(
                    "the front end closed the connection {} bytes short of CONTENT_LENGTH",
                    len - buf.len() as u64
                ),
                Ok(Err(e)) => format!("reading the request body: {e}"),
                Err(_) => format!(
                    "no body bytes for {}s (--socket-timeout), {} short of CONTENT_LENGTH",
                    settings.timeout.as_secs(),
                    len - buf.len() as u64
                ),
            };
            crate::say!(
                "oxgate: {} connection closed: bad request body: {why}",
                protocol.name()
            );
            return;
        }
        buf.truncate(len as usize);
        (RequestBody::Full(buf.split().freeze()), Some(rd), None)
    } else {
        let unread: UnreadBody<S> = Arc::new(std::sync::Mutex::new(None));
        let prefix = buf.split().freeze();
        let prefix = prefix.slice(..prefix.len().min(len as usize));
        let body = RequestBody::Stream(BodyStream::new(SocketBody {
            rd: Some(rd),
            remaining: len - prefix.len() as u64,
            pending: (!prefix.is_empty()).then_some(prefix),
            timeout: settings.timeout,
            sleep: None,
            unread: Some(unread.clone()),
        }));
        (body, None, Some(unread))
    };
    let version = status_line_version(&vars);
    let answering = std::pin::pin!(host.handle(gateway_request(
        vars,
        is_head,
        repeated_headers,
        body,
        protocol
    )));
    match &mut watched {
        // The whole request is in: nothing more comes on a one-request
        // connection, so its reading side ending is the web server closing
        // it, as nginx does when its client leaves. The app's request is
        // dropped then, as hyper drops it when an HTTP client leaves: an
        // ASGI app's receive() says http.disconnect, and a long-poll ends.
        Some(rd) => {
            answer_unless_closed(rd, &mut wr, &mut files, answering, protocol, &version).await;
        }
        // A streamed body holds the reading side: its reads see a close.
        None => {
            let response = answering.await;
            write_response(&mut wr, &mut files, protocol, &version, response).await;
            // Answered without its body read (a 404 before a script ran):
            // the rest the web server is still sending is read and let
            // go, as for a 413. Closed with it unread, the connection was
            // reset, and Apache's mod_proxy_uwsgi answered 503 for the 404.
            let left = unread.and_then(|u| u.lock().ok().and_then(|mut u| u.take()));
            if let Some((mut rd, remaining)) = left {
                let _ = wr.shutdown().await;
                let_go(&mut rd, remaining, settings.timeout).await;
            }
        }
    }
}

/// Reads the `unread` bytes of a body still coming (up to `DRAIN_MAX`,
/// each read within `each`) and lets them go, once the answer is out.
async fn let_go<R: AsyncRead + Unpin>(rd: &mut R, unread: u64, each: Duration) {
    let limits = crate::frontend::DrainLimits {
        max: unread.min(crate::frontend::DRAIN_MAX),
        each,
        until: None,
    };
    crate::frontend::drain_input(rd, limits).await;
}

/// Where a [`SocketBody`] dropped unread leaves its reading side and the
/// bytes still to come.
type UnreadBody<S> = Arc<std::sync::Mutex<Option<(ReadHalf<S>, u64)>>>;

/// A gateway request: no upgrade, no 103 (the web server in front speaks
/// HTTP to the client).
pub(super) fn gateway_request(
    vars: Vec<(crate::request::VarName, Bytes)>,
    is_head: bool,
    repeated_headers: Vec<crate::request::RepeatedHeader>,
    body: RequestBody,
    protocol: Protocol,
) -> Request {
    Request {
        vars,
        body,
        is_head,
        protocol,
        upgradable: false,
        early_hints: None,
        repeated_headers,
        local_addr: None,
        proxied_by: None,
        script_name_header: None,
    }
}

/// The app's answer, written, unless the web server closes the connection
/// first: then the request is dropped (and with it the response's body).
pub(super) async fn answer_unless_closed<R, W>(
    rd: &mut R,
    wr: &mut W,
    files: &mut SocketFiles,
    answering: std::pin::Pin<&mut (impl Future<Output = Response> + ?Sized)>,
    protocol: Protocol,
    version: &[u8],
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    tokio::select! {
        biased;
        response = answering => {
            tokio::select! {
                biased;
                () = write_response(wr, files, protocol, version, response) => {}
                () = front_end_closed(rd) => {}
            }
        }
        () = front_end_closed(rd) => {}
    }
}

/// Returns when the web server closes its side of a connection that has
/// nothing more to send (stray bytes after the request are let go).
async fn front_end_closed<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut stray = [0u8; 512];
    while let Ok(n) = rd.read(&mut stray).await {
        if n == 0 {
            return;
        }
    }
}

/// A body after the vars: exactly CONTENT_LENGTH bytes from the socket.
pub(super) struct SocketBody<R> {
    rd: Option<ReadHalf<R>>,
    pending: Option<Bytes>,
    remaining: u64,
    timeout: Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Given the reading side if the body is dropped before its end.
    pub(super) unread: Option<UnreadBody<R>>,
}

impl<R> Drop for SocketBody<R> {
    fn drop(&mut self) {
        if self.remaining > 0
            && let (Some(rd), Some(unread)) = (self.rd.take(), self.unread.take())
            && let Ok(mut slot) = unread.lock()
        {
            *slot = Some((rd, self.remaining));
        }
    }
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
