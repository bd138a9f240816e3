//! The kinds of app, each a `request::Handler`.

pub mod python;
