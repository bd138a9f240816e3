//! An exception the app raised, written to the log with its traceback by
//! loader.py's `log_exception`: for WSGI and ASGI apps alike.

use pyo3::prelude::*;

/// Logs `error` with its traceback; `what` says which request, and when.
pub(super) fn log_app_exception(
    py: Python<'_>,
    log_exception: &Py<PyAny>,
    error: &Bound<'_, PyAny>,
    what: String,
) {
    if log_exception.call1(py, (error, what)).is_err() {
        crate::say!("oxgate: error in the app (and its traceback could not be printed)");
    }
}
