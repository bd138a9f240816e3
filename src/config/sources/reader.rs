//! The `Reader`: config sources read in order into one stream of entries,
//! each file expanded in place with its placeholders, includes and logic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::entry::{Entry, Origin, err};
use super::formats::{format_of, parse_ini, parse_json, parse_xml, parse_yaml};
use super::logic::{IF_ALIASES, arithmetic, block_end, condition, find_block_end, glob};
use super::magic::{FileInfo, magic, read_at};
use crate::config::ConfigError;

/// Options that load another config file: in place, but for `inherit`,
/// which uWSGI reads once everything else is read (so the file inherited
/// from has the last word). (`config` reads a file as `include` does.)
pub const INCLUDE_KEYS: &[&str] = &[
    "ini", "yaml", "yml", "json", "js", "xml", "include", "inherit", "config",
];

/// Keys a config file's reader acts on itself (logic blocks, placeholders,
/// includes, `print`), which never become settings: `feed_range` below.
pub fn is_directive(key: &str) -> bool {
    matches!(
        key,
        "endif"
            | "endfor"
            | "end-if"
            | "end-for"
            | "for"
            | "for-glob"
            | "for-readline"
            | "for-times"
            | "set-placeholder"
            | "set-ph"
            | "set"
            | "print"
    ) || key.starts_with("if-")
        || IF_ALIASES.contains(&key)
        || INCLUDE_KEYS.contains(&key)
}

/// Reads config sources into entries, keeping the placeholder state.
pub struct Reader {
    pub entries: Vec<Entry>,
    /// Every key seen so far, with its latest value: uWSGI's placeholders.
    placeholders: HashMap<String, String>,
    /// Placeholders set with set-placeholder / set-ph (never options).
    pub declared: Vec<String>,
    /// What reading found odd but could go on from (a file read by
    /// uWSGI's rules rather than its format's).
    pub warnings: Vec<String>,
    /// The first config file, for the upper-case magic variables.
    first: Option<FileInfo>,
    depth: usize,
    started: std::time::SystemTime,
    /// What an expansion could not do (an `@(file)` unreadable), for the
    /// entry being read to report.
    faults: std::cell::RefCell<Vec<String>>,
    /// `%(name)` left as written while expanding the entry being read.
    unresolved: std::cell::RefCell<Vec<String>>,
    /// Entries (by index) with such names, for `resolve_late`.
    late: Vec<(usize, Vec<String>)>,
    /// The names each placeholder's value left unresolved: a value that
    /// takes it in (`pythonpath = %(chdir)`, with `chdir = %(base)/app`
    /// before `base` is set) is resolved later with it.
    late_in: HashMap<String, Vec<String>>,
    /// `inherit`s, read after all the rest (`read_inherited`).
    inherited: Vec<(String, Origin, Option<FileInfo>)>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            entries: Vec::new(),
            placeholders: HashMap::new(),
            declared: Vec::new(),
            warnings: Vec::new(),
            first: None,
            depth: 0,
            started: std::time::SystemTime::now(),
            faults: std::cell::RefCell::default(),
            unresolved: std::cell::RefCell::default(),
            late: Vec::new(),
            late_in: HashMap::new(),
            inherited: Vec::new(),
        }
    }
}

impl Reader {
    /// A placeholder's value, before its entry is pushed.
    pub fn set_placeholder(&mut self, key: &str, value: &str) {
        self.set_first(key, value);
    }

    /// An option's value on the command line: `$(ENV)`, `@(file)` and
    /// `%(placeholder)` expanded, as uWSGI expands them after reading its
    /// command line (the bare `%x` forms are a file's).
    pub fn push_command_line(&mut self, key: &str, value: &str) {
        let value = if key.contains("format") {
            // A request-log format's %(...) are its own variables.
            value.to_string()
        } else {
            self.unresolved.borrow_mut().clear();
            let expanded = self.expand_with(value, None, None, false);
            // A %(name) that a file read later sets, as uWSGI resolves
            // placeholders once everything is read.
            let unresolved = std::mem::take(&mut *self.unresolved.borrow_mut());
            if !unresolved.is_empty() {
                if !self.placeholders.contains_key(key) {
                    self.late_in.insert(key.to_string(), unresolved.clone());
                }
                self.late.push((self.entries.len(), unresolved));
            }
            expanded
        };
        self.push(key, &value, Origin::CommandLine);
    }

    /// A placeholder's value: the first one given, as uWSGI reads an
    /// option as a placeholder (the first of its values), wherever it is
    /// used.
    fn set_first(&mut self, key: &str, value: &str) {
        self.placeholders
            .entry(key.to_string())
            .or_insert_with(|| value.to_string());
    }

    /// An entry from the command line or the environment: no expansion.
    pub fn push(&mut self, key: &str, value: &str, origin: Origin) {
        self.set_first(key, value);
        self.entries.push(Entry {
            key: key.to_string(),
            value: value.to_string(),
            origin,
        });
    }

    /// Once every source is read: a `%(name)` left as written because
    /// `name` came later (uWSGI resolves placeholders after reading all of
    /// its config) takes the first value given for it. Only the names its
    /// own text left unresolved are looked at, never text that came from a
    /// file, a variable or another value.
    pub fn resolve_late(&mut self) {
        // In rounds: a name's own first value may have been late too
        // (`chdir = %(base)/app`, `pythonpath = %(chdir)`, `base` last).
        for _ in 0..8 {
            let mut first: HashMap<String, String> = HashMap::new();
            for e in &self.entries {
                first
                    .entry(e.key.clone())
                    .or_insert_with(|| e.value.clone());
            }
            // Arithmetic on a name set later (`%(processes * 2)`), with the
            // values now known.
            let mut known = self.placeholders.clone();
            known.extend(first.iter().map(|(k, v)| (k.clone(), v.clone())));
            let mut changed = false;
            for (n, names) in &self.late {
                let mut value = self.entries[*n].value.clone();
                for name in names {
                    let found = first
                        .get(name.as_str())
                        .cloned()
                        .or_else(|| self.placeholders.get(name).cloned())
                        .or_else(|| arithmetic(name, &known).map(|v| v.to_string()));
                    if let Some(v) = found {
                        value = value.replacen(&format!("%({name})"), &v, 1);
                    }
                }
                if value != self.entries[*n].value {
                    self.entries[*n].value = value;
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// Reads the files `inherit` named, in order, once the sources are
    /// read: uWSGI appends their options after all others (and after the
    /// command line), so a value they give wins over the file's own.
    pub fn read_inherited(&mut self) -> Result<(), ConfigError> {
        // An inherited file may inherit in turn: as deep as includes go,
        // and no further (two files that inherit each other).
        for _ in 0..=16 {
            if self.inherited.is_empty() {
                return Ok(());
            }
            for (spec, from, current) in std::mem::take(&mut self.inherited) {
                self.include("auto", &spec, &from, current.as_ref())?;
            }
        }
        let (spec, from, _) = &self.inherited[0];
        err(
            from,
            format!("config files inherit each other too deeply (at {spec})"),
        )
    }

    /// Deferred to [`Reader::read_inherited`].
    pub fn inherit(&mut self, spec: &str, from: &Origin) {
        self.inherited.push((spec.to_string(), from.clone(), None));
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
            // uWSGI opens a relative include from the current directory;
            // one found only beside the including file is taken from there.
            let base = match current {
                Some(c) if Path::new(file).is_relative() && !Path::new(file).exists() => c
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from(file), |d| d.join(file)),
                _ => PathBuf::from(file),
            };
            // The real path, as uWSGI's realpath() gives it: %d, %c and the
            // others then name the real directory (no "..", no symlink).
            // Except for a file that is itself a link (an emperor's vassal,
            // `vassals/app.ini -> ../app/uwsgi.ini`): uWSGI keeps the
            // link's own path, so %n is the vassal's name.
            let linked = base
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            let path = if linked {
                std::path::absolute(&base).unwrap_or(base)
            } else {
                std::fs::canonicalize(&base)
                    .or_else(|_| std::path::absolute(&base))
                    .unwrap_or(base)
            };
            (path, file.to_string())
        };
        // Bytes that are not UTF-8 (a Latin-1 comment) do not make the file
        // unreadable: uWSGI reads bytes. A byte-order mark (Windows
        // editors write one) is no part of the first line: `[uwsgi]` after
        // it was "no [uwsgi] section".
        let text = std::fs::read(&path)
            .map(|b| {
                let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&b);
                String::from_utf8_lossy(b).into_owned()
            })
            .map_err(|e| {
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
            "yaml" => parse_yaml(&text, &info.section).map(|y| {
                if let Some(why) = y.not_yaml {
                    self.warnings.push(format!(
                        "{}: not valid YAML ({why}); read line by line, as uWSGI reads it",
                        path.display()
                    ));
                }
                y.items
            }),
            "json" => parse_json(&text, &info.section),
            "xml" => parse_xml(&text, &info.section),
            _ => Ok(
                parse_ini(&text, &info.section, section.is_none()).unwrap_or_else(|| {
                    // uWSGI warns and goes on: `--ini-paste development.ini`
                    // with no [uwsgi] in it, options given on the command line.
                    self.warnings.push(format!(
                        "{}: no [{}] section{}: nothing is read from it",
                        path.display(),
                        info.section,
                        if section.is_none() {
                            " (or [oxgate])"
                        } else {
                            ""
                        }
                    ));
                    Vec::new()
                }),
            ),
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
            if let Some(fault) = self.faults.borrow_mut().pop() {
                return err(&origin, fault);
            }
            let unresolved = std::mem::take(&mut *self.unresolved.borrow_mut());
            match key.as_str() {
                k if block_end(k).is_some() => continue, // unmatched: harmless, as in uWSGI
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
                "for" | "for-glob" | "for-readline" | "for-times" => {
                    let block_end = find_block_end(items, *i, &origin, "endfor")?;
                    let values: Vec<String> = match key.as_str() {
                        "for" => value.split_whitespace().map(str::to_string).collect(),
                        "for-glob" => glob(&value),
                        "for-times" => {
                            let n: u32 = value
                                .trim()
                                .parse()
                                .ok()
                                .filter(|n| *n <= 65536)
                                .ok_or_else(|| {
                                    ConfigError(format!(
                                        "{origin}: for-times {value:?}: not a count up to 65536"
                                    ))
                                })?;
                            (1..=n).map(|i| i.to_string()).collect()
                        }
                        _ => std::fs::read_to_string(&value)
                            .map_err(|e| {
                                ConfigError(format!("{origin}: for-readline {value}: {e}"))
                            })?
                            .lines()
                            .map(str::to_string)
                            .collect(),
                    };
                    // Line by line, each over every value, as uWSGI expands
                    // a `for`: `for = a b` with two pythonpath lines gives
                    // a/src b/src a/lib b/lib, and sys.path's order is the
                    // file's. A block nested inside goes whole per value.
                    let mut j = *i;
                    while j < block_end {
                        let (nested, _, line) = &items[j];
                        let closing = |word| {
                            let at = Origin::File {
                                path: path.clone(),
                                line: *line,
                            };
                            find_block_end(items, j + 1, &at, word)
                        };
                        let stop =
                            if nested.starts_with("if-") || IF_ALIASES.contains(&nested.as_str()) {
                                closing("endif")? + 1
                            } else if nested == "for" || nested.starts_with("for-") {
                                closing("endfor")? + 1
                            } else {
                                j + 1
                            };
                        for v in &values {
                            loop_var.push(v.clone());
                            let mut k = j;
                            self.feed_range(items, &mut k, stop, info, path, loop_var)?;
                            loop_var.pop();
                        }
                        j = stop;
                    }
                    *i = block_end + 1;
                }
                "set-placeholder" | "set-ph" => match value.split_once('=') {
                    Some((k, v)) => {
                        self.set_first(k.trim(), v.trim());
                        self.declared.push(k.trim().to_string());
                    }
                    None => return err(&origin, format!("{key} {value:?}: expected NAME=VALUE")),
                },
                // uWSGI's `set = NAME=VALUE`: the option (or placeholder)
                // NAME, as if written `NAME = VALUE`.
                "set" => match value.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        let (k, v) = (k.trim(), v.trim());
                        self.set_first(k, v);
                        self.entries.push(Entry {
                            key: k.to_string(),
                            value: v.to_string(),
                            origin,
                        });
                    }
                    _ => return err(&origin, format!("set {value:?}: expected NAME=VALUE")),
                },
                "print" => eprintln!("{value}"),
                "inherit" => {
                    self.inherited
                        .push((value.clone(), origin.clone(), Some(info.clone())))
                }
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
                    // A request-log format's %(...) are its own variables.
                    if !unresolved.is_empty() && !key.contains("format") {
                        if !self.placeholders.contains_key(key.as_str()) {
                            self.late_in.insert(key.clone(), unresolved.clone());
                        }
                        self.late.push((self.entries.len(), unresolved));
                    }
                    self.set_first(key, &value);
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
        self.expand_with(value, file, item, true)
    }

    /// `expand`; `magic`: the bare `%x` forms too, which only a file's
    /// lines have.
    fn expand_with(
        &self,
        value: &str,
        file: Option<&FileInfo>,
        item: Option<&str>,
        magic_too: bool,
    ) -> String {
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
                    b'$' => match env_with_default(inner) {
                        Some(v) => out.push_str(&v),
                        // Unset: left as written, as uWSGI leaves it (a
                        // shell's `$(date)` in a daemon's command runs),
                        // its `%%` and placeholders expanded as the rest
                        // of the value's are.
                        None => {
                            out.push_str("$(");
                            out.push_str(&self.expand_with(inner, file, item, magic_too));
                            out.push(')');
                        }
                    },
                    // A file's path may use the other forms: @(%dsecret).
                    // A command is left as written (`date +%Y%m%d`).
                    b'@' => match read_at(&if inner.starts_with("exec://") {
                        inner.to_string()
                    } else {
                        self.expand(inner, file, item)
                    }) {
                        Ok(text) => out.push_str(&text),
                        Err(e) => self.faults.borrow_mut().push(e),
                    },
                    _ => out.push_str(&self.placeholder(inner, file, item)),
                }
                continue;
            }
            if sigil == b'%' && tail.len() > 1 && magic_too {
                let c = tail[1..].chars().next().expect("not empty");
                rest = &tail[1 + c.len_utf8()..];
                match magic(c, file, self.first.as_ref(), self.started) {
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
            if let Some(names) = self.late_in.get(inner) {
                self.unresolved.borrow_mut().extend(names.iter().cloned());
            }
            return v.clone();
        }
        // Arithmetic on numbers and placeholders: %(%k * 2), %(workers + 1).
        let expanded = self.expand(inner, file, item);
        if let Some(n) = arithmetic(&expanded, &self.placeholders) {
            return n.to_string();
        }
        self.unresolved.borrow_mut().push(inner.to_string());
        format!("%({inner})")
    }
}

/// `$(VAR)` and `$(VAR:-DEFAULT)` (the default when VAR is unset or
/// empty); None for a variable that is not set and has no default. Only
/// a variable's name takes a default, and only after `:-`: a shell's
/// `$(uname -r)` or `$(dpkg-architecture -q X)` in a daemon's command is
/// left for the shell, as uWSGI (which has no defaults) leaves it.
fn env_with_default(inner: &str) -> Option<String> {
    let is_name =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if let Some((name, default)) = inner.split_once(":-")
        && is_name(name)
    {
        return Some(
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string()),
        );
    }
    std::env::var(inner).ok()
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

#[cfg(test)]
mod tests {
    use super::super::logic::djb33x;
    use super::*;

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
        r.resolve_late();
        r
    }

    fn values(r: &Reader, key: &str) -> Vec<String> {
        r.entries
            .iter()
            .filter(|e| e.key == key)
            .map(|e| e.value.clone())
            .collect()
    }

    /// A variable the environment already holds, with its value. The tests
    /// only read the environment: `std::env::set_var` would race with
    /// other test threads reading it through the C library (`localtime_r`
    /// reads `TZ`), which makes it unsound in a threaded test binary.
    fn env_var() -> (String, String) {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .find(|(k, v)| {
                !v.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .expect("the tests need one environment variable")
    }

    /// A variable name the environment does not hold.
    fn unset_var() -> String {
        (0..)
            .map(|i| format!("OXGATE_TEST_UNSET_{i}"))
            .find(|n| std::env::var_os(n).is_none())
            .expect("some name is free")
    }

    #[test]
    fn a_shell_command_in_a_value_is_left_for_the_shell() {
        // `$(uname -r)` and `$(date +%%Y-%%m-%%d)` were read as
        // `$(VAR-DEFAULT)`: "r" and "%%m-%%d" replaced them.
        let (name, value) = env_var();
        let unset = unset_var();
        let r = read(&format!(
            "[uwsgi]\nattach-daemon = sh -c 'echo $(uname -r) $(date +%%Y-%%m-%%d) $(dpkg-architecture -q X)'\n\
             env = A=$({name}:-x) C=$({unset}:-dflt) D=$({unset}-not-a-default)\n"
        ));
        assert_eq!(
            values(&r, "attach-daemon"),
            ["sh -c 'echo $(uname -r) $(date +%Y-%m-%d) $(dpkg-architecture -q X)'"]
        );
        assert_eq!(
            values(&r, "env"),
            [format!("A={value} C=dflt D=$({unset}-not-a-default)")]
        );
    }

    #[test]
    fn a_command_lines_shell_command_keeps_its_percent_letters() {
        // The command line expands no magic variables, inside an unset
        // `$(...)` either (`%u` became the uid, `%%` a `%`).
        let mut r = Reader::default();
        r.push_command_line("env", "X=$(date +%u.%h.%%)");
        r.resolve_late();
        assert_eq!(values(&r, "env"), ["X=$(date +%u.%h.%%)"]);
    }

    #[test]
    fn if_opt_holds_for_an_option_given_bare() {
        let r = read("[uwsgi]\nmemory-report\nif-opt = memory-report\nenv = SEEN=1\nendif =\n");
        assert_eq!(values(&r, "env"), ["SEEN=1"]);
    }

    #[test]
    fn placeholders_and_magic() {
        let (name, value) = env_var();
        let r = read(&format!(
            "[uwsgi]\nbase = /srv/app\nchdir = %(base)/src\nsocket = :$({name})\n\
             pidfile = %d%n.pid\nlog-format = %(addr) %(method)\nprocesses = %(%k * 2)\nlogdate = %%Y\n\
             threads = %(base_threads + 1)\nname = %x\n",
        ));
        assert_eq!(values(&r, "chdir"), ["/srv/app/src"]);
        assert_eq!(values(&r, "socket"), [format!(":{value}")]);
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
        let ((set, value), unset) = (env_var(), unset_var());
        let r = read(&format!(
            "[uwsgi]\nif-env = {set}\nenv = SEEN=%(_)\nendif =\nif-not-env = {set}\nenv = WRONG=1\nendif =\n\
             if-env = {unset}\nenv = WRONG=2\nendif =\nfor = a b c\npythonpath = /x/%(_)\nendfor =\n\
             ini = :extra\nset-ph = only=placeholder\nmodule = %(only)\n[extra]\nharakiri = 30\n",
        ));
        assert_eq!(values(&r, "env"), [format!("SEEN={value}")]);
        assert_eq!(values(&r, "pythonpath"), ["/x/a", "/x/b", "/x/c"]);
        assert_eq!(values(&r, "harakiri"), ["30"]);
        // A value that takes in one set later, through another's value, and
        // arithmetic on one set later: resolved once all is read.
        let later = read(
            "[uwsgi]\nchdir = %(base)/app\npythonpath = %(chdir)\ntouch-reload = %(chdir)/reload\n\
             env = m=%(processes * 2)\nprocesses = 4\nbase = /srv\n",
        );
        assert_eq!(values(&later, "pythonpath"), ["/srv/app"]);
        assert_eq!(values(&later, "touch-reload"), ["/srv/app/reload"]);
        assert_eq!(values(&later, "env"), ["m=8"]);
        // Each line over every value, as uWSGI expands a `for`.
        let looped = read(
            "[uwsgi]\nfor = one two\npythonpath = /srv/%(_)/src\npythonpath = /srv/%(_)/lib\nendfor =\n",
        );
        assert_eq!(
            values(&looped, "pythonpath"),
            [
                "/srv/one/src",
                "/srv/two/src",
                "/srv/one/lib",
                "/srv/two/lib"
            ]
        );
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
}
