//! RFC 7239's `Forwarded` header: a comma-separated list of elements, one
//! per proxy, each a `;`-separated list of `name=value` pairs whose value
//! is a token or a quoted string:
//!
//! ```text
//! Forwarded: for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711"
//! ```
//!
//! Only the syntax is here; which element to believe is the proxy-header
//! wrapper's choice (`request::wrappers`).

/// One element: what one proxy said of the hop it received. Names are
/// lower-cased (they are case-insensitive); values are unquoted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Element {
    pub pairs: Vec<(String, String)>,
}

impl Element {
    /// The value of `name` (lower-case), the first if repeated.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The longest header read: a longer one is refused as a whole rather than
/// parsed into thousands of elements.
pub const MAX_LEN: usize = 8192;

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// The elements of a `Forwarded` value (several header lines joined with
/// commas read as one). Anything outside the grammar (an unterminated
/// quote, a pair without `=`, a stray character) makes the whole value
/// `Malformed`: a client's broken element could otherwise swallow, or
/// pass for, the ones its proxies added after it. Empty elements (`a, ,b`)
/// are skipped, as RFC 7230's list rule allows.
pub fn parse(value: &str) -> Result<Vec<Element>, Malformed> {
    if value.len() > MAX_LEN {
        return Err(Malformed);
    }
    let mut rest = value.as_bytes();
    let mut elements = Vec::new();
    let mut element = Element::default();
    loop {
        rest = skip_space(rest);
        match rest.first() {
            None => break,
            Some(b',') => {
                rest = &rest[1..];
                if !element.pairs.is_empty() {
                    elements.push(std::mem::take(&mut element));
                }
                continue;
            }
            Some(b';') => {
                rest = &rest[1..];
                continue;
            }
            Some(_) => {}
        }
        let name_len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if name_len == 0 {
            return Err(Malformed);
        }
        let name = lossless(&rest[..name_len]).to_ascii_lowercase();
        rest = &rest[name_len..];
        let Some(b'=') = rest.first() else {
            return Err(Malformed);
        };
        rest = &rest[1..];
        let value;
        (value, rest) = if rest.first() == Some(&b'"') {
            quoted(&rest[1..])?
        } else {
            let len = rest.iter().take_while(|&&b| is_tchar(b)).count();
            if len == 0 {
                return Err(Malformed);
            }
            (lossless(&rest[..len]), &rest[len..])
        };
        element.pairs.push((name, value));
        // After a pair: the end, a separator, or space before one.
        let after = skip_space(rest);
        if !matches!(after.first(), None | Some(b',' | b';')) {
            return Err(Malformed);
        }
        rest = after;
    }
    if !element.pairs.is_empty() {
        elements.push(element);
    }
    Ok(elements)
}

/// A quoted string's contents, after its opening quote, and what follows
/// its closing one.
fn quoted(mut rest: &[u8]) -> Result<(String, &[u8]), Malformed> {
    let mut out = Vec::new();
    loop {
        match rest {
            [b'"', tail @ ..] => return Ok((lossless(&out), tail)),
            [b'\\', escaped, tail @ ..] => {
                out.push(*escaped);
                rest = tail;
            }
            [b, tail @ ..] if *b != b'\\' => {
                out.push(*b);
                rest = tail;
            }
            _ => return Err(Malformed),
        }
    }
}

/// The bytes as text: the value came from a `&str`, and the splits fall on
/// ASCII bytes, so nothing is lost.
fn lossless(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    &bytes[n..]
}

/// RFC 7230's token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The value written back (each value quoted where it must be): for tests
/// and the fuzz target, which read it again.
#[doc(hidden)]
pub fn render(elements: &[Element]) -> String {
    elements
        .iter()
        .map(|e| {
            e.pairs
                .iter()
                .map(|(n, v)| {
                    if !v.is_empty() && v.bytes().all(is_tchar) {
                        format!("{n}={v}")
                    } else {
                        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
                        format!("{n}=\"{escaped}\"")
                    }
                })
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(value: &str) -> Vec<Vec<(String, String)>> {
        parse(value).unwrap().into_iter().map(|e| e.pairs).collect()
    }

    fn owned(p: &[&[(&str, &str)]]) -> Vec<Vec<(String, String)>> {
        p.iter()
            .map(|e| {
                e.iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn reads_rfc_7239s_examples() {
        assert_eq!(pairs(r#"for="_gazonk""#), owned(&[&[("for", "_gazonk")]]));
        assert_eq!(
            pairs(r#"For="[2001:db8:cafe::17]:4711""#),
            owned(&[&[("for", "[2001:db8:cafe::17]:4711")]])
        );
        assert_eq!(
            pairs("for=192.0.2.60;proto=http;by=203.0.113.43"),
            owned(&[&[
                ("for", "192.0.2.60"),
                ("proto", "http"),
                ("by", "203.0.113.43")
            ]])
        );
        assert_eq!(
            pairs("for=192.0.2.43, for=198.51.100.17"),
            owned(&[&[("for", "192.0.2.43")], &[("for", "198.51.100.17")]])
        );
    }

    #[test]
    fn separators_spaces_and_escapes() {
        assert_eq!(
            pairs(" for=a ; proto=https ,, for=\"b\\\"c\" "),
            owned(&[&[("for", "a"), ("proto", "https")], &[("for", "b\"c")]])
        );
        // A comma inside quotes is not a separator.
        assert_eq!(pairs(r#"for="a,b""#), owned(&[&[("for", "a,b")]]));
        assert_eq!(pairs(""), owned(&[]));
    }

    #[test]
    fn refuses_what_is_outside_the_grammar() {
        for bad in [
            r#"for="unterminated, for=1.2.3.4"#,
            "for",
            "for=a b",
            "=a",
            "for=[::1]:80",
            "for=\"a\\",
            "for=a;;x",
            "for=",
        ] {
            assert_eq!(parse(bad), Err(Malformed), "{bad}");
        }
        assert_eq!(parse(&"for=a,".repeat(2000)), Err(Malformed));
    }

    #[test]
    fn get_is_by_lower_case_name() {
        let e = &parse("For=x;PROTO=https").unwrap()[0];
        assert_eq!(
            (e.get("for"), e.get("proto"), e.get("by")),
            (Some("x"), Some("https"), None)
        );
    }

    fn element() -> impl Strategy<Value = Element> {
        proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9_-]{0,6}", "[ -~]{0,12}"), 1..4).prop_map(
            |pairs| Element {
                pairs: pairs
                    .into_iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v))
                    .collect(),
            },
        )
    }

    proptest! {
        #[test]
        fn what_is_rendered_reads_back(elements in proptest::collection::vec(element(), 0..5)) {
            prop_assert_eq!(parse(&render(&elements)), Ok(elements));
        }

        #[test]
        fn any_text_reads_or_is_refused_and_reads_back_as_rendered(value in "[ -~]{0,60}") {
            if let Ok(elements) = parse(&value) {
                prop_assert_eq!(parse(&render(&elements)), Ok(elements));
            }
        }
    }
}
