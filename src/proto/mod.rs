//! Pure codecs for the gateway protocols: bytes in, requests out, no I/O.

pub mod fastcgi;
pub mod scgi;
pub mod uwsgi;
