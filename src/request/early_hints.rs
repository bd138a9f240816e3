//! 103 Early Hints (RFC 8297): `Link` fields a client can act on (preload
//! a stylesheet, preconnect to an origin) while the app is still making
//! its response. A front end that can put an informational response on the
//! wire ahead of the final one gives its requests an [`EarlyHints`]; the
//! others give none, and the app is not offered the feature.

use bytes::Bytes;

/// The most a 103's `Link` values may add up to: hints are a few URLs,
/// and a head the client must buffer should stay small.
pub const EARLY_HINTS_MAX: usize = 8 * 1024;

/// Sends informational responses on one connection.
pub trait EarlyHints: Send + Sync {
    /// Sends a 103 with one `Link` field for each value, ahead of the
    /// final response; the caller makes sure that response's head has
    /// not been handed to the front end yet. False when the 103 was not
    /// sent: the connection is gone, or its earlier output still waits
    /// for the client to read it. Callable from any thread.
    fn send(&self, links: &[Bytes]) -> bool;
}

/// Why `links` cannot be a 103's `Link` fields, if they cannot.
pub fn early_hints_fault(links: &[Bytes]) -> Option<&'static str> {
    if links.iter().map(|l| l.len() + 9).sum::<usize>() > EARLY_HINTS_MAX {
        return Some("the links add up to more than 8 KiB");
    }
    // A field value: visible characters, spaces and tabs (RFC 9110 §5.5);
    // above all no CR or LF, which would end the field.
    let bad = |c: u8| (c < 0x20 && c != b'\t') || c == 0x7f;
    if links
        .iter()
        .any(|l| l.is_empty() || l.iter().copied().any(bad))
    {
        return Some("a link is empty or contains a control character");
    }
    None
}

/// The HTTP/1.1 wire form of a 103 with these links (already checked by
/// [`early_hints_fault`]).
pub fn early_hints_head(links: &[Bytes]) -> Vec<u8> {
    const STATUS: &[u8] = b"HTTP/1.1 103 Early Hints\r\n";
    let mut head =
        Vec::with_capacity(STATUS.len() + links.iter().map(|l| l.len() + 8).sum::<usize>() + 2);
    head.extend_from_slice(STATUS);
    for link in links {
        head.extend_from_slice(b"Link: ");
        head.extend_from_slice(link);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_103_has_one_link_field_per_value() {
        let links = [
            Bytes::from_static(b"</style.css>; rel=preload; as=style"),
            Bytes::from_static(b"<https://cdn.example>; rel=preconnect"),
        ];
        assert_eq!(early_hints_fault(&links), None);
        assert_eq!(
            early_hints_head(&links),
            b"HTTP/1.1 103 Early Hints\r\n\
              Link: </style.css>; rel=preload; as=style\r\n\
              Link: <https://cdn.example>; rel=preconnect\r\n\r\n"
        );
    }

    #[test]
    fn links_that_would_end_the_field_or_swell_the_head_are_refused() {
        for bad in [&b"</a>\r\nSet-Cookie: x=1"[..], b"</a>\n", b"</a>\0", b""] {
            assert!(early_hints_fault(&[Bytes::copy_from_slice(bad)]).is_some());
        }
        let big = vec![Bytes::from(vec![b'a'; 1000]); 9];
        assert!(early_hints_fault(&big).is_some());
        assert_eq!(
            early_hints_fault(&[Bytes::from_static(b"</a>;\trel=preload")]),
            None
        );
    }
}
