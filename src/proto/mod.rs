//! Pure codecs for the gateway protocols and CGI: bytes in, requests (or a
//! script's response head) out, no I/O.

pub mod byte_ranges;
pub mod cgi_response;
pub mod fastcgi;
pub mod forwarded;
pub mod h1_framing;
pub mod permessage_deflate;
pub mod scgi;
mod sniff;
pub mod uwsgi;

pub use cgi_response::is_hop_by_hop;
pub use sniff::looks_like_http;
