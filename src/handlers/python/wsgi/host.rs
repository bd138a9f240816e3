//! The per-worker host of the WSGI apps: what is prepared once for every
//! request (the environ template, interned keys), its Python threads
//! ("cores") and the observer told of each request.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::super::pool::Pool;
use super::file_wrapper::FileWrapper;
use super::helpers::Helpers;
use crate::listen::Protocol;
use crate::request::{Outcome, RequestObserver, Response, ResponseBody, Var, VarName};

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
    /// Gunicorn's RAW_URI, REQUEST_URI by another name: apps and access
    /// log formats written for Gunicorn read it.
    pub(super) key_raw_uri: Py<PyString>,
    pub(super) empty: Py<PyString>,
    pub(crate) helpers: Helpers,
    pub(super) threads: usize,
    permits: Arc<Semaphore>,
    /// Core numbers not in use; one is taken with each permit.
    free_cores: std::sync::Mutex<Vec<usize>>,
    observer: OnceLock<Arc<dyn RequestObserver>>,
    pub(super) pool: OnceLock<Option<Pool>>,
    /// close() calls on the event loop that took `SLOW_CLOSE` or more.
    pub(super) slow_closes: std::sync::atomic::AtomicU32,
    /// The app called `write()`: with one thread, its requests leave the
    /// event loop for a Python thread (`note_writes`).
    pub(super) writes_seen: std::sync::atomic::AtomicBool,
}

/// A result's close() this slow, run on the event loop before the response
/// is flushed, holds the response back noticeably.
pub(super) const SLOW_CLOSE: std::time::Duration = std::time::Duration::from_millis(2);
/// After this many, the app's close() runs after the response is written
/// (`after_write`), as Gunicorn and uWSGI run it. Not from the start: the
/// next request waits for close(), so each response would be written alone
/// rather than in the turn's batch, and an app with a quick close() (most:
/// Flask's and Django's) served 20% fewer requests a second.
const SLOW_CLOSES_TO_DEFER: u32 = 3;

/// One WSGI app as a request handler: the worker's shared host, and the
/// callable (or, with `--vhost`, the rule that finds it).
pub struct WsgiApp {
    pub(super) host: Arc<WsgiHost>,
    pub(super) callable: Callable,
}

pub(super) enum Callable {
    Fixed(Py<PyAny>),
    /// `--vhost`: the app the request's UWSGI_* variables name, else this
    /// one (if any).
    Vhost(Option<Py<PyAny>>),
    /// No app here (only `--mount` apps, and no mountpoint matched): a 404
    /// that is logged and counted like any request.
    Missing,
}

impl WsgiApp {
    pub(crate) fn new(host: Arc<WsgiHost>, app: Py<PyAny>) -> WsgiApp {
        WsgiApp {
            host,
            callable: Callable::Fixed(app),
        }
    }

    pub(crate) fn missing(host: Arc<WsgiHost>) -> WsgiApp {
        WsgiApp {
            host,
            callable: Callable::Missing,
        }
    }

    pub(crate) fn vhost(host: Arc<WsgiHost>, fallback: Option<Py<PyAny>>) -> WsgiApp {
        WsgiApp {
            host,
            callable: Callable::Vhost(fallback),
        }
    }
}

/// A Python thread's worth of capacity, held for the whole request: its
/// permit and its core number for the observer.
pub(super) struct Core {
    pub(super) host: Arc<WsgiHost>,
    index: usize,
    /// What the request log and the counters say of the response.
    pub(super) outcome: Outcome,
    /// Dropped with the core, when the app is done with the request: the
    /// body it left unread is then read and dropped (`Input::streaming`),
    /// even if its `wsgi.input` lives on in a reference cycle.
    pub(super) input_done: Option<tokio::sync::oneshot::Sender<()>>,
    _permit: OwnedSemaphorePermit,
}

impl Core {
    pub(super) fn head(&mut self, status: u16, reason: Option<&str>, headers: &[(Bytes, Bytes)]) {
        self.outcome.note_head(status, reason, headers);
    }

    /// A response complete as it is.
    pub(super) fn whole(&mut self, r: &Response) {
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
    pub(crate) fn new(
        py: Python<'_>,
        helpers: Helpers,
        threads: usize,
        multiprocess: bool,
        file_wrapper: bool,
    ) -> PyResult<WsgiHost> {
        let template = PyDict::new(py);
        template.set_item("wsgi.version", (1, 0))?;
        template.set_item("wsgi.url_scheme", "http")?;
        template.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
        template.set_item("wsgi.multithread", threads > 1)?;
        template.set_item("wsgi.multiprocess", multiprocess)?;
        template.set_item("wsgi.run_once", false)?;
        template.set_item("wsgi.input_terminated", true)?;
        if file_wrapper {
            template.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        }
        template.set_item("SCRIPT_NAME", "")?;
        // As Gunicorn's environ has it: a Gunicorn config sets the
        // process's (`oxgate/0.1.0 (gunicorn)`), which every request gets
        // unless its front end sends one (nginx's fastcgi_params). uWSGI
        // makes none up.
        if let Ok(software) = std::env::var("SERVER_SOFTWARE") {
            template.set_item("SERVER_SOFTWARE", software)?;
        }
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
            key_raw_uri: PyString::intern(py, "RAW_URI").unbind(),
            empty: PyString::intern(py, "").unbind(),
            helpers,
            threads,
            permits: Arc::new(Semaphore::new(threads)),
            free_cores: std::sync::Mutex::new((0..threads).rev().collect()),
            observer: OnceLock::new(),
            pool: OnceLock::new(),
            slow_closes: Default::default(),
            writes_seen: Default::default(),
        })
    }

    /// Whether the app's close() is slow enough to run after the response
    /// is written (see `SLOW_CLOSES_TO_DEFER`).
    pub(super) fn defers_close(&self) -> bool {
        self.slow_closes.load(std::sync::atomic::Ordering::Relaxed) >= SLOW_CLOSES_TO_DEFER
    }

    /// How many Python threads run the app (FastCGI's FCGI_MAX_REQS).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Lets the worker's scoreboard see each request start and end.
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.observer.set(observer);
    }

    /// The Python threads (cores) free to start a request.
    pub(super) fn permits(&self) -> Arc<Semaphore> {
        self.permits.clone()
    }

    /// Waits for a free Python thread; `None` when shutting down.
    pub(super) async fn core(
        self: &Arc<Self>,
        vars: &[(VarName, Bytes)],
        protocol: Protocol,
    ) -> Option<Core> {
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
            input_done: None,
            _permit: permit,
        })
    }
}

/// The variables (nearly) every request has: the environ template holds a
/// placeholder for each, as for `wsgi.input`, so that a request's copy is
/// made at its final size, and setting them replaces a value rather than
/// adding an entry (no table growth, no probing for a free slot).
pub(super) const SLOTTED: [Var; 11] = [
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
