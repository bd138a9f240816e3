//! The loop thread's side: the jobs the worker's tokio thread posts, and
//! the `Bridge` object the loop calls when its wake-up pipe is readable.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;

use super::exchange::{Exchange, Ready, Receive, Send, body_message, disconnect_message};
use super::host::{AsgiApp, AsgiHost};
use super::scope::{Fields, ScopeKeys, http_scope};
use crate::request::VarName;

/// The loop and what each request needs of it, made on the loop thread.
pub(super) struct LoopObjects {
    pub(super) event_loop: Py<PyAny>,
    pub(super) create_task: Py<PyAny>,
    pub(super) create_future: Py<PyAny>,
    /// A done awaitable that gives None: what `send()` returns.
    pub(super) ready: Py<Ready>,
    pub(super) keys: ScopeKeys,
}

pub(super) enum Job {
    Start(Start),
    /// Resolves futures the app awaits (`receive()`, a waiting `send()`).
    Settle(Vec<Py<PyAny>>, Settlement),
    Stop,
}

pub(super) struct Start {
    pub(super) app: Arc<AsgiApp>,
    pub(super) vars: Vec<(VarName, Bytes)>,
    /// The request body, when it was read whole.
    pub(super) whole: Option<Bytes>,
    pub(super) exchange: Arc<Exchange>,
}

pub(super) enum Settlement {
    Body(Bytes, bool),
    Disconnect,
    Nothing,
}

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

    fn run(&self, py: Python<'_>, job: Job) {
        match job {
            Job::Start(s) => {
                let exchange = s.exchange.clone();
                if let Err(e) = self.start(py, s) {
                    crate::say!("oxgate: internal error while starting an ASGI request: {e}");
                    exchange.ended(super::exchange::AppEnd::Failed);
                }
            }
            Job::Settle(waiters, settlement) => {
                let value = match settlement {
                    Settlement::Body(b, more) => body_message(py, &b, more).map(|d| d.into_any()),
                    Settlement::Disconnect => disconnect_message(py).map(|d| d.into_any()),
                    Settlement::Nothing => Ok(py.None().into_bound(py)),
                };
                let Ok(value) = value else { return };
                for fut in waiters {
                    let fut = fut.bind(py);
                    // A future the app cancelled (a timeout) is done already.
                    if fut
                        .call_method0("done")
                        .and_then(|d| d.is_truthy())
                        .is_ok_and(|done| !done)
                    {
                        let _ = fut.call_method1("set_result", (&value,));
                    }
                }
            }
            Job::Stop => {
                if let Some(o) = self.host.loop_objects.get() {
                    let _ = o.event_loop.call_method0(py, "stop");
                }
            }
        }
    }

    fn start(&self, py: Python<'_>, s: Start) -> PyResult<()> {
        let objects = self
            .host
            .loop_objects
            .get()
            .expect("jobs run on a started loop");
        let fields = Fields::of(&s.vars);
        let scope = http_scope(py, &objects.keys, &s.vars, &fields, &s.app.state)?;
        let receive = Py::new(py, Receive::new(s.exchange.clone(), s.whole))?;
        let send = Py::new(py, Send::new(s.exchange, fields.request_line()))?;
        let coro = self
            .host
            .helpers
            .run_http
            .call1(py, (&s.app.callable, scope, receive, send))?;
        objects.create_task.call1(py, (coro,))?;
        Ok(())
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
                let objects = LoopObjects {
                    create_task: l.getattr("create_task")?.unbind(),
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

    /// The wake-up pipe is readable: runs the jobs posted since the last.
    fn _drain(&self, py: Python<'_>) {
        let spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        let mut jobs = self.host.take_jobs(spare);
        for job in jobs.drain(..) {
            self.run(py, job);
        }
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = jobs;
    }
}
