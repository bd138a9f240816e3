//! oxgate's own log lines and the log file behind stderr. A leaf: it
//! imports only `sys`.

pub mod encode;
pub mod file;
pub mod route;
pub mod say;
pub mod statsd;
