//! The loop thread's side: the jobs the worker's tokio thread posts, and
//! the `Bridge` object the loop calls when its wake-up pipe is readable.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;

use super::exchange::{AppEnd, Exchange, Receive, Send};
use super::host::{AsgiApp, AsgiHost, Job, LifespanApp, LoopObjects};
use super::ready::Ready;
use super::scope::{
    Fields, RequestLine, RequestVars, ScopeKeys, http_scope, offered_subprotocols, websocket_scope,
};
use super::ws::{WsExchange, WsReceive, WsSend};
use crate::config::Words;

#[pyclass(module = "oxgate")]
pub(super) struct Bridge {
    host: Arc<AsgiHost>,
    started: Mutex<Option<Sender<Result<String, String>>>>,
    /// The emptied job list of the last wake-up, reused.
    spare: Mutex<Vec<Job>>,
}

impl Bridge {
    pub(super) fn new(host: Arc<AsgiHost>, started: Sender<Result<String, String>>) -> Bridge {
        Bridge {
            host,
            started: Mutex::new(Some(started)),
            spare: Mutex::new(Vec::new()),
        }
    }
}

#[pymethods]
impl Bridge {
    /// The loop is up (or could not start): `error` says why not.
    #[pyo3(signature = (error, name, event_loop=None))]
    fn _started(
        &self,
        py: Python<'_>,
        error: Option<String>,
        name: String,
        event_loop: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let Some(tx) = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let result = match (error, event_loop) {
            (None, Some(l)) => {
                super::ready::install_send_slot(py);
                let objects = LoopObjects {
                    create_task: l.getattr("create_task")?.unbind(),
                    new_task: plain_task(py, &l, &self.host.helpers.request_task_name)?,
                    create_future: l.getattr("create_future")?.unbind(),
                    ready: Py::new(py, Ready::new(None))?,
                    keys: ScopeKeys::new(py)?,
                    event_loop: l.unbind(),
                };
                let _ = self.host.loop_objects.set(objects);
                Ok(name)
            }
            (Some(e), _) => Err(e),
            (None, None) => Err("the ASGI loop did not start".into()),
        };
        let _ = tx.send(result);
        Ok(())
    }

    /// Seconds left for the apps' shutdown once the loop stopped: what the
    /// worker's stop has left before its master kills it, else the mercy.
    fn _shutdown_left(&self) -> f64 {
        crate::sys::signals::stop_time_left()
            .unwrap_or(self.host.settings.shutdown_timeout)
            .as_secs_f64()
    }

    /// The wake-up pipe is readable: runs the jobs posted since the last.
    fn _drain(&self, py: Python<'_>) {
        let spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        let mut jobs = self.host.take_jobs(spare);
        let objects = self
            .host
            .loop_objects
            .get()
            .expect("jobs come once the loop is up");
        for job in jobs.drain(..) {
            job(py, objects);
        }
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = jobs;
    }
}

/// Starts an HTTP request's app call on the loop thread: the scope, the
/// `receive` and `send` callables, and the task.
pub(super) fn start_request(
    py: Python<'_>,
    objects: &LoopObjects,
    app: &AsgiApp,
    req: RequestVars,
    whole: Option<Bytes>,
    exchange: Arc<Exchange>,
    trailers: bool,
) {
    let run = || -> PyResult<()> {
        let fields = Fields::of(&req);
        let vars = &req.vars;
        let hints = exchange.early_hints.is_some();
        let scope = http_scope(
            py,
            &objects.keys,
            vars,
            &fields,
            &app.state,
            trailers,
            hints,
        )?;
        let receive = Py::new(py, Receive::new(exchange.clone(), whole))?;
        let send = Py::new(py, Send::new(exchange.clone(), RequestLine::of(vars)))?;
        let task = spawn_app(py, objects, app, scope, receive.into_any(), send.into_any())?;
        // Held until the app ends (it cannot have: the task has not run).
        exchange.lock().task = Some(task);
        Ok(())
    };
    if let Err(e) = run() {
        crate::say!("oxgate: internal error while starting an ASGI request: {e}");
        exchange.ended(AppEnd::Failed);
    }
}

/// Runs the app on its scope as a task of the loop, inside `run_http`,
/// which tells `send` how the app ended. Returns the task, for the
/// exchange to hold until then.
fn spawn_app(
    py: Python<'_>,
    objects: &LoopObjects,
    app: &AsgiApp,
    scope: Bound<'_, pyo3::types::PyDict>,
    receive: Py<PyAny>,
    send: Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    let coro = app
        .host
        .helpers
        .run_http
        .call1(py, (&app.callable, scope, receive, send))?;
    match &objects.new_task {
        Some((task, kwargs)) => task.call(py, (coro,), Some(kwargs.bind(py))),
        None => objects.create_task.call1(py, (coro,)),
    }
}

/// What makes a request's task when the loop has no task factory (one
/// set in the app's lifespan startup is honoured): `asyncio.Task` with
/// the loop and one name for every request's task, as uvicorn's and
/// uvloop's `create_task` would make it but for the name.
fn plain_task(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    name: &Py<PyAny>,
) -> PyResult<Option<(Py<PyAny>, Py<pyo3::types::PyDict>)>> {
    if !event_loop.call_method0("get_task_factory")?.is_none() {
        return Ok(None);
    }
    let task = py.import("asyncio")?.getattr("Task")?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("loop", event_loop)?;
    kwargs.set_item("name", name)?;
    Ok(Some((task.unbind(), kwargs.unbind())))
}

/// Starts a WebSocket's app call on the loop thread.
pub(super) fn start_websocket(
    py: Python<'_>,
    objects: &LoopObjects,
    app: &AsgiApp,
    req: RequestVars,
    exchange: Arc<WsExchange>,
) {
    let run = || -> PyResult<()> {
        let fields = Fields::of(&req);
        let vars = &req.vars;
        let scope = websocket_scope(py, &objects.keys, vars, &fields, &app.state)?;
        let receive = Py::new(py, WsReceive::new(exchange.clone()))?;
        let offered = offered_subprotocols(vars).map(<[u8]>::to_vec).collect();
        let send = Py::new(
            py,
            WsSend::new(exchange.clone(), RequestLine::of(vars), offered),
        )?;
        let task = spawn_app(py, objects, app, scope, receive.into_any(), send.into_any())?;
        // Held until the app ends (it cannot have: the task has not run).
        exchange.lock().task = Some(task);
        Ok(())
    };
    if let Err(e) = run() {
        crate::say!("oxgate: internal error while starting an ASGI WebSocket: {e}");
        exchange.ended(AppEnd::Failed);
    }
}

impl AsgiHost {
    /// Starts the loop thread and runs the apps' lifespan startup. Called
    /// in each worker after the fork (no thread may exist before it).
    /// Returns the loop's name, or why the app may not serve.
    pub fn start(self: &Arc<Self>) -> Result<String, String> {
        let (rx, tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot make the ASGI loop's wake-up pipe: {e}"))?;
        let read_fd = std::os::fd::AsRawFd::as_raw_fd(&rx);
        let _ = self.wake.set((rx, tx));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let host = self.clone();
        let handle = std::thread::Builder::new()
            .name("oxgate-asgi".into())
            .spawn(move || {
                super::wake_relay::mark_loop_thread();
                Python::attach(|py| {
                    let bridge = Bridge::new(host.clone(), started_tx.clone());
                    let apps: Vec<LifespanApp> = host
                        .apps
                        .lock()
                        .expect("not poisoned")
                        .iter()
                        .map(|(n, a, s)| (n.clone(), a.clone_ref(py), s.clone_ref(py)))
                        .collect();
                    let result = Py::new(py, bridge).and_then(|bridge| {
                        host.helpers.serve.call1(
                            py,
                            (
                                bridge,
                                apps,
                                host.settings.lifespan.name(),
                                host.settings.event_loop.name(),
                                read_fd,
                            ),
                        )
                    });
                    if let Err(e) = result {
                        let _ = started_tx.send(Err(format!("the ASGI loop failed: {e}")));
                    }
                });
                host.running.store(false, Ordering::Release);
            })
            .map_err(|e| format!("cannot start the ASGI thread: {e}"))?;
        *self.thread.lock().expect("not poisoned") = Some(handle);
        let started = started_rx
            .recv()
            .unwrap_or_else(|_| Err("the ASGI loop ended before it started".into()));
        match started {
            Ok(name) => {
                self.running.store(true, Ordering::Release);
                Ok(name)
            }
            Err(e) => {
                self.join();
                Err(e)
            }
        }
    }

    /// The stop is about to end the requests still open: event streams of
    /// sse-starlette (FastAPI's usual SSE library) are told to end, as it
    /// ends them under uvicorn (its switch, `AppStatus.should_exit`, which
    /// it sets from uvicorn's exit handler), so that their clients get the
    /// stream's clean end, not a cut.
    pub fn going_away(&self) {
        if self.running.load(Ordering::Acquire) {
            self.post(Box::new(|py, _objects| {
                let _ = py.run(SSE_STARLETTE_EXIT, None, None);
            }));
        }
    }

    /// Runs the lifespan shutdown and stops the loop: after the last
    /// request, on a graceful stop, a reload or a recycle.
    pub fn stop(&self) {
        if self.running.swap(false, Ordering::AcqRel) {
            self.post(Box::new(|py, objects| {
                let _ = objects.event_loop.call_method0(py, "stop");
            }));
        }
        self.join();
    }

    fn join(&self) {
        let handle = self.thread.lock().expect("not poisoned").take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// sse-starlette's own switch for the end of its streams (it honours
/// `disable_automatic_graceful_drain`, as under uvicorn).
const SSE_STARLETTE_EXIT: &std::ffi::CStr = c"
import sys
_sse = sys.modules.get('sse_starlette.sse')
if _sse is not None and getattr(_sse.AppStatus, 'enable_automatic_graceful_drain', True):
    _sse.AppStatus.should_exit = True
del _sse
";
