//! Config logic: `if-*` conditions, `for` blocks, `%(a + b)` arithmetic,
//! `for-glob` wildcards, and uWSGI's djb33x hash.

use std::collections::HashMap;
use std::path::Path;

use super::entry::{Origin, err};
use crate::config::ConfigError;

pub(super) const IF_ALIASES: &[&str] = &["ifenv", "ifexists", "iffile", "ifdir", "ifopt"];

/// Whether a logic block holds, and the value `%(_)` takes inside it.
pub(super) fn condition(
    key: &str,
    value: &str,
    placeholders: &HashMap<String, String>,
) -> Option<(bool, String)> {
    let key = match key {
        "ifenv" => "if-env",
        "ifexists" => "if-exists",
        "iffile" => "if-file",
        "ifdir" => "if-dir",
        "ifopt" => "if-opt",
        k => k,
    };
    let (negated, what) = match key.strip_prefix("if-not-") {
        Some(w) => (true, w),
        None => (false, key.strip_prefix("if-")?),
    };
    let (holds, item) = match what {
        "env" => {
            let (name, want) = match value.split_once('=') {
                Some((n, w)) => (n, Some(w)),
                None => (value, None),
            };
            // Set counts, empty or not: uWSGI asks getenv() for it.
            let v = std::env::var(name).ok();
            let holds = match (want, &v) {
                (Some(w), Some(v)) => v == w,
                (None, Some(_)) => true,
                _ => false,
            };
            (holds, v.unwrap_or_default())
        }
        "exists" => (Path::new(value).exists(), value.to_string()),
        "file" => (Path::new(value).is_file(), value.to_string()),
        "dir" | "directory" => (Path::new(value).is_dir(), value.to_string()),
        "hostname" => (
            nix::unistd::gethostname().is_ok_and(|h| h.to_string_lossy() == value),
            value.to_string(),
        ),
        "hostname-match" => (
            regex::Regex::new(value).is_ok_and(|re| {
                nix::unistd::gethostname().is_ok_and(|h| re.is_match(&h.to_string_lossy()))
            }),
            value.to_string(),
        ),
        // Python is oxgate's one language plugin, built in; uWSGI's
        // routers, loggers and protocols are built in too, or not there.
        "plugin" => (
            value
                .split([',', ' '])
                .filter(|p| !p.is_empty())
                .all(|p| p.trim_end_matches("_plugin").starts_with("python")),
            value.to_string(),
        ),
        // A master image re-executed for a reload reads its configuration
        // with the previous image's hand-over in its environment.
        "reload" => (
            std::env::var_os(crate::lifecycle::HANDOVER_ENV).is_some(),
            value.to_string(),
        ),
        "opt" => {
            let (name, want) = match value.split_once('=') {
                Some((n, w)) => (n.trim(), Some(w.trim())),
                None => (value.trim(), None),
            };
            let v = placeholders.get(name);
            let holds = match (want, v) {
                (Some(w), Some(v)) => v == w,
                // Given at all (a bare key is given), as uWSGI checks.
                (None, Some(_)) => true,
                _ => false,
            };
            (holds, v.cloned().unwrap_or_default())
        }
        _ => return None,
    };
    Some((holds != negated, item))
}

/// "endif" or "endfor" for the keys that end a block (uWSGI 2.0 also
/// reads "end-if", "end-for").
pub(super) fn block_end(key: &str) -> Option<&'static str> {
    match key {
        "endif" | "end-if" => Some("endif"),
        "endfor" | "end-for" => Some("endfor"),
        // uWSGI 2.0's `end` closes either.
        "end" => Some("end"),
        _ => None,
    }
}

/// The index of the `end` closing the block that starts before `from`.
pub(super) fn find_block_end(
    items: &[(String, String, usize)],
    from: usize,
    origin: &Origin,
    end: &str,
) -> Result<usize, ConfigError> {
    let mut depth = 0;
    for (j, (k, _, _)) in items.iter().enumerate().skip(from) {
        // Blocks of either kind nest: uWSGI 2.0's `end` may close either.
        let opens = k.starts_with("if-")
            || IF_ALIASES.contains(&k.as_str())
            || k == "for"
            || k.starts_with("for-");
        let closes = block_end(k);
        if opens {
            depth += 1;
        } else if let Some(closed) = closes {
            if depth == 0 {
                if closed == end || closed == "end" {
                    return Ok(j);
                }
            } else {
                depth -= 1;
            }
        }
    }
    err(origin, format!("this block has no {end}"))
}

/// `a op b op c`, left to right, integers and placeholder names.
pub(super) fn arithmetic(expr: &str, placeholders: &HashMap<String, String>) -> Option<i64> {
    let tokens: Vec<&str> = expr.split_whitespace().collect();
    if tokens.len() < 3 || tokens.len().is_multiple_of(2) {
        return None;
    }
    let operand = |t: &str| {
        t.parse::<i64>()
            .ok()
            .or_else(|| placeholders.get(t).and_then(|v| v.trim().parse().ok()))
    };
    let mut acc = operand(tokens[0])?;
    for pair in tokens[1..].chunks(2) {
        let b = operand(pair[1])?;
        acc = match pair[0] {
            "+" => acc.checked_add(b)?,
            "-" => acc.checked_sub(b)?,
            "*" => acc.checked_mul(b)?,
            "/" => acc.checked_div(b)?,
            _ => return None,
        };
    }
    Some(acc)
}

/// `for-glob`'s items: glob(3)'s, as uWSGI gets them (dotfiles left out,
/// directories with a trailing slash, wildcards in directories too).
pub(super) fn glob(pattern: &str) -> Vec<String> {
    crate::sys::glob::glob(pattern)
}

pub(super) fn djb33x(s: &[u8]) -> u32 {
    s.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33) ^ u32::from(c))
}
