//! The only code that touches PyO3: starting the interpreter, loading the
//! app, and the WSGI call path. ASGI will live here too.

mod pool;
mod wsgi;

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

pub use wsgi::WsgiHost;

use crate::config::{AppSource, AppSpec};

/// The interpreter's program name decides `sys.prefix`: pointing it at a
/// virtualenv's `bin/python` makes CPython find `pyvenv.cfg` and use that
/// venv's site-packages ahead of the base install, as `python` itself would
/// (the approach uWSGI's `--home` uses; embedding.md §5).
fn program_name(home: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(home) = home {
        for candidate in ["bin/python", "bin/python3"] {
            let p = home.join(candidate);
            if p.exists() {
                return Ok(p);
            }
        }
        return Err(format!(
            "--home {}: no bin/python there; is it a virtualenv? (create one with: python3 -m venv {})",
            home.display(),
            home.display()
        ));
    }
    // A binary installed into a venv's bin/ uses that venv.
    if let Ok(exe) = std::env::current_exe()
        && let Some(bin) = exe.parent()
        && bin
            .parent()
            .is_some_and(|venv| venv.join("pyvenv.cfg").exists())
    {
        return Ok(exe);
    }
    Ok(PathBuf::from(env!("OXGATE_BUILD_PYTHON")))
}

/// Starts the embedded interpreter: no Python signal handlers (the server
/// owns signals), unbuffered stdio (app output reaches the log at once), and
/// the program name chosen above.
pub fn initialize(home: Option<&Path>) -> Result<(), String> {
    let program = program_name(home)?;
    let program_c = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", program.display()))?;
    let argv0 = CString::new("oxgate").expect("no NUL");
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let cfg = config.as_mut_ptr();
        (*cfg).install_signal_handlers = 0;
        (*cfg).parse_argv = 0;
        (*cfg).buffered_stdio = 0;
        let mut status =
            ffi::PyConfig_SetBytesString(cfg, &raw mut (*cfg).program_name, program_c.as_ptr());
        if ffi::PyStatus_Exception(status) == 0 {
            let mut argv = [argv0.as_ptr()];
            status = ffi::PyConfig_SetBytesArgv(cfg, 1, argv.as_mut_ptr());
        }
        if ffi::PyStatus_Exception(status) == 0 {
            status = ffi::Py_InitializeFromConfig(cfg);
        }
        ffi::PyConfig_Clear(cfg);
        if ffi::PyStatus_Exception(status) != 0 {
            let msg = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!(
                "cannot start Python (program name {}): {msg}",
                program.display()
            ));
        }
        // Release the GIL; every later use takes it with Python::attach.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// What the app loader needs besides the app spec.
pub struct LoadOptions<'a> {
    pub app: &'a AppSpec,
    pub pythonpath: &'a [PathBuf],
    pub threads: usize,
}

/// Imports the app and prepares everything the per-request path needs.
pub fn load(opts: &LoadOptions<'_>) -> Result<WsgiHost, String> {
    Python::attach(|py| {
        let helpers = wsgi::helpers(py).map_err(|e| format!("internal: {e}"))?;
        let sys = py.import("sys").map_err(|e| e.to_string())?;
        let path = sys
            .getattr("path")
            .and_then(|p| p.cast_into::<PyList>().map_err(Into::into))
            .map_err(|e| e.to_string())?;
        // Like gunicorn: the working directory first, then --pythonpath entries
        // in the order given, all ahead of site-packages.
        let mut front: Vec<String> = vec![
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| ".".into()),
        ];
        front.extend(opts.pythonpath.iter().map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        }));
        for entry in front.iter().rev() {
            path.insert(0, entry).map_err(|e| e.to_string())?;
        }
        let (kind, target) = match &opts.app.source {
            AppSource::File(f) => ("file", f.display().to_string()),
            AppSource::Module(m) => ("module", m.clone()),
        };
        let (app, message): (Option<Py<PyAny>>, Option<String>) = helpers
            .load
            .call1(py, (kind, &target, &opts.app.callable))
            .and_then(|r| r.extract(py))
            .map_err(|e| format!("internal error while loading the app: {e}"))?;
        match (app, message) {
            (Some(app), _) => {
                WsgiHost::new(py, app, helpers, opts.threads).map_err(|e| format!("internal: {e}"))
            }
            (None, Some(msg)) => Err(msg),
            (None, None) => Err("cannot load the app (no reason given)".into()),
        }
    })
}

/// Runs the interpreter's atexit handlers (PyO3 never finalises Python, so
/// without this they would be skipped at a clean exit).
pub fn run_atexit() {
    Python::attach(|py| {
        if let Ok(atexit) = py.import("atexit") {
            let _ = atexit.call_method0("_run_exitfuncs");
        }
    });
}
