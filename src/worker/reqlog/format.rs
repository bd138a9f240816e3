//! Log formats: a `--log-format` parsed into pieces, the `json` encoder's
//! `${...}` templates, and JSON string escaping.

use super::fields::{FIELDS, Field};
pub(super) use crate::log::encode::json_str;

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
}
