//! The Python side of oxgate: `loader.py`, loaded once, and the functions
//! it provides (loading apps, logging exceptions, listing module files).

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::PyModule;

pub(crate) struct Helpers {
    pub load: Py<PyAny>,
    /// `--import`.
    pub import_module: Py<PyAny>,
    pub(super) load_vhost: Py<PyAny>,
    /// `--vhost`: a request runs in its site's directory and modules.
    pub(super) enter_vhost: Py<PyAny>,
    pub(crate) exception_text: Py<PyAny>,
    pub asgi_kind: Py<PyAny>,
    pub asgi2: Py<PyAny>,
}

pub(crate) fn helpers(py: Python<'_>) -> PyResult<Helpers> {
    let code = CString::new(include_str!("../loader.py")).expect("no NUL in loader.py");
    let m = PyModule::from_code(py, &code, c"oxgate/loader.py", c"_oxgate_loader")?;
    Ok(Helpers {
        load: m.getattr("load")?.unbind(),
        import_module: m.getattr("import_module")?.unbind(),
        load_vhost: m.getattr("load_vhost")?.unbind(),
        enter_vhost: m.getattr("enter_vhost")?.unbind(),
        exception_text: m.getattr("exception_text")?.unbind(),
        asgi_kind: m.getattr("asgi_kind")?.unbind(),
        asgi2: m.getattr("asgi2")?.unbind(),
    })
}
