//! Precompressed files (`--static-gzip-all`, `--static-gzip-dir`,
//! `--static-gzip-ext`): FILE.br or FILE.gz, made at build time, sent in
//! FILE's place to a client whose Accept-Encoding takes it.

/// A content coding oxgate can send precompressed, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    pub const PREFERRED: [Coding; 2] = [Coding::Brotli, Coding::Gzip];

    pub fn name(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The suffix of the precompressed file.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }
}

/// Whether an Accept-Encoding value takes `coding` (RFC 9110 §12.5.3):
/// named, or matched by `*`, with a q-value above 0. `x-gzip` is gzip.
pub fn accepts(header: &[u8], coding: Coding) -> bool {
    let Ok(header) = std::str::from_utf8(header) else {
        return false;
    };
    let mut named = None;
    let mut any = None;
    for item in header.split(',') {
        let mut params = item.split(';');
        let name = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| {
                v.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
            });
        let Some(q) = q else { continue };
        let matches = name == coding.name() || (coding == Coding::Gzip && name == "x-gzip");
        if matches {
            named = Some(q);
        } else if name == "*" {
            any = Some(q);
        }
    }
    named.or(any).is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_and_q_values() {
        assert!(accepts(b"gzip, deflate, br", Coding::Brotli));
        assert!(accepts(b"gzip, deflate, br", Coding::Gzip));
        assert!(accepts(b"GZIP", Coding::Gzip));
        assert!(accepts(b"x-gzip", Coding::Gzip));
        assert!(!accepts(b"gzip;q=0", Coding::Gzip));
        assert!(!accepts(b"gzip; q=0.000", Coding::Gzip));
        assert!(accepts(b"gzip;q=0.5", Coding::Gzip));
        assert!(accepts(b"*", Coding::Brotli));
        assert!(!accepts(b"*, br;q=0", Coding::Brotli));
        assert!(accepts(b"*;q=0, gzip", Coding::Gzip));
        assert!(!accepts(b"identity", Coding::Gzip));
        assert!(!accepts(b"", Coding::Gzip));
        assert!(!accepts(b"gzip;q=2", Coding::Gzip)); // not a q-value: ignored
        assert!(!accepts(b"\xff", Coding::Gzip));
    }

    #[test]
    fn any_header_is_read_without_panicking() {
        proptest::proptest!(|(h in proptest::collection::vec(proptest::num::u8::ANY, 0..64))| {
            let _ = accepts(&h, Coding::Gzip);
            let _ = accepts(&h, Coding::Brotli);
        });
    }
}
