//! Counting and logging the requests a handler answers itself, as the app
//! host counts the app's: a static file, a script's or a FastCGI app's
//! response, the server's own errors.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use super::body::{BodyStream, ChunkSource};
use super::handler::{HandlerKind, Outcome, Request, RequestObserver};
use super::response::{Response, ResponseBody};

/// A body that tells, once, how it ended: the bytes sent and whether it
/// ended whole (a script's output, a FastCGI STDOUT stream).
pub trait CountedBody: ChunkSource + Sized {
    fn on_end(self, f: Box<dyn FnOnce(u64, bool) + Send>) -> Self;
    /// Counts bytes sent before this body (read ahead with the head).
    fn add_sent(&mut self, n: u64);
}

/// The request log and the counters, for one handler: set once the worker
/// has them.
pub struct Answered {
    observer: OnceLock<Arc<dyn RequestObserver>>,
    kind: HandlerKind,
}

impl Answered {
    pub fn new(kind: HandlerKind) -> Answered {
        Answered {
            observer: OnceLock::new(),
            kind,
        }
    }

    pub fn set(&self, observer: Arc<dyn RequestObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Counts and logs a response the handler made whole: at once when its
    /// body is in memory, else when its body has gone out (a file), so that
    /// the log has the bytes sent and the time it took, as for an app's.
    pub fn answer(&self, req: Request, mut resp: Response, since: Instant) -> Response {
        let Some(observer) = self.observer.get().cloned() else {
            return resp;
        };
        if req.is_head || !matches!(resp.body, ResponseBody::Stream { .. }) {
            self.response(&req, &resp, since);
            return resp;
        }
        let mut outcome = Outcome {
            switches: 1,
            protocol: req.protocol,
            handler: self.kind,
            ..Outcome::default()
        };
        outcome.note_head(resp.status, resp.reason.as_deref(), &resp.headers);
        let failed_anyway = resp.status >= 500;
        let vars = req.vars;
        let on_end: Box<dyn FnOnce(u64, bool) + Send> = Box::new(move |sent, whole| {
            let outcome = Outcome {
                body_bytes: sent,
                failed: failed_anyway || !whole,
                ..outcome
            };
            observer.answered(&vars, &outcome, since.elapsed().as_micros() as u64);
        });
        if let ResponseBody::Stream { first, rest } = resp.body {
            let sent = first.as_ref().map_or(0, |b| b.len() as u64);
            resp.body = ResponseBody::Stream {
                first,
                rest: BodyStream::new(LoggedAtEnd {
                    body: rest,
                    sent,
                    on_end: Some(on_end),
                }),
            };
        }
        resp
    }

    /// Counts and logs a response whose body is whole or has its length.
    pub fn response(&self, req: &Request, resp: &Response, since: Instant) {
        let Some(observer) = self.observer.get() else {
            return;
        };
        let body_bytes = if req.is_head {
            0
        } else {
            match &resp.body {
                ResponseBody::Full(b) => b.len() as u64,
                _ => super::response::declared_length(&resp.headers).unwrap_or(0),
            }
        };
        let mut outcome = Outcome {
            body_bytes,
            switches: 1,
            failed: resp.status >= 500,
            protocol: req.protocol,
            handler: self.kind,
            ..Outcome::default()
        };
        outcome.note_head(resp.status, resp.reason.as_deref(), &resp.headers);
        observer.answered(&req.vars, &outcome, since.elapsed().as_micros() as u64);
    }

    /// The response for a head already read, its body streamed from
    /// `body` after `first`: counted and logged when the body ends.
    pub fn streamed<B: CountedBody>(
        &self,
        req: Request,
        (status, reason, headers): (u16, Option<String>, Vec<(Bytes, Bytes)>),
        first: Bytes,
        mut body: B,
        since: Instant,
    ) -> Response {
        // Cut at its Content-Length, as nginx cuts what an upstream sends
        // past it: sent on, it ran into the next response over HTTP/1.1,
        // and HTTP/2 reset the stream (the client got no page at all).
        let length = super::response::declared_length(&headers);
        let over = length.is_some_and(|l| first.len() as u64 > l);
        if over {
            say_over(self.kind);
        }
        let mut sent = 0;
        let first = super::body::clip(length, &mut sent, first);
        body.add_sent(sent);
        if let Some(observer) = self.observer.get().cloned() {
            let mut outcome = Outcome {
                switches: 1,
                protocol: req.protocol,
                handler: self.kind,
                ..Outcome::default()
            };
            outcome.note_head(status, reason.as_deref(), &headers);
            let vars = req.vars;
            body = body.on_end(Box::new(move |sent, whole| {
                let outcome = Outcome {
                    body_bytes: sent,
                    failed: !whole,
                    ..outcome
                };
                observer.answered(&vars, &outcome, since.elapsed().as_micros() as u64);
            }));
        }
        let rest = match length {
            Some(length) => BodyStream::new(Clipped {
                body: BodyStream::new(body),
                left: length - sent,
                over,
                kind: self.kind,
            }),
            None => BodyStream::new(body),
        };
        Response {
            status,
            reason,
            headers,
            body: ResponseBody::Stream {
                first: (!first.is_empty()).then_some(first),
                rest,
            },
        }
    }
}

/// A script's or FastCGI app's body, cut at the Content-Length it
/// declared. What runs past it is dropped, and said, once; a body that
/// ends at its length passes through untouched.
struct Clipped {
    body: BodyStream,
    left: u64,
    /// It ran past: the response ends here, the rest unread.
    over: bool,
    kind: HandlerKind,
}

impl ChunkSource for Clipped {
    fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, super::BodyError>>> {
        if self.over {
            return std::task::Poll::Ready(None);
        }
        let next = std::task::ready!(self.body.poll_chunk(cx));
        std::task::Poll::Ready(match next {
            Some(Ok(mut b)) => {
                if b.len() as u64 > self.left {
                    b.truncate(self.left as usize);
                    self.over = true;
                    say_over(self.kind);
                }
                self.left -= b.len() as u64;
                Some(Ok(b))
            }
            other => other,
        })
    }
}

/// A body counted as it goes out, whose response is logged when it ends:
/// whole at its end or when the client stops taking it (the client went
/// away), cut short at an error (a file that shrank while it was sent).
struct LoggedAtEnd {
    body: BodyStream,
    sent: u64,
    on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
}

impl LoggedAtEnd {
    fn end(&mut self, whole: bool) {
        if let Some(f) = self.on_end.take() {
            f(self.sent, whole);
        }
    }
}

impl ChunkSource for LoggedAtEnd {
    fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, super::BodyError>>> {
        let next = std::task::ready!(self.body.poll_chunk(cx));
        match &next {
            Some(Ok(b)) => self.sent += b.len() as u64,
            Some(Err(_)) => self.end(false),
            None => self.end(true),
        }
        std::task::Poll::Ready(next)
    }

    fn take_file(&mut self) -> Option<super::FileRegion> {
        let region = self.body.take_file()?;
        self.sent += region.len;
        Some(region)
    }

    fn unsent(&mut self, n: u64) {
        self.sent = self.sent.saturating_sub(n);
    }

    fn poll_trailers(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<super::Trailers, super::BodyError>>> {
        self.body.poll_trailers(cx)
    }
}

impl Drop for LoggedAtEnd {
    fn drop(&mut self) {
        self.end(true);
    }
}

fn say_over(kind: HandlerKind) {
    let who = match kind {
        HandlerKind::Cgi => "a CGI script",
        HandlerKind::FastCgi => "a FastCGI app",
        _ => "a handler",
    };
    crate::say!(
        "oxgate: {who} sent more than its Content-Length: the rest is dropped (nginx: \"upstream sent more data than specified\")"
    );
}
