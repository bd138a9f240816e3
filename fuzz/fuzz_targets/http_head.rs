//! The HTTP front end's own checks (frontend/http/strict.rs) on any head
//! httparse, hyper's parser, accepts: never a panic, and every refusal is
//! a 4xx with a line to say why.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::frontend::http::strict::{HeadLimits, check_head};

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let Ok(mut request) = http::Request::builder().method(method).uri(path).body(()) else {
        return;
    };
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    let (parts, ()) = request.into_parts();
    for limits in [
        HeadLimits { request_line: 4094, field_size: 8190 },
        HeadLimits { request_line: 0, field_size: 0 },
        HeadLimits { request_line: 16, field_size: 16 },
    ] {
        let verdict = check_head(&parts, &limits);
        if let Err(refusal) = verdict {
            let (status, _) = refusal.status();
            assert!((400..500).contains(&status));
            assert!(refusal.reason().ends_with('\n'));
        }
    }
});
