//! The HTTP connection scope (ASGI `www` spec), made from the
//! protocol-neutral request's CGI variables.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::request::{RepeatedHeader, Var, VarName};

/// The spec versions said, as uvicorn says them: 2.3 for HTTP, 2.4 for
/// WebSocket. An HTTP `send()` raises `OSError` once the client is gone
/// all the same (2.4's rule, which the spec allows before it). Said as
/// 2.4, Starlette's StreamingResponse relies on that error alone and stops
/// listening for `http.disconnect`: a stream idle between events (SSE on
/// a queue) then ran on after its client left, until its next send, and
/// its background task never ran.
pub(super) const HTTP_SPEC_VERSION: &str = "2.3";
pub(super) const WEBSOCKET_SPEC_VERSION: &str = "2.4";

/// Interned keys and the values every scope shares, made once per worker.
pub(super) struct ScopeKeys {
    type_: Py<PyString>,
    asgi: Py<PyString>,
    http_version: Py<PyString>,
    server: Py<PyString>,
    client: Py<PyString>,
    scheme: Py<PyString>,
    method: Py<PyString>,
    root_path: Py<PyString>,
    path: Py<PyString>,
    raw_path: Py<PyString>,
    query_string: Py<PyString>,
    headers: Py<PyString>,
    state: Py<PyString>,
    extensions: Py<PyString>,
    /// The extensions an HTTP scope offers (`http.response.pathsend`),
    /// copied per scope.
    http_extensions: Py<PyDict>,
    /// `{"version": "3.0", "spec_version": ...}` of each kind of scope,
    /// copied per scope.
    http_asgi_versions: Py<PyDict>,
    websocket_asgi_versions: Py<PyDict>,
    /// An HTTP scope's keys, in order, `type` set and the others None:
    /// each scope is a copy with its values put in, which neither grows
    /// the dict nor hashes a key.
    http_template: Py<PyDict>,
    /// The lower-case header name of each known `HTTP_*` variable.
    header_names: Vec<Option<Py<PyBytes>>>,
    /// The last `server` address made, with what it is of: a listener's
    /// requests all share one.
    last_server: std::sync::Mutex<Option<(ServerKey, Py<PyAny>)>>,
}

impl ScopeKeys {
    pub(super) fn new(py: Python<'_>) -> PyResult<ScopeKeys> {
        let key = |s: &str| PyString::intern(py, s).unbind();
        let versions = |spec: &str| -> PyResult<Py<PyDict>> {
            let versions = PyDict::new(py);
            versions.set_item("version", "3.0")?;
            versions.set_item("spec_version", spec)?;
            Ok(versions.unbind())
        };
        let http_extensions = PyDict::new(py);
        http_extensions.set_item("http.response.pathsend", PyDict::new(py))?;
        http_extensions.set_item("http.response.zerocopysend", PyDict::new(py))?;
        let header_names = Var::ALL
            .iter()
            .map(|v| header_name(v.name().as_bytes()).map(|n| PyBytes::new(py, &n).unbind()))
            .collect();
        let http_template = PyDict::new(py);
        for name in [
            "type",
            "asgi",
            "http_version",
            "server",
            "client",
            "scheme",
            "method",
            "root_path",
            "path",
            "raw_path",
            "query_string",
            "headers",
            "state",
            "extensions",
        ] {
            http_template.set_item(key(name), py.None())?;
        }
        http_template.set_item(key("type"), key("http"))?;
        Ok(ScopeKeys {
            http_template: http_template.unbind(),
            type_: key("type"),
            asgi: key("asgi"),
            http_version: key("http_version"),
            server: key("server"),
            client: key("client"),
            scheme: key("scheme"),
            method: key("method"),
            root_path: key("root_path"),
            path: key("path"),
            raw_path: key("raw_path"),
            query_string: key("query_string"),
            headers: key("headers"),
            state: key("state"),
            extensions: key("extensions"),
            http_extensions: http_extensions.unbind(),
            http_asgi_versions: versions(HTTP_SPEC_VERSION)?,
            websocket_asgi_versions: versions(WEBSOCKET_SPEC_VERSION)?,
            header_names,
            last_server: std::sync::Mutex::new(None),
        })
    }
}

/// The header a CGI variable carries: `HTTP_X_FOO` is `x-foo`, and
/// CONTENT_TYPE and CONTENT_LENGTH are headers too.
fn header_name(var: &[u8]) -> Option<Vec<u8>> {
    let rest = match var {
        b"CONTENT_TYPE" | b"CONTENT_LENGTH" => var,
        _ => var.strip_prefix(b"HTTP_")?,
    };
    Some(
        rest.iter()
            .map(|&c| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
    )
}

/// A request's CGI variables, and the headers among them the client gave
/// more than once.
pub(super) struct RequestVars {
    pub(super) vars: Vec<(VarName, Bytes)>,
    pub(super) repeated: Vec<RepeatedHeader>,
    /// Where scope["server"] comes from.
    pub(super) server: ServerAddress,
}

/// What scope["server"] is made of: "the listening address for this
/// server".
#[derive(Default, Clone, Copy)]
pub(super) enum ServerAddress {
    /// The socket the request came in on (HTTP): none on a unix socket.
    Socket(Option<std::net::SocketAddr>),
    /// SERVER_NAME and SERVER_PORT, as a gateway front end (nginx) names
    /// its own listening server.
    #[default]
    Named,
}

/// The CGI variables a scope is made of.
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) method: &'a [u8],
    pub(super) script_name: &'a [u8],
    pub(super) path_info: &'a [u8],
    pub(super) query: &'a [u8],
    pub(super) uri: &'a [u8],
    protocol: &'a [u8],
    https: bool,
    server_name: &'a [u8],
    server_port: &'a [u8],
    remote_addr: &'a [u8],
    remote_port: &'a [u8],
    /// What an `--https-socket`'s handshake settled (`SSL_*`), for the
    /// `tls` extension.
    tls: TlsFields<'a>,
    /// Headers given more than once: the scope lists each value apart
    /// ("duplicates ... must be preserved", as sent).
    repeated: &'a [RepeatedHeader],
    server: ServerAddress,
}

#[derive(Default)]
struct TlsFields<'a> {
    protocol: Option<&'a [u8]>,
    cipher: &'a [u8],
    client_dn: Option<&'a [u8]>,
    client_cert: Option<&'a [u8]>,
    /// `SSL_CLIENT_CERT_CHAIN_n`, the intermediates after the leaf, in
    /// the order they came.
    client_chain: Vec<&'a [u8]>,
    /// `SSL_CLIENT_VERIFY`, which says `FAILED:reason` of a certificate
    /// the CA did not vouch for.
    client_verify: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub(super) fn of(req: &'a RequestVars) -> Fields<'a> {
        let mut f = Fields {
            repeated: &req.repeated,
            server: req.server,
            ..Fields::default()
        };
        let vars = &req.vars;
        for (name, value) in vars {
            f.https |= crate::request::cgi::says_https(name, value);
            let VarName::Known(v) = name else {
                match name.as_bytes() {
                    b"SSL_PROTOCOL" => f.tls.protocol = Some(value),
                    b"SSL_CIPHER" => f.tls.cipher = value,
                    b"SSL_CLIENT_S_DN" => f.tls.client_dn = Some(value),
                    b"SSL_CLIENT_CERT" => f.tls.client_cert = Some(value),
                    b"SSL_CLIENT_VERIFY" => f.tls.client_verify = Some(value),
                    n if n.starts_with(b"SSL_CLIENT_CERT_CHAIN_") => f.tls.client_chain.push(value),
                    _ => {}
                }
                continue;
            };
            let slot = match v {
                Var::REQUEST_METHOD => &mut f.method,
                Var::SCRIPT_NAME => &mut f.script_name,
                Var::PATH_INFO => &mut f.path_info,
                Var::QUERY_STRING => &mut f.query,
                Var::REQUEST_URI => &mut f.uri,
                Var::SERVER_PROTOCOL => &mut f.protocol,
                Var::SERVER_NAME => &mut f.server_name,
                Var::SERVER_PORT => &mut f.server_port,
                Var::REMOTE_ADDR => &mut f.remote_addr,
                Var::REMOTE_PORT => &mut f.remote_port,
                _ => continue,
            };
            *slot = value;
        }
        // Apache's mod_proxy_uwsgi sends a prefix's own page `/app/` as
        // SCRIPT_NAME `/app/` and PATH_INFO `/`: the prefix is `/app`, as
        // the WSGI frameworks take it, not a root_path whose path has `//`.
        if let Some(prefix) = f.script_name.strip_suffix(b"/")
            && f.path_info.starts_with(b"/")
        {
            f.script_name = prefix;
        }
        f
    }

    pub(super) fn is_https(&self) -> bool {
        self.https
    }
}

/// "METHOD /uri" for the log: the request's own bytes, kept (a reference
/// count each) and formatted only if a line is written, on an app error.
pub(super) struct RequestLine {
    method: Bytes,
    uri: Bytes,
}

impl RequestLine {
    pub(super) fn of(vars: &[(VarName, Bytes)]) -> RequestLine {
        let (mut method, mut uri, mut path) = (Bytes::new(), Bytes::new(), Bytes::new());
        for (name, value) in vars {
            match name {
                VarName::Known(Var::REQUEST_METHOD) => method = value.clone(),
                VarName::Known(Var::REQUEST_URI) => uri = value.clone(),
                VarName::Known(Var::PATH_INFO) => path = value.clone(),
                _ => {}
            }
        }
        RequestLine {
            method,
            uri: if uri.is_empty() { path } else { uri },
        }
    }
}

impl std::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            String::from_utf8_lossy(&self.method),
            String::from_utf8_lossy(&self.uri)
        )
    }
}

fn text<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(b) {
        Ok(s) => PyString::new(py, s),
        Err(_) => PyString::new(py, &String::from_utf8_lossy(b)),
    }
}

/// `(host, port)`, or None when the front end did not say.
fn address<'py>(py: Python<'py>, host: &[u8], port: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    if host.is_empty() {
        return Ok(py.None().into_bound(py));
    }
    let port: u32 = std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    Ok(PyTuple::new(
        py,
        [
            text(py, host).into_any(),
            port.into_pyobject(py)?.into_any(),
        ],
    )?
    .into_any())
}

/// The `server` address, made once for the name and port its requests
/// share (a tuple, which the app cannot change).
fn server_address<'py>(
    py: Python<'py>,
    k: &ScopeKeys,
    f: &Fields<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut last = k.last_server.lock().unwrap_or_else(|e| e.into_inner());
    let is_last = |key: &ServerKey| match (key, f.server) {
        (ServerKey::Socket(a), ServerAddress::Socket(b)) => *a == b,
        (ServerKey::Named(name, port), ServerAddress::Named) => {
            name == f.server_name && port == f.server_port
        }
        _ => false,
    };
    if let Some((key, made)) = &*last
        && is_last(key)
    {
        return Ok(made.bind(py).clone());
    }
    let (made, key) = match f.server {
        ServerAddress::Socket(None) => (py.None().into_bound(py), ServerKey::Socket(None)),
        ServerAddress::Socket(Some(a)) => (
            PyTuple::new(
                py,
                [
                    a.ip().to_string().into_pyobject(py)?.into_any(),
                    a.port().into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any(),
            ServerKey::Socket(Some(a)),
        ),
        ServerAddress::Named => (
            address(py, f.server_name, f.server_port)?,
            ServerKey::Named(
                Bytes::copy_from_slice(f.server_name),
                Bytes::copy_from_slice(f.server_port),
            ),
        ),
    };
    *last = Some((key, made.clone().unbind()));
    Ok(made)
}

/// What a cached `server` address was made of.
enum ServerKey {
    Socket(Option<std::net::SocketAddr>),
    Named(Bytes, Bytes),
}

/// The method, as one string made once for the common ones.
fn method<'py>(py: Python<'py>, m: &[u8]) -> Bound<'py, PyString> {
    let known = match m {
        b"GET" => pyo3::intern!(py, "GET"),
        b"POST" => pyo3::intern!(py, "POST"),
        b"HEAD" => pyo3::intern!(py, "HEAD"),
        b"PUT" => pyo3::intern!(py, "PUT"),
        b"DELETE" => pyo3::intern!(py, "DELETE"),
        b"PATCH" => pyo3::intern!(py, "PATCH"),
        b"OPTIONS" => pyo3::intern!(py, "OPTIONS"),
        _ => return text(py, m),
    };
    known.clone()
}

/// `path` is `prefix` or lies under it, a whole segment at a time.
fn starts_with_segments(path: &[u8], prefix: &[u8]) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/' || prefix.ends_with(b"/"))
}

/// The scope of an HTTP request (`type: "http"`).
pub(super) fn http_scope<'py>(
    py: Python<'py>,
    k: &ScopeKeys,
    vars: &[(VarName, Bytes)],
    f: &Fields<'_>,
    state: &Py<PyDict>,
    trailers: bool,
    early_hints: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let headers = PyList::empty(py);
    for (var, value) in vars {
        let name = match var {
            VarName::Known(v) => match &k.header_names[*v as usize] {
                Some(n) => n.bind(py).clone(),
                None => continue,
            },
            VarName::Other(n) => match header_name(n) {
                Some(n) => PyBytes::new(py, &n),
                None => continue,
            },
        };
        // (The variable's value is checked too: one a wrapper has set
        // since is no longer the values joined.)
        let apart = f
            .repeated
            .iter()
            .find(|r| r.name == *var && r.joined == *value)
            .map_or(std::slice::from_ref(value), |r| &r.values[..]);
        for value in apart {
            headers.append(PyTuple::new(
                py,
                [name.clone().into_any(), PyBytes::new(py, value).into_any()],
            )?)?;
        }
    }
    let scope = k.http_template.bind(py).copy()?;
    scope.set_item(&k.asgi, k.http_asgi_versions.bind(py).copy()?)?;
    let version = match f.protocol.strip_prefix(b"HTTP/").unwrap_or(b"1.1") {
        b"1.1" => pyo3::intern!(py, "1.1").clone(),
        b"1.0" => pyo3::intern!(py, "1.0").clone(),
        b"2" | b"2.0" => pyo3::intern!(py, "2").clone(),
        other => text(py, other),
    };
    scope.set_item(&k.http_version, version)?;
    scope.set_item(&k.server, server_address(py, k, f)?)?;
    scope.set_item(&k.client, address(py, f.remote_addr, f.remote_port)?)?;
    let scheme = if f.is_https() {
        pyo3::intern!(py, "https")
    } else {
        pyo3::intern!(py, "http")
    };
    scope.set_item(&k.scheme, scheme)?;
    scope.set_item(&k.method, method(py, f.method))?;
    scope.set_item(&k.root_path, text(py, f.script_name))?;
    // As uvicorn and the current spec: `path` includes `root_path`.
    let path = if f.script_name.is_empty() {
        text(py, f.path_info)
    } else {
        text(py, &[f.script_name, f.path_info].concat())
    };
    scope.set_item(&k.path, path)?;
    let raw_path = if f.uri.is_empty() {
        PyBytes::new(py, &[f.script_name, f.path_info].concat())
    } else {
        let end = f.uri.iter().position(|&c| c == b'?').unwrap_or(f.uri.len());
        let target = &f.uri[..end];
        // Behind a proxy that strips the prefix (`--root-path`), the
        // target lacks it: raw_path has it, as path does (uvicorn). The
        // target is raw_path as it is when it is the path (compared
        // decoded, as the path is), or when it has the prefix that was
        // split off PATH_INFO (a mount; PATH_INFO may be normalised, as
        // nginx merges slashes). A target that merely begins with the
        // prefix, still whole in PATH_INFO, is not: `--root-path /api`
        // and `/api/x` are path `/api/api/x`, as under uvicorn.
        let decoded: std::borrow::Cow<'_, [u8]> = percent_encoding::percent_decode(target).into();
        let is_path = decoded.len() == f.script_name.len() + f.path_info.len()
            && decoded.starts_with(f.script_name)
            && decoded.ends_with(f.path_info);
        let prefix_split_off = || {
            starts_with_segments(&decoded, f.script_name)
                && !starts_with_segments(f.path_info, f.script_name)
        };
        if is_path || prefix_split_off() {
            PyBytes::new(py, target)
        } else {
            PyBytes::new(py, &[f.script_name, target].concat())
        }
    };
    scope.set_item(&k.raw_path, raw_path)?;
    scope.set_item(&k.query_string, PyBytes::new(py, f.query))?;
    scope.set_item(&k.headers, headers)?;
    scope.set_item(&k.state, state.bind(py).copy()?)?;
    let extensions = k.http_extensions.bind(py).copy()?;
    if let Some(tls) = tls_extension(py, &f.tls)? {
        extensions.set_item("tls", tls)?;
    }
    if trailers {
        extensions.set_item("http.response.trailers", PyDict::new(py))?;
    }
    if early_hints {
        extensions.set_item("http.response.early_hint", PyDict::new(py))?;
    }
    scope.set_item(&k.extensions, extensions)?;
    Ok(scope)
}

/// The `tls` extension (ASGI's extensions spec) of a request that came
/// over an `--https-socket`: the version and suite as numbers, and the
/// client's certificate when it sent one, or why it failed.
fn tls_extension<'py>(
    py: Python<'py>,
    tls: &TlsFields<'_>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(protocol) = tls.protocol else {
        return Ok(None);
    };
    let ext = PyDict::new(py);
    ext.set_item("server_cert", py.None())?;
    let chain = PyList::empty(py);
    if let Some(pem) = tls.client_cert {
        chain.append(text(py, pem))?;
        for pem in &tls.client_chain {
            chain.append(text(py, pem))?;
        }
    }
    ext.set_item("client_cert_chain", chain)?;
    ext.set_item("client_cert_name", tls.client_dn.map(|dn| text(py, dn)))?;
    let error = tls.client_verify.and_then(|v| v.strip_prefix(b"FAILED:"));
    ext.set_item("client_cert_error", error.map(|e| text(py, e)))?;
    ext.set_item("tls_version", crate::request::tls_version_code(protocol))?;
    let suite = crate::request::TLS_SUITES
        .iter()
        .find(|(name, _, _)| name.as_bytes() == tls.cipher)
        .map(|(_, _, code)| *code);
    ext.set_item("cipher_suite", suite)?;
    Ok(Some(ext))
}

/// The subprotocols the client offers (Sec-WebSocket-Protocol), in its
/// order.
pub(super) fn offered_subprotocols(vars: &[(VarName, Bytes)]) -> impl Iterator<Item = &[u8]> {
    vars.iter()
        .filter(|(n, _)| n.as_bytes() == b"HTTP_SEC_WEBSOCKET_PROTOCOL")
        .flat_map(|(_, v)| v.split(|&c| c == b','))
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

/// The scope of a WebSocket (`type: "websocket"`): the HTTP scope's
/// fields but the method, a `ws`/`wss` scheme, the subprotocols the client
/// offers, and the denial-response extension.
pub(super) fn websocket_scope<'py>(
    py: Python<'py>,
    k: &ScopeKeys,
    vars: &[(VarName, Bytes)],
    f: &Fields<'_>,
    state: &Py<PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = http_scope(py, k, vars, f, state, false, false)?;
    scope.set_item(&k.type_, "websocket")?;
    scope.set_item(&k.asgi, k.websocket_asgi_versions.bind(py).copy()?)?;
    scope.set_item(&k.scheme, if f.is_https() { "wss" } else { "ws" })?;
    scope.del_item(&k.method)?;
    let offered = offered_subprotocols(vars)
        .map(|p| text(py, p))
        .collect::<Vec<_>>();
    scope.set_item("subprotocols", PyList::new(py, offered)?)?;
    let extensions = PyDict::new(py);
    extensions.set_item("websocket.http.response", PyDict::new(py))?;
    if let Some(tls) = tls_extension(py, &f.tls)? {
        extensions.set_item("tls", tls)?;
    }
    scope.set_item(&k.extensions, extensions)?;
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::header_name;

    #[test]
    fn cgi_names_become_header_names() {
        assert_eq!(
            header_name(b"HTTP_X_FORWARDED_FOR").unwrap(),
            b"x-forwarded-for"
        );
        assert_eq!(header_name(b"CONTENT_TYPE").unwrap(), b"content-type");
        assert_eq!(header_name(b"HTTP_HOST").unwrap(), b"host");
        assert!(header_name(b"REQUEST_METHOD").is_none());
        assert!(header_name(b"PATH_INFO").is_none());
    }
}
