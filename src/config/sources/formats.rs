//! The per-format parsers: uWSGI's INI, YAML, JSON and XML config files,
//! each read into the `(key, value, line)` items of one section.

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

/// uWSGI's INI rules: `#`/`;` comments only at the start of a line, no
/// inline comments, the first `=` splits, a bare key is a flag (empty
/// value), only the chosen section counts, repeated keys all count. None
/// when the file has no such section.
pub fn parse_ini(
    text: &str,
    section: &str,
    default_section: bool,
) -> Option<Vec<(String, String, usize)>> {
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
    found.then_some(out)
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

/// What a YAML file holds, and whether it had to be read by uWSGI's line
/// rules because it is not valid YAML (the reason, for a warning).
pub struct YamlItems {
    pub items: Vec<(String, String, usize)>,
    pub not_yaml: Option<String>,
}

/// The `uwsgi:` (or `oxgate:`) mapping; a list value repeats the key. A file
/// a YAML parser refuses is read the way uWSGI's own reader reads it, line
/// by line, since real files write `chdir: %(base)` and uWSGI takes it.
pub fn parse_yaml(text: &str, section: &str) -> Result<YamlItems, String> {
    match parse_strict_yaml(text, section) {
        Ok(items) => Ok(YamlItems {
            items,
            not_yaml: None,
        }),
        Err(StrictYamlError::Invalid(why)) => {
            let items = parse_yaml_lines(text, section)
                .map_err(|e| format!("invalid YAML ({why}), and {e}"))?;
            Ok(YamlItems {
                items,
                not_yaml: Some(why),
            })
        }
        Err(StrictYamlError::Shape(why)) => Err(why),
    }
}

enum StrictYamlError {
    /// Not YAML at all: the line reader gets a try.
    Invalid(String),
    /// YAML, but not the shape of a config.
    Shape(String),
}

/// uWSGI's line-based reader: `#` starts a comment anywhere; `name:` opens
/// the section; each deeper `key: value` line is a setting, with spaces and
/// double quotes trimmed from both ends; the section ends at a line as
/// shallow as its name. oxgate also reads `- item` lines under a `key:` with
/// no value as a list, as valid YAML would.
fn parse_yaml_lines(text: &str, section: &str) -> Result<Vec<(String, String, usize)>, String> {
    let trim = |s: &str| s.trim_matches([' ', '\t', '\r', '"']).to_string();
    let depth = |line: &str| -> usize {
        line.chars()
            .take_while(|c| matches!(c, ' ' | '\t'))
            .map(|c| if c == '\t' { 8 } else { 1 })
            .sum()
    };
    let mut out = Vec::new();
    let mut section_depth: Option<usize> = None;
    let mut list_key: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split('#').next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        let d = depth(line);
        let body = line.trim();
        match section_depth {
            None => {
                if let Some(name) = body.strip_suffix(':')
                    && (name == section || name == "oxgate")
                {
                    section_depth = Some(d);
                }
            }
            Some(top) if d <= top => break,
            Some(_) => {
                if let Some(item) = body
                    .strip_prefix("- ")
                    .or(body.strip_prefix('-').filter(|r| r.is_empty()))
                {
                    let Some(key) = &list_key else {
                        return Err(format!("line {line_no}: a list item with no key above it"));
                    };
                    out.push((key.clone(), trim(item), line_no));
                    continue;
                }
                let (key, value) = match body.split_once(": ").or(body.split_once(":\t")) {
                    Some((k, v)) => (trim(k), trim(v)),
                    None => match body.strip_suffix(':') {
                        Some(k) => {
                            list_key = Some(trim(k));
                            continue;
                        }
                        None => {
                            return Err(format!(
                                "line {line_no}: expected `key: value`, got {body:?}"
                            ));
                        }
                    },
                };
                list_key = None;
                out.push((key, value, line_no));
            }
        }
    }
    if section_depth.is_none() {
        return Err(format!("no top-level `{section}:` mapping"));
    }
    Ok(out)
}

fn parse_strict_yaml(
    text: &str,
    section: &str,
) -> Result<Vec<(String, String, usize)>, StrictYamlError> {
    use StrictYamlError::{Invalid, Shape};
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| Invalid(e.to_string()))?;
    let root = docs.first().ok_or(Shape("empty YAML file".into()))?;
    let map = [section, "oxgate"]
        .iter()
        .find_map(|s| match &root[*s] {
            Yaml::Hash(h) => Some(h),
            _ => None,
        })
        .ok_or_else(|| Shape(format!("no top-level `{section}:` mapping")))?;
    let mut out = Vec::new();
    for (k, v) in map {
        let key = scalar_to_string(k).ok_or(Shape("a key that is not a scalar".into()))?;
        match v {
            Yaml::Array(items) => {
                for item in items {
                    let value = scalar_to_string(item)
                        .ok_or_else(|| Shape(format!("{key}: list items must be scalars")))?;
                    out.push((key.clone(), value, 0));
                }
            }
            other => {
                let value = scalar_to_string(other).ok_or_else(|| {
                    Shape(format!("{key}: expected a scalar or a list of scalars"))
                })?;
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
            _ => return None,
        })
    };
    let mut out = Vec::new();
    // A null sets nothing, as in uWSGI's JSON reader (never a flag).
    for (key, v) in obj.iter().filter(|(_, v)| !v.is_null()) {
        match v {
            Value::Array(items) => {
                for item in items.iter().filter(|v| !v.is_null()) {
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
    let ours = |n: &roxmltree::Node<'_, '_>| ["uwsgi", "oxgate"].contains(&n.tag_name().name());
    // `file.xml:name` is uWSGI's `<uwsgi id="name">`, wherever it is; an
    // element named `name` is taken too.
    let by_id = (section != "uwsgi")
        .then(|| {
            root.descendants()
                .find(|n| n.is_element() && ours(n) && n.attribute("id") == Some(section))
        })
        .flatten();
    let node = if let Some(n) = by_id {
        n
    } else if [section, "oxgate"].contains(&root.tag_name().name()) {
        root
    } else {
        root.children()
            .find(|n| n.is_element() && [section, "oxgate"].contains(&n.tag_name().name()))
            .ok_or_else(|| format!("no <uwsgi id=\"{section}\"> or <{section}> element"))?
    };
    Ok(node
        .children()
        .filter(|n| n.is_element())
        .map(|n| {
            let line = doc.text_pos_at(n.range().start).row as usize;
            // uWSGI's legacy `<app mountpoint="/x"><script>mod</script></app>`
            // is a mount.
            if n.tag_name().name() == "app" {
                let script = n
                    .children()
                    .find(|c| c.is_element() && c.tag_name().name() == "script")
                    .and_then(|c| c.text())
                    .unwrap_or("")
                    .trim();
                let point = n.attribute("mountpoint").unwrap_or("/");
                return ("mount".to_string(), format!("{point}={script}"), line);
            }
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
        assert_eq!(parse_ini("[x]\na=1\n", "uwsgi", true), None);
        // An empty section is one.
        assert_eq!(parse_ini("[uwsgi]\n", "uwsgi", true), Some(vec![]));
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
        assert!(y.not_yaml.is_none());
        let y = y.items;
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
        let x = parse_xml(
            "<uwsgi id=\"site\"><app mountpoint=\"/blog\"><script>blog.wsgi</script></app></uwsgi>",
            "uwsgi",
        )
        .unwrap();
        assert_eq!(
            (x[0].0.as_str(), x[0].1.as_str()),
            ("mount", "/blog=blog.wsgi")
        );
        assert!(parse_json("{}", "uwsgi").is_err());
        // A null is no value, not a flag.
        let j = parse_json(
            r#"{"uwsgi": {"master": null, "socket": [":1", null]}}"#,
            "uwsgi",
        );
        assert_eq!(j.unwrap(), vec![("socket".into(), ":1".into(), 0)]);
    }

    #[test]
    fn yaml_that_is_not_yaml_is_read_as_uwsgi_does() {
        let text = "# deploy\nother:\n  x: 1\nuwsgi:\n  chdir: %(base)\n  logformat: UWSGI: %(method) %(uri)  # note\n  socket: \"/tmp/a.sock\"\n  env:\n    - A=1\n    - B=2\n  master: true\nnext:\n  y: 2\n";
        let y = parse_yaml(text, "uwsgi").unwrap();
        assert!(y.not_yaml.is_some());
        let got: Vec<(&str, &str, usize)> = y
            .items
            .iter()
            .map(|(k, v, l)| (k.as_str(), v.as_str(), *l))
            .collect();
        assert_eq!(
            got,
            [
                ("chdir", "%(base)", 5),
                ("logformat", "UWSGI: %(method) %(uri)", 6),
                ("socket", "/tmp/a.sock", 7),
                ("env", "A=1", 9),
                ("env", "B=2", 10),
                ("master", "true", 11),
            ]
        );
        let err = parse_yaml("uwsgi:\n  a: %(x)\n  junk\n", "uwsgi")
            .err()
            .unwrap();
        assert!(
            err.contains("invalid YAML") && err.contains("line 3"),
            "{err}"
        );
        let err = parse_yaml("app:\n  a: %(x)\n", "uwsgi").err().unwrap();
        assert!(err.contains("no top-level `uwsgi:`"), "{err}");
        // Valid YAML of the wrong shape is not second-guessed.
        assert!(parse_yaml("uwsgi: [1, 2]\n", "uwsgi").is_err());
    }

    proptest::proptest! {
        #[test]
        fn yaml_reading_never_panics(text in "[a-z:%()\"# \t\n-]{0,200}") {
            let _ = parse_yaml(&text, "uwsgi");
        }
    }
}
