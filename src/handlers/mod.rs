//! The kinds of app, each a `request::Handler`.

pub mod python;
pub mod static_files;
