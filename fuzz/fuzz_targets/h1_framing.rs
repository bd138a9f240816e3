//! The HTTP/1.1 framing tracker on arbitrary bytes: whole, and split in two
//! (the same head must be found either way).
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::proto::h1_framing::FramingTracker;

fuzz_target!(|data: &[u8]| {
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
