//! uWSGI's INI, YAML, JSON and XML config readers on any text: never a
//! panic, and every item names a line of the text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::config::sources::formats::{parse_ini, parse_json, parse_xml, parse_yaml};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let lines = text.lines().count().max(1);
    let items = match which % 5 {
        0 => parse_ini(&text, "uwsgi", false).ok_or(()),
        1 => parse_ini(&text, "uwsgi", true).ok_or(()),
        2 => parse_yaml(&text, "uwsgi").map(|y| y.items).map_err(drop),
        3 => parse_json(&text, "uwsgi").map_err(drop),
        _ => parse_xml(&text, "uwsgi").map_err(drop),
    };
    if let Ok(items) = items {
        for (_, _, line) in items {
            assert!(line <= lines + 1, "line {line} of {lines}");
        }
    }
});
