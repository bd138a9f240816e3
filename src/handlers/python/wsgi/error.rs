//! What can go wrong in a call, and how it is logged and answered: an error
//! response before the response started, a cut connection after.

use std::sync::{Arc, OnceLock};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::super::traceback::log_app_exception;

use super::host::WsgiHost;
use crate::request::{BodyError, Response};

pub(crate) enum CallError {
    /// The app raised; the environ names the request in the log.
    App(PyErr, Py<PyDict>),
    /// The app raised after the client's body turned out malformed or too
    /// large: the client's fault, answered with its status.
    Client(BodyError),
    /// The app produced fewer bytes than its Content-Length.
    Short {
        declared: u64,
        sent: u64,
    },
    Internal(PyErr),
    /// No `--mount` app for this path and no default app.
    NoApp,
    /// A `--vhost` app could not be loaded.
    Load(String),
}

impl CallError {
    /// Blames the client when reading its body failed before the app did.
    pub(super) fn or_client(self, failure: &Option<Arc<OnceLock<BodyError>>>) -> CallError {
        match (self, failure.as_ref().and_then(|f| f.get())) {
            (CallError::App(..), Some(e)) => CallError::Client(e.clone()),
            (other, _) => other,
        }
    }
}

impl WsgiHost {
    pub(super) fn error_response(&self, e: CallError) -> Response {
        match e {
            CallError::Client(e) => {
                crate::say!("oxgate: bad request body: {e}");
                return Response::for_body_error(&e);
            }
            CallError::App(err, environ) => Python::attach(|py| {
                log_exception(py, &self.helpers.exception_text, err, environ.bind(py));
            }),
            CallError::Internal(err) => {
                crate::say!("oxgate: internal error while calling the app: {err}");
            }
            CallError::Short { .. } => unreachable!("only after the response started"),
            CallError::NoApp => {
                return Response::plain(404, "Not Found", "No app is mounted at this path\n");
            }
            CallError::Load(msg) => crate::say!("oxgate: {msg}"),
        }
        Response::plain(500, "Internal Server Error", "Internal Server Error\n")
    }
}

pub(super) fn request_line(environ: &Bound<'_, PyDict>) -> String {
    let get = |k: &str| {
        environ
            .get_item(k)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let mut uri = get("REQUEST_URI");
    if uri.is_empty() {
        uri = get("PATH_INFO");
    }
    format!("{} {}", get("REQUEST_METHOD"), uri)
}

pub(super) fn log_exception(
    py: Python<'_>,
    exception_text: &Py<PyAny>,
    err: PyErr,
    environ: &Bound<'_, PyDict>,
) {
    let what = request_line(environ);
    let value = err.into_value(py);
    log_app_exception(py, exception_text, value.bind(py).as_any(), what);
}
