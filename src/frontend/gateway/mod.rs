//! The gateway-protocol front ends: a web server in front (nginx's
//! uwsgi_pass, scgi_pass, fastcgi_pass; Apache; lighttpd) sends CGI
//! variables and the body; the variables are normalised by
//! `request::cgi` into the same protocol-neutral request the HTTP front
//! end makes, and the answer goes back in the protocol's form.

mod fast_path;
mod fastcgi;
mod files;
mod lazy_stream;
mod oneshot;
mod response;
mod settings;
mod stall;

pub use fast_path::{RawConn, serve_fast};
pub use fastcgi::serve_fastcgi;
pub use lazy_stream::LazyStream;
pub use oneshot::{OneShot, serve};
pub use settings::{GatewaySettings, INLINE_BODY_MAX};
