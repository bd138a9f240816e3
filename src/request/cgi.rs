//! The CGI/1.1 variable rules every front end follows, in one place: pure
//! functions over bytes, with no I/O (fuzzed by `fuzz/fuzz_targets/cgi.rs`).
//!
//! * The HTTP front end builds variables from a parsed request: header
//!   names ([`header_var`]), Host splitting ([`split_host`]),
//!   CONTENT_LENGTH ([`content_length`]).
//! * The gateway front ends get variables from a web server and clean them
//!   up ([`normalise`]): the quirks of nginx, Apache and lighttpd.
//! * Every handler reads the scheme the same way ([`says_https`]).

use bytes::Bytes;

use super::conn::ConnInfo;
use super::vars::{Var, VarName};

/// A CONTENT_LENGTH value: digits, with blanks around them allowed;
/// anything else (empty, signed, too large) is no length at all.
pub fn content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse::<u64>().ok()
}

/// Whether this variable says the request came over TLS to the front end
/// (protocols.md §7.2): `HTTPS=on|1`, `REQUEST_SCHEME=https`, or nginx's
/// `uwsgi_param UWSGI_SCHEME $scheme`.
pub fn says_https(name: &VarName, value: &[u8]) -> bool {
    match name {
        VarName::Known(Var::REQUEST_SCHEME) => value.eq_ignore_ascii_case(b"https"),
        VarName::Known(Var::HTTPS) => value.eq_ignore_ascii_case(b"on") || value == b"1",
        VarName::Other(n) if &n[..] == b"UWSGI_SCHEME" => value.eq_ignore_ascii_case(b"https"),
        _ => false,
    }
}

/// The CGI name of a request header: HTTP_ + upper case, `-` as `_`.
pub fn header_var(name: &str) -> VarName {
    let known = match name {
        "host" => Var::HTTP_HOST,
        "user-agent" => Var::HTTP_USER_AGENT,
        "accept" => Var::HTTP_ACCEPT,
        "accept-language" => Var::HTTP_ACCEPT_LANGUAGE,
        "accept-encoding" => Var::HTTP_ACCEPT_ENCODING,
        "cookie" => Var::HTTP_COOKIE,
        "connection" => Var::HTTP_CONNECTION,
        "referer" => Var::HTTP_REFERER,
        "cache-control" => Var::HTTP_CACHE_CONTROL,
        "origin" => Var::HTTP_ORIGIN,
        "authorization" => Var::HTTP_AUTHORIZATION,
        "x-forwarded-for" => Var::HTTP_X_FORWARDED_FOR,
        "x-forwarded-proto" => Var::HTTP_X_FORWARDED_PROTO,
        "x-real-ip" => Var::HTTP_X_REAL_IP,
        "if-none-match" => Var::HTTP_IF_NONE_MATCH,
        "if-modified-since" => Var::HTTP_IF_MODIFIED_SINCE,
        "pragma" => Var::HTTP_PRAGMA,
        "upgrade-insecure-requests" => Var::HTTP_UPGRADE_INSECURE_REQUESTS,
        "transfer-encoding" => Var::HTTP_TRANSFER_ENCODING,
        "expect" => Var::HTTP_EXPECT,
        "range" => Var::HTTP_RANGE,
        "dnt" => Var::HTTP_DNT,
        "sec-fetch-site" => Var::HTTP_SEC_FETCH_SITE,
        "sec-fetch-mode" => Var::HTTP_SEC_FETCH_MODE,
        "sec-fetch-dest" => Var::HTTP_SEC_FETCH_DEST,
        other => {
            let mut key = Vec::with_capacity(5 + other.len());
            key.extend_from_slice(b"HTTP_");
            key.extend(other.bytes().map(|c| match c {
                b'-' => b'_',
                c => c.to_ascii_uppercase(),
            }));
            return VarName::Other(Bytes::from(key));
        }
    };
    VarName::Known(known)
}

/// Splits a Host header (or an authority) into name and port:
/// "[::1]:8000", "example.com:8000", "example.com".
pub fn split_host(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    let colon = if host.first() == Some(&b'[') {
        host.iter()
            .position(|&c| c == b']')
            .and_then(|end| (host.get(end + 1) == Some(&b':')).then_some(end + 1))
    } else {
        host.iter().rposition(|&c| c == b':')
    };
    match colon {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

/// What a web server in front sends (uwsgi, SCGI, FastCGI), turned into
/// clean CGI variables (protocols.md §7.2): the request's variables, its
/// CONTENT_LENGTH, and whether it is a HEAD.
pub fn normalise(
    raw: Vec<(Bytes, Bytes)>,
    info: &ConnInfo,
    strip_script_name: bool,
) -> (Vec<(VarName, Bytes)>, Option<u64>, bool) {
    let mut vars: Vec<(VarName, Bytes)> = Vec::with_capacity(raw.len() + 4);
    for (k, v) in raw {
        let name = VarName::from_bytes(k);
        let bytes = name.as_bytes();
        // Framing is the front end's business. (UWSGI_* vars pass: only the
        // app host's --vhost acts on them, and loads code only then.)
        if matches!(
            bytes,
            b"HTTP_CONTENT_LENGTH"
                | b"HTTP_CONTENT_TYPE"
                | b"HTTP_TRANSFER_ENCODING"
                | b"HTTP_CONNECTION"
                | b"HTTP_KEEP_ALIVE"
        ) {
            continue;
        }
        // Empty optional vars are absent ones (CONTENT_LENGTH="" for GET).
        if v.is_empty()
            && matches!(
                bytes,
                b"CONTENT_LENGTH"
                    | b"CONTENT_TYPE"
                    | b"HTTPS"
                    | b"REMOTE_USER"
                    | b"SERVER_NAME"
                    | b"SCRIPT_NAME"
            )
        {
            continue;
        }
        // Repeated keys (nginx 1.22 sends one per header line) are merged.
        if let Some((_, prev)) = vars.iter_mut().find(|(n, _)| *n == name) {
            let sep: &[u8] = if name == VarName::Known(Var::HTTP_COOKIE) {
                b"; "
            } else {
                b", "
            };
            let mut joined = prev.to_vec();
            joined.extend_from_slice(sep);
            joined.extend_from_slice(&v);
            *prev = Bytes::from(joined);
            continue;
        }
        vars.push((name, v));
    }
    let get = |vars: &[(VarName, Bytes)], v: Var| {
        vars.iter()
            .find(|(k, _)| *k == VarName::Known(v))
            .map(|(_, b)| b.clone())
    };
    // SERVER_NAME: never empty (PEP 3333): Host's name, then the socket.
    if get(&vars, Var::SERVER_NAME).is_none() {
        let name = get(&vars, Var::HTTP_HOST)
            .map(|h| {
                let name_len = split_host(&h).0.len();
                h.slice(..name_len)
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| info.local_name());
        vars.push((VarName::Known(Var::SERVER_NAME), name));
    }
    if get(&vars, Var::SERVER_PORT).is_none() {
        vars.push((VarName::Known(Var::SERVER_PORT), info.local_port()));
    }
    if get(&vars, Var::REQUEST_METHOD).is_none() {
        vars.push((
            VarName::Known(Var::REQUEST_METHOD),
            Bytes::from_static(b"GET"),
        ));
    }
    if get(&vars, Var::SERVER_PROTOCOL).is_none() {
        vars.push((
            VarName::Known(Var::SERVER_PROTOCOL),
            Bytes::from_static(b"HTTP/1.1"),
        ));
    }
    if get(&vars, Var::QUERY_STRING).is_none() {
        vars.push((VarName::Known(Var::QUERY_STRING), Bytes::new()));
    }
    // nginx's scgi_params send no PATH_INFO: take DOCUMENT_URI (decoded
    // already), else REQUEST_URI's path, percent-decoded; less SCRIPT_NAME.
    if get(&vars, Var::PATH_INFO).is_none() {
        let path = vars
            .iter()
            .find(|(k, _)| k.as_bytes() == b"DOCUMENT_URI")
            .map(|(_, v)| v.clone())
            .or_else(|| {
                get(&vars, Var::REQUEST_URI).map(|uri| {
                    let path = uri.split(|&c| c == b'?').next().unwrap_or(&[]);
                    Bytes::from(percent_encoding::percent_decode(path).collect::<Vec<u8>>())
                })
            })
            .unwrap_or_else(|| Bytes::from_static(b"/"));
        let script = get(&vars, Var::SCRIPT_NAME).unwrap_or_default();
        let path = if script == path {
            // nginx's fastcgi_params and Apache send SCRIPT_NAME = the whole
            // path: no split was made, so the app is mounted at the root.
            vars.retain(|(k, _)| *k != VarName::Known(Var::SCRIPT_NAME));
            path
        } else if !script.is_empty() && path.starts_with(&script) {
            path.slice(script.len()..)
        } else {
            path
        };
        vars.push((VarName::Known(Var::PATH_INFO), path));
    }
    // modifier1 30 (and uWSGI's --manage-script-name): PATH_INFO arrives
    // with the SCRIPT_NAME prefix still on it.
    let script = get(&vars, Var::SCRIPT_NAME).unwrap_or_default();
    let path = get(&vars, Var::PATH_INFO).unwrap_or_default();
    if strip_script_name && !script.is_empty() && path.starts_with(&script) {
        let rest = path.slice(script.len()..);
        for (k, v) in &mut vars {
            if *k == VarName::Known(Var::PATH_INFO) {
                *v = rest.clone();
            }
        }
    }
    // PEP 3333: SCRIPT_NAME is "" at the root, never "/".
    vars.retain(|(k, v)| !(*k == VarName::Known(Var::SCRIPT_NAME) && &v[..] == b"/"));
    let content_length = get(&vars, Var::CONTENT_LENGTH).and_then(|v| content_length(&v));
    if content_length.is_none() {
        vars.retain(|(k, _)| *k != VarName::Known(Var::CONTENT_LENGTH));
    }
    let is_head = get(&vars, Var::REQUEST_METHOD).is_some_and(|m| &m[..] == b"HEAD");
    (vars, content_length, is_head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_splitting() {
        assert_eq!(
            split_host(b"example.com:8080"),
            (&b"example.com"[..], Some(&b"8080"[..]))
        );
        assert_eq!(split_host(b"example.com"), (&b"example.com"[..], None));
        assert_eq!(
            split_host(b"[::1]:8000"),
            (&b"[::1]"[..], Some(&b"8000"[..]))
        );
        assert_eq!(split_host(b"[::1]"), (&b"[::1]"[..], None));
    }

    #[test]
    fn header_names_become_cgi_names() {
        assert_eq!(header_var("host"), VarName::Known(Var::HTTP_HOST));
        assert_eq!(
            header_var("x-custom-thing"),
            VarName::Other(Bytes::from_static(b"HTTP_X_CUSTOM_THING"))
        );
    }
}
