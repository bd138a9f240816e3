//! oxgate: an application server for Python web apps.
//!
//! The layers, each importing only those below it (`scripts/layers.py`
//! checks it):
//!
//! * `cli`: the `oxgate` command, for the binary and the extension module;
//! * `top`: `oxgate top`, the live view of a server's stats;
//! * `startup`: from a `Config` to a running master or single process;
//! * `master`: the supervisor of the workers, the scoreboard, stats;
//! * `process`: daemonize, pidfiles, privileges, systemd, control signals;
//! * `worker`: a serving process: accept, dispatch, the request log;
//! * `frontend`: HTTP/1.1 and the uwsgi, SCGI and FastCGI drivers;
//! * `handlers`: the apps (`python/`: WSGI);
//! * `config`: the option table and every source of settings;
//! * `request`: the protocol-neutral request, the `Handler` trait, routing
//!   and the CGI variable rules;
//! * leaves: `lifecycle` (reload and stop kinds, their signals), `proto`
//!   (pure codecs), `listen` (sockets), `log`, `sys`.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod config;
pub mod frontend;
pub mod handlers;
pub mod lifecycle;
pub mod listen;
pub mod log;
pub mod master;
pub mod process;
pub mod proto;
pub mod request;
pub mod startup;
pub mod sys;
pub mod top;
pub mod worker;
