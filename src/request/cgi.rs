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
use super::handler::RepeatedHeader;
use super::vars::{Var, VarName};

/// A CONTENT_LENGTH value: digits, with blanks around them allowed;
/// anything else (empty, signed, too large) is no length at all.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(value).ok()?.trim();
    // u64's parser would take a leading "+": RFC 9110 has digits only.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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

/// Where in a variable list each name is: an array for the known names,
/// a short list for the others, and past [`OTHERS_LISTED`] of them a map.
struct SeenNames {
    known: [Option<u32>; Var::ALL.len()],
    others: Vec<(Bytes, u32)>,
    others_map: std::collections::HashMap<Bytes, u32>,
}

/// Other names looked for by a search of a list; more go in a map.
const OTHERS_LISTED: usize = 16;

impl SeenNames {
    fn new() -> SeenNames {
        SeenNames {
            known: [None; Var::ALL.len()],
            others: Vec::new(),
            others_map: std::collections::HashMap::new(),
        }
    }

    /// Where `name` already is; if nowhere, it is taken to go at `next`.
    fn position(&mut self, name: &VarName, next: usize) -> Option<usize> {
        let next = next as u32;
        let at = match name {
            VarName::Known(v) => {
                let slot = &mut self.known[*v as usize];
                let at = *slot;
                slot.get_or_insert(next);
                at
            }
            VarName::Other(n) if self.others.len() < OTHERS_LISTED => {
                let at = self.others.iter().find(|(o, _)| o == n).map(|(_, at)| *at);
                if at.is_none() {
                    self.others.push((n.clone(), next));
                }
                at
            }
            VarName::Other(n) => {
                if self.others_map.is_empty() {
                    self.others_map.extend(self.others.iter().cloned());
                }
                let at = self.others_map.get(n).copied();
                if at.is_none() {
                    self.others_map.insert(n.clone(), next);
                }
                at
            }
        };
        at.map(|at| at as usize)
    }
}

/// A request's variables, made clean by [`normalise`].
pub struct Normalised {
    pub vars: Vec<(VarName, Bytes)>,
    pub content_length: Option<u64>,
    /// CONTENT_LENGTH was given, not empty, and is no length (`-1`, `0x5`,
    /// past u64): where it frames the body (uwsgi, SCGI), the request
    /// cannot be read, and is refused as HTTP refuses it.
    pub bad_content_length: bool,
    pub is_head: bool,
    /// The headers given more than once, whose variables join them.
    pub repeated_headers: Vec<RepeatedHeader>,
}

/// What a web server in front sends (uwsgi, SCGI, FastCGI), turned into
/// clean CGI variables (protocols.md §7.2).
pub fn normalise(raw: Vec<(Bytes, Bytes)>, info: &ConnInfo, strip_script_name: bool) -> Normalised {
    let mut vars: Vec<(VarName, Bytes)> = Vec::with_capacity(raw.len() + 4);
    // Where each name already is, found in constant time: a request may
    // carry thousands of variables (up to --buffer-size), and a search of
    // the list for each took 73 ms for 9,000. Values merged are built once.
    let mut seen = SeenNames::new();
    let mut merged: std::collections::HashMap<usize, (Vec<u8>, Vec<Bytes>)> = Default::default();
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
        // Repeated headers (nginx 1.22 sends one per header line) are
        // merged. Another variable given twice (`include uwsgi_params;`,
        // then `uwsgi_param DOCUMENT_ROOT /x;`) takes the last value, as in
        // uWSGI and PHP; so does HTTP_HOST, which nginx refuses twice from
        // a client, so that a second one is a `uwsgi_param HTTP_HOST
        // $http_host` after the params file's own.
        match seen.position(&name, vars.len()) {
            Some(at)
                if !name.as_bytes().starts_with(b"HTTP_")
                    || name == VarName::Known(Var::HTTP_HOST) =>
            {
                vars[at].1 = v
            }
            Some(at) => {
                let sep: &[u8] = if name == VarName::Known(Var::HTTP_COOKIE) {
                    b"; "
                } else {
                    b", "
                };
                let (joined, values) = merged
                    .entry(at)
                    .or_insert_with(|| (vars[at].1.to_vec(), vec![vars[at].1.clone()]));
                joined.extend_from_slice(sep);
                joined.extend_from_slice(&v);
                // Cookies stay one field (an HTTP/2 client's crumbs,
                // which nginx passes one by one, are one header).
                if name != VarName::Known(Var::HTTP_COOKIE) {
                    values.push(v);
                }
            }
            None => vars.push((name, v)),
        }
    }
    let mut repeated_headers = Vec::new();
    for (at, (joined, values)) in merged {
        let joined = Bytes::from(joined);
        vars[at].1 = joined.clone();
        if values.len() > 1 {
            repeated_headers.push(RepeatedHeader {
                name: vars[at].0.clone(),
                joined,
                values,
            });
        }
    }
    // Empty optional vars are absent ones (CONTENT_LENGTH="" for GET), also
    // when the empty one came last, overriding the params file's value
    // (`fastcgi_param SCRIPT_NAME "";` for an app at the root).
    vars.retain(|(k, v)| {
        !(v.is_empty()
            && matches!(
                k.as_bytes(),
                b"CONTENT_LENGTH"
                    | b"CONTENT_TYPE"
                    | b"HTTPS"
                    | b"REMOTE_USER"
                    | b"SERVER_NAME"
                    | b"SCRIPT_NAME"
            ))
    });
    let get = |vars: &[(VarName, Bytes)], v: Var| super::vars::var(vars, v).cloned();
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
    // nginx's fastcgi_params name the whole path as SCRIPT_NAME (with no
    // fastcgi_split_path_info), and a site may add a PATH_INFO of its own,
    // the end of that path (`location ~ ^/git(/.*)$` with
    // `fastcgi_param PATH_INFO $1;`, git-http-backend's site; `$uri`,
    // cgit's): the split is made there, SCRIPT_NAME the path before it.
    // (Joined as sent, the two doubled the path: PATH_INFO
    // `/repo.git/info/refs` under SCRIPT_NAME `/git/repo.git/info/refs`.)
    if let (Some(doc), Some(script), Some(info)) = (
        vars.iter()
            .find(|(k, _)| k.as_bytes() == b"DOCUMENT_URI")
            .map(|(_, v)| v.clone()),
        get(&vars, Var::SCRIPT_NAME),
        get(&vars, Var::PATH_INFO),
    ) && script == doc
        && info.starts_with(b"/")
        && let Some(before) = doc.strip_suffix(&info[..])
    {
        let before = doc.slice(..before.len());
        for (k, v) in &mut vars {
            if *k == VarName::Known(Var::SCRIPT_NAME) {
                *v = before.clone();
            }
        }
        if before.is_empty() {
            vars.retain(|(k, _)| *k != VarName::Known(Var::SCRIPT_NAME));
        }
    }
    // nginx's scgi_params send no PATH_INFO: take DOCUMENT_URI (decoded
    // already), else REQUEST_URI's path, percent-decoded; less SCRIPT_NAME.
    if get(&vars, Var::PATH_INFO).is_none() {
        let document_uri = vars
            .iter()
            .find(|(k, _)| k.as_bytes() == b"DOCUMENT_URI")
            .map(|(_, v)| v.clone());
        let from_request_uri = document_uri.is_none();
        let path = document_uri
            .or_else(|| {
                get(&vars, Var::REQUEST_URI).map(|uri| {
                    let path = uri.split(|&c| c == b'?').next().unwrap_or(&[]);
                    Bytes::from(percent_encoding::percent_decode(path).collect::<Vec<u8>>())
                })
            })
            // Neither (cgi-fcgi, a php-fpm health check): the path is
            // the script's own, as a no-split front end names it.
            .or_else(|| get(&vars, Var::SCRIPT_NAME))
            .unwrap_or_else(|| Bytes::from_static(b"/"));
        let script = get(&vars, Var::SCRIPT_NAME).unwrap_or_default();
        let path = if script == path {
            // nginx's fastcgi_params and Apache send SCRIPT_NAME = the whole
            // path: no split was made, so the app is mounted at the root.
            vars.retain(|(k, _)| *k != VarName::Known(Var::SCRIPT_NAME));
            path
        } else if from_request_uri && !script.is_empty() && script == normalized(&path)[..] {
            // The same, the front end having cleaned the path first
            // (Apache's and lighttpd's `//` and `..`): the path is theirs,
            // the one their access rules saw, not the raw one with it
            // again behind.
            vars.retain(|(k, _)| *k != VarName::Known(Var::SCRIPT_NAME));
            script
        } else if let Some(rest) = under_script_name(&path, &script) {
            rest
        } else {
            path
        };
        vars.push((VarName::Known(Var::PATH_INFO), path));
    }
    // modifier1 30 (and uWSGI's --manage-script-name): PATH_INFO arrives
    // with the SCRIPT_NAME prefix still on it.
    let script = get(&vars, Var::SCRIPT_NAME).unwrap_or_default();
    let path = get(&vars, Var::PATH_INFO).unwrap_or_default();
    if strip_script_name && let Some(rest) = under_script_name(&path, &script) {
        for (k, v) in &mut vars {
            if *k == VarName::Known(Var::PATH_INFO) {
                *v = rest.clone();
            }
        }
    }
    // PEP 3333: SCRIPT_NAME is "" at the root, never "/".
    vars.retain(|(k, v)| !(*k == VarName::Known(Var::SCRIPT_NAME) && &v[..] == b"/"));
    let given = get(&vars, Var::CONTENT_LENGTH);
    let content_length = given.as_ref().and_then(|v| content_length(v));
    // (nginx sends an empty one with a GET.)
    let bad_content_length =
        content_length.is_none() && given.is_some_and(|v| !v.trim_ascii().is_empty());
    if content_length.is_none() {
        vars.retain(|(k, _)| *k != VarName::Known(Var::CONTENT_LENGTH));
    }
    let is_head = get(&vars, Var::REQUEST_METHOD).is_some_and(|m| &m[..] == b"HEAD");
    Normalised {
        vars,
        content_length,
        bad_content_length,
        is_head,
        repeated_headers,
    }
}

/// What of `path` follows `script` (a SCRIPT_NAME), if the path is under
/// it: the whole of a segment, not a prefix of one (`/app` is not over
/// `/appx/y`), so that PATH_INFO starts with `/` or is empty.
fn under_script_name(path: &Bytes, script: &[u8]) -> Option<Bytes> {
    let script = script.strip_suffix(b"/").unwrap_or(script);
    if script.is_empty() || !path.starts_with(script) {
        return None;
    }
    let rest = &path[script.len()..];
    (rest.is_empty() || rest[0] == b'/').then(|| path.slice(script.len()..))
}

/// Where a script is, in the variables that place it.
pub struct ScriptPlace<'a> {
    /// The URL path that names the script.
    pub script_name: &'a [u8],
    /// What follows it.
    pub path_info: &'a [u8],
    /// The script's file, when the server knows it.
    pub script_filename: Option<&'a [u8]>,
    /// The directory the script is under.
    pub document_root: Option<&'a [u8]>,
    /// The SCRIPT_FILENAME the web server sent, when it named the script
    /// run (through a link, as nginx's `root /srv/current` names it).
    pub sent_filename: Option<&'a [u8]>,
}

/// The variables a CGI script or a FastCGI app is given (RFC 3875 §4.1):
/// the request's, less those this sets, and `Proxy:` as `HTTP_PROXY`
/// (httpoxy); then GATEWAY_INTERFACE, SERVER_SOFTWARE (unless a web server
/// in front named itself), REDIRECT_STATUS (php-cgi's cgi.force_redirect
/// wants it), the script's place (PATH_TRANSLATED only with a PATH_INFO),
/// CONTENT_LENGTH, and REQUEST_URI if the request had none. Names with `=`
/// or NUL and values with NUL, which no environment can hold, are left out.
pub fn script_variables(
    vars: &[(VarName, Bytes)],
    place: &ScriptPlace<'_>,
    content_length: Option<u64>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    const SET_HERE: &[&[u8]] = &[
        b"SCRIPT_NAME",
        b"PATH_INFO",
        b"PATH_TRANSLATED",
        b"SCRIPT_FILENAME",
        b"DOCUMENT_ROOT",
        b"GATEWAY_INTERFACE",
        b"REDIRECT_STATUS",
        b"CONTENT_LENGTH",
        b"HTTP_PROXY",
        // The framing is the server's: a body it read chunked has a
        // CONTENT_LENGTH now, and `Transfer-Encoding: chunked` beside it
        // makes werkzeug read no body at all.
        b"HTTP_TRANSFER_ENCODING",
        b"HTTP_CONTENT_LENGTH",
        b"HTTP_CONTENT_TYPE",
    ];
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = vars
        .iter()
        .filter(|(k, v)| {
            let k = k.as_bytes();
            !k.is_empty()
                && !k.contains(&b'=')
                && !k.contains(&0)
                && !v.contains(&0)
                && !SET_HERE.contains(&k)
        })
        .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
        .collect();
    let mut set = |k: &str, v: &[u8]| out.push((k.as_bytes().to_vec(), v.to_vec()));
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    if !vars.iter().any(|(k, _)| k.as_bytes() == b"SERVER_SOFTWARE") {
        set(
            "SERVER_SOFTWARE",
            concat!("oxgate/", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
    }
    set("REDIRECT_STATUS", b"200");
    set("SCRIPT_NAME", place.script_name);
    set("PATH_INFO", place.path_info);
    if let Some(file) = place.script_filename {
        set("SCRIPT_FILENAME", file);
    }
    // The web server's DOCUMENT_ROOT, when it sent one and the script is
    // under it, as fcgiwrap and php-fpm pass it on; else the script's
    // directory (nginx's uwsgi_params send its default root with every
    // request, which says nothing of a script elsewhere).
    // (Under it as the server named the script, too: a root reached
    // through a link, `root /srv/current`, holds the script by that name.)
    let sent_filename = place.sent_filename;
    let given_root = super::vars::var(vars, Var::DOCUMENT_ROOT).filter(|r| {
        let root = r.strip_suffix(b"/").unwrap_or(r);
        let holds = |f: &[u8]| {
            f.strip_prefix(root)
                .is_some_and(|rest| rest.starts_with(b"/"))
        };
        !root.is_empty()
            && !r.contains(&0)
            && (place.script_filename.is_some_and(holds) || sent_filename.is_some_and(holds))
    });
    if let Some(root) = given_root.map(|r| &r[..]).or(place.document_root) {
        set("DOCUMENT_ROOT", root);
        if !place.path_info.is_empty() {
            set("PATH_TRANSLATED", &[root, place.path_info].concat());
        }
    }
    if let Some(n) = content_length {
        set("CONTENT_LENGTH", n.to_string().as_bytes());
    }
    if super::vars::var(vars, Var::REQUEST_URI).is_none() {
        let mut uri = [place.script_name, place.path_info].concat();
        if let Some(q) = super::vars::var(vars, Var::QUERY_STRING).filter(|q| !q.is_empty()) {
            uri.push(b'?');
            uri.extend_from_slice(q);
        }
        set("REQUEST_URI", &uri);
    }
    out
}

/// What `normalise` promises of its output, whatever it was given: the
/// property tests and the fuzz target check it. `Err` says what was broken.
#[doc(hidden)]
pub fn check_normalised(
    vars: &[(VarName, Bytes)],
    content_length: Option<u64>,
    is_head: bool,
) -> Result<(), String> {
    let get = |v: Var| super::vars::var(vars, v).cloned();
    for (i, (name, _)) in vars.iter().enumerate() {
        if vars[..i].iter().any(|(n, _)| n == name) {
            return Err(format!(
                "{:?} twice",
                String::from_utf8_lossy(name.as_bytes())
            ));
        }
        if matches!(
            name.as_bytes(),
            b"HTTP_CONTENT_LENGTH" | b"HTTP_CONTENT_TYPE" | b"HTTP_TRANSFER_ENCODING"
        ) {
            return Err("a framing header was passed on".into());
        }
    }
    if get(Var::SERVER_NAME).is_none_or(|n| n.is_empty()) {
        return Err("SERVER_NAME empty or missing".into());
    }
    for v in [
        Var::SERVER_PORT,
        Var::REQUEST_METHOD,
        Var::SERVER_PROTOCOL,
        Var::QUERY_STRING,
        Var::PATH_INFO,
    ] {
        if get(v).is_none() {
            return Err(format!("{} missing", v.name()));
        }
    }
    if get(Var::SCRIPT_NAME).is_some_and(|s| &s[..] == b"/") {
        return Err("SCRIPT_NAME is \"/\"".into());
    }
    match (get(Var::CONTENT_LENGTH), content_length) {
        (None, None) => {}
        (Some(v), Some(n)) if self::content_length(&v) == Some(n) => {}
        (v, n) => return Err(format!("CONTENT_LENGTH {v:?} but length {n:?}")),
    }
    if is_head != get(Var::REQUEST_METHOD).is_some_and(|m| &m[..] == b"HEAD") {
        return Err("is_head disagrees with REQUEST_METHOD".into());
    }
    Ok(())
}

/// A path with its empty and `.` segments gone and each `..` taking the
/// segment before it, as web servers clean a path before they map it
/// (`/a//b/../c/.` is `/a/c/`).
pub fn normalized(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|&c| c == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    let trailing = path.ends_with(b"/") || path.ends_with(b"/.") || path.ends_with(b"/..");
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var<'v>(vars: &'v [(VarName, Bytes)], name: &VarName) -> Option<&'v Bytes> {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// normalise's merging, as the list search it replaced did it.
    fn merged_by_search(raw: &[(Bytes, Bytes)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in raw {
            match out.iter_mut().find(|(n, _)| n == k) {
                Some((_, prev)) if k.starts_with(b"HTTP_") => {
                    let sep: &[u8] = if &k[..] == b"HTTP_COOKIE" {
                        b"; "
                    } else {
                        b", "
                    };
                    prev.extend_from_slice(sep);
                    prev.extend_from_slice(v);
                }
                Some((_, prev)) => *prev = v.to_vec(),
                None => out.push((k.to_vec(), v.to_vec())),
            }
        }
        out
    }

    #[test]
    fn thousands_of_variables_and_repeats_merge_as_a_search_would() {
        // Past the short list of other names (a map then), known names,
        // repeated headers and cookies, and other names given again.
        let mut raw = Vec::new();
        let mut push = |k: String, v: String| raw.push((Bytes::from(k), Bytes::from(v)));
        for round in 0..3 {
            for i in 0..3000 {
                push(format!("X_{i}"), format!("{round}"));
            }
            push("HTTP_X_A".into(), format!("a{round}"));
            push("HTTP_COOKIE".into(), format!("c={round}"));
            push("DOCUMENT_ROOT".into(), format!("/r{round}"));
            push("HTTP_Y_OTHER".into(), format!("y{round}"));
        }
        let want = merged_by_search(&raw);
        let norm = normalise(raw, &ConnInfo::new(None, None), false);
        // Each repeated header's values, apart, in order, beside the
        // value they were joined into; names not headers are not listed.
        let mut repeated: Vec<(Vec<u8>, Vec<Bytes>)> = norm
            .repeated_headers
            .iter()
            .map(|r| {
                assert_eq!(var(&norm.vars, &r.name), Some(&r.joined));
                (r.name.as_bytes().to_vec(), r.values.clone())
            })
            .collect();
        repeated.sort();
        let rounds = |p: &str| (0..3).map(|r| Bytes::from(format!("{p}{r}"))).collect();
        assert_eq!(
            repeated,
            [
                (b"HTTP_X_A".to_vec(), rounds("a")),
                (b"HTTP_Y_OTHER".to_vec(), rounds("y")),
            ]
        );
        let vars = norm.vars;
        let got: Vec<(Vec<u8>, Vec<u8>)> = vars
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .take(want.len())
            .collect();
        assert_eq!(got, want);
        let find = |k: &str| {
            want.iter()
                .find(|(n, _)| n == k.as_bytes())
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(find("HTTP_X_A"), b"a0, a1, a2");
        assert_eq!(find("HTTP_COOKIE"), b"c=0; c=1; c=2");
        assert_eq!(find("DOCUMENT_ROOT"), b"/r2");
        assert_eq!(find("X_2999"), b"2");
    }

    #[test]
    fn script_variables_place_the_script_and_drop_what_they_set() {
        let vars = crate::request::test_vars(&[
            ("REQUEST_METHOD", "GET"),
            ("QUERY_STRING", "a=1"),
            ("SCRIPT_NAME", "/wrong"),
            ("CONTENT_LENGTH", "99"),
            ("HTTP_PROXY", "http://evil"),
            ("HTTP_X_A", "v"),
            ("SERVER_SOFTWARE", "nginx/1.22.1"),
        ]);
        let place = ScriptPlace {
            script_name: b"/cgi-bin/a.cgi",
            path_info: b"/x",
            script_filename: Some(b"/srv/cgi/a.cgi"),
            document_root: Some(b"/srv/cgi"),
            sent_filename: None,
        };
        let out = script_variables(&vars, &place, Some(5));
        let get = |k: &str| {
            let all: Vec<_> = out.iter().filter(|(n, _)| n == k.as_bytes()).collect();
            assert!(all.len() <= 1, "{k} twice");
            all.first()
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(get("SCRIPT_NAME").as_deref(), Some("/cgi-bin/a.cgi"));
        assert_eq!(get("PATH_INFO").as_deref(), Some("/x"));
        assert_eq!(get("PATH_TRANSLATED").as_deref(), Some("/srv/cgi/x"));
        assert_eq!(get("CONTENT_LENGTH").as_deref(), Some("5"));
        assert_eq!(get("REQUEST_URI").as_deref(), Some("/cgi-bin/a.cgi/x?a=1"));
        assert_eq!(get("SERVER_SOFTWARE").as_deref(), Some("nginx/1.22.1"));
        assert_eq!(get("GATEWAY_INTERFACE").as_deref(), Some("CGI/1.1"));
        assert_eq!(get("HTTP_X_A").as_deref(), Some("v"));
        assert_eq!(get("HTTP_PROXY"), None);
        // No PATH_INFO: no PATH_TRANSLATED (RFC 3875 4.1.6).
        let bare = ScriptPlace {
            path_info: b"",
            ..place
        };
        let out = script_variables(&vars, &bare, None);
        assert!(
            !out.iter()
                .any(|(k, _)| k == b"PATH_TRANSLATED" || k == b"CONTENT_LENGTH")
        );
    }

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

    fn info() -> ConnInfo {
        ConnInfo::new(Some("127.0.0.1:9000".parse().unwrap()), None)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        list.iter()
            .map(|(k, v)| (Bytes::from(k.to_string()), Bytes::from(v.to_string())))
            .collect()
    }

    fn value(vars: &[(VarName, Bytes)], name: &str) -> Option<String> {
        vars.iter()
            .find(|(k, _)| k.as_bytes() == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn nginx_fastcgi_params_mount_the_app_at_the_root() {
        // fastcgi_params: SCRIPT_NAME is the whole path, no PATH_INFO.
        let Normalised {
            vars,
            content_length: len,
            is_head: head,
            ..
        } = normalise(
            pairs(&[
                ("REQUEST_METHOD", "HEAD"),
                ("SCRIPT_NAME", "/a/b"),
                ("DOCUMENT_URI", "/a/b"),
                ("REQUEST_URI", "/a/b?x=1"),
                ("CONTENT_LENGTH", ""),
                ("HTTP_HOST", "[::1]:8080"),
            ]),
            &info(),
            false,
        );
        assert_eq!(value(&vars, "PATH_INFO").as_deref(), Some("/a/b"));
        assert_eq!(value(&vars, "SCRIPT_NAME"), None);
        assert_eq!(value(&vars, "SERVER_NAME").as_deref(), Some("[::1]"));
        assert_eq!(value(&vars, "SERVER_PORT").as_deref(), Some("9000"));
        assert_eq!(len, None);
        assert!(head);
        check_normalised(&vars, len, head).unwrap();
    }

    #[test]
    fn a_param_set_after_the_params_file_overrides_it_even_empty() {
        let normalised = |extra: &[(&str, &str)], strip| {
            let mut list = vec![
                ("SCRIPT_NAME", "/a/b"),
                ("HTTP_HOST", "example.com"),
                ("CONTENT_TYPE", "text/plain"),
            ];
            list.extend_from_slice(extra);
            normalise(pairs(&list), &info(), strip).vars
        };
        // fastcgi_param PATH_INFO $fastcgi_script_name; SCRIPT_NAME "";
        // HTTP_HOST $http_host; CONTENT_TYPE "".
        let vars = normalised(
            &[
                ("PATH_INFO", "/a/b"),
                ("SCRIPT_NAME", ""),
                ("HTTP_HOST", "example.com:8443"),
                ("CONTENT_TYPE", ""),
            ],
            false,
        );
        assert_eq!(value(&vars, "SCRIPT_NAME"), None);
        assert_eq!(value(&vars, "PATH_INFO").as_deref(), Some("/a/b"));
        assert_eq!(
            value(&vars, "HTTP_HOST").as_deref(),
            Some("example.com:8443")
        );
        assert_eq!(value(&vars, "SERVER_NAME").as_deref(), Some("example.com"));
        assert_eq!(value(&vars, "CONTENT_TYPE"), None);
        // Other headers repeated are still joined.
        let vars = normalised(&[("HTTP_X_A", "1"), ("HTTP_X_A", "2")], false);
        assert_eq!(value(&vars, "HTTP_X_A").as_deref(), Some("1, 2"));
    }

    #[test]
    fn a_script_name_is_over_whole_segments_only() {
        let strip = |script: &str, path: &str| {
            let vars = normalise(
                pairs(&[("SCRIPT_NAME", script), ("PATH_INFO", path)]),
                &info(),
                true,
            )
            .vars;
            value(&vars, "PATH_INFO").unwrap()
        };
        assert_eq!(strip("/app", "/app/x"), "/x");
        assert_eq!(strip("/app", "/app"), "");
        assert_eq!(strip("/app/", "/app/x"), "/x");
        assert_eq!(strip("/app", "/appx/y"), "/appx/y");
        assert_eq!(strip("/", "/x"), "/x");
    }

    #[test]
    fn a_path_apache_cleaned_is_taken_as_it_cleaned_it() {
        // mod_proxy_fcgi and _scgi: SCRIPT_NAME is the whole path, cleaned
        // (`//` merged, `..` resolved); REQUEST_URI as the client sent it.
        for (uri, script) in [
            ("/ox/f//double//slash", "/ox/f/double/slash"),
            ("/ox/s/dot/../x?q=1", "/ox/s/x"),
            ("/admin/%2e%2e/public", "/public"),
            ("/a/.", "/a/"),
        ] {
            let norm = normalise(
                pairs(&[("SCRIPT_NAME", script), ("REQUEST_URI", uri)]),
                &info(),
                false,
            );
            assert_eq!(
                value(&norm.vars, "PATH_INFO").as_deref(),
                Some(script),
                "{uri}"
            );
            assert_eq!(value(&norm.vars, "SCRIPT_NAME"), None, "{uri}");
        }
        // A SCRIPT_NAME that is no cleaning of the path is a mount, kept.
        let norm = normalise(
            pairs(&[("SCRIPT_NAME", "/app"), ("REQUEST_URI", "/other/x")]),
            &info(),
            false,
        );
        assert_eq!(value(&norm.vars, "PATH_INFO").as_deref(), Some("/other/x"));
        assert_eq!(value(&norm.vars, "SCRIPT_NAME").as_deref(), Some("/app"));
    }

    #[test]
    fn a_path_info_of_the_sites_own_beside_a_whole_path_script_name_is_not_joined_to_it() {
        // What the web server sent; PATH_INFO and SCRIPT_NAME after.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            // git-http-backend's nginx site: fastcgi_params, then PATH_INFO $1.
            (
                &[
                    ("SCRIPT_NAME", "/git/repo.git/info/refs"),
                    ("DOCUMENT_URI", "/git/repo.git/info/refs"),
                    (
                        "REQUEST_URI",
                        "/git/repo.git/info/refs?service=git-upload-pack",
                    ),
                    ("PATH_INFO", "/repo.git/info/refs"),
                ],
                "/repo.git/info/refs",
                Some("/git"),
            ),
            // cgit's: PATH_INFO $uri, the whole path.
            (
                &[
                    ("SCRIPT_NAME", "/repo/log/"),
                    ("DOCUMENT_URI", "/repo/log/"),
                    ("PATH_INFO", "/repo/log/"),
                ],
                "/repo/log/",
                None,
            ),
            // A PATH_INFO that is not the path's end is left as sent.
            (
                &[
                    ("SCRIPT_NAME", "/a/b"),
                    ("DOCUMENT_URI", "/a/b"),
                    ("PATH_INFO", "/x"),
                ],
                "/x",
                Some("/a/b"),
            ),
            // A split nginx made itself (fastcgi_split_path_info) stays.
            (
                &[
                    ("SCRIPT_NAME", "/index.php"),
                    ("DOCUMENT_URI", "/index.php/a/b"),
                    ("PATH_INFO", "/a/b"),
                ],
                "/a/b",
                Some("/index.php"),
            ),
        ];
        for (sent, path_info, script_name) in cases {
            let norm = normalise(pairs(sent), &info(), false);
            assert_eq!(
                value(&norm.vars, "PATH_INFO").as_deref(),
                Some(*path_info),
                "{sent:?}"
            );
            assert_eq!(
                value(&norm.vars, "SCRIPT_NAME").as_deref(),
                *script_name,
                "{sent:?}"
            );
        }
    }

    #[test]
    fn a_request_that_names_only_its_script_has_the_scripts_path() {
        // cgi-fcgi's php-fpm health check: no REQUEST_URI, no DOCUMENT_URI.
        let norm = normalise(
            pairs(&[
                ("SCRIPT_NAME", "/fpm-ping"),
                ("SCRIPT_FILENAME", "/fpm-ping"),
            ]),
            &info(),
            false,
        );
        assert_eq!(value(&norm.vars, "PATH_INFO").as_deref(), Some("/fpm-ping"));
        assert_eq!(value(&norm.vars, "SCRIPT_NAME"), None);
        let norm = normalise(pairs(&[("REQUEST_METHOD", "GET")]), &info(), false);
        assert_eq!(value(&norm.vars, "PATH_INFO").as_deref(), Some("/"));
    }

    #[test]
    fn normalized_paths_have_no_empty_dot_or_dot_dot_segment() {
        assert_eq!(normalized(b"/a//b/../c/."), b"/a/c/");
        assert_eq!(normalized(b"/../../x"), b"/x");
        assert_eq!(normalized(b""), b"/");
        assert_eq!(normalized(b"/a/b/.."), b"/a/");
    }

    #[test]
    fn scgi_params_take_the_path_from_the_uri_less_the_script() {
        let Normalised {
            vars,
            content_length: len,
            repeated_headers,
            ..
        } = normalise(
            pairs(&[
                ("SCRIPT_NAME", "/app"),
                ("REQUEST_URI", "/app/x%20y?q"),
                ("CONTENT_LENGTH", " 12 "),
                ("HTTP_CONTENT_LENGTH", "12"),
                ("HTTP_COOKIE", "a=1"),
                ("HTTP_COOKIE", "b=2"),
                ("HTTP_X_DUP", "a"),
                ("HTTP_X_DUP", "b, c"),
            ]),
            &info(),
            false,
        );
        assert_eq!(value(&vars, "PATH_INFO").as_deref(), Some("/x y"));
        assert_eq!(value(&vars, "SCRIPT_NAME").as_deref(), Some("/app"));
        assert_eq!(value(&vars, "HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
        // The values apart, for ASGI's headers; but a cookie's crumbs,
        // which stay one field.
        let [dup] = &repeated_headers[..] else {
            panic!("{} repeated", repeated_headers.len())
        };
        assert_eq!(dup.name.as_bytes(), b"HTTP_X_DUP");
        assert_eq!(&dup.joined[..], b"a, b, c");
        assert_eq!(dup.values, [&b"a"[..], b"b, c"]);
        assert_eq!(value(&vars, "HTTP_CONTENT_LENGTH"), None);
        assert_eq!(value(&vars, "SERVER_NAME").as_deref(), Some("127.0.0.1"));
        assert_eq!(len, Some(12));
        check_normalised(&vars, len, false).unwrap();
    }

    #[test]
    fn a_content_length_that_is_no_length_is_told_from_none() {
        for (given, bad) in [
            ("", false),
            ("12", false),
            (" 7 ", false),
            ("-1", true),
            ("+5", true),
            ("0x5", true),
            ("99999999999999999999999", true),
        ] {
            let n = normalise(pairs(&[("CONTENT_LENGTH", given)]), &info(), false);
            assert_eq!(n.bad_content_length, bad, "{given:?}");
            assert_eq!(n.content_length.is_some(), !bad && !given.is_empty());
        }
        assert!(!normalise(pairs(&[]), &info(), false).bad_content_length);
    }

    #[test]
    fn modifier1_30_strips_script_name_from_path_info() {
        let Normalised { vars, .. } = normalise(
            pairs(&[("SCRIPT_NAME", "/app"), ("PATH_INFO", "/app/page")]),
            &info(),
            true,
        );
        assert_eq!(value(&vars, "PATH_INFO").as_deref(), Some("/page"));
    }

    #[test]
    fn content_lengths() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b" 42\t"), Some(42));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1e3",
            b"18446744073709551616",
            b"\xff",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_scheme_comes_from_any_of_three_variables() {
        let known = |v: Var| VarName::Known(v);
        assert!(says_https(&known(Var::HTTPS), b"on"));
        assert!(says_https(&known(Var::HTTPS), b"1"));
        assert!(says_https(&known(Var::REQUEST_SCHEME), b"HTTPS"));
        let other = VarName::Other(Bytes::from_static(b"UWSGI_SCHEME"));
        assert!(says_https(&other, b"https"));
        assert!(!says_https(&known(Var::HTTPS), b"off"));
        assert!(!says_https(&known(Var::REQUEST_SCHEME), b"http"));
    }

    use proptest::prelude::*;

    fn any_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        let name = prop_oneof![
            Just(b"REQUEST_METHOD".to_vec()),
            Just(b"SCRIPT_NAME".to_vec()),
            Just(b"PATH_INFO".to_vec()),
            Just(b"DOCUMENT_URI".to_vec()),
            Just(b"REQUEST_URI".to_vec()),
            Just(b"CONTENT_LENGTH".to_vec()),
            Just(b"SERVER_NAME".to_vec()),
            Just(b"HTTP_HOST".to_vec()),
            Just(b"HTTP_COOKIE".to_vec()),
            Just(b"HTTP_CONTENT_LENGTH".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        let value = prop_oneof![
            Just(b"".to_vec()),
            Just(b"/".to_vec()),
            Just(b"HEAD".to_vec()),
            Just(b"/a/b".to_vec()),
            Just(b"[::1]:80".to_vec()),
            "[0-9 ]{0,4}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..16),
        ];
        proptest::collection::vec((name, value), 0..12)
    }

    proptest! {
        #[test]
        fn a_normalized_path_is_clean_and_normalizes_to_itself(path in "[/.a]{0,24}") {
            let n = normalized(path.as_bytes());
            prop_assert!(n.starts_with(b"/"));
            let text = String::from_utf8(n.clone()).unwrap();
            prop_assert!(!text.contains("//") && !text.contains("/./") && !text.contains("/../"), "{}", text);
            prop_assert_eq!(normalized(&n), n);
        }

        #[test]
        fn normalised_variables_keep_their_promises(raw in any_pairs(), strip in any::<bool>()) {
            let raw = raw.into_iter().map(|(k, v)| (Bytes::from(k), Bytes::from(v))).collect();
            let Normalised {
                vars,
                content_length: len,
                is_head: head,
                ..
            } = normalise(raw, &info(), strip);
            if let Err(e) = check_normalised(&vars, len, head) {
                return Err(TestCaseError::fail(e));
            }
        }

        #[test]
        fn host_splitting_loses_nothing(host in proptest::collection::vec(any::<u8>(), 0..24)) {
            let (name, port) = split_host(&host);
            let mut joined = name.to_vec();
            if let Some(p) = port {
                joined.push(b':');
                joined.extend_from_slice(p);
            }
            prop_assert_eq!(joined, host);
        }

        #[test]
        fn header_names_become_cgi_names_of_one_form(name in "[a-zA-Z0-9-]{1,30}") {
            let lower = name.to_ascii_lowercase();
            let var = header_var(&lower);
            let bytes = var.as_bytes();
            prop_assert!(bytes.starts_with(b"HTTP_"));
            prop_assert!(!bytes.contains(&b'-'));
            prop_assert_eq!(bytes.len(), 5 + name.len());
            prop_assert!(!bytes.iter().any(u8::is_ascii_lowercase));
        }
    }
}
