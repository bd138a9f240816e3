//! A `Range` header (RFC 9110 §14.1.2, §14.2) against a representation's
//! length: whole (200), none satisfiable (416), or which bytes (206). Pure:
//! the header's bytes in, the answer out.
//!
//! The `headers` crate reads the header, but drops a suffix range longer
//! than the file (`bytes=-65536` on a smaller file: the whole file, in
//! RFC 9110 and nginx) and neither merges nor bounds ranges. A request for
//! `0-,0-,0-…` would have every copy sent: one 8 KiB head, gigabytes out
//! (RFC 9110 §17.15). So ranges are merged, and a set of more than
//! [`MAX_PARTS`] is answered with the whole representation, as Apache's
//! `MaxRanges` has it. Otherwise the answers are nginx's: a malformed set
//! is a 416, a range whose last position is before its first is skipped.

/// The most parts a 206 multipart/byteranges answer has; more, after
/// overlapping and adjacent ranges are merged, get the whole file.
pub const MAX_PARTS: usize = 64;

/// What to send for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// 200 with the whole representation: a unit other than bytes, more
    /// than [`MAX_PARTS`] parts, or an empty representation.
    Whole,
    /// 416: no range overlaps the representation, or the set is malformed
    /// (as nginx answers it; RFC 9110 §14.2 would let it be ignored too).
    Unsatisfiable,
    /// 206: `first..=last` each, in the order the header asked for them
    /// (a merged part in the place of its first), neither overlapping nor
    /// adjacent, all within the representation, at most [`MAX_PARTS`].
    Parts(Vec<(u64, u64)>),
}

/// One range-spec as written: `first-last`, `first-` or `-suffix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    From(u64, Option<u64>),
    Suffix(u64),
}

/// Reads `value` (a `Range` header's bytes) against a representation of
/// `len` bytes.
pub fn select(value: &[u8], len: u64) -> Ranges {
    let Some(specs) = parse(value) else {
        return Ranges::Unsatisfiable;
    };
    // An empty representation has no byte to range over: it is sent
    // whole (empty), as nginx sends it, rather than 416 to a client that
    // always asks for `bytes=0-` (RFC 9110 §14.2 lets a server ignore
    // Range, and notes clients cope better with a 200 here).
    if specs.is_empty() || len == 0 {
        return Ranges::Whole;
    }
    // Each with its place in the header.
    let mut wanted: Vec<(u64, u64, usize)> = specs
        .iter()
        .filter_map(|&spec| satisfiable(spec, len))
        .enumerate()
        .map(|(place, (first, last))| (first, last, place))
        .collect();
    if wanted.is_empty() {
        return Ranges::Unsatisfiable;
    }
    wanted.sort_unstable();
    let mut merged: Vec<(u64, u64, usize)> = Vec::with_capacity(wanted.len().min(MAX_PARTS + 1));
    for (first, last, place) in wanted {
        match merged.last_mut() {
            // Overlapping or adjacent: one part (RFC 9110 §14.6 allows it),
            // in the place of the first asked for.
            Some((_, end, at)) if first <= end.saturating_add(1) => {
                *end = (*end).max(last);
                *at = (*at).min(place);
            }
            _ => {
                if merged.len() == MAX_PARTS {
                    return Ranges::Whole;
                }
                merged.push((first, last, place));
            }
        }
    }
    // In the order asked for (RFC 9110 §14.6: a client may read the
    // parts by position, the file's tail and head at once).
    merged.sort_unstable_by_key(|&(_, _, place)| place);
    Ranges::Parts(
        merged
            .into_iter()
            .map(|(first, last, _)| (first, last))
            .collect(),
    )
}

/// The specs of a `bytes=` range set: none for another unit, `None` for
/// a malformed set.
fn parse(value: &[u8]) -> Option<Vec<Spec>> {
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return Some(Vec::new());
    };
    let (unit, set) = (&value[..eq], &value[eq + 1..]);
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return Some(Vec::new());
    }
    let mut specs = Vec::new();
    // A list (RFC 9110 §5.6.1): empty elements are allowed and skipped.
    for element in set.split(|&b| b == b',') {
        let element = element.trim_ascii();
        if element.is_empty() {
            continue;
        }
        let dash = element.iter().position(|&b| b == b'-')?;
        let (first, last) = (&element[..dash], &element[dash + 1..]);
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, true) => return None,
            (true, false) => Spec::Suffix(number(last)?),
            (false, true) => Spec::From(number(first)?, None),
            (false, false) => Spec::From(number(first)?, Some(number(last)?)),
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// 1*DIGIT; a value past u64 saturates (no file is that long, so a first
/// position that large is as unsatisfiable as its true value).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The bytes a spec names within `len`, first..=last, if any (§14.1.2).
fn satisfiable(spec: Spec, len: u64) -> Option<(u64, u64)> {
    let end = len.checked_sub(1)?;
    match spec {
        // A last position before the first: satisfies nothing.
        Spec::From(first, Some(last)) if last < first => None,
        Spec::From(first, last) => {
            (first <= end).then(|| (first, last.map_or(end, |l| l.min(end))))
        }
        // A suffix longer than the representation is all of it.
        Spec::Suffix(n) => (n > 0).then(|| (len - n.min(len), end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(v: &[(u64, u64)]) -> Ranges {
        Ranges::Parts(v.to_vec())
    }

    #[test]
    fn single_ranges_as_rfc_9110_has_them() {
        // §14.1.2's examples, on a 10,000-byte representation.
        assert_eq!(select(b"bytes=0-499", 10_000), parts(&[(0, 499)]));
        assert_eq!(select(b"bytes=500-999", 10_000), parts(&[(500, 999)]));
        assert_eq!(select(b"bytes=-500", 10_000), parts(&[(9500, 9999)]));
        assert_eq!(select(b"bytes=9500-", 10_000), parts(&[(9500, 9999)]));
        assert_eq!(
            select(b"bytes=0-0,-1", 10_000),
            parts(&[(0, 0), (9999, 9999)])
        );
        // A last position past the end is the end.
        assert_eq!(select(b"bytes=0-99999", 13), parts(&[(0, 12)]));
        // A suffix longer than the file is the whole file, as a 206.
        assert_eq!(select(b"bytes=-65536", 13), parts(&[(0, 12)]));
        assert_eq!(select(b"Bytes = 0-1", 13), Ranges::Whole); // not the bytes unit
        assert_eq!(select(b"BYTES=0-1", 13), parts(&[(0, 1)]));
        assert_eq!(select(b"bytes= 1-2 ,, 4-5 ", 13), parts(&[(1, 2), (4, 5)]));
    }

    #[test]
    fn unsatisfiable_sets_are_416() {
        assert_eq!(select(b"bytes=13-", 13), Ranges::Unsatisfiable);
        assert_eq!(select(b"bytes=20-30", 13), Ranges::Unsatisfiable);
        assert_eq!(select(b"bytes=-0", 13), Ranges::Unsatisfiable);
        // An empty file: whole, as nginx sends it.
        assert_eq!(select(b"bytes=0-", 0), Ranges::Whole);
        assert_eq!(select(b"bytes=-5", 0), Ranges::Whole);
        assert_eq!(
            select(b"bytes=99999999999999999999999-", 13),
            Ranges::Unsatisfiable
        );
        // One satisfiable range among others is enough.
        assert_eq!(select(b"bytes=50-60,2-3", 13), parts(&[(2, 3)]));
        // Last before first satisfies nothing (nginx skips it too).
        assert_eq!(select(b"bytes=5-3", 13), Ranges::Unsatisfiable);
        assert_eq!(select(b"bytes=5-3,0-1", 13), parts(&[(0, 1)]));
    }

    #[test]
    fn other_units_are_ignored_and_malformed_sets_unsatisfiable() {
        assert_eq!(select(b"items=0-1", 100), Ranges::Whole);
        assert_eq!(select(b"bytes", 100), Ranges::Whole);
        for v in [
            &b"bytes="[..],
            b"bytes=,",
            b"bytes=-",
            b"bytes=abc",
            b"bytes=a-b",
            b"bytes=0-1,x",
            b"bytes=1-2-3",
            b"bytes=+1-2",
            b"bytes=0x1-2",
            b"bytes=1 -2",
        ] {
            assert_eq!(
                select(v, 100),
                Ranges::Unsatisfiable,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn ranges_are_merged_kept_in_the_order_asked_and_bounded() {
        assert_eq!(select(b"bytes=0-,0-,0-", 100), parts(&[(0, 99)]));
        // A merged part takes the place of the first of its ranges.
        assert_eq!(
            select(b"bytes=50-59,0-9,10-19,55-70", 100),
            parts(&[(50, 70), (0, 19)])
        );
        assert_eq!(select(b"bytes=-10,0-5", 100), parts(&[(90, 99), (0, 5)]));
        assert_eq!(
            select(b"bytes=50-59,0-9,30-39", 100),
            parts(&[(50, 59), (0, 9), (30, 39)])
        );
        let many = |n: u64| {
            let specs: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
            format!("bytes={}", specs.join(","))
        };
        let at_most = select(many(MAX_PARTS as u64).as_bytes(), 1000);
        assert!(matches!(at_most, Ranges::Parts(p) if p.len() == MAX_PARTS));
        assert_eq!(
            select(many(MAX_PARTS as u64 + 1).as_bytes(), 1000),
            Ranges::Whole
        );
        // 8 KiB of `0-,` merges into one part.
        assert_eq!(
            select(format!("bytes={}", "0-,".repeat(2700)).as_bytes(), 1 << 30),
            parts(&[(0, (1 << 30) - 1)])
        );
    }

    proptest! {
        #[test]
        fn parts_are_in_bounds_sorted_apart_and_few(value in proptest::collection::vec(any::<u8>(), 0..80),
                                                     specs in proptest::collection::vec((proptest::option::of(0u64..300), proptest::option::of(0u64..300)), 0..80),
                                                     len in 0u64..250) {
            let written: Vec<String> = specs.iter().map(|(a, b)| format!(
                "{}-{}", a.map(|a| a.to_string()).unwrap_or_default(), b.map(|b| b.to_string()).unwrap_or_default())).collect();
            for v in [value, format!("bytes={}", written.join(",")).into_bytes()] {
                if let Ranges::Parts(p) = select(&v, len) {
                    prop_assert!(!p.is_empty() && p.len() <= MAX_PARTS);
                    prop_assert!(p.iter().all(|&(f, l)| f <= l && l < len));
                    let mut sorted = p.clone();
                    sorted.sort_unstable();
                    prop_assert!(sorted.windows(2).all(|w| w[0].1 + 1 < w[1].0));
                }
            }
        }

        #[test]
        fn every_byte_asked_for_is_sent_when_ranges_are_few(specs in proptest::collection::vec((0u64..200, 0u64..200), 1..10), len in 1u64..250) {
            let written: Vec<String> = specs.iter().map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))).collect();
            let wanted = |i: u64| specs.iter().any(|&(a, b)| a.min(b) <= i && i <= a.max(b));
            match select(format!("bytes={}", written.join(",")).as_bytes(), len) {
                Ranges::Parts(p) => for i in 0..len {
                    prop_assert_eq!(wanted(i), p.iter().any(|&(f, l)| f <= i && i <= l));
                },
                Ranges::Unsatisfiable => prop_assert!((0..len).all(|i| !wanted(i))),
                Ranges::Whole => prop_assert!(false, "a well-formed set of few ranges"),
            }
        }
    }
}
