//! Configuration: the option table (`defs`), the sources that produce
//! `(option, value)` settings in order (`parse`, `sources`), and the
//! resolved [`Config`] the server runs on (`resolve`, `settings`).

pub mod defs;
mod doc;
mod parse;
mod resolve;
mod settings;
pub mod sources;

pub use doc::{help_text, print_config};
pub use parse::{ConfigError, Loaded, Setting, load, parse_args, parse_bool, parse_int};
pub use resolve::resolve;
pub use settings::*;
