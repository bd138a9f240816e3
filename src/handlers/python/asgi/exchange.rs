//! What one request's two sides share: the response the app sends (taken
//! by the connection's task), the request body the app asks for (pumped by
//! that task), and the app's `receive` and `send` callables.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

use super::super::buffers::to_bytes;
use super::super::traceback::log_app_exception;
use super::host::{AsgiHost, LoopObjects};
use super::mailbox::{Mailbox, is_done};
use super::ready::Ready;
use super::scope::RequestLine;
use crate::request::{EarlyHints, FileRegion, declared_length, early_hints_fault, is_token_byte};

/// Bytes queued for the client before `send()` makes the app wait (HTTP
/// bodies and WebSocket messages alike): a slow client does not make the
/// worker buffer without bound.
pub(super) const SEND_HIGH: usize = 256 * 1024;
/// Queued bytes below which a waiting `send()` goes on.
pub(super) const SEND_LOW: usize = 64 * 1024;

/// Leaves the connection task's waker where the loop thread finds it,
/// unless the one there already wakes the same task.
pub(super) fn keep_waker(slot: &mut Option<Waker>, cx: &std::task::Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// The status and headers of `http.response.start`, validated.
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) headers: Vec<(Bytes, Bytes)>,
}

/// How the app's coroutine ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum AppEnd {
    Returned,
    Failed,
}

#[derive(Default)]
pub(super) struct State {
    /// `http.response.start`, until the connection takes it.
    pub(super) head: Option<Head>,
    pub(super) started: bool,
    pub(super) chunks: VecDeque<Bytes>,
    pub(super) queued: usize,
    /// The last body message (`more_body` false) was sent.
    pub(super) complete: bool,
    /// Files to send (`http.response.pathsend`, which ends the body, and
    /// `http.response.zerocopysend`), each after the number of chunks
    /// pushed before it.
    pub(super) files: VecDeque<(u64, FileRegion)>,
    /// `trailers: True` in `http.response.start`: the body is followed by
    /// `http.response.trailers`, whose fields gather here until the last.
    pub(super) trailers_wanted: bool,
    pub(super) trailers: Vec<(Bytes, Bytes)>,
    pub(super) trailers_done: bool,
    /// Chunks pushed into `chunks`, and taken from it, so far: a file goes
    /// out once the chunks before it have.
    pub(super) pushed: u64,
    pub(super) taken: u64,
    pub(super) end: Option<AppEnd>,
    /// The app's asyncio task, until it ends. asyncio holds its tasks
    /// weakly: a task waiting on a future that nothing else holds would be
    /// collected mid-request (uvicorn keeps its tasks in a set for this).
    pub(super) task: Option<Py<PyAny>>,
    /// The connection's task, waiting for the app.
    pub(super) waker: Option<Waker>,
    /// `send()` calls waiting for the queue to drain.
    pub(super) send_waiters: Vec<Py<PyAny>>,
    /// Body chunks (or the client's disconnect) read for `receive()`, and
    /// the calls waiting for them.
    pub(super) received: Mailbox<Settlement>,
    /// A `receive()` waits for body bytes still to be read.
    pub(super) body_wanted: bool,
    /// The whole request body has been handed to the app.
    pub(super) body_done: bool,
    /// The server is done with the request: the response was sent, or the
    /// client left. `receive()` then says `http.disconnect`.
    pub(super) gone: bool,
    /// The final head went to the front end (or the server answered in
    /// the app's stead): a 103 now would come after it.
    pub(super) head_out: bool,
    /// The app's task went on to wait for something else after its head,
    /// with no body sent (an event stream before its first event): the
    /// head goes out alone.
    pub(super) head_alone: bool,
    /// The body bytes the head's Content-Length still promises, for a
    /// response that has a body (not a HEAD's, a 204's or a 304's).
    pub(super) length_left: Option<u64>,
}

pub(super) struct Exchange {
    pub(super) host: Arc<AsgiHost>,
    /// Where 103 Early Hints go, when the front end can send them.
    pub(super) early_hints: Option<Arc<dyn EarlyHints>>,
    /// A HEAD's response: its Content-Length is the length a GET would
    /// have, and any body is dropped.
    is_head: bool,
    state: Mutex<State>,
}

impl Exchange {
    pub(super) fn new(
        host: Arc<AsgiHost>,
        body_done: bool,
        early_hints: Option<Arc<dyn EarlyHints>>,
        is_head: bool,
    ) -> Exchange {
        Exchange {
            host,
            early_hints,
            is_head,
            state: Mutex::new(State {
                body_done,
                ..State::default()
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records how the app ended and wakes the connection.
    pub(super) fn ended(&self, how: AppEnd) {
        let (waker, _task) = {
            let mut st = self.lock();
            st.end = Some(how);
            (st.waker.take(), st.task.take())
        };
        if let Some(w) = waker {
            self.host.relay.wake(w);
        }
    }

    /// Marks a head the app's task left without body for going out alone,
    /// and wakes the connection for it.
    fn head_alone_if_bodiless(&self) {
        let waker = {
            let mut st = self.lock();
            let bodiless = st.head.is_some()
                && st.chunks.is_empty()
                && st.files.is_empty()
                && !st.complete
                && st.end.is_none();
            if !bodiless {
                return;
            }
            st.head_alone = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            self.host.relay.wake(w);
        }
    }

    fn objects(&self) -> PyResult<&LoopObjects> {
        self.host
            .loop_objects
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("the ASGI loop is not running"))
    }
}

/// The message `receive()` gives once the request is over.
pub(super) fn disconnect_message(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", "http.disconnect")?;
    Ok(d)
}

pub(super) fn body_message<'py>(
    py: Python<'py>,
    body: &[u8],
    more: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", "http.request")?;
    d.set_item("body", PyBytes::new(py, body))?;
    d.set_item("more_body", more)?;
    Ok(d)
}

/// The app's `receive` callable.
#[pyclass(module = "oxgate")]
pub(super) struct Receive {
    exchange: Arc<Exchange>,
    /// The request body when it was read whole before the call.
    whole: Option<Bytes>,
}

impl Receive {
    pub(super) fn new(exchange: Arc<Exchange>, whole: Option<Bytes>) -> Receive {
        Receive { exchange, whole }
    }
}

#[pymethods]
impl Receive {
    fn __call__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(body) = self.whole.take() {
            let msg = body_message(py, &body, false)?;
            return Ok(Py::new(py, Ready::new(Some(msg.into_any().unbind())))?.into_any());
        }
        let objects = self.exchange.objects()?;
        let mut st = self.exchange.lock();
        if let Some(message) = st.received.take(py) {
            drop(st);
            let msg = received_message(py, message)?;
            return Ok(Py::new(py, Ready::new(Some(msg.unbind())))?.into_any());
        }
        if st.gone {
            drop(st);
            let msg = disconnect_message(py)?;
            return Ok(Py::new(py, Ready::new(Some(msg.into_any().unbind())))?.into_any());
        }
        let fut = objects.create_future.call0(py)?;
        st.received.wait(fut.clone_ref(py));
        if !st.body_done {
            st.body_wanted = true;
        }
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            self.exchange.host.relay.wake(w);
        }
        Ok(fut)
    }
}

/// The app's `send` callable; `_failed` and `_returned` are called by
/// `run_http` when the app's coroutine ends.
#[pyclass(module = "oxgate")]
pub(super) struct Send {
    exchange: Arc<Exchange>,
    /// "METHOD /uri", for the log.
    line: RequestLine,
}

impl Send {
    pub(super) fn new(exchange: Arc<Exchange>, line: RequestLine) -> Send {
        Send { exchange, line }
    }
}

/// The message as a dict, and its `type`.
pub(super) fn message_type<'a, 'py>(
    message: &'a Bound<'py, PyAny>,
) -> PyResult<(&'a Bound<'py, PyDict>, Bound<'py, PyAny>)> {
    let dict = message.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!(
            "an ASGI message must be a dict, not {}",
            message
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let kind = dict
        .get_item(pyo3::intern!(message.py(), "type"))?
        .ok_or_else(|| PyValueError::new_err("the ASGI message has no 'type'"))?;
    Ok((dict, kind))
}

/// A message's field, absent or None alike (a dict lookup that raises
/// nothing when the key is missing: most messages leave fields out).
/// Hot paths pass a key made once (`intern!`), not a `&str` that would
/// be a new Python string on each lookup.
pub(super) fn field<'py, K: IntoPyObject<'py>>(
    message: &Bound<'py, PyDict>,
    key: K,
) -> Option<Bound<'py, PyAny>> {
    message
        .get_item(key)
        .ok()
        .flatten()
        .filter(|v| !v.is_none())
}

#[pymethods]
impl Send {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let (message, kind) = message_type(message)?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        let objects = self.exchange.objects()?;
        match kind {
            "http.response.start" => {
                let head = parse_start(message)?;
                let wants_trailers = field(message, pyo3::intern!(message.py(), "trailers"))
                    .map_or(Ok(false), |t| t.is_truthy())?;
                let mut st = self.exchange.lock();
                if st.started {
                    return Err(PyRuntimeError::new_err(
                        "Expected ASGI message 'http.response.body', but got 'http.response.start'",
                    ));
                }
                // Without a length, the body may be long in coming (an event
                // stream, a long poll): once the task's step is over (the
                // loop's next turn), a head still without body goes out
                // alone, as uvicorn sends it at once; one the step follows
                // with its body goes with it. (With a length, the body is
                // at hand: no check.) Where 103s are offered, an app may
                // send them after its head until its first body bytes (the
                // extension's contract): its head waits then, but for an
                // event stream's, which no hint precedes.
                let declared = declared_length(&head.headers);
                let lengthless = declared.is_none()
                    && (self.exchange.early_hints.is_none() || is_event_stream(&head.headers));
                st.started = true;
                st.length_left = declared
                    .filter(|_| !self.exchange.is_head && !matches!(head.status, 204 | 304));
                st.head = Some(head);
                st.trailers_wanted = wants_trailers;
                drop(st);
                if lengthless {
                    let exchange = self.exchange.clone();
                    let check = pyo3::types::PyCFunction::new_closure(
                        py,
                        None,
                        None,
                        move |_args, _kwargs| -> PyResult<()> {
                            exchange.head_alone_if_bodiless();
                            Ok(())
                        },
                    )?;
                    objects
                        .event_loop
                        .bind(py)
                        .call_method1(pyo3::intern!(py, "call_soon"), (check,))?;
                }
            }
            "http.response.body" => {
                let body = match field(message, pyo3::intern!(message.py(), "body")) {
                    Some(b) => bytes_of(&b, "'body' of http.response.body")?,
                    None => Bytes::new(),
                };
                let more = field(message, pyo3::intern!(message.py(), "more_body"))
                    .map_or(Ok(false), |m| m.is_truthy())?;
                let (waker, wait) = {
                    let mut st = self.exchange.lock();
                    if !st.started {
                        return Err(PyRuntimeError::new_err(
                            "Expected ASGI message 'http.response.start', but got 'http.response.body'",
                        ));
                    }
                    if st.complete {
                        return Err(PyRuntimeError::new_err(
                            "Unexpected ASGI message 'http.response.body' sent, after response already completed",
                        ));
                    }
                    // (Before the client's leaving: a body past its length
                    // is the app's error whether or not it could be sent.)
                    take_from_length(&mut st, body.len() as u64, more, false)?;
                    if st.gone && self.exchange.is_head {
                        // A HEAD's body is never sent (its stream was let
                        // go of with the head): the app's body is taken and
                        // dropped, as uvicorn takes it, not failed as if
                        // the client had left (Starlette logged each HEAD
                        // of a stream as a ClientDisconnect).
                        st.complete = !more;
                        return Ok(objects.ready.clone_ref(py).into_any());
                    }
                    if st.gone {
                        return failing_later(py, objects);
                    }
                    if !body.is_empty() {
                        st.queued += body.len();
                        st.chunks.push_back(body);
                        st.pushed += 1;
                    }
                    st.complete = !more;
                    let wait = if more && st.queued > SEND_HIGH {
                        Some(send_waiter(py, objects, &mut st)?)
                    } else {
                        None
                    };
                    (st.waker.take(), wait)
                };
                if let Some(w) = waker {
                    self.exchange.host.relay.wake(w);
                }
                if let Some(fut) = wait {
                    return Ok(fut);
                }
            }
            "http.response.early_hint" => {
                // Ignored where it cannot be sent (the spec allows it):
                // not offered here, or too late, since the response's own
                // head is on its way.
                let Some(hints) = &self.exchange.early_hints else {
                    return Ok(objects.ready.clone_ref(py).into_any());
                };
                let links = field(message, pyo3::intern!(message.py(), "links"))
                    .ok_or_else(|| {
                        PyValueError::new_err("http.response.early_hint has no 'links'")
                    })?
                    .try_iter()?
                    .map(|l| bytes_of(&l?, "each of the 'links' of http.response.early_hint"))
                    .collect::<PyResult<Vec<Bytes>>>()?;
                if let Some(why) = early_hints_fault(&links) {
                    return Err(PyValueError::new_err(format!(
                        "invalid http.response.early_hint: {why}"
                    )));
                }
                let st = self.exchange.lock();
                if !links.is_empty() && !st.head_out && !st.gone {
                    // Under the lock: the head is not taken meanwhile.
                    hints.send(&links);
                }
            }
            "http.response.pathsend" => {
                let path: std::path::PathBuf = field(message, pyo3::intern!(message.py(), "path"))
                    .and_then(|p| p.extract().ok())
                    .ok_or_else(|| {
                        PyTypeError::new_err("'path' of http.response.pathsend must be a str")
                    })?;
                // An open and a stat, as the app's own open() would do.
                let file = std::fs::File::open(&path)?;
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(PyValueError::new_err(format!(
                        "'path' of http.response.pathsend must name a regular file: {}",
                        path.display()
                    )));
                }
                let len = meta.len();
                let region = FileRegion {
                    fd: file.into(),
                    offset: 0,
                    len,
                };
                if let Some(wait) = self.queue_file(py, "pathsend", region, false)? {
                    return Ok(wait);
                }
            }
            "http.response.trailers" => {
                let fields = match field(message, pyo3::intern!(message.py(), "headers")) {
                    Some(list) => parse_headers(&list)?,
                    None => Vec::new(),
                };
                let more = field(message, pyo3::intern!(message.py(), "more_trailers"))
                    .map_or(Ok(false), |m| m.is_truthy())?;
                let waker = {
                    let mut st = self.exchange.lock();
                    if !st.trailers_wanted || st.trailers_done {
                        return Err(PyRuntimeError::new_err(
                            "Unexpected ASGI message 'http.response.trailers' sent: http.response.start did not say trailers, or they were complete",
                        ));
                    }
                    if !st.complete {
                        return Err(PyRuntimeError::new_err(
                            "Expected ASGI message 'http.response.body' with more_body False before 'http.response.trailers'",
                        ));
                    }
                    // Where trailers cannot go (a gateway protocol, or the
                    // client left), they are dropped.
                    st.trailers.extend(fields);
                    st.trailers_done = !more;
                    st.waker.take()
                };
                if let Some(w) = waker {
                    self.exchange.host.relay.wake(w);
                }
            }
            "http.response.zerocopysend" => {
                let region = zerocopy_region(message)?;
                let more = field(message, pyo3::intern!(message.py(), "more_body"))
                    .map_or(Ok(false), |m| m.is_truthy())?;
                if let Some(wait) = self.queue_file(py, "zerocopysend", region, more)? {
                    return Ok(wait);
                }
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' sent, for an HTTP request"
                )));
            }
        }
        Ok(objects.ready.clone_ref(py).into_any())
    }

    fn _failed(&self, py: Python<'_>, error: &Bound<'_, PyAny>) {
        let (gone, started, complete, held) = {
            let st = self.exchange.lock();
            // A head with nothing after it is still held: the client is
            // answered 500 in its stead (`Driver::poll_head`), no cut.
            let held = st.started
                && !st.head_out
                && !st.head_alone
                && st.chunks.is_empty()
                && st.files.is_empty();
            (st.gone, st.started, st.complete, held)
        };
        // After the client left mid-response, a send() raises OSError (ASGI
        // 2.4) and a task may be cancelled: an app that lets either out says
        // nothing new. Any other error is the app's own, and logged, as
        // uvicorn logs it: cleanup code after a disconnect has bugs too.
        let about_the_client =
            gone && !complete && (over_a_send_error(error) || is_cancellation(error));
        if !about_the_client {
            let when = if complete {
                " (after its response was sent)"
            } else if gone {
                " (after the client left)"
            } else if held {
                " (after the response started, before any of it was sent: answered 500)"
            } else if started {
                " (after the response started; the connection is cut)"
            } else {
                ""
            };
            log_app_error(
                &self.exchange.host,
                py,
                error,
                format!("{}{when}", self.line),
            );
        }
        self.exchange.ended(AppEnd::Failed);
    }

    fn _returned(&self) {
        let (gone, started, complete, trailers_left) = {
            let st = self.exchange.lock();
            (
                st.gone,
                st.started,
                st.complete,
                st.trailers_wanted && !st.trailers_done,
            )
        };
        if !gone && !complete {
            crate::say!(
                "oxgate: error in {}: the ASGI app returned without {} its response",
                self.line,
                if started { "completing" } else { "starting" }
            );
        } else if !gone && trailers_left {
            crate::say!(
                "oxgate: error in {}: the ASGI app returned without completing its trailers",
                self.line
            );
        }
        self.exchange.ended(AppEnd::Returned);
    }
}

/// Logs an exception the app raised, with its traceback; `what` says
/// which request, and when.
pub(super) fn log_app_error(
    host: &AsgiHost,
    py: Python<'_>,
    error: &Bound<'_, PyAny>,
    what: String,
) {
    log_app_exception(py, &host.helpers.exception_text, error, what);
}

/// The bytes of a message's bytes (or bytearray) value.
pub(super) fn bytes_of(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    if let Ok(b) = value.cast::<PyBytes>() {
        Ok(to_bytes(b))
    } else if let Ok(b) = value.cast::<PyByteArray>() {
        Ok(Bytes::from(b.to_vec()))
    } else if value.is_instance_of::<pyo3::types::PyMemoryView>() {
        // Not in the spec's words, but uvicorn and Granian take a
        // memoryview, and apps that slice a buffer pass one.
        let view = pyo3::buffer::PyBuffer::<u8>::get(value)?;
        Ok(Bytes::from(view.to_vec(value.py())?))
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be bytes, not {}",
            value.get_type().name()?
        )))
    }
}

/// Validates `http.response.start`.
pub(super) fn parse_start(message: &Bound<'_, PyDict>) -> PyResult<Head> {
    let status: u16 = field(message, pyo3::intern!(message.py(), "status"))
        .ok_or_else(|| PyValueError::new_err("http.response.start has no 'status'"))?
        .extract()
        .map_err(|_| PyTypeError::new_err("'status' of http.response.start must be an int"))?;
    if !(200..=999).contains(&status) {
        return Err(PyValueError::new_err(format!(
            "invalid status {status} in http.response.start"
        )));
    }
    let headers = match field(message, pyo3::intern!(message.py(), "headers")) {
        Some(list) => parse_headers(&list)?,
        None => Vec::new(),
    };
    Ok(Head { status, headers })
}

/// Validates a message's `headers`: `[name, value]` pairs of bytes. Those
/// the front end manages (framing, the connection) are dropped.
pub(super) fn parse_headers(list: &Bound<'_, PyAny>) -> PyResult<Vec<(Bytes, Bytes)>> {
    let mut headers = Vec::with_capacity(list.len().unwrap_or(0));
    for item in list.try_iter()? {
        let item = item?;
        let (name, value) = header_pair(&item)?;
        let name = header_bytes(&name, "name")?;
        let value = header_bytes(&value, "value")?;
        if name.is_empty() || !name.iter().copied().all(is_token_byte) {
            return Err(PyValueError::new_err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(PyValueError::new_err(format!(
                "value of header {:?} contains a control character",
                String::from_utf8_lossy(&name)
            )));
        }
        // The length frames the message on a kept-alive connection: one
        // that is not a number, or two that differ, would have the client
        // read the next response as this one's body (WSGI refuses them
        // the same way).
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = crate::request::cgi::content_length(&value) else {
                return Err(PyValueError::new_err(format!(
                    "invalid content-length {:?}",
                    String::from_utf8_lossy(&value)
                )));
            };
            let earlier = headers
                .iter()
                .find(|(k, _): &&(Bytes, Bytes)| k.eq_ignore_ascii_case(b"content-length"));
            if let Some((_, v)) = earlier {
                if crate::request::cgi::content_length(v) != Some(n) {
                    return Err(PyValueError::new_err(
                        "two content-length headers that differ",
                    ));
                }
                continue;
            }
        }
        // The front end frames the message and manages the connection;
        // but an app that says `Connection: close` (to shed load, or to
        // drain keep-alive clients before a deploy) has the connection
        // closed after the response, as uvicorn and hypercorn close it.
        if name.eq_ignore_ascii_case(b"connection") {
            let close = value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
            if close
                && !headers
                    .iter()
                    .any(|(k, _): &(Bytes, Bytes)| k.eq_ignore_ascii_case(b"connection"))
            {
                headers.push((
                    Bytes::from_static(b"connection"),
                    Bytes::from_static(b"close"),
                ));
            }
            continue;
        }
        if [&b"transfer-encoding"[..], b"keep-alive"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&name))
        {
            continue;
        }
        headers.push((Bytes::from(name), Bytes::from(value)));
    }
    Ok(headers)
}

/// A header's `[name, value]`: a tuple or a list read in place, any
/// other iterable of two read through.
fn header_pair<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let not_a_pair = || PyValueError::new_err("each header must be a [name, value] pair of bytes");
    if let Ok(t) = item.cast::<PyTuple>() {
        return match t.len() {
            2 => Ok((t.get_item(0)?, t.get_item(1)?)),
            _ => Err(not_a_pair()),
        };
    }
    if let Ok(l) = item.cast::<PyList>() {
        return match l.len() {
            2 => Ok((l.get_item(0)?, l.get_item(1)?)),
            _ => Err(not_a_pair()),
        };
    }
    let mut pair = item.try_iter()?;
    let (Some(name), Some(value), None) = (pair.next(), pair.next(), pair.next()) else {
        return Err(not_a_pair());
    };
    Ok((name?, value?))
}

fn header_bytes(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "header {what} must be bytes, not {}",
        v.get_type().name()?
    )))
}

/// What a future the app awaits is resolved with.
pub(super) enum Settlement {
    Body(Bytes, bool),
    Disconnect,
    Nothing,
}

/// What `receive()` gives for a settlement.
fn received_message(py: Python<'_>, settlement: Settlement) -> PyResult<Bound<'_, PyAny>> {
    match settlement {
        Settlement::Body(b, more) => body_message(py, &b, more).map(|d| d.into_any()),
        Settlement::Disconnect => disconnect_message(py).map(|d| d.into_any()),
        Settlement::Nothing => Ok(py.None().into_bound(py)),
    }
}

/// Resolves futures the app awaits (`receive()`, a waiting `send()`), on
/// the loop thread.
pub(super) fn settle(
    py: Python<'_>,
    waiters: impl IntoIterator<Item = Py<PyAny>>,
    settlement: Settlement,
) {
    let Ok(value) = received_message(py, settlement) else {
        return;
    };
    resolve(py, waiters, &value);
}

/// Hands what the client sent to the `receive()` calls waiting for it, on
/// the loop thread (see `mailbox`). Calls left waiting get the disconnect
/// once the request is over, or make the connection read on.
pub(super) fn post_received(exchange: &Arc<Exchange>) {
    let exchange = exchange.clone();
    exchange.host.clone().post(Box::new(move |py, _| {
        let (pairs, left, waker) = {
            let mut st = exchange.lock();
            let pairs = st.received.pair(py);
            let (mut left, mut waker) = (None, None);
            if st.received.waits_in_vain() {
                if st.gone {
                    left = Some(st.received.take_waiters());
                } else if !st.body_done && !st.body_wanted {
                    st.body_wanted = true;
                    waker = st.waker.take();
                }
            }
            (pairs, left, waker)
        };
        if let Some(w) = waker {
            exchange.host.relay.wake(w);
        }
        for (fut, message) in pairs {
            settle(py, [fut], message);
        }
        if let Some(left) = left {
            settle(py, left, Settlement::Disconnect);
        }
    }));
}

/// Sets the result of each future the app still awaits.
pub(super) fn resolve(
    py: Python<'_>,
    waiters: impl IntoIterator<Item = Py<PyAny>>,
    value: &Bound<'_, PyAny>,
) {
    for fut in waiters {
        // A future the app cancelled (a timeout) is done already.
        if !is_done(py, &fut) {
            let _ = fut.bind(py).call_method1("set_result", (value,));
        }
    }
}

/// Hands `settle` to the loop thread.
pub(super) fn post_settle(host: &AsgiHost, waiters: Vec<Py<PyAny>>, settlement: Settlement) {
    host.post(Box::new(move |py, _| settle(py, waiters, settlement)));
}

/// Loop turns between a `send()` made after the client left and its
/// OSError (spec 2.4's "server-specific subclass of OSError"). An app that
/// awaits `receive()` for the disconnect beside its sender hears it first:
/// Django's handler waits for either task (`asyncio.wait`,
/// FIRST_COMPLETED) and cancels the sender, which then ends cancelled, as
/// Django expects, and runs `response.close()` and `request_finished`.
/// Failed at once, the sender ended in the same turn as the listener, and
/// Django skipped both (a FileResponse's file stayed open). Django's
/// cancel comes three turns after the disconnect: the listener ends,
/// `asyncio.wait`'s callback runs, the handler wakes.
const GONE_TURNS: u32 = 4;

/// What `send()` returns once the client has gone: a future that fails
/// with OSError `GONE_TURNS` loop turns from now.
fn failing_later(py: Python<'_>, objects: &LoopObjects) -> PyResult<Py<PyAny>> {
    let fut = objects.create_future.call0(py)?;
    fail_after(
        py,
        objects.event_loop.bind(py),
        fut.clone_ref(py),
        GONE_TURNS,
    )?;
    Ok(fut)
}

fn fail_after(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    fut: Py<PyAny>,
    turns: u32,
) -> PyResult<()> {
    let next_loop = event_loop.clone().unbind();
    // (A closure Python may call more than once: it takes the future.)
    let fut = std::sync::Mutex::new(Some(fut));
    let step = pyo3::types::PyCFunction::new_closure(
        py,
        None,
        None,
        move |args, _kwargs| -> PyResult<()> {
            let py = args.py();
            let Some(fut) = fut.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return Ok(());
            };
            if turns > 1 {
                return fail_after(py, next_loop.bind(py), fut, turns - 1);
            }
            let fut = fut.bind(py);
            // Cancelled meanwhile (the app gave up on it): nothing to say.
            if !fut.call_method0(pyo3::intern!(py, "done"))?.is_truthy()? {
                let error = PyOSError::new_err("the client disconnected");
                fut.call_method1(pyo3::intern!(py, "set_exception"), (error.value(py),))?;
            }
            Ok(())
        },
    )?;
    event_loop.call_method1(pyo3::intern!(py, "call_soon"), (step,))?;
    Ok(())
}

/// A future for a `send()` to wait on until the queue has drained.
fn send_waiter(py: Python<'_>, objects: &LoopObjects, st: &mut State) -> PyResult<Py<PyAny>> {
    let fut = objects.create_future.call0(py)?;
    st.send_waiters.push(fut.clone_ref(py));
    Ok(fut)
}

/// Files queued (`http.response.zerocopysend` with more to come) past
/// which `send()` waits: each holds a descriptor.
const FILES_HIGH: usize = 8;

impl Send {
    /// Queues a file after the chunks sent so far; a `send()` to wait on
    /// when many are queued already.
    fn queue_file(
        &self,
        py: Python<'_>,
        what: &str,
        region: FileRegion,
        more: bool,
    ) -> PyResult<Option<Py<PyAny>>> {
        let objects = self.exchange.objects()?;
        let (waker, wait) = {
            let mut st = self.exchange.lock();
            if !st.started {
                return Err(PyRuntimeError::new_err(format!(
                    "Expected ASGI message 'http.response.start', but got 'http.response.{what}'"
                )));
            }
            if st.complete {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message 'http.response.{what}' sent, after response already completed"
                )));
            }
            take_from_length(&mut st, region.len, more, true)?;
            if st.gone && self.exchange.is_head {
                st.complete = !more; // a HEAD's body: dropped (see the body's)
                return Ok(None);
            }
            if st.gone {
                return failing_later(py, objects).map(Some);
            }
            let after = st.pushed;
            st.files.push_back((after, region));
            st.complete = !more;
            let wait = if more && st.files.len() > FILES_HIGH {
                Some(send_waiter(py, objects, &mut st)?)
            } else {
                None
            };
            (st.waker.take(), wait)
        };
        if let Some(w) = waker {
            self.exchange.host.relay.wake(w);
        }
        Ok(wait)
    }
}

/// The part of the app's file that `http.response.zerocopysend` names:
/// from `offset` (else the file's position) for `count` bytes (else to
/// its end), on a descriptor of our own, since the app may close its file
/// once `send()` returns.
fn zerocopy_region(message: &Bound<'_, PyDict>) -> PyResult<FileRegion> {
    let file_object = field(message, pyo3::intern!(message.py(), "file"))
        .ok_or_else(|| PyTypeError::new_err("'file' of http.response.zerocopysend is required"))?;
    // A file object's position is its own (a buffered one has read
    // ahead of it); a bare descriptor's is the system's.
    let (fd, position): (i32, Option<u64>) = match file_object.extract() {
        Ok(fd) => (fd, None),
        Err(_) => (
            file_object.call_method0("fileno")?.extract()?,
            Some(file_object.call_method0("tell")?.extract()?),
        ),
    };
    let number = |key: &str| -> PyResult<Option<u64>> {
        field(message, key)
            .map(|v| {
                v.extract::<u64>().map_err(|_| {
                    PyValueError::new_err(format!(
                        "'{key}' of http.response.zerocopysend must be a non-negative int"
                    ))
                })
            })
            .transpose()
    };
    let (offset, count) = (number("offset")?, number("count")?);
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only reads the number it is given
    // (EBADF when it is no open descriptor) and returns a new descriptor,
    // which nothing else owns.
    let ours = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if ours < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: as above; F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(ours, libc::F_GETFL) };
    // SAFETY: `ours` was just made by fcntl, and is owned here alone.
    let ours = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ours) };
    let file = std::fs::File::from(ours);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(PyValueError::new_err(
            "'file' of http.response.zerocopysend must be a regular file (sendfile reads one)",
        ));
    }
    if flags < 0 || flags & libc::O_PATH != 0 || flags & libc::O_ACCMODE == libc::O_WRONLY {
        return Err(PyValueError::new_err(
            "'file' of http.response.zerocopysend must be open for reading",
        ));
    }
    let from_position = offset.is_none();
    let offset = match offset.or(position) {
        Some(o) => o,
        None => std::io::Seek::stream_position(&mut &file)?,
    };
    let len = meta.len().saturating_sub(offset);
    let len = count.map_or(len, |c| c.min(len));
    // From the file's position, the position moves past what is sent, as
    // sendfile(2)'s does with no offset: the next send goes on from there
    // (it sent the same bytes again). Our descriptor shares the app's
    // position; a file object's own is told.
    if from_position {
        match position {
            Some(_) => {
                file_object.call_method1(pyo3::intern!(message.py(), "seek"), (offset + len,))?;
            }
            None => {
                std::io::Seek::seek(&mut &file, std::io::SeekFrom::Start(offset + len))?;
            }
        }
    }
    Ok(FileRegion {
        fd: file.into(),
        offset,
        len,
    })
}

/// Counts `len` body bytes against the head's Content-Length: more than
/// it says, or a last message that leaves it short, is the app's error
/// (uvicorn's words), raised before anything of it is queued, so that the
/// client gets a 500 or a cut connection, never a body out of step. A
/// file's region is `clipped` instead: sent up to the length (the app
/// names a file, whose size it may not know, rather than its bytes).
fn take_from_length(st: &mut State, len: u64, more: bool, clipped: bool) -> PyResult<()> {
    let Some(left) = &mut st.length_left else {
        return Ok(());
    };
    let len = if clipped { len.min(*left) } else { len };
    if len > *left {
        return Err(PyRuntimeError::new_err(
            "Response content longer than Content-Length",
        ));
    }
    if !more && len < *left {
        return Err(PyRuntimeError::new_err(
            "Response content shorter than Content-Length",
        ));
    }
    *left -= len;
    Ok(())
}

/// Whether a head's content-type is `text/event-stream` (server-sent events).
fn is_event_stream(headers: &[(Bytes, Bytes)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case(b"content-type")
            && value
                .split(|&b| b == b';')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// Whether `error` is the `OSError` a send() raised once the client had
/// gone, or was raised while that one was handled (Starlette turns it into
/// its ClientDisconnect).
fn over_a_send_error(error: &Bound<'_, PyAny>) -> bool {
    let mut error = Some(error.clone());
    // A few links: a chain is short, and may loop.
    for _ in 0..8 {
        let Some(e) = error else { return false };
        if e.is_instance_of::<PyOSError>() {
            return true;
        }
        error = ["__cause__", "__context__"]
            .into_iter()
            .find_map(|link| e.getattr(link).ok().filter(|c| !c.is_none()));
    }
    false
}

/// Whether an app's exception is asyncio's `CancelledError` (its task was
/// cancelled).
pub(super) fn is_cancellation(error: &Bound<'_, PyAny>) -> bool {
    error
        .get_type()
        .name()
        .is_ok_and(|n| n.to_str().is_ok_and(|n| n == "CancelledError"))
}
