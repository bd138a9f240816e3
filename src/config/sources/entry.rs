//! What reading config sources produces: `key = value` entries, each with
//! the place it came from.

use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

use crate::config::ConfigError;

/// Where an entry came from, for `--print-config` and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    Env(String),
    File { path: Rc<PathBuf>, line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::CommandLine => f.write_str("command line"),
            Origin::Env(name) => write!(f, "environment ${name}"),
            Origin::File { path, line: 0 } => write!(f, "{}", path.display()),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

pub(super) fn err<T>(origin: &Origin, msg: impl fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("{origin}: {msg}")))
}
