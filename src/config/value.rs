//! How option values are read: leniently, the way uWSGI reads them.

/// Reads a boolean the way uWSGI does.
pub fn parse_bool(v: &str) -> Option<bool> {
    // "true # comment": uWSGI has no inline comments, but reads the value's
    // start, so such files work there.
    let first = v.split_whitespace().next().unwrap_or("");
    match first.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" | "y" | "t" => Some(true),
        "0" | "false" | "no" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

/// Whether a switch is on. uWSGI's switches are off only for false, off, no
/// and 0 (and oxgate's n and f): any other value turns them on, so real
/// files write `vhost = some.host.name` and mean true.
pub fn switch_on(v: &str) -> bool {
    parse_bool(v).unwrap_or(true)
}

/// Reads a number the way uWSGI does: its leading digits, 0 when there are none.
pub fn parse_int(v: &str) -> i64 {
    let v = v.trim();
    let (neg, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if neg { -n } else { n }
}
