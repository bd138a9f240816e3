//! The stats server (`--stats`, `--stats-http`) and the Prometheus metrics
//! (`/metrics` on the stats HTTP server, or `--metrics ADDR`), served by the
//! master from the scoreboard.
//!
//! The JSON is uWSGI's (core/master_utils.c), field for field, so the real
//! `uwsgitop` reads it; each core also carries the request it is running.
//! Connections are non-blocking and polled by the master's loop: a slow
//! client can never stall supervision.

mod json;
mod metrics;
mod queue;
mod server;
mod snapshot;

pub use self::json::render_json;
pub use self::metrics::render_metrics;
pub(super) use self::queue::listen_queue;
pub use self::server::Stats;
pub use self::snapshot::{Snapshot, Want, WorkerView};
