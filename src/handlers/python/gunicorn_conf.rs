//! Gunicorn's Python config file, run in this process's interpreter (the
//! one that will load the app, so that its hooks are at hand later).

use std::ffi::CString;
use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::config::gunicorn::PyValue;

/// Starts the interpreter if it is not running yet, runs `source` (a path,
/// or `python:module`) and reports the names the file left.
pub fn read_gunicorn_config(
    source: &str,
    home: Option<&Path>,
) -> Result<Vec<(String, PyValue)>, String> {
    super::initialize(home)?;
    Python::attach(|py| {
        let code = CString::new(include_str!("gunicorn_conf.py")).expect("no NUL");
        let module = PyModule::from_code(
            py,
            &code,
            c"oxgate/gunicorn_conf.py",
            c"_oxgate_gunicorn_conf",
        )
        .map_err(|e| format!("internal: {e}"))?;
        // Kept importable, so the hooks' namespace outlives this call.
        py.import("sys")
            .and_then(|sys| sys.getattr("modules"))
            .and_then(|m| m.set_item("_oxgate_gunicorn_conf", &module))
            .map_err(|e| format!("internal: {e}"))?;
        type Names = Option<Vec<(String, String, Py<PyAny>)>>;
        let (names, error): (Names, Option<String>) = module
            .call_method1("read", (source,))
            .and_then(|r| r.extract())
            .map_err(|e| format!("internal: {e}"))?;
        if let Some(e) = error {
            return Err(e);
        }
        let names = names.unwrap_or_default();
        names
            .into_iter()
            .map(|(name, kind, value)| {
                let value = value.bind(py);
                let v = match kind.as_str() {
                    "none" => PyValue::None,
                    "bool" => PyValue::Bool(value.extract().unwrap_or(false)),
                    "int" => match value.extract::<i64>() {
                        Ok(i) => PyValue::Int(i),
                        Err(_) => PyValue::Other("int".into()),
                    },
                    "str" => PyValue::Str(value.extract().unwrap_or_default()),
                    "list" => PyValue::List(value.extract().unwrap_or_default()),
                    "callable" => PyValue::Callable,
                    _ => PyValue::Other(value.extract().unwrap_or_default()),
                };
                Ok((name, v))
            })
            .collect()
    })
}
