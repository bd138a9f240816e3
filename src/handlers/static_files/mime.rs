//! File extensions to MIME types: `/etc/mime.types` (or `--mimefile`), then
//! mime_guess's built-in table, then `application/octet-stream`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct MimeTypes {
    by_ext: HashMap<String, String>,
}

const SYSTEM_TABLE: &str = "/etc/mime.types";

impl MimeTypes {
    /// Reads the files given (each must be readable), or the system's table
    /// when none is given and it exists.
    pub fn load(files: &[PathBuf]) -> Result<MimeTypes, String> {
        let mut by_ext = HashMap::new();
        let system = [PathBuf::from(SYSTEM_TABLE)];
        let (files, required) = if files.is_empty() {
            (&system[..], false)
        } else {
            (files, true)
        };
        for file in files {
            match std::fs::read_to_string(file) {
                Ok(text) => read_table(&text, &mut by_ext),
                Err(e) if required => return Err(format!("--mimefile {}: {e}", file.display())),
                Err(_) => {}
            }
        }
        Ok(MimeTypes { by_ext })
    }

    /// The type of a file named `name` (the last path segment counts).
    pub fn for_name(&self, name: &Path) -> String {
        let ext = name
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if let Some(t) = self.by_ext.get(&ext) {
            return t.clone();
        }
        mime_guess::from_ext(&ext)
            .first_raw()
            .unwrap_or("application/octet-stream")
            .to_string()
    }
}

/// The mime.types format: "type ext ext…" per line, `#` comments. The first
/// type an extension is given keeps it.
fn read_table(text: &str, by_ext: &mut HashMap<String, String>) {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(mime) = words.next() else { continue };
        if !mime.contains('/') {
            continue;
        }
        for ext in words {
            by_ext
                .entry(ext.to_ascii_lowercase())
                .or_insert_with(|| mime.to_string());
        }
    }
}

/// The Content-Type to send: text gets `charset=utf-8`.
pub fn content_type(mime: &str) -> String {
    let texty = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "image/svg+xml"
        );
    if texty && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> MimeTypes {
        let mut by_ext = HashMap::new();
        read_table(text, &mut by_ext);
        MimeTypes { by_ext }
    }

    #[test]
    fn the_table_wins_then_the_built_in_one() {
        let t = table(
            "# comment\ntext/x-custom  css  CSSX\napplication/x-thing\nnot-a-type foo\ntext/other css\n",
        );
        assert_eq!(t.for_name(Path::new("/a/site.css")), "text/x-custom");
        assert_eq!(t.for_name(Path::new("site.CSSX")), "text/x-custom");
        assert_eq!(t.for_name(Path::new("x.png")), "image/png");
        assert_eq!(t.for_name(Path::new("x.foo")), "application/octet-stream");
        assert_eq!(t.for_name(Path::new("noext")), "application/octet-stream");
    }

    #[test]
    fn text_gets_a_charset() {
        assert_eq!(content_type("text/css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("application/javascript"),
            "application/javascript; charset=utf-8"
        );
        assert_eq!(content_type("image/png"), "image/png");
        assert_eq!(
            content_type("text/plain; charset=latin1"),
            "text/plain; charset=latin1"
        );
    }

    #[test]
    fn any_line_is_read_without_panicking() {
        proptest::proptest!(|(text in "\\PC*")| {
            let t = table(&text);
            let _ = t.for_name(Path::new("a.b"));
        });
    }
}
