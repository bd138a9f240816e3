//! One call of a WSGI app: calling it with its environ, then driving its
//! iterable chunk by chunk until it is done and closed.

use std::io;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use pyo3::exceptions::{PyIOError, PyRuntimeError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::super::buffers::to_bytes;
use super::error::{CallError, log_exception, request_line};
use super::file_wrapper::{FileWrapper, file_region};
use super::host::{Callable, WsgiApp, WsgiHost};
use super::input::Input;
use super::start_response::{Head, SharedWriteStream, StartResponse, type_name};
use crate::request::{BodyError, FileRegion, VarName};

impl WsgiHost {
    /// Calls the result's close() on the event loop, noting a slow one
    /// (`defers_close`).
    pub(super) fn close_inline(&self, py: Python<'_>, call: &mut Call) {
        let started = std::time::Instant::now();
        call.close(py);
        if started.elapsed() >= super::host::SLOW_CLOSE {
            self.slow_closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Builds the environ and calls the app; the response is not started yet.
    pub(super) fn begin(
        &self,
        py: Python<'_>,
        target: &WsgiApp,
        vars: Vec<(VarName, Bytes)>,
        input: Input,
        stream: Option<SharedWriteStream>,
    ) -> Result<Call, CallError> {
        let app = match &target.callable {
            Callable::Fixed(app) => app.bind(py).clone(),
            Callable::Missing => return Err(CallError::NoApp),
            Callable::Vhost(fallback) => match self.dynamic_app(py, &vars).transpose()? {
                Some(app) => app,
                None => match fallback {
                    Some(app) => app.bind(py).clone(),
                    // A 500, as uWSGI's "no python application found": a
                    // server block missing its uwsgi_param lines is a
                    // fault a monitor of 5xx answers must see.
                    None => {
                        return Err(CallError::Load(
                            "--vhost: the request names no app (no UWSGI_SCRIPT, UWSGI_MODULE or \
                             UWSGI_FILE variable from the front end), and no app was loaded to serve it"
                                .to_string(),
                        ));
                    }
                },
            },
        };
        let environ = self.environ(py, vars)?;
        let input_failure = input.failure.clone();
        let input = Bound::new(py, input).map_err(CallError::Internal)?;
        environ
            .set_item(self.key_input.bind(py), input)
            .map_err(CallError::Internal)?;
        let sr = StartResponse {
            stream,
            ..StartResponse::default()
        };
        let sr = Bound::new(py, sr).map_err(CallError::Internal)?;
        let result = app.call1((&environ, &sr));
        if crate::sys::forked::in_forked_child() {
            leave_forked_child();
        }
        let result = result
            .map_err(|e| CallError::App(e, environ.clone().unbind()).or_client(&input_failure))?;
        let iter = if let Ok(list) = result.cast_exact::<PyList>() {
            Iter::List(list.clone().unbind(), 0)
        } else if let Ok(tuple) = result.cast_exact::<PyTuple>() {
            Iter::Tuple(tuple.clone().unbind(), 0)
        } else if let Ok(wrapper) = result.cast_exact::<FileWrapper>() {
            match file_region(py, wrapper) {
                Some(f) => Iter::File(f),
                None => Iter::Generic(
                    result
                        .try_iter()
                        .map_err(|e| CallError::App(e, environ.clone().unbind()))?
                        .into_any()
                        .unbind(),
                ),
            }
        } else {
            match result.try_iter() {
                Ok(it) => Iter::Generic(it.into_any().unbind()),
                Err(e) => {
                    let call = Call {
                        result: Some(result.unbind()),
                        iter: Iter::Done,
                        sr: sr.unbind(),
                        environ: environ.clone().unbind(),
                        limit: None,
                        sent: 0,
                        exception_text: self.helpers.exception_text.clone_ref(py),
                        input_failure,
                    };
                    drop(call); // closes the result
                    // An iterable whose __iter__ raised is the app's own
                    // error, logged with its traceback; only a result that
                    // is no iterable at all is said to be one.
                    let err = if e.is_instance_of::<PyTypeError>(py) {
                        PyTypeError::new_err(format!("the app returned a non-iterable: {e}"))
                    } else {
                        e
                    };
                    return Err(CallError::App(err, environ.unbind()));
                }
            }
        };
        Ok(Call {
            result: Some(result.unbind()),
            iter,
            sr: sr.unbind(),
            environ: environ.unbind(),
            limit: None,
            sent: 0,
            exception_text: self.helpers.exception_text.clone_ref(py),
            input_failure,
        })
    }
}

enum Iter {
    List(Py<PyList>, usize),
    Tuple(Py<PyTuple>, usize),
    Generic(Py<PyAny>),
    File(FileRegion),
    Done,
}

/// One call of the app: its result, iterated until done, then closed.
pub(crate) struct Call {
    /// The app's return value; `None` once `close()` was called on it.
    result: Option<Py<PyAny>>,
    iter: Iter,
    sr: Py<StartResponse>,
    pub(super) environ: Py<PyDict>,
    /// The app's Content-Length: never send more.
    limit: Option<u64>,
    sent: u64,
    pub(super) exception_text: Py<PyAny>,
    input_failure: Option<Arc<OnceLock<BodyError>>>,
}

impl Call {
    /// True when nothing more will be sent and what was sent is complete.
    pub(super) fn is_finished(&self, py: Python<'_>) -> bool {
        matches!(self.iter, Iter::Done)
            && self.sr.bind(py).borrow().written.is_empty()
            && self.limit.is_none_or(|l| self.sent >= l)
    }

    /// The app returned: from now on its `write()`s wait in `written` for
    /// the iterable's turn (a generator's writes go out in order with its
    /// items, under one count of the Content-Length). Says whether it
    /// called `write()` so far.
    pub(super) fn end_write_stream(&self, py: Python<'_>) -> bool {
        let mut sr = self.sr.bind(py).borrow_mut();
        sr.stream = None;
        sr.wrote
    }

    /// The head and part of the body went out with the app's `write()`s:
    /// the iterable's items follow, under the same Content-Length.
    pub(super) fn resume_after_writes(&mut self, limit: Option<u64>, sent: u64) {
        self.limit = limit;
        self.sent = sent;
    }

    /// A list or tuple whose last item was taken is done: the response can
    /// then go out whole, with a Content-Length.
    fn mark_if_exhausted(&mut self, py: Python<'_>) {
        let done = match &self.iter {
            Iter::List(l, i) => *i >= l.bind(py).len(),
            Iter::Tuple(t, i) => *i >= t.bind(py).len(),
            _ => false,
        };
        if done {
            self.iter = Iter::Done;
        }
    }

    /// Runs the app until it produced its first non-empty chunk or finished,
    /// and returns the head it set (PEP 3333: headers go out only then).
    pub(super) fn first_chunk(
        &mut self,
        py: Python<'_>,
    ) -> Result<(Head, Option<Bytes>), CallError> {
        let app_err = |e: PyErr, c: &Call| {
            CallError::App(e, c.environ.clone_ref(py)).or_client(&c.input_failure)
        };
        // A file with nothing written before it stays unread: the front end
        // may send it with sendfile (take_file).
        let file_next =
            matches!(self.iter, Iter::File(_)) && self.sr.bind(py).borrow().written.is_empty();
        let first = loop {
            if file_next {
                break None;
            }
            let next = self.next_raw(py);
            if crate::sys::forked::in_forked_child() {
                leave_forked_child();
            }
            match next {
                Ok(Some(b)) if b.is_empty() => continue,
                Ok(other) => break other,
                Err(e) => return Err(app_err(e, self)),
            }
        };
        let mut sr = self.sr.bind(py).borrow_mut();
        let Some(mut head) = sr.head.take() else {
            drop(sr);
            return Err(app_err(
                PyRuntimeError::new_err("the app returned without calling start_response()"),
                self,
            ));
        };
        sr.headers_sent = true;
        drop(sr);
        // A file served from its descriptor has a known length.
        if head.content_length.is_none()
            && let Iter::File(f) = &self.iter
        {
            // What write() gave goes out before it, all of it.
            let written: u64 = self
                .sr
                .bind(py)
                .borrow()
                .written
                .iter()
                .map(|b| b.len() as u64)
                .sum();
            let len = f.len + first.as_ref().map_or(0, |b| b.len() as u64) + written;
            head.content_length = Some(len);
            head.headers.push((
                Bytes::from_static(b"Content-Length"),
                Bytes::from(len.to_string()),
            ));
        }
        self.limit = head.content_length;
        let first = first.map(|b| self.clip(b));
        if self.limit.is_some_and(|l| self.sent >= l) {
            self.iter = Iter::Done;
        }
        self.mark_if_exhausted(py);
        Ok((head, first))
    }

    /// The next chunk to send, after the first; `None` at the end.
    pub(super) fn next_chunk(&mut self, py: Python<'_>) -> Result<Option<Bytes>, CallError> {
        loop {
            if self.limit.is_some_and(|l| self.sent >= l) {
                return Ok(None);
            }
            let next = self.next_raw(py);
            if crate::sys::forked::in_forked_child() {
                leave_forked_child();
            }
            match next {
                Ok(Some(b)) if b.is_empty() => continue,
                Ok(Some(b)) => return Ok(Some(self.clip(b))),
                Ok(None) => {
                    return match self.limit {
                        Some(declared) if self.sent < declared => Err(CallError::Short {
                            declared,
                            sent: self.sent,
                        }),
                        _ => Ok(None),
                    };
                }
                Err(e) => return Err(CallError::App(e, self.environ.clone_ref(py))),
            }
        }
    }

    /// The rest of the body as a file region, when it is one (a file the
    /// app returned in `wsgi.file_wrapper`, with nothing else before it)
    /// and the file holds at least the length the head declares.
    pub(super) fn take_file(&mut self) -> Option<FileRegion> {
        let Iter::File(f) = &self.iter else {
            return None;
        };
        let len = self.limit?.saturating_sub(self.sent);
        if len > f.len {
            return None; // short: next_chunk reads it and reports the error
        }
        let Iter::File(mut f) = std::mem::replace(&mut self.iter, Iter::Done) else {
            unreachable!()
        };
        self.sent += len;
        f.len = len;
        Some(f)
    }

    /// Cuts a chunk to what is left of the app's Content-Length.
    fn clip(&mut self, b: Bytes) -> Bytes {
        crate::request::clip(self.limit, &mut self.sent, b)
    }

    /// Data from `write()` first, then the iterable's next item.
    fn next_raw(&mut self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        if let Some(b) = self.sr.bind(py).borrow_mut().written.pop_front() {
            return Ok(Some(b));
        }
        let item = self.next_item(py)?;
        let sr = self.sr.bind(py);
        let mut sr = sr.borrow_mut();
        if sr.written.is_empty() {
            return Ok(item);
        }
        // The iterable (a generator) called write() while making this
        // item: what it wrote goes first.
        if let Some(b) = item {
            sr.written.push_back(b);
        }
        Ok(sr.written.pop_front())
    }

    /// The iterable's next item.
    fn next_item(&mut self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        let item = match &mut self.iter {
            Iter::Done => return Ok(None),
            Iter::List(list, i) => {
                let list = list.bind(py);
                if *i < list.len() {
                    *i += 1;
                    Some(list.get_item(*i - 1)?)
                } else {
                    None
                }
            }
            Iter::Tuple(tuple, i) => {
                let tuple = tuple.bind(py);
                if *i < tuple.len() {
                    *i += 1;
                    Some(tuple.get_item(*i - 1)?)
                } else {
                    None
                }
            }
            Iter::Generic(it) => {
                // SAFETY: the GIL is held (`py`), and `it` is a live iterator:
                // what `try_iter` (PyObject_GetIter, which checks that) returned
                // in `begin`, owned by `self.iter`.
                let ptr = unsafe { ffi::PyIter_Next(it.as_ptr()) };
                if ptr.is_null() {
                    if let Some(err) = PyErr::take(py) {
                        self.iter = Iter::Done;
                        return Err(err);
                    }
                    None
                } else {
                    // SAFETY: `ptr` is not null, and PyIter_Next returns a new
                    // (owned) reference, held under the GIL (`py`).
                    Some(unsafe { Bound::from_owned_ptr(py, ptr) })
                }
            }
            Iter::File(f) => {
                let chunk = match py.detach(|| f.read_chunk()) {
                    Ok(chunk) => chunk,
                    // The file shrank: the body ends short of its length.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
                    Err(e) => {
                        return Err(PyIOError::new_err(format!("reading the file to send: {e}")));
                    }
                };
                if chunk.is_none() {
                    self.iter = Iter::Done;
                }
                return Ok(chunk);
            }
        };
        match item {
            None => {
                self.iter = Iter::Done;
                Ok(None)
            }
            Some(item) => match item.cast::<PyBytes>() {
                Ok(b) => Ok(Some(to_bytes(b))),
                Err(_) => {
                    self.iter = Iter::Done;
                    Err(PyTypeError::new_err(format!(
                        "the app yielded {}, but a WSGI body is made of bytes",
                        type_name(&item)
                    )))
                }
            },
        }
    }

    /// Whether the result has a `close()` of its own to call (a list or a
    /// tuple has none).
    pub(super) fn has_close(&self, py: Python<'_>) -> bool {
        self.result.as_ref().is_some_and(|r| {
            let r = r.bind(py);
            !(r.is_exact_instance_of::<PyList>() || r.is_exact_instance_of::<PyTuple>())
                && r.hasattr("close").unwrap_or(true)
        })
    }

    /// Calls the result's `close()` (PEP 3333: always, also on errors and
    /// disconnects). Exceptions from it are logged.
    pub(super) fn close(&mut self, py: Python<'_>) {
        self.iter = Iter::Done;
        let Some(result) = self.result.take() else {
            return;
        };
        let result = result.bind(py);
        if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
            return;
        }
        match result.getattr_opt("close") {
            Ok(Some(close)) => {
                let closed = close.call0();
                if crate::sys::forked::in_forked_child() {
                    leave_forked_child();
                }
                if let Err(e) = closed {
                    log_exception(py, &self.exception_text, e, self.environ.bind(py));
                }
            }
            Ok(None) => {}
            Err(e) => log_exception(py, &self.exception_text, e, self.environ.bind(py)),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.result.is_some() {
            Python::attach(|py| self.close(py));
        }
    }
}

/// Logs an error that happened after the response started; the connection
/// is then cut, so the client cannot take a truncated body for a whole one.
/// Gives the body's error, marked as logged unless it is the client's.
pub(super) fn log_late_error(py: Python<'_>, call: &Call, e: CallError) -> BodyError {
    match e {
        CallError::App(err, _) | CallError::Internal(err) => {
            late_app_error(py, &call.exception_text, err, call.environ.bind(py))
        }
        CallError::Client(e) => BodyError::new(500, format!("bad request body: {e}")),
        CallError::NoApp | CallError::Load(_) => unreachable!("found before the app is called"),
        CallError::Short { declared, sent } => {
            let msg = format!(
                "{}: the app sent {sent} bytes but its Content-Length said {declared}; closing the connection",
                request_line(call.environ.bind(py))
            );
            crate::say!("oxgate: {msg}");
            BodyError::logged(500, msg)
        }
    }
}

/// Logs the app's exception after its response started; gives the body's
/// error, marked as logged.
pub(super) fn late_app_error(
    py: Python<'_>,
    exception_text: &Py<PyAny>,
    err: PyErr,
    environ: &Bound<'_, PyDict>,
) -> BodyError {
    let msg = format!("the app failed after the response started: {err}");
    log_exception(py, exception_text, err, environ);
    BodyError::logged(500, msg)
}

/// The app forked and its child returned from the app into the server (no
/// `os._exit` in it): it exits at once, rather than serve on as a worker
/// the master does not know, as Gunicorn's does ("Parent changed").
fn leave_forked_child() -> ! {
    crate::say!(
        "oxgate: pid {}: a child the app forked returned from the app into the server; it exits (end a forked child with os._exit)",
        std::process::id()
    );
    // SAFETY: _exit ends the process at once, touching no memory; nothing
    // of this child (a copy of a worker's state) is to be flushed or run.
    unsafe { libc::_exit(0) }
}
