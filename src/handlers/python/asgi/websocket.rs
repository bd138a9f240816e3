//! The connection's side of an ASGI WebSocket, on the worker's tokio
//! thread: the handshake (the app accepts, refuses, or answers with an HTTP
//! response), then the session that moves messages between the socket
//! (tungstenite's framing) and the app, pings the client, and closes.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::bridge::start_websocket;
use super::exchange::{AppEnd, keep_waker};
use super::host::AsgiApp;
use super::scope::RequestVars;
use super::ws::{Handshake, Incoming, WsExchange, WsState};
use super::ws_deflate::DeflateIo;
use crate::config::WsSettings;
use crate::listen::Protocol;
use crate::proto::permessage_deflate;
use crate::request::{GoingAway, Response, ResponseBody, Upgraded, Var, VarName, var, var_named};

/// How long a close handshake we began waits for the client's reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a ping went unanswered: time for our close frame to go out, not
/// for a reply from a peer already judged gone.
const DEAD_PEER_CLOSE: Duration = Duration::from_secs(1);
/// At a stop: time for our close frame to go out and a live client's
/// reply to come, not for one that reads but never answers (a dead mobile
/// client) to hold the stop; uvicorn closes at once after its frame.
const STOP_CLOSE: Duration = Duration::from_secs(1);

/// Whether a `Sec-WebSocket-Key` is base64 for 16 bytes.
fn is_handshake_key(key: &[u8]) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
}
/// Each socket's read buffer: small, so that thousands of idle sockets
/// cost little (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 8 * 1024;

/// Whether the request asks for a WebSocket: `Upgrade: websocket` and
/// `Connection: upgrade` (RFC 6455 §4.2.1; without the second, uvicorn
/// serves it as plain HTTP, as this does).
pub(super) fn is_websocket(vars: &[(VarName, Bytes)]) -> bool {
    let lists = |name: &[u8], token: &[u8]| {
        var_named(vars, name).is_some_and(|v| {
            v.split(|&c| c == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    lists(b"HTTP_UPGRADE", b"websocket") && lists(b"HTTP_CONNECTION", b"upgrade")
}

/// Serves a WebSocket handshake: the app's scope, then its answer as the
/// response (a 101 whose session carries the socket on).
pub(super) async fn serve(app: Arc<AsgiApp>, req: RequestVars, protocol: Protocol) -> Response {
    let host = app.host.clone();
    let vars = &req.vars;
    let is_get = var(vars, Var::REQUEST_METHOD).is_some_and(|m| &m[..] == b"GET");
    let Some(key) = var_named(vars, b"HTTP_SEC_WEBSOCKET_KEY").filter(|_| is_get) else {
        return Response::plain(400, "Bad Request", "Malformed WebSocket handshake\n");
    };
    if var_named(vars, b"HTTP_SEC_WEBSOCKET_VERSION").is_none_or(|v| v.trim_ascii() != b"13") {
        let mut r = Response::plain(
            426,
            "Upgrade Required",
            "Only WebSocket version 13 is supported\n",
        );
        r.headers.push((
            Bytes::from_static(b"Sec-WebSocket-Version"),
            Bytes::from_static(b"13"),
        ));
        return r;
    }
    // RFC 6455 §4.2.1: the key is 16 random bytes in base64.
    if !is_handshake_key(key.trim_ascii()) {
        return Response::plain(400, "Bad Request", "Malformed Sec-WebSocket-Key\n");
    }
    let accept_key = derive_accept_key(key.trim_ascii());
    let deflate = var_named(vars, b"HTTP_SEC_WEBSOCKET_EXTENSIONS")
        .filter(|_| host.settings.ws.per_message_deflate)
        .and_then(|offers| permessage_deflate::answer(offers));
    let mut slot = host.begin(vars, protocol);
    let exchange = Arc::new(WsExchange::new(host.clone()));
    let conn = WsConn {
        exchange: exchange.clone(),
    };
    let shared = exchange.clone();
    host.post(Box::new(move |py, objects| {
        start_websocket(py, objects, &app, req, shared);
    }));
    let response = match poll_fn(|cx| poll_answer(&exchange, cx)).await {
        Answer::Accept {
            subprotocol,
            headers: extra,
        } => {
            let mut headers = vec![
                (
                    Bytes::from_static(b"Upgrade"),
                    Bytes::from_static(b"websocket"),
                ),
                (
                    Bytes::from_static(b"Connection"),
                    Bytes::from_static(b"Upgrade"),
                ),
                (
                    Bytes::from_static(b"Sec-WebSocket-Accept"),
                    Bytes::from(accept_key),
                ),
            ];
            if let Some(p) = subprotocol {
                headers.push((
                    Bytes::from_static(b"Sec-WebSocket-Protocol"),
                    Bytes::from(p),
                ));
            }
            // An app that answers the extensions itself is left to it.
            let deflate = deflate.filter(|_| {
                !extra
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-extensions"))
            });
            if let Some(answer) = deflate {
                headers.push((
                    Bytes::from_static(b"Sec-WebSocket-Extensions"),
                    Bytes::from_static(answer.as_bytes()),
                ));
            }
            let deflate = deflate.is_some();
            headers.extend(extra);
            let settings = host.settings.ws.clone();
            Response {
                status: 101,
                reason: None,
                headers,
                body: ResponseBody::Upgrade(Box::new(move |io, going_away| {
                    let io: Upgraded = if deflate {
                        Box::new(DeflateIo::new(io, settings.max_size))
                    } else {
                        io
                    };
                    Box::pin(run_session(conn, io, going_away, settings))
                })),
            }
        }
        // A handshake refused or denied ends the connection, as uvicorn
        // ends it: what a client sent behind its handshake is WebSocket
        // frames, never a next request.
        Answer::Http(mut r) => {
            r.headers.push((
                Bytes::from_static(b"Connection"),
                Bytes::from_static(b"close"),
            ));
            r
        }
    };
    let o = &mut slot.outcome;
    o.note_head(response.status, None, &response.headers);
    if let ResponseBody::Full(b) = &response.body {
        o.body_bytes = b.len() as u64;
    }
    o.failed = exchange.lock().end == Some(AppEnd::Failed) && response.status >= 500;
    // The request is over with its handshake: an open WebSocket is not a
    // request the scoreboard (or harakiri) waits on.
    response
}

enum Answer {
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(Bytes, Bytes)>,
    },
    Http(Response),
}

fn poll_answer(exchange: &WsExchange, cx: &mut Context<'_>) -> Poll<Answer> {
    let mut st = exchange.lock();
    match st.handshake.take() {
        Some(Handshake::Accept {
            subprotocol,
            headers,
        }) => {
            return Poll::Ready(Answer::Accept {
                subprotocol,
                headers,
            });
        }
        Some(Handshake::Refuse) => {
            let mut r = Response::plain(403, "Forbidden", "");
            r.reason = None;
            return Poll::Ready(Answer::Http(r));
        }
        Some(Handshake::Deny(head)) if st.deny_complete => {
            let mut body = BytesMut::new();
            for part in st.deny_body.drain(..) {
                body.extend_from_slice(&part);
            }
            return Poll::Ready(Answer::Http(Response {
                status: head.status,
                reason: None,
                headers: head.headers,
                body: ResponseBody::Full(body.freeze()),
            }));
        }
        Some(h) => st.handshake = Some(h),
        None => {}
    }
    if st.end.is_some() {
        return Poll::Ready(Answer::Http(Response::plain(
            500,
            "Internal Server Error",
            "Internal Server Error\n",
        )));
    }
    keep_waker(&mut st.waker, cx);
    Poll::Pending
}

/// The WebSocket while the connection holds it: when it goes (the session
/// ended, or the 101 never reached the client), the app hears so.
struct WsConn {
    exchange: Arc<WsExchange>,
}

impl Drop for WsConn {
    fn drop(&mut self) {
        // 1006: closed without a close frame, unless one was seen.
        self.exchange.close(1006, "");
    }
}

async fn run_session(conn: WsConn, io: Upgraded, going_away: GoingAway, settings: WsSettings) {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(settings.max_size))
        .max_frame_size(Some(settings.max_size));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let mut going_away = going_away;
    let mut session = Session {
        ws,
        conn,
        pending: VecDeque::new(),
        unflushed: false,
        reading: true,
        close_sent: false,
        peer_closed: false,
        app_gone: false,
        ping_every: settings.ping_interval,
        ping_timeout: settings.ping_timeout,
        ping_timer: settings
            .ping_interval
            .map(|i| Box::pin(tokio::time::sleep(i))),
        pong_deadline: None,
        close_deadline: None,
        going_away: Some(Box::pin(async move { going_away.fired().await })),
        close_at_stop: settings.close_at_stop,
    };
    poll_fn(|cx| session.poll(cx)).await;
    // The last frames (the close) may still be queued below (the HTTP
    // front end's batched writes): a shutdown writes them, then ends the
    // connection, as the server's side of the close handshake should.
    let io = session.ws.get_mut();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, tokio::io::AsyncWriteExt::shutdown(io)).await;
}

struct Session {
    ws: WebSocketStream<Upgraded>,
    conn: WsConn,
    /// Messages taken from the app, waiting for the socket.
    pending: VecDeque<Message>,
    unflushed: bool,
    /// The client's side is still open.
    reading: bool,
    /// Our close frame went out: the client's reply ends the session.
    close_sent: bool,
    /// The client's close frame came: tungstenite answers it.
    peer_closed: bool,
    /// The app's coroutine ended: what the client sends is dropped.
    app_gone: bool,
    ping_every: Option<Duration>,
    ping_timeout: Option<Duration>,
    ping_timer: Option<Pin<Box<Sleep>>>,
    pong_deadline: Option<Pin<Box<Sleep>>>,
    close_deadline: Option<Pin<Box<Sleep>>>,
    going_away: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// `--ws-close-at-stop`: the stop's close is 1012, as soon as it
    /// begins.
    close_at_stop: bool,
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason),
    }))
}

/// The close code for an error reading the client's frames.
fn error_code(e: &WsError) -> u16 {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => 1009,
        WsError::Utf8(_) => 1007,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => 1006,
        WsError::Protocol(_) => 1002,
        _ => 1006,
    }
}

/// Moves what the app queued to `pending`: all of it when `all`, else
/// only once the last batch is written (the app's `send()` waits while
/// both are full). Nothing more may go out after a close frame, ours or
/// the client's.
fn take_from_app(
    exchange: &WsExchange,
    st: &mut WsState,
    pending: &mut VecDeque<Message>,
    closing: bool,
    all: bool,
) {
    if (pending.is_empty() || all) && !st.outgoing.is_empty() {
        let mut bytes = 0;
        for m in st.outgoing.drain(..) {
            // Only data counts toward the queue's size (as `send()` does).
            if m.is_text() || m.is_binary() {
                bytes += m.len();
            }
            if !closing {
                pending.push_back(m);
            }
        }
        exchange.sent(st, bytes);
    }
}

impl Session {
    /// Whether no more frames may be queued: our close is queued or sent,
    /// or the client closed.
    fn closing(&self) -> bool {
        self.close_sent || self.peer_closed || self.pending.iter().any(Message::is_close)
    }

    /// Starts our side of the close handshake: `code` goes to the client
    /// (instead of whatever waits to be sent), the app's `receive()` says
    /// it, and the client has `CLOSE_TIMEOUT` to answer.
    fn begin_close(&mut self, code: u16, reason: &str) {
        self.conn.exchange.close(code, reason);
        if !self.close_sent && !self.peer_closed {
            self.pending.retain(Message::is_close);
            if self.pending.is_empty() {
                self.pending.push_back(close_message(code, reason));
            }
        }
        self.arm_close_deadline();
    }

    /// A close handshake has begun: a client that does not finish it (or
    /// does not even read) is dropped after `CLOSE_TIMEOUT`.
    fn arm_close_deadline(&mut self) {
        if self.close_deadline.is_none() {
            self.close_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut progress = false;
            let (room, end) = {
                let mut st = self.conn.exchange.lock();
                let end = st.end.filter(|_| !self.app_gone);
                // An app that ended sent all it will: take it all, so
                // that its last messages go out before the close.
                let closing = self.closing();
                take_from_app(
                    &self.conn.exchange,
                    &mut st,
                    &mut self.pending,
                    closing,
                    end.is_some(),
                );
                keep_waker(&mut st.waker, cx);
                (st.received.queued() < super::ws::INCOMING_MAX, end)
            };
            if self.pending.iter().any(Message::is_close) {
                self.arm_close_deadline();
            }
            if let Some(end) = end {
                // An app that ends without closing: 1000, or 1011 after an
                // error (as uvicorn), after what it sent.
                self.app_gone = true;
                if !self.closing() {
                    let code = if end == AppEnd::Failed { 1011 } else { 1000 };
                    self.conn.exchange.close(code, "");
                    self.pending.push_back(close_message(code, ""));
                    self.arm_close_deadline();
                }
                progress = true;
            }

            while !self.pending.is_empty() {
                match self.ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        let m = self.pending.pop_front().expect("not empty");
                        let is_close = m.is_close();
                        match self.ws.start_send_unpin(m) {
                            Ok(()) => self.close_sent |= is_close,
                            // The client's close came first: what we had
                            // to say goes unsaid.
                            Err(WsError::Protocol(ProtocolError::SendAfterClosing)) => {}
                            Err(_) => return Poll::Ready(()),
                        }
                        self.unflushed = true;
                        // More may wait in the app's queue.
                        progress = true;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if self.unflushed {
                match self.ws.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }

            if self.reading && (room || self.app_gone) {
                match self.ws.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(m))) => {
                        progress = true;
                        self.got(m);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.reading = false;
                        let code = error_code(&e);
                        // (WsConn's drop tells the app of a 1006.)
                        if code == 1006 {
                            return Poll::Ready(());
                        }
                        self.begin_close(code, "");
                        progress = true;
                    }
                    // The close handshake is done, or the client is gone.
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            } else if !self.reading && self.pending.is_empty() && !self.unflushed {
                return Poll::Ready(());
            }

            if let Some(timer) = &mut self.ping_timer
                && timer.as_mut().poll(cx).is_ready()
            {
                let every = self.ping_every.expect("a timer has an interval");
                timer.as_mut().reset(Instant::now() + every);
                if self.pong_deadline.is_none() && !self.closing() {
                    self.pending.push_back(Message::Ping(Bytes::new()));
                    self.pong_deadline = self.ping_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
                }
                progress = true;
            }
            if let Some(deadline) = &mut self.pong_deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                self.pong_deadline = None;
                self.ping_timer = None;
                self.begin_close(1011, "keepalive ping timeout");
                self.close_deadline = Some(Box::pin(tokio::time::sleep(DEAD_PEER_CLOSE)));
                progress = true;
            }
            if let Some(stop) = &mut self.going_away
                && stop.as_mut().poll(cx).is_ready()
            {
                self.going_away = None;
                // uvicorn's at once (--ws-close-at-stop), else the end of
                // the mercy time.
                match self.close_at_stop {
                    true => self.begin_close(1012, ""),
                    false => self.begin_close(1001, "going away"),
                }
                self.close_deadline = Some(Box::pin(tokio::time::sleep(STOP_CLOSE)));
                progress = true;
            }
            if let Some(deadline) = &mut self.close_deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// A frame from the client.
    fn got(&mut self, m: Message) {
        match m {
            Message::Text(t) if !self.app_gone => {
                self.conn.exchange.deliver(Incoming::Text(t));
            }
            Message::Binary(b) if !self.app_gone => {
                self.conn.exchange.deliver(Incoming::Binary(b));
            }
            // tungstenite queued the pong (or the close reply): flush it.
            Message::Ping(_) => self.unflushed = true,
            Message::Pong(_) => self.pong_deadline = None,
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, Utf8Bytes::default()), |f| {
                    (u16::from(f.code), f.reason)
                });
                self.conn.exchange.close(code, reason.as_str());
                // tungstenite answers it; nothing else may follow.
                self.peer_closed = true;
                self.pending.clear();
                self.unflushed = true;
                self.arm_close_deadline();
            }
            _ => {}
        }
    }
}
