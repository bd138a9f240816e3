//! permessage-deflate on arbitrary bytes: an offer is answered or not, a
//! message inflates within its limit or fails, and what is compressed
//! inflates back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::proto::permessage_deflate::{answer, compress, inflate};

fuzz_target!(|data: &[u8]| {
    let _ = answer(data);
    let mut out = Vec::new();
    if inflate(data, 1 << 16, &mut out).is_ok() {
        assert!(out.len() <= 1 << 16);
    }
    let mut packed = Vec::new();
    compress(data, &mut packed);
    out.clear();
    inflate(&packed, data.len(), &mut out).expect("our own compression inflates");
    assert_eq!(out, data);
});
