//! The seam between front ends and apps: a front end turns bytes into a
//! [`Request`] and asks a [`Handler`] for the [`Response`]. Every kind of
//! app (WSGI now; ASGI, CGI, FastCGI pools and static files to come) is one
//! `Handler`; every protocol is one front end; neither knows the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use super::body::RequestBody;
use super::response::Response;
use super::vars::VarName;
use crate::listen::Protocol;

/// A request: CGI/1.1-style variables (REQUEST_METHOD, PATH_INFO, HTTP_HOST…
/// as raw bytes, PATH_INFO already percent-decoded) and the body.
pub struct Request {
    pub vars: Vec<(VarName, Bytes)>,
    pub body: RequestBody,
    /// True for HEAD: the response carries headers but no body.
    pub is_head: bool,
    /// The protocol it came on: for the request log and metrics only.
    pub protocol: crate::listen::Protocol,
    /// The front end can hand the connection over to the app (an HTTP/1.1
    /// request with `Connection: upgrade`): see [`super::Session`].
    pub upgradable: bool,
    /// Where the app may send 103 Early Hints before its response: a
    /// front end that can (HTTP/1.1 in clear) gives one.
    pub early_hints: Option<Arc<dyn super::EarlyHints>>,
    /// The headers the client gave more than once. Their variable joins
    /// the values (`a, b`; cookies `a; b`), as CGI and WSGI have them; an
    /// app given headers instead (ASGI) gets each apart, as sent.
    pub repeated_headers: Vec<RepeatedHeader>,
    /// The address of the socket an HTTP request came in on: the
    /// listening address ASGI's `server` names (none on a unix socket).
    /// The gateway protocols leave it out: their front end names its own
    /// (SERVER_NAME, SERVER_PORT).
    pub local_addr: Option<std::net::SocketAddr>,
    /// The connection's peer when a PROXY protocol header named the client
    /// (REMOTE_ADDR) as another: the balancer, which is who settings that
    /// trust a proxy's headers (--forwarded-allow-ips) trust.
    pub proxied_by: Option<super::ProxiedBy>,
    /// A header named `SCRIPT_NAME` (with the underscore, which no other
    /// header name maps to), kept by an HTTP front end told to
    /// (`--script-name-header`): what a trusted proxy mounts the app
    /// under, as Gunicorn takes it.
    pub script_name_header: Option<bytes::Bytes>,
}

/// A header given more than once, its values apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedHeader {
    pub name: VarName,
    /// The variable's value the values were joined into: a request whose
    /// variable was changed since (a wrapper's) has these values no more.
    pub joined: Bytes,
    pub values: Vec<Bytes>,
}

/// What a handler's answer is on its way as: boxed, so that a router can
/// hold handlers of different kinds behind one type.
pub type Responding = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// A kind of app. Called once per request, on the worker's event loop.
pub trait Handler: Send + Sync + 'static {
    /// Serves one request. The future runs on the worker's event loop: a
    /// handler that blocks (a Python call, a file read) keeps it short or
    /// moves the work to a thread of its own.
    fn handle(self: Arc<Self>, req: Request) -> Responding;

    /// How many requests it serves at once in this process (FastCGI's
    /// `FCGI_MAX_REQS`): the front ends do not queue more than this.
    fn concurrency(&self) -> usize {
        1
    }

    /// What a request of its waits on to start (a WSGI app's free Python
    /// threads), if anything: the accept loop waits for one too, so that a
    /// worker whose threads are all busy leaves new connections to the
    /// idle workers, as uWSGI's threads, each accepting for itself, do.
    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        None
    }

    /// How it takes a request's body: the HTTP front end reads one ahead
    /// (`--post-buffering`) before calling it, or hands it over as it
    /// comes.
    fn body_taking(&self) -> BodyTaking {
        BodyTaking::ReadAhead
    }
}

/// How a handler takes request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTaking {
    /// Read ahead before it is called: a slow upload then holds no app
    /// thread (WSGI) and no script or pool process (CGI, FastCGI), as
    /// nginx's buffering spares them.
    ReadAhead,
    /// As it comes: an async app waits for it holding nothing, and reads
    /// it while it answers, or answers without reading it (uvicorn's way:
    /// `Expect: 100-continue` is answered only once the app reads).
    AsItComes,
    /// Never read (static files, a 404).
    Unread,
}

impl BodyTaking {
    /// What several handlers behind one front end take together: read
    /// ahead if any of them wants it.
    pub fn with(self, other: BodyTaking) -> BodyTaking {
        use BodyTaking::*;
        match (self, other) {
            (ReadAhead, _) | (_, ReadAhead) => ReadAhead,
            (AsItComes, _) | (_, AsItComes) => AsItComes,
            (Unread, Unread) => Unread,
        }
    }
}

/// Told when a request starts and ends on one of the app's threads (cores,
/// numbered from 0); the request log and the worker's scoreboard listen.
pub trait RequestObserver: Send + Sync {
    fn started(&self, core: usize, vars: &[(VarName, Bytes)], protocol: Protocol);
    fn finished(&self, core: usize, outcome: &Outcome);

    /// A request the server answered itself, on no core of the app (a
    /// static file), `elapsed_us` after it came: counted and logged at once.
    fn answered(&self, _vars: &[(VarName, Bytes)], _outcome: &Outcome, _elapsed_us: u64) {}
}

/// What answered a request, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// A WSGI or ASGI app.
    #[default]
    App = 0,
    Static = 1,
    Cgi = 2,
    FastCgi = 3,
    /// Nothing serves the path: the 404 when no app is loaded.
    Unrouted = 4,
}

impl HandlerKind {
    pub const ALL: [HandlerKind; 5] = [
        HandlerKind::App,
        HandlerKind::Static,
        HandlerKind::Cgi,
        HandlerKind::FastCgi,
        HandlerKind::Unrouted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HandlerKind::App => "app",
            HandlerKind::Static => "static",
            HandlerKind::Cgi => "cgi",
            HandlerKind::FastCgi => "fastcgi",
            HandlerKind::Unrouted => "none",
        }
    }
}

/// What became of a request, as the app host saw it.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub status: u16,
    /// Headers the app sent, and the size of the head as uWSGI counts it:
    /// status line, "Name: value\r\n" each, and the blank line.
    pub headers: u32,
    pub header_bytes: u64,
    /// Body bytes the app generated (all of them, or until the client left).
    pub body_bytes: u64,
    /// Chunks the body came in (uWSGI's "switches").
    pub switches: u32,
    /// The app raised.
    pub failed: bool,
    pub protocol: Protocol,
    pub handler: HandlerKind,
    /// The response headers the request log names (`%(resp.NAME)`), in
    /// its order; none when it names none.
    pub logged_headers: Option<Arc<[Option<Bytes>]>>,
}

/// The response headers the request log names, lower-case: set once, when
/// the log's format is read.
static LOGGED_HEADERS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();

/// Names the response headers the request log shows (`%(resp.NAME)`):
/// every request's head keeps their values from then on.
pub fn log_response_headers(names: Vec<Vec<u8>>) {
    if !names.is_empty() {
        let _ = LOGGED_HEADERS.set(names);
    }
}

/// `--add-header`'s headers, which every response gets after the app's
/// (`wrappers::AddHeaders`): their count and size, in each head's as
/// uWSGI counts them.
static ADDED_HEADERS: std::sync::OnceLock<(u32, u64)> = std::sync::OnceLock::new();

/// Says which headers `--add-header` adds to every response.
pub fn count_added_headers(headers: &[(Bytes, Bytes)]) {
    let bytes = headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>();
    let _ = ADDED_HEADERS.set((headers.len() as u32, bytes as u64));
}

impl Outcome {
    /// Notes the response head: its status, its headers' count and size
    /// (as uWSGI counts them, `--add-header`'s included), and the values
    /// the request log shows.
    pub fn note_head(&mut self, status: u16, reason: Option<&str>, headers: &[(Bytes, Bytes)]) {
        let (added, added_bytes) = ADDED_HEADERS.get().copied().unwrap_or_default();
        self.status = status;
        self.headers = headers.len() as u32 + added;
        self.header_bytes = super::response::head_size(status, reason, headers) + added_bytes;
        if let Some(names) = LOGGED_HEADERS.get() {
            self.logged_headers = Some(
                names
                    .iter()
                    .map(|n| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v.clone())
                    })
                    .collect(),
            );
        }
    }

    /// Notes a response made whole (the server's own error): its head and
    /// its body's size.
    pub fn note_whole(&mut self, resp: &super::Response) {
        self.note_head(resp.status, resp.reason.as_deref(), &resp.headers);
        if let super::ResponseBody::Full(body) = &resp.body {
            self.body_bytes = body.len() as u64;
        }
    }
}
