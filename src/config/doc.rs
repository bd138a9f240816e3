//! What is generated from the option table: `--help` and `--print-config`.

use std::fmt::Write as _;

use super::defs;
use super::parse::Loaded;

/// `--print-config`: each option set, its value(s) and where each came from.
pub fn print_config(loaded: &Loaded) -> String {
    let mut out = String::new();
    for o in defs::OPTIONS {
        for s in loaded.settings.iter().filter(|s| std::ptr::eq(s.opt, o)) {
            let _ = writeln!(out, "{} = {}    # {}", o.name, s.value, s.origin);
        }
    }
    if !loaded.unknown.is_empty() {
        let _ = writeln!(out, "# not options (kept as placeholders):");
        for e in &loaded.unknown {
            let _ = writeln!(out, "# {} = {}    # {}", e.key, e.value, e.origin);
        }
    }
    out
}

/// `--help`, generated from the option table.
pub fn help_text() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "oxgate {} - serve Python WSGI apps\n\n\
         Usage: oxgate --http-socket ADDR (--wsgi-file FILE | --module pkg.mod:app) [OPTIONS]\n       \
         oxgate [OPTIONS] pkg.mod:app",
        env!("CARGO_PKG_VERSION")
    );
    for group in defs::Group::ALL {
        let _ = writeln!(out, "\n{}:", group.title());
        for o in defs::OPTIONS.iter().filter(|o| o.group == group) {
            let mut names = String::new();
            if let Some(c) = o.short {
                let _ = write!(names, "-{c}, ");
            }
            let _ = write!(names, "--{}", o.name);
            for a in o.aliases {
                let _ = write!(names, ", --{a}");
            }
            if !o.value_name.is_empty() {
                let _ = write!(names, " {}", o.value_name);
            }
            let _ = writeln!(out, "  {names}\n      {}", o.help);
        }
    }
    out
}
