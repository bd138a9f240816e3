//! The request log: one line per request, whatever protocol it came on, in
//! uWSGI's default format, a `--log-format` of uWSGI's `%(var)` variables,
//! or JSON (`--log-encoder json`).
//!
//! Each line is formatted in full and written with one `write()` to stderr,
//! so lines from many threads and workers never interleave (see `logfile`).

mod fields;
mod format;
mod line;
mod writer;

pub use fields::field_names;
pub use line::Counts;
pub use writer::RequestLog;
