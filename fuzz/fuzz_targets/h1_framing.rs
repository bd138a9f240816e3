//! The HTTP/1.1 framing tracker on arbitrary bytes: whole, and split in two
//! (the same head must be found either way); and the HTTP/1.0 WebSocket
//! handshake finder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::proto::h1_framing::FramingTracker;

fuzz_target!(|data: &[u8]| {
    // An HTTP/1.0 WebSocket handshake found points at its version's `0`.
    if let Some(at) = oxgate::proto::h1_framing::http_1_0_websocket_handshake(data) {
        assert_eq!(&data[at - 7..=at], b"HTTP/1.0");
    }
    let whole = FramingTracker::new(8192, 100).feed(data);
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let mut split = FramingTracker::new(8192, 100);
    let first = split.feed(&data[..cut]);
    let second = split.feed(&data[cut..]);
    assert_eq!(first.or(second), whole);
});
