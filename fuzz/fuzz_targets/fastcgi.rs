//! The FastCGI record and pair codecs on arbitrary bytes: never panic, and
//! records read from a stream split in two are the same records.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oxgate::proto::fastcgi;

fn records(mut buf: BytesMut) -> Vec<fastcgi::Record> {
    let mut out = Vec::new();
    while let Ok(Some(r)) = fastcgi::parse_record(&mut buf) {
        let _ = fastcgi::parse_pairs(&r.content);
        let _ = fastcgi::parse_begin(&r.content);
        out.push(r);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = records(BytesMut::from(data));
    if data.is_empty() {
        return;
    }
    // Split at a record boundary or not: complete records parse the same.
    let cut = usize::from(data[0]) % data.len();
    let mut buf = BytesMut::from(&data[..cut]);
    let mut got = Vec::new();
    while let Ok(Some(r)) = fastcgi::parse_record(&mut buf) {
        got.push(r);
    }
    buf.extend_from_slice(&data[cut..]);
    got.extend(records(buf));
    assert_eq!(got, whole);
});
