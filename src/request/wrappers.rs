//! Handlers that wrap another, for any kind of app (WSGI or ASGI):
//! `--root-path`, `--proxy-headers` and `--limit-concurrency`, named as
//! uvicorn names them; Gunicorn's `--secure-scheme-header`; and
//! `--add-header` (uWSGI's name).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;

use super::ProxiedBy;
use super::answered::Answered;
use super::body::{BodyError, BodyStream, ChunkSource, FileRegion, Trailers};
use super::handler::{BodyTaking, Handler, Request, Responding};
use super::response::{Response, ResponseBody};
use super::vars::{Var, VarName};

fn position(vars: &[(VarName, Bytes)], v: Var) -> Option<usize> {
    vars.iter().position(|(k, _)| *k == VarName::Known(v))
}

fn set(vars: &mut Vec<(VarName, Bytes)>, v: Var, value: Bytes) {
    match position(vars, v) {
        Some(i) => vars[i].1 = value,
        None => vars.push((VarName::Known(v), value)),
    }
}

/// `--root-path`: the app is mounted at this prefix by a proxy that
/// strips it. SCRIPT_NAME (WSGI) and `root_path` (ASGI) say it; PATH_INFO
/// stays as the request had it, and an ASGI `path` starts with it.
///
/// With `--root-path-unstripped` the proxy passes the prefix on (Gunicorn's
/// root_path): a PATH_INFO that starts with it, a whole segment at a time,
/// loses it, so the ASGI `path` is the request's own.
pub struct RootPath {
    inner: Arc<dyn Handler>,
    root: Bytes,
    unstripped: bool,
}

impl RootPath {
    pub fn new(inner: Arc<dyn Handler>, root: &str, unstripped: bool) -> RootPath {
        RootPath {
            inner,
            root: Bytes::copy_from_slice(root.trim_end_matches('/').as_bytes()),
            unstripped,
        }
    }
}

impl Handler for RootPath {
    fn handle(self: Arc<Self>, mut req: Request) -> Responding {
        let given =
            position(&req.vars, Var::SCRIPT_NAME).is_some_and(|i| !req.vars[i].1.is_empty());
        if !given {
            set(&mut req.vars, Var::SCRIPT_NAME, self.root.clone());
            if self.unstripped
                && let Some(i) = position(&req.vars, Var::PATH_INFO)
            {
                let path = &req.vars[i].1;
                let root = &self.root[..];
                if path.starts_with(root) && (path.len() == root.len() || path[root.len()] == b'/')
                {
                    req.vars[i].1 = path.slice(root.len()..);
                }
            }
        }
        self.inner.clone().handle(req)
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

/// An address or a network (`10.0.0.0/8`, `::1`), or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trusted {
    Any,
    Net(IpAddr, u8),
}

impl Trusted {
    /// `--forwarded-allow-ips`: a comma-separated list.
    pub fn parse_list(list: &str) -> Result<Vec<Trusted>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s == "*" {
                    return Ok(Trusted::Any);
                }
                let (addr, bits) = match s.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (s, None),
                };
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{s:?} is not an IP address or network"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    Some(b) => b
                        .parse::<u8>()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
                    None => max,
                };
                Ok(Trusted::Net(ip, bits))
            })
            .collect()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self, ip) {
            (Trusted::Any, _) => true,
            (Trusted::Net(IpAddr::V4(net), bits), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (Trusted::Net(IpAddr::V6(net), bits), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Which headers `--proxy-headers` reads. One family only: a proxy sets
/// one and passes a client's own of the other on, which would let the
/// client name its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For` and `X-Forwarded-Proto`, as uvicorn and Gunicorn
    /// read them.
    XForwarded,
    /// `Forwarded` (RFC 7239): the `for` and `proto` of one element.
    Forwarded,
}

/// Who sent a request's proxy headers, for the settings that trust them:
/// the balancer that sent a PROXY header, else the connection's peer.
enum Sender {
    /// Its address; `None` when REMOTE_ADDR is not one.
    Ip(Option<IpAddr>),
    /// A unix socket's client, which has no address (an empty
    /// REMOTE_ADDR, or none).
    UnixSocket,
}

fn headers_sender(vars: &[(VarName, Bytes)], proxied_by: Option<ProxiedBy>) -> Sender {
    match proxied_by {
        Some(ProxiedBy::Ip(ip)) => Sender::Ip(Some(ip)),
        Some(ProxiedBy::UnixSocket) => Sender::UnixSocket,
        None => match position(vars, Var::REMOTE_ADDR).map(|i| &vars[i].1) {
            Some(addr) if !addr.is_empty() => Sender::Ip(parse_ip(addr)),
            _ => Sender::UnixSocket,
        },
    }
}

/// Whether a request's proxy headers come from a proxy `trusted` names;
/// from a unix socket's client (no address), as `unix_sockets` says.
fn sent_by_trusted(
    trusted: &[Trusted],
    unix_sockets: bool,
    vars: &[(VarName, Bytes)],
    proxied_by: Option<ProxiedBy>,
) -> bool {
    match headers_sender(vars, proxied_by) {
        Sender::Ip(ip) => ip.is_some_and(|ip| trusted.iter().any(|t| t.contains(ip))),
        Sender::UnixSocket => unix_sockets,
    }
}

/// An address as REMOTE_ADDR or a forwarded header gives it: IPv6 may
/// come in brackets.
fn parse_ip(addr: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(addr)
        .ok()
        .and_then(|a| a.trim_matches(['[', ']']).parse().ok())
}

/// `--proxy-headers`: behind a trusted proxy (`--forwarded-allow-ips`),
/// the client's address and scheme come from the headers it sets.
pub struct ProxyHeaders {
    inner: Arc<dyn Handler>,
    trusted: Vec<Trusted>,
    headers: ForwardedHeaders,
}

impl ProxyHeaders {
    pub fn new(
        inner: Arc<dyn Handler>,
        trusted: Vec<Trusted>,
        headers: ForwardedHeaders,
    ) -> ProxyHeaders {
        ProxyHeaders {
            inner,
            trusted,
            headers,
        }
    }

    fn trusts(&self, addr: &[u8]) -> bool {
        parse_ip(addr).is_some_and(|ip| self.trusted.iter().any(|t| t.contains(ip)))
    }

    /// Which of a chain of hops is the client: from the right, the first
    /// not trusted, else the leftmost (as uvicorn).
    fn client(&self, hosts: &[&str]) -> Option<usize> {
        hosts
            .iter()
            .rposition(|host| !self.trusts(host.as_bytes()))
            .or((!hosts.is_empty()).then_some(0))
    }

    /// `proxied_by`: the balancer that sent a PROXY header, which is who
    /// is trusted, not the client it named (REMOTE_ADDR).
    fn rewrite(&self, vars: &mut Vec<(VarName, Bytes)>, proxied_by: Option<ProxiedBy>) {
        // A unix socket's peer has no address: trusted by `*` alone, as
        // uvicorn trusts it (nginx in front on a socket file).
        let any = self.trusted.iter().any(|t| matches!(t, Trusted::Any));
        if !sent_by_trusted(&self.trusted, any, vars, proxied_by) {
            return;
        }
        let header = |vars: &[(VarName, Bytes)], name: &[u8]| {
            vars.iter()
                .find(|(k, _)| k.as_bytes() == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok().map(str::to_string))
        };
        let (client, proto) = match self.headers {
            ForwardedHeaders::XForwarded => {
                // X-Forwarded-Proto counts on its own, as uvicorn reads it:
                // a proxy may set it without X-Forwarded-For.
                let proto = header(vars, b"HTTP_X_FORWARDED_PROTO")
                    .map(|p| p.split(',').next().unwrap_or("").to_string());
                // A hop may carry its port (Azure's and IIS ARR's
                // `203.0.113.9:5555`), which uvicorn takes as the port.
                let hops: Vec<String> = header(vars, b"HTTP_X_FORWARDED_FOR")
                    .iter()
                    .flat_map(|xff| xff.split(','))
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect();
                let hosts: Vec<&str> = hops.iter().map(|h| split_port(h).0).collect();
                (self.client(&hosts).map(|i| hops[i].clone()), proto)
            }
            ForwardedHeaders::Forwarded => {
                // A value outside RFC 7239's grammar is not read at all: a
                // client's broken element could swallow its proxies'.
                let elements = header(vars, b"HTTP_FORWARDED")
                    .and_then(|v| crate::proto::forwarded::parse(&v).ok())
                    .unwrap_or_default();
                let hosts: Vec<&str> = elements
                    .iter()
                    .map(|e| split_port(e.get("for").unwrap_or("")).0)
                    .collect();
                match self.client(&hosts) {
                    // The scheme is the one the client used: its element's.
                    Some(i) => (
                        elements[i].get("for").map(str::to_string),
                        elements[i].get("proto").map(str::to_string),
                    ),
                    None => (None, None),
                }
            }
        };
        if let Some(hop) = client {
            let (host, port) = split_port(&hop);
            let port = if port.parse::<u16>().is_ok() {
                port
            } else {
                "0"
            };
            set(vars, Var::REMOTE_ADDR, Bytes::from(host.to_string()));
            set(vars, Var::REMOTE_PORT, Bytes::from(port.to_string()));
        }
        match proto.map(|p| p.trim().to_ascii_lowercase()).as_deref() {
            Some("https" | "wss") => {
                set(vars, Var::REQUEST_SCHEME, Bytes::from_static(b"https"));
                set(vars, Var::HTTPS, Bytes::from_static(b"on"));
            }
            Some("http" | "ws") => {
                set(vars, Var::REQUEST_SCHEME, Bytes::from_static(b"http"));
                if let Some(i) = position(vars, Var::HTTPS) {
                    vars.remove(i);
                }
            }
            _ => {}
        }
    }
}

/// A hop's address and port: `192.0.2.1:4711`, `[2001:db8::1]:4711`; a bare
/// IPv6 address has no port.
fn split_port(v: &str) -> (&str, &str) {
    if let Some(rest) = v.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':').unwrap_or("")),
            None => (rest, ""),
        };
    }
    match v.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, port),
        _ => (v, ""),
    }
}

impl Handler for ProxyHeaders {
    fn handle(self: Arc<Self>, mut req: Request) -> Responding {
        self.rewrite(&mut req.vars, req.proxied_by);
        self.inner.clone().handle(req)
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

/// `--script-name-header` (Gunicorn's `forwarder_headers`): from a trusted
/// proxy (or over a unix socket, as Gunicorn trusts it), a `SCRIPT_NAME`
/// header is the prefix the app is mounted under. The path must start
/// with it: PATH_INFO is the rest. One that does not is the proxy's
/// configuration at fault, a 500 as Gunicorn answers it.
pub struct ScriptNameHeader {
    inner: Arc<dyn Handler>,
    trusted: Vec<Trusted>,
    /// Where its 500s are logged and counted.
    answered: Arc<Answered>,
}

impl ScriptNameHeader {
    pub fn new(
        inner: Arc<dyn Handler>,
        trusted: Vec<Trusted>,
        answered: Arc<Answered>,
    ) -> ScriptNameHeader {
        ScriptNameHeader {
            inner,
            trusted,
            answered,
        }
    }
}

impl Handler for ScriptNameHeader {
    fn handle(self: Arc<Self>, mut req: Request) -> Responding {
        let Some(prefix) = req.script_name_header.take() else {
            return self.inner.clone().handle(req);
        };
        let trusted = sent_by_trusted(&self.trusted, true, &req.vars, req.proxied_by);
        let prefix = prefix.slice_ref(prefix.trim_ascii());
        if !trusted || prefix.is_empty() {
            return self.inner.clone().handle(req);
        }
        let prefix = prefix.slice_ref(prefix.strip_suffix(b"/").unwrap_or(&prefix));
        let path = super::vars::var(&req.vars, Var::PATH_INFO)
            .cloned()
            .unwrap_or_default();
        // A whole segment at a time: /app is not the prefix of /application.
        // PATH_INFO is decoded: so is the prefix for the comparison
        // (`/my%20app`), as Gunicorn compares the raw path with it; the
        // app is told it as sent.
        let decoded: Vec<u8> = percent_encoding::percent_decode(&prefix).collect();
        match path
            .strip_prefix(&decoded[..])
            .filter(|rest| rest.is_empty() || rest.starts_with(b"/"))
        {
            Some(rest) => {
                let rest = path.slice_ref(rest);
                set(&mut req.vars, Var::SCRIPT_NAME, prefix);
                set(&mut req.vars, Var::PATH_INFO, rest);
                self.inner.clone().handle(req)
            }
            None => {
                crate::say!(
                    "oxgate: request refused with 500: its path {:?} does not start with the SCRIPT_NAME header its proxy sent, {:?} (--script-name-header)",
                    String::from_utf8_lossy(&path),
                    String::from_utf8_lossy(&prefix)
                );
                let resp = Response::plain(
                    500,
                    "Internal Server Error",
                    "Configuration problem: the request's path does not start with SCRIPT_NAME\n",
                );
                let resp = self.answered.answer(req, resp, std::time::Instant::now());
                Box::pin(async { resp })
            }
        }
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

/// `--secure-scheme-header` (Gunicorn's `secure_scheme_headers`): from a
/// trusted proxy, or over a unix socket (no REMOTE_ADDR), a header with
/// its secure value makes the request https; with another value, http.
/// Two such headers that disagree make the request a 400, as in Gunicorn:
/// the app cannot tell which to believe.
pub struct SecureScheme {
    inner: Arc<dyn Handler>,
    trusted: Vec<Trusted>,
    /// A unix socket's client is trusted (Gunicorn's rule).
    unix_sockets_trusted: bool,
    /// CGI names (`HTTP_X_FORWARDED_PROTO`) and their secure values.
    headers: Vec<(Bytes, Bytes)>,
    /// Where its 400s are logged and counted.
    answered: Arc<Answered>,
}

impl SecureScheme {
    pub fn new(
        inner: Arc<dyn Handler>,
        trusted: Vec<Trusted>,
        unix_sockets_trusted: bool,
        headers: &[(String, String)],
        answered: Arc<Answered>,
    ) -> SecureScheme {
        SecureScheme {
            inner,
            answered,
            trusted,
            unix_sockets_trusted,
            headers: headers
                .iter()
                .map(|(n, v)| (Bytes::from(n.clone()), Bytes::from(v.clone())))
                .collect(),
        }
    }

    /// Whether the request says https (`Some(true)`), http, or nothing;
    /// `Err` when its headers disagree. `proxied_by` is the connection's
    /// peer when a PROXY header named the client: the balancer that set
    /// the headers, whom Gunicorn checks (its `peer_addr`), not the client.
    fn scheme(
        &self,
        vars: &[(VarName, Bytes)],
        repeated: &[super::RepeatedHeader],
        proxied_by: Option<ProxiedBy>,
    ) -> Result<Option<bool>, ()> {
        // Only a request that carries one of the headers asks who sent it.
        if !vars
            .iter()
            .any(|(name, _)| self.headers.iter().any(|(n, _)| name.as_bytes() == n))
        {
            return Ok(None);
        }
        if !sent_by_trusted(&self.trusted, self.unix_sockets_trusted, vars, proxied_by) {
            return Ok(None);
        }
        let mut secure = None;
        for (name, value) in vars {
            let Some((_, want)) = self.headers.iter().find(|(n, _)| name.as_bytes() == n) else {
                continue;
            };
            // A header sent twice comes joined ("https, https"): Gunicorn
            // reads each line, so each value counts on its own; one line's
            // list ("https, http") is one value, not its own equal.
            let lines = repeated
                .iter()
                .find(|r| r.name == *name && r.joined == *value)
                .map_or_else(|| vec![value.clone()], |r| r.values.clone());
            for one in &lines {
                let this = one.trim_ascii() == want;
                if secure.is_some_and(|s| s != this) {
                    return Err(());
                }
                secure = Some(this);
            }
        }
        Ok(secure)
    }
}

impl Handler for SecureScheme {
    fn handle(self: Arc<Self>, mut req: Request) -> Responding {
        match self.scheme(&req.vars, &req.repeated_headers, req.proxied_by) {
            Err(()) => {
                crate::say!(
                    "oxgate: warning: request refused with 400: contradictory scheme headers (--secure-scheme-header), from {}",
                    String::from_utf8_lossy(
                        super::vars::var(&req.vars, Var::REMOTE_ADDR)
                            .map_or(&b"a unix socket"[..], |a| &a[..])
                    )
                );
                let resp = Response::plain(400, "Bad Request", "Contradictory scheme headers\n");
                let resp = self.answered.answer(req, resp, std::time::Instant::now());
                return Box::pin(async { resp });
            }
            Ok(Some(true)) => {
                set(
                    &mut req.vars,
                    Var::REQUEST_SCHEME,
                    Bytes::from_static(b"https"),
                );
                set(&mut req.vars, Var::HTTPS, Bytes::from_static(b"on"));
            }
            Ok(Some(false)) => {
                set(
                    &mut req.vars,
                    Var::REQUEST_SCHEME,
                    Bytes::from_static(b"http"),
                );
                if let Some(i) = position(&req.vars, Var::HTTPS) {
                    req.vars.remove(i);
                }
            }
            Ok(None) => {}
        }
        self.inner.clone().handle(req)
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

/// `--add-header`: headers added to every response (uWSGI's `add-header`,
/// uvicorn's `--header`).
pub struct AddHeaders {
    inner: Arc<dyn Handler>,
    headers: Vec<(Bytes, Bytes)>,
}

impl AddHeaders {
    pub fn new(inner: Arc<dyn Handler>, headers: &[(String, String)]) -> AddHeaders {
        let headers: Vec<_> = headers
            .iter()
            .map(|(n, v)| (Bytes::from(n.clone()), Bytes::from(v.clone())))
            .collect();
        super::handler::count_added_headers(&headers);
        AddHeaders { inner, headers }
    }
}

impl Handler for AddHeaders {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        let answer = self.inner.clone().handle(req);
        Box::pin(async move {
            let mut resp = answer.await;
            resp.headers.extend(self.headers.iter().cloned());
            resp
        })
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

/// `--limit-concurrency N`: with N requests in flight in this worker
/// (until their responses are sent), the next one gets 503.
pub struct LimitConcurrency {
    inner: Arc<dyn Handler>,
    limit: usize,
    in_flight: Arc<AtomicUsize>,
    /// Where its 503s are logged and counted, as uvicorn logs them.
    answered: Arc<Answered>,
}

impl LimitConcurrency {
    pub fn new(inner: Arc<dyn Handler>, limit: usize, answered: Arc<Answered>) -> LimitConcurrency {
        LimitConcurrency {
            inner,
            limit,
            in_flight: Arc::new(AtomicUsize::new(0)),
            answered,
        }
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A streamed body that counts as in flight until it ends.
struct Counted {
    body: BodyStream,
    _in_flight: InFlight,
}

impl ChunkSource for Counted {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.body.poll_chunk(cx)
    }

    fn take_file(&mut self) -> Option<FileRegion> {
        self.body.take_file()
    }

    fn unsent(&mut self, n: u64) {
        self.body.unsent(n)
    }

    fn poll_trailers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Trailers, BodyError>>> {
        self.body.poll_trailers(cx)
    }
}

impl Handler for LimitConcurrency {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let resp = Response::plain(503, "Service Unavailable", "Service Unavailable\n");
            let resp = self.answered.answer(req, resp, std::time::Instant::now());
            return Box::pin(async { resp });
        }
        let in_flight = InFlight(self.in_flight.clone());
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut resp = inner.handle(req).await;
            if let ResponseBody::Stream { first, rest } = resp.body {
                resp.body = ResponseBody::Stream {
                    first,
                    rest: BodyStream::new(Counted {
                        body: rest,
                        _in_flight: in_flight,
                    }),
                };
            }
            resp
        })
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency().min(self.limit.max(1))
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses() {
        let t = Trusted::parse_list("127.0.0.1, 10.0.0.0/8,::1, fd00::/8").unwrap();
        assert!(t[0].contains(ip("127.0.0.1")));
        assert!(!t[0].contains(ip("127.0.0.2")));
        assert!(t[1].contains(ip("10.200.3.4")));
        assert!(!t[1].contains(ip("11.0.0.1")));
        assert!(t[2].contains(ip("::1")));
        assert!(t[3].contains(ip("fd12::5")));
        assert!(t[0].contains(ip("::ffff:127.0.0.1")));
        assert!(Trusted::parse_list("*").unwrap()[0].contains(ip("8.8.8.8")));
        assert!(Trusted::parse_list("10.0.0.0/33").is_err());
        assert!(Trusted::parse_list("example.com").is_err());
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let p = ProxyHeaders {
            inner: Arc::new(Nothing),
            trusted: Trusted::parse_list("127.0.0.1,10.0.0.0/8").unwrap(),
            headers: ForwardedHeaders::XForwarded,
        };
        let bare =
            |hops: &[&'static str]| -> Option<&'static str> { p.client(hops).map(|i| hops[i]) };
        assert_eq!(bare(&["1.2.3.4", "10.0.0.5"]), Some("1.2.3.4"));
        assert_eq!(bare(&["6.6.6.6", "1.2.3.4", "10.0.0.5"]), Some("1.2.3.4"));
        assert_eq!(bare(&["10.0.0.7", "10.0.0.5"]), Some("10.0.0.7"));
        assert_eq!(split_port("[2001:db8::1]:4711"), ("2001:db8::1", "4711"));
        assert_eq!(split_port("192.0.2.1:4711"), ("192.0.2.1", "4711"));
        assert_eq!(split_port("2001:db8::1"), ("2001:db8::1", ""));
        assert_eq!(split_port("[2001:db8::1]"), ("2001:db8::1", ""));
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(VarName, Bytes)> {
        crate::request::test_vars(pairs)
    }

    #[test]
    fn secure_scheme_headers_as_gunicorn_reads_them() {
        let s = SecureScheme::new(
            Arc::new(Nothing),
            Trusted::parse_list("127.0.0.1,::1").unwrap(),
            true,
            &[
                ("HTTP_X_FORWARDED_PROTO".into(), "https".into()),
                ("HTTP_X_FORWARDED_SSL".into(), "on".into()),
            ],
            Arc::new(Answered::new(crate::request::HandlerKind::App)),
        );
        let from = |addr: &str, headers: &[(&str, &str)]| {
            let mut v = vec![("REMOTE_ADDR", addr)];
            v.extend_from_slice(headers);
            s.scheme(&vars(&v), &[], None)
        };
        // Two lines, "https" and then "http" (joined as one variable).
        let two_lines = |first: &str, second: &str| {
            let joined = format!("{first}, {second}");
            let v = vars(&[
                ("REMOTE_ADDR", "::1"),
                ("HTTP_X_FORWARDED_PROTO", joined.as_str()),
            ]);
            let repeated = [crate::request::RepeatedHeader {
                name: v[1].0.clone(),
                joined: v[1].1.clone(),
                values: vec![
                    Bytes::copy_from_slice(first.as_bytes()),
                    Bytes::copy_from_slice(second.as_bytes()),
                ],
            }];
            s.scheme(&v, &repeated, None)
        };
        assert_eq!(
            from("127.0.0.1", &[("HTTP_X_FORWARDED_PROTO", "https")]),
            Ok(Some(true))
        );
        assert_eq!(
            from("127.0.0.1", &[("HTTP_X_FORWARDED_PROTO", "http")]),
            Ok(Some(false))
        );
        // Values are compared exactly, as in Gunicorn.
        assert_eq!(
            from("127.0.0.1", &[("HTTP_X_FORWARDED_PROTO", "HTTPS")]),
            Ok(Some(false))
        );
        assert_eq!(from("127.0.0.1", &[]), Ok(None));
        // An untrusted peer's headers count for nothing.
        assert_eq!(
            from("10.1.2.3", &[("HTTP_X_FORWARDED_PROTO", "https")]),
            Ok(None)
        );
        assert_eq!(
            from(
                "::1",
                &[
                    ("HTTP_X_FORWARDED_PROTO", "https"),
                    ("HTTP_X_FORWARDED_SSL", "on")
                ]
            ),
            Ok(Some(true))
        );
        assert_eq!(
            from(
                "127.0.0.1",
                &[
                    ("HTTP_X_FORWARDED_PROTO", "https"),
                    ("HTTP_X_FORWARDED_SSL", "off")
                ]
            ),
            Err(())
        );
        assert_eq!(two_lines("https", "https"), Ok(Some(true)));
        assert_eq!(two_lines("https", "http"), Err(()));
        // One line's list is one value, as Gunicorn compares it: not https.
        assert_eq!(
            from("::1", &[("HTTP_X_FORWARDED_PROTO", "https, https")]),
            Ok(Some(false))
        );
        assert_eq!(
            from("::1", &[("HTTP_X_FORWARDED_PROTO", "https, http")]),
            Ok(Some(false))
        );
        // A unix socket has no REMOTE_ADDR, or an empty one: its peer is
        // trusted.
        assert_eq!(
            s.scheme(&vars(&[("HTTP_X_FORWARDED_SSL", "on")]), &[], None),
            Ok(Some(true))
        );
        assert_eq!(
            s.scheme(
                &vars(&[("REMOTE_ADDR", ""), ("HTTP_X_FORWARDED_SSL", "on")]),
                &[],
                None
            ),
            Ok(Some(true))
        );
        // Behind a PROXY header, the balancer (the connection's peer) is
        // who is trusted, not the client it names: HAProxy's send-proxy
        // with TLS ended at HAProxy.
        let proxied = |client: &str, balancer: &str| {
            s.scheme(
                &vars(&[("REMOTE_ADDR", client), ("HTTP_X_FORWARDED_PROTO", "https")]),
                &[],
                Some(ProxiedBy::Ip(balancer.parse().unwrap())),
            )
        };
        assert_eq!(proxied("203.0.113.9", "127.0.0.1"), Ok(Some(true)));
        assert_eq!(proxied("127.0.0.1", "10.1.2.3"), Ok(None));
        // A balancer on a unix socket is trusted, as a unix socket's
        // client is (HAProxy's `server s /run/app.sock send-proxy`).
        assert_eq!(
            s.scheme(
                &vars(&[
                    ("REMOTE_ADDR", "203.0.113.9"),
                    ("HTTP_X_FORWARDED_PROTO", "https")
                ]),
                &[],
                Some(ProxiedBy::UnixSocket),
            ),
            Ok(Some(true))
        );
    }

    struct Nothing;
    impl Handler for Nothing {
        fn handle(self: Arc<Self>, _: Request) -> Responding {
            Box::pin(async { Response::plain(200, "OK", "") })
        }
    }
}
