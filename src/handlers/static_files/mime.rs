//! File extensions to MIME types: `/etc/mime.types` (or `--mimefile`), then
//! mime_guess's built-in table, then `application/octet-stream`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub struct MimeTypes {
    /// Each extension's type, and its Content-Type value made once (a
    /// static file's header is then a reference count, not a format).
    by_ext: HashMap<String, (String, Bytes)>,
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

    /// The type of a file named `name` (the last path segment counts), and
    /// the Content-Type to send.
    pub fn lookup(&self, name: &Path) -> (Cow<'_, str>, Bytes) {
        let ext = name.extension().and_then(|e| e.to_str()).unwrap_or("");
        let ext = if ext.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(ext.to_ascii_lowercase())
        } else {
            Cow::Borrowed(ext)
        };
        if let Some((mime, header)) = self.by_ext.get(&*ext) {
            return (Cow::Borrowed(mime), header.clone());
        }
        let mime = mime_guess::from_ext(&ext)
            .first_raw()
            .unwrap_or("application/octet-stream");
        (Cow::Borrowed(mime), static_content_type(mime))
    }
}

/// The mime.types format: "type ext ext…" per line, `#` comments. The first
/// type an extension is given keeps it.
fn read_table(text: &str, by_ext: &mut HashMap<String, (String, Bytes)>) {
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
                .or_insert_with(|| (mime.to_string(), Bytes::from(content_type(mime))));
        }
    }
}

/// The Content-Type to send for one of mime_guess's types: made without
/// an allocation unless it gains a charset.
fn static_content_type(mime: &'static str) -> Bytes {
    if needs_charset(mime) {
        Bytes::from(content_type(mime))
    } else {
        Bytes::from_static(mime.as_bytes())
    }
}

/// The Content-Type to send: text gets `charset=utf-8`, but for HTML and
/// XML, which name their own encoding (`<meta charset>`, `<?xml
/// encoding?>`) and whose HTTP charset would override it: a Latin-1 feed
/// labelled UTF-8 is malformed to an XML parser. uWSGI and nginx label
/// none.
pub fn content_type(mime: &str) -> String {
    if needs_charset(mime) {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

fn needs_charset(mime: &str) -> bool {
    let texty =
        mime.starts_with("text/") || matches!(mime, "application/javascript" | "application/json");
    let declares_its_own = mime == "text/html" || mime.ends_with("/xml") || mime.ends_with("+xml");
    texty && !declares_its_own && !mime.contains("charset")
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
        let of = |name: &str| {
            let (mime, header) = t.lookup(Path::new(name));
            (mime.into_owned(), header)
        };
        assert_eq!(
            of("/a/site.css"),
            (
                "text/x-custom".into(),
                "text/x-custom; charset=utf-8".into()
            )
        );
        assert_eq!(of("site.CSSX").0, "text/x-custom");
        assert_eq!(of("x.png"), ("image/png".into(), "image/png".into()));
        assert_eq!(of("x.foo").0, "application/octet-stream");
        assert_eq!(of("noext").0, "application/octet-stream");
    }

    #[test]
    fn text_gets_a_charset() {
        assert_eq!(content_type("text/css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("application/javascript"),
            "application/javascript; charset=utf-8"
        );
        assert_eq!(content_type("image/png"), "image/png");
        // These name their encoding themselves.
        for own in [
            "text/html",
            "text/xml",
            "application/xml",
            "application/rss+xml",
            "image/svg+xml",
        ] {
            assert_eq!(content_type(own), own);
        }
        assert_eq!(
            content_type("text/plain; charset=latin1"),
            "text/plain; charset=latin1"
        );
    }

    #[test]
    fn any_line_is_read_without_panicking() {
        proptest::proptest!(|(text in "\\PC*")| {
            let t = table(&text);
            let _ = t.lookup(Path::new("a.b"));
        });
    }
}
