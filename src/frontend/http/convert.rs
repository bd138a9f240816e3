//! A request head from hyper or h2 turned into CGI variables (with the rules in
//! `request::cgi`), and its body into the protocol-neutral one.

use crate::request::cgi::{self, header_var, split_host};
use crate::request::{ConnInfo, EarlyHints, body_too_large};
use crate::request::{RepeatedHeader, Request, RequestBody, Response, Var, VarName};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use percent_encoding::percent_decode;
use std::sync::Arc;

use super::context::HttpSettings;
use super::request_body::{IncomingChunks, WireBody, as_it_comes, read_ahead};
use super::strict::Refusal;

pub(super) fn static_bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Collects CGI variables whose values are copied into one shared buffer,
/// the connection's: no allocation per variable, nor (once the previous
/// request's values are dropped) per request. Each value is split off the
/// buffer as it is written, so the list is built once.
pub(super) struct VarsBuilder<'a> {
    arena: &'a mut BytesMut,
    vars: Vec<(VarName, Bytes)>,
}

impl VarsBuilder<'_> {
    fn put(&mut self, name: Var, value: Bytes) {
        self.vars.push((VarName::Known(name), value));
    }

    /// Copies `parts` into the arena as one value, joined by `sep`.
    fn copy<'p>(&mut self, name: VarName, sep: &[u8], parts: impl IntoIterator<Item = &'p [u8]>) {
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                self.arena.extend_from_slice(sep);
            }
            self.arena.extend_from_slice(part);
        }
        let value = if self.arena.is_empty() {
            Bytes::new()
        } else {
            self.arena.split().freeze()
        };
        self.vars.push((name, value));
    }
}

/// The room the arena keeps for a request's CGI values; one that needs
/// more moves the arena on to a new block.
const ARENA_SIZE: usize = 2048;

/// A request whose head is already converted, its body still to read.
pub(super) struct Headed {
    vars: Vec<(VarName, Bytes)>,
    body: WireBody,
    is_head: bool,
    /// An HTTP/1.0 request: see `body::to_hyper`.
    pub(super) http10: bool,
    /// hyper holds the connection for a handler that takes it over.
    pub(super) upgradable: bool,
    /// The connection can send this request 103 Early Hints.
    pub(super) early_hints: Option<Arc<dyn EarlyHints>>,
    repeated_headers: Vec<RepeatedHeader>,
    local_addr: Option<std::net::SocketAddr>,
    proxied_by: Option<crate::request::ProxiedBy>,
    script_name_header: Option<Bytes>,
}

/// Converts the head, synchronously: called in the service itself, so that
/// hyper's request (whose URI and headers point into hyper's read buffer)
/// is gone before hyper reads ahead on the connection. Held until the
/// service future first runs, it made hyper allocate a new 8 KiB read
/// buffer for every request.
pub(super) fn convert_head(
    parts: &http::request::Parts,
    body: WireBody,
    info: &ConnInfo,
    settings: &HttpSettings,
) -> Result<Headed, Response> {
    ARENA.with(|arena| convert_head_into(parts, body, info, settings, &mut arena.borrow_mut()))
}

thread_local! {
    /// Where the values of the variables are copied: one arena for all the
    /// connections of the worker, not one each. An idle keep-alive
    /// connection holds none of it, and at 1,000 connections the arena is
    /// still in the cache.
    static ARENA: std::cell::RefCell<BytesMut> =
        std::cell::RefCell::new(BytesMut::with_capacity(ARENA_SIZE));
}

/// " (from ADDR)", the client's address for a log line; nothing over a
/// unix socket.
pub(super) fn from_peer(info: &ConnInfo) -> String {
    info.peer()
        .map(|(addr, _)| format!(" (from {})", String::from_utf8_lossy(addr)))
        .unwrap_or_default()
}

/// The answer to a refused head, logged with the client's address.
pub(super) fn refuse(refused: Refusal, info: &ConnInfo) -> Response {
    let (status, phrase) = refused.status();
    crate::say!(
        "oxgate: request refused with {status}: {}{}",
        refused.reason().trim_end(),
        from_peer(info)
    );
    let mut response = Response::plain(status, phrase, refused.reason());
    if refused == Refusal::Connect {
        // A 405 names what is allowed (RFC 9110 §15.5.6): the app's
        // methods, which only it knows; every standard one but CONNECT.
        response.headers.push((
            Bytes::from_static(b"Allow"),
            Bytes::from_static(b"GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
        ));
    }
    response
}

fn convert_head_into(
    parts: &http::request::Parts,
    body: WireBody,
    info: &ConnInfo,
    settings: &HttpSettings,
    arena: &mut BytesMut,
) -> Result<Headed, Response> {
    if let Err(refused) = super::strict::check_head(parts, &settings.head_limits) {
        return Err(refuse(refused, info));
    }
    // Values beyond the buffer (rare) move on to a new one.
    crate::request::ready_arena(arena, ARENA_SIZE, ARENA_SIZE);
    let mut v = VarsBuilder {
        arena,
        // Ten variables besides the headers, and room for a SCRIPT_NAME.
        vars: crate::request::vars_with_capacity(
            11 + parts.headers.keys_len() + info.tls().map_or(0, |t| t.vars.len()),
        ),
    };
    match parts.method.as_str() {
        "GET" => v.put(Var::REQUEST_METHOD, static_bytes("GET")),
        "POST" => v.put(Var::REQUEST_METHOD, static_bytes("POST")),
        "HEAD" => v.put(Var::REQUEST_METHOD, static_bytes("HEAD")),
        m => v.copy(VarName::Known(Var::REQUEST_METHOD), b"", [m.as_bytes()]),
    }
    let path = parts.uri.path();
    let decoded: std::borrow::Cow<'_, [u8]> = percent_decode(path.as_bytes()).into();
    v.copy(VarName::Known(Var::PATH_INFO), b"", [&*decoded]);
    v.copy(
        VarName::Known(Var::QUERY_STRING),
        b"",
        [parts.uri.query().unwrap_or("").as_bytes()],
    );
    let raw_uri = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
    // An absolute-form target with a query and no path
    // (`GET http://h.example?x=1`) has "?x=1" for its path and query: the
    // URI is the path it is served as ("/") and the query.
    let slash: &[u8] = if raw_uri.starts_with('?') { b"/" } else { b"" };
    v.copy(
        VarName::Known(Var::REQUEST_URI),
        b"",
        [slash, raw_uri.as_bytes()],
    );
    v.put(
        Var::SERVER_PROTOCOL,
        match parts.version {
            http::Version::HTTP_10 => static_bytes("HTTP/1.0"),
            http::Version::HTTP_2 => static_bytes("HTTP/2"),
            _ => static_bytes("HTTP/1.1"),
        },
    );
    match info.tls() {
        Some(tls) => {
            v.put(Var::REQUEST_SCHEME, static_bytes("https"));
            v.vars.extend(tls.vars.iter().cloned());
        }
        None => v.put(Var::REQUEST_SCHEME, static_bytes("http")),
    }

    // The host a target in absolute form names (HTTP/2's `:authority`
    // too) is the request's, whatever Host says (RFC 9112 §3.2.2, RFC 9113
    // §8.3.1): a proxy in front routes by it, so the app's host checks
    // must see it. Its user info, if any, is no part of the host.
    let target_host = parts
        .uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or("").as_bytes())
        .filter(|h| !h.is_empty());
    // SERVER_NAME/PORT come from Host (as gunicorn does), else the socket;
    // a unix socket has no port, and the scheme's is said (443 for TLS).
    let local_port = || match (info.local_ip(), info.tls()) {
        (None, Some(_)) => static_bytes("443"),
        _ => info.local_port(),
    };
    let host = target_host
        .or_else(|| parts.headers.get(header::HOST).map(|h| h.as_bytes()))
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => {
            // A Host that names no host (`:80`) or no number for a port
            // (`a:xyz`) gives the socket's: SERVER_NAME is never empty and
            // SERVER_PORT is a port (`int(environ["SERVER_PORT"])`).
            let (name, port) = split_host(h);
            if name.is_empty() {
                v.put(Var::SERVER_NAME, info.local_name());
            } else {
                v.copy(VarName::Known(Var::SERVER_NAME), b"", [name]);
            }
            // (Digits alone: Rust's parse takes a `+`.)
            let is_port = |p: &&[u8]| {
                p.iter().all(u8::is_ascii_digit)
                    && std::str::from_utf8(p).is_ok_and(|p| p.parse::<u16>().is_ok_and(|n| n > 0))
            };
            match port.filter(is_port) {
                Some(p) => v.copy(VarName::Known(Var::SERVER_PORT), b"", [p]),
                None => v.put(Var::SERVER_PORT, local_port()),
            }
        }
        None => {
            v.put(Var::SERVER_NAME, info.local_name());
            v.put(Var::SERVER_PORT, local_port());
        }
    }
    if settings.server_addr
        && let Some(ip) = info.local_ip()
    {
        v.copy(VarName::Known(Var::SERVER_ADDR), b"", [ip.as_ref()]);
    }
    // Copied into the worker's arena, not cloned: a clone's count is a
    // cache line of the connection's own, cold when many connections take
    // turns (1,000: `owned_clone` then took ~0.13 µs a request).
    if let Some((addr, port)) = info.peer() {
        v.copy(VarName::Known(Var::REMOTE_ADDR), b"", [addr.as_ref()]);
        v.copy(VarName::Known(Var::REMOTE_PORT), b"", [port.as_ref()]);
    } else {
        // A unix socket's client has no address: empty, as Gunicorn and
        // uWSGI give it, for apps that read the key without a default.
        v.put(Var::REMOTE_ADDR, Bytes::new());
    }

    let mut content_length = None;
    let mut repeated_headers = Vec::new();
    let mut script_name_header = None;
    // The values of a repeated header come one after another.
    let mut headers = parts.headers.iter().peekable();
    while let Some((name, first)) = headers.next() {
        let repeated = headers.peek().is_some_and(|(next, _)| *next == name);
        let rest = std::iter::from_fn(|| headers.next_if(|(n, _)| *n == name).map(|(_, v)| v));
        if *name == header::CONTENT_LENGTH {
            // hyper has already refused conflicting or malformed lengths.
            content_length = cgi::content_length(first.as_bytes());
            v.copy(VarName::Known(Var::CONTENT_LENGTH), b"", [first.as_bytes()]);
            rest.for_each(drop);
            continue;
        }
        if *name == header::CONTENT_TYPE {
            v.copy(VarName::Known(Var::CONTENT_TYPE), b"", [first.as_bytes()]);
            rest.for_each(drop);
            continue;
        }
        if *name == header::HOST && target_host.is_some() {
            rest.for_each(drop);
            continue;
        }
        // "X_Forwarded_For" would pass for "X-Forwarded-For" once both become
        // HTTP_X_FORWARDED_FOR; like nginx, drop names with underscores.
        // But SCRIPT_NAME, kept apart when asked for (Gunicorn's
        // forwarder_headers): its wrapper trusts it or not.
        if name.as_str().contains('_') {
            if settings.script_name_header && name.as_str() == "script_name" {
                // The last, as Gunicorn takes it (a proxy that appends its
                // own after a client's).
                let last = rest.last().unwrap_or(first);
                script_name_header = Some(Bytes::copy_from_slice(last.as_bytes()));
                continue;
            }
            rest.for_each(drop);
            continue;
        }
        let sep: &[u8] = if *name == header::COOKIE {
            b"; "
        } else {
            b", "
        };
        let var = header_var(name.as_str());
        // Cookies stay one field, joined: HTTP/2 clients split theirs in
        // crumbs that must be joined before an app sees them (RFC 9113
        // §8.2.3), and HTTP/1.1 allows one Cookie header only.
        if !repeated || *name == header::COOKIE {
            v.copy(
                var,
                sep,
                std::iter::once(first).chain(rest).map(|h| h.as_bytes()),
            );
            continue;
        }
        let values: Vec<&HeaderValue> = std::iter::once(first).chain(rest).collect();
        v.copy(var.clone(), sep, values.iter().map(|h| h.as_bytes()));
        repeated_headers.push(RepeatedHeader {
            name: var,
            joined: v
                .vars
                .last()
                .map(|(_, joined)| joined.clone())
                .unwrap_or_default(),
            values: values
                .iter()
                .map(|h| Bytes::copy_from_slice(h.as_bytes()))
                .collect(),
        });
    }
    // HTTP/2 sends the host as the `:authority` pseudo-header, not Host;
    // apps read HTTP_HOST (nginx passes Host on the same way).
    if let Some(authority) = target_host {
        v.copy(header_var("host"), b"", [authority]);
    }
    let vars = v.vars;

    if let Some(too_large) = body_too_large(settings.limit_post, content_length, &vars) {
        // (hyper drains an HTTP/1.1 one, and the connection's close lingers.)
        if let WireBody::Http2(body) = body {
            body.drain_in_background();
        }
        return Err(too_large);
    }

    Ok(Headed {
        vars,
        body,
        is_head: parts.method == http::Method::HEAD,
        http10: parts.version == http::Version::HTTP_10,
        upgradable: false,
        early_hints: None,
        repeated_headers,
        local_addr: info.local_addr(),
        proxied_by: info.proxied_by(),
        script_name_header,
    })
}

/// The request with its body: read ahead up to `--post-buffering` (whole,
/// when it is no larger), so that a slow upload holds no app thread; the
/// rest of a larger one streams. With no read-ahead (a handler that takes
/// bodies as they come), all of it streams.
pub(super) async fn to_request(head: Headed, settings: &HttpSettings) -> Result<Request, Response> {
    let Headed {
        vars,
        body,
        is_head,
        http10: _,
        upgradable,
        early_hints,
        repeated_headers,
        local_addr,
        proxied_by,
        script_name_header,
    } = head;
    let body = if body.is_end_stream() {
        RequestBody::Empty
    } else {
        let chunks = IncomingChunks::new(body, settings);
        let body = if settings.read_ahead == 0 {
            let awaits_continue = crate::request::var_named(&vars, b"HTTP_EXPECT")
                .is_some_and(|e| e.eq_ignore_ascii_case(b"100-continue"));
            as_it_comes(chunks, awaits_continue)
        } else {
            read_ahead(chunks, settings.read_ahead).await
        };
        match body {
            Ok(body) => body,
            Err(e) => {
                crate::say!("oxgate: bad request body: {e}");
                return Err(Response::for_body_error(&e));
            }
        }
    };
    Ok(Request {
        vars,
        body,
        is_head,
        protocol: crate::listen::Protocol::Http,
        upgradable,
        early_hints,
        repeated_headers,
        local_addr,
        proxied_by,
        script_name_header,
    })
}
