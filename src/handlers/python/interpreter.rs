//! The embedded interpreter: starting it (virtualenvs, no Python signal
//! handlers), forking with its hooks, preparing a preload fork, the stack
//! dump for harakiri, and atexit.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;

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

/// The version of the libpython this process runs (say "3.11.7"), and the
/// interpreter the build was made against, for `--version`.
pub fn python_version() -> (String, &'static str) {
    // SAFETY: Py_GetVersion returns a pointer to a static NUL-terminated
    // string built into libpython; it may be called before the interpreter
    // is initialized (the C API documents it among the functions safe to
    // call before Py_Initialize).
    let full = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    let version = full.split_whitespace().next().unwrap_or("?").to_string();
    (version, env!("OXGATE_BUILD_PYTHON"))
}

/// Starts the embedded interpreter: no Python signal handlers (the server
/// owns signals), unbuffered stdio (app output reaches the log at once), and
/// the program name chosen above.
pub fn initialize(home: Option<&Path>) -> Result<(), String> {
    let program = program_name(home)?;
    let program_c = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", program.display()))?;
    let argv0 = CString::new("oxgate").expect("no NUL");
    // SAFETY: `config` is initialised by PyConfig_InitPythonConfig before
    // any field is read or written, and cleared once (PyConfig_Clear) after
    // its last use; `cfg` points into it, and it lives to the end of the
    // block. The C strings passed (`program_c`, and `argv0` through `argv`)
    // outlive the calls, which copy them. A non-null `err_msg` points to a
    // static NUL-terminated message. This runs before any other use of
    // Python in the process (`load_app` calls it first); a successful
    // Py_InitializeFromConfig leaves this thread holding the GIL, which
    // PyEval_SaveThread releases (later uses take it with Python::attach).
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
            let hint = if libc::geteuid() != 0 {
                format!(
                    "\nhint: oxgate runs as uid {} here (--uid/--gid drop privileges before Python starts); \
                     that user must be able to read the interpreter's files under {}",
                    libc::geteuid(),
                    program
                        .parent()
                        .and_then(Path::parent)
                        .unwrap_or(Path::new("/"))
                        .display()
                )
            } else {
                String::new()
            };
            return Err(format!(
                "cannot start Python (program name {}): {msg}{hint}",
                program.display()
            ));
        }
        // Release the GIL; every later use takes it with Python::attach.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// Forks with CPython's fork hooks, as `os.fork()` does: the child's
/// interpreter state is reset, `os.register_at_fork` hooks run (random is
/// reseeded). For a master that loaded the app (preload).
pub fn fork() -> libc::pid_t {
    // SAFETY: the sequence os.fork() runs. PyOS_BeforeFork needs the GIL,
    // which `attach` holds, and takes the interpreter's locks, so no other
    // thread holds one across the fork; each side then calls its
    // PyOS_AfterFork_* once, which releases or resets them (the child also
    // forgets the threads it no longer has). fork itself takes no pointers.
    Python::attach(|_py| unsafe {
        ffi::PyOS_BeforeFork();
        let pid = libc::fork();
        if pid == 0 {
            ffi::PyOS_AfterFork_Child();
        } else {
            ffi::PyOS_AfterFork_Parent();
        }
        pid
    })
}

/// Before the master forks loaded workers: moves every object to the
/// permanent generation so the collector never writes to them, and pages
/// stay shared copy-on-write. Warns about threads, which do not survive.
pub fn prepare_preload_fork() {
    Python::attach(|py| {
        let code = c"import gc, threading\ngc.collect()\ngc.freeze()\nn = threading.active_count()";
        let globals = pyo3::types::PyDict::new(py);
        if py.run(code, Some(&globals), None).is_ok()
            && let Ok(Some(n)) = globals.get_item("n")
            && n.extract::<usize>().unwrap_or(1) > 1
        {
            crate::say!(
                "oxgate: warning: the app started {} thread(s) at import; threads do not survive the fork into workers (use --lazy-apps)",
                n.extract::<usize>().unwrap_or(1) - 1
            );
        }
    });
}

/// In a worker: SIGUSR2 makes CPython write every thread's stack to stderr,
/// from the signal handler itself, so it works while a request is stuck
/// holding the GIL (the master sends it before a harakiri kill).
pub fn install_stack_dump(signal: i32) {
    Python::attach(|py| {
        let r = py.import("faulthandler").and_then(|fh| {
            let sys = py.import("sys")?;
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("file", sys.getattr("stderr")?)?;
            kwargs.set_item("all_threads", true)?;
            fh.call_method("register", (signal,), Some(&kwargs))
        });
        if let Err(e) = r {
            crate::say!("oxgate: cannot install the harakiri stack dump: {e}");
        }
    });
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
