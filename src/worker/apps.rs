//! The handler a configuration names: the apps it loads, and how they are
//! routed.

use std::sync::Arc;

use crate::config::Config;
use crate::handlers::python::{self, WsgiHost};

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


/// Starts Python and imports the app.
pub fn load_app(cfg: &Config) -> Result<Arc<WsgiHost>, String> {
    python::initialize(cfg.home.as_deref())?;
    Ok(Arc::new(python::load(&python::LoadOptions {
        app: cfg.app.as_ref(),
        mounts: &cfg.mounts,
        manage_script_name: cfg.manage_script_name,
        vhost: cfg.vhost,
        pythonpath: &cfg.pythonpath,
        threads: cfg.threads,
    })?))
}

