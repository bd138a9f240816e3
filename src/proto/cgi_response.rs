//! A CGI script's response head (RFC 3875 §6): header lines up to a blank
//! line, read with httparse, and what they make of the response: a
//! document, a local redirect (the server serves another path instead) or a
//! client redirect. An NPH script ("nph-" names) writes a whole HTTP
//! response head instead, read the same way. Pure: bytes in, a head out.

use bytes::Bytes;

/// The most a head may take before the script is judged broken.
pub const MAX_HEAD: usize = 64 * 1024;
/// Header lines read in the first try, on the stack.
const MAX_FIELDS: usize = 128;
/// The most header lines a head may have (a script that sets many cookies
/// is not broken; [`MAX_HEAD`] bounds the head already).
const MAX_FIELDS_ANY: usize = 4096;

/// What the script's answer is (RFC 3875 §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A document (or an error page): status, headers and body as given.
    Document,
    /// `Location: /path?query` and no Status: the server answers as if the
    /// client had asked for that path, with GET.
    LocalRedirect(Bytes),
    /// `Location` with a full URL (or with a Status): sent to the client,
    /// 302 unless the script chose the status.
    ClientRedirect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The reason phrase the script gave, if any.
    pub reason: Option<String>,
    /// The headers to send: without `Status` and the hop-by-hop headers
    /// (framing is the server's), names as given.
    pub headers: Vec<(Bytes, Bytes)>,
    pub reply: Reply,
    /// How many bytes of the output the head took: the body starts there.
    pub len: usize,
    /// Stray lines left out of the head (see [`without_stray_lines`]).
    pub dropped: usize,
}

impl Head {
    /// What to say of the stray lines left out, if any were.
    pub fn dropped_said(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "{} malformed header line(s) left out of the response (no colon, or a control byte in the value)",
                self.dropped
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not header lines (what httparse says of them).
    Malformed(String),
    /// No blank line within [`MAX_HEAD`] bytes.
    TooLarge,
    /// A `Status:` that is not "NNN reason" with NNN in 200..=599: a 1xx is
    /// never a final status (HTTP/2 cannot even frame one as such).
    BadStatus(String),
    /// An NPH script's body framed by a transfer coding of its own: oxgate
    /// frames bodies itself (and HTTP/2 has no chunks), so it would reach
    /// the client coded twice.
    CodedBody(String),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Malformed(why) => write!(f, "malformed header block ({why})"),
            HeadError::TooLarge => write!(f, "no end of headers in the first {MAX_HEAD} bytes"),
            HeadError::BadStatus(s) => write!(f, "bad Status header {s:?}"),
            HeadError::CodedBody(coding) => write!(
                f,
                "Transfer-Encoding {coding:?}: oxgate frames the body itself; \
                 send it plain, with or without Content-Length"
            ),
        }
    }
}

/// Reads the head at the start of `out`, the script's output so far:
/// `Ok(None)` while it is incomplete. `nph` reads an HTTP status line first.
pub fn parse(out: &[u8], nph: bool) -> Result<Option<Head>, HeadError> {
    match parse_head(out, nph) {
        Err(HeadError::Malformed(why)) if !nph => match without_stray_lines(out) {
            Some((kept, len, dropped)) => parse_head(&kept, false).map(|head| {
                head.map(|head| Head {
                    len,
                    dropped,
                    ..head
                })
            }),
            // Not all there yet: the rest may make it a head with a stray
            // line (a script that wrote the line, then flushed).
            None if head_end(out).is_none() && out.len() < MAX_HEAD => Ok(None),
            None => Err(HeadError::Malformed(why)),
        },
        other => other,
    }
}

/// Where a head ends in `out` (past its blank line), if it does.
fn head_end(out: &[u8]) -> Option<usize> {
    out.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2)
        .into_iter()
        .chain(out.windows(3).position(|w| w == b"\n\r\n").map(|i| i + 3))
        .min()
}

fn parse_head(out: &[u8], nph: bool) -> Result<Option<Head>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    match parse_into(out, nph, &mut fields) {
        Err(HeadError::Malformed(why)) if why == httparse::Error::TooManyHeaders.to_string() => {
            parse_into(out, nph, &mut vec![httparse::EMPTY_HEADER; MAX_FIELDS_ANY])
        }
        other => other,
    }
}

/// A whole head with its stray lines left out, as nginx passes over them
/// rather than failing the page: a line with no colon (PHP's
/// `header('JustText')`), and a header whose value holds a control byte
/// (a stray byte in a download's file name). With the head's length in
/// `out`, and how many lines went. None when nothing was stray, when no
/// good line is left (an HTML page printed with no head is broken), or
/// before the head's end has come.
fn without_stray_lines(out: &[u8]) -> Option<(Vec<u8>, usize, usize)> {
    let end = head_end(out)?;
    let mut kept = Vec::with_capacity(end + 2);
    let (mut good, mut dropped) = (0, 0);
    for line in out[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let stray = match line.iter().position(|&b| b == b':') {
            None => true,
            Some(colon) => line[colon + 1..]
                .iter()
                .any(|&b| b.is_ascii_control() && b != b'\t'),
        };
        if stray {
            dropped += 1;
        } else {
            good += 1;
            kept.extend_from_slice(line);
            kept.extend_from_slice(b"\r\n");
        }
    }
    kept.extend_from_slice(b"\r\n");
    (dropped > 0 && good > 0).then_some((kept, end, dropped))
}

fn parse_into<'b>(
    out: &'b [u8],
    nph: bool,
    fields: &mut [httparse::Header<'b>],
) -> Result<Option<Head>, HeadError> {
    let parsed = if nph {
        let mut resp = httparse::Response::new(fields);
        match resp.parse(out) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(200);
                if !FINAL.contains(&status) {
                    return Err(HeadError::BadStatus(status.to_string()));
                }
                let reason = resp.reason.filter(|r| !r.is_empty()).map(str::to_string);
                Ok(Some((len, Some((status, reason)), resp.headers.to_vec())))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(e),
        }
    } else {
        match httparse::parse_headers(out, fields) {
            Ok(httparse::Status::Complete((len, headers))) => {
                Ok(Some((len, None, headers.to_vec())))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let (len, status_line, fields) = match parsed {
        Ok(Some(p)) => p,
        Ok(None) if out.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(None) => return Ok(None),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let mut status = status_line;
    let mut location = None;
    let mut length: Option<&[u8]> = None;
    let mut headers = Vec::with_capacity(fields.len());
    for field in &fields {
        let name = field.name.as_bytes();
        if !nph && name.eq_ignore_ascii_case(b"status") {
            if status.is_none() {
                status = Some(parse_status(field.value)?);
            }
            continue;
        }
        // An NPH script frames its body for the client itself; a chunked
        // one cannot be passed on as it is (a document's own coding is
        // dropped with the header: scripts send plain bodies there).
        if nph
            && name.eq_ignore_ascii_case(b"transfer-encoding")
            && !trim(field.value).eq_ignore_ascii_case(b"identity")
        {
            return Err(HeadError::CodedBody(
                String::from_utf8_lossy(field.value).into_owned(),
            ));
        }
        if is_hop_by_hop(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length")
            && std::str::from_utf8(field.value)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .is_none()
        {
            // A length the server cannot trust (or hold: past 2^64) is no
            // length: the body is framed by the end of the output instead.
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Twice, the same: once. Two lengths: no client could tell
            // where the body ends (RFC 9112 §6.3), and none is sent.
            match length {
                Some(l) if l == field.value => continue,
                Some(l) => {
                    return Err(HeadError::Malformed(format!(
                        "two Content-Length values, {} and {}",
                        String::from_utf8_lossy(l),
                        String::from_utf8_lossy(field.value)
                    )));
                }
                None => length = Some(field.value),
            }
        }
        let value = Bytes::copy_from_slice(trim(field.value));
        if name.eq_ignore_ascii_case(b"location") && location.is_none() {
            location = Some(value.clone());
        }
        headers.push((Bytes::copy_from_slice(name), value));
    }
    let reply = match &location {
        // "/path", not "//host/path" (a network-path reference).
        Some(l) if status.is_none() && l.starts_with(b"/") && !l.starts_with(b"//") => {
            Reply::LocalRedirect(l.clone())
        }
        Some(_) => Reply::ClientRedirect,
        None => Reply::Document,
    };
    let (status, reason) = match (status, &reply) {
        (Some(s), _) => s,
        (None, Reply::ClientRedirect) => (302, None),
        (None, _) => (200, None),
    };
    Ok(Some(Head {
        status,
        reason,
        headers,
        reply,
        len,
        dropped: 0,
    }))
}

/// "404 Not Found", "302", "200 OK ".
fn parse_status(value: &[u8]) -> Result<(u16, Option<String>), HeadError> {
    // RFC 3875's reason-phrase is *TEXT, octets above 127 included: one
    // that is no UTF-8 (`404 Non trouv\xe9`, Latin-1) is read as Latin-1,
    // whose characters go out as the same bytes, as Apache sends them.
    let decoded;
    let text = match std::str::from_utf8(value) {
        Ok(t) => t,
        Err(_) => {
            decoded = value.iter().map(|&b| char::from(b)).collect::<String>();
            &decoded
        }
    }
    .trim();
    let (code, reason) = text.split_once(' ').unwrap_or((text, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_status(value));
    }
    let code: u16 = code.parse().map_err(|_| bad_status(value))?;
    if !FINAL.contains(&code) {
        return Err(bad_status(value));
    }
    let reason = reason.trim();
    Ok((code, (!reason.is_empty()).then(|| reason.to_string())))
}

/// The statuses a script's answer may have: a final one, never a 1xx.
const FINAL: std::ops::RangeInclusive<u16> = 200..=599;

fn bad_status(value: &[u8]) -> HeadError {
    HeadError::BadStatus(String::from_utf8_lossy(value).into_owned())
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &value[start..end]
}

/// Hop-by-hop headers belong to the server (framing, the connection), never
/// to an app or script (wsgiref.util.is_hop_by_hop's list).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP_BY_HOP: &[&[u8]] = &[
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        // RFC 2616's spelling; RFC 9110's Trailer (which fields a chunked
        // body's trailer section has) is end-to-end, and an app may say it.
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(out: &str) -> Head {
        parse(out.as_bytes(), false).unwrap().unwrap()
    }

    fn names(h: &Head) -> Vec<String> {
        h.headers
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn a_document_with_crlf_or_bare_lf() {
        for out in [
            "Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody",
            "Content-Type: text/plain\nX-A: 1\n\nbody",
        ] {
            let h = head(out);
            assert_eq!((h.status, h.reply.clone()), (200, Reply::Document));
            assert_eq!(names(&h), ["Content-Type", "X-A"]);
            assert_eq!(&out[h.len..], "body");
        }
    }

    #[test]
    fn many_cookies_are_a_head_and_two_lengths_are_not() {
        let mut out = String::new();
        for i in 0..300 {
            out.push_str(&format!("Set-Cookie: c{i}=v\r\n"));
        }
        out.push_str("\r\nbody");
        let h = head(&out);
        assert_eq!(h.headers.len(), 300);
        assert_eq!(&out[h.len..], "body");
        let h = head("Content-Length: 4\r\nContent-Length: 4\r\n\r\nbody");
        assert_eq!(names(&h), ["Content-Length"]);
        assert!(matches!(
            parse(b"Content-Length: 5\r\nContent-Length: 12\r\n\r\n", false),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn status_sets_the_code_and_reason_and_is_not_sent() {
        let h = head("Status: 404 Gone Fishing\r\nContent-Type: text/html\r\n\r\n");
        assert_eq!((h.status, h.reason.as_deref()), (404, Some("Gone Fishing")));
        assert_eq!(names(&h), ["Content-Type"]);
        let h = head("status: 201\n\n");
        assert_eq!((h.status, h.reason), (201, None));
        // A Latin-1 reason: its characters are its bytes.
        let h = parse(b"Status: 404 Non trouv\xe9\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.reason.as_deref()),
            (404, Some("Non trouv\u{e9}"))
        );
    }

    #[test]
    fn a_bad_status_is_an_error() {
        for s in [
            "abc",
            "2000 Big",
            "99 Low",
            "100 Continue",
            "199",
            "600 High",
            "",
            "20x OK",
        ] {
            let out = format!("Status: {s}\r\n\r\n");
            assert!(
                matches!(parse(out.as_bytes(), false), Err(HeadError::BadStatus(_))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn redirects_local_and_client() {
        let h = head("Location: /other/page?x=1\r\n\r\n");
        assert_eq!(
            h.reply,
            Reply::LocalRedirect(Bytes::from_static(b"/other/page?x=1"))
        );
        let h = head("Location: http://example.com/\r\n\r\n");
        assert_eq!((h.status, h.reply), (302, Reply::ClientRedirect));
        // A network-path reference is not local.
        let h = head("Location: //evil.example/\r\n\r\n");
        assert_eq!((h.status, h.reply), (302, Reply::ClientRedirect));
        // With a Status, the script redirects the client itself.
        let h = head("Status: 301 Moved\r\nLocation: /new\r\n\r\n");
        assert_eq!((h.status, h.reply), (301, Reply::ClientRedirect));
    }

    #[test]
    fn framing_headers_are_the_servers() {
        let h = head(
            "Content-Type: a/b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nContent-Length: x1\r\nContent-Length: 12\r\n\r\n",
        );
        assert_eq!(names(&h), ["Content-Type", "Content-Length"]);
        assert_eq!(&h.headers[1].1[..], b"12");
        // Too long for any body: dropped, as one not a number is.
        let h = head("Content-Length: 99999999999999999999999\r\n\r\nhi");
        assert!(names(&h).is_empty());
    }

    #[test]
    fn an_nph_scripts_own_transfer_coding_is_refused() {
        let out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            parse(out, true),
            Err(HeadError::CodedBody("chunked".into()))
        );
        let plain = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello";
        assert!(parse(plain, true).unwrap().unwrap().headers.is_empty());
    }

    #[test]
    fn incomplete_heads_wait_and_endless_ones_fail() {
        assert_eq!(parse(b"Content-Type: text/plain\r\n", false), Ok(None));
        assert_eq!(parse(b"", false), Ok(None));
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse(&endless, false), Err(HeadError::TooLarge));
        let mut many = String::new();
        for i in 0..(MAX_FIELDS_ANY + 1) {
            many.push_str(&format!("X-{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        assert!(parse(many.as_bytes(), false).is_err());
    }

    #[test]
    fn stray_lines_are_left_out_as_nginx_passes_over_them() {
        for out in [
            &b"JustText\r\nContent-Type: text/html\r\n\r\nbody"[..],
            b"Content-Type: text/html\nX-Ctl: a\x01b\n\nbody",
        ] {
            let h = parse(out, false).unwrap().unwrap();
            assert_eq!(names(&h), ["Content-Type"]);
            assert_eq!((h.dropped, &out[h.len..]), (1, &b"body"[..]));
        }
        // Before the head's end, the rest is waited for: the same head
        // written in two pieces is read the same.
        assert_eq!(
            parse(b"JustText\r\nContent-Type: text/html\r\n", false),
            Ok(None)
        );
        let h = parse(b"JustText\r\nContent-Type: text/html\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((names(&h).len(), h.dropped), (1, 1));
    }

    #[test]
    fn garbage_is_malformed() {
        for out in [
            "<html>hello</html>\n\n",
            "no colon here\r\n\r\n",
            "Bad Name: x\r\n\r\n",
            "Bad Name: x\r\nJustText\r\n\r\n",
        ] {
            assert!(
                matches!(parse(out.as_bytes(), false), Err(HeadError::Malformed(_))),
                "{out:?}"
            );
        }
    }

    #[test]
    fn an_nph_head_is_a_status_line_and_headers() {
        let out = b"HTTP/1.1 203 Not Quite\r\nContent-Type: text/plain\r\nStatus: 500\r\n\r\nbody";
        let h = parse(out, true).unwrap().unwrap();
        assert_eq!((h.status, h.reason.as_deref()), (203, Some("Not Quite")));
        // In an NPH head, Status is just a header.
        assert_eq!(names(&h), ["Content-Type", "Status"]);
        assert_eq!(&out[h.len..], b"body");
        assert!(parse(b"Content-Type: text/plain\r\n\r\n", true).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(out in proptest::collection::vec(any::<u8>(), 0..600), nph: bool) {
            if let Ok(Some(h)) = parse(&out, nph) {
                prop_assert!(h.len <= out.len());
                prop_assert!(FINAL.contains(&h.status));
                for (k, v) in &h.headers {
                    prop_assert!(!k.is_empty() && k.iter().all(|b| b.is_ascii_graphic()));
                    prop_assert!(!v.iter().any(|b| *b == b'\r' || *b == b'\n'));
                }
                // The head does not depend on what follows it.
                prop_assert_eq!(parse(&out[..h.len], nph), Ok(Some(h)));
            }
        }

        #[test]
        fn a_written_head_reads_back(
            fields in proptest::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?"), 0..12),
            status in 200u16..600,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut out = format!("Status: {status} Reason\r\n");
            for (k, v) in &fields {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let head_len = out.len();
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&body);
            let h = parse(&bytes, false).unwrap().unwrap();
            prop_assert_eq!(h.len, head_len);
            prop_assert_eq!(h.status, status);
            prop_assert_eq!(h.headers.len(), fields.len());
            for ((k, v), (hk, hv)) in fields.iter().zip(&h.headers) {
                prop_assert_eq!(k.as_bytes(), &hk[..]);
                prop_assert_eq!(v.as_bytes(), &hv[..]);
            }
        }
    }
}
