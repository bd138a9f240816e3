//! SCGI's request (protocols.md §3): a netstring `LEN:headers,` whose
//! headers are `name NUL value NUL` pairs, `CONTENT_LENGTH` first and
//! `SCGI` = `1` among them; CONTENT_LENGTH body bytes follow. The response
//! is a CGI response (`Status:` header). One request per connection.
//!
//! Pure code: bytes in, a parsed head or an error out, no I/O.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    BadLength,
    TooLarge {
        size: usize,
        limit: usize,
    },
    MissingComma,
    /// Not an even number of NUL-terminated strings.
    Unterminated,
    EmptyName,
    DuplicateName(String),
    ContentLengthNotFirst,
    NotScgi,
    LooksLikeHttp,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::BadLength => f.write_str("SCGI netstring length is not a plain decimal number"),
            Error::TooLarge { size, limit } => {
                write!(f, "SCGI header block of {size} bytes is over --buffer-size {limit}")
            }
            Error::MissingComma => f.write_str("SCGI netstring does not end with ','"),
            Error::Unterminated => f.write_str("SCGI header block is not NUL-terminated name/value pairs"),
            Error::EmptyName => f.write_str("SCGI header with an empty name"),
            Error::DuplicateName(n) => write!(f, "SCGI header {n} sent twice"),
            Error::ContentLengthNotFirst => {
                f.write_str("SCGI's first header must be CONTENT_LENGTH with a decimal value")
            }
            Error::NotScgi => f.write_str("SCGI header SCGI=1 is missing"),
            Error::LooksLikeHttp => f.write_str(
                "HTTP was sent to an SCGI socket: HTTP clients need --http-socket; nginx needs scgi_pass here",
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Longest length prefix accepted: 7 digits (up to 9,999,999 bytes).
const MAX_DIGITS: usize = 7;

/// Parses the header netstring from the start of `buf`; `Ok(None)` when
/// more bytes are needed. On success the netstring is consumed.
pub fn parse(buf: &mut BytesMut, limit: usize) -> Result<Option<Vec<(Bytes, Bytes)>>, Error> {
    if super::looks_like_http(buf) {
        return Err(Error::LooksLikeHttp);
    }
    let colon = match buf.iter().take(MAX_DIGITS + 1).position(|&c| c == b':') {
        Some(i) => i,
        None if buf.len() > MAX_DIGITS => return Err(Error::BadLength),
        None => {
            if buf.iter().any(|c| !c.is_ascii_digit()) {
                return Err(Error::BadLength);
            }
            return Ok(None);
        }
    };
    let digits = &buf[..colon];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits[0] == b'0' && digits.len() > 1)
    {
        return Err(Error::BadLength);
    }
    let size: usize = std::str::from_utf8(digits)
        .expect("digits")
        .parse()
        .map_err(|_| Error::BadLength)?;
    if size > limit {
        return Err(Error::TooLarge { size, limit });
    }
    let total = colon + 1 + size + 1;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != b',' {
        return Err(Error::MissingComma);
    }
    buf.advance(colon + 1);
    let block = buf.split_to(size).freeze();
    buf.advance(1);
    parse_headers(&block).map(Some)
}

fn parse_headers(block: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Error> {
    if block.last().is_some_and(|&c| c != 0) {
        return Err(Error::Unterminated);
    }
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, &c) in block.iter().enumerate() {
        if c == 0 {
            parts.push(block.slice(start..i));
            start = i + 1;
        }
    }
    if parts.len() % 2 != 0 {
        return Err(Error::Unterminated);
    }
    let mut headers: Vec<(Bytes, Bytes)> = Vec::with_capacity(parts.len() / 2);
    for pair in parts.chunks(2) {
        let (name, value) = (pair[0].clone(), pair[1].clone());
        if name.is_empty() {
            return Err(Error::EmptyName);
        }
        // The framing's names come once: two would be two readings of one
        // request. Others may repeat, against the SCGI spec but as nginx
        // before 1.23 sends a header given twice; the front end joins
        // them as it joins uwsgi's and FastCGI's.
        if (&name[..] == b"CONTENT_LENGTH" || &name[..] == b"SCGI")
            && headers.iter().any(|(n, _)| *n == name)
        {
            return Err(Error::DuplicateName(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        headers.push((name, value));
    }
    match headers.first() {
        Some((n, v))
            if &n[..] == b"CONTENT_LENGTH" && !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
        }
        _ => return Err(Error::ContentLengthNotFirst),
    }
    if !headers
        .iter()
        .any(|(n, v)| &n[..] == b"SCGI" && &v[..] == b"1")
    {
        return Err(Error::NotScgi);
    }
    Ok(headers)
}

/// Encodes a request (for tests and fuzzing).
pub fn encode(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in headers {
        block.extend_from_slice(k);
        block.push(0);
        block.extend_from_slice(v);
        block.push(0);
    }
    let mut out = format!("{}:", block.len()).into_bytes();
    out.extend_from_slice(&block);
    out.push(b',');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_protocol_example() {
        let mut buf = BytesMut::from(
            &b"60:CONTENT_LENGTH\x005\x00SCGI\x001\x00REQUEST_METHOD\x00POST\x00REQUEST_URI\x00/hi\x00,hello"[..],
        );
        let h = parse(&mut buf, 65536).unwrap().unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(&h[2].1[..], b"POST");
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn refusals() {
        let ok = |h: &[(&[u8], &[u8])]| encode(h);
        let cases: Vec<(Vec<u8>, Error)> = vec![
            (b"0x10:".to_vec(), Error::BadLength),
            (b"012:".to_vec(), Error::BadLength),
            (b"-5:".to_vec(), Error::BadLength),
            (b"123456789:".to_vec(), Error::BadLength),
            (b"3:a\x00b;".to_vec(), Error::MissingComma),
            (
                ok(&[(b"SCGI", b"1"), (b"CONTENT_LENGTH", b"0")]),
                Error::ContentLengthNotFirst,
            ),
            (
                ok(&[(b"CONTENT_LENGTH", b"")]),
                Error::ContentLengthNotFirst,
            ),
            (ok(&[(b"CONTENT_LENGTH", b"0")]), Error::NotScgi),
            (
                ok(&[(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"SCGI", b"1")]),
                Error::DuplicateName("SCGI".into()),
            ),
            (
                ok(&[(b"CONTENT_LENGTH", b"0"), (b"", b"x")]),
                Error::EmptyName,
            ),
            (b"5:ab\x00cd,".to_vec(), Error::Unterminated),
            (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Error::LooksLikeHttp),
        ];
        for (wire, want) in cases {
            assert_eq!(
                parse(&mut BytesMut::from(&wire[..]), 65536),
                Err(want),
                "{wire:?}"
            );
        }
        // A header given twice (nginx before 1.23) is no error: the front
        // end joins the two; CONTENT_LENGTH given twice is.
        let twice = ok(&[
            (b"CONTENT_LENGTH", b"0"),
            (b"SCGI", b"1"),
            (b"HTTP_X_FOO", b"1"),
            (b"HTTP_X_FOO", b"2"),
        ]);
        assert!(parse(&mut BytesMut::from(&twice[..]), 65536).is_ok());
        let lengths = ok(&[
            (b"CONTENT_LENGTH", b"0"),
            (b"SCGI", b"1"),
            (b"CONTENT_LENGTH", b"5"),
        ]);
        assert_eq!(
            parse(&mut BytesMut::from(&lengths[..]), 65536),
            Err(Error::DuplicateName("CONTENT_LENGTH".into()))
        );
        let big = ok(&[
            (b"CONTENT_LENGTH", b"0"),
            (b"SCGI", b"1"),
            (b"HTTP_COOKIE", &[b'x'; 5000]),
        ]);
        assert!(matches!(
            parse(&mut BytesMut::from(&big[..]), 4096),
            Err(Error::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip_in_two_pieces(extra in proptest::collection::vec(
            ("[A-Z_]{1,20}", proptest::collection::vec(1u8..=255, 0..50)), 0..20), split in 0usize..3000) {
            let mut names = std::collections::HashSet::new();
            let mut headers: Vec<(Vec<u8>, Vec<u8>)> = vec![(b"CONTENT_LENGTH".to_vec(), b"0".to_vec()), (b"SCGI".to_vec(), b"1".to_vec())];
            for (n, v) in extra {
                if n != "CONTENT_LENGTH" && n != "SCGI" && names.insert(n.clone()) {
                    headers.push((n.into_bytes(), v));
                }
            }
            let refs: Vec<(&[u8], &[u8])> = headers.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let wire = encode(&refs);
            let split = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..split]);
            let first = parse(&mut buf, 1 << 20).unwrap();
            if split < wire.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(&wire[split..]);
            }
            let got = match first { Some(h) => h, None => parse(&mut buf, 1 << 20).unwrap().unwrap() };
            let got: Vec<(Vec<u8>, Vec<u8>)> = got.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(got, headers);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&mut BytesMut::from(&data[..]), 65536);
        }
    }
}
