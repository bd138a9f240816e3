//! The kinds of app, each a `request::Handler`.

pub mod cgi;
pub mod python;
mod root_dir;
pub mod static_files;
