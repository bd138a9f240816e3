//! `wsgi.input`: the request body, already in memory or still arriving.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use pyo3::exceptions::{PyIOError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::{mpsc, oneshot};

use super::host::CHANNEL_DEPTH;
use crate::request::{BodyError, BodyStream};

enum Source {
    /// The whole body, already in memory, and what of it is not read yet.
    Buffered { whole: Bytes, rest: Bytes },
    /// A body still arriving; the feeder task starts reading it on the
    /// first `read`.
    Streaming {
        start: Option<oneshot::Sender<()>>,
        rx: mpsc::Receiver<Result<Bytes, BodyError>>,
        pending: Bytes,
        eof: bool,
    },
}

/// Held while the app may read a streamed body (`Input::streaming`):
/// dropping it ends the reading for the app.
pub(super) type InputDone = oneshot::Sender<()>;

/// `wsgi.input`. Reading past the end returns `b""` and never blocks.
#[pyclass(module = "oxgate")]
pub(crate) struct Input {
    source: Source,
    /// Where the next read starts (`tell()`).
    position: u64,
    /// Set when the client's body was malformed or too large: if the app
    /// then fails, the client is told about its own fault (400/413). Only
    /// a body still arriving can fail: none for one already read.
    pub(super) failure: Option<Arc<OnceLock<BodyError>>>,
}

impl Input {
    pub(super) fn buffered(body: Bytes) -> Input {
        Input {
            source: Source::Buffered {
                rest: body.clone(),
                whole: body,
            },
            position: 0,
            failure: None,
        }
    }

    /// A body still arriving, read for the app once it first reads, until
    /// its `Input` is dropped or the returned `InputDone` is (the request
    /// over: the app's environ, and so its input, may live on in a
    /// reference cycle until Python's collector runs).
    pub(super) fn streaming(mut body: BodyStream) -> (Input, InputDone) {
        let (start_tx, start_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(async move {
            let feed = async {
                if start_rx.await.is_ok() {
                    while let Some(chunk) = body.chunk().await {
                        if tx.send(chunk).await.is_err() {
                            break; // the app is done with it
                        }
                    }
                }
            };
            tokio::select! {
                biased;
                _ = done_rx => {}
                () = feed => {}
            }
            body.drain_unread().await;
        });
        let input = Input {
            source: Source::Streaming {
                start: Some(start_tx),
                rx,
                pending: Bytes::new(),
                eof: false,
            },
            position: 0,
            failure: Some(Arc::default()),
        };
        (input, done_tx)
    }

    /// The buffered bytes not yet read; fetches the next chunk (blocking
    /// without the GIL) when they are used up. Empty only at the end.
    fn fill(&mut self, py: Python<'_>) -> PyResult<&mut Bytes> {
        let failure = &self.failure;
        match &mut self.source {
            Source::Buffered { rest, .. } => Ok(rest),
            Source::Streaming {
                start,
                rx,
                pending,
                eof,
            } => {
                while pending.is_empty() && !*eof {
                    if let Some(start) = start.take() {
                        let _ = start.send(());
                    }
                    match py.detach(|| rx.blocking_recv()) {
                        Some(Ok(chunk)) => *pending = chunk,
                        Some(Err(e)) => {
                            *eof = true;
                            let msg = e.message.clone();
                            if let Some(failure) = failure {
                                let _ = failure.set(e);
                            }
                            return Err(PyIOError::new_err(msg));
                        }
                        None => *eof = true,
                    }
                }
                Ok(pending)
            }
        }
    }

    fn read_bytes(&mut self, py: Python<'_>, size: Option<usize>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = size.map(|s| s - out.len());
            if want == Some(0) {
                break;
            }
            let buf = self.fill(py)?;
            if buf.is_empty() {
                break;
            }
            let n = want.map_or(buf.len(), |w| w.min(buf.len()));
            out.extend_from_slice(&buf.split_to(n));
        }
        self.position += out.len() as u64;
        Ok(out)
    }

    fn read_line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = limit.map(|s| s - out.len());
            if want == Some(0) {
                break;
            }
            let buf = self.fill(py)?;
            if buf.is_empty() {
                break;
            }
            let avail = want.map_or(buf.len(), |w| w.min(buf.len()));
            match memchr(b'\n', &buf[..avail]) {
                Some(i) => {
                    out.extend_from_slice(&buf.split_to(i + 1));
                    break;
                }
                None => out.extend_from_slice(&buf.split_to(avail)),
            }
        }
        self.position += out.len() as u64;
        Ok(out)
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok(if n < 0 { None } else { Some(n as usize) })
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size)?;
        if let Source::Buffered { rest, .. } = &mut self.source {
            let n = size.map_or(rest.len(), |s| s.min(rest.len()));
            self.position += n as u64;
            return Ok(PyBytes::new(py, &rest.split_to(n)));
        }
        let data = self.read_bytes(py, size)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let size = size_arg(size)?;
        let line = self.read_line(py, size)?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?.filter(|h| *h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    /// Where the next read starts, as uWSGI's input tells it.
    fn tell(&self) -> u64 {
        self.position
    }

    /// Reads a body read whole (`--post-buffering`, or one that came with
    /// its head) again from another place, as uWSGI's input does with
    /// post-buffering: a webhook's signature check reads the raw body
    /// after a framework has read it. A body still arriving cannot go back,
    /// and says so, as uWSGI does.
    #[pyo3(signature = (offset, whence = 0))]
    fn seek(&mut self, offset: i64, whence: i32) -> PyResult<u64> {
        let Source::Buffered { whole, rest } = &mut self.source else {
            return Err(PyIOError::new_err(
                "wsgi.input cannot seek: the body is read as it arrives (--post-buffering reads it whole first)",
            ));
        };
        let base = match whence {
            0 => 0,
            1 => self.position as i64,
            2 => whole.len() as i64,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "invalid whence ({whence}, should be 0, 1 or 2)"
                )));
            }
        };
        let to = base.saturating_add(offset);
        let to = u64::try_from(to)
            .map_err(|_| PyValueError::new_err(format!("negative seek position {to}")))?;
        // Past the end, as io.BytesIO allows: the next read is empty.
        *rest = whole.slice((to as usize).min(whole.len())..);
        self.position = to;
        Ok(to)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }
}
