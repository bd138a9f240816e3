//! ASGI 3 (asgiref's `www` and `lifespan` specs): async apps, served by
//! the same front ends as WSGI apps.
//!
//! Each worker runs one asyncio (or uvloop) loop on a Python thread of its
//! own, started after the fork. The worker's tokio thread never takes the
//! GIL on the request path: it hands a request to the loop through an inbox
//! and a pipe (`host`), and the app's messages come back through a shared
//! [`exchange::Exchange`] that wakes the connection's task. Each side
//! batches: one wake-up carries every request or message that arrived
//! meanwhile, and the loop's wake-ups of connection tasks go through one
//! relay task (`wake_relay`).

mod bridge;
mod driver;
mod exchange;
mod host;
mod mailbox;
mod ready;
mod scope;
mod wake_relay;
mod websocket;
mod ws;
mod ws_deflate;

pub use host::{ASGI_CORES, AsgiApp, AsgiHost, loop_name};
