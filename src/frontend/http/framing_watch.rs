//! The I/O layer under hyper that watches an HTTP/1.1 connection's request
//! bytes ([`FramingTracker`]) for a head hyper would serve but that must be
//! refused: one with both Content-Length and Transfer-Encoding, which
//! hyper reads as chunked without a trace, or with a bare LF, extra empty
//! lines or a raw non-ASCII target. It notes the head in the connection's
//! context, and the service refuses that request with 400 (`on_request`).
//! Everything else passes through untouched, but for the end of the
//! client's side while a request is in flight (`HALF_CLOSE_GRACE`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::context::ConnCtx;
use crate::proto::h1_framing::{Flaw, FramingTracker, http_1_0_websocket_handshake};

pub(super) struct FramingWatch<S> {
    inner: S,
    tracker: FramingTracker,
    ctx: Arc<ConnCtx>,
    /// Until when the end of the client's side is kept from hyper.
    eof_grace: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long the end of the client's side is kept from hyper while a
/// request is in flight. A client that half-closes after its request
/// (`nc -N`, a scripted health check) still waits for the answer, as
/// Gunicorn and nginx give it; hyper, told at once, drops the request
/// before its app is called. A request that takes longer is taken as given
/// up (as nginx and uvicorn take it): hyper drops it, and an ASGI app's
/// receive() says http.disconnect. One whose body the end cuts short is
/// told at once.
const HALF_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

impl<S> FramingWatch<S> {
    pub(super) fn new(inner: S, ctx: Arc<ConnCtx>) -> FramingWatch<S> {
        let settings = &ctx.settings;
        // The limits hyper is given (`serve_http1`).
        let tracker = FramingTracker::new(settings.h1_max_buf(), settings.max_headers);
        FramingWatch {
            inner,
            tracker,
            ctx,
            eof_grace: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        // (Not when the client's side ends mid-body: no more of it can
        // come, and its app would wait the grace out for nothing.)
        if room
            && matches!(res, Poll::Ready(Ok(())))
            && buf.filled().len() == before
            && self.ctx.begun.get() != self.ctx.finished.get()
            && !self.tracker.in_body()
        {
            let grace = self
                .eof_grace
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(HALF_CLOSE_GRACE)));
            if grace.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        if self.tracker.following() {
            if self.ctx.switched.load(Ordering::Relaxed) {
                // After a 101 the bytes are the new protocol's: nothing
                // to follow, and nothing to keep.
                self.tracker.stop();
            } else if let Some(flawed) = {
                if self.tracker.at_head_start()
                    && let Some(at) = http_1_0_websocket_handshake(&buf.filled()[before..])
                {
                    // Read as HTTP/1.1's, which hyper upgrades (see there).
                    buf.filled_mut()[before + at] = b'1';
                }
                self.tracker.feed(&buf.filled()[before..])
            } {
                // A body's framing broken where hyper reads on: the
                // connection ends here, before hyper can take what follows
                // for trailers (or serve a request hidden in them).
                if flawed.flaw == Flaw::BadChunkLine {
                    crate::say!(
                        "oxgate: connection closed: {} (request {} on it)",
                        flawed.flaw.reason().trim_end(),
                        flawed.ordinal
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        flawed.flaw.reason().trim_end(),
                    )));
                }
                // (At most one per connection: the tracker stops after it.)
                let _ = self.ctx.flawed_head.set(flawed);
            }
            let settled = self.tracker.settled_heads().unwrap_or(u64::MAX);
            self.ctx.settled_heads.store(settled, Ordering::Relaxed);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper ends a connection being parked (conn.rs): the socket
        // stays open, and a shutdown would end the client's side too.
        if self.ctx.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The tracker against real hyper: random streams of requests, each with
/// its number for a path, are served by hyper as `serve_http1` sets it up,
/// and read by the tracker in random pieces. Where hyper serves request k
/// the tracker must have read head k, and a flawed head must be found at
/// the number hyper gave it.
#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::proto::h1_framing::{Flaw, Flawed, FramingTracker};

    /// The paths of the requests hyper serves from `wire`, in order.
    fn hyper_serves(wire: Vec<u8>) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        log.lock()
                            .expect("not poisoned")
                            .push(req.uri().path().to_string());
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
            // (Half-closed: the client's write side ends with the stream,
            // and hyper must still answer what came before.)
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async move {
                let _ = wr.write_all(&wire).await;
                let _ = wr.shutdown().await;
                wr // kept open for reading until hyper is done
            };
            let read = async move {
                let mut answers = Vec::new();
                let _ = rd.read_to_end(&mut answers).await;
            };
            let all = async { tokio::join!(conn, write, read) };
            let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
            seen.lock().expect("not poisoned").clone()
        })
    }

    #[derive(Debug, Clone)]
    enum Kind {
        Get,
        Length(Vec<u8>),
        /// Chunks, each with its leading zeros and whether it has an
        /// extension; and whether the body ends with a trailer field.
        Chunked(Vec<(Vec<u8>, usize, bool)>, bool),
    }

    fn request(
        n: usize,
        kind: &Kind,
        blank_line: bool,
        upgrade: bool,
        flaw: Option<Flaw>,
    ) -> Vec<u8> {
        // (Both lengths: a length body becomes the chunked one below.)
        let kind = match kind {
            Kind::Length(_) if flaw == Some(Flaw::BothLengths) => &Kind::Get,
            other => other,
        };
        let mut out = Vec::new();
        if blank_line {
            out.extend_from_slice(b"\r\n");
        }
        if flaw == Some(Flaw::EmptyLines) {
            out.extend_from_slice(b"\r\n\r\n");
        }
        let target = if flaw == Some(Flaw::NonAsciiTarget) {
            format!("/{n}/\u{e9}")
        } else {
            format!("/{n}")
        };
        let method = if matches!(kind, Kind::Get) {
            "GET"
        } else {
            "POST"
        };
        out.extend_from_slice(format!("{method} {target} HTTP/1.1\r\nHost: a\r\n").as_bytes());
        if upgrade {
            out.extend_from_slice(b"Upgrade: something\r\nConnection: upgrade\r\n");
        }
        if flaw == Some(Flaw::BareLf) {
            out.extend_from_slice(b"X-Bare: lf\n");
        }
        match kind {
            Kind::Get if flaw == Some(Flaw::BothLengths) => out.extend_from_slice(
                b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            ),
            Kind::Get => out.extend_from_slice(b"\r\n"),
            Kind::Length(body) => {
                out.extend_from_slice(format!("content-LENGTH: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            Kind::Chunked(chunks, trailer) => {
                if flaw == Some(Flaw::BothLengths) {
                    out.extend_from_slice(b"Content-Length: 10\r\n");
                }
                out.extend_from_slice(b"Transfer-Encoding: gzip, chunked\r\n\r\n");
                for (data, zeros, extension) in chunks {
                    let ext = if *extension { " ;name=\"v\"" } else { "" };
                    out.extend(std::iter::repeat_n(b'0', *zeros));
                    out.extend_from_slice(format!("{:X}{ext}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"000\r\n");
                if *trailer {
                    out.extend_from_slice(b"X-Sum: 1\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn kind() -> impl Strategy<Value = Kind> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..200);
        let chunk = (
            proptest::collection::vec(any::<u8>(), 1..60),
            0usize..20,
            any::<bool>(),
        );
        prop_oneof![
            Just(Kind::Get),
            bytes.prop_map(Kind::Length),
            (proptest::collection::vec(chunk, 0..4), any::<bool>())
                .prop_map(|(c, t)| Kind::Chunked(c, t)),
        ]
    }

    fn flaw() -> impl Strategy<Value = Option<Flaw>> {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(Flaw::BothLengths)),
            1 => Just(Some(Flaw::BareLf)),
            1 => Just(Some(Flaw::EmptyLines)),
            1 => Just(Some(Flaw::NonAsciiTarget)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_tracker_reads_heads_where_hyper_does(
            requests in proptest::collection::vec((kind(), any::<bool>(), any::<bool>()), 1..6),
            flaw in flaw(),
            flawed_at in any::<prop::sample::Index>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let flawed_at = flawed_at.index(requests.len());
            let mut wire = Vec::new();
            // Where each request's head begins (after any empty line), and
            // where the request ends.
            let mut spans = Vec::new();
            for (n, (kind, blank_line, upgrade)) in requests.iter().enumerate() {
                let this = flaw.filter(|_| n == flawed_at);
                let head = wire.len() + if *blank_line { 2 } else { 0 };
                wire.extend(request(n, kind, *blank_line, *upgrade, this));
                spans.push((head, wire.len()));
            }
            let served = hyper_serves(wire.clone());
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            at.extend([0, wire.len()]);
            at.sort_unstable();
            let mut tracker = FramingTracker::new(64 * 1024, 100);
            let mut found: Vec<Flawed> = Vec::new();
            for w in at.windows(2) {
                found.extend(tracker.feed(&wire[w[0]..w[1]]));
                if flaw.is_some() {
                    continue;
                }
                // Settled where a request ends, and nowhere inside one (a
                // connection parked there would lose bytes).
                let p = w[1];
                let ended = spans.iter().filter(|&&(_, end)| end <= p).count() as u64;
                if spans.iter().any(|&(_, end)| end == p) {
                    prop_assert_eq!(tracker.settled_heads(), Some(ended), "at {}", p);
                }
                if spans.iter().any(|&(head, end)| head < p && p < end) {
                    prop_assert_eq!(tracker.settled_heads(), None, "inside, at {}", p);
                }
            }
            match flaw {
                None => {
                    let all: Vec<String> = (0..requests.len()).map(|n| format!("/{n}")).collect();
                    prop_assert_eq!(&served, &all, "hyper serves every request");
                    prop_assert_eq!(found, vec![]);
                    prop_assert!(tracker.following());
                    prop_assert_eq!(tracker.heads(), requests.len() as u64);
                }
                Some(flaw) => {
                    // hyper serves the flawed request as the one it is.
                    prop_assert!(served.len() > flawed_at, "{:?}", served);
                    let path = format!("/{}", flawed_at);
                    prop_assert!(served[flawed_at].starts_with(&path), "{:?}", served);
                    let ordinal = flawed_at as u64 + 1;
                    prop_assert_eq!(found, vec![Flawed { ordinal, flaw }]);
                }
            }
        }
    }
}
