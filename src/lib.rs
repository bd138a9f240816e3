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

// mimalloc for every Rust allocation, in the binary and the extension module
// alike (CPython keeps its own). glibc's malloc sorts its free lists again
// (malloc_consolidate) on each request for a block of a KiB or more, such as
// a connection's 16 KiB buffer: with mimalloc, nginx → oxgate → php-cgi went
// from 0.85x to 0.93x php-fpm's rate. Its transparent huge pages are off
// (Cargo.toml): they cost each idle connection 24 KiB of resident memory
// instead of 4 (docs/performance.md, "The allocator").
// Not in the fuzz targets: AddressSanitizer checks glibc's heap, not
// mimalloc's.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Run by the loader, before main and before the extension module's init:
// mimalloc's settings must be made before its first allocation.
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_SETTINGS: extern "C" fn() = sys::heap::allocator_settings;
