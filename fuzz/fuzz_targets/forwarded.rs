//! A `Forwarded` header of any text: never a panic, and what it reads is
//! read again the same once written back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::proto::forwarded::{parse, render};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(elements) = parse(text) {
        assert!(elements.iter().all(|e| !e.pairs.is_empty()));
        assert_eq!(parse(&render(&elements)), Ok(elements));
    }
});
