//! The SCGI codec on arbitrary bytes, whole and split in two.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oxgate::proto::scgi;

fuzz_target!(|data: &[u8]| {
    let whole = scgi::parse(&mut BytesMut::from(data), 65535);
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let mut buf = BytesMut::from(&data[..cut]);
    if let Ok(None) = scgi::parse(&mut buf, 65535) {
        buf.extend_from_slice(&data[cut..]);
        assert_eq!(scgi::parse(&mut buf, 65535), whole);
    }
});
