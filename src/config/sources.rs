//! Config files and environment variables, read the way uWSGI reads them.
//!
//! Every source becomes one ordered stream of `key = value` entries with
//! their origin. A config file named on the command line is expanded in
//! place, so later options override it and earlier ones are overridden by
//! it, as in uWSGI. While a file is read, placeholders (`%(name)`, `$(ENV)`,
//! `@(file)`, magic `%d`-style variables, `%(a + b)` arithmetic), includes
//! (`ini = other.ini`, `ini = :section`) and logic blocks (`if-env` …
//! `endif`, `for` … `endfor`) are applied, as uWSGI's parser does.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::ConfigError;

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

/// The config file being read, for the magic variables.
#[derive(Debug, Clone)]
struct FileInfo {
    /// As named on the command line or in the include.
    given: String,
    path: PathBuf,
    section: String,
}

/// Options that load another config file in place.
pub const INCLUDE_KEYS: &[&str] = &["ini", "yaml", "yml", "json", "js", "xml", "include"];

pub fn format_of(path: &str) -> &'static str {
    let lower = path.to_ascii_lowercase();
    let file = lower
        .rsplit_once(':')
        .filter(|(_, s)| !s.contains('/'))
        .map_or(lower.as_str(), |(f, _)| f);
    if file.ends_with(".yaml") || file.ends_with(".yml") {
        "yaml"
    } else if file.ends_with(".json") || file.ends_with(".js") {
        "json"
    } else if file.ends_with(".xml") {
        "xml"
    } else {
        "ini"
    }
}

/// Reads config sources into entries, keeping the placeholder state.
pub struct Reader {
    pub entries: Vec<Entry>,
    /// Every key seen so far, with its latest value: uWSGI's placeholders.
    placeholders: HashMap<String, String>,
    /// Placeholders set with set-placeholder / set-ph (never options).
    pub declared: Vec<String>,
    /// The first config file, for the upper-case magic variables.
    first: Option<FileInfo>,
    depth: usize,
    started: std::time::SystemTime,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            entries: Vec::new(),
            placeholders: HashMap::new(),
            declared: Vec::new(),
            first: None,
            depth: 0,
            started: std::time::SystemTime::now(),
        }
    }
}

fn err<T>(origin: &Origin, msg: impl fmt::Display) -> Result<T, ConfigError> {
    Err(ConfigError(format!("{origin}: {msg}")))
}

impl Reader {
    /// An entry from the command line or the environment: no expansion.
    pub fn push(&mut self, key: &str, value: &str, origin: Origin) {
        self.placeholders.insert(key.to_string(), value.to_string());
        self.entries.push(Entry {
            key: key.to_string(),
            value: value.to_string(),
            origin,
        });
    }

    /// `--ini FILE[:section]` and friends, from the command line or the
    /// environment: reads the file in place.
    pub fn load_file(
        &mut self,
        format: &str,
        spec: &str,
        from: &Origin,
    ) -> Result<(), ConfigError> {
        self.include(format, spec, from, None)
    }

    /// Reads a config file in place; `current` is the file naming it.
    fn include(
        &mut self,
        format: &str,
        spec: &str,
        from: &Origin,
        current: Option<&FileInfo>,
    ) -> Result<(), ConfigError> {
        if self.depth > 16 {
            return err(
                from,
                format!("config files include each other too deeply (at {spec})"),
            );
        }
        // "file.ini:section", ":section" (the current file), or "file.ini".
        let (file, section) = match spec.rsplit_once(':') {
            Some((f, s)) if !s.contains('/') && !s.is_empty() => (f, Some(s)),
            _ => (spec, None),
        };
        let (path, given) = if file.is_empty() {
            match current {
                Some(c) => (c.path.clone(), c.given.clone()),
                None => {
                    return err(
                        from,
                        format!("{spec}: no current config file for a :section include"),
                    );
                }
            }
        } else {
            let base = match current {
                Some(c) if Path::new(file).is_relative() => c
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from(file), |d| d.join(file)),
                _ => PathBuf::from(file),
            };
            (std::path::absolute(&base).unwrap_or(base), file.to_string())
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError(format!(
                "{from}: cannot read config file {}: {e}",
                path.display()
            ))
        })?;
        let info = FileInfo {
            given,
            path: path.clone(),
            section: section.unwrap_or("uwsgi").to_string(),
        };
        if self.first.is_none() {
            self.first = Some(info.clone());
        }
        let origin_path = Rc::new(path.clone());
        let format = if format == "auto" {
            format_of(file)
        } else {
            format
        };
        let items = match format {
            "yaml" => parse_yaml(&text, &info.section),
            "json" => parse_json(&text, &info.section),
            "xml" => parse_xml(&text, &info.section),
            _ => parse_ini(&text, &info.section, section.is_none()),
        }
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        self.depth += 1;
        let r = self.feed(&items, &info, &origin_path);
        self.depth -= 1;
        r
    }

    /// Applies logic blocks, includes and placeholders to a file's items.
    fn feed(
        &mut self,
        items: &[(String, String, usize)],
        info: &FileInfo,
        path: &Rc<PathBuf>,
    ) -> Result<(), ConfigError> {
        let mut i = 0;
        let mut loop_var: Vec<String> = Vec::new();
        self.feed_range(items, &mut i, items.len(), info, path, &mut loop_var)
    }

    fn feed_range(
        &mut self,
        items: &[(String, String, usize)],
        i: &mut usize,
        end: usize,
        info: &FileInfo,
        path: &Rc<PathBuf>,
        loop_var: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        while *i < end {
            let (key, raw, line) = &items[*i];
            let origin = Origin::File {
                path: path.clone(),
                line: *line,
            };
            *i += 1;
            let value = self.expand(raw, Some(info), loop_var.last().map(String::as_str));
            match key.as_str() {
                "endif" | "endfor" => continue, // unmatched: harmless, as in uWSGI
                k if k.starts_with("if-") || k.starts_with("if") && IF_ALIASES.contains(&k) => {
                    let block_end = find_block_end(items, *i, &origin, "endif")?;
                    let (holds, item) =
                        condition(k, &value, &self.placeholders).ok_or_else(|| {
                            ConfigError(format!("{origin}: unknown config logic {k:?}"))
                        })?;
                    if holds {
                        loop_var.push(item);
                        let mut j = *i;
                        self.feed_range(items, &mut j, block_end, info, path, loop_var)?;
                        loop_var.pop();
                    }
                    *i = block_end + 1;
                }
                "for" | "for-glob" | "for-readline" => {
                    let block_end = find_block_end(items, *i, &origin, "endfor")?;
                    let values: Vec<String> = match key.as_str() {
                        "for" => value.split_whitespace().map(str::to_string).collect(),
                        "for-glob" => glob(&value),
                        _ => std::fs::read_to_string(&value)
                            .map_err(|e| {
                                ConfigError(format!("{origin}: for-readline {value}: {e}"))
                            })?
                            .lines()
                            .map(str::to_string)
                            .collect(),
                    };
                    for v in values {
                        loop_var.push(v);
                        let mut j = *i;
                        self.feed_range(items, &mut j, block_end, info, path, loop_var)?;
                        loop_var.pop();
                    }
                    *i = block_end + 1;
                }
                "set-placeholder" | "set-ph" => match value.split_once('=') {
                    Some((k, v)) => {
                        self.placeholders
                            .insert(k.trim().to_string(), v.trim().to_string());
                        self.declared.push(k.trim().to_string());
                    }
                    None => return err(&origin, format!("{key} {value:?}: expected NAME=VALUE")),
                },
                "print" => eprintln!("{value}"),
                k if INCLUDE_KEYS.contains(&k) => {
                    let format = match k {
                        "ini" => "ini",
                        "yaml" | "yml" => "yaml",
                        "json" | "js" => "json",
                        "xml" => "xml",
                        _ => "auto",
                    };
                    self.include(format, &value, &origin, Some(info))?;
                }
                _ => {
                    self.placeholders.insert(key.clone(), value.clone());
                    self.entries.push(Entry {
                        key: key.clone(),
                        value,
                        origin,
                    });
                }
            }
        }
        Ok(())
    }

    /// Expands `$(ENV)`, `@(file)`, `%(placeholder)`, `%(a * b)` and the
    /// magic `%x` variables. Unknown `%(name)` stays as written (request-log
    /// formats use the same syntax).
    fn expand(&self, value: &str, file: Option<&FileInfo>, item: Option<&str>) -> String {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(pos) = rest.find(['$', '@', '%']) {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            let sigil = tail.as_bytes()[0];
            if tail.len() > 1
                && tail.as_bytes()[1] == b'('
                && let Some(close) = matching_paren(&tail[1..])
            {
                let inner = &tail[2..close + 1];
                rest = &tail[close + 2..];
                match sigil {
                    b'$' => out.push_str(&std::env::var(inner).unwrap_or_default()),
                    b'@' => out.push_str(&read_at(inner)),
                    _ => out.push_str(&self.placeholder(inner, file, item)),
                }
                continue;
            }
            if sigil == b'%' && tail.len() > 1 {
                let c = tail[1..].chars().next().expect("not empty");
                rest = &tail[1 + c.len_utf8()..];
                match self.magic(c, file) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('%');
                        out.push(c);
                    }
                }
                continue;
            }
            out.push(sigil as char);
            rest = &tail[1..];
        }
        out.push_str(rest);
        out
    }

    fn placeholder(&self, inner: &str, file: Option<&FileInfo>, item: Option<&str>) -> String {
        if inner == "_"
            && let Some(item) = item
        {
            return item.to_string();
        }
        if let Some(v) = self.placeholders.get(inner) {
            return v.clone();
        }
        // Arithmetic on numbers and placeholders: %(%k * 2), %(workers + 1).
        let expanded = self.expand(inner, file, item);
        if let Some(n) = arithmetic(&expanded, &self.placeholders) {
            return n.to_string();
        }
        format!("%({inner})")
    }

    /// uWSGI's magic variables. Upper-case file letters refer to the first
    /// config file read, lower-case ones to the current file.
    fn magic(&self, c: char, file: Option<&FileInfo>) -> Option<String> {
        let since_epoch = || self.started.duration_since(std::time::UNIX_EPOCH).ok();
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
            'u' => Some(unsafe { libc::getuid() }.to_string()),
            'U' => Some(user_name()),
            'g' => Some(unsafe { libc::getgid() }.to_string()),
            'G' => Some(group_name()),
            't' => Some(since_epoch()?.as_secs().to_string()),
            'T' => Some(since_epoch()?.as_micros().to_string()),
            _ => None,
        };
        if simple.is_some() {
            return simple;
        }
        let f = if c.is_ascii_uppercase() {
            self.first.as_ref().or(file)?
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
            'j' => format!("{:x}", djb33x(path.display().to_string().as_bytes())),
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
}

const IF_ALIASES: &[&str] = &["ifenv", "ifexists", "iffile", "ifdir", "ifopt"];

/// Whether a logic block holds, and the value `%(_)` takes inside it.
fn condition(
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
            let v = std::env::var(name).ok().filter(|v| !v.is_empty());
            let holds = match (want, &v) {
                (Some(w), Some(v)) => v == w,
                (None, Some(_)) => true,
                _ => false,
            };
            (holds, v.unwrap_or_default())
        }
        "exists" => (Path::new(value).exists(), value.to_string()),
        "file" => (Path::new(value).is_file(), value.to_string()),
        "dir" => (Path::new(value).is_dir(), value.to_string()),
        "opt" => {
            let (name, want) = match value.split_once('=') {
                Some((n, w)) => (n.trim(), Some(w.trim())),
                None => (value.trim(), None),
            };
            let v = placeholders.get(name);
            let holds = match (want, v) {
                (Some(w), Some(v)) => v == w,
                (None, Some(v)) => !v.is_empty(),
                _ => false,
            };
            (holds, v.cloned().unwrap_or_default())
        }
        _ => return None,
    };
    Some((holds != negated, item))
}

/// The index of the `end` closing the block that starts before `from`.
fn find_block_end(
    items: &[(String, String, usize)],
    from: usize,
    origin: &Origin,
    end: &str,
) -> Result<usize, ConfigError> {
    let mut depth = 0;
    for (j, (k, _, _)) in items.iter().enumerate().skip(from) {
        let opens = if end == "endif" {
            k.starts_with("if-") || IF_ALIASES.contains(&k.as_str())
        } else {
            k == "for" || k.starts_with("for-")
        };
        if opens {
            depth += 1;
        } else if k == end {
            if depth == 0 {
                return Ok(j);
            }
            depth -= 1;
        }
    }
    err(origin, format!("this block has no {end}"))
}

fn matching_paren(s: &str) -> Option<usize> {
    // s starts with '('
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `a op b op c`, left to right, integers and placeholder names.
fn arithmetic(expr: &str, placeholders: &HashMap<String, String>) -> Option<i64> {
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

/// `@(path)` is the file's contents, `@(exec://cmd)` a command's output.
fn read_at(what: &str) -> String {
    let text = match what.strip_prefix("exec://") {
        Some(cmd) => std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default(),
        None => std::fs::read_to_string(what.strip_prefix("file://").unwrap_or(what))
            .unwrap_or_default(),
    };
    text.trim_end_matches(['\n', '\r']).to_string()
}

fn glob(pattern: &str) -> Vec<String> {
    let path = Path::new(pattern);
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            },
            n.to_string_lossy(),
        ),
        _ => return Vec::new(),
    };
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
                .map(|e| dir.join(e.file_name()).display().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(&p, &n)
}

fn djb33x(s: &[u8]) -> u32 {
    s.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33) ^ u32::from(c))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let n = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn user_name() -> String {
    let pw = unsafe { libc::getpwuid(libc::getuid()) };
    if pw.is_null() {
        return String::new();
    }
    unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn group_name() -> String {
    let gr = unsafe { libc::getgrgid(libc::getgid()) };
    if gr.is_null() {
        return String::new();
    }
    unsafe { std::ffi::CStr::from_ptr((*gr).gr_name) }
        .to_string_lossy()
        .into_owned()
}

/// uWSGI's INI rules: `#`/`;` comments only at the start of a line, no
/// inline comments, the first `=` splits, a bare key is a flag (empty
/// value), only the chosen section counts, repeated keys all count.
pub fn parse_ini(
    text: &str,
    section: &str,
    default_section: bool,
) -> Result<Vec<(String, String, usize)>, String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut found = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.strip_suffix(']').unwrap_or(rest).trim().to_string();
            found |= name == section || default_section && name == "oxgate";
            current = Some(name);
            continue;
        }
        let active = current
            .as_deref()
            .is_some_and(|c| c == section || default_section && c == "oxgate");
        if !active {
            continue;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        out.push((k.to_string(), v.to_string(), n + 1));
    }
    if !found {
        return Err(format!(
            "no [{section}] section{}",
            if default_section {
                " (or [oxgate])"
            } else {
                ""
            }
        ));
    }
    Ok(out)
}

fn scalar_to_string(y: &yaml_rust2::Yaml) -> Option<String> {
    use yaml_rust2::Yaml;
    Some(match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => String::new(),
        _ => return None,
    })
}

/// The `uwsgi:` (or `oxgate:`) mapping; a list value repeats the key.
pub fn parse_yaml(text: &str, section: &str) -> Result<Vec<(String, String, usize)>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let root = docs.first().ok_or("empty YAML file")?;
    let map = [section, "oxgate"]
        .iter()
        .find_map(|s| match &root[*s] {
            Yaml::Hash(h) => Some(h),
            _ => None,
        })
        .ok_or_else(|| format!("no top-level `{section}:` mapping"))?;
    let mut out = Vec::new();
    for (k, v) in map {
        let key = scalar_to_string(k).ok_or("a key that is not a scalar")?;
        match v {
            Yaml::Array(items) => {
                for item in items {
                    let value = scalar_to_string(item)
                        .ok_or_else(|| format!("{key}: list items must be scalars"))?;
                    out.push((key.clone(), value, 0));
                }
            }
            other => {
                let value = scalar_to_string(other)
                    .ok_or_else(|| format!("{key}: expected a scalar or a list of scalars"))?;
                out.push((key, value, 0));
            }
        }
    }
    Ok(out)
}

/// The `"uwsgi"` (or `"oxgate"`) object; an array value repeats the key.
pub fn parse_json(text: &str, section: &str) -> Result<Vec<(String, String, usize)>, String> {
    use serde_json::Value;
    let root: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = [section, "oxgate"]
        .iter()
        .find_map(|s| root.get(*s).and_then(Value::as_object))
        .ok_or_else(|| format!("no top-level \"{section}\" object"))?;
    let scalar = |v: &Value| -> Option<String> {
        Some(match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return None,
        })
    };
    let mut out = Vec::new();
    for (key, v) in obj {
        match v {
            Value::Array(items) => {
                for item in items {
                    out.push((
                        key.clone(),
                        scalar(item).ok_or_else(|| format!("{key}: list items must be scalars"))?,
                        0,
                    ));
                }
            }
            other => out.push((
                key.clone(),
                scalar(other).ok_or_else(|| format!("{key}: expected a scalar or a list"))?,
                0,
            )),
        }
    }
    Ok(out)
}

/// Children of the `<uwsgi>` (or `<oxgate>`) element; an empty element is
/// a flag.
pub fn parse_xml(text: &str, section: &str) -> Result<Vec<(String, String, usize)>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("invalid XML: {e}"))?;
    let root = doc.root_element();
    let node = if [section, "oxgate"].contains(&root.tag_name().name()) {
        root
    } else {
        root.children()
            .find(|n| n.is_element() && [section, "oxgate"].contains(&n.tag_name().name()))
            .ok_or_else(|| format!("no <{section}> element"))?
    };
    Ok(node
        .children()
        .filter(|n| n.is_element())
        .map(|n| {
            let line = doc.text_pos_at(n.range().start).row as usize;
            (
                n.tag_name().name().to_string(),
                n.text().unwrap_or("").trim().to_string(),
                line,
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_rules() {
        let text = "# comment\n; comment\n[other]\nx = 1\n[uwsgi]\nmaster = true\nvacuum\nprocesses = 4 # four\nenv = A=1\nenv = B=2\n  spaced =  value with spaces  \n";
        let items = parse_ini(text, "uwsgi", true).unwrap();
        let kv: Vec<(&str, &str)> = items
            .iter()
            .map(|(k, v, _)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            kv,
            vec![
                ("master", "true"),
                ("vacuum", ""),
                ("processes", "4 # four"),
                ("env", "A=1"),
                ("env", "B=2"),
                ("spaced", "value with spaces"),
            ]
        );
        assert_eq!(items[0].2, 6);
        assert!(
            parse_ini("[x]\na=1\n", "uwsgi", true)
                .unwrap_err()
                .contains("[uwsgi]")
        );
        assert_eq!(
            parse_ini("[oxgate]\na=1\n", "uwsgi", true).unwrap().len(),
            1
        );
    }

    #[test]
    fn other_formats() {
        let y = parse_yaml(
            "uwsgi:\n  master: true\n  processes: 4\n  env:\n    - A=1\n    - B=2\n",
            "uwsgi",
        )
        .unwrap();
        assert_eq!(y.len(), 4);
        assert_eq!((y[1].0.as_str(), y[1].1.as_str()), ("processes", "4"));
        let j = parse_json(
            r#"{"uwsgi": {"master": true, "socket": [":1", ":2"], "threads": 2}}"#,
            "uwsgi",
        )
        .unwrap();
        assert_eq!(j.len(), 4);
        assert_eq!(j[0].1, "true");
        let x = parse_xml(
            "<uwsgi><master/><processes>4</processes><env>A=1</env></uwsgi>",
            "uwsgi",
        )
        .unwrap();
        assert_eq!(x.len(), 3);
        assert_eq!((x[0].0.as_str(), x[0].1.as_str()), ("master", ""));
        assert!(parse_json("{}", "uwsgi").is_err());
    }

    fn read(text: &str) -> Reader {
        let dir = std::env::temp_dir().join(format!(
            "oxgate-cfg-{}-{}",
            std::process::id(),
            djb33x(text.as_bytes())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("app.ini");
        std::fs::write(&f, text).unwrap();
        let mut r = Reader::default();
        r.load_file("ini", f.to_str().unwrap(), &Origin::CommandLine)
            .unwrap();
        r
    }

    fn values(r: &Reader, key: &str) -> Vec<String> {
        r.entries
            .iter()
            .filter(|e| e.key == key)
            .map(|e| e.value.clone())
            .collect()
    }

    #[test]
    fn placeholders_and_magic() {
        unsafe { std::env::set_var("OXGATE_TEST_PORT", "9090") };
        let r = read(
            "[uwsgi]\nbase = /srv/app\nchdir = %(base)/src\nsocket = :$(OXGATE_TEST_PORT)\n\
             pidfile = %d%n.pid\nlog-format = %(addr) %(method)\nprocesses = %(%k * 2)\nlogdate = %%Y\n\
             threads = %(base_threads + 1)\nname = %x\n",
        );
        assert_eq!(values(&r, "chdir"), ["/srv/app/src"]);
        assert_eq!(values(&r, "socket"), [":9090"]);
        let pid = &values(&r, "pidfile")[0];
        assert!(pid.ends_with("/app.pid") && pid.starts_with('/'), "{pid}");
        assert_eq!(values(&r, "log-format"), ["%(addr) %(method)"]);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(values(&r, "processes"), [(cores * 2).to_string()]);
        assert_eq!(values(&r, "logdate"), ["%Y"]);
        assert_eq!(values(&r, "threads"), ["%(base_threads + 1)"]);
        assert_eq!(values(&r, "name"), ["app.ini:uwsgi"]);
    }

    #[test]
    fn logic_blocks_and_sections() {
        unsafe { std::env::set_var("OXGATE_TEST_SET", "yes") };
        unsafe { std::env::remove_var("OXGATE_TEST_UNSET") };
        let r = read(
            "[uwsgi]\nif-env = OXGATE_TEST_SET\nenv = SEEN=%(_)\nendif =\nif-not-env = OXGATE_TEST_SET\nenv = WRONG=1\nendif =\n\
             if-env = OXGATE_TEST_UNSET\nenv = WRONG=2\nendif =\nfor = a b c\npythonpath = /x/%(_)\nendfor =\n\
             ini = :extra\nset-ph = only=placeholder\nmodule = %(only)\n[extra]\nharakiri = 30\n",
        );
        assert_eq!(values(&r, "env"), ["SEEN=yes"]);
        assert_eq!(values(&r, "pythonpath"), ["/x/a", "/x/b", "/x/c"]);
        assert_eq!(values(&r, "harakiri"), ["30"]);
        assert_eq!(values(&r, "module"), ["placeholder"]);
        assert!(values(&r, "set-ph").is_empty());
    }

    #[test]
    fn files_magic_and_includes() {
        let dir = std::env::temp_dir().join(format!("oxgate-cfg-inc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("secret.txt"), "s3cret\n").unwrap();
        std::fs::write(dir.join("conf.d/a.ini"), "[uwsgi]\nenv = FROM_A=1\n").unwrap();
        std::fs::write(dir.join("conf.d/b.ini"), "[uwsgi]\nenv = FROM_B=1\n").unwrap();
        std::fs::write(
            dir.join("main.ini"),
            format!(
                "[uwsgi]\nkey = @({0}/secret.txt)\np = %p\ns = %s\ne = %e\nc = %c\no = %o\nzero = %0\n\
                 if-dir = {0}\nenv = DIR=%(_)\nendif =\nif-file = {0}/nope\nenv = WRONG=1\nendif =\n\
                 for-glob = {0}/conf.d/*.ini\nini = %(_)\nendfor =\nini = conf.d/a.ini\nnum = %(2 + 3)\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut r = Reader::default();
        let main = dir.join("main.ini");
        r.load_file("ini", main.to_str().unwrap(), &Origin::CommandLine)
            .unwrap();
        assert_eq!(values(&r, "key"), ["s3cret"]);
        assert_eq!(values(&r, "p"), [main.display().to_string()]);
        assert_eq!(values(&r, "s"), ["main.ini"]);
        assert_eq!(values(&r, "e"), ["ini"]);
        assert_eq!(
            values(&r, "c"),
            [dir.file_name().unwrap().to_string_lossy().to_string()]
        );
        assert_eq!(values(&r, "o"), [main.display().to_string()]);
        assert_eq!(values(&r, "zero"), ["tmp"]);
        assert_eq!(
            values(&r, "env"),
            [
                format!("DIR={}", dir.display()),
                "FROM_A=1".into(),
                "FROM_B=1".into(),
                "FROM_A=1".into()
            ]
        );
        assert_eq!(values(&r, "num"), ["5"]);
        // an include names its file and line in errors
        let bad = dir.join("bad.ini");
        std::fs::write(&bad, "[uwsgi]\nini = missing.ini\n").unwrap();
        let e = Reader::default()
            .load_file("ini", bad.to_str().unwrap(), &Origin::CommandLine)
            .unwrap_err();
        assert!(
            e.0.contains("bad.ini:2") && e.0.contains("missing.ini"),
            "{}",
            e.0
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.ini", "a.ini"));
        assert!(!wildcard("*.ini", "a.yaml"));
        assert!(wildcard("a?c*", "abcdef"));
    }
}
