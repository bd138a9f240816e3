//! A CGI script's response head on arbitrary output: never a panic, and
//! a head read from a prefix is the head read from the whole.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::proto::cgi_response;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let nph = data[0] & 1 == 1;
    let out = &data[1..];
    let whole = cgi_response::parse(out, nph);
    if let Ok(Some(head)) = &whole {
        assert!(head.len <= out.len());
        assert!((200..=599).contains(&head.status));
        // The head does not depend on what follows it.
        assert_eq!(cgi_response::parse(&out[..head.len], nph).as_ref(), Ok(&Some(head.clone())));
    }
});
