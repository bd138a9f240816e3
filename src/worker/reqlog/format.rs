//! Log formats: a `--log-format` parsed into pieces, the `json` encoder's
//! `${...}` templates, and JSON string escaping.

use std::fmt::Write as _;

use super::fields::{FIELDS, Field};
use crate::sys::clock::wall_us;
use crate::sys::time::strftime;

#[derive(Debug, Clone)]
pub(super) enum Piece {
    Text(String),
    Field(Field),
    /// `%(var.NAME)`: index into the captured extra variables.
    Var(usize),
    /// `%(resp.NAME)`: index into the response headers the log names.
    Resp(usize),
    /// A name uWSGI would look up among app-set log vars: renders "-".
    Unknown,
}

/// A `--log-format` in pieces; the `%(var.NAME)` names it uses go to
/// `extra`, and its `%(resp.NAME)` names (lower-case) to `resp`.
pub(super) fn parse_format(
    f: &str,
    extra: &mut Vec<Vec<u8>>,
    resp: &mut Vec<Vec<u8>>,
) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = f;
    while let Some(at) = rest.find("%(") {
        let Some(end) = rest[at..].find(')') else {
            break;
        };
        text.push_str(&rest[..at]);
        let name = &rest[at + 2..at + end];
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(if let Some(var) = name.strip_prefix("var.") {
            extra.push(var.as_bytes().to_vec());
            Piece::Var(extra.len() - 1)
        } else if let Some(header) = name.strip_prefix("resp.") {
            let header = header.to_ascii_lowercase().into_bytes();
            let i = resp.iter().position(|h| *h == header).unwrap_or_else(|| {
                resp.push(header);
                resp.len() - 1
            });
            Piece::Resp(i)
        } else if let Some((_, field)) = FIELDS.iter().find(|(n, _)| *n == name) {
            Piece::Field(*field)
        } else {
            Piece::Unknown
        });
        rest = &rest[at + end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// uWSGI's `json` encoder: `${msg}`, `${msgnl}`, `${unix}`, `${micros}`,
/// `${millis}`, `${strftime:FMT}`; text values JSON-escaped.
pub(super) fn fill_template(out: &mut String, template: &str, msg: &str, json: bool) {
    let text = |out: &mut String, s: &str| match json {
        true => json_escape(out, s),
        false => out.push_str(s),
    };
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        let Some(end) = rest[at..].find('}') else {
            break;
        };
        out.push_str(&rest[..at]);
        let name = &rest[at + 2..at + end];
        let now = wall_us();
        match name {
            "msg" => text(out, msg),
            "msgnl" => {
                text(out, msg);
                text(out, "\n");
            }
            "unix" => {
                let _ = write!(out, "{}", now / 1_000_000);
            }
            "micros" => {
                let _ = write!(out, "{now}");
            }
            "millis" => {
                let _ = write!(out, "{}", now / 1000);
            }
            other => match other.strip_prefix("strftime:") {
                Some(fmt) => text(out, &strftime(fmt, now / 1_000_000)),
                None => out.push_str(&rest[at..at + end + 1]),
            },
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
}

pub(super) fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_escape(out, s);
    out.push('"');
}

pub(super) fn json_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_pieces_and_unknown_names() {
        let (mut extra, mut resp) = (Vec::new(), Vec::new());
        let p = parse_format(
            "%(method) %(var.HTTP_X_A) %(nope) 100% %(resp.Content-Type) %(resp.content-type)",
            &mut extra,
            &mut resp,
        );
        assert!(matches!(p[0], Piece::Field(Field::Method)));
        assert!(matches!(p[2], Piece::Var(0)));
        assert!(matches!(p[4], Piece::Unknown));
        assert!(matches!(&p[5], Piece::Text(t) if t == " 100% "));
        assert!(matches!(p[6], Piece::Resp(0)));
        assert!(matches!(p[8], Piece::Resp(0)));
        assert_eq!(extra, vec![b"HTTP_X_A".to_vec()]);
        assert_eq!(resp, vec![b"content-type".to_vec()]);
    }

    #[test]
    fn template_escapes_the_message() {
        let mut out = String::new();
        fill_template(
            &mut out,
            r#"{"msg":"${msg}","x":${nope}}"#,
            "a \"b\"\n",
            true,
        );
        assert_eq!(out, r#"{"msg":"a \"b\"\n","x":${nope}}"#);
    }

    #[test]
    fn a_format_template_takes_the_message_as_it_is() {
        let mut out = String::new();
        fill_template(&mut out, "<${msg}|${msgnl}|${", "a \"b\"", false);
        assert_eq!(out, "<a \"b\"|a \"b\"\n|${");
    }
}
