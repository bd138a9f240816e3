//! The master: owns the sockets, forks the workers, watches them, and never
//! runs app code after a fork. What each signal does is in
//! `crate::lifecycle`; docs/processes.md has the user's view.

mod child;
mod daemons;
mod effects;
mod fifo;
mod handover;
mod pools;
mod run;
pub mod scoreboard;
mod signals;
mod state;
mod stats;
mod supervisor;
mod systemd_status;
mod wake;
mod watch;

pub use handover::Handover;
pub use run::{run, starting_hooks};
pub use signals::block_early as block_signals_early;
pub use signals::vacuum_if_stopped_loading;
pub use supervisor::{EXIT_APP_EDITED, EXIT_APP_LOAD, EXIT_APP_STARTUP, EXIT_LIFESPAN_STARTUP};
