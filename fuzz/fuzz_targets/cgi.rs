//! The CGI variable rules on arbitrary variables: `normalise` must keep
//! its promises (`check_normalised`) whatever a front end sends.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use oxgate::request::ConnInfo;
use oxgate::request::cgi::{Normalised, check_normalised, normalise, split_host};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // NUL-separated name, value, name, value…
    let mut parts = rest.split(|&b| b == 0).map(Bytes::copy_from_slice);
    let mut raw = Vec::new();
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        raw.push((k, v));
    }
    for (_, v) in &raw {
        let _ = split_host(v);
    }
    let info = ConnInfo::new(Some("127.0.0.1:80".parse().unwrap()), None);
    let Normalised {
        vars,
        content_length,
        is_head,
        repeated_headers,
        ..
    } = normalise(raw, &info, flags & 1 == 1);
    if let Err(e) = check_normalised(&vars, content_length, is_head) {
        panic!("{e}");
    }
    // Each header given more than once: its values apart (two or more),
    // beside the variable's value they were joined into.
    for r in &repeated_headers {
        assert!(r.values.len() >= 2, "{r:?}");
        assert!(r.name.as_bytes().starts_with(b"HTTP_"), "{r:?}");
        let joined = vars.iter().find(|(k, _)| *k == r.name).map(|(_, v)| v);
        assert_eq!(joined, Some(&r.joined), "{r:?}");
    }
});
