//! Gunicorn's Python config file, run in this process's interpreter (the
//! one that will load the app, so that its hooks are at hand later).

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::config::gunicorn::PyValue;

/// The module applying Gunicorn's logging dicts (`gunicorn_logging.py`),
/// made once: the config file's reader and the app loader both use it.
pub(super) fn gunicorn_logging(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    if let Ok(m) = py.import("_oxgate_gunicorn_logging") {
        return Ok(m);
    }
    let code = CString::new(include_str!("gunicorn_logging.py")).expect("no NUL");
    PyModule::from_code(
        py,
        &code,
        c"oxgate/gunicorn_logging.py",
        c"_oxgate_gunicorn_logging",
    )
}

/// Starts the interpreter if it is not running yet, runs `source` (a path,
/// or `python:module`) and reports the names the file left.
pub fn read_gunicorn_config(
    source: &str,
    home: Option<&Path>,
) -> Result<Vec<(String, PyValue)>, String> {
    super::initialize(home)?;
    Python::attach(|py| {
        gunicorn_logging(py).map_err(|e| format!("internal: {e}"))?;
        let code = CString::new(include_str!("gunicorn_conf.py")).expect("no NUL");
        let module = PyModule::from_code(
            py,
            &code,
            c"oxgate/gunicorn_conf.py",
            c"_oxgate_gunicorn_conf",
        )
        .map_err(|e| format!("internal: {e}"))?;
        // Kept importable, so the hooks' namespace outlives this call.
        py.import("sys")
            .and_then(|sys| sys.getattr("modules"))
            .and_then(|m| m.set_item("_oxgate_gunicorn_conf", &module))
            .map_err(|e| format!("internal: {e}"))?;
        type Names = Option<Vec<(String, String, Py<PyAny>)>>;
        let (names, error): (Names, Option<String>) = module
            .call_method1("read", (source,))
            .and_then(|r| r.extract())
            .map_err(|e| format!("internal: {e}"))?;
        if let Some(e) = error {
            return Err(e);
        }
        let names = names.unwrap_or_default();
        let has_hooks: bool = module
            .call_method0("has_hooks")
            .and_then(|r| r.extract())
            .map_err(|e| format!("internal: {e}"))?;
        HOOKS.store(has_hooks, Ordering::Relaxed);
        names
            .into_iter()
            .map(|(name, kind, value)| {
                let value = value.bind(py);
                let v = match kind.as_str() {
                    "none" => PyValue::None,
                    "bool" => PyValue::Bool(value.extract().unwrap_or(false)),
                    "int" => match value.extract::<i64>() {
                        Ok(i) => PyValue::Int(i),
                        Err(_) => PyValue::Other("int".into()),
                    },
                    "str" => PyValue::Str(value.extract().unwrap_or_default()),
                    "list" => PyValue::List(value.extract().unwrap_or_default()),
                    "callable" => PyValue::Callable,
                    _ => PyValue::Other(value.extract().unwrap_or_default()),
                };
                Ok((name, v))
            })
            .collect()
    })
}

/// Whether the config file defined any server hook: until it does, every
/// hook call is a no-op that takes no lock.
static HOOKS: AtomicBool = AtomicBool::new(false);

/// What a hook is called with, besides its name: Gunicorn's `worker.pid`
/// and `worker.age`, the number of workers, and for `nworkers_changed` the
/// new and old counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct HookContext {
    pub worker_pid: Option<i32>,
    pub age: u64,
    pub num_workers: usize,
    pub nworkers: Option<(usize, Option<usize>)>,
}

/// Calls the config file's server hook `name`, if it defined one, in this
/// process (the master's hooks in the master, the worker's in the worker).
/// False when the hook raised (it is logged): some hooks' failures stop
/// Gunicorn, and their callers stop oxgate alike.
pub fn call_gunicorn_hook(name: &str, cx: HookContext) -> bool {
    if !HOOKS.load(Ordering::Relaxed) || !super::python_running() {
        return true;
    }
    let (new, old) = cx.nworkers.unzip();
    Python::attach(|py| {
        let called = py.import("_oxgate_gunicorn_conf").and_then(|m| {
            m.call_method1(
                "call",
                (
                    name,
                    cx.worker_pid,
                    cx.age,
                    cx.num_workers,
                    new,
                    old.flatten(),
                ),
            )
        });
        match called {
            Ok(ok) => ok.extract::<bool>().unwrap_or(true),
            Err(e) => {
                crate::say!("oxgate: internal error calling the {name} hook: {e}");
                true
            }
        }
    })
}

/// Tells the hooks' `server.cfg` what oxgate resolved from every source
/// for the settings it has values of: a worker count given on the command
/// line is the one `server.cfg.workers` says.
pub fn share_settings_with_hooks(cfg: &crate::config::Config) {
    if !HOOKS.load(Ordering::Relaxed) || !super::python_running() {
        return;
    }
    let p = &cfg.process;
    let bind: Vec<String> = cfg
        .http_sockets
        .iter()
        .chain(cfg.https_sockets.iter().map(|s| &s.addr))
        .map(|a| {
            if a.starts_with('/') {
                format!("unix:{a}")
            } else {
                a.clone()
            }
        })
        .collect();
    Python::attach(|py| {
        let shared = (|| -> PyResult<()> {
            let d = pyo3::types::PyDict::new(py);
            // What the command line and GUNICORN_CMD_ARGS said, over the
            // file's own values; then what oxgate resolved, which knows
            // every source.
            for (name, value) in &cfg.gunicorn_given {
                match value {
                    PyValue::Bool(b) => d.set_item(name, b)?,
                    PyValue::Int(n) => d.set_item(name, n)?,
                    PyValue::Str(v) => d.set_item(name, v)?,
                    PyValue::List(items) => d.set_item(name, items)?,
                    PyValue::None | PyValue::Callable | PyValue::Other(_) => {}
                }
            }
            d.set_item("workers", p.processes)?;
            d.set_item("threads", cfg.threads)?;
            if !bind.is_empty() {
                d.set_item("bind", bind)?;
            }
            d.set_item("max_requests", p.max_requests.unwrap_or(0))?;
            d.set_item("max_requests_jitter", p.max_requests_jitter)?;
            d.set_item("backlog", cfg.listen_backlog)?;
            d.set_item("preload_app", !p.lazy_apps)?;
            d.set_item("daemon", p.daemonize.is_some() || p.daemonize2.is_some())?;
            if let Some(pidfile) = p.pidfile.as_ref().or(p.pidfile2.as_ref()) {
                d.set_item("pidfile", pidfile.to_string_lossy())?;
            }
            if let Some(keepalive) = cfg.keepalive_timeout {
                d.set_item("keepalive", keepalive.as_secs())?;
            }
            if let Some(root) = &cfg.root_path {
                d.set_item("root_path", root)?;
            }
            // Gunicorn's default_proc_name: the app as named to it.
            if let Some(crate::config::AppSpec {
                source: crate::config::AppSource::Module(module),
                callable,
            }) = &cfg.app
            {
                d.set_item("default_proc_name", format!("{module}:{callable}"))?;
            }
            py.import("_oxgate_gunicorn_conf")?.call_method1(
                "set_effective",
                (
                    d,
                    crate::config::gunicorn::setting_names().collect::<Vec<_>>(),
                ),
            )?;
            Ok(())
        })();
        if let Err(e) = shared {
            crate::say!("oxgate: internal error giving the hooks their settings: {e}");
        }
    });
}

/// Whether the config file defined the server hook `name`.
pub fn has_gunicorn_hook(name: &str) -> bool {
    if !HOOKS.load(Ordering::Relaxed) || !super::python_running() {
        return false;
    }
    Python::attach(|py| {
        py.import("_oxgate_gunicorn_conf")
            .and_then(|m| m.call_method1("has_hook", (name,)))
            .and_then(|r| r.extract())
            .unwrap_or(false)
    })
}

/// The WSGI app, with the file's pre_request and post_request hooks around
/// each request when it defines them.
pub(super) fn wrap_wsgi_app(py: Python<'_>, app: Py<PyAny>) -> Result<Py<PyAny>, String> {
    if !HOOKS.load(Ordering::Relaxed) {
        return Ok(app);
    }
    py.import("_oxgate_gunicorn_conf")
        .and_then(|m| m.call_method1("wrap_wsgi_app", (app,)))
        .map(Bound::unbind)
        .map_err(|e| format!("internal: {e}"))
}
