//! An exception the app raised, written to the log with its traceback
//! (loader.py's `exception_text`): for WSGI and ASGI apps alike.

use pyo3::prelude::*;

/// Logs `error` with its traceback; `what` says which request, and when.
/// One of oxgate's own lines, written whole: a syslog logger (Gunicorn's
/// `syslog`) gets it as one record at level error, as Gunicorn sends its
/// "Error handling request" (written to the app's stderr, it was the
/// app's output, which Gunicorn's syslog never takes).
pub(super) fn log_app_exception(
    py: Python<'_>,
    exception_text: &Py<PyAny>,
    error: &Bound<'_, PyAny>,
    what: String,
) {
    match exception_text
        .call1(py, (error,))
        .and_then(|t| t.extract::<String>(py))
    {
        Ok(text) => crate::say!("oxgate: error in {what}:\n{}", text.trim_end_matches('\n')),
        Err(_) => crate::say!("oxgate: error in {what} (and its traceback could not be formatted)"),
    }
}
