//! The per-worker ASGI host: the loop thread, its inbox, and the request
//! slots ("cores") the scoreboard and the request log see.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

use super::ready::Ready;
use super::scope::ScopeKeys;
use super::wake_relay::WakeRelay;
use crate::config::{AsgiSettings, Words};
use crate::listen::Protocol;
use crate::request::{Outcome, RequestObserver, VarName};

/// How many requests one worker's request log and scoreboard follow at
/// once; requests beyond are served but not logged one by one.
pub const ASGI_CORES: usize = 1024;

/// The loop and what each request needs of it, made on the loop thread.
pub(super) struct LoopObjects {
    pub(super) event_loop: Py<PyAny>,
    pub(super) create_task: Py<PyAny>,
    /// `asyncio.Task` and its keyword arguments, called in place of
    /// `create_task` when the loop has no task factory: the same task,
    /// without the name formatted for each one (`Task-N`) or the
    /// loop's own wrapper.
    pub(super) new_task: Option<(Py<PyAny>, Py<PyDict>)>,
    pub(super) create_future: Py<PyAny>,
    /// A done awaitable that gives None: what `send()` returns.
    pub(super) ready: Py<Ready>,
    pub(super) keys: ScopeKeys,
}

/// An app's name, callable and lifespan state.
pub(super) type LifespanApp = (String, Py<PyAny>, Py<PyDict>);

/// Work for the loop thread, run there with the GIL.
pub(super) type Job = Box<dyn FnOnce(Python<'_>, &LoopObjects) + Send>;

/// The ASGI apps of one worker and the loop they run on.
pub struct AsgiHost {
    pub(super) settings: AsgiSettings,
    /// The first core number of this host: WSGI threads, if any, come first.
    pub(super) first_core: usize,
    /// What runs on the loop thread; set once the loop is up.
    pub(super) loop_objects: OnceLock<LoopObjects>,
    pub(super) inbox: Mutex<Vec<Job>>,
    /// Written to wake the loop; its other end is the loop's reader.
    pub(super) wake: OnceLock<(OwnedFd, OwnedFd)>,
    pub(super) running: AtomicBool,
    /// Wakes connection tasks from the loop thread, in batches.
    pub(super) relay: Arc<WakeRelay>,
    pub(super) thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// (name, app, lifespan state) of each app, for the lifespan protocol.
    pub(super) apps: Mutex<Vec<LifespanApp>>,
    pub(super) helpers: Helpers,
    observer: OnceLock<Arc<dyn RequestObserver>>,
    /// Slot numbers given back, and how many were ever handed out.
    cores: Mutex<(Vec<usize>, usize)>,
}

pub(super) struct Helpers {
    pub(super) serve: Py<PyAny>,
    pub(super) run_http: Py<PyAny>,
    pub(super) exception_text: Py<PyAny>,
    /// What each request's task is named (`serve` waits for those).
    pub(super) request_task_name: Py<PyAny>,
}

/// One ASGI app as a request handler.
pub struct AsgiApp {
    pub(super) host: Arc<AsgiHost>,
    pub(super) callable: Py<PyAny>,
    /// The lifespan state: each request's scope gets a shallow copy.
    pub(super) state: Py<PyDict>,
}

fn module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let code = CString::new(include_str!("../asgi.py")).expect("no NUL in asgi.py");
    PyModule::from_code(py, &code, c"oxgate/asgi.py", c"_oxgate_asgi")
}

/// The loop `--loop` will pick, without importing it (for the start-up log).
pub fn loop_name(kind: crate::config::LoopKind) -> String {
    Python::attach(|py| {
        module(py)
            .and_then(|m| m.getattr("loop_name")?.call1((kind.name(),))?.extract())
            .unwrap_or_else(|_| kind.name().to_string())
    })
}

impl AsgiHost {
    pub(crate) fn new(
        py: Python<'_>,
        settings: AsgiSettings,
        first_core: usize,
        exception_text: Py<PyAny>,
    ) -> PyResult<AsgiHost> {
        let m = module(py)?;
        Ok(AsgiHost {
            settings,
            first_core,
            loop_objects: OnceLock::new(),
            inbox: Mutex::new(Vec::new()),
            wake: OnceLock::new(),
            running: AtomicBool::new(false),
            relay: Arc::default(),
            thread: Mutex::new(None),
            apps: Mutex::new(Vec::new()),
            helpers: Helpers {
                serve: m.getattr("serve")?.unbind(),
                run_http: m.getattr("run_http")?.unbind(),
                exception_text,
                request_task_name: m.getattr("REQUEST_TASK_NAME")?.unbind(),
            },
            observer: OnceLock::new(),
            cores: Mutex::new((Vec::new(), 0)),
        })
    }

    /// An app of this host, named for the log.
    pub(crate) fn app(
        self: &Arc<Self>,
        py: Python<'_>,
        name: String,
        callable: Py<PyAny>,
    ) -> AsgiApp {
        let state = PyDict::new(py).unbind();
        self.apps.lock().expect("not poisoned").push((
            name,
            callable.clone_ref(py),
            state.clone_ref(py),
        ));
        AsgiApp {
            host: self.clone(),
            callable,
            state,
        }
    }

    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Whether the loop takes requests.
    pub(super) fn running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Hands a job to the loop thread, waking it if its inbox was empty.
    pub(super) fn post(&self, job: Job) {
        let was_empty = {
            let mut inbox = self.inbox.lock().expect("not poisoned");
            let was_empty = inbox.is_empty();
            inbox.push(job);
            was_empty
        };
        if was_empty && let Some((_, tx)) = self.wake.get() {
            // A full pipe already holds a wake-up.
            let _ = nix::unistd::write(tx, &[1]);
        }
    }

    /// Empties the wake-up pipe and takes the jobs waiting (on the loop
    /// thread). Jobs posted after this wake the loop again.
    pub(super) fn take_jobs(&self, spare: Vec<Job>) -> Vec<Job> {
        if let Some((rx, _)) = self.wake.get() {
            let mut buf = [0u8; 64];
            while matches!(nix::unistd::read(rx, &mut buf), Ok(n) if n == buf.len()) {}
        }
        std::mem::replace(&mut *self.inbox.lock().expect("not poisoned"), spare)
    }

    /// Takes a request slot and tells the observer the request started.
    pub(super) fn begin(self: &Arc<Self>, vars: &[(VarName, Bytes)], protocol: Protocol) -> Slot {
        let index = {
            let mut cores = self.cores.lock().expect("not poisoned");
            let (free, made) = &mut *cores;
            free.pop().unwrap_or_else(|| {
                *made += 1;
                *made - 1
            })
        };
        let core = self.first_core + index;
        // Past the scoreboard's cores (that many requests in flight: open
        // WebSockets, long polls), a request has no place of its own: it
        // is logged and counted when it ends, as one the server answered.
        let mut overflow = None;
        if let Some(o) = self.observer.get() {
            if index < ASGI_CORES {
                o.started(core, vars, protocol);
            } else {
                overflow = Some((vars.to_vec(), crate::sys::clock::now_us()));
            }
        }
        Slot {
            host: self.clone(),
            index,
            overflow,
            outcome: Outcome {
                protocol,
                ..Outcome::default()
            },
        }
    }
}

/// A request's place in the worker's scoreboard and request log, held
/// until its response is sent (or the client leaves).
pub(super) struct Slot {
    host: Arc<AsgiHost>,
    index: usize,
    /// A request past the scoreboard's cores: its variables and when it
    /// began, for its line and figures at the end.
    overflow: Option<(Vec<(VarName, Bytes)>, u64)>,
    pub(super) outcome: Outcome,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(o) = self.host.observer.get() {
            match &self.overflow {
                None => o.finished(self.host.first_core + self.index, &self.outcome),
                Some((vars, began)) => {
                    let elapsed = crate::sys::clock::now_us().saturating_sub(*began);
                    o.answered(vars, &self.outcome, elapsed);
                }
            }
        }
        self.host
            .cores
            .lock()
            .expect("not poisoned")
            .0
            .push(self.index);
    }
}
