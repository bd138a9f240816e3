//! The handler a configuration names: the apps it loads, and how they are
//! routed.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::handlers::python::{self, WsgiHost};
use crate::request::Handler;
use crate::request::router::Router;

pub fn app_name(cfg: &Config) -> String {
    let name = |app: &crate::config::AppSpec| match &app.source {
        crate::config::AppSource::File(f) => format!("{}:{}", f.display(), app.callable),
        crate::config::AppSource::Module(m) => format!("{m}:{}", app.callable),
    };
    cfg.app
        .iter()
        .map(name)
        .chain(
            cfg.mounts
                .iter()
                .map(|(point, app)| format!("{}={}", point, name(app))),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// The apps a worker serves: the handler every front end calls, and the
/// Python host behind it (for the request observer and module watching).
#[derive(Clone)]
pub struct Apps {
    pub handler: Arc<dyn Handler>,
    pub python: Arc<WsgiHost>,
}

/// Starts Python, imports the apps, and routes between them.
pub fn load_app(cfg: &Config) -> Result<Apps, String> {
    python::initialize(cfg.home.as_deref())?;
    let loaded = python::load(&python::LoadOptions {
        app: cfg.app.as_ref(),
        mounts: &cfg.mounts,
        vhost: cfg.vhost,
        pythonpath: &cfg.pythonpath,
        threads: cfg.threads,
    })?;
    let default = loaded.default as Arc<dyn Handler>;
    let handler: Arc<dyn Handler> = if loaded.mounts.is_empty() {
        default
    } else {
        Arc::new(Router::new(
            Some(default),
            loaded
                .mounts
                .into_iter()
                .map(|(point, app)| (Bytes::from(point), app as Arc<dyn Handler>))
                .collect(),
            cfg.manage_script_name,
            cfg.vhost,
        ))
    };
    Ok(Apps {
        handler,
        python: loaded.host,
    })
}
