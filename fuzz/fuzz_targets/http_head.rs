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
    let (mut parts, ()) = request.into_parts();
    // The same head as HTTP/2's too, whose field count is checked here.
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        parts.version = version;
        for limits in [
            HeadLimits {
                request_line: 4094,
                field_size: 8190,
                fields: 100,
                head: 65536,
            },
            HeadLimits {
                request_line: 0,
                field_size: 0,
                fields: 0,
                head: 0,
            },
            HeadLimits {
                request_line: 16,
                field_size: 16,
                fields: 2,
                head: 64,
            },
        ] {
            check(&parts, &limits);
        }
    }
});

/// Every refusal is a 4xx with a line to say why.
fn check(parts: &http::request::Parts, limits: &HeadLimits) {
    if let Err(refusal) = check_head(parts, limits) {
        let (status, _) = refusal.status();
        assert!((400..500).contains(&status));
        assert!(refusal.reason().ends_with('\n'));
    }
}
