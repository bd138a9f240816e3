//! The body of a started response as the front end pulls it: chunks from an
//! inline call, from a pooled call's channel, or a file to send.

use std::task::{Context, Poll};

use bytes::Bytes;
use pyo3::prelude::*;
use tokio::sync::mpsc;

use super::call::{Call, log_late_error};
use super::host::Core;
use crate::request::{BodyError, ChunkSource, FileBody, FileRegion};

/// The body of a response that is a file: sent (or read) by the front end,
/// then the app's iterable is closed and the request is over.
/// `pooled`: the app's `close()` runs on a Python thread, not on the event
/// loop (where waiting for the GIL would hold up every connection).
pub(super) fn file_body(
    region: FileRegion,
    mut call: Call,
    mut core: Core,
    pooled: bool,
) -> FileBody {
    FileBody::new(region, move |end| {
        core.chunk(end.sent as usize);
        core.outcome.failed = end.failed;
        let host = core.host.clone();
        let finish = move || {
            Python::attach(|py| call.close(py));
            drop(core); // the request is over: counted and logged, without the GIL
        };
        match host.pool.get() {
            Some(pool) if pooled => pool.submit(finish),
            _ => finish(),
        }
    })
}

/// Pulls chunks from an inline call as the connection can take them.
pub(super) struct InlineChunks {
    pub(super) call: Option<Call>,
    /// Held until the response is done: the request runs until then.
    pub(super) core: Option<Core>,
}

impl ChunkSource for InlineChunks {
    fn poll_chunk(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(None);
        };
        let next = Python::attach(|py| match call.next_chunk(py) {
            Ok(Some(b)) => {
                if let Some(core) = self.core.as_mut() {
                    core.chunk(b.len());
                }
                Some(Ok(b))
            }
            Ok(None) => {
                call.close(py);
                None
            }
            Err(e) => {
                let msg = log_late_error(py, call, e);
                call.close(py);
                Some(Err(BodyError::new(500, msg)))
            }
        });
        if !matches!(next, Some(Ok(_))) {
            self.call = None;
            if let Some(mut core) = self.core.take() {
                core.outcome.failed = next.is_some();
            }
        }
        Poll::Ready(next)
    }
}

/// Chunks produced by a pooled call on a Python thread.
pub(super) struct ChannelChunks(pub(super) mpsc::Receiver<Result<Bytes, BodyError>>);

impl ChunkSource for ChannelChunks {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.0.poll_recv(cx)
    }
}
