//! The interpreter: starting it (virtualenvs, no Python signal handlers),
//! or adopting the one that was started for us (the `oxgate` pip installs),
//! forking with its hooks, preparing a preload fork, the stack dump for
//! harakiri, and atexit.

use std::ffi::{CString, OsString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;

/// The interpreter's program name decides `sys.prefix`: pointing it at a
/// virtualenv's `bin/python` makes CPython find `pyvenv.cfg` and use that
/// venv's site-packages ahead of the base install, as `python` itself would
/// (the approach uWSGI's `--home` uses; embedding.md §5).
fn program_name(home: Option<&Path>) -> Result<PathBuf, String> {
    let python_of = |venv: &Path| {
        ["bin/python", "bin/python3"]
            .into_iter()
            .map(|candidate| venv.join(candidate))
            .find(|p| p.exists())
    };
    if let Some(home) = home {
        return python_of(home).ok_or_else(|| {
            format!(
                "--home {}: no bin/python there; is it a virtualenv? (create one with: python3 -m venv {})",
                home.display(),
                home.display()
            )
        });
    }
    // A binary installed into a venv's bin/ uses that venv. Its python, not
    // the binary, is the program: it becomes sys.executable, which what
    // starts Python again runs (multiprocessing's spawn, subprocess,
    // Django's autoreloader); the binary there ran oxgate instead.
    if let Ok(exe) = std::env::current_exe()
        && let Some(venv) = exe.parent().and_then(Path::parent)
        && venv.join("pyvenv.cfg").exists()
    {
        return Ok(python_of(venv).unwrap_or(exe));
    }
    Ok(PathBuf::from(env!("OXGATE_BUILD_PYTHON")))
}

/// The interpreter that started oxgate, when oxgate runs as an extension
/// module inside it (the `oxgate` command pip installs, `python -m oxgate`):
/// Python is already initialized, and re-executing the master (a reload)
/// means running that interpreter again with its own command line.
#[derive(Debug, Clone)]
pub struct Host {
    /// `sys.executable`.
    pub executable: PathBuf,
    /// `sys.orig_argv` (3.10+; `sys.executable` and `sys.argv` before it):
    /// the interpreter's command line, such as `python -m oxgate ARGS` or
    /// `python /venv/bin/oxgate ARGS`.
    pub argv: Vec<OsString>,
}

static HOST: OnceLock<Host> = OnceLock::new();

impl Host {
    /// Reads the running interpreter's executable and command line. It
    /// refuses a process where another thread runs already: the master
    /// changes the environment and forks, which only a single thread may
    /// do safely.
    pub fn read(py: Python<'_>) -> PyResult<Host> {
        let threads: usize = py
            .import("threading")?
            .call_method0("active_count")?
            .extract()?;
        if threads > 1 {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "oxgate must start in a process with no other thread ({threads} threads run here)"
            )));
        }
        let sys = py.import("sys")?;
        let executable: PathBuf = sys.getattr("executable")?.extract()?;
        let argv: Vec<OsString> = match sys.getattr("orig_argv") {
            Ok(a) => a.extract()?,
            Err(_) => {
                let mut argv = vec![executable.clone().into_os_string()];
                argv.extend(sys.getattr("argv")?.extract::<Vec<OsString>>()?);
                argv
            }
        };
        Ok(Host { executable, argv })
    }

    /// Marks this process as hosted by that interpreter (once, before
    /// anything else runs).
    pub fn adopt(self) {
        let _ = HOST.set(self);
    }
}

/// The interpreter hosting this process, if oxgate runs as an extension.
pub fn host() -> Option<&'static Host> {
    HOST.get()
}

/// How to run this program again, for a master re-executing itself on
/// reload: the program, its `argv[0]`, and the rest of its arguments.
pub fn relaunch_command() -> (PathBuf, OsString, Vec<OsString>) {
    if let Some(host) = host() {
        let arg0 = host
            .argv
            .first()
            .cloned()
            .unwrap_or_else(|| host.executable.clone().into_os_string());
        return (
            host.executable.clone(),
            arg0,
            host.argv.iter().skip(1).cloned().collect(),
        );
    }
    let mut args = crate::sys::proctitle::args().into_iter();
    let arg0 = args.next().unwrap_or_else(|| "oxgate".into());
    (this_program_now(), arg0, args.collect())
}

/// The file this program was started from, as it is now: an upgrade
/// (apt, an install script) puts a new build at that path, and a reload
/// runs it, as uWSGI's "binary reloading" does. `/proc/self/exe` itself
/// would run the old build (its inode), and the processes would be named
/// `exe`. When nothing is at that path any more, the old build runs.
fn this_program_now() -> PathBuf {
    let running = PathBuf::from("/proc/self/exe");
    let Ok(path) = std::fs::read_link(&running) else {
        return running;
    };
    // The kernel marks a file removed or replaced since.
    let path = match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(p) => PathBuf::from(p),
        None => path,
    };
    if path.is_file() { path } else { running }
}

/// Takes back the SIGINT handler Python sets for itself (the one that
/// raises KeyboardInterrupt) when its `signal` module is first imported
/// while SIGINT has no handler: by a Gunicorn config file's `import
/// multiprocessing`, run before the master's own handlers go in. The
/// master's handler would call it on a Ctrl-C, and the master's next
/// Python call (a child_exit hook) would raise KeyboardInterrupt. A
/// handler the config or the app set on purpose is left alone. Call it
/// before the master installs its own.
pub fn drop_pythons_sigint_handler() {
    if !python_running() {
        return;
    }
    Python::attach(|py| {
        let code = c"import sys
s = sys.modules.get('signal')
if s is not None and s.getsignal(s.SIGINT) is s.default_int_handler: s.signal(s.SIGINT, s.SIG_DFL)
";
        // A namespace of its own: nothing is left in __main__'s.
        let scope = pyo3::types::PyDict::new(py);
        if let Err(e) = py.run(code, Some(&scope), None) {
            crate::say!("oxgate: internal error while taking back SIGINT from Python: {e}");
        }
    });
}

/// Whether CPython is initialized in this process: after the app was
/// preloaded, in a worker that loaded it, and always when hosted. A fork
/// then needs the interpreter's hooks (`fork`).
pub fn python_running() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, with or without
    // the GIL, and reads one flag.
    unsafe { ffi::Py_IsInitialized() != 0 }
}

/// The Python this process runs, for `--version`: its version (say
/// "3.11.7", from the loaded libpython) and where it comes from.
pub fn describe_python() -> String {
    // SAFETY: Py_GetVersion returns a pointer to a static NUL-terminated
    // string built into libpython; it may be called before the interpreter
    // is initialized (the C API documents it among the functions safe to
    // call before Py_Initialize).
    let full = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    let version = full.split_whitespace().next().unwrap_or("?");
    match host() {
        Some(host) => format!(
            "{version} ({}, running oxgate as an extension module)",
            host.executable.display()
        ),
        None => format!(
            "{version} (libpython, built against {})",
            env!("OXGATE_BUILD_PYTHON")
        ),
    }
}

/// Starts the embedded interpreter: no Python signal handlers (the server
/// owns signals), unbuffered stdio (app output reaches the log at once), and
/// the program name chosen above. A hosted process has its interpreter
/// already (the Python side of `oxgate` set its signals and stdio the same
/// way); there `home` adds a virtualenv's packages to it.
pub fn initialize(home: Option<&Path>) -> Result<(), String> {
    if let Some(host) = host() {
        return Python::attach(|py| adopt(py, host, home)).and_then(|()| line_buffered_stdio());
    }
    if python_running() {
        // Started already, to run a Gunicorn config file before the app.
        return Ok(());
    }
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
            return Err(format!(
                "cannot start Python (program name {}): {msg}{}",
                program.display(),
                unreadable_hint(&program)
            ));
        }
        // Release the GIL; every later use takes it with Python::attach.
        ffi::PyEval_SaveThread();
    }
    if let Some(home) = home {
        venv_of_this_version(home)?;
    }
    line_buffered_stdio()
}

/// A virtualenv of another Python (3.12's, for a binary built with 3.11)
/// gives its `sys.prefix` but none of its packages: the app then fails to
/// import them, with a hint to use --home, which was. Said as the pip
/// installed command says it.
fn venv_of_this_version(home: &Path) -> Result<(), String> {
    let (major, minor) = Python::attach(|py| {
        let v = py.version_info();
        (v.major, v.minor)
    });
    // (Its site-packages may be named otherwise: Debian's /usr has
    // dist-packages, which uWSGI's --home /usr serves.)
    if home.join(format!("lib/python{major}.{minor}")).is_dir() {
        return Ok(());
    }
    let mut others: Vec<String> = std::fs::read_dir(home.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("python"))
        .map(|name| format!("lib/{name}"))
        .collect();
    others.sort();
    Err(format!(
        "--home {}: no lib/python{major}.{minor} there{}; this oxgate runs Python {major}.{minor} (the libpython it was built with), so --home must be a virtualenv of that version",
        home.display(),
        if others.is_empty() {
            String::new()
        } else {
            format!(" (it has {})", others.join(", "))
        }
    ))
}

/// Makes sys.stdout and sys.stderr write a line at a time, once in each
/// process (the interpreter oxgate started, or the one hosting it).
fn line_buffered_stdio() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        Python::attach(|py| py.run(LINE_BUFFERED_STDIO, None, None))
            .map_err(|e| format!("internal error while setting up stdout and stderr: {e}"))
    })
    .clone()
}

/// sys.stdout and sys.stderr written a line at a time: what an app prints
/// reaches the log at once, as with `python -u`, and each line in one
/// write, so that the workers' lines never run into each other
/// (unbuffered, print()'s text and its newline were two writes, and
/// another worker's came between them). `fork` flushes them first.
const LINE_BUFFERED_STDIO: &std::ffi::CStr = c"
import io, sys
def _line_buffered(stream, fd):
    if stream is None:
        return None
    try:
        stream.flush()
        raw = io.FileIO(fd, 'w', closefd=False)
    except (OSError, ValueError):
        return stream
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding,
                            errors=stream.errors, line_buffering=True)
sys.stdout = _line_buffered(sys.stdout, 1)
sys.stderr = _line_buffered(sys.stderr, 2)
del _line_buffered
";

/// Before a fork: what an app wrote without a newline is written once,
/// not again by every child.
const FLUSH_STDIO: &std::ffi::CStr = c"
import sys
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.flush()
    except Exception:
        pass
";

/// When the interpreter started before oxgate applied `--env` and
/// `--chdir` (a Gunicorn config file runs first): makes `os.environ` what
/// the process environment is now, and puts the working directory and
/// `pythonpath` first on `sys.path`, as Gunicorn does before its first
/// hook, so hooks can import the project.
pub fn prepare_started_python(pythonpath: &[PathBuf]) -> Result<(), String> {
    if !python_running() {
        return Ok(());
    }
    Python::attach(|py| {
        let front = super::loader::path_front(pythonpath);
        host_helpers(py)
            .and_then(|m| {
                m.call_method1("sync_environ", (process_environ(),))?;
                m.call_method1("put_first_on_path", (front,))
            })
            .map(drop)
            .map_err(|e| format!("cannot prepare Python: {e}"))
    })
}

/// host.py: the Python side of working in an interpreter oxgate did not
/// start itself, or started early.
fn host_helpers(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyModule>> {
    let code = CString::new(include_str!("host.py")).expect("no NUL in host.py");
    pyo3::types::PyModule::from_code(py, &code, c"oxgate/host.py", c"_oxgate_host")
}

/// The process environment as it is now, for host.py's `sync_environ`.
fn process_environ() -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStringExt;
    std::env::vars_os()
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect()
}

/// Takes over an interpreter that was running already (host.py does the
/// Python side): it must still read its standard library after `--uid`,
/// `os.environ` takes what oxgate changed since it started (`--env`, the
/// sockets systemd passed), and `home`, another virtualenv, has its
/// site-packages put first on `sys.path`. The interpreter itself stays the
/// one running, so that venv must be made from the same Python version.
fn adopt(py: Python<'_>, host: &Host, home: Option<&Path>) -> Result<(), String> {
    let helpers = host_helpers(py);
    let readable = helpers
        .as_ref()
        .ok()
        .and_then(|m| m.call_method0("stdlib_readable").ok())
        .and_then(|r| r.extract::<bool>().ok())
        .unwrap_or(false);
    let helpers = match helpers {
        Ok(m) if readable => m,
        _ => {
            return Err(format!(
                "cannot run Python ({}): it cannot import its standard library{}",
                host.executable.display(),
                unreadable_hint(&host.executable)
            ));
        }
    };
    helpers
        .call_method1("sync_environ", (process_environ(),))
        .map_err(|e| format!("cannot pass the environment to Python: {e}"))?;
    let Some(home) = home else {
        return Ok(());
    };
    let found = helpers
        .call_method1("add_virtualenv", (home,))
        .and_then(|r| r.extract::<bool>())
        .map_err(|e| format!("--home {}: {e}", home.display()))?;
    if found {
        return Ok(());
    }
    let v = py.version_info();
    Err(format!(
        "--home {}: no lib/python{}.{}/site-packages there; oxgate runs in the Python it was installed into ({}), so --home must be a virtualenv of that version",
        home.display(),
        v.major,
        v.minor,
        host.executable.display(),
    ))
}

/// Why an interpreter may fail after `--uid`: said when oxgate does not run
/// as root.
fn unreadable_hint(interpreter: &Path) -> String {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        return String::new();
    }
    format!(
        "\nhint: oxgate runs as uid {euid} here (--uid/--gid drop privileges before the app is loaded); \
         that user must be able to read the interpreter's files under {}",
        interpreter
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"))
            .display()
    )
}

/// Forks with CPython's fork hooks, as `os.fork()` does: the child's
/// interpreter state is reset, `os.register_at_fork` hooks run (random is
/// reseeded). For a master that loaded the app (preload).
pub fn fork() -> std::io::Result<libc::pid_t> {
    Python::attach(|py| {
        let _ = py.run(FLUSH_STDIO, None, None);
        // SAFETY: the sequence os.fork() runs. PyOS_BeforeFork needs the
        // GIL, which `attach` holds, and takes the interpreter's locks, so
        // no other thread holds one across the fork; each side then calls
        // its PyOS_AfterFork_* once, which releases or resets them (the
        // child also forgets the threads it no longer has). fork itself
        // takes no pointers.
        unsafe {
            ffi::PyOS_BeforeFork();
            let pid = libc::fork();
            // Read before the hooks run: they may set errno themselves.
            let error = std::io::Error::last_os_error();
            if pid == 0 {
                ffi::PyOS_AfterFork_Child();
            } else {
                ffi::PyOS_AfterFork_Parent();
            }
            if pid == -1 { Err(error) } else { Ok(pid) }
        }
    })
}

/// Run before the preload fork: freezes the heap, starts again in each
/// worker the logging `QueueListener` threads the app started at import
/// (Litestar's default logging, `QueueHandler` in a dictConfig), whose
/// records went into a queue no thread read after the fork, and leaves in
/// `n` how many other threads the app runs.
const PREPARE_FORK: &std::ffi::CStr = c"
import gc, os, sys, threading
gc.collect()
gc.freeze()

def _queue_listeners():
    handlers = sys.modules.get('logging.handlers')
    if handlers is None:
        return []
    import logging
    found = {}
    loggers = [logging.getLogger()] + list(logging.Logger.manager.loggerDict.values())
    for logger in loggers:
        for handler in getattr(logger, 'handlers', ()):
            listener = getattr(handler, 'listener', None)
            if isinstance(listener, handlers.QueueListener) and getattr(listener, '_thread', None) is not None:
                found[id(listener)] = listener
    return list(found.values())

def _start_queue_listeners_again():
    import queue
    for listener in _queue_listeners():
        q = listener.queue
        if isinstance(q, queue.Queue):
            # The dead thread still waits in the queue's condition, where
            # a put's notify would go: new locks, with no waiter.
            q.mutex = threading.Lock()
            q.not_empty = threading.Condition(q.mutex)
            q.not_full = threading.Condition(q.mutex)
            q.all_tasks_done = threading.Condition(q.mutex)
        listener._thread = None
        listener.start()

if not getattr(sys, '_oxgate_restarts_queue_listeners', False):
    sys._oxgate_restarts_queue_listeners = True
    os.register_at_fork(after_in_child=_start_queue_listeners_again)
n = threading.active_count() - 1 - len(_queue_listeners())
";

/// Before the master forks loaded workers: moves every object to the
/// permanent generation so the collector never writes to them, and pages
/// stay shared copy-on-write. Warns about threads, which do not survive.
pub fn prepare_preload_fork() {
    if !python_running() {
        // No app started Python: nothing to prepare.
        return;
    }
    Python::attach(|py| {
        let globals = pyo3::types::PyDict::new(py);
        if py.run(PREPARE_FORK, Some(&globals), None).is_ok()
            && let Ok(Some(n)) = globals.get_item("n")
            && n.extract::<usize>().unwrap_or(0) > 0
        {
            crate::say!(
                "oxgate: warning: the app started {} thread(s) at import; threads do not survive the fork into workers (use --lazy-apps)",
                n.extract::<usize>().unwrap_or(0)
            );
        }
    });
}

/// In a worker: SIGUSR2 makes CPython write every thread's stack to stderr,
/// from the signal handler itself, so it works while a request is stuck
/// holding the GIL (the master sends it before a harakiri kill).
pub fn install_stack_dump(signal: i32) {
    if !python_running() {
        // No app started Python: nothing to prepare.
        return;
    }
    Python::attach(|py| {
        let r = py.import("faulthandler").and_then(|fh| {
            let sys = py.import("sys")?;
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("file", sys.getattr("stderr")?)?;
            kwargs.set_item("all_threads", true)?;
            // The handler before it (signal-hook's) runs after the dump:
            // Gunicorn's worker_abort hook waits on it.
            kwargs.set_item("chain", true)?;
            fh.call_method("register", (signal,), Some(&kwargs))
        });
        if let Err(e) = r {
            crate::say!("oxgate: cannot install the harakiri stack dump: {e}");
        }
    });
}

/// What CPython's own exit does before it ends (PyO3 never finalises
/// Python, so without this it would be skipped at a clean exit): waits for
/// the app's non-daemon threads, and lets a `ThreadPoolExecutor` run the
/// jobs queued on it (a mail sent after the answer, a webhook); then runs
/// the atexit handlers. uWSGI's and Gunicorn's workers wait so at a stop,
/// a reload and a recycle. The wait is bounded by `threads_for`: a thread
/// that never ends (a poller not made a daemon) would otherwise hold the
/// process for ever where no master kills it; past it, the process exits
/// without them (and without the atexit handlers, which could wait on
/// them).
pub fn run_atexit(threads_for: std::time::Duration) {
    if !python_running() {
        // No app started Python: nothing to prepare.
        return;
    }
    let _ = std::thread::Builder::new()
        .name("oxgate-exit".into())
        .spawn(move || {
            std::thread::sleep(threads_for);
            crate::say!(
                "oxgate: the app's threads still ran {}s after the stop; exiting without them",
                threads_for.as_secs()
            );
            std::process::exit(0);
        });
    Python::attach(|py| {
        // Only if the app imported it: importing it here would make this
        // thread its main one.
        let threading = py
            .import("sys")
            .and_then(|sys| sys.getattr("modules"))
            .and_then(|modules| modules.get_item("threading"));
        if let Ok(threading) = threading
            && let Err(e) = threading.call_method0("_shutdown")
        {
            crate::say!("oxgate: waiting for the app's threads at exit: {e}");
        }
        if let Ok(atexit) = py.import("atexit") {
            let _ = atexit.call_method0("_run_exitfuncs");
        }
        // A last line without its newline is written too.
        let _ = py.run(FLUSH_STDIO, None, None);
    });
}
