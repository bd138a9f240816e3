//! RFC 7692 permessage-deflate, the codec half: the answer to a client's
//! `Sec-WebSocket-Extensions` offer, and one message compressed or
//! inflated. No I/O; the frames around the messages are tungstenite's, and
//! the compression is flate2's.
//!
//! oxgate's answer always says `server_no_context_takeover` and
//! `client_no_context_takeover`, which RFC 7692 §7.1.1 lets a server ask
//! whatever the offer said: every message is compressed on its own. So a
//! socket keeps no compression state between messages (zlib's would cost
//! some 300 KiB a socket), and one compressor and one decompressor per
//! thread serve every socket.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What oxgate answers to an offer it takes.
pub const ANSWER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The answer to an offer that named `server_max_window_bits` (15, the
/// only one taken), which the answer must repeat (RFC 7692 §7.1.2.1).
pub const ANSWER_WITH_WINDOW: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// Messages shorter than this go out uncompressed (a message may be sent
/// either way): deflate would save nothing on them, and costs a pass.
pub const COMPRESS_MIN: usize = 64;

/// The four bytes a sync flush ends with, which the sender strips and the
/// receiver puts back (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The answer to the first of the offers in a `Sec-WebSocket-Extensions`
/// value (the client's order is its preference) that is a
/// permessage-deflate oxgate can take.
///
/// An offer is refused when a parameter is unknown, repeated or out of
/// range, or when it limits the server's window below 15 bits: the one
/// compressor a thread keeps uses the full window. Without an offer taken the
/// socket simply runs uncompressed.
pub fn answer(offers: &[u8]) -> Option<&'static str> {
    let offers = std::str::from_utf8(offers).ok()?;
    offers.split(',').find_map(answer_to)
}

fn answer_to(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
    {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquoted(v.trim())?)),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let ok = match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            // Any window the client uses is inflated with the full one.
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(v)) => window_bits(v).is_some(),
            ("server_max_window_bits", Some(v)) => window_bits(v) == Some(15),
            _ => false,
        };
        if !ok {
            return None;
        }
        seen.push(name);
    }
    Some(if seen.iter().any(|n| n == "server_max_window_bits") {
        ANSWER_WITH_WINDOW
    } else {
        ANSWER
    })
}

/// A parameter's value, without the quotes of a quoted string.
fn unquoted(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(inner) => inner.strip_suffix('"'),
        None => Some(v),
    }
}

/// A window size parameter: 8 to 15, in digits without a leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    // The fastest level: with each message compressed alone, setting up
    // the compressor is most of the work on a short message, and the
    // ratio on chat-sized JSON is as good (6 µs for 1 KiB here, against
    // 15 at the default level).
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static DECOMPRESSOR: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Appends `payload` compressed as one message (a raw deflate stream,
/// sync-flushed, without the flush's four last bytes) to `out`.
pub fn compress(payload: &[u8], out: &mut Vec<u8>) {
    COMPRESSOR.with_borrow_mut(|c| {
        c.reset();
        let start = out.len();
        loop {
            out.reserve(payload.len() / 2 + 64);
            let consumed = c.total_in() as usize;
            // Only fails on a stream error, which a fresh stream given
            // plain bytes cannot have.
            let _ = c.compress_vec(&payload[consumed..], out, FlushCompress::Sync);
            // Done when all the input is in and the flush had room to end.
            if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        debug_assert!(out[start..].ends_with(&TAIL));
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    });
}

/// Why a compressed message could not be inflated.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the largest message allowed.
    TooBig,
    /// It is not a deflate stream (or needs a context it may not use).
    Corrupt,
}

/// Appends the message `payload` (as it came, without the four bytes
/// RFC 7692 strips) inflates to to `out`, stopping as soon as it passes
/// `max` bytes: a small message cannot expand into a large allocation.
pub fn inflate(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        d.reset(false);
        let start = out.len();
        // Inflated a piece at a time, so that `out` never passes `max` by
        // more than a piece.
        let mut piece = [0u8; 16 * 1024];
        for input in [payload, &TAIL[..]] {
            let mut consumed = 0;
            loop {
                let (in_before, out_before) = (d.total_in(), d.total_out());
                let status = d
                    .decompress(&input[consumed..], &mut piece, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let taken = (d.total_in() - in_before) as usize;
                let produced = (d.total_out() - out_before) as usize;
                consumed += taken;
                out.extend_from_slice(&piece[..produced]);
                if out.len() - start > max {
                    return Err(InflateError::TooBig);
                }
                // A final block ends the stream: what follows is not read.
                if status == Status::StreamEnd {
                    break;
                }
                // All in, and the piece was not what stopped it.
                if consumed == input.len() && produced < piece.len() {
                    break;
                }
                if taken == 0 && produced == 0 {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offers_browsers_and_libraries_send_are_taken() {
        // Chrome and Firefox; Python's websockets; with both no-takeovers.
        for offer in [
            &b"permessage-deflate; client_max_window_bits"[..],
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            b"PerMessage-Deflate",
            b"x-webkit-deflate-frame, permessage-deflate",
            b"permessage-deflate; client_max_window_bits=\"10\"",
        ] {
            assert_eq!(answer(offer), Some(ANSWER), "{offer:?}");
        }
        // A server window named in the offer is named in the answer.
        assert_eq!(
            answer(b"permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"),
            Some(ANSWER_WITH_WINDOW)
        );
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_refused() {
        for offer in [
            &b""[..],
            b"x-webkit-deflate-frame",
            // A smaller server window than the shared compressor keeps to.
            b"permessage-deflate; server_max_window_bits=10",
            b"permessage-deflate; server_max_window_bits",
            b"permessage-deflate; client_max_window_bits=16",
            b"permessage-deflate; client_max_window_bits=+9",
            b"permessage-deflate; client_max_window_bits=09",
            b"permessage-deflate; client_max_window_bits=\"10",
            b"permessage-deflate; unknown",
            b"permessage-deflate; server_no_context_takeover=1",
            b"permessage-deflate; client_max_window_bits; client_max_window_bits",
        ] {
            assert_eq!(answer(offer), None, "{offer:?}");
        }
        // A later offer may still be taken.
        assert_eq!(
            answer(b"permessage-deflate; server_max_window_bits=9, permessage-deflate"),
            Some(ANSWER)
        );
    }

    #[test]
    fn rfc_7692_example_inflates() {
        // §7.2.3.1: "Hello" compressed, without the tail.
        let mut out = Vec::new();
        inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let mut packed = Vec::new();
        compress(&vec![0u8; 10 << 20], &mut packed);
        assert!(packed.len() < (10 << 20) / 50, "{}", packed.len());
        let mut out = Vec::new();
        assert_eq!(
            inflate(&packed, 1 << 20, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(out.len() <= (1 << 20) + 16 * 1024, "{}", out.len());
        out.clear();
        assert_eq!(inflate(&packed, 10 << 20, &mut out), Ok(()));
        assert_eq!(out.len(), 10 << 20);
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut out = Vec::new();
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 100, &mut out),
            Err(InflateError::Corrupt)
        );
    }

    proptest! {
        #[test]
        fn what_is_compressed_inflates_back(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            let mut packed = Vec::new();
            compress(&data, &mut packed);
            prop_assert!(!packed.ends_with(&TAIL));
            let mut out = Vec::new();
            inflate(&packed, data.len(), &mut out).unwrap();
            prop_assert_eq!(out, data);
        }

        #[test]
        fn any_bytes_inflate_within_the_limit_or_fail(data in proptest::collection::vec(any::<u8>(), 0..2_000)) {
            let mut out = Vec::new();
            let _ = inflate(&data, 4096, &mut out);
            prop_assert!(out.len() <= 4096 + 16 * 1024);
        }

        #[test]
        fn any_offer_is_answered_without_panic(s in "\\PC{0,80}") {
            let _ = answer(s.as_bytes());
        }
    }
}
