//! The front ends: each turns bytes from a socket into `Request`s for a
//! `Handler`, and its `Response`s back into bytes.

pub mod gateway;
pub mod http;
pub mod tls;
