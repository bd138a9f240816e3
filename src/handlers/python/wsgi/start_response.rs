//! `start_response` and `write()`: the status and headers an app gives,
//! validated into a response head.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString, PyTuple};
use tokio::sync::{mpsc, oneshot};

use super::super::buffers::{to_bytes, with_scratch};
use crate::request::{
    BodyError, FileBody, Response, ResponseBody, clip, is_hop_by_hop, is_token_byte,
};

/// Status and headers, as `start_response` validated them.
pub(crate) struct Head {
    pub(super) status: u16,
    pub(super) reason: Option<String>,
    pub(super) headers: Vec<(Bytes, Bytes)>,
    pub(super) content_length: Option<u64>,
}

impl Head {
    pub(super) fn into_response(self, body: ResponseBody) -> Response {
        Response {
            status: self.status,
            reason: self.reason,
            headers: self.headers,
            body,
        }
    }
}

/// What a call on a Python thread hands the event loop once its head is
/// known.
pub(super) enum Started {
    /// The head, the first chunk, and whether the body is complete.
    Head(Head, Option<Bytes>, bool),
    /// The head and a file to send as the body.
    File(Head, FileBody),
}

pub(super) type HeadSender = oneshot::Sender<Result<Started, Response>>;
pub(super) type ChunkSender = mpsc::Sender<Result<Bytes, BodyError>>;

/// Where `write()` sends its data while the app runs, for a call on a
/// Python thread of its own: the event loop is free to send it, and the
/// app waits while the client is slow, as it would on Gunicorn's or
/// uWSGI's blocking socket. (A call inline on the event loop has none: its
/// data waits in `written` until the app returns.)
pub(super) struct WriteStream {
    /// Taken by the first `write()`, which sends the head with its data;
    /// still here after the call if the app wrote nothing.
    pub(super) head_tx: Option<HeadSender>,
    /// Let go of when the app returns (`end`): the body's channel must end
    /// with the call, even if the app keeps its `start_response`.
    pub(super) chunks: Option<ChunkSender>,
    /// The head that went out (for the request log), and the body so far.
    pub(super) head_sent: Option<SentHead>,
    /// The app's Content-Length: never send more.
    pub(super) limit: Option<u64>,
    pub(super) sent: u64,
    pub(super) chunks_sent: u32,
    /// The client left while the app wrote: the OSError its write() raised
    /// is no error of the app's to log.
    pub(super) client_gone: bool,
}

pub(super) type SharedWriteStream = Arc<Mutex<WriteStream>>;

/// A head's status, reason and headers, as the request log notes them.
pub(super) type SentHead = (u16, Option<String>, Vec<(Bytes, Bytes)>);

impl WriteStream {
    pub(super) fn shared(head_tx: HeadSender, chunks: ChunkSender) -> SharedWriteStream {
        Arc::new(Mutex::new(WriteStream {
            head_tx: Some(head_tx),
            chunks: Some(chunks),
            head_sent: None,
            limit: None,
            sent: 0,
            chunks_sent: 0,
            client_gone: false,
        }))
    }
}

fn client_gone_error() -> PyErr {
    PyOSError::new_err("write(): the client disconnected")
}

/// Sends one `write()`'s data: with the head, the first time.
fn stream_write(
    py: Python<'_>,
    stream: &SharedWriteStream,
    head: &mut Option<Head>,
    data: Bytes,
) -> PyResult<()> {
    let mut st = stream.lock().unwrap_or_else(|e| e.into_inner());
    if st.client_gone {
        return Err(client_gone_error());
    }
    if let Some(head_tx) = st.head_tx.take() {
        let Some(head) = head.take() else {
            return Err(PyRuntimeError::new_err("write() before start_response()"));
        };
        st.limit = head.content_length;
        let data = clip(st.limit, &mut st.sent, data);
        st.head_sent = Some((head.status, head.reason.clone(), head.headers.clone()));
        st.chunks_sent = 1;
        let first = (!data.is_empty()).then_some(data);
        if head_tx.send(Ok(Started::Head(head, first, false))).is_err() {
            st.client_gone = true;
            return Err(client_gone_error());
        }
        return Ok(());
    }
    let data = clip(st.limit, &mut st.sent, data);
    if data.is_empty() {
        return Ok(());
    }
    st.chunks_sent += 1;
    let Some(chunks) = st.chunks.clone() else {
        return Err(client_gone_error());
    };
    drop(st);
    if py.detach(move || chunks.blocking_send(Ok(data))).is_err() {
        stream.lock().unwrap_or_else(|e| e.into_inner()).client_gone = true;
        return Err(client_gone_error());
    }
    Ok(())
}

/// The `start_response` callable handed to the app; `write` is its method.
#[pyclass(module = "oxgate")]
#[derive(Default)]
pub(crate) struct StartResponse {
    pub(super) head: Option<Head>,
    pub(super) headers_sent: bool,
    /// start_response was called: `write()` may be, and a second call needs
    /// `exc_info` (the head may be taken already).
    pub(super) called: bool,
    /// Data given to `write()`, sent before anything the iterable yields.
    pub(super) written: VecDeque<Bytes>,
    /// The app called `write()` (with data).
    pub(super) wrote: bool,
    /// Where `write()` sends at once, when the call has a thread of its own.
    pub(super) stream: Option<SharedWriteStream>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        {
            let mut me = slf.borrow_mut();
            match exc_info.filter(|e| !e.is_none()) {
                Some(exc) if me.headers_sent => {
                    // PEP 3333: re-raise the app's exception.
                    let exc = exc.cast::<PyTuple>()?;
                    let value = exc.get_item(1)?;
                    let value = value.call_method1("with_traceback", (exc.get_item(2)?,))?;
                    return Err(PyErr::from_value(value));
                }
                Some(_) => {}
                None if me.called => {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                None => {}
            }
            me.head = Some(parse_head(status, headers)?);
            me.called = true;
        }
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.called {
            return Err(PyRuntimeError::new_err(
                "write() called before start_response()",
            ));
        }
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        if bytes.as_bytes().is_empty() {
            return Ok(());
        }
        self.wrote = true;
        self.headers_sent = true;
        if let Some(stream) = &self.stream {
            return stream_write(data.py(), stream, &mut self.head, to_bytes(bytes));
        }
        self.written.push_back(to_bytes(bytes));
        Ok(())
    }
}

pub(super) fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status = status.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "status must be a str like '200 OK', not {}",
            type_name(status)
        ))
    })?;
    let status = status.to_str()?;
    let b = status.as_bytes();
    // The three digits alone ("200") are taken, with the standard reason,
    // as Gunicorn and uWSGI take them: apps written against them send it.
    let valid = b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && b[0] != b'0'
        && (b.len() == 3 || b[3] == b' ')
        && !b.iter().any(|c| c.is_ascii_control());
    if !valid {
        return Err(PyValueError::new_err(format!(
            "invalid status {status:?}: expected three digits, a space and a reason, like '200 OK'"
        )));
    }
    let code: u16 = status[..3].parse().expect("three digits");
    if code < 200 {
        return Err(PyValueError::new_err(format!(
            "status {code}: informational (1xx) responses are the server's business"
        )));
    }
    let reason = status.get(4..);
    // PEP 3333: the status is a latin-1 string, as the headers are.
    if reason.is_some_and(|r| r.chars().any(|c| u32::from(c) > 0xFF)) {
        return Err(PyValueError::new_err(format!(
            "invalid status {status:?}: a character that latin-1 cannot hold"
        )));
    }
    let standard = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason());
    let mut out = Head {
        status: code,
        reason: reason.filter(|r| standard != Some(*r)).map(str::to_string),
        // One more for a Content-Length the server may add.
        headers: crate::request::headers_with_capacity(headers.len().unwrap_or(0) + 1),
        content_length: None,
    };
    // A list, as PEP 3333 asks; any other iterable of pairs too (a list's
    // subclass, dict.items(), a generator), as Gunicorn takes them. Not a
    // string or a mapping, whose items are no pairs.
    if headers.is_instance_of::<PyString>()
        || headers.is_instance_of::<PyBytes>()
        || headers.is_instance_of::<PyByteArray>()
        || headers.is_instance_of::<PyDict>()
        || headers.try_iter().is_err()
    {
        return Err(PyTypeError::new_err(format!(
            "headers must be a list of (name, value) tuples, not {}",
            type_name(headers)
        )));
    }
    with_scratch(|arena| parse_headers(headers, arena, &mut out))?;
    Ok(out)
}

/// Validates the app's headers into `out`, their names and values copied
/// into `arena`.
fn parse_headers(headers: &Bound<'_, PyAny>, arena: &mut BytesMut, out: &mut Head) -> PyResult<()> {
    for item in headers.try_iter()? {
        let item = item?;
        // A (name, value) tuple, as PEP 3333 asks; a two-item list too,
        // as Gunicorn takes it (apps written against it send them).
        let pair = item
            .extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()
            .or_else(|e| match item.cast::<pyo3::types::PyList>() {
                Ok(list) if list.len() == 2 => Ok((list.get_item(0)?, list.get_item(1)?)),
                _ => Err(e),
            });
        let (name, value) = pair.map_err(|_| {
            PyTypeError::new_err(format!(
                "each header must be a (name, value) tuple, got {item}"
            ))
        })?;
        let name = name
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("header name must be str, got {name}")))?
            .to_str()?;
        let value = value.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("value of header {name:?} must be str, got {value}"))
        })?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(PyValueError::new_err(format!(
                "invalid header name {name:?}"
            )));
        }
        if is_hop_by_hop(name.as_bytes()) {
            // PEP 3333 lets a server refuse these; Gunicorn drops them and
            // uWSGI passes them on, so apps that run under both send them
            // (Flask's `response.headers["Connection"] = "close"`). The
            // server frames the message and keeps the connection: they are
            // dropped, but `Connection: close` closes the connection after
            // the response, as an ASGI app's does.
            if name.eq_ignore_ascii_case("connection")
                && value
                    .to_str()?
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
                && !out
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
            {
                out.headers.push((
                    Bytes::from_static(b"Connection"),
                    Bytes::from_static(b"close"),
                ));
            }
            continue;
        }
        let name_bytes = match COMMON_HEADERS.iter().find(|h| **h == name) {
            Some(h) => Bytes::from_static(h.as_bytes()),
            None => {
                arena.extend_from_slice(name.as_bytes());
                arena.split().freeze()
            }
        };
        str_to_latin1(value, arena)?;
        let value = arena.split().freeze();
        if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(PyValueError::new_err(format!(
                "value of header {name:?} contains a control character"
            )));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(&value)
                .ok()
                .map(str::trim)
                // Digits only: u64's parser takes a "+", which must not
                // reach the wire (RFC 9110 §8.6).
                .filter(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    PyValueError::new_err(format!("Content-Length {value:?} is not a number"))
                })?;
            if out.content_length.is_some_and(|prev| prev != n) {
                return Err(PyValueError::new_err(
                    "two different Content-Length headers",
                ));
            }
            out.content_length = Some(n);
        }
        out.headers.push((name_bytes, value));
    }
    Ok(())
}

/// Header names most responses carry, spelt as most apps spell them: kept
/// as static bytes, not copied.
const COMMON_HEADERS: [&str; 4] = ["Content-Type", "Content-Length", "Location", "Set-Cookie"];

/// Appends a str to `out` as ISO-8859-1, refusing code points above U+00FF.
fn str_to_latin1(s: &Bound<'_, PyString>, out: &mut BytesMut) -> PyResult<()> {
    let text = s.to_str()?;
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    out.reserve(text.len());
    for ch in text.chars() {
        let c = u32::from(ch);
        if c > 0xff {
            return Err(PyValueError::new_err(format!(
                "header value {text:?} has a character above U+00FF; encode it (PEP 3333 headers are latin-1)"
            )));
        }
        out.extend_from_slice(&[c as u8]);
    }
    Ok(())
}
