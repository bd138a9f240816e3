//! Loading the apps into the interpreter: `sys.path`, the callables
//! (`--wsgi-file`, `--module`, `--mount`, `--vhost`), and the handlers
//! made of them.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::asgi::AsgiHost;
use super::wsgi::{self, WsgiApp, WsgiHost};
use crate::config::{AppLoggers, AppSource, AppSpec, AsgiSettings, Interface, LogLevel, Words};
use crate::request::Handler;

/// What the app loader needs besides the app spec.
pub struct LoadOptions<'a> {
    pub app: Option<&'a AppSpec>,
    pub mounts: &'a [(String, AppSpec)],
    pub vhost: bool,
    pub pythonpath: &'a [PathBuf],
    /// `--log-config`, applied before the app loads.
    pub log_config: Option<&'a std::path::Path>,
    /// `--app-loggers`, set up before `log_config` is applied, as the
    /// server it names does, and at `log_level`.
    pub app_loggers: AppLoggers,
    pub log_level: LogLevel,
    /// The request log is on: uvicorn's access logger, which the app may
    /// write to too, is silenced with it (`--no-access-log`).
    pub access_log: bool,
    pub imports: &'a [String],
    pub threads: usize,
    /// More than one worker process serves the app (`wsgi.multiprocess`).
    pub multiprocess: bool,
    /// Whether environ has wsgi.file_wrapper.
    pub file_wrapper: bool,
    pub interface: Interface,
    pub asgi: &'a AsgiSettings,
}

/// What goes first on `sys.path`: the --pythonpath entries, the last
/// given first, then the working directory, all ahead of site-packages. As
/// Gunicorn, uWSGI and uvicorn (--app-dir) put them, a project's src/ is
/// found before a module of the same name beside it; uWSGI and Gunicorn
/// insert each entry at the front in turn, so of two directories with the
/// same module, the one named last wins. A pattern is each directory it
/// matches, the last match first (uWSGI globs pythonpath: `pythonpath =
/// /srv/libs/*`), itself if it matches none.
pub(crate) fn path_front(pythonpath: &[std::path::PathBuf]) -> Vec<String> {
    let mut front = Vec::new();
    for p in pythonpath.iter().rev() {
        let text = p.to_string_lossy();
        let matched = match crate::sys::glob::is_pattern(&text) {
            true => crate::sys::glob::glob(&text),
            false => Vec::new(),
        };
        let entries = match matched.is_empty() {
            true => vec![p.clone()],
            false => matched
                .into_iter()
                .rev()
                .map(std::path::PathBuf::from)
                .collect(),
        };
        front.extend(entries.iter().map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        }));
    }
    front.push(
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| ".".into()),
    );
    front
}

/// Imports the app and prepares everything the per-request path needs.
pub fn load(opts: &LoadOptions<'_>) -> Result<PythonApps, String> {
    Python::attach(|py| {
        let helpers = wsgi::helpers(py).map_err(|e| format!("internal: {e}"))?;
        let sys = py.import("sys").map_err(|e| e.to_string())?;
        let path = sys
            .getattr("path")
            .and_then(|p| p.cast_into::<PyList>().map_err(Into::into))
            .map_err(|e| e.to_string())?;
        let front = path_front(opts.pythonpath);
        // Each once (a config file that ran first has put them there).
        for entry in front.iter().rev() {
            if path.contains(entry).map_err(|e| e.to_string())? {
                path.call_method1("remove", (entry,))
                    .map_err(|e| e.to_string())?;
            }
            path.insert(0, entry).map_err(|e| e.to_string())?;
        }
        if opts.app_loggers != AppLoggers::None {
            let level = match opts.log_level {
                LogLevel::Debug => 10,
                LogLevel::Info => 20,
                LogLevel::Warning => 30,
                LogLevel::Error => 40,
                LogLevel::Critical => 50,
            };
            py.import("_oxgate_loader")
                .and_then(|m| {
                    m.call_method1(
                        "set_up_server_loggers",
                        (opts.app_loggers.name(), level, opts.access_log),
                    )
                })
                .map_err(|e| format!("internal error while setting up --app-loggers: {e}"))?;
        }
        if let Some(file) = opts.log_config {
            let failed: Option<String> = super::gunicorn_conf::gunicorn_logging(py)
                .and_then(|_| py.import("_oxgate_loader"))
                .and_then(|m| m.call_method1("apply_log_config", (file, opts.app_loggers.name())))
                .and_then(|r| r.extract())
                .map_err(|e| format!("internal error while reading --log-config: {e}"))?;
            if let Some(why) = failed {
                return Err(format!("--log-config {}: {why}", file.display()));
            }
        }
        let load_one = |spec: &AppSpec| -> Result<Py<PyAny>, String> {
            let (kind, target) = match &spec.source {
                AppSource::File(f) => ("file", f.display().to_string()),
                AppSource::Module(m) => ("module", m.clone()),
            };
            let (app, message): (Option<Py<PyAny>>, Option<String>) = helpers
                .load
                .call1(py, (kind, &target, &spec.callable))
                .and_then(|r| r.extract(py))
                .map_err(|e| format!("internal error while loading the app: {e}"))?;
            match (app, message) {
                (Some(app), _) => Ok(app),
                (None, Some(msg)) => Err(msg),
                (None, None) => Err("cannot load the app (no reason given)".into()),
            }
        };
        let app = opts.app.map(load_one).transpose()?;
        let mut mounts = Vec::new();
        for (point, spec) in opts.mounts {
            let app = load_one(spec).map_err(|e| format!("--mount {point}: {e}"))?;
            mounts.push((point.clone(), spec, app));
        }
        for module in opts.imports {
            let failed: Option<String> = helpers
                .import_module
                .call1(py, (module,))
                .and_then(|r| r.extract(py))
                .map_err(|e| format!("internal error in --import: {e}"))?;
            if let Some(msg) = failed {
                return Err(format!("--import {module}: {msg}"));
            }
        }
        let host = Arc::new(
            WsgiHost::new(
                py,
                helpers,
                opts.threads,
                opts.multiprocess,
                opts.file_wrapper,
            )
            .map_err(|e| format!("internal: {e}"))?,
        );
        let mut asgi_host: Option<Arc<AsgiHost>> = None;
        let mut kinds = Vec::new();
        // One app as a handler of the kind its interface says.
        let mut handler = |name: String, app: Py<PyAny>| -> Result<Arc<dyn Handler>, String> {
            let asgi_version: u8 = match opts.interface {
                Interface::Wsgi => 0,
                Interface::Asgi => 3,
                Interface::Asgi2 => 2,
                Interface::Auto => host
                    .helpers
                    .asgi_kind
                    .call1(py, (&app,))
                    .and_then(|r| r.extract(py))
                    .map_err(|e| format!("internal: {e}"))?,
            };
            let kind = match asgi_version {
                0 => "WSGI",
                2 => "ASGI 2",
                _ => "ASGI",
            };
            kinds.push((name.clone(), kind));
            if asgi_version == 0 {
                let app = super::gunicorn_conf::wrap_wsgi_app(py, app)?;
                return Ok(Arc::new(WsgiApp::new(host.clone(), app)));
            }
            let asgi = match &asgi_host {
                Some(h) => h.clone(),
                None => {
                    let exception_text = host.helpers.exception_text.clone_ref(py);
                    let h = Arc::new(
                        AsgiHost::new(py, opts.asgi.clone(), opts.threads, exception_text)
                            .map_err(|e| format!("internal: {e}"))?,
                    );
                    asgi_host = Some(h.clone());
                    h
                }
            };
            let app = if asgi_version == 2 {
                host.helpers
                    .asgi2
                    .call1(py, (app,))
                    .map_err(|e| format!("internal: {e}"))?
            } else {
                app
            };
            Ok(Arc::new(asgi.app(py, name, app)))
        };
        let name = |spec: &AppSpec| match &spec.source {
            AppSource::File(f) => format!("{}:{}", f.display(), spec.callable),
            AppSource::Module(m) => format!("{m}:{}", spec.callable),
        };
        let mut mounted = Vec::new();
        for (point, spec, app) in mounts {
            mounted.push((point, handler(name(spec), app)?));
        }
        let default: Arc<dyn Handler> = match app {
            _ if opts.vhost => Arc::new(WsgiApp::vhost(host.clone(), app)),
            Some(app) => handler(name(opts.app.expect("an app was loaded")), app)?,
            // As uWSGI's first app loaded is its default: a config of
            // `mount` lines alone (`mount = /=app.py`) serves every path
            // no other mount takes with the first.
            None => match mounted.first() {
                Some((_, first)) => first.clone(),
                None => Arc::new(WsgiApp::missing(host.clone())),
            },
        };
        Ok(PythonApps {
            missing: Arc::new(WsgiApp::missing(host.clone())),
            host,
            asgi: asgi_host,
            default,
            mounts: mounted,
            kinds,
        })
    })
}

/// The apps one interpreter runs, each a request handler, and the host
/// they share (its Python threads, the request observer).
pub struct PythonApps {
    pub host: Arc<WsgiHost>,
    /// The ASGI apps' loop, when there are any.
    pub asgi: Option<Arc<AsgiHost>>,
    /// Requests no mountpoint takes: the app, the `--vhost` loader, or a
    /// 404 when there are only `--mount` apps.
    pub default: Arc<dyn Handler>,
    /// What answers a request whose SCRIPT_NAME names no app, with
    /// `--no-default-app`: the error that no app is loaded.
    pub missing: Arc<dyn Handler>,
    pub mounts: Vec<(String, Arc<dyn Handler>)>,
    /// Each app's name and interface ("WSGI", "ASGI" or "ASGI 2"), for the log.
    pub kinds: Vec<(String, &'static str)>,
}

/// The files of the loaded modules, and those an app that did not load
/// came from, with their modification times: what `--py-autoreload`
/// watches for the edit that fixes it. Empty if Python cannot say.
pub fn watched_files() -> std::collections::HashMap<String, f64> {
    Python::attach(|py| {
        py.import("_oxgate_loader")
            .and_then(|m| m.call_method0("module_files"))
            .and_then(|d| d.extract())
            .unwrap_or_default()
    })
}
