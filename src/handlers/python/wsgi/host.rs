//! The per-worker host of the WSGI apps and the scheduling of each request:
//! inline on the event loop, or on a thread of the Python pool.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};

use super::super::pool::Pool;
use super::body::{ChannelChunks, InlineChunks, file_body};
use super::environ::SLOTTED;
use super::error::{CallError, log_late_error};
use super::file_wrapper::FileWrapper;
use super::helpers::Helpers;
use super::input::Input;
use super::start_response::Head;
use crate::listen::Protocol;
use crate::request::{
    BodyError, BodyStream, FileBody, Outcome, Request, RequestBody, RequestObserver, Response,
    ResponseBody, Var, VarName, head_size,
};
use crate::request::{Handler, Responding};

/// Chunks buffered between a Python thread and the connection, each way.
pub(super) const CHANNEL_DEPTH: usize = 2;

/// The app and everything prepared once for the per-request path.
pub struct WsgiHost {
    /// `--vhost`: apps loaded as requests' UWSGI_* variables ask, by key.
    pub(super) dynamic: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Py<PyAny>>>,
    /// The environ entries that are the same for every request, and a
    /// placeholder for each of `SLOTTED` (see `environ`).
    pub(super) template: Py<PyDict>,
    /// An interned key for each known CGI variable, indexed by `Var`.
    pub(super) keys: Vec<Py<PyString>>,
    /// For each known CGI variable, its bit if it is one of `SLOTTED`.
    pub(super) slot_bits: Vec<u16>,
    pub(super) key_input: Py<PyString>,
    pub(super) empty: Py<PyString>,
    pub(super) helpers: Helpers,
    threads: usize,
    permits: Arc<Semaphore>,
    /// Core numbers not in use; one is taken with each permit.
    free_cores: std::sync::Mutex<Vec<usize>>,
    observer: OnceLock<Arc<dyn RequestObserver>>,
    pub(super) pool: OnceLock<Pool>,
}

/// One WSGI app as a request handler: the worker's shared host, and the
/// callable (or, with `--vhost`, the rule that finds it).
pub struct WsgiApp {
    host: Arc<WsgiHost>,
    pub(super) callable: Callable,
}

pub(super) enum Callable {
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
pub(super) struct Core {
    pub(super) host: Arc<WsgiHost>,
    index: usize,
    /// What the request log and the counters say of the response.
    pub(super) outcome: Outcome,
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

    pub(super) fn chunk(&mut self, len: usize) {
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
}

/// What a pooled call hands the event loop once its head is known.
enum Started {
    /// The head, the first chunk, and whether the body is complete.
    Head(Head, Option<Bytes>, bool),
    /// The head and a file to send as the body.
    File(Head, FileBody),
}
