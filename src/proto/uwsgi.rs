//! The uwsgi protocol's request packet (docs/design/protocols.md §1): a
//! 4-byte header (modifier1, datasize as u16 little-endian, modifier2) and
//! `datasize` bytes of vars, each a u16-LE-length key and value. The body
//! follows, CONTENT_LENGTH bytes. The response is raw HTTP, no framing.
//!
//! Pure code: bytes in, a parsed head or an error out, no I/O.

use bytes::{Buf, Bytes, BytesMut};

/// Most vars accepted in one packet (gunicorn caps at 1000 too).
pub const MAX_VARS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub modifier1: u8,
    pub modifier2: u8,
    /// In the order sent; keys may repeat.
    pub vars: Vec<(Bytes, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The vars block is larger than the configured limit (`--buffer-size`).
    TooLarge {
        size: usize,
        limit: usize,
    },
    /// A key/value length runs past the end of the vars block.
    Truncated {
        at: usize,
    },
    ZeroLengthKey {
        at: usize,
    },
    TooManyVars,
    /// The bytes look like an HTTP request: the client speaks HTTP to a
    /// uwsgi socket (a common mistake).
    LooksLikeHttp,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::TooLarge { size, limit } => write!(
                f,
                "uwsgi vars block of {size} bytes is over --buffer-size {limit}"
            ),
            Error::Truncated { at } => write!(f, "uwsgi var at byte {at} runs past the vars block"),
            Error::ZeroLengthKey { at } => write!(f, "uwsgi var at byte {at} has an empty name"),
            Error::TooManyVars => write!(f, "more than {MAX_VARS} uwsgi vars"),
            Error::LooksLikeHttp => write!(
                f,
                "HTTP was sent to a uwsgi socket: HTTP clients need --http-socket \
                 (or socket with protocol = http); nginx needs uwsgi_pass here, not proxy_pass"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Parses a request head from the start of `buf`. Returns `Ok(None)` when
/// more bytes are needed; on success the head's bytes are consumed from
/// `buf` (what is left is the start of the body).
pub fn parse(buf: &mut BytesMut, limit: usize) -> Result<Option<Head>, Error> {
    if super::looks_like_http(buf) {
        return Err(Error::LooksLikeHttp);
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    let modifier1 = buf[0];
    let size = usize::from(u16::from_le_bytes([buf[1], buf[2]]));
    let modifier2 = buf[3];
    if size > limit {
        return Err(Error::TooLarge { size, limit });
    }
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    let block = buf.split_to(size).freeze();
    Ok(Some(Head {
        modifier1,
        modifier2,
        vars: parse_vars(&block)?,
    }))
}

/// The pairs of a vars block; the values share the block's memory.
pub fn parse_vars(block: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Error> {
    let mut vars = Vec::new();
    let mut at = 0;
    let len_at = |at: usize| -> Result<usize, Error> {
        let b = block.get(at..at + 2).ok_or(Error::Truncated { at })?;
        Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    while at < block.len() {
        if vars.len() == MAX_VARS {
            return Err(Error::TooManyVars);
        }
        let klen = len_at(at)?;
        if klen == 0 {
            return Err(Error::ZeroLengthKey { at });
        }
        let kstart = at + 2;
        let kend = kstart + klen;
        let vlen = len_at(kend).map_err(|_| Error::Truncated { at })?;
        let vend = kend + 2 + vlen;
        if vend > block.len() {
            return Err(Error::Truncated { at });
        }
        vars.push((block.slice(kstart..kend), block.slice(kend + 2..vend)));
        at = vend;
    }
    Ok(vars)
}

/// Encodes a request packet (for tests, fuzzing and a future client).
pub fn encode(modifier1: u8, modifier2: u8, vars: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k);
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v);
    }
    let mut out = vec![modifier1];
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.push(modifier2);
    out.extend_from_slice(&block);
    out
}

/// uWSGI's answer to a ping (modifier1 100, modifier2 0): a pong header.
pub const PONG: [u8; 4] = [100, 0, 0, 1];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_worked_example() {
        // protocols.md §1.3: POST /hi with body "hello".
        let mut wire = encode(
            0,
            0,
            &[
                (b"REQUEST_METHOD", b"POST"),
                (b"PATH_INFO", b"/hi"),
                (b"CONTENT_LENGTH", b"5"),
            ],
        );
        assert_eq!(&wire[..4], &[0, 0x39, 0, 0]);
        wire.extend_from_slice(b"hello");
        let mut buf = BytesMut::from(&wire[..]);
        let head = parse(&mut buf, 65535).unwrap().unwrap();
        assert_eq!(head.modifier1, 0);
        assert_eq!(head.vars.len(), 3);
        assert_eq!(
            head.vars[1],
            (Bytes::from_static(b"PATH_INFO"), Bytes::from_static(b"/hi"))
        );
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        let wire = encode(0, 0, &[(b"A", b"1")]);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(parse(&mut buf, 65535), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_blocks_are_refused() {
        // a value length running past the block
        let mut bad = vec![0, 6, 0, 0, 1, 0, b'A', 9, 0, b'x'];
        assert_eq!(
            parse(&mut BytesMut::from(&bad[..]), 65535),
            Err(Error::Truncated { at: 0 })
        );
        // a zero-length key
        bad = vec![0, 4, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse(&mut BytesMut::from(&bad[..]), 65535),
            Err(Error::ZeroLengthKey { at: 0 })
        );
        // ending inside a length field
        bad = vec![0, 1, 0, 0, 1];
        assert_eq!(
            parse(&mut BytesMut::from(&bad[..]), 65535),
            Err(Error::Truncated { at: 0 })
        );
        // over the limit
        let big = encode(0, 0, &[(b"HTTP_COOKIE", &[b'x'; 5000])]);
        assert!(matches!(
            parse(&mut BytesMut::from(&big[..]), 4096),
            Err(Error::TooLarge { .. })
        ));
        // HTTP on a uwsgi socket
        assert_eq!(
            parse(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]), 65535),
            Err(Error::LooksLikeHttp)
        );
        // too many vars
        let many: Vec<(&[u8], &[u8])> = (0..MAX_VARS + 1).map(|_| (&b"K"[..], &b""[..])).collect();
        let wire = encode(0, 0, &many);
        assert_eq!(
            parse(&mut BytesMut::from(&wire[..]), 65535),
            Err(Error::TooManyVars)
        );
    }

    proptest! {
        #[test]
        fn round_trip(vars in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..40), proptest::collection::vec(any::<u8>(), 0..60)), 0..30),
            m1 in any::<u8>(), m2 in any::<u8>(), split in 0usize..2000) {
            let refs: Vec<(&[u8], &[u8])> = vars.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let wire = encode(m1, m2, &refs);
            prop_assume!(!crate::proto::looks_like_http(&wire));
            // fed in two pieces: the first answers "more", the whole parses
            let split = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..split]);
            let first = parse(&mut buf, 65535).unwrap();
            if split < wire.len() {
                prop_assert!(first.is_none());
                buf.extend_from_slice(&wire[split..]);
            }
            let head = match first { Some(h) => h, None => parse(&mut buf, 65535).unwrap().unwrap() };
            prop_assert_eq!(head.modifier1, m1);
            prop_assert_eq!(head.modifier2, m2);
            let got: Vec<(Vec<u8>, Vec<u8>)> = head.vars.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(got, vars);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&mut BytesMut::from(&data[..]), 65535);
        }
    }
}
