//! The HTTP front end (HTTP/1.1 and HTTP/2, over TLS or not): hyper (HTTP/1.1)
//! and h2 (HTTP/2) parse and frame, rustls encrypts; this module only turns
//! their requests into the protocol-neutral [`Request`](crate::request::Request)
//! and a [`Response`](crate::request::Response) back into theirs.

mod body;
mod conn;
mod context;
mod convert;
mod framing_watch;
mod http2;
mod lent;
mod peek;
pub mod proxy_header;
mod request_body;
mod service;
pub mod strict;
mod watch;

mod batch;
mod sendfile;

pub use batch::FlushQueue;
pub use conn::{Peek, serve_connection};
pub use context::HttpSettings;
pub use sendfile::{
    FRAME_MAX as SENDFILE_PLACEHOLDER_SIZE, reserve_placeholder as reserve_sendfile_placeholder,
};
pub use service::REFUSED_STREAMS;
