//! `--vhost`: finding (and loading on first use) the app a request's
//! UWSGI_* variables name.

use bytes::Bytes;
use pyo3::prelude::*;

use super::error::CallError;
use super::host::WsgiHost;
use crate::request::VarName;

impl WsgiHost {
    /// `--vhost`: the app the request's UWSGI_SCRIPT, UWSGI_MODULE (+
    /// UWSGI_CALLABLE) or UWSGI_FILE names, loaded on first use (after
    /// UWSGI_CHDIR and UWSGI_PYHOME) and kept. `None` if it names none.
    pub(super) fn dynamic_app<'py>(
        &self,
        py: Python<'py>,
        vars: &[(VarName, Bytes)],
    ) -> Option<Result<Bound<'py, PyAny>, CallError>> {
        const NAMES: [&[u8]; 6] = [
            b"UWSGI_SCRIPT",
            b"UWSGI_MODULE",
            b"UWSGI_CALLABLE",
            b"UWSGI_FILE",
            b"UWSGI_CHDIR",
            b"UWSGI_PYHOME",
        ];
        let mut values: [&[u8]; 6] = [b""; 6];
        for (name, value) in vars {
            if let VarName::Other(n) = name
                && let Some(i) = NAMES.iter().position(|k| *k == &n[..])
            {
                values[i] = value;
            }
        }
        if values[0].is_empty() && values[1].is_empty() && values[3].is_empty() {
            return None;
        }
        let key = values.join(&0u8);
        if let Some(app) = self.dynamic.lock().expect("not poisoned").get(&key) {
            let app = app.bind(py).clone();
            // Its site's directory, path and modules, which another
            // site's request may have replaced (loading did this once).
            if !values[4].is_empty()
                && let Err(e) = self
                    .helpers
                    .enter_vhost
                    .call1(py, (String::from_utf8_lossy(values[4]).into_owned(),))
            {
                return Some(Err(CallError::Load(format!(
                    "--vhost: UWSGI_CHDIR {:?}: {e}",
                    String::from_utf8_lossy(values[4])
                ))));
            }
            return Some(Ok(app));
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let args = (
            text(values[0]),
            text(values[1]),
            text(values[2]),
            text(values[3]),
            text(values[4]),
            text(values[5]),
        );
        let what = format!(
            "UWSGI_SCRIPT={:?} UWSGI_MODULE={:?} UWSGI_FILE={:?} UWSGI_CHDIR={:?}",
            args.0, args.1, args.3, args.4
        );
        let loaded: Result<(Option<Py<PyAny>>, Option<String>), String> = self
            .helpers
            .load_vhost
            .call1(py, args)
            .and_then(|r| r.extract(py))
            .map_err(|e| e.to_string());
        Some(match loaded {
            Ok((Some(app), _)) => {
                crate::say!("oxgate: --vhost: loaded the app for {what}");
                let bound = app.bind(py).clone();
                self.dynamic.lock().expect("not poisoned").insert(key, app);
                Ok(bound)
            }
            Ok((None, msg)) => Err(CallError::Load(format!(
                "--vhost: cannot load the app for {what}: {}",
                msg.unwrap_or_default()
            ))),
            Err(e) => Err(CallError::Load(format!(
                "--vhost: cannot load the app for {what}: {e}"
            ))),
        })
    }
}
