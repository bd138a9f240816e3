//! Pure codecs for the gateway protocols: bytes in, requests out, no I/O.

pub mod fastcgi;
pub mod scgi;
mod sniff;
pub mod uwsgi;

pub use sniff::looks_like_http;
