//! Scheduling each request: inline on the event loop (`--threads 1` and a
//! body already in memory), or on a thread of the Python pool.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::prelude::*;
use tokio::sync::{mpsc, oneshot};

use super::super::pool::Pool;
use super::body::{ChannelChunks, InlineChunks, file_body};
use super::call::{late_app_error, log_late_error};
use super::error::CallError;
use super::host::{CHANNEL_DEPTH, Core, WsgiApp, WsgiHost};
use super::input::{Input, InputDone};
use super::start_response::{ChunkSender, HeadSender, Started, WriteStream};
use crate::listen::Protocol;
use crate::request::{
    BodyError, BodyStream, Handler, Request, RequestBody, Responding, Response, ResponseBody, Var,
    VarName, var_named,
};

impl Handler for WsgiApp {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        Box::pin(async move { self.host.handle(&self, req).await })
    }

    fn concurrency(&self) -> usize {
        self.host.threads
    }

    /// With one thread, the event loop runs the app itself: busy, it does
    /// not accept either, and the gate would only cost each connection a
    /// turn of the loop (7% of Flask's requests a second without
    /// keep-alive).
    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        (self.host.threads > 1).then(|| self.host.permits())
    }
}

impl WsgiHost {
    /// Serves one request. Runs inside the worker's tokio runtime.
    async fn handle(self: &Arc<Self>, app: &Arc<WsgiApp>, req: Request) -> Response {
        let Request {
            mut vars,
            body,
            is_head,
            protocol,
            // A WSGI app cannot take a connection over: hyper goes on
            // with HTTP when the handler does not answer 101.
            upgradable: _,
            // Nor send a 103: PEP 3333 has no way to say one.
            early_hints: _,
            // The environ joins a repeated header's values (PEP 3333).
            repeated_headers: _,
            // SERVER_NAME and SERVER_PORT say it, as PEP 3333 has them.
            local_addr: _,
            // Trusted or not by the wrappers before: the app has the client.
            proxied_by: _,
            // Applied by its wrapper before, if asked for.
            script_name_header: _,
        } = req;
        let input = match body {
            RequestBody::Empty => Input::buffered(Bytes::new()),
            RequestBody::Full(b) => {
                // A body read whole that came without a length over
                // HTTP/2 (no content-length): its length is known now, and
                // said, as nginx says it to uWSGI. Django and Bottle read
                // CONTENT_LENGTH, and saw an empty body. (A chunked
                // HTTP/1.1 body keeps none, as Gunicorn gives it.)
                if var_named(&vars, b"CONTENT_LENGTH").is_none()
                    && var_named(&vars, b"HTTP_TRANSFER_ENCODING").is_none()
                {
                    vars.push((
                        VarName::Known(Var::CONTENT_LENGTH),
                        Bytes::from(b.len().to_string()),
                    ));
                }
                Input::buffered(b)
            }
            // The app may block reading a body still arriving: that needs a
            // thread of its own, not the event loop.
            RequestBody::Stream(s) => {
                let (input, done) = Input::streaming(s);
                return self
                    .handle_pooled(app.clone(), vars, (input, Some(done)), is_head, protocol)
                    .await;
            }
        };
        // An app that streams with write() needs a thread of its own, as a
        // streamed request body does: inline, the event loop is the thread
        // running it, and nothing it writes could go out before it returns.
        if self.threads > 1 || self.writes_seen.load(std::sync::atomic::Ordering::Relaxed) {
            return self
                .handle_pooled(app.clone(), vars, (input, None), is_head, protocol)
                .await;
        }
        let Some(mut core) = self.core(&vars, protocol).await else {
            return Response::plain(503, "Service Unavailable", "Shutting down\n");
        };
        // One GIL acquisition covers the call, the first chunk and, for a
        // complete body, close(): embedding.md measured each extra one.
        // An app whose close() proved slow has it run after the response
        // has gone out instead.
        let started = Python::attach(|py| {
            let mut call = self.begin(py, app, vars, input, None)?;
            if call.end_write_stream(py) {
                self.note_writes();
            }
            let (head, first) = call.first_chunk(py)?;
            let finished = call.is_finished(py);
            if (finished && !(self.defers_close() && call.has_close(py))) || is_head {
                self.close_inline(py, &mut call);
                // A complete body goes out whole, with its length; for HEAD
                // the front end sends the length but not the body.
                let body = match first {
                    Some(b) if finished => ResponseBody::Full(b),
                    _ => ResponseBody::Empty,
                };
                return Ok::<_, CallError>(Err(head.into_response(body)));
            }
            // A complete body whose close() is to wait goes out as a
            // stream of one chunk, whose end runs it after the write.
            Ok(Ok((call, head, first)))
        });
        match started {
            Err(e) => {
                core.outcome.failed = true;
                let r = self.error_response(e);
                core.whole(&r);
                r
            }
            Ok(Err(done)) => {
                core.whole(&done);
                if is_head {
                    core.outcome.body_bytes = 0;
                }
                done
            }
            Ok(Ok((mut call, head, first))) => {
                core.head(head.status, head.reason.as_deref(), &head.headers);
                if first.is_none()
                    && let Some(region) = call.take_file()
                {
                    return head.into_response(ResponseBody::Stream {
                        first: None,
                        rest: BodyStream::new(file_body(region, call, core, None)),
                    });
                }
                core.chunk(first.as_ref().map_or(0, |b| b.len()));
                let first_sent = first.is_some();
                head.into_response(ResponseBody::Stream {
                    first,
                    rest: BodyStream::new(InlineChunks::new(call, core, first_sent)),
                })
            }
        }
    }

    async fn handle_pooled(
        self: &Arc<Self>,
        app: Arc<WsgiApp>,
        vars: Vec<(VarName, Bytes)>,
        (input, input_done): (Input, Option<InputDone>),
        is_head: bool,
        protocol: Protocol,
    ) -> Response {
        let Some(mut core) = self.core(&vars, protocol).await else {
            return Response::plain(503, "Service Unavailable", "Shutting down\n");
        };
        core.input_done = input_done;
        let (head_tx, head_rx) = oneshot::channel();
        let (chunk_tx, chunk_rx) = mpsc::channel(CHANNEL_DEPTH);
        let Some(pool) = self.pool.get_or_init(|| Pool::new(self.threads)) else {
            return Response::plain(503, "Service Unavailable", "No Python thread\n");
        };
        let host = self.clone();
        pool.submit(move || {
            let core = Python::attach(|py| {
                host.run_pooled(py, core, &app, vars, input, is_head, head_tx, chunk_tx)
            });
            // Counted and logged after the GIL is released.
            drop(core);
        });
        match head_rx.await {
            Err(_) => Response::plain(500, "Internal Server Error", "Internal Server Error\n"),
            Ok(Err(error_response)) => error_response,
            Ok(Ok(Started::File(head, file))) => head.into_response(ResponseBody::Stream {
                first: None,
                rest: BodyStream::new(file),
            }),
            Ok(Ok(Started::Head(head, first, finished))) => {
                let body = if finished {
                    first.map_or(ResponseBody::Empty, ResponseBody::Full)
                } else if is_head {
                    ResponseBody::Empty
                } else {
                    ResponseBody::Stream {
                        first,
                        rest: BodyStream::new(ChannelChunks(chunk_rx)),
                    }
                };
                head.into_response(body)
            }
        }
    }

    /// The body of a pooled call, on a Python thread. Gives back the core,
    /// unless a file body took it, for the caller to drop without the GIL.
    #[allow(clippy::too_many_arguments)]
    fn run_pooled(
        &self,
        py: Python<'_>,
        mut core: Core,
        app: &WsgiApp,
        vars: Vec<(VarName, Bytes)>,
        input: Input,
        is_head: bool,
        head_tx: HeadSender,
        chunk_tx: ChunkSender,
    ) -> Option<Core> {
        // The error response is made here, as the one-thread path makes
        // it, so the request log and the counters see what is sent.
        let failed = |core: &mut Core, e: CallError| {
            core.outcome.failed = true;
            let r = self.error_response(e);
            core.whole(&r);
            r
        };
        // What the app gives write() goes out as it writes, where there is
        // a body to send.
        let (mut head_tx, stream) = if is_head {
            (Some(head_tx), None)
        } else {
            (None, Some(WriteStream::shared(head_tx, chunk_tx.clone())))
        };
        let begun = self.begin(py, app, vars, input, stream.clone());
        if let Ok(call) = &begun
            && call.end_write_stream(py)
        {
            self.note_writes();
        }
        // The app returned or raised: what did its write()s send?
        let mut streamed = None;
        if let Some(stream) = &stream {
            let mut st = stream.lock().unwrap_or_else(|e| e.into_inner());
            st.chunks = None;
            match st.head_tx.take() {
                Some(tx) => head_tx = Some(tx),
                None => {
                    if let Some((status, reason, headers)) = st.head_sent.take() {
                        core.head(status, reason.as_deref(), &headers);
                    }
                    core.outcome.switches += st.chunks_sent;
                    core.outcome.body_bytes += st.sent;
                    streamed = Some((st.limit, st.sent, st.client_gone));
                }
            }
        }
        let mut call = match (begun, streamed) {
            (Ok(call), None) => call,
            (Err(e), None) => {
                if let Some(head_tx) = head_tx {
                    let _ = head_tx.send(Err(failed(&mut core, e)));
                }
                return Some(core);
            }
            (Err(e), Some((_, _, client_gone))) => {
                // The response started with its writes: it is cut. (The
                // app was called: its own error, or the client's body's.)
                if !client_gone {
                    let error = match e {
                        CallError::App(err, environ) => {
                            late_app_error(py, &self.helpers.exception_text, err, environ.bind(py))
                        }
                        CallError::Client(e) => {
                            BodyError::new(500, format!("bad request body: {e}"))
                        }
                        _ => unreachable!("an error before the app was called"),
                    };
                    let _ = py.detach(|| chunk_tx.blocking_send(Err(error)));
                    core.outcome.failed = true;
                }
                return Some(core);
            }
            (Ok(mut call), Some((limit, sent, client_gone))) => {
                if client_gone {
                    call.close(py);
                    return Some(core);
                }
                call.resume_after_writes(limit, sent);
                return self.send_rest(py, core, call, chunk_tx);
            }
        };
        let Some(head_tx) = head_tx else {
            unreachable!("the head's sender is back when nothing was written")
        };
        match call.first_chunk(py) {
            Err(e) => {
                let _ = head_tx.send(Err(failed(&mut core, e)));
                return Some(core);
            }
            Ok((head, first)) => {
                let finished = call.is_finished(py);
                core.head(head.status, head.reason.as_deref(), &head.headers);
                if !is_head
                    && first.is_none()
                    && let Some(region) = call.take_file()
                {
                    // The event loop sends the file and closes the call.
                    let body = file_body(region, call, core, Pool::this_thread());
                    if let Some(pool) = self.pool.get().and_then(Option::as_ref) {
                        pool.hold_this_thread();
                    }
                    let _ = head_tx.send(Ok(Started::File(head, body)));
                    return None;
                }
                if !is_head {
                    core.chunk(first.as_ref().map_or(0, |b| b.len()));
                }
                let started = Started::Head(head, first, finished);
                if head_tx.send(Ok(started)).is_err() || finished || is_head {
                    call.close(py);
                    return Some(core);
                }
            }
        }
        self.send_rest(py, core, call, chunk_tx)
    }

    /// The body after its first chunk, on the call's Python thread; then
    /// the call's close().
    fn send_rest(
        &self,
        py: Python<'_>,
        mut core: Core,
        mut call: super::call::Call,
        chunk_tx: ChunkSender,
    ) -> Option<Core> {
        loop {
            match call.next_chunk(py) {
                Ok(Some(chunk)) => {
                    core.chunk(chunk.len());
                    if py.detach(|| chunk_tx.blocking_send(Ok(chunk))).is_err() {
                        break; // the client went away
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let error = log_late_error(py, &call, e);
                    let _ = py.detach(|| chunk_tx.blocking_send(Err(error)));
                    core.outcome.failed = true;
                    break;
                }
            }
        }
        // The body's end goes out first: a slow close() must not hold it.
        drop(chunk_tx);
        call.close(py);
        Some(core)
    }
}

impl WsgiHost {
    /// The app called write(): its next requests run on a Python thread
    /// (a pool of one with `--threads 1`), where what it writes streams.
    fn note_writes(&self) {
        use std::sync::atomic::Ordering;
        if self.threads == 1 && !self.writes_seen.swap(true, Ordering::Relaxed) {
            crate::note!(
                "oxgate: the app streams with write(): its requests run on a Python thread from now on, so that what it writes goes out as it writes it"
            );
        }
    }
}
