//! What one connection and its requests share: the settings, the
//! connection's context and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::sendfile::FileQueue;
use crate::request::{ConnInfo, Handler, Session};

#[derive(Clone)]
pub struct HttpSettings {
    /// SERVER_ADDR, the socket's own address, for CGI scripts and FastCGI
    /// apps (PHP's `$_SERVER['SERVER_ADDR']`, as Apache and nginx's
    /// fastcgi_params give it); Python apps are not given it, as under
    /// Gunicorn and uvicorn.
    pub server_addr: bool,
    pub limit_post: Option<u64>,
    pub max_head: usize,
    pub head_timeout: Duration,
    /// `--keepalive-timeout`: the wait for a next request (`None`: the
    /// head timeout; zero: one request per connection).
    pub keepalive: Option<Duration>,
    pub head_limits: super::strict::HeadLimits,
    /// Bodies up to this size are read before the app is called (so a
    /// slow upload holds no app thread, and the call can run inline);
    /// larger ones stream after that much (`--post-buffering`). 0: none
    /// is read ahead, for a handler that takes bodies as they come.
    pub read_ahead: u64,
    /// `--min-body-rate`, bytes a second; 0 is off.
    pub min_body_rate: u64,
    /// `--http-early-hints`: HTTP/1.1 requests in clear may be sent 103s.
    pub early_hints: bool,
    /// `--script-name-header`: a `SCRIPT_NAME` header is kept for its
    /// wrapper (`Request::script_name_header`), not dropped.
    pub script_name_header: bool,
    /// `--proxy-protocol`: a PROXY header may come before the first request.
    pub proxy_protocol: Option<super::proxy_header::ProxyProtocol>,
    /// `--limit-request-fields`: hyper's header count limit.
    pub max_headers: usize,
    /// An `--https-socket`'s: connections begin with a TLS handshake.
    pub tls: Option<Arc<crate::frontend::tls::TlsListener>>,
    /// HTTP/2 is served (over TLS when ALPN picks it, and h2c with prior
    /// knowledge), with at most this many streams open on a connection;
    /// none with `--http2-off`.
    pub http2_max_streams: Option<u32>,
    /// `--http2-max-pending`: the worker's HTTP/2 requests, across its
    /// connections, each holding a permit until it is answered.
    pub http2_pending: Arc<tokio::sync::Semaphore>,
}

impl HttpSettings {
    /// hyper's HTTP/1.1 buffer limit, and so the longest head it reads;
    /// the framing tracker is given the same.
    pub(super) fn h1_max_buf(&self) -> usize {
        self.max_head.max(8192)
    }
}

/// A connection's share of the worker, for each of its requests.
pub(super) struct ConnCtx {
    pub(super) info: Arc<ConnInfo>,
    pub(super) handler: Arc<dyn Handler>,
    pub(super) settings: Arc<HttpSettings>,
    pub(super) files: Arc<FileQueue>,
    /// File bodies go out by sendfile, through `files` (a cleartext
    /// HTTP/1.1 connection); otherwise they are read and sent as data.
    pub(super) sendfile: bool,
    /// Requests this connection has begun; a stop waits for the first one.
    pub(super) begun: TaskCounter,
    /// Requests whose response body hyper is done with (`Finished`): all
    /// of it queued to be written, or dropped.
    pub(super) finished: TaskCounter,
    /// Writes to the socket (by `BatchedIo`), for the watchdog.
    pub(super) progress: Arc<TaskCounter>,
    /// A 101 the handler answered: hyper's hand-over of the connection and
    /// the session that takes it, run once hyper has written the head.
    pub(super) upgrade: std::sync::Mutex<Option<(hyper::upgrade::OnUpgrade, Session)>>,
    /// The worker is stopping: responses say `Connection: close`.
    pub(super) closing: AtomicBool,
    /// A 101 was answered: the connection is the session's from then on.
    pub(super) switched: AtomicBool,
    /// The request whose head hyper would serve but oxgate refuses
    /// (`FramingWatch`), once one has come.
    pub(super) flawed_head: std::sync::OnceLock<crate::proto::h1_framing::Flawed>,
    /// What sends the connection's 103 Early Hints, where it can: HTTP/1.1
    /// in clear, whose writes go through `BatchedIo`'s outbox.
    pub(super) early_hints: std::sync::OnceLock<Arc<dyn crate::request::EarlyHints>>,
    /// What tells that every byte of the last response is out, on a
    /// connection that can be parked between requests (HTTP/1.1 in
    /// clear): see `serve_connection`.
    pub(super) outbox: std::sync::OnceLock<Box<dyn Drained>>,
    /// `FramingTracker::settled_heads` after the last read (`u64::MAX`
    /// for none), published by `FramingWatch`.
    pub(super) settled_heads: AtomicU64,
    /// hyper is ending the connection to park it: no shutdown of the
    /// socket.
    pub(super) parking: AtomicBool,
    /// A response went out with its request's body unread (a 413): the
    /// connection's end reads and lets go what the client still sends,
    /// so that the client (nginx's proxy_pass, curl) reads the answer
    /// rather than a reset, as nginx's lingering close does.
    pub(super) linger: AtomicBool,
    /// The last write found the socket full: the client is not taking the
    /// response. The watchdog cuts a connection stuck so a whole
    /// `--socket-timeout`, however busy its app is.
    pub(super) write_blocked: AtomicBool,
    /// The connection's socket, whose bytes not yet taken by the client
    /// the watchdog looks at (`unsent`); set for HTTP/2 only.
    pub(super) socket: Option<std::os::fd::RawFd>,
}

/// Whether a connection's output is all written (`BatchedIo`'s outbox).
pub(super) trait Drained: Send + Sync {
    fn all_out(&self) -> bool;
}

impl ConnCtx {
    /// The bytes the client has still to take of what was written to the
    /// socket: an HTTP/2 response all written to the kernel at once (the
    /// client's window allows it) is still going out while it falls, and
    /// the connection is not idle (closed so, the kernel reset it, as the
    /// client's window updates were unread, and the rest was lost).
    pub(super) fn unsent(&self) -> Option<u32> {
        self.socket.and_then(crate::sys::unsent_bytes)
    }

    /// Records whether a write to the socket had to wait for the client.
    pub(super) fn note_write(&self, pending: bool) {
        // Read first: most writes change nothing, and a store would dirty
        // the cache line that the connection's other counters share.
        if self.write_blocked.load(Ordering::Relaxed) != pending {
            self.write_blocked.store(pending, Ordering::Relaxed);
        }
    }

    /// Whether hyper holds nothing of this connection but its idle state:
    /// no request under way, every byte read parsed into a request already
    /// answered, and every byte of the answers written. Such a connection
    /// can be taken from hyper and given to a new one later, losing
    /// nothing.
    pub(super) fn idle_in_hyper(&self) -> bool {
        let Some(outbox) = self.outbox.get() else {
            return false;
        };
        let begun = self.begun.get();
        // (Until its first request, hyper does not count a connection idle.)
        begun > 0
            && begun == self.finished.get()
            && self.settled_heads.load(Ordering::Relaxed) == begun
            && !self.closing.load(Ordering::Relaxed)
            && !self.switched.load(Ordering::Relaxed)
            && outbox.all_out()
            && self.files.is_empty()
    }
}

/// A count that only the worker's event-loop thread adds to (the
/// connection's task, and the flusher for `progress`; others may read it):
/// no atomic read-modify-write.
#[derive(Default)]
pub(super) struct TaskCounter(AtomicU64);

impl TaskCounter {
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn bump(&self) {
        self.0.store(self.get() + 1, Ordering::Relaxed);
    }
}

/// Counts a request as finished when its response body is dropped: hyper
/// drops it once the body is queued to be written, or the connection is
/// gone.
/// With an HTTP/2 request's `--http2-max-pending` permit, held until its
/// response body is done too (a streaming answer still counts).
pub(super) struct Finished(
    pub(super) Arc<ConnCtx>,
    // Held, never read: dropping it frees the permit.
    #[allow(dead_code)] pub(super) Option<tokio::sync::OwnedSemaphorePermit>,
);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.bump();
    }
}
