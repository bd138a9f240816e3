//! The HTTP/1.1 front end: hyper parses and frames; this module only turns
//! hyper's request into the protocol-neutral [`Request`](crate::request::Request)
//! and a [`Response`](crate::request::Response) back into hyper's.

mod body;
mod conn;
mod convert;

mod batch;
mod sendfile;

pub use batch::FlushQueue;
pub use conn::{HttpSettings, Peek, serve_connection};
