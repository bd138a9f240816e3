//! FastCGI 1.0 records (protocols.md §2): an 8-byte big-endian header
//! (version, type, request id, content length, padding length), content,
//! padding. Name-value pairs use 1- or 4-byte lengths.
//!
//! Pure code: bytes in, records out (and records to bytes), no I/O.

use bytes::{Buf, Bytes, BytesMut};

pub const VERSION: u8 = 1;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const RESPONDER: u16 = 1;
pub const KEEP_CONN: u8 = 1;

pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const UNKNOWN_ROLE: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub request_id: u16,
    pub content: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    BadVersion(u8),
    /// A name-value pair runs past the end of its stream.
    TruncatedPair,
    EmptyName,
    /// A BEGIN_REQUEST whose body is not 8 bytes.
    BadBeginRequest,
    TooLarge {
        size: usize,
        limit: usize,
    },
    LooksLikeHttp,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::BadVersion(v) => write!(f, "FastCGI record with version {v} (only 1 exists)"),
            Error::TruncatedPair => f.write_str("FastCGI name-value pair runs past its stream"),
            Error::EmptyName => f.write_str("FastCGI param with an empty name"),
            Error::BadBeginRequest => f.write_str("FastCGI BEGIN_REQUEST body is not 8 bytes"),
            Error::TooLarge { size, limit } => {
                write!(f, "FastCGI params of {size} bytes are over --buffer-size {limit}")
            }
            Error::LooksLikeHttp => f.write_str(
                "HTTP was sent to a FastCGI socket: HTTP clients need --http-socket; nginx needs fastcgi_pass here",
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Parses one record from the start of `buf`; `Ok(None)` when more bytes
/// are needed. The record and its padding are consumed.
pub fn parse_record(buf: &mut BytesMut) -> Result<Option<Record>, Error> {
    if super::looks_like_http(buf) {
        return Err(Error::LooksLikeHttp);
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(Error::BadVersion(buf[0]));
    }
    let kind = buf[1];
    let request_id = u16::from_be_bytes([buf[2], buf[3]]);
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let padding = usize::from(buf[6]);
    if buf.len() < 8 + len + padding {
        return Ok(None);
    }
    buf.advance(8);
    let content = buf.split_to(len).freeze();
    buf.advance(padding);
    Ok(Some(Record {
        kind,
        request_id,
        content,
    }))
}

/// BEGIN_REQUEST's role and flags.
pub fn parse_begin(content: &[u8]) -> Result<(u16, u8), Error> {
    if content.len() != 8 {
        return Err(Error::BadBeginRequest);
    }
    Ok((u16::from_be_bytes([content[0], content[1]]), content[2]))
}

fn read_len(b: &[u8], at: usize) -> Result<(usize, usize), Error> {
    let first = *b.get(at).ok_or(Error::TruncatedPair)?;
    if first & 0x80 == 0 {
        return Ok((usize::from(first), at + 1));
    }
    let four = b.get(at..at + 4).ok_or(Error::TruncatedPair)?;
    let n = (u32::from(four[0] & 0x7f) << 24)
        | (u32::from(four[1]) << 16)
        | (u32::from(four[2]) << 8)
        | u32::from(four[3]);
    Ok((n as usize, at + 4))
}

/// The name-value pairs of a PARAMS (or GET_VALUES) stream.
pub fn parse_pairs(stream: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Error> {
    // Sized once: grown a pair at a time, the vector (64 bytes a pair)
    // was allocated five times over for nginx's usual thirty params.
    let mut out = Vec::with_capacity(count_pairs(stream));
    let mut at = 0;
    while at < stream.len() {
        let (nlen, next) = read_len(stream, at)?;
        let (vlen, next) = read_len(stream, next)?;
        let end = next
            .checked_add(nlen)
            .and_then(|e| e.checked_add(vlen))
            .ok_or(Error::TruncatedPair)?;
        if end > stream.len() {
            return Err(Error::TruncatedPair);
        }
        if nlen == 0 {
            return Err(Error::EmptyName);
        }
        out.push((
            stream.slice(next..next + nlen),
            stream.slice(next + nlen..end),
        ));
        at = end;
    }
    Ok(out)
}

/// How many whole pairs `stream` starts with.
fn count_pairs(stream: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while at < stream.len() {
        let Ok((nlen, next)) = read_len(stream, at) else {
            break;
        };
        let Ok((vlen, next)) = read_len(stream, next) else {
            break;
        };
        // Where `parse_pairs` stops (an empty name, a pair cut short), so
        // does the count: bad input reserves nothing for what follows.
        match next.checked_add(nlen).and_then(|e| e.checked_add(vlen)) {
            Some(end) if end <= stream.len() && nlen > 0 => at = end,
            _ => break,
        }
        n += 1;
    }
    n
}

pub fn encode_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let put_len = |out: &mut Vec<u8>, n: usize| {
        if n < 128 {
            out.push(n as u8);
        } else {
            out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
        }
    };
    for (k, v) in pairs {
        put_len(&mut out, k.len());
        put_len(&mut out, v.len());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

/// The most content one record carries.
pub const CONTENT_MAX: usize = 65535;

/// A record header no FastCGI client takes (version 0), sent where a
/// response is cut short on a unix socket: the web server fails the
/// request (nginx: "upstream sent unsupported FastCGI protocol version")
/// and cuts its own client's response. No reset can say so there (over
/// TCP one does), and a plain close was the response's end to nginx
/// without kept connections.
pub const CUT_MARK: [u8; 8] = [0, STDOUT, 0, 0, 0, 0, 0, 0];

/// Appends `content` as records of `kind` (split at 65535 bytes; an empty
/// content makes the empty end-of-stream record).
pub fn write_records(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    let mut chunks = content.chunks(CONTENT_MAX).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&header(kind, request_id, 0));
        return;
    }
    for chunk in chunks {
        out.extend_from_slice(&header(kind, request_id, chunk.len() as u16));
        out.extend_from_slice(chunk);
    }
}

/// A record's header, for `len` bytes of content and no padding.
pub fn header(kind: u8, request_id: u16, len: u16) -> [u8; 8] {
    let id = request_id.to_be_bytes();
    let l = len.to_be_bytes();
    [VERSION, kind, id[0], id[1], l[0], l[1], 0, 0]
}

pub fn end_request(out: &mut Vec<u8>, request_id: u16, app_status: u32, protocol_status: u8) {
    let mut body = app_status.to_be_bytes().to_vec();
    body.extend_from_slice(&[protocol_status, 0, 0, 0]);
    write_records(out, END_REQUEST, request_id, &body);
}

pub fn unknown_type(out: &mut Vec<u8>, kind: u8) {
    write_records(out, UNKNOWN_TYPE, 0, &[kind, 0, 0, 0, 0, 0, 0, 0]);
}

pub fn begin_request(out: &mut Vec<u8>, request_id: u16, role: u16, flags: u8) {
    let r = role.to_be_bytes();
    write_records(
        out,
        BEGIN_REQUEST,
        request_id,
        &[r[0], r[1], flags, 0, 0, 0, 0, 0],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        // RESPONDER + KEEP_CONN, id 1 (protocols.md §2.3)
        let mut out = Vec::new();
        begin_request(&mut out, 1, RESPONDER, KEEP_CONN);
        assert_eq!(out, [1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
        let rec = parse_record(&mut BytesMut::from(&out[..]))
            .unwrap()
            .unwrap();
        assert_eq!(parse_begin(&rec.content), Ok((RESPONDER, KEEP_CONN)));
        // name X, a 200-byte value: 01 80 00 00 c8 58 …
        let pairs = encode_pairs(&[(b"X", &[b'v'; 200])]);
        assert_eq!(&pairs[..6], &[0x01, 0x80, 0, 0, 0xc8, b'X']);
        let parsed = parse_pairs(&Bytes::from(pairs)).unwrap();
        assert_eq!(parsed[0].1.len(), 200);
    }

    #[test]
    fn padding_is_skipped() {
        let mut wire = vec![1, PARAMS, 0, 1, 0, 3, 5, 0, b'a', b'b', b'c', 0, 0, 0, 0, 0];
        wire.extend_from_slice(&[1, STDIN, 0, 1, 0, 0, 0, 0]);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            parse_record(&mut buf).unwrap().unwrap().content,
            Bytes::from_static(b"abc")
        );
        assert_eq!(parse_record(&mut buf).unwrap().unwrap().kind, STDIN);
        assert!(buf.is_empty());
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse_record(&mut BytesMut::from(&[2u8, 1, 0, 1, 0, 0, 0, 0][..])),
            Err(Error::BadVersion(2))
        );
        assert_eq!(
            parse_pairs(&Bytes::from_static(&[5, 5, b'a'])),
            Err(Error::TruncatedPair)
        );
        assert_eq!(
            parse_pairs(&Bytes::from_static(&[0x80, 0, 0])),
            Err(Error::TruncatedPair)
        );
        assert_eq!(
            parse_pairs(&Bytes::from_static(&[0, 1, b'x'])),
            Err(Error::EmptyName)
        );
        assert_eq!(parse_begin(&[0, 1, 0]), Err(Error::BadBeginRequest));
        assert_eq!(
            parse_record(&mut BytesMut::from(&b"GET / HTTP/1.1"[..])),
            Err(Error::LooksLikeHttp)
        );
    }

    proptest! {
        #[test]
        fn pairs_round_trip(pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..300), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let parsed = parse_pairs(&Bytes::from(encode_pairs(&refs))).unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> = parsed.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(got, pairs);
        }

        #[test]
        fn records_round_trip_in_pieces(content in proptest::collection::vec(any::<u8>(), 0..70000), id in 1u16.., cut in 0usize..80000) {
            let mut wire = Vec::new();
            write_records(&mut wire, STDOUT, id, &content);
            write_records(&mut wire, STDOUT, id, b"");
            let cut = cut.min(wire.len());
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            let mut fed = false;
            loop {
                match parse_record(&mut buf).unwrap() {
                    Some(r) => {
                        prop_assert_eq!(r.request_id, id);
                        if r.content.is_empty() { break; }
                        got.extend_from_slice(&r.content);
                    }
                    None => {
                        prop_assert!(!fed);
                        buf.extend_from_slice(&wire[cut..]);
                        fed = true;
                    }
                }
            }
            prop_assert_eq!(got, content);
        }

        #[test]
        fn the_count_is_exact_where_the_params_parse(data in proptest::collection::vec(any::<u8>(), 0..300),
                                                     pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..200), proptest::collection::vec(any::<u8>(), 0..200)), 0..10)) {
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let good = Bytes::from(encode_pairs(&refs));
            prop_assert_eq!(count_pairs(&good), pairs.len());
            // Random bytes: never more reserved than there are pairs before
            // the first fault, and exactly as many when they parse.
            let data = Bytes::from(data);
            match parse_pairs(&data) {
                Ok(parsed) => prop_assert_eq!(count_pairs(&data), parsed.len()),
                Err(_) => prop_assert!(count_pairs(&data) <= data.len() / 3),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(r)) = parse_record(&mut buf) {
                let _ = parse_pairs(&r.content);
                let _ = parse_begin(&r.content);
            }
        }
    }
}
