//! `wsgi.file_wrapper`, and the file region behind it that the front end
//! can send straight from the descriptor.

use std::os::fd::{FromRawFd, OwnedFd};

use pyo3::prelude::*;

use crate::request::FileRegion;

/// The region of a regular file behind `wsgi.file_wrapper`: from the app's
/// current position to the end, on a descriptor of oxgate's own.
pub(super) fn file_region(py: Python<'_>, wrapper: &Bound<'_, FileWrapper>) -> Option<FileRegion> {
    let filelike = wrapper.borrow().filelike.clone_ref(py);
    let fd: i32 = filelike
        .bind(py)
        .call_method0("fileno")
        .ok()?
        .extract()
        .ok()?;
    // SAFETY: `libc::stat` is a C struct of plain integers, for which all
    // zero bytes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat` for fstat to fill; `fd` is only
    // inspected (a descriptor that is not open makes fstat fail with EBADF).
    if unsafe { libc::fstat(fd, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
        return None;
    }
    // Python's file object may have buffered ahead; tell() knows where
    // the app's view of the file is.
    let offset: u64 = filelike
        .bind(py)
        .call_method0("tell")
        .ok()?
        .extract()
        .ok()?;
    // SAFETY: F_DUPFD_CLOEXEC takes an int and touches no memory; it makes
    // a new descriptor and leaves `fd` (the Python file's own) as it is.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    Some(FileRegion {
        // SAFETY: `dup` (not negative, checked above) is the descriptor fcntl
        // just made, owned by nothing else: the OwnedFd is its only owner.
        fd: unsafe { OwnedFd::from_raw_fd(dup) },
        offset,
        len: (st.st_size as u64).saturating_sub(offset),
    })
}

/// `wsgi.file_wrapper`: an iterable over a file-like object. When the app
/// returns it unwrapped and the file is a regular file, the server reads the
/// descriptor itself instead of calling `read()` from Python.
#[pyclass(module = "oxgate")]
pub(crate) struct FileWrapper {
    filelike: Py<PyAny>,
    block_size: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, block_size = 8192))]
    fn new(filelike: Py<PyAny>, block_size: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            block_size: block_size.max(1),
        }
    }

    /// The file, and the size of each read, by the names wsgiref's and
    /// Gunicorn's wrappers give them: middleware that unwraps a response
    /// reads them.
    #[getter]
    fn filelike(&self, py: Python<'_>) -> Py<PyAny> {
        self.filelike.clone_ref(py)
    }

    #[getter]
    fn blksize(&self) -> usize {
        self.block_size
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.block_size,))?;
        let done = data.len().map(|n| n == 0).unwrap_or(true);
        Ok(if done { None } else { Some(data) })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if let Some(close) = f.getattr_opt("close")? {
            close.call0()?;
        }
        Ok(())
    }
}
