//! The uwsgi codec on arbitrary bytes, whole and split in two: it must
//! never panic, and splitting must not change the answer.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oxgate::proto::uwsgi;

fuzz_target!(|data: &[u8]| {
    let whole = uwsgi::parse(&mut BytesMut::from(data), 65535);
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) % data.len();
    let mut buf = BytesMut::from(&data[..cut]);
    let first = uwsgi::parse(&mut buf, 65535);
    if let Ok(None) = first {
        buf.extend_from_slice(&data[cut..]);
        let second = uwsgi::parse(&mut buf, 65535);
        assert_eq!(second.map(|h| h.map(|h| h.vars)), whole.map(|h| h.map(|h| h.vars)));
    }
});
