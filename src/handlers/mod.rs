//! The kinds of app, each a `request::Handler`.

pub mod cgi;
pub mod fastcgi;
pub mod python;
mod root_dir;
mod script_path;
pub mod static_files;
