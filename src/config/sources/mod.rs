//! Config files and environment variables, read the way uWSGI reads them.
//!
//! Every source becomes one ordered stream of `key = value` entries with
//! their origin. A config file named on the command line is expanded in
//! place, so later options override it and earlier ones are overridden by
//! it, as in uWSGI. While a file is read, placeholders (`%(name)`, `$(ENV)`,
//! `@(file)`, magic `%d`-style variables, `%(a + b)` arithmetic), includes
//! (`ini = other.ini`, `ini = :section`) and logic blocks (`if-env` …
//! `endif`, `for` … `endfor`) are applied, as uWSGI's parser does.

mod entry;
pub mod formats;
mod logic;
mod magic;
mod reader;

pub use entry::{Entry, Origin};
pub use formats::{format_of, parse_ini, parse_json, parse_xml, parse_yaml};
pub use reader::{INCLUDE_KEYS, Reader, is_directive};
