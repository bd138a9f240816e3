//! Recognising the wrong protocol on a gateway socket.

/// HTTP sent to a gateway socket (a common mistake: the wrong nginx
/// directive or a browser): the first bytes are an HTTP method.
pub fn looks_like_http(buf: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
    ];
    buf.len() >= 4 && METHODS.iter().any(|m| buf.starts_with(m))
}
