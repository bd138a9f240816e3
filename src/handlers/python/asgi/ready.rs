//! A done awaitable: what `send()` and a `receive()` with its message at
//! hand return, so that `await` goes on without a trip through the loop.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

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
