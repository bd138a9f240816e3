//! Configuration: the option table (`defs`), how values are read
//! (`value`), the sources that produce `(option, value)` settings in order
//! (`parse`, `sources`), the resolved [`Config`] the server runs on
//! (`resolve`, `settings`), and what is generated from the table: `--help`,
//! `--print-config`, docs/options.md and docs/oxgate.1 (`doc`).

mod completions;
pub mod defs;
mod doc;
pub mod gunicorn;
mod parse;
mod resolve;
mod settings;
pub mod sources;
pub mod uvicorn;
mod uwsgi_names;
mod value;

pub use doc::{help_text, man_page, options_markdown, print_config};
pub use parse::{ConfigError, Loaded, Setting, load, load_with, parse_args};
pub use resolve::resolve;
pub use settings::*;
pub use value::{parse_bool, parse_int};
