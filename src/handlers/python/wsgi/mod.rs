//! PEP 3333: the environ, `start_response`, `wsgi.input`, `wsgi.file_wrapper`
//! and the driver that turns an app's iterable into response chunks.
//!
//! Two ways to run a call, chosen per request:
//! * inline, on the event-loop thread (`--threads 1` and a body already in
//!   memory): the cheapest path, no thread hand-off (embedding.md §1);
//! * on a Python thread of the pool (`--threads N`, or a body still
//!   arriving, which the app may block on): chunks flow through bounded
//!   channels, so memory stays bounded both ways.
//!
//! A semaphore with one permit per Python thread bounds both paths together.

mod body;
mod call;
mod environ;
mod error;
mod file_wrapper;
mod helpers;
mod host;
mod input;
mod schedule;
mod start_response;
mod vhost;

pub(super) use helpers::helpers;
pub use host::{WsgiApp, WsgiHost};
