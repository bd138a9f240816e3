//! Building a request's environ from its CGI variables, with the decoded
//! values (PEP 3333's "bytes as str") shared from one request to the next.

use bytes::Bytes;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::error::CallError;
use super::host::{SLOTTED, WsgiHost};
use crate::request::cgi::says_https;
use crate::request::{Var, VarName};

impl WsgiHost {
    /// A request's environ: a copy of the template with the request's
    /// variables set (all but `wsgi.input`, which `begin` adds).
    pub(super) fn environ<'py>(
        &self,
        py: Python<'py>,
        vars: Vec<(VarName, Bytes)>,
    ) -> Result<Bound<'py, PyDict>, CallError> {
        let environ = self.template.bind(py).copy().map_err(CallError::Internal)?;
        // SLOTTED variables still to be given a value: those a request
        // lacks are removed from the copy at the end.
        let mut unset: u16 = (1 << SLOTTED.len()) - 1;
        // A front end that terminated TLS says so (protocols.md §7.2).
        let mut https = false;
        for (name, value) in &vars {
            https |= says_https(name, value);
            let (key, value) = match name {
                VarName::Known(v) => {
                    unset &= !self.slot_bits[*v as usize];
                    let value = if value.is_empty() {
                        self.empty.bind(py).clone()
                    } else {
                        recent_latin1(py, *v, value)
                    };
                    if *v == Var::REQUEST_URI {
                        environ
                            .set_item(self.key_raw_uri.bind(py), &value)
                            .map_err(CallError::Internal)?;
                    }
                    (self.keys[*v as usize].bind(py).clone(), value)
                }
                VarName::Other(b) => (latin1(py, b), latin1(py, value)),
            };
            environ.set_item(key, value).map_err(CallError::Internal)?;
        }
        crate::request::recycle_vars(vars);
        while unset != 0 {
            let var = SLOTTED[unset.trailing_zeros() as usize];
            unset &= unset - 1;
            environ
                .del_item(self.keys[var as usize].bind(py))
                .map_err(CallError::Internal)?;
        }
        if https {
            environ
                .set_item("wsgi.url_scheme", "https")
                .map_err(CallError::Internal)?;
        }
        Ok(environ)
    }
}

/// Decodes raw bytes as ISO-8859-1: PEP 3333's "bytes as str".
fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // SAFETY: the GIL is held (`py`); `b` is readable for `b.len()` bytes,
    // which fits a Py_ssize_t (no slice is longer than isize::MAX). The
    // result is a new reference to a str, or null only on memory exhaustion,
    // where `from_owned_ptr` panics: so the unchecked cast to str is right.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            b.as_ptr().cast(),
            b.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        // Latin-1 decoding cannot fail; only memory exhaustion could.
        Bound::from_owned_ptr(py, ptr).cast_into_unchecked()
    }
}

thread_local! {
    /// The str last made on this thread for each CGI variable. Most values
    /// repeat from one request to the next (the server's name and port, the
    /// client's address, Host, User-Agent, Accept, ...): one equal to the
    /// last is shared rather than decoded again.
    static RECENT: std::cell::RefCell<Vec<Option<Py<PyString>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Longer values (cookies, say) are always decoded afresh.
const RECENT_MAX: usize = 256;

/// `latin1(value)`, or the equal str last made for `var` on this thread.
fn recent_latin1<'py>(py: Python<'py>, var: Var, value: &[u8]) -> Bound<'py, PyString> {
    if value.len() > RECENT_MAX {
        return latin1(py, value);
    }
    RECENT.with_borrow_mut(|recent| {
        if recent.is_empty() {
            recent.resize_with(Var::ALL.len(), || None);
        }
        let slot = &mut recent[var as usize];
        if let Some(last) = slot
            && same_latin1(last.bind(py), value)
        {
            return last.bind(py).clone();
        }
        let made = latin1(py, value);
        *slot = Some(made.clone().unbind());
        made
    })
}

/// Whether `s` is `b` decoded as latin-1 (and so a str of one-byte kind).
fn same_latin1(s: &Bound<'_, PyString>, b: &[u8]) -> bool {
    let p = s.as_ptr();
    // SAFETY: `s` is a live, ready str (made by `latin1`); a one-byte kind
    // str's data is its length in bytes.
    unsafe {
        ffi::PyUnicode_GET_LENGTH(p) as usize == b.len()
            && ffi::PyUnicode_KIND(p) == ffi::PyUnicode_1BYTE_KIND
            && std::slice::from_raw_parts(ffi::PyUnicode_DATA(p).cast::<u8>(), b.len()) == b
    }
}
