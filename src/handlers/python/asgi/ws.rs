//! What one WebSocket's two sides share (ASGI `www` spec, WebSocket part):
//! the app's handshake answer and outgoing messages (taken by the
//! connection's task), the client's messages (queued for `receive()`), and
//! how the socket ended. The app's `receive` and `send` callables.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::exchange::{
    AppEnd, Head, SEND_HIGH, SEND_LOW, bytes_of, field, log_app_error, message_type, parse_headers,
    parse_start, resolve,
};
use super::host::{AsgiHost, LoopObjects};
use super::mailbox::Mailbox;
use super::ready::Ready;
use super::scope::RequestLine;

/// Client messages queued for an app that does not `receive()` them
/// before the socket stops being read (the websockets library's
/// `max_queue`).
pub(super) const INCOMING_MAX: usize = 32;

/// The app's answer to the handshake.
pub(super) enum Handshake {
    Accept {
        subprotocol: Option<String>,
        headers: Vec<(Bytes, Bytes)>,
    },
    /// `websocket.close` before accepting: 403.
    Refuse,
    /// `websocket.http.response.start`: an HTTP response instead.
    Deny(Head),
}

/// A message from the client.
pub(super) enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
}

#[derive(Default)]
pub(super) struct WsState {
    /// Set by the app's first decisive message; taken by the connection.
    pub(super) handshake: Option<Handshake>,
    pub(super) decided: bool,
    pub(super) accepted: bool,
    /// The denial's body, and whether its last part came.
    pub(super) deny_body: Vec<Bytes>,
    pub(super) deny_complete: bool,
    /// `websocket.connect` was received.
    pub(super) connected: bool,
    /// The client's messages, and the `receive()` calls waiting for them.
    pub(super) received: Mailbox<Incoming>,
    pub(super) outgoing: VecDeque<Message>,
    pub(super) queued: usize,
    /// The app sent `websocket.close`.
    pub(super) app_closed: bool,
    /// The socket is over, with the code and reason `receive()` reports.
    pub(super) closed: Option<(u16, String)>,
    pub(super) end: Option<AppEnd>,
    /// The app's asyncio task, until it ends (see `exchange::State::task`).
    pub(super) task: Option<Py<PyAny>>,
    /// The connection's task, waiting for the app.
    pub(super) waker: Option<Waker>,
    pub(super) send_waiters: Vec<Py<PyAny>>,
}

pub(super) struct WsExchange {
    pub(super) host: Arc<AsgiHost>,
    state: Mutex<WsState>,
}

impl WsExchange {
    pub(super) fn new(host: Arc<AsgiHost>) -> WsExchange {
        WsExchange {
            host,
            state: Mutex::new(WsState::default()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes the connection's task.
    fn update<T>(&self, change: impl FnOnce(&mut WsState) -> T) -> T {
        let (out, waker) = {
            let mut st = self.lock();
            let out = change(&mut st);
            (out, st.waker.take())
        };
        if let Some(w) = waker {
            self.host.relay.wake(w);
        }
        out
    }

    pub(super) fn ended(&self, how: AppEnd) {
        let _task = self.update(|st| {
            st.end = Some(how);
            st.task.take()
        });
    }

    /// The socket is over: `receive()` says `websocket.disconnect` once the
    /// messages already queued are taken, and waiting calls go on.
    pub(super) fn close(self: &Arc<Self>, code: u16, reason: &str) {
        let (post, senders) = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some((code, reason.to_string()));
            }
            (
                st.received.claim_post(),
                std::mem::take(&mut st.send_waiters),
            )
        };
        if post {
            self.post_received();
        }
        if !senders.is_empty() {
            self.host.post(Box::new(move |py, _| {
                resolve(py, senders, &py.None().into_bound(py));
            }));
        }
    }

    /// A client message, for `receive()`.
    pub(super) fn deliver(self: &Arc<Self>, message: Incoming) {
        let post = {
            let mut st = self.lock();
            // The disconnect is the last event the app receives (the ASGI
            // spec; uvicorn): what the client sends after the app closed
            // is dropped.
            if st.closed.is_some() {
                return;
            }
            st.received.push(message)
        };
        if post {
            self.post_received();
        }
    }

    /// Hands the client's messages to the `receive()` calls waiting for
    /// them, on the loop thread (see `mailbox`); calls left waiting on a
    /// closed socket get the disconnect.
    fn post_received(self: &Arc<Self>) {
        let exchange = self.clone();
        self.host.post(Box::new(move |py, _| {
            let (pairs, left, waker) = {
                let mut st = exchange.lock();
                let was_full = st.received.queued() >= INCOMING_MAX;
                let pairs = st.received.pair(py);
                // A full queue had stopped the reading.
                let waker = (was_full && st.received.queued() < INCOMING_MAX)
                    .then(|| st.waker.take())
                    .flatten();
                let left = match st.closed.clone() {
                    Some(closed) if st.received.waits_in_vain() => {
                        Some((st.received.take_waiters(), closed))
                    }
                    _ => None,
                };
                (pairs, left, waker)
            };
            if let Some(w) = waker {
                exchange.host.relay.wake(w);
            }
            for (fut, message) in pairs {
                if let Ok(msg) = receive_message(py, &message) {
                    resolve(py, [fut], msg.as_any());
                }
            }
            if let Some((left, (code, reason))) = left
                && let Ok(msg) = disconnect_message(py, code, &reason)
            {
                resolve(py, left, msg.as_any());
            }
        }));
    }

    /// Outgoing bytes have gone to the socket: a `send()` waiting on a full
    /// queue goes on once it has drained enough.
    pub(super) fn sent(&self, st: &mut WsState, bytes: usize) {
        st.queued -= bytes;
        if st.queued <= SEND_LOW && !st.send_waiters.is_empty() {
            let waiters = std::mem::take(&mut st.send_waiters);
            self.host.post(Box::new(move |py, _| {
                resolve(py, waiters, &py.None().into_bound(py));
            }));
        }
    }

    fn objects(&self) -> PyResult<&LoopObjects> {
        self.host
            .loop_objects
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("the ASGI loop is not running"))
    }
}

fn disconnect_message<'py>(
    py: Python<'py>,
    code: u16,
    reason: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", "websocket.disconnect")?;
    d.set_item("code", code)?;
    d.set_item("reason", reason)?;
    Ok(d)
}

fn receive_message<'py>(py: Python<'py>, message: &Incoming) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", "websocket.receive")?;
    match message {
        Incoming::Text(t) => d.set_item("text", PyString::new(py, t.as_str()))?,
        Incoming::Binary(b) => d.set_item("bytes", pyo3::types::PyBytes::new(py, b))?,
    }
    Ok(d)
}

fn ready(py: Python<'_>, msg: Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready::new(Some(msg.into_any().unbind())))?.into_any())
}

/// The app's `receive` callable for a WebSocket.
#[pyclass(module = "oxgate")]
pub(super) struct WsReceive {
    exchange: Arc<WsExchange>,
}

impl WsReceive {
    pub(super) fn new(exchange: Arc<WsExchange>) -> WsReceive {
        WsReceive { exchange }
    }
}

#[pymethods]
impl WsReceive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let objects = self.exchange.objects()?;
        let mut st = self.exchange.lock();
        if !st.connected {
            st.connected = true;
            drop(st);
            let d = PyDict::new(py);
            d.set_item("type", "websocket.connect")?;
            return ready(py, d);
        }
        let was_full = st.received.queued() >= INCOMING_MAX;
        if let Some(message) = st.received.take(py) {
            // A full queue had stopped the reading.
            let waker = was_full.then(|| st.waker.take()).flatten();
            drop(st);
            if let Some(w) = waker {
                self.exchange.host.relay.wake(w);
            }
            return ready(py, receive_message(py, &message)?);
        }
        if let Some((code, reason)) = &st.closed {
            let msg = disconnect_message(py, *code, reason)?;
            return ready(py, msg);
        }
        let fut = objects.create_future.call0(py)?;
        st.received.wait(fut.clone_ref(py));
        Ok(fut)
    }
}

/// The app's `send` callable for a WebSocket; `_failed` and `_returned`
/// are called by `run_http` when the app's coroutine ends.
#[pyclass(module = "oxgate")]
pub(super) struct WsSend {
    exchange: Arc<WsExchange>,
    /// "GET /path", for the log.
    line: RequestLine,
    /// The subprotocols the client offers: the app may accept one of them.
    offered: Vec<Vec<u8>>,
}

impl WsSend {
    pub(super) fn new(
        exchange: Arc<WsExchange>,
        line: RequestLine,
        offered: Vec<Vec<u8>>,
    ) -> WsSend {
        WsSend {
            exchange,
            line,
            offered,
        }
    }
}

fn unexpected(kind: &str, when: &str) -> PyErr {
    PyRuntimeError::new_err(format!("Unexpected ASGI message '{kind}' sent, {when}"))
}

#[pymethods]
impl WsSend {
    fn __call__<'py>(&self, py: Python<'py>, message: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let (message, kind) = message_type(message)?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        let objects = self.exchange.objects()?;
        let get = |key: &Bound<'py, PyString>| field(message, key);
        let handshake = match kind {
            "websocket.accept" => {
                let subprotocol = get(pyo3::intern!(py, "subprotocol"))
                    .map(|s| s.extract::<String>())
                    .transpose()
                    .map_err(|_| PyTypeError::new_err("'subprotocol' must be a str"))?;
                // RFC 6455 §4.1: a client fails a handshake that names one
                // it did not offer (wsproto under uvicorn raises too).
                if let Some(p) = &subprotocol
                    && !self.offered.iter().any(|o| o == p.as_bytes())
                {
                    return Err(PyValueError::new_err(format!(
                        "websocket.accept: subprotocol '{p}' is not one the client offered"
                    )));
                }
                let headers = match get(pyo3::intern!(py, "headers")) {
                    Some(h) => parse_headers(&h)?,
                    None => Vec::new(),
                };
                Some(Handshake::Accept {
                    subprotocol,
                    headers,
                })
            }
            "websocket.http.response.start" => Some(Handshake::Deny(parse_start(message)?)),
            "websocket.close" if !self.exchange.lock().decided => Some(Handshake::Refuse),
            _ => None,
        };
        if let Some(h) = handshake {
            return self.exchange.update(|st| {
                if st.decided {
                    return Err(unexpected(kind, "after the handshake was answered"));
                }
                st.decided = true;
                st.accepted = matches!(h, Handshake::Accept { .. });
                // A refusal is whole; a denial's body is still to come.
                st.deny_complete = matches!(h, Handshake::Refuse);
                st.handshake = Some(h);
                Ok(objects.ready.clone_ref(py).into_any())
            });
        }
        match kind {
            "websocket.http.response.body" => {
                let body = match get(pyo3::intern!(py, "body")) {
                    Some(b) => bytes_of(&b, "'body' of websocket.http.response.body")?,
                    None => Bytes::new(),
                };
                let more =
                    get(pyo3::intern!(py, "more_body")).map_or(Ok(false), |m| m.is_truthy())?;
                self.exchange.update(|st| {
                    if !st.decided || st.accepted || st.deny_complete {
                        return Err(unexpected(kind, "without a response started"));
                    }
                    st.deny_body.push(body);
                    st.deny_complete = !more;
                    Ok(())
                })?;
            }
            "websocket.send" => {
                let message = match (
                    get(pyo3::intern!(py, "bytes")),
                    get(pyo3::intern!(py, "text")),
                ) {
                    (Some(b), None) => Message::Binary(bytes_of(&b, "'bytes' of websocket.send")?),
                    (None, Some(t)) => {
                        let t = t
                            .cast::<PyString>()
                            .map_err(|_| PyTypeError::new_err("'text' must be a str"))?;
                        Message::Text(Utf8Bytes::from(t.to_str()?))
                    }
                    _ => {
                        return Err(PyValueError::new_err(
                            "websocket.send needs exactly one of 'bytes' and 'text'",
                        ));
                    }
                };
                let wait = self.exchange.update(|st| {
                    if !st.accepted {
                        return Err(unexpected(kind, "before 'websocket.accept'"));
                    }
                    if st.app_closed {
                        return Err(unexpected(kind, "after 'websocket.close'"));
                    }
                    if st.closed.is_some() {
                        return Err(PyOSError::new_err("the WebSocket is closed"));
                    }
                    st.queued += message.len();
                    st.outgoing.push_back(message);
                    if st.queued > SEND_HIGH {
                        let fut = objects.create_future.call0(py)?;
                        st.send_waiters.push(fut.clone_ref(py));
                        return Ok(Some(fut));
                    }
                    Ok(None)
                })?;
                if let Some(fut) = wait {
                    return Ok(fut);
                }
            }
            "websocket.close" => {
                // Any int, said to be out of range below when it is (70000
                // is an int, not a TypeError).
                let code: i64 = match get(pyo3::intern!(py, "code")) {
                    Some(c) => c
                        .extract()
                        .map_err(|_| PyTypeError::new_err("'code' must be an int"))?,
                    None => 1000,
                };
                let reason: String = match get(pyo3::intern!(py, "reason")) {
                    Some(r) => r
                        .extract()
                        .map_err(|_| PyTypeError::new_err("'reason' must be a str"))?,
                    None => String::new(),
                };
                // What goes on the wire must be a close frame a client
                // takes (RFC 6455 §7.4.1, §5.5): 1005, 1006 and 1015 are
                // never sent, and the reason fits a control frame. A
                // browser fails the socket otherwise, and the app's code
                // and reason are lost; uvicorn raises here too.
                let code: u16 = match code {
                    1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
                    _ => {
                        return Err(PyValueError::new_err(format!(
                            "WebSocket close code {code} may not be sent (RFC 6455 §7.4)"
                        )));
                    }
                };
                if reason.len() > 123 {
                    return Err(PyValueError::new_err(format!(
                        "WebSocket close reason of {} bytes: at most 123 fit a close frame",
                        reason.len()
                    )));
                }
                self.exchange.update(|st| {
                    if st.app_closed {
                        return Err(unexpected(kind, "after 'websocket.close'"));
                    }
                    if !st.accepted {
                        return Err(unexpected(kind, "after an HTTP response"));
                    }
                    st.app_closed = true;
                    // Closing a socket the client closed already is a no-op.
                    if st.closed.is_none() {
                        st.outgoing.push_back(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: Utf8Bytes::from(reason.as_str()),
                        })));
                    }
                    Ok(())
                })?;
                self.exchange.close(code, &reason);
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent, for a WebSocket"
                )));
            }
        }
        Ok(objects.ready.clone_ref(py).into_any())
    }

    fn _failed(&self, py: Python<'_>, error: &Bound<'_, PyAny>) {
        let (client_left, closed, accepted) = {
            let st = self.exchange.lock();
            (
                st.closed.is_some() && !st.app_closed,
                st.closed.clone(),
                st.accepted,
            )
        };
        // After the client left, a send() raises OSError: that is no news.
        // Any other error is the app's, logged (a bug in its clean-up).
        if !(client_left && error.is_instance_of::<PyOSError>()) {
            let cancelled = super::exchange::is_cancellation(error);
            // Said as it is: a socket closed already is not closed again.
            let when = match (&closed, accepted) {
                (_, false) => "WebSocket handshake".to_string(),
                (Some((code, _)), _) if cancelled => {
                    format!("WebSocket, closed with {code}; the app's task was cancelled")
                }
                (Some((code, _)), _) => format!("WebSocket, after it closed with {code}"),
                (None, true) => "WebSocket; it is closed with 1011".to_string(),
            };
            log_app_error(
                &self.exchange.host,
                py,
                error,
                format!("{} ({when})", self.line),
            );
        }
        self.exchange.ended(AppEnd::Failed);
    }

    fn _returned(&self) {
        let (decided, denied_incomplete) = {
            let st = self.exchange.lock();
            (st.decided, st.decided && !st.accepted && !st.deny_complete)
        };
        if !decided || denied_incomplete {
            crate::say!(
                "oxgate: error in {}: the ASGI app returned without {} the WebSocket handshake",
                self.line,
                if decided {
                    "completing its answer to"
                } else {
                    "answering"
                }
            );
        }
        self.exchange.ended(AppEnd::Returned);
    }
}
