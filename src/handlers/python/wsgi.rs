//! PEP 3333: the environ, `start_response`, `wsgi.input`, `wsgi.file_wrapper`
//! and the driver that turns an app's iterable into response chunks.
//!
//! Two ways to run a call, chosen per request:
//! * inline, on the event-loop thread (`--threads 1` and a body already in
//!   memory): the cheapest path, no thread hand-off (embedding.md §1);
//! * on a Python thread of the pool (`--threads N`, or a body still
//!   arriving, which the app may block on): chunks flow through bounded
//!   channels, so memory stays bounded both ways.
//!
//! A semaphore with one permit per Python thread bounds both paths together.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyIOError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyModule, PyString, PyTuple};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};

use super::pool::Pool;
use crate::listen::Protocol;
use crate::request::cgi::says_https;
use crate::request::{Handler, Responding};
use crate::request::{
    BodyError, BodyStream, ChunkSource, FileBody, FileRegion, Outcome, Request, RequestBody,
    RequestObserver, Response, ResponseBody, Var, VarName, head_size,
};

/// Chunks of at least this size are handed to the front end without a copy.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Chunks buffered between a Python thread and the connection, each way.
const CHANNEL_DEPTH: usize = 2;
/// How much of a request body the app did not read is still read (and
/// dropped) to keep the connection; beyond it the connection is closed.
const UNREAD_BODY_DRAIN: usize = 8 << 20;

pub(crate) struct Helpers {
    pub load: Py<PyAny>,
    load_vhost: Py<PyAny>,
    log_exception: Py<PyAny>,
    pub module_files: Py<PyAny>,
}

pub(crate) fn helpers(py: Python<'_>) -> PyResult<Helpers> {
    let code = CString::new(include_str!("loader.py")).expect("no NUL in loader.py");
    let m = PyModule::from_code(py, &code, c"oxgate/loader.py", c"_oxgate_loader")?;
    Ok(Helpers {
        load: m.getattr("load")?.unbind(),
        load_vhost: m.getattr("load_vhost")?.unbind(),
        log_exception: m.getattr("log_exception")?.unbind(),
        module_files: m.getattr("module_files")?.unbind(),
    })
}

/// The app and everything prepared once for the per-request path.
pub struct WsgiHost {
    /// `--vhost`: apps loaded as requests' UWSGI_* variables ask, by key.
    dynamic: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Py<PyAny>>>,
    /// The environ entries that are the same for every request, and a
    /// placeholder for each of `SLOTTED` (see `begin`).
    template: Py<PyDict>,
    /// An interned key for each known CGI variable, indexed by `Var`.
    keys: Vec<Py<PyString>>,
    /// For each known CGI variable, its bit if it is one of `SLOTTED`.
    slot_bits: Vec<u16>,
    key_input: Py<PyString>,
    empty: Py<PyString>,
    helpers: Helpers,
    threads: usize,
    permits: Arc<Semaphore>,
    /// Core numbers not in use; one is taken with each permit.
    free_cores: std::sync::Mutex<Vec<usize>>,
    observer: OnceLock<Arc<dyn RequestObserver>>,
    pool: OnceLock<Pool>,
}

/// One WSGI app as a request handler: the worker's shared host, and the
/// callable (or, with `--vhost`, the rule that finds it).
pub struct WsgiApp {
    host: Arc<WsgiHost>,
    callable: Callable,
}

enum Callable {
    Fixed(Py<PyAny>),
    /// `--vhost`: the app the request's UWSGI_* variables name, else this
    /// one (if any).
    Vhost(Option<Py<PyAny>>),
}

impl WsgiApp {
    pub(crate) fn new(host: Arc<WsgiHost>, app: Py<PyAny>) -> WsgiApp {
        WsgiApp {
            host,
            callable: Callable::Fixed(app),
        }
    }

    pub(crate) fn vhost(host: Arc<WsgiHost>, fallback: Option<Py<PyAny>>) -> WsgiApp {
        WsgiApp {
            host,
            callable: Callable::Vhost(fallback),
        }
    }
}

impl Handler for WsgiApp {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        Box::pin(async move {
            let host = self.host.clone();
            host.handle(self, req).await
        })
    }

    fn concurrency(&self) -> usize {
        self.host.threads
    }
}

/// A Python thread's worth of capacity, held for the whole request: its
/// permit and its core number for the observer.
struct Core {
    host: Arc<WsgiHost>,
    index: usize,
    /// What the request log and the counters say of the response.
    outcome: Outcome,
    _permit: OwnedSemaphorePermit,
}

impl Core {
    fn head(&mut self, status: u16, reason: Option<&str>, headers: &[(Bytes, Bytes)]) {
        self.outcome.status = status;
        self.outcome.headers = headers.len() as u32;
        self.outcome.header_bytes = head_size(status, reason, headers);
    }

    /// A response complete as it is.
    fn whole(&mut self, r: &Response) {
        self.head(r.status, r.reason.as_deref(), &r.headers);
        self.outcome.switches = 1;
        self.outcome.body_bytes = match &r.body {
            ResponseBody::Full(b) => b.len() as u64,
            _ => 0,
        };
    }

    fn chunk(&mut self, len: usize) {
        self.outcome.switches += 1;
        self.outcome.body_bytes += len as u64;
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(o) = self.host.observer.get() {
            o.finished(self.index, &self.outcome);
        }
        self.host
            .free_cores
            .lock()
            .expect("not poisoned")
            .push(self.index);
    }
}

impl WsgiHost {
    pub(crate) fn new(py: Python<'_>, helpers: Helpers, threads: usize) -> PyResult<WsgiHost> {
        let template = PyDict::new(py);
        template.set_item("wsgi.version", (1, 0))?;
        template.set_item("wsgi.url_scheme", "http")?;
        template.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
        template.set_item("wsgi.multithread", threads > 1)?;
        template.set_item("wsgi.multiprocess", false)?;
        template.set_item("wsgi.run_once", false)?;
        template.set_item("wsgi.input_terminated", true)?;
        template.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        template.set_item("SCRIPT_NAME", "")?;
        let keys: Vec<Py<PyString>> = Var::ALL
            .iter()
            .map(|v| PyString::intern(py, v.name()).unbind())
            .collect();
        let key_input = PyString::intern(py, "wsgi.input");
        let mut slot_bits = vec![0; Var::ALL.len()];
        for (i, v) in SLOTTED.iter().enumerate() {
            template.set_item(keys[*v as usize].bind(py), py.None())?;
            slot_bits[*v as usize] = 1 << i;
        }
        template.set_item(&key_input, py.None())?;
        Ok(WsgiHost {
            dynamic: Default::default(),
            template: template.unbind(),
            keys,
            slot_bits,
            key_input: key_input.unbind(),
            empty: PyString::intern(py, "").unbind(),
            helpers,
            threads,
            permits: Arc::new(Semaphore::new(threads)),
            free_cores: std::sync::Mutex::new((0..threads).rev().collect()),
            observer: OnceLock::new(),
            pool: OnceLock::new(),
        })
    }

    /// `--vhost`: the app the request's UWSGI_SCRIPT, UWSGI_MODULE (+
    /// UWSGI_CALLABLE) or UWSGI_FILE names, loaded on first use (after
    /// UWSGI_CHDIR and UWSGI_PYHOME) and kept. `None` if it names none.
    fn dynamic_app<'py>(
        &self,
        py: Python<'py>,
        vars: &[(VarName, Bytes)],
    ) -> Option<Result<Bound<'py, PyAny>, CallError>> {
        const NAMES: [&[u8]; 6] = [
            b"UWSGI_SCRIPT",
            b"UWSGI_MODULE",
            b"UWSGI_CALLABLE",
            b"UWSGI_FILE",
            b"UWSGI_CHDIR",
            b"UWSGI_PYHOME",
        ];
        let mut values: [&[u8]; 6] = [b""; 6];
        for (name, value) in vars {
            if let VarName::Other(n) = name
                && let Some(i) = NAMES.iter().position(|k| *k == &n[..])
            {
                values[i] = value;
            }
        }
        if values[0].is_empty() && values[1].is_empty() && values[3].is_empty() {
            return None;
        }
        let key = values.join(&0u8);
        if let Some(app) = self.dynamic.lock().expect("not poisoned").get(&key) {
            return Some(Ok(app.bind(py).clone()));
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let args = (
            text(values[0]),
            text(values[1]),
            text(values[2]),
            text(values[3]),
            text(values[4]),
            text(values[5]),
        );
        let what = format!(
            "UWSGI_SCRIPT={:?} UWSGI_MODULE={:?} UWSGI_FILE={:?} UWSGI_CHDIR={:?}",
            args.0, args.1, args.3, args.4
        );
        let loaded: Result<(Option<Py<PyAny>>, Option<String>), String> = self
            .helpers
            .load_vhost
            .call1(py, args)
            .and_then(|r| r.extract(py))
            .map_err(|e| e.to_string());
        Some(match loaded {
            Ok((Some(app), _)) => {
                crate::say!("oxgate: --vhost: loaded the app for {what}");
                let bound = app.bind(py).clone();
                self.dynamic.lock().expect("not poisoned").insert(key, app);
                Ok(bound)
            }
            Ok((None, msg)) => Err(CallError::Load(format!(
                "--vhost: cannot load the app for {what}: {}",
                msg.unwrap_or_default()
            ))),
            Err(e) => Err(CallError::Load(format!(
                "--vhost: cannot load the app for {what}: {e}"
            ))),
        })
    }

    /// The files of the loaded modules and their modification times.
    pub fn module_files(&self) -> Vec<(String, f64)> {
        Python::attach(|py| {
            self.helpers
                .module_files
                .call0(py)
                .and_then(|d| d.extract::<std::collections::HashMap<String, f64>>(py))
                .map(|m| m.into_iter().collect())
                .unwrap_or_default()
        })
    }

    /// How many Python threads run the app (FastCGI's FCGI_MAX_REQS).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Lets the worker's scoreboard see each request start and end.
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Waits for a free Python thread; `None` when shutting down.
    async fn core(self: &Arc<Self>, vars: &[(VarName, Bytes)], protocol: Protocol) -> Option<Core> {
        // Most often a core is free: no wait, so no future to set up.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => self.permits.clone().acquire_owned().await.ok()?,
            Err(TryAcquireError::Closed) => return None,
        };
        let index = self
            .free_cores
            .lock()
            .expect("not poisoned")
            .pop()
            .expect("a core per permit");
        if let Some(o) = self.observer.get() {
            o.started(index, vars, protocol);
        }
        Some(Core {
            host: self.clone(),
            index,
            outcome: Outcome {
                protocol,
                ..Outcome::default()
            },
            _permit: permit,
        })
    }

    /// Serves one request. Runs inside the worker's tokio runtime.
    async fn handle(self: &Arc<Self>, app: Arc<WsgiApp>, req: Request) -> Response {
        let Request {
            vars,
            body,
            is_head,
            protocol,
        } = req;
        let input = match body {
            RequestBody::Empty => Input::buffered(Bytes::new()),
            RequestBody::Full(b) => Input::buffered(b),
            // The app may block reading a body still arriving: that needs a
            // thread of its own, not the event loop.
            RequestBody::Stream(s) => {
                return self
                    .handle_pooled(app, vars, Input::streaming(s), is_head, protocol)
                    .await;
            }
        };
        if self.threads > 1 {
            return self
                .handle_pooled(app, vars, input, is_head, protocol)
                .await;
        }
        let Some(mut core) = self.core(&vars, protocol).await else {
            return Response::plain(503, "Service Unavailable", "Shutting down\n");
        };
        // One GIL acquisition covers the call, the first chunk and, for a
        // complete body, close(): embedding.md measured each extra one.
        let started = Python::attach(|py| {
            let mut call = self.begin(py, &app, vars, input)?;
            let (head, first) = call.first_chunk(py)?;
            let finished = call.is_finished(py);
            if finished || is_head {
                call.close(py);
                // A complete body goes out whole, with its length; for HEAD
                // the front end sends the length but not the body.
                let body = match first {
                    Some(b) if finished => ResponseBody::Full(b),
                    _ => ResponseBody::Empty,
                };
                return Ok::<_, CallError>(Err(head.into_response(body)));
            }
            Ok(Ok((call, head, first)))
        });
        match started {
            Err(e) => {
                core.outcome.failed = true;
                let r = self.error_response(e);
                core.whole(&r);
                r
            }
            Ok(Err(done)) => {
                core.whole(&done);
                if is_head {
                    core.outcome.body_bytes = 0;
                }
                done
            }
            Ok(Ok((mut call, head, first))) => {
                core.head(head.status, head.reason.as_deref(), &head.headers);
                if first.is_none()
                    && let Some(region) = call.take_file()
                {
                    return head.into_response(ResponseBody::Stream {
                        first: None,
                        rest: BodyStream::new(file_body(region, call, core, false)),
                    });
                }
                core.chunk(first.as_ref().map_or(0, |b| b.len()));
                head.into_response(ResponseBody::Stream {
                    first,
                    rest: BodyStream::new(InlineChunks {
                        call: Some(call),
                        core: Some(core),
                    }),
                })
            }
        }
    }

    async fn handle_pooled(
        self: &Arc<Self>,
        app: Arc<WsgiApp>,
        vars: Vec<(VarName, Bytes)>,
        input: Input,
        is_head: bool,
        protocol: Protocol,
    ) -> Response {
        let Some(core) = self.core(&vars, protocol).await else {
            return Response::plain(503, "Service Unavailable", "Shutting down\n");
        };
        let (head_tx, head_rx) = oneshot::channel();
        let (chunk_tx, chunk_rx) = mpsc::channel(CHANNEL_DEPTH);
        let host = self.clone();
        self.pool
            .get_or_init(|| Pool::new(self.threads))
            .submit(move || {
                let core = Python::attach(|py| {
                    host.run_pooled(py, core, &app, vars, input, is_head, head_tx, chunk_tx)
                });
                // Counted and logged after the GIL is released.
                drop(core);
            });
        match head_rx.await {
            Err(_) => Response::plain(500, "Internal Server Error", "Internal Server Error\n"),
            Ok(Err(e)) => self.error_response(e),
            Ok(Ok(Started::File(head, file))) => head.into_response(ResponseBody::Stream {
                first: None,
                rest: BodyStream::new(file),
            }),
            Ok(Ok(Started::Head(head, first, finished))) => {
                let body = if finished {
                    first.map_or(ResponseBody::Empty, ResponseBody::Full)
                } else if is_head {
                    ResponseBody::Empty
                } else {
                    ResponseBody::Stream {
                        first,
                        rest: BodyStream::new(ChannelChunks(chunk_rx)),
                    }
                };
                head.into_response(body)
            }
        }
    }

    /// The body of a pooled call, on a Python thread. Gives back the core,
    /// unless a file body took it, for the caller to drop without the GIL.
    #[allow(clippy::too_many_arguments)]
    fn run_pooled(
        &self,
        py: Python<'_>,
        mut core: Core,
        app: &WsgiApp,
        vars: Vec<(VarName, Bytes)>,
        input: Input,
        is_head: bool,
        head_tx: oneshot::Sender<Result<Started, CallError>>,
        chunk_tx: mpsc::Sender<Result<Bytes, BodyError>>,
    ) -> Option<Core> {
        let failed = |core: &mut Core, e: &CallError| {
            core.outcome.failed = true;
            core.outcome.status = e.status();
        };
        let mut call = match self.begin(py, app, vars, input) {
            Ok(c) => c,
            Err(e) => {
                failed(&mut core, &e);
                let _ = head_tx.send(Err(e));
                return Some(core);
            }
        };
        match call.first_chunk(py) {
            Err(e) => {
                failed(&mut core, &e);
                let _ = head_tx.send(Err(e));
                return Some(core);
            }
            Ok((head, first)) => {
                let finished = call.is_finished(py);
                core.head(head.status, head.reason.as_deref(), &head.headers);
                if !is_head
                    && first.is_none()
                    && let Some(region) = call.take_file()
                {
                    // The event loop sends the file and closes the call.
                    let body = file_body(region, call, core, true);
                    let _ = head_tx.send(Ok(Started::File(head, body)));
                    return None;
                }
                if !is_head {
                    core.chunk(first.as_ref().map_or(0, |b| b.len()));
                }
                let started = Started::Head(head, first, finished);
                if head_tx.send(Ok(started)).is_err() || finished || is_head {
                    call.close(py);
                    return Some(core);
                }
            }
        }
        loop {
            match call.next_chunk(py) {
                Ok(Some(chunk)) => {
                    core.chunk(chunk.len());
                    if py.detach(|| chunk_tx.blocking_send(Ok(chunk))).is_err() {
                        break; // the client went away
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let msg = log_late_error(py, &call, e);
                    let _ = py.detach(|| chunk_tx.blocking_send(Err(BodyError::new(500, msg))));
                    core.outcome.failed = true;
                    break;
                }
            }
        }
        call.close(py);
        Some(core)
    }

    /// Builds the environ and calls the app; the response is not started yet.
    fn begin(
        &self,
        py: Python<'_>,
        target: &WsgiApp,
        vars: Vec<(VarName, Bytes)>,
        input: Input,
    ) -> Result<Call, CallError> {
        let app = match &target.callable {
            Callable::Fixed(app) => app.bind(py).clone(),
            Callable::Vhost(fallback) => match self.dynamic_app(py, &vars).transpose()? {
                Some(app) => app,
                None => match fallback {
                    Some(app) => app.bind(py).clone(),
                    None => return Err(CallError::NoApp),
                },
            },
        };
        let environ = self.template.bind(py).copy().map_err(CallError::Internal)?;
        // SLOTTED variables still to be given a value: those a request
        // lacks are removed from the copy at the end.
        let mut unset: u16 = (1 << SLOTTED.len()) - 1;
        // A front end that terminated TLS says so (protocols.md §7.2).
        let mut https = false;
        for (name, value) in &vars {
            https |= says_https(name, value);
            let (key, value) = match name {
                VarName::Known(v) => {
                    unset &= !self.slot_bits[*v as usize];
                    let value = if value.is_empty() {
                        self.empty.bind(py).clone()
                    } else {
                        recent_latin1(py, *v, value)
                    };
                    (self.keys[*v as usize].bind(py).clone(), value)
                }
                VarName::Other(b) => (latin1(py, b), latin1(py, value)),
            };
            environ.set_item(key, value).map_err(CallError::Internal)?;
        }
        crate::request::recycle_vars(vars);
        while unset != 0 {
            let var = SLOTTED[unset.trailing_zeros() as usize];
            unset &= unset - 1;
            environ
                .del_item(self.keys[var as usize].bind(py))
                .map_err(CallError::Internal)?;
        }
        if https {
            environ
                .set_item("wsgi.url_scheme", "https")
                .map_err(CallError::Internal)?;
        }
        let input_failure = input.failure.clone();
        let input = Bound::new(py, input).map_err(CallError::Internal)?;
        environ
            .set_item(self.key_input.bind(py), input)
            .map_err(CallError::Internal)?;
        let sr = Bound::new(py, StartResponse::default()).map_err(CallError::Internal)?;
        let result = app
            .call1((&environ, &sr))
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
                        log_exception: self.helpers.log_exception.clone_ref(py),
                        input_failure,
                    };
                    drop(call); // closes the result
                    return Err(CallError::App(
                        PyTypeError::new_err(format!("the app returned a non-iterable: {e}")),
                        environ.unbind(),
                    ));
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
            log_exception: self.helpers.log_exception.clone_ref(py),
            input_failure,
        })
    }

    fn error_response(&self, e: CallError) -> Response {
        match e {
            CallError::Client(e) => {
                crate::say!("oxgate: bad request body: {e}");
                return match e.status {
                    413 => Response::plain(413, "Content Too Large", "Request body too large\n"),
                    _ => Response::plain(400, "Bad Request", "Malformed request body\n"),
                };
            }
            CallError::App(err, environ) => Python::attach(|py| {
                log_exception(py, &self.helpers.log_exception, err, environ.bind(py));
            }),
            CallError::Internal(err) => {
                crate::say!("oxgate: internal error while calling the app: {err}");
            }
            CallError::Short { .. } => unreachable!("only after the response started"),
            CallError::NoApp => {
                return Response::plain(404, "Not Found", "No app is mounted at this path\n");
            }
            CallError::Load(msg) => crate::say!("oxgate: {msg}"),
        }
        Response::plain(500, "Internal Server Error", "Internal Server Error\n")
    }
}

/// Logs an error that happened after the response started; the connection
/// is then cut, so the client cannot take a truncated body for a whole one.
fn log_late_error(py: Python<'_>, call: &Call, e: CallError) -> String {
    match e {
        CallError::App(err, _) | CallError::Internal(err) => {
            let msg = format!("the app failed after the response started: {err}");
            log_exception(py, &call.log_exception, err, call.environ.bind(py));
            msg
        }
        CallError::Client(e) => format!("bad request body: {e}"),
        CallError::NoApp | CallError::Load(_) => unreachable!("found before the app is called"),
        CallError::Short { declared, sent } => {
            let msg = format!(
                "{}: the app sent {sent} bytes but its Content-Length said {declared}; closing the connection",
                request_line(call.environ.bind(py))
            );
            crate::say!("oxgate: {msg}");
            msg
        }
    }
}

fn request_line(environ: &Bound<'_, PyDict>) -> String {
    let get = |k: &str| {
        environ
            .get_item(k)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let mut uri = get("REQUEST_URI");
    if uri.is_empty() {
        uri = get("PATH_INFO");
    }
    format!("{} {}", get("REQUEST_METHOD"), uri)
}

fn log_exception(py: Python<'_>, log: &Py<PyAny>, err: PyErr, environ: &Bound<'_, PyDict>) {
    let what = request_line(environ);
    let value = err.into_value(py);
    if log.call1(py, (value, what)).is_err() {
        crate::say!("oxgate: error in the app (and its traceback could not be printed)");
    }
}

/// Decodes raw bytes as ISO-8859-1: PEP 3333's "bytes as str".
fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            b.as_ptr().cast(),
            b.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        // Latin-1 decoding cannot fail; only memory exhaustion could.
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

/// The variables (nearly) every request has: the environ template holds a
/// placeholder for each, as for `wsgi.input`, so that a request's copy is
/// made at its final size, and setting them replaces a value rather than
/// adding an entry (no table growth, no probing for a free slot).
const SLOTTED: [Var; 11] = [
    Var::REQUEST_METHOD,
    Var::PATH_INFO,
    Var::QUERY_STRING,
    Var::REQUEST_URI,
    Var::SERVER_PROTOCOL,
    Var::REQUEST_SCHEME,
    Var::SERVER_NAME,
    Var::SERVER_PORT,
    Var::REMOTE_ADDR,
    Var::REMOTE_PORT,
    Var::HTTP_HOST,
];

thread_local! {
    /// The str last made on this thread for each CGI variable. Most values
    /// repeat from one request to the next (the server's name and port, the
    /// client's address, Host, User-Agent, Accept, ...): one equal to the
    /// last is shared rather than decoded again.
    static RECENT: std::cell::RefCell<Vec<Option<Py<PyString>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Longer values (cookies, say) are always decoded afresh.
const RECENT_MAX: usize = 256;

/// `latin1(value)`, or the equal str last made for `var` on this thread.
fn recent_latin1<'py>(py: Python<'py>, var: Var, value: &[u8]) -> Bound<'py, PyString> {
    if value.len() > RECENT_MAX {
        return latin1(py, value);
    }
    RECENT.with_borrow_mut(|recent| {
        if recent.is_empty() {
            recent.resize_with(Var::ALL.len(), || None);
        }
        let slot = &mut recent[var as usize];
        if let Some(last) = slot
            && same_latin1(last.bind(py), value)
        {
            return last.bind(py).clone();
        }
        let made = latin1(py, value);
        *slot = Some(made.clone().unbind());
        made
    })
}

/// Whether `s` is `b` decoded as latin-1 (and so a str of one-byte kind).
fn same_latin1(s: &Bound<'_, PyString>, b: &[u8]) -> bool {
    let p = s.as_ptr();
    // SAFETY: `s` is a live, ready str (made by `latin1`); a one-byte kind
    // str's data is its length in bytes.
    unsafe {
        ffi::PyUnicode_GET_LENGTH(p) as usize == b.len()
            && ffi::PyUnicode_KIND(p) == ffi::PyUnicode_1BYTE_KIND
            && std::slice::from_raw_parts(ffi::PyUnicode_DATA(p).cast::<u8>(), b.len()) == b
    }
}

/// What a pooled call hands the event loop once its head is known.
enum Started {
    /// The head, the first chunk, and whether the body is complete.
    Head(Head, Option<Bytes>, bool),
    /// The head and a file to send as the body.
    File(Head, FileBody),
}

/// The body of a response that is a file: sent (or read) by the front end,
/// then the app's iterable is closed and the request is over.
/// `pooled`: the app's `close()` runs on a Python thread, not on the event
/// loop (where waiting for the GIL would hold up every connection).
fn file_body(region: FileRegion, mut call: Call, mut core: Core, pooled: bool) -> FileBody {
    FileBody::new(region, move |end| {
        core.chunk(end.sent as usize);
        core.outcome.failed = end.failed;
        let host = core.host.clone();
        let finish = move || {
            Python::attach(|py| call.close(py));
            drop(core); // the request is over: counted and logged, without the GIL
        };
        match host.pool.get() {
            Some(pool) if pooled => pool.submit(finish),
            _ => finish(),
        }
    })
}

pub(crate) enum CallError {
    /// The app raised; the environ names the request in the log.
    App(PyErr, Py<PyDict>),
    /// The app raised after the client's body turned out malformed or too
    /// large: the client's fault, answered with its status.
    Client(BodyError),
    /// The app produced fewer bytes than its Content-Length.
    Short {
        declared: u64,
        sent: u64,
    },
    Internal(PyErr),
    /// No `--mount` app for this path and no default app.
    NoApp,
    /// A `--vhost` app could not be loaded.
    Load(String),
}

impl CallError {
    /// The status of the error response this becomes.
    fn status(&self) -> u16 {
        match self {
            CallError::Client(e) if e.status == 413 => 413,
            CallError::Client(_) => 400,
            CallError::NoApp => 404,
            _ => 500,
        }
    }

    /// Blames the client when reading its body failed before the app did.
    fn or_client(self, failure: &Option<Arc<OnceLock<BodyError>>>) -> CallError {
        match (self, failure.as_ref().and_then(|f| f.get())) {
            (CallError::App(..), Some(e)) => CallError::Client(e.clone()),
            (other, _) => other,
        }
    }
}

/// Status and headers, as `start_response` validated them.
pub(crate) struct Head {
    status: u16,
    reason: Option<String>,
    headers: Vec<(Bytes, Bytes)>,
    content_length: Option<u64>,
}

impl Head {
    fn into_response(self, body: ResponseBody) -> Response {
        Response {
            status: self.status,
            reason: self.reason,
            headers: self.headers,
            body,
        }
    }
}

/// The `start_response` callable handed to the app; `write` is its method.
#[pyclass(module = "oxgate")]
#[derive(Default)]
pub(crate) struct StartResponse {
    head: Option<Head>,
    headers_sent: bool,
    /// Data given to `write()`, sent before anything the iterable yields.
    written: Vec<Bytes>,
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
                None if me.head.is_some() => {
                    return Err(PyRuntimeError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
                None => {}
            }
            me.head = Some(parse_head(status, headers)?);
        }
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.head.is_none() {
            return Err(PyRuntimeError::new_err(
                "write() called before start_response()",
            ));
        }
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", type_name(data)))
        })?;
        if !bytes.as_bytes().is_empty() {
            self.written.push(to_bytes(bytes));
            self.headers_sent = true;
        }
        Ok(())
    }
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Hop-by-hop headers belong to the server (wsgiref.util.is_hop_by_hop).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

fn parse_head(status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let status = status.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "status must be a str like '200 OK', not {}",
            type_name(status)
        ))
    })?;
    let status = status.to_str()?;
    let b = status.as_bytes();
    let valid = b.len() >= 4
        && b[..3].iter().all(u8::is_ascii_digit)
        && b[0] != b'0'
        && b[3] == b' '
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
    let reason = &status[4..];
    let standard = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason());
    let mut out = Head {
        status: code,
        reason: (standard != Some(reason)).then(|| reason.to_string()),
        // One more for a Content-Length the server may add.
        headers: crate::request::headers_with_capacity(headers.len().unwrap_or(0) + 1),
        content_length: None,
    };
    if !(headers.is_exact_instance_of::<PyList>() || headers.is_exact_instance_of::<PyTuple>()) {
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
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract().map_err(|_| {
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
        if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return Err(PyValueError::new_err(format!(
                "hop-by-hop header {name:?} is not allowed from a WSGI app (PEP 3333); the server handles it"
            )));
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

thread_local! {
    /// Where a thread copies the small things a response is made of: header
    /// names and values, short body chunks. Each is split off as a `Bytes`.
    /// Made at its size, so that a buffer it moves on to is no smaller.
    static SCRATCH: std::cell::Cell<BytesMut> =
        std::cell::Cell::new(BytesMut::with_capacity(SCRATCH_SIZE));
}

/// `SCRATCH`'s buffer: room for the heads and short bodies of many
/// responses, so that by the time it is used up, what was split off its
/// start has been sent and dropped (after a batch of writes, responses
/// still wait in the flush queue) and the whole can be taken back.
const SCRATCH_SIZE: usize = 8192;
/// Each use wants this much room at least, or the buffer is renewed.
const SCRATCH_MIN: usize = 512;

/// Runs `f` with the thread's scratch buffer. A keep-alive hello world
/// allocates nothing for its head but once per buffer.
/// (Taken out of its cell meanwhile: a nested call, from Python code `f`
/// runs, gets a buffer of its own.)
fn with_scratch<R>(f: impl FnOnce(&mut BytesMut) -> R) -> R {
    let mut arena = SCRATCH.take();
    // Whatever a failed `f` left unsplit is dropped.
    arena.clear();
    crate::request::ready_arena(&mut arena, SCRATCH_MIN, SCRATCH_SIZE);
    let r = f(&mut arena);
    SCRATCH.set(arena);
    r
}

/// Header names most responses carry, spelt as most apps spell them: kept
/// as static bytes, not copied.
const COMMON_HEADERS: [&str; 4] = ["Content-Type", "Content-Length", "Location", "Set-Cookie"];

/// RFC 9110 tchar: the bytes allowed in a header name.
fn is_token_byte(c: u8) -> bool {
    const TOKEN: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            t[c] = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                );
            c += 1;
        }
        t
    };
    TOKEN[c as usize]
}

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

/// A Python `bytes` kept alive while the front end sends it.
struct PyBytesOwner {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// The buffer of an immutable bytes object never moves or changes while a
// reference to it is held, so reading it needs no GIL.
unsafe impl Send for PyBytesOwner {}
unsafe impl Sync for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn to_bytes(b: &Bound<'_, PyBytes>) -> Bytes {
    let data = b.as_bytes();
    if data.len() <= SCRATCH_MIN {
        with_scratch(|arena| {
            arena.extend_from_slice(data);
            arena.split().freeze()
        })
    } else if data.len() < ZERO_COPY_MIN {
        Bytes::copy_from_slice(data)
    } else {
        Bytes::from_owner(PyBytesOwner {
            ptr: data.as_ptr(),
            len: data.len(),
            _obj: b.clone().unbind(),
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
    environ: Py<PyDict>,
    /// The app's Content-Length: never send more.
    limit: Option<u64>,
    sent: u64,
    log_exception: Py<PyAny>,
    input_failure: Option<Arc<OnceLock<BodyError>>>,
}

impl Call {
    /// True when nothing more will be sent and what was sent is complete.
    fn is_finished(&self, py: Python<'_>) -> bool {
        matches!(self.iter, Iter::Done)
            && self.sr.bind(py).borrow().written.is_empty()
            && self.limit.is_none_or(|l| self.sent >= l)
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
    fn first_chunk(&mut self, py: Python<'_>) -> Result<(Head, Option<Bytes>), CallError> {
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
            match self.next_raw(py) {
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
            let len = f.len + first.as_ref().map_or(0, |b| b.len() as u64);
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
    fn next_chunk(&mut self, py: Python<'_>) -> Result<Option<Bytes>, CallError> {
        loop {
            if self.limit.is_some_and(|l| self.sent >= l) {
                return Ok(None);
            }
            match self.next_raw(py) {
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
    fn take_file(&mut self) -> Option<FileRegion> {
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
    fn clip(&mut self, mut b: Bytes) -> Bytes {
        if let Some(limit) = self.limit {
            let left = limit.saturating_sub(self.sent);
            if b.len() as u64 > left {
                b.truncate(left as usize);
            }
        }
        self.sent += b.len() as u64;
        b
    }

    /// Data from `write()` first, then the iterable's next item.
    fn next_raw(&mut self, py: Python<'_>) -> PyResult<Option<Bytes>> {
        {
            let sr = self.sr.bind(py);
            let mut sr = sr.borrow_mut();
            if !sr.written.is_empty() {
                return Ok(Some(sr.written.remove(0)));
            }
        }
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
                let ptr = unsafe { ffi::PyIter_Next(it.as_ptr()) };
                if ptr.is_null() {
                    if let Some(err) = PyErr::take(py) {
                        self.iter = Iter::Done;
                        return Err(err);
                    }
                    None
                } else {
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

    /// Calls the result's `close()` (PEP 3333: always, also on errors and
    /// disconnects). Exceptions from it are logged.
    fn close(&mut self, py: Python<'_>) {
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
                if let Err(e) = close.call0() {
                    log_exception(py, &self.log_exception, e, self.environ.bind(py));
                }
            }
            Ok(None) => {}
            Err(e) => log_exception(py, &self.log_exception, e, self.environ.bind(py)),
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

/// Pulls chunks from an inline call as the connection can take them.
struct InlineChunks {
    call: Option<Call>,
    /// Held until the response is done: the request runs until then.
    core: Option<Core>,
}

impl ChunkSource for InlineChunks {
    fn poll_chunk(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(None);
        };
        let next = Python::attach(|py| match call.next_chunk(py) {
            Ok(Some(b)) => {
                if let Some(core) = self.core.as_mut() {
                    core.chunk(b.len());
                }
                Some(Ok(b))
            }
            Ok(None) => {
                call.close(py);
                None
            }
            Err(e) => {
                let msg = log_late_error(py, call, e);
                call.close(py);
                Some(Err(BodyError::new(500, msg)))
            }
        });
        if !matches!(next, Some(Ok(_))) {
            self.call = None;
            if let Some(mut core) = self.core.take() {
                core.outcome.failed = next.is_some();
            }
        }
        Poll::Ready(next)
    }
}

/// Chunks produced by a pooled call on a Python thread.
struct ChannelChunks(mpsc::Receiver<Result<Bytes, BodyError>>);

impl ChunkSource for ChannelChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.0.poll_recv(cx)
    }
}

/// The region of a regular file behind `wsgi.file_wrapper`: from the app's
/// current position to the end, on a descriptor of oxgate's own.
fn file_region(py: Python<'_>, wrapper: &Bound<'_, FileWrapper>) -> Option<FileRegion> {
    let filelike = wrapper.borrow().filelike.clone_ref(py);
    let fd: i32 = filelike
        .bind(py)
        .call_method0("fileno")
        .ok()?
        .extract()
        .ok()?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
        return None;
    }
    // Python's file object may have buffered ahead; tell() knows where
    // the app's view of the file is.
    let offset: u64 = filelike
        .bind(py)
        .call_method0("tell")
        .ok()?
        .extract()
        .ok()?;
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    Some(FileRegion {
        fd: unsafe { OwnedFd::from_raw_fd(dup) },
        offset,
        len: (st.st_size as u64).saturating_sub(offset),
    })
}

/// `wsgi.file_wrapper`: an iterable over a file-like object. When the app
/// returns it unwrapped and the file is a regular file, the server reads the
/// descriptor itself instead of calling `read()` from Python.
#[pyclass(module = "oxgate")]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size = 8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        let done = data.len().map(|n| n == 0).unwrap_or(true);
        Ok(if done { None } else { Some(data) })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if let Some(close) = f.getattr_opt("close")? {
            close.call0()?;
        }
        Ok(())
    }
}

enum Source {
    /// The whole body, already in memory.
    Buffered(Bytes),
    /// A body still arriving; the feeder task starts reading it (and so
    /// sends `100 Continue`) on the first `read`.
    Streaming {
        start: Option<oneshot::Sender<()>>,
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        pending: Bytes,
        eof: bool,
    },
}

/// `wsgi.input`. Reading past the end returns `b""` and never blocks.
#[pyclass(module = "oxgate")]
pub(crate) struct Input {
    source: Source,
    /// Set when the client's body was malformed or too large: if the app
    /// then fails, the client is told about its own fault (400/413). Only
    /// a body still arriving can fail: none for one already read.
    failure: Option<Arc<OnceLock<BodyError>>>,
}

impl Input {
    fn buffered(body: Bytes) -> Input {
        Input {
            source: Source::Buffered(body),
            failure: None,
        }
    }

    fn streaming(mut body: BodyStream) -> Input {
        let (start_tx, start_rx) = oneshot::channel::<()>();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            if start_rx.await.is_ok() {
                while let Some(chunk) = body.chunk().await {
                    if tx.send(chunk).await.is_err() {
                        break; // the app is done with it
                    }
                }
            }
            // What the app left unread is read and dropped (up to a bound),
            // as gunicorn and nginx do: the connection then stays usable for
            // the client's next request instead of being closed under it.
            let mut left = UNREAD_BODY_DRAIN;
            while left > 0 {
                match body.chunk().await {
                    Some(Ok(b)) => left = left.saturating_sub(b.len()),
                    _ => break,
                }
            }
        });
        Input {
            source: Source::Streaming {
                start: Some(start_tx),
                rx,
                pending: Bytes::new(),
                eof: false,
            },
            failure: Some(Arc::default()),
        }
    }

    /// The buffered bytes not yet read; fetches the next chunk (blocking
    /// without the GIL) when they are used up. Empty only at the end.
    fn fill(&mut self, py: Python<'_>) -> PyResult<&mut Bytes> {
        let failure = &self.failure;
        match &mut self.source {
            Source::Buffered(b) => Ok(b),
            Source::Streaming {
                start,
                rx,
                pending,
                eof,
            } => {
                while pending.is_empty() && !*eof {
                    if let Some(start) = start.take() {
                        let _ = start.send(());
                    }
                    match py.detach(|| rx.blocking_recv()) {
                        Some(Ok(chunk)) => *pending = chunk,
                        Some(Err(e)) => {
                            *eof = true;
                            let msg = e.message.clone();
                            if let Some(failure) = failure {
                                let _ = failure.set(e);
                            }
                            return Err(PyIOError::new_err(msg));
                        }
                        None => *eof = true,
                    }
                }
                Ok(pending)
            }
        }
    }

    fn read_bytes(&mut self, py: Python<'_>, size: Option<usize>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = size.map(|s| s - out.len());
            if want == Some(0) {
                break;
            }
            let buf = self.fill(py)?;
            if buf.is_empty() {
                break;
            }
            let n = want.map_or(buf.len(), |w| w.min(buf.len()));
            out.extend_from_slice(&buf.split_to(n));
        }
        Ok(out)
    }

    fn read_line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = limit.map(|s| s - out.len());
            if want == Some(0) {
                break;
            }
            let buf = self.fill(py)?;
            if buf.is_empty() {
                break;
            }
            let avail = want.map_or(buf.len(), |w| w.min(buf.len()));
            match memchr(b'\n', &buf[..avail]) {
                Some(i) => {
                    out.extend_from_slice(&buf.split_to(i + 1));
                    break;
                }
                None => out.extend_from_slice(&buf.split_to(avail)),
            }
        }
        Ok(out)
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok(if n < 0 { None } else { Some(n as usize) })
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size)?;
        if let Source::Buffered(b) = &mut self.source {
            let n = size.map_or(b.len(), |s| s.min(b.len()));
            return Ok(PyBytes::new(py, &b.split_to(n)));
        }
        let data = self.read_bytes(py, size)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size)?;
        let line = self.read_line(py, size)?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?.filter(|h| *h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }
}
