//! uWSGI's magic `%x` variables (the config file's path and names, the
//! host, user and group, the time), and `@(file)` / `@(exec://cmd)` reads.

use std::path::PathBuf;
use std::time::SystemTime;

use nix::unistd::{Group, User, getgid, getuid};

use super::logic::djb33x;

/// The config file being read, for the magic variables.
#[derive(Debug, Clone)]
pub(super) struct FileInfo {
    /// As named on the command line or in the include.
    pub(super) given: String,
    pub(super) path: PathBuf,
    pub(super) section: String,
}

/// uWSGI's magic variables. Upper-case file letters refer to the first
/// config file read (`first`), lower-case ones to the current file;
/// `started` is when reading began, for `%t` and `%T`.
pub(super) fn magic(
    c: char,
    file: Option<&FileInfo>,
    first: Option<&FileInfo>,
    started: SystemTime,
) -> Option<String> {
    let since_epoch = || started.duration_since(std::time::UNIX_EPOCH).ok();
    let simple = match c {
        '%' => Some("%".to_string()),
        '[' => Some("\x1b".to_string()),
        'V' => Some(env!("CARGO_PKG_VERSION").to_string()),
        'v' => Some(std::env::current_dir().ok()?.display().to_string()),
        'h' => Some(hostname()),
        'k' => Some(
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
        ),
        'u' => Some(getuid().as_raw().to_string()),
        'U' => Some(user_name()),
        'g' => Some(getgid().as_raw().to_string()),
        'G' => Some(group_name()),
        't' => Some(since_epoch()?.as_secs().to_string()),
        'T' => Some(since_epoch()?.as_micros().to_string()),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    let f = if c.is_ascii_uppercase() {
        first.or(file)?
    } else {
        file?
    };
    let path = &f.path;
    let dir = path.parent()?;
    let name = || path.file_name().map(|s| s.to_string_lossy().into_owned());
    Some(match c.to_ascii_lowercase() {
        'd' => format!("{}/", dir.display()),
        'p' => path.display().to_string(),
        's' => name()?,
        'e' => path.extension()?.to_string_lossy().into_owned(),
        'n' => path.file_stem()?.to_string_lossy().into_owned(),
        'c' => dir.file_name()?.to_string_lossy().into_owned(),
        'x' => format!("{}:{}", name()?, f.section),
        'o' => f.given.clone(),
        'i' => {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).ok()?.ino().to_string()
        }
        // The hash's four bytes as they lie in memory, in upper-case hex,
        // as uWSGI writes them (uwsgi_str_to_hex on a little-endian host).
        'j' => djb33x(path.display().to_string().as_bytes())
            .to_ne_bytes()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
        d @ '0'..='9' => dir
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .nth(d.to_digit(10)? as usize)?
            .as_os_str()
            .to_string_lossy()
            .into_owned(),
        _ => return None,
    })
}

/// `@(path)` is the file's contents, `@(exec://cmd)` a command's output.
/// A file that cannot be read is an error, as in uWSGI: an empty secret
/// would pass unnoticed.
pub(super) fn read_at(what: &str) -> Result<String, String> {
    let text = match what.strip_prefix("exec://") {
        Some(cmd) => std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(|e| format!("@({what}): cannot run it: {e}"))?,
        None => {
            let path = what.strip_prefix("file://").unwrap_or(what);
            std::fs::read(path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("@({what}): cannot read {path}: {e}"))?
        }
    };
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn user_name() -> String {
    User::from_uid(getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}

fn group_name() -> String {
    Group::from_gid(getgid())
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_default()
}
