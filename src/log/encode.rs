//! uWSGI's log encoders (`json`, `format`, `prefix`, `suffix`): what a
//! line becomes before it is written, for oxgate's own lines and request
//! lines alike.

use std::fmt::Write as _;

use crate::sys::clock::wall_us;
use crate::sys::time::strftime;

/// One of uWSGI's log encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeStep {
    /// `json TEMPLATE`: `${msg}` and friends filled in, JSON-escaped.
    Json(String),
    /// `format TEMPLATE`: the same, as they are.
    Format(String),
    /// `prefix TEXT` and `suffix TEXT`.
    Prefix(String),
    Suffix(String),
}

/// `line` through each encoder in turn, each given what the one before
/// made, as uWSGI chains them.
pub fn encode(steps: &[EncodeStep], line: String) -> String {
    let mut out = line;
    for step in steps {
        let msg = std::mem::replace(&mut out, String::with_capacity(256));
        match step {
            EncodeStep::Json(t) => fill_template(&mut out, t, &msg, true),
            EncodeStep::Format(t) => fill_template(&mut out, t, &msg, false),
            EncodeStep::Prefix(text) => {
                out.push_str(text);
                out.push_str(&msg);
            }
            EncodeStep::Suffix(text) => {
                out.push_str(&msg);
                out.push_str(text);
            }
        }
    }
    out
}

/// uWSGI's `json` encoder: `${msg}`, `${msgnl}`, `${unix}`, `${micros}`,
/// `${millis}`, `${strftime:FMT}`; text values JSON-escaped.
pub fn fill_template(out: &mut String, template: &str, msg: &str, json: bool) {
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

pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_escape(out, s);
    out.push('"');
}

pub fn json_escape(out: &mut String, s: &str) {
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

    #[test]
    fn encoders_chain_in_the_order_given() {
        let steps = [
            EncodeStep::Format("[${msg}]".into()),
            EncodeStep::Prefix("> ".into()),
            EncodeStep::Json(r#"{"m":"${msg}"}"#.into()),
            EncodeStep::Suffix(" <".into()),
        ];
        assert_eq!(encode(&steps, "a\"b".into()), r#"{"m":"> [a\"b]"} <"#);
    }
}
