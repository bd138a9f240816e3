//! The connection's side of an ASGI request, on the worker's tokio thread:
//! posts the request to the loop, waits for the response head, streams the
//! body, and pumps the request body to the app as it asks for it.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::bridge::start_request;
use super::exchange::{
    AppEnd, Exchange, Head, SEND_LOW, Settlement, State, post_received, post_settle,
};
use super::host::{AsgiApp, Slot};
use super::scope::{RequestVars, ServerAddress};
use crate::listen::Protocol;
use crate::request::{
    BodyError, BodyStream, BodyTaking, ChunkSource, FileBody, FileRegion, Handler, Request,
    RequestBody, Responding, Response, ResponseBody, Trailers, Var, VarName, clip, declared_length,
    var, var_named,
};

impl Handler for AsgiApp {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        Box::pin(serve(self, req))
    }

    fn concurrency(&self) -> usize {
        super::host::ASGI_CORES
    }

    /// As uvicorn: a body waited for holds no thread, and the app may
    /// read it while it answers (a duplex stream) or answer first.
    fn body_taking(&self) -> BodyTaking {
        BodyTaking::AsItComes
    }
}

async fn serve(app: Arc<AsgiApp>, req: Request) -> Response {
    let host = app.host.clone();
    if !host.running() {
        return Response::plain(503, "Service Unavailable", "Shutting down\n");
    }
    host.relay.ensure_running();
    let Request {
        vars,
        body,
        is_head,
        protocol,
        upgradable,
        early_hints,
        repeated_headers,
        local_addr,
        // Trusted or not by the wrappers before: the app has the client.
        proxied_by: _,
        // Applied by its wrapper before, if asked for.
        script_name_header: _,
    } = req;
    let req = RequestVars {
        vars,
        repeated: repeated_headers,
        server: match protocol {
            // The listening socket, as uvicorn and hypercorn say it: not
            // the Host header's name and port, which the client chose.
            crate::listen::Protocol::Http => ServerAddress::Socket(local_addr),
            // The front end's own server, as it names it.
            _ => ServerAddress::Named,
        },
    };
    if upgradable && host.settings.ws.enabled && super::websocket::is_websocket(&req.vars) {
        return super::websocket::serve(app, req, protocol).await;
    }
    let (whole, stream) = match body {
        RequestBody::Empty => (Some(Bytes::new()), None),
        RequestBody::Full(b) => (Some(b), None),
        RequestBody::Stream(s) => (None, Some(s)),
    };
    let slot = host.begin(&req.vars, protocol);
    let exchange = Arc::new(Exchange::new(
        host.clone(),
        whole.is_some(),
        early_hints,
        is_head,
    ));
    let shared = exchange.clone();
    let trailers = trailers_reach_client(&req.vars, protocol);
    host.post(Box::new(move |py, objects| {
        start_request(py, objects, &app, req, whole, shared, trailers);
    }));
    let mut driver = Driver {
        exchange,
        body: stream,
        slot,
        client_error: None,
        file: None,
        limit: None,
        sent: 0,
    };
    match poll_fn(|cx| driver.poll_head(cx)).await {
        Headed::Whole(r) => {
            driver.slot.outcome.switches = 1;
            r
        }
        Headed::Streaming(head, first) => Response {
            status: head.status,
            reason: None,
            headers: head.headers,
            body: ResponseBody::Stream {
                first,
                rest: BodyStream::new(driver),
            },
        },
    }
}

/// Whether trailers the app sends can reach the client, so that the
/// scope offers `http.response.trailers`: only the HTTP front end sends
/// them, always over HTTP/2, and over HTTP/1.1 to a client that said
/// `TE: trailers` (and only those the response names in `Trailer`, as
/// HTTP/1.1 has it). The gateway protocols have no trailers.
fn trailers_reach_client(vars: &[(VarName, Bytes)], protocol: Protocol) -> bool {
    if protocol != Protocol::Http {
        return false;
    }
    // hyper takes the TE token `trailers` alone (no parameters), and only
    // on HTTP/1.1 (1.0 has no chunked body to carry them).
    match var(vars, Var::SERVER_PROTOCOL).map(|p| &p[..]) {
        Some(b"HTTP/2" | b"HTTP/2.0") => true,
        Some(b"HTTP/1.1") => var_named(vars, b"HTTP_TE").is_some_and(|te| {
            te.split(|&c| c == b',')
                .any(|part| part.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        }),
        _ => false,
    }
}

enum Headed {
    /// The whole response (or the server's error response).
    Whole(Response),
    /// The head and the first chunk; the rest is to come.
    Streaming(Head, Option<Bytes>),
}

struct Driver {
    exchange: Arc<Exchange>,
    /// The request body, while it is still arriving.
    body: Option<BodyStream>,
    slot: Slot,
    /// Reading the request body failed: the client's fault.
    client_error: Option<BodyError>,
    /// The file being sent (`http.response.pathsend` or
    /// `zerocopysend`), once the chunks before it are out.
    file: Option<FileBody>,
    /// The app's Content-Length, if it gave one, and the body bytes handed
    /// to the front end so far: nothing past it goes out, so that a file
    /// region never outlives its response on a kept-alive connection.
    limit: Option<u64>,
    sent: u64,
}

impl Driver {
    /// Reads the next request body chunk if the app is waiting for one,
    /// and hands it over. True when it waits for the client's bytes (the
    /// body stream will wake the task).
    fn pump(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        if !self.exchange.lock().body_wanted {
            return false;
        }
        let settlement = match body.poll_chunk(cx) {
            Poll::Pending => return true,
            Poll::Ready(Some(Ok(b))) => Settlement::Body(b, true),
            Poll::Ready(None) => {
                self.body = None;
                Settlement::Body(Bytes::new(), false)
            }
            Poll::Ready(Some(Err(e))) => {
                // Said whether or not the response has begun: the app
                // sees only a disconnect.
                crate::say!("oxgate: bad request body: {e}");
                self.body = None;
                self.client_error = Some(e);
                Settlement::Disconnect
            }
        };
        let post = {
            let mut st = self.exchange.lock();
            st.body_wanted = false;
            if !matches!(settlement, Settlement::Body(_, true)) {
                st.body_done = true;
            }
            st.received.push(settlement)
        };
        if post {
            post_received(&self.exchange);
        }
        false
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Headed> {
        let parked = self.pump(cx);
        let mut st = self.exchange.lock();
        // `head_out` is set under the same lock as the head is taken: a
        // 103 the app sends from then on would reach the client after the
        // final head.
        if let Some(e) = &self.client_error
            && !st.started
        {
            st.head_out = true;
            let resp = Response::for_body_error(e);
            self.slot.outcome.note_whole(&resp);
            return Poll::Ready(Headed::Whole(resp));
        }
        let has_body = st.complete || !st.chunks.is_empty() || !st.files.is_empty();
        if let Some(head) = st.head.take_if(|_| has_body) {
            st.head_out = true;
            self.slot
                .outcome
                .note_head(head.status, None, &head.headers);
            if st.complete && st.files.is_empty() && !st.trailers_wanted {
                // (`Send::__call__` has held the body to its length.)
                let body = whole_body(&mut st);
                self.slot.outcome.body_bytes = body.len() as u64;
                return Poll::Ready(Headed::Whole(Response {
                    status: head.status,
                    reason: None,
                    headers: head.headers,
                    body: ResponseBody::Full(body),
                }));
            }
            self.limit = declared_length(&head.headers);
            let first = take_chunk(&mut self.slot, &self.exchange, &mut st)
                .map(|c| clip(self.limit, &mut self.sent, c));
            return Poll::Ready(Headed::Streaming(head, first));
        }
        // The app's task waits on something else with its head sent and
        // no body yet (`Send::__call__`): the head goes out alone.
        if st.head_alone
            && st.end.is_none()
            && let Some(head) = st.head.take()
        {
            st.head_out = true;
            self.slot
                .outcome
                .note_head(head.status, None, &head.headers);
            self.limit = declared_length(&head.headers);
            return Poll::Ready(Headed::Streaming(head, None));
        }
        if st.end.is_some() {
            st.head_out = true;
            self.slot.outcome.failed = true;
            let resp = Response::plain(500, "Internal Server Error", "Internal Server Error\n");
            // Logged with what the client got, as the WSGI host logs its
            // own 500 (it was 0 bytes and 0 headers).
            self.slot.outcome.note_whole(&resp);
            return Poll::Ready(Headed::Whole(resp));
        }
        keep_waker(&mut st, cx, parked, self.body.is_some());
        Poll::Pending
    }
}

/// The next queued chunk; a `send()` waiting on a full queue goes on once
/// it has drained enough.
fn take_chunk(slot: &mut Slot, exchange: &Exchange, st: &mut State) -> Option<Bytes> {
    if file_due(st) {
        return None;
    }
    let chunk = st.chunks.pop_front()?;
    st.taken += 1;
    st.queued -= chunk.len();
    slot.outcome.body_bytes += chunk.len() as u64;
    slot.outcome.switches += 1;
    if st.queued <= SEND_LOW && !st.send_waiters.is_empty() {
        let waiters = std::mem::take(&mut st.send_waiters);
        post_settle(&exchange.host, waiters, Settlement::Nothing);
    }
    Some(chunk)
}

/// Every chunk queued, as one.
fn whole_body(st: &mut State) -> Bytes {
    st.queued = 0;
    match st.chunks.len() {
        0 => Bytes::new(),
        1 => st.chunks.pop_front().expect("one chunk"),
        _ => {
            let mut all = BytesMut::with_capacity(st.chunks.iter().map(Bytes::len).sum());
            for c in st.chunks.drain(..) {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    }
}

/// Leaves the task's waker for the loop thread. A `receive()` that asked
/// for body bytes while `pump` was not waiting on the client (`parked`)
/// may have found no waker to wake: poll again.
fn keep_waker(st: &mut State, cx: &Context<'_>, parked: bool, has_body: bool) {
    super::exchange::keep_waker(&mut st.waker, cx);
    if has_body && !parked && st.body_wanted {
        cx.waker().wake_by_ref();
    }
}

/// Whether the next file is to go out before any more chunks.
fn file_due(st: &State) -> bool {
    st.files
        .front()
        .is_some_and(|(after, _)| *after == st.taken)
}

/// The next file to send, once every chunk before it is out; a `send()`
/// waiting on many queued files goes on.
fn open_file<'a>(
    file: &'a mut Option<FileBody>,
    exchange: &Exchange,
    st: &mut State,
) -> Option<&'a mut FileBody> {
    if file.is_none()
        && file_due(st)
        && let Some((_, region)) = st.files.pop_front()
    {
        *file = Some(FileBody::new(region, |_| {}));
        if !st.send_waiters.is_empty() {
            let waiters = std::mem::take(&mut st.send_waiters);
            post_settle(&exchange.host, waiters, Settlement::Nothing);
        }
    }
    file.as_mut()
}

impl Driver {
    /// The next piece of the body: a queued chunk, or part of a file.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if let Some(file) = &mut self.file {
            match file.poll_chunk(cx) {
                // That file is done: on to what came after it.
                Poll::Ready(None) => self.file = None,
                next => {
                    if let Poll::Ready(Some(Ok(b))) = &next {
                        self.slot.outcome.body_bytes += b.len() as u64;
                        self.slot.outcome.switches += 1;
                    }
                    return next;
                }
            }
        }
        let parked = self.pump(cx);
        let mut st = self.exchange.lock();
        if let Some(c) = take_chunk(&mut self.slot, &self.exchange, &mut st) {
            return Poll::Ready(Some(Ok(c)));
        }
        if open_file(&mut self.file, &self.exchange, &mut st).is_some() {
            drop(st);
            return self.poll_piece(cx);
        }
        if st.complete {
            return Poll::Ready(None);
        }
        if st.end.is_some() {
            // The app's error (or its early return) is logged by the app
            // host; cutting the connection tells the client.
            self.slot.outcome.failed = st.end == Some(AppEnd::Failed);
            return Poll::Ready(Some(Err(BodyError::new(
                500,
                "the ASGI app ended without completing its response",
            ))));
        }
        keep_waker(&mut st, cx, parked, self.body.is_some());
        Poll::Pending
    }
}

impl ChunkSource for Driver {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        match self.poll_piece(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(clip(self.limit, &mut self.sent, b)))),
            other => other,
        }
    }

    fn poll_trailers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Trailers, BodyError>>> {
        if !self.exchange.lock().trailers_wanted {
            return Poll::Ready(None);
        }
        // The app may still read the request before its trailers.
        let parked = self.pump(cx);
        let mut st = self.exchange.lock();
        if st.trailers_done || st.end == Some(AppEnd::Returned) {
            // (A return before the last trailers message: what it sent.)
            let fields = std::mem::take(&mut st.trailers);
            return Poll::Ready((!fields.is_empty()).then(|| Ok(fields)));
        }
        if st.end == Some(AppEnd::Failed) {
            // Cut, so that the client does not take it for a whole answer.
            self.slot.outcome.failed = true;
            return Poll::Ready(Some(Err(BodyError::new(
                500,
                "the ASGI app failed before sending its trailers",
            ))));
        }
        keep_waker(&mut st, cx, parked, self.body.is_some());
        Poll::Pending
    }

    fn take_file(&mut self) -> Option<FileRegion> {
        // A file handed out already: on to the next one, which may follow
        // at once (no chunk between them).
        if self.file.as_ref().is_some_and(FileBody::is_spent) {
            self.file = None;
        }
        if self.file.is_none() {
            let mut st = self.exchange.lock();
            open_file(&mut self.file, &self.exchange, &mut st)?;
        }
        let mut region = self.file.as_mut()?.take_file()?;
        if let Some(limit) = self.limit {
            region.len = region.len.min(limit.saturating_sub(self.sent));
        }
        self.sent += region.len;
        self.slot.outcome.body_bytes += region.len;
        self.slot.outcome.switches += 1;
        Some(region)
    }
}

impl Drop for Driver {
    /// The response is sent, or the client left: the app's `receive()`
    /// says `http.disconnect` from now on, and its `send()` raises.
    fn drop(&mut self) {
        let (post, senders, failed) = {
            let mut st = self.exchange.lock();
            st.gone = true;
            // Their descriptors are closed now, not when the app lets go.
            st.files.clear();
            (
                st.received.claim_post(),
                std::mem::take(&mut st.send_waiters),
                st.end == Some(AppEnd::Failed),
            )
        };
        self.slot.outcome.failed |= failed;
        if post {
            post_received(&self.exchange);
        }
        let host = &self.exchange.host;
        if !senders.is_empty() {
            post_settle(host, senders, Settlement::Nothing);
        }
        // A body the app left unread is read on and dropped, as the WSGI
        // host, uvicorn and hypercorn do: dropped unread, it would make
        // hyper close the connection after the response, with no
        // `Connection: close` said and the client's pipelined requests
        // lost. Over HTTP/2 too: the stream's reset (NO_ERROR) at once
        // after the response made curl report error 92, not the response.
        if let Some(mut body) = self.body.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { body.drain_unread().await });
        }
    }
}
