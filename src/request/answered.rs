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
        body.add_sent(first.len() as u64);
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
        Response {
            status,
            reason,
            headers,
            body: ResponseBody::Stream {
                first: (!first.is_empty()).then_some(first),
                rest: BodyStream::new(body),
            },
        }
    }
}
