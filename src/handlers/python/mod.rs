//! The only code that touches PyO3: starting the interpreter, loading the
//! apps, and the WSGI call path. ASGI will live here too.

mod asgi;
mod buffers;
mod gunicorn_conf;
mod interpreter;
mod loader;
mod pool;
mod traceback;
mod wsgi;

pub use asgi::{ASGI_CORES, AsgiApp, AsgiHost, loop_name};
pub use gunicorn_conf::{
    HookContext, call_gunicorn_hook, has_gunicorn_hook, read_gunicorn_config,
    share_settings_with_hooks,
};
pub use interpreter::{
    Host, describe_python, drop_pythons_sigint_handler, fork, host, initialize, install_stack_dump,
    prepare_preload_fork, prepare_started_python, python_running, relaunch_command, run_atexit,
};
pub use loader::{LoadOptions, PythonApps, load, watched_files};
pub use wsgi::{WsgiApp, WsgiHost};
