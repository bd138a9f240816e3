//! A done awaitable: what `send()` and a `receive()` with its message at
//! hand return, so that `await` goes on without a trip through the loop.

use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3::{PyTypeInfo, ffi};

/// An awaitable that is already done: `await` returns its value at once,
/// without a trip through the event loop.
#[pyclass(module = "oxgate")]
pub(crate) struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub(super) fn new(value: Option<Py<PyAny>>) -> Ready {
        Ready { value }
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }

    fn send(&mut self, py: Python<'_>, _arg: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__(py)
    }

    #[pyo3(signature = (exc, *_rest))]
    fn throw(
        &mut self,
        exc: &Bound<'_, PyAny>,
        _rest: &Bound<'_, pyo3::types::PyTuple>,
    ) -> PyResult<()> {
        Err(PyErr::from_value(exc.clone()))
    }

    fn close(&mut self) {}
}

/// Gives `Ready` the `am_send` slot, through which `await` takes a value
/// without the StopIteration that `__next__` must raise to return one
/// (an exception made, normalized and unpacked on each `send()` an ASGI
/// app awaits). pyo3 has no way to declare the slot; `__next__` stays for
/// callers that iterate by hand.
pub(super) fn install_send_slot(py: Python<'_>) {
    let tp = Ready::type_object(py).as_type_ptr();
    // SAFETY: `tp` is Ready's heap type, alive for the interpreter's life.
    // A heap type's `tp_as_async` points into the type object itself
    // (CPython sets it for every heap type) and is writable; `am_send` is
    // read only by `PyIter_Send`, under the GIL held here. PyType_Modified
    // drops any cached lookups of the type.
    unsafe {
        let slots = (*tp).tp_as_async;
        if !slots.is_null() {
            (*slots).am_send = Some(ready_send);
            ffi::PyType_Modified(tp);
        }
    }
}

/// `am_send` of `Ready`: returns its value (None after the first time).
unsafe extern "C" fn ready_send(
    iter: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: CPython calls the slot with the GIL held, a borrowed `iter`
    // of Ready's type (the slot is on no other type) and a valid `result`
    // to write a new reference, or NULL with an exception set, to.
    unsafe {
        let py = Python::assume_attached();
        let iter = Bound::from_borrowed_ptr(py, iter);
        let taken = iter
            .cast::<Ready>()
            .map_err(PyErr::from)
            .and_then(|r| {
                r.try_borrow_mut()
                    .map_err(|_| PyRuntimeError::new_err("an awaitable awaited twice at once"))
            })
            .map(|mut r| r.value.take().unwrap_or_else(|| py.None()));
        match taken {
            Ok(value) => {
                *result = value.into_ptr();
                ffi::PySendResult::PYGEN_RETURN
            }
            Err(e) => {
                e.restore(py);
                *result = std::ptr::null_mut();
                ffi::PySendResult::PYGEN_ERROR
            }
        }
    }
}
