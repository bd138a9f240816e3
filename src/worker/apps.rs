//! The handler a configuration names: the apps it loads, and how they are
//! routed.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::{Config, Words};
use crate::handlers::cgi::CgiScripts;
use crate::handlers::fastcgi::FastcgiApps;
use crate::handlers::python::{self, AsgiHost, WsgiHost};
use crate::handlers::static_files::StaticFiles;
use crate::request::health::{Health, HealthCheck, HealthSource};
use crate::request::router::{NoApp, Router};
use crate::request::wrappers::{
    AddHeaders, LimitConcurrency, ProxyHeaders, RootPath, ScriptNameHeader, SecureScheme,
};
use crate::request::{Answered, Handler, HandlerKind, RequestObserver};

pub fn app_name(cfg: &Config) -> String {
    let name = |app: &crate::config::AppSpec| match &app.source {
        crate::config::AppSource::File(f) => format!("{}:{}", f.display(), app.callable),
        crate::config::AppSource::Module(m) => format!("{m}:{}", app.callable),
    };
    let cgi = cfg.cgi.dirs.iter().map(|d| {
        let mount = if d.mount.is_empty() { "/" } else { &d.mount };
        format!("CGI {mount}={}", d.path.display())
    });
    let root = |m: &str| {
        if m.is_empty() {
            "/".to_string()
        } else {
            m.to_string()
        }
    };
    let fastcgi = cfg
        .fastcgi
        .passes
        .iter()
        .map(|p| format!("FastCGI {}={}", root(&p.mount), p.addr))
        .chain(cfg.fastcgi.apps.iter().map(|a| {
            format!(
                "FastCGI pool {}={} ({} processes)",
                root(&a.mount),
                a.command.join(" "),
                a.processes
            )
        }));
    let statics = (!cfg.needs_python() && cfg.statics.active()).then(|| "static files".to_string());
    cfg.app
        .iter()
        .map(name)
        .chain(
            cfg.mounts
                .iter()
                .map(|(point, app)| format!("{}={}", point, name(app))),
        )
        .chain(cgi)
        .chain(fastcgi)
        .chain(statics)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The apps a worker serves: the handler every front end calls, and the
/// Python hosts behind it (for the request observer, module watching and
/// the ASGI loop's life). Scripts or static files alone start no Python.
#[derive(Clone)]
pub struct Apps {
    pub handler: Arc<dyn Handler>,
    pub python: Option<Arc<WsgiHost>>,
    pub asgi: Option<Arc<AsgiHost>>,
    /// `--static-map` and friends, in front of the apps.
    pub statics: Option<Arc<StaticFiles>>,
    /// `--cgi`, in front of the apps (behind the static files).
    pub cgi: Option<Arc<CgiScripts>>,
    /// `--fastcgi-pass`, in front of the scripts.
    pub fastcgi: Option<Arc<FastcgiApps>>,
    /// What answers 404 when there is no Python app.
    pub no_app: Option<Arc<NoApp>>,
    /// Each app's name and interface, for the start-up log.
    pub kinds: Vec<(String, &'static str)>,
    /// Where the requests the server refuses before an app sees them
    /// (`--limit-concurrency`'s 503) are logged and counted.
    pub refused: Arc<Answered>,
}

impl Apps {
    /// Lets the scoreboard and the request log see every request.
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        if let Some(s) = &self.statics {
            s.set_observer(observer.clone());
        }
        if let Some(c) = &self.cgi {
            c.set_observer(observer.clone());
        }
        if let Some(f) = &self.fastcgi {
            f.set_observer(observer.clone());
        }
        if let Some(n) = &self.no_app {
            n.set_observer(observer.clone());
        }
        if let Some(a) = &self.asgi {
            a.set_observer(observer.clone());
        }
        self.refused.set(observer.clone());
        if let Some(p) = &self.python {
            p.set_observer(observer);
        }
    }

    /// The handler the front ends call: the apps, behind the server's own
    /// `--health-path`, answered from `health`.
    pub fn front_handler(&self, cfg: &Config, health: Arc<dyn HealthSource>) -> Arc<dyn Handler> {
        let health: Arc<dyn HealthSource> = match &self.fastcgi {
            Some(fastcgi) => Arc::new(WithPools {
                server: health,
                fastcgi: fastcgi.clone(),
            }),
            None => health,
        };
        match &cfg.health_path {
            Some(path) => Arc::new(HealthCheck::new(self.handler.clone(), path, health)),
            None => self.handler.clone(),
        }
    }

    /// How many requests the observer may see at once, numbered from 0.
    pub fn cores(&self) -> usize {
        let python = self.python.as_ref().map_or(0, |p| p.threads());
        let asgi = if self.asgi.is_some() {
            python::ASGI_CORES
        } else {
            0
        };
        (python + asgi).max(1)
    }

    /// Starts what must run after the fork in worker number `worker` (from
    /// 1; `None` without a master): the ASGI loop and the apps' lifespan
    /// startup. An error is why the app may not serve.
    pub fn start(&self, _worker: Option<u32>) -> Result<(), String> {
        match &self.asgi {
            Some(a) => a.start().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Starts what runs on the worker's event loop beside the requests:
    /// the FastCGI pools' upkeep. Called inside the runtime.
    pub fn on_runtime(&self) {
        if let Some(f) = &self.fastcgi {
            f.on_runtime();
        }
    }

    /// The stop is about to end the requests still open (see
    /// `AsgiHost::going_away`).
    pub fn going_away(&self) {
        if let Some(a) = &self.asgi {
            a.going_away();
        }
    }

    /// Runs the ASGI apps' lifespan shutdown and stops their loop; removes
    /// the FastCGI pools' sockets.
    pub fn stop(&self) {
        if let Some(f) = &self.fastcgi {
            f.stop();
        }
        if let Some(a) = &self.asgi {
            a.stop();
        }
    }

    /// "main:app (ASGI, uvloop)": what the start-up log says of the apps.
    pub fn describe(&self, cfg: &Config) -> Option<String> {
        let asgi = self.kinds.iter().any(|(_, k)| k.starts_with("ASGI"));
        if !asgi {
            return None;
        }
        let loop_name = python::loop_name(cfg.asgi.event_loop);
        let apps: Vec<String> = self
            .kinds
            .iter()
            .map(|(n, k)| format!("{n} is {k}"))
            .collect();
        Some(format!(
            "{} (--interface {}); ASGI apps run on {loop_name}, lifespan {}",
            apps.join(", "),
            cfg.interface.name(),
            cfg.asgi.lifespan.name()
        ))
    }
}

/// The wrappers the options ask for, around the routed apps: the limit
/// comes first. (The root path is set outside the static files too: see
/// `load_app`.)
fn wrap(cfg: &Config, mut handler: Arc<dyn Handler>, refused: &Arc<Answered>) -> Arc<dyn Handler> {
    if let Some((headers, trusted)) = &cfg.proxy_headers {
        handler = Arc::new(ProxyHeaders::new(handler, trusted.clone(), *headers));
    }
    // Outside the proxy headers: it looks at the proxy's address, before
    // they put the client's in its place.
    if let Some(secure) = &cfg.secure_scheme {
        handler = Arc::new(SecureScheme::new(
            handler,
            secure.trusted.clone(),
            secure.unix_sockets_trusted,
            &secure.headers,
            refused.clone(),
        ));
    }
    // Outside the proxy headers too: the proxy's address is trusted.
    if let Some(trusted) = &cfg.script_name_header {
        handler = Arc::new(ScriptNameHeader::new(
            handler,
            trusted.clone(),
            refused.clone(),
        ));
    }
    if let Some(n) = cfg.limit_concurrency {
        handler = Arc::new(LimitConcurrency::new(handler, n, refused.clone()));
    }
    handler
}

/// Starts Python, imports the apps, and routes between them; puts the CGI
/// scripts and static files in front.
pub fn load_app(cfg: &Config) -> Result<Apps, String> {
    let mut apps = if cfg.needs_python() {
        load_python(cfg)?
    } else {
        let no_app = Arc::new(NoApp::default());
        Apps {
            handler: no_app.clone(),
            python: None,
            asgi: None,
            statics: None,
            cgi: None,
            fastcgi: None,
            no_app: Some(no_app),
            kinds: Vec::new(),
            refused: Arc::new(Answered::new(HandlerKind::App)),
        }
    };
    if cfg.cgi.active() {
        let cgi = Arc::new(CgiScripts::new(
            &cfg.cgi,
            &cfg.env,
            cfg.limit_post,
            apps.handler.clone(),
            apps.no_app.is_none(),
        )?);
        apps.handler = cgi.clone();
        apps.cgi = Some(cgi);
    }
    if cfg.fastcgi.active() {
        // A worker that is a pool's only user keeps its connections to the
        // processes.
        let workers = if cfg.process.master {
            cfg.process.processes
        } else {
            1
        };
        let _ = crate::handlers::fastcgi::WORKERS.set(workers);
        let fastcgi = Arc::new(FastcgiApps::new(
            &cfg.fastcgi,
            &cfg.statics.safe,
            cfg.limit_post,
            apps.handler.clone(),
        )?);
        apps.handler = fastcgi.clone();
        apps.fastcgi = Some(fastcgi);
    }
    apps.handler = wrap(cfg, apps.handler, &apps.refused);
    // Static files come first: they cost the app nothing, and no limit.
    if cfg.statics.active() {
        let mount_points = if cfg.manage_script_name {
            cfg.mounts
                .iter()
                .map(|(point, _)| point.as_bytes().to_vec())
                .collect()
        } else {
            Vec::new()
        };
        let statics = Arc::new(
            StaticFiles::new(&cfg.statics, apps.handler.clone(), apps.no_app.is_none())?
                .strip_mounts(mount_points),
        );
        apps.handler = statics.clone();
        apps.statics = Some(statics);
    }
    // Around the static files too: a directory's redirect keeps the prefix.
    if let Some(root) = &cfg.root_path {
        apps.handler = Arc::new(RootPath::new(apps.handler, root, cfg.root_path_unstripped));
    }
    if !cfg.add_headers.is_empty() {
        apps.handler = Arc::new(AddHeaders::new(apps.handler, &cfg.add_headers));
    }
    Ok(apps)
}

/// Starts Python, imports the apps, and routes between them.
fn load_python(cfg: &Config) -> Result<Apps, String> {
    python::initialize(cfg.home.as_deref())?;
    let loaded = python::load(&python::LoadOptions {
        app: cfg.app.as_ref(),
        mounts: &cfg.mounts,
        vhost: cfg.vhost,
        pythonpath: &cfg.pythonpath,
        log_config: cfg.python_log_config.as_deref(),
        app_loggers: cfg.app_loggers,
        log_level: cfg.log_files.level,
        access_log: cfg.log.enabled,
        imports: &cfg.imports,
        threads: cfg.threads,
        multiprocess: cfg.process.master && cfg.process.processes > 1,
        file_wrapper: cfg.wsgi_file_wrapper,
        interface: cfg.interface,
        asgi: &cfg.asgi,
    })?;
    // With no app of its own, the first mount is the default (as uWSGI's
    // first app loaded), unless --no-default-app says there is none.
    let default = if cfg.no_default_app && cfg.app.is_none() && !cfg.vhost {
        loaded.missing.clone()
    } else {
        loaded.default
    };
    let handler: Arc<dyn Handler> = if loaded.mounts.is_empty() {
        default
    } else {
        Arc::new(Router::new(
            Some(default),
            cfg.no_default_app.then_some(loaded.missing),
            loaded
                .mounts
                .into_iter()
                .map(|(point, app)| (Bytes::from(point), app))
                .collect(),
            cfg.manage_script_name,
            cfg.vhost,
        ))
    };
    Ok(Apps {
        handler,
        statics: None,
        cgi: None,
        fastcgi: None,
        no_app: None,
        python: Some(loaded.host),
        asgi: loaded.asgi,
        kinds: loaded.kinds,
        refused: Arc::new(Answered::new(HandlerKind::App)),
    })
}

/// The server's health, and the FastCGI pools': serving, a server whose
/// pool cannot start its processes is not healthy.
struct WithPools {
    server: Arc<dyn HealthSource>,
    fastcgi: Arc<FastcgiApps>,
}

impl HealthSource for WithPools {
    fn health(&self) -> Health {
        match self.server.health() {
            Health::Serving if self.fastcgi.a_pool_cannot_start() => Health::PoolFailing,
            health => health,
        }
    }
}
