//! The protocol-neutral response.

use bytes::Bytes;

use super::body::BodyStream;
use super::vars::{Var, VarName};

/// The size of a response head as written on the wire ("HTTP/1.1 200 OK\r\n",
/// the headers, the blank line).
pub fn head_size(status: u16, reason: Option<&str>, headers: &[(Bytes, Bytes)]) -> u64 {
    let reason = reason.map_or_else(|| reason_phrase(status).len(), str::len);
    let line = "HTTP/1.1 200 ".len() + reason + 2;
    let fields: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    (line + fields + 2) as u64
}

pub fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// A reason phrase's bytes on the wire: each character's latin-1 byte (PEP
/// 3333's status is latin-1; a reason with a character past U+00FF was
/// refused before), not its UTF-8.
pub fn reason_bytes(reason: &str) -> Vec<u8> {
    reason
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// The response body.
pub enum ResponseBody {
    Empty,
    Full(Bytes),
    /// `first` (if any) goes out first, then whatever `rest` yields.
    Stream {
        first: Option<Bytes>,
        rest: BodyStream,
    },
    /// A 101: the connection goes on to this session once the head is
    /// written. Only for a request its front end marked `upgradable`.
    Upgrade(super::upgrade::Session),
}

pub struct Response {
    pub status: u16,
    /// The reason phrase, when it is not the standard one for the status
    /// ("299 Custom Reason", "404 Gone Fishing").
    pub reason: Option<String>,
    /// Header names and values as the app gave them (already validated:
    /// names are tokens, values have no control characters).
    pub headers: Vec<(Bytes, Bytes)>,
    pub body: ResponseBody,
}

impl Response {
    /// A plain-text response produced by the server itself (errors).
    /// The answer to a request whose body could not be read (malformed,
    /// over --limit-post, or slower than --min-body-rate). The connection closes after it: what is left
    /// of the body, if anything, cannot be trusted to frame a next request.
    pub fn for_body_error(e: &super::BodyError) -> Response {
        let mut resp = match e.status {
            413 => Response::plain(413, "Content Too Large", "Request body too large\n"),
            408 => Response::plain(408, "Request Timeout", "Request body too slow\n"),
            500 => Response::plain(500, "Internal Server Error", "Internal Server Error\n"),
            _ => Response::plain(400, "Bad Request", "Malformed request body\n"),
        };
        resp.headers.push((
            Bytes::from_static(b"Connection"),
            Bytes::from_static(b"close"),
        ));
        resp
    }

    pub fn plain(status: u16, reason: &str, text: &'static str) -> Response {
        Response {
            status,
            reason: Some(reason.to_string()),
            headers: vec![
                (
                    Bytes::from_static(b"Content-Type"),
                    Bytes::from_static(b"text/plain; charset=utf-8"),
                ),
                (
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from(text.len().to_string()),
                ),
            ],
            body: ResponseBody::Full(Bytes::from_static(text.as_bytes())),
        }
    }
}

/// 503 for a file that could not be opened for want of descriptors or
/// memory: the server's trouble, for a moment (Retry-After: 1).
pub fn unavailable() -> Response {
    let mut resp = Response::plain(503, "Service Unavailable", "Service Unavailable\n");
    resp.headers
        .push((Bytes::from_static(b"Retry-After"), Bytes::from_static(b"1")));
    resp
}

/// 301 to the directory's path with its slash (the query kept).
pub fn redirect_to_directory(path: &[u8], query: &[u8]) -> Response {
    // Encoded again: PATH_INFO was decoded, and a name with a space or a
    // `?` must come back as the same path.
    const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        // `/\host` is `//host` to browsers.
        .add(b'\\');
    // One leading slash: `//dir/` would send the client to the host `dir`.
    let path = &path[path.iter().position(|&b| b != b'/').unwrap_or(path.len())..];
    let mut location = b"/".to_vec();
    location.extend(percent_encoding::percent_encode(path, PATH).flat_map(str::bytes));
    if !path.is_empty() {
        location.push(b'/');
    }
    if !query.is_empty() {
        location.push(b'?');
        // The query as it came, but a gateway protocol's may hold any byte:
        // a CR or LF would end the header line.
        location.extend(
            percent_encoding::percent_encode(query, percent_encoding::CONTROLS)
                .flat_map(str::bytes),
        );
    }
    let mut resp = Response::plain(301, "Moved Permanently", "Moved Permanently\n");
    resp.headers
        .push((Bytes::from_static(b"Location"), Bytes::from(location)));
    resp
}

/// The Content-Length a response's head declares (the first, if given
/// twice), when it is a valid one.
pub fn declared_length(headers: &[(Bytes, Bytes)]) -> Option<u64> {
    let (_, value) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"content-length"))?;
    super::cgi::content_length(value)
}

/// Whether a declared body is over `--limit-post`.
pub fn over_limit_post(limit: Option<u64>, content_length: Option<u64>) -> bool {
    limit
        .zip(content_length)
        .is_some_and(|(limit, len)| len > limit)
}

/// The 413 for a request whose declared body is over `--limit-post`, the
/// same on every front end, logged with the client's address as uWSGI
/// logs its "Invalid (too big) CONTENT_LENGTH": no app sees the request,
/// so without the line an upload refused for its size left no trace.
pub fn body_too_large(
    limit: Option<u64>,
    content_length: Option<u64>,
    vars: &[(VarName, Bytes)],
) -> Option<Response> {
    if !over_limit_post(limit, content_length) {
        return None;
    }
    let from = super::vars::var(vars, Var::REMOTE_ADDR)
        .map(|addr| format!(" (from {})", String::from_utf8_lossy(addr)))
        .unwrap_or_default();
    crate::say!(
        "oxgate: request refused with 413: a body of {} bytes is over --limit-post ({} bytes){from}",
        content_length.unwrap_or(0),
        limit.unwrap_or(0),
    );
    Some(Response::plain(
        413,
        "Content Too Large",
        "Request body too large\n",
    ))
}

/// RFC 9110 tchar: the bytes allowed in a header name.
pub fn is_token_byte(c: u8) -> bool {
    const TOKEN: [bool; 256] = {
        let mut t = [false; 256];
        let mut c = 0;
        while c < 256 {
            let b = c as u8;
            t[c] = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                );
            c += 1;
        }
        t
    };
    TOKEN[c as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(resp: &Response) -> &[u8] {
        &resp
            .headers
            .iter()
            .find(|(n, _)| &n[..] == b"Location")
            .unwrap()
            .1
    }

    #[test]
    fn a_directory_redirect_keeps_the_query_and_encodes_what_would_end_the_line() {
        let resp = redirect_to_directory(b"/static/a b", b"x=1&y=%20");
        assert_eq!(location(&resp), b"/static/a%20b/?x=1&y=%20");
        let resp = redirect_to_directory(b"/static/idx", b"a\r\nX-Evil: 1");
        assert_eq!(location(&resp), b"/static/idx/?a%0D%0AX-Evil: 1");
        let resp = redirect_to_directory(b"//host/dir", b"");
        assert_eq!(location(&resp), b"/host/dir/");
    }
}
