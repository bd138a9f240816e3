//! What hyper accepts and oxgate refuses: the request-head checks Gunicorn
//! added from 22.0 on (its `tests/requests/invalid` corpus), applied to
//! hyper's parsed head before anything reaches an app. hyper already
//! refuses malformed lines, bad header names, conflicting lengths and
//! obs-fold; these close the remaining gaps, each of which lets a proxy in
//! front read a request differently from the app behind it.
//!
//! Pure: no I/O, so the fuzz target and the property tests drive it as the
//! front end does.

use http::Method;
use http::header::{self, HeaderName};
use http::request::Parts;

/// The size limits on a request head, Gunicorn's three (0 turns one off).
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// `--limit-request-line`: method, target and version together.
    pub request_line: usize,
    /// `--limit-request-field-size`: one header's `Name: value` line with
    /// its CRLF, counted as Gunicorn counts it.
    pub field_size: usize,
    /// `--limit-request-fields`, checked here for HTTP/2 (hyper counts
    /// HTTP/1.1's as it parses them).
    pub fields: usize,
    /// `--buffer-size`: the whole head. hyper measures its read buffer
    /// only when a head is still partial, so a head that came in one large
    /// read passed it: whether a head passed depended on how TCP split it.
    pub head: usize,
}

/// Why a head is refused; each becomes a response that closes the
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with what was wrong.
    Bad(&'static str),
    /// 414: the request line is over `--limit-request-line`.
    LineTooLong,
    /// 431: a header is over `--limit-request-field-size`.
    FieldTooLarge,
    /// 431: more header fields than `--limit-request-fields`.
    TooManyFields,
    /// 431: the head is larger than `--buffer-size`.
    HeadTooLarge,
    /// 405: CONNECT. An app server has no tunnel to offer, and hyper turns
    /// a connection whose CONNECT was answered 2xx into one (so an app's
    /// ordinary answer could not be sent); nginx answers CONNECT 405 too.
    Connect,
}

impl Refusal {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::Bad(_) => (400, "Bad Request"),
            Refusal::LineTooLong => (414, "URI Too Long"),
            Refusal::FieldTooLarge | Refusal::TooManyFields | Refusal::HeadTooLarge => {
                (431, "Request Header Fields Too Large")
            }
            Refusal::Connect => (405, "Method Not Allowed"),
        }
    }

    /// What was wrong, a line for the client (and the log).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Bad(why) => why,
            Refusal::LineTooLong => "request line longer than --limit-request-line\n",
            Refusal::FieldTooLarge => "header longer than --limit-request-field-size\n",
            Refusal::TooManyFields => "more header fields than --limit-request-fields\n",
            Refusal::HeadTooLarge => "request head larger than --buffer-size\n",
            Refusal::Connect => "CONNECT is not served\n",
        }
    }
}

/// Fields a message may carry once only (RFC 9110 §5.3): two of them are
/// two readings of one request. Content-Length is hyper's to check.
const SINGLETONS: [HeaderName; 2] = [header::HOST, header::CONTENT_TYPE];

/// Checks a head hyper has parsed. Cheap: one pass over the header values,
/// and no allocation.
pub fn check_head(parts: &Parts, limits: &HeadLimits) -> Result<(), Refusal> {
    check_method(&parts.method)?;
    check_target(parts)?;
    // "METHOD SP target SP HTTP/1.1" CRLF
    let line = parts.method.as_str().len() + target_len(&parts.uri) + 10;
    if limits.request_line > 0 && line > limits.request_line {
        return Err(Refusal::LineTooLong);
    }
    // With the empty line that ends it.
    let mut head = line + 2 + 2;
    let mut cookie_seen = false;
    for (name, value) in &parts.headers {
        let field = name.as_str().len() + value.len() + 4;
        if limits.field_size > 0 && field > limits.field_size {
            return Err(Refusal::FieldTooLarge);
        }
        // HTTP/2's cookie crumbs, as the one field HTTP/1.1 would send.
        head += if *name == header::COOKIE && cookie_seen {
            value.len() + 2
        } else {
            field
        };
        cookie_seen |= *name == header::COOKIE;
    }
    if limits.head > 0 && head > limits.head {
        return Err(Refusal::HeadTooLarge);
    }
    if limits.fields > 0 && parts.version == http::Version::HTTP_2 {
        // HTTP/2 clients send cookies in crumbs (RFC 9113 §8.2.3), which
        // HTTP/1.1 would send as one field: they count as one.
        let crumbs = parts.headers.get_all(header::COOKIE).iter().count();
        if parts.headers.len() - crumbs.saturating_sub(1) > limits.fields {
            return Err(Refusal::TooManyFields);
        }
    }
    // RFC 9113 §8.3.1: an HTTP/2 request whose Host names another entity
    // than its :authority is malformed (nginx answers 400 "client sent
    // duplicate host header"); which of the two the app would be told of
    // is a question a proxy in front may answer the other way.
    if parts.version == http::Version::HTTP_2
        && let (Some(authority), Some(host)) =
            (parts.uri.authority(), parts.headers.get(header::HOST))
        && !host.as_bytes().eq_ignore_ascii_case(
            authority
                .as_str()
                .rsplit('@')
                .next()
                .unwrap_or("")
                .as_bytes(),
        )
    {
        return Err(Refusal::Bad("Host differs from :authority\n"));
    }
    for name in &SINGLETONS {
        let mut all = parts.headers.get_all(name).iter();
        if all.next().is_some() && all.next().is_some() {
            return Err(Refusal::Bad(if *name == header::HOST {
                "more than one Host header\n"
            } else {
                "more than one Content-Type header\n"
            }));
        }
    }
    Ok(())
}

/// RFC 9110 allows any token; like Gunicorn, oxgate holds methods to the
/// shape every registered one has (3 to 20 characters, no lower case, no
/// `#`), which refuses garbage such as `-bl` or a stray `get`.
fn check_method(method: &Method) -> Result<(), Refusal> {
    let m = method.as_str().as_bytes();
    if !(3..=20).contains(&m.len()) || m.iter().any(|&b| b.is_ascii_lowercase() || b == b'#') {
        return Err(Refusal::Bad("invalid method\n"));
    }
    if *method == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    Ok(())
}

/// RFC 9112 §3.2: the asterisk form is for OPTIONS only, and the authority
/// form for CONNECT only (refused above).
fn check_target(parts: &Parts) -> Result<(), Refusal> {
    let uri = &parts.uri;
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(Refusal::Bad("authority-form target outside CONNECT\n"));
    }
    if uri.path() == "*" && uri.scheme().is_none() && parts.method != Method::OPTIONS {
        return Err(Refusal::Bad("asterisk-form target outside OPTIONS\n"));
    }
    Ok(())
}

fn target_len(uri: &http::Uri) -> usize {
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    match (uri.scheme(), uri.authority()) {
        (Some(s), Some(a)) => s.as_str().len() + 3 + a.as_str().len() + path,
        _ => path,
    }
}

/// Fields a trailer may not carry (RFC 9110 §6.5.1): framing, routing and
/// credentials belong in the head, where the proxy in front checked them.
pub fn forbidden_trailer(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TRAILER,
        header::AUTHORIZATION,
        header::TE,
    ]
    .contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;
    use proptest::prelude::*;

    const LIMITS: HeadLimits = HeadLimits {
        request_line: 4094,
        field_size: 8190,
        fields: 100,
        head: 64 << 10,
    };

    /// The head of `raw` as hyper's parser (httparse) hands it over.
    fn parts(raw: &[u8]) -> Parts {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw).unwrap().is_complete());
        let mut b = http::Request::builder()
            .method(req.method.unwrap())
            .uri(req.path.unwrap())
            .version(if req.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            });
        for h in req.headers.iter() {
            b = b.header(h.name, h.value);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn check(raw: &[u8]) -> Result<(), Refusal> {
        check_head(&parts(raw), &LIMITS)
    }

    #[test]
    fn ordinary_requests_pass() {
        for raw in [
            &b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"[..],
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\n",
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n",
            b"M-SEARCH /upnp HTTP/1.1\r\n\r\n",
            b"PROPFIND /d HTTP/1.1\r\nX-Tab: a\tb\r\nX-Obs: \xe9t\xe9\r\n\r\n",
            b"GET / HTTP/1.0\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        ] {
            assert_eq!(check(raw), Ok(()), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn gunicorns_refusals() {
        let bad = |raw: &[u8]| matches!(check(raw), Err(Refusal::Bad(_)));
        assert!(bad(b"-bl /foo HTTP/1.1\r\n\r\n"));
        assert!(bad(b"get / HTTP/1.1\r\n\r\n"));
        assert!(bad(b"GE / HTTP/1.1\r\n\r\n"));
        assert!(bad(b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n\r\n"));
        assert!(bad(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(bad(b"GET example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(bad(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
        assert!(bad(
            b"GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n"
        ));
        assert_eq!(
            check(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            Err(Refusal::Connect)
        );
    }

    #[test]
    fn an_http2_host_naming_another_entity_than_the_authority_is_refused() {
        let h2 = |host: Option<&str>| {
            let mut b = http::Request::builder()
                .uri("https://auth.example:8443/x")
                .version(Version::HTTP_2);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            check_head(&b.body(()).unwrap().into_parts().0, &LIMITS)
        };
        assert_eq!(h2(None), Ok(()));
        assert_eq!(h2(Some("AUTH.example:8443")), Ok(()));
        assert!(matches!(h2(Some("host.example")), Err(Refusal::Bad(_))));
        assert!(matches!(h2(Some("auth.example")), Err(Refusal::Bad(_))));
        // HTTP/1.1's absolute form: the target wins, Host is passed over
        // (RFC 9112 §3.2.2).
        assert_eq!(
            check(b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(4094));
        assert_eq!(check(long_target.as_bytes()), Err(Refusal::LineTooLong));
        let fits = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(4094 - 15));
        assert_eq!(check(fits.as_bytes()), Ok(()));
        let long_field = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(8190 - 4));
        assert_eq!(check(long_field.as_bytes()), Err(Refusal::FieldTooLarge));
        let fits = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(8190 - 5));
        assert_eq!(check(fits.as_bytes()), Ok(()));
        let off = HeadLimits {
            request_line: 0,
            field_size: 0,
            fields: 0,
            head: 0,
        };
        assert_eq!(check_head(&parts(long_target.as_bytes()), &off), Ok(()));
        assert_eq!(check_head(&parts(long_field.as_bytes()), &off), Ok(()));
    }

    #[test]
    fn the_whole_head_is_held_to_buffer_size_however_it_arrived() {
        // 98 fields of 700 bytes: each under the field limit, fewer than
        // 100, together over 64 KiB.
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..98 {
            raw += &format!("X-{i}: {}\r\n", "v".repeat(700));
        }
        raw += "\r\n";
        assert!(raw.len() > 64 << 10);
        assert_eq!(check(raw.as_bytes()), Err(Refusal::HeadTooLarge));
        // A head of exactly the limit passes; a byte more does not.
        let exact = |len: usize| {
            let fixed = "GET / HTTP/1.1\r\nX: \r\n\r\n".len();
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(len - fixed))
        };
        let limits = HeadLimits {
            field_size: 0,
            ..LIMITS
        };
        assert_eq!(
            check_head(&parts(exact(64 << 10).as_bytes()), &limits),
            Ok(())
        );
        assert_eq!(
            check_head(&parts(exact((64 << 10) + 1).as_bytes()), &limits),
            Err(Refusal::HeadTooLarge)
        );
    }

    #[test]
    fn trailers() {
        assert!(forbidden_trailer(&header::CONTENT_LENGTH));
        assert!(forbidden_trailer(&header::HOST));
        assert!(!forbidden_trailer(&HeaderName::from_static("x-checksum")));
    }

    proptest! {
        /// Methods: the shape rule, whatever the bytes.
        #[test]
        fn methods(m in "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}") {
            let raw = format!("{m} / HTTP/1.1\r\n\r\n");
            let ok = (3..=20).contains(&m.len())
                && !m.bytes().any(|b| b.is_ascii_lowercase() || b == b'#')
                && m != "CONNECT";
            prop_assert_eq!(check(raw.as_bytes()).is_ok(), ok);
        }
    }

    #[test]
    fn http2_heads_are_held_to_the_field_count_cookie_crumbs_as_one() {
        let head = |fields: usize, crumbs: usize| {
            let mut b = http::Request::builder()
                .version(Version::HTTP_2)
                .uri("https://h/");
            for i in 0..fields {
                b = b.header(format!("x-h{i}"), "v");
            }
            for i in 0..crumbs {
                b = b.header("cookie", format!("c{i}=1"));
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(check_head(&head(100, 0), &LIMITS), Ok(()));
        assert_eq!(
            check_head(&head(101, 0), &LIMITS),
            Err(Refusal::TooManyFields)
        );
        assert_eq!(check_head(&head(99, 50), &LIMITS), Ok(()));
        assert_eq!(
            check_head(&head(100, 2), &LIMITS),
            Err(Refusal::TooManyFields)
        );
        let off = HeadLimits {
            fields: 0,
            ..LIMITS
        };
        assert_eq!(check_head(&head(1000, 0), &off), Ok(()));
    }
}
