//! What is generated from the option table: `--help`, `--print-config`,
//! the Markdown reference docs/options.md and the man page docs/oxgate.1.
//!
//! The two files are committed; a test compares them with what this module
//! generates. After changing the table, regenerate them with
//! `OXGATE_REGENERATE_DOCS=1 cargo test --lib config::doc`.

use std::fmt::Write as _;

use super::defs::{self, Group, OptDef, Status};
use super::parse::Loaded;
use super::sources;

/// How to bring docs/options.md and docs/oxgate.1 up to date.
const REGENERATE: &str = "OXGATE_REGENERATE_DOCS=1 cargo test --lib config::doc";

const SUMMARY: &str = "serve WSGI and ASGI apps, CGI scripts and FastCGI programs";

const USAGE: [&str; 2] = [
    "--http-socket ADDR (--wsgi-file FILE | --module pkg.mod:app) [OPTIONS]",
    "[OPTIONS] pkg.mod:app",
];

/// The command lines of the servers oxgate stands in for, read with
/// their own options (`oxgate gunicorn --help`, `oxgate uvicorn --help`).
const GUNICORN_USAGE: &str = "gunicorn [GUNICORN OPTIONS] pkg.mod:app";
const UVICORN_USAGE: &str = "uvicorn [UVICORN OPTIONS] pkg.mod:app";

/// `--print-config`: each option set, its value(s) and where each came
/// from; then, commented out, the default of each option not set.
pub fn print_config(loaded: &Loaded) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# read as: {}",
        loaded.dialect.as_deref().unwrap_or("uWSGI's options")
    );
    for &o in defs::OPTIONS {
        // A numeric -w is the worker count it is read as (`processes`).
        let mut given = loaded
            .settings
            .iter()
            .filter(|s| {
                if s.is_worker_count() {
                    o == &defs::opt::PROCESSES
                } else {
                    s.opt == o
                }
            })
            .peekable();
        if given.peek().is_none()
            && let Some(d) = o.default
        {
            let _ = writeln!(out, "# {} = {d}    # default", o.name);
        }
        for s in given {
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

/// `-l, --listen N`: every name, then the value.
fn names(o: &OptDef) -> String {
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
    names
}

/// The help paragraph with what the table says besides: whether the
/// option has an effect, and its default.
fn described(o: &OptDef) -> String {
    let mut text = String::new();
    if o.status == Status::Ignored {
        text.push_str("Accepted, no effect: ");
    }
    text.push_str(o.help);
    if let Some(d) = o.default {
        let _ = write!(text, " (default: {d})");
    }
    text
}

/// `--help`, generated from the option table.
pub fn help_text() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "oxgate {} - {SUMMARY}\n\nUsage: oxgate {}\n       oxgate {}\n       \
         oxgate {GUNICORN_USAGE}\n       oxgate {UVICORN_USAGE}",
        env!("CARGO_PKG_VERSION"),
        USAGE[0],
        USAGE[1],
    );
    for group in Group::ALL {
        let _ = writeln!(out, "\n{}:", group.title());
        for o in defs::OPTIONS.iter().filter(|o| o.group == group) {
            let _ = writeln!(out, "  {}\n      {}", names(o), described(o));
        }
    }
    out
}

/// uWSGI options common in real configs that oxgate does not implement
/// yet: the command line refuses them, config files warn about them.
fn not_implemented() -> Vec<&'static str> {
    let mut names: Vec<&str> = defs::UWSGI_OPTIONS
        .iter()
        .copied()
        .filter(|k| defs::lookup_exact(k).is_none() && !sources::is_directive(k))
        .collect();
    names.sort_unstable();
    names
}

/// Markdown text: `<` and `*` are escaped outside `code spans`.
fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut code = false;
    for c in text.chars() {
        match c {
            '`' => {
                code = !code;
                out.push(c);
            }
            '<' if !code => out.push_str("&lt;"),
            '*' | '\\' if !code => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// `--name VALUE`, or `--name[=VALUE]` for a switch that takes one.
fn with_value(name: &str, o: &OptDef) -> String {
    match o.value_name {
        "" => name.to_string(),
        v if v.starts_with('[') => format!("{name}{v}"),
        v => format!("{name} {v}"),
    }
}

/// docs/options.md: every option, by group, with all the table says.
pub fn options_markdown() -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# oxgate options\n\n\
         <!-- Generated from src/config/defs.rs by src/config/doc.rs: do not edit.\n     \
         Regenerate with: {REGENERATE} -->\n\n\
         This reference is generated from the option table in `src/config/defs.rs`,\n\
         as `oxgate --help` and the man page (`man docs/oxgate.1`) are. To change it,\n\
         change the table, then run `{REGENERATE}`.\n\n\
         Every option can be given:\n\n\
         * on the command line: `--name VALUE`, `--name=VALUE`, or the short form;\n\
         * in a config file, section `[uwsgi]` (or `[oxgate]`): `name = value` in ini,\n  \
         `name: value` in YAML, `\"name\": value` in JSON, `<name>value</name>` in XML;\n\
         * in the environment: `UWSGI_NAME` or `OXGATE_NAME` (dashes as underscores).\n\n\
         Later settings override earlier ones: the environment first, then the command\n\
         line in order, each config file expanded where it is named. A switch alone\n\
         means true; `--name=false` turns it off. A repeatable option keeps every value.\n\
         `oxgate --print-config` shows every value set and where it came from, and the\n\
         default of each option that was not set.\n\n\
         An option's status is *implemented*, or *accepted for uWSGI compatibility; no\n\
         effect* (oxgate always behaves that way, or has nothing to switch).\n\n"
    );
    let _ = writeln!(out, "## Contents\n");
    for group in Group::ALL {
        let _ = writeln!(out, "* [{}](#{})", group.title(), anchor(group.title()));
    }
    let _ = writeln!(
        out,
        "* [uWSGI options not implemented yet](#uwsgi-options-not-implemented-yet)"
    );
    for group in Group::ALL {
        let _ = writeln!(out, "\n## {}", group.title());
        for o in defs::OPTIONS.iter().filter(|o| o.group == group) {
            let _ = writeln!(out, "\n### `{}`\n", with_value(&format!("--{}", o.name), o));
            let _ = writeln!(out, "{}\n", markdown(o.help));
            let mut all = Vec::new();
            if let Some(c) = o.short {
                all.push(format!("`-{c}`"));
            }
            all.push(format!("`--{}`", o.name));
            all.extend(o.aliases.iter().map(|a| format!("`--{a}`")));
            let _ = writeln!(out, "* Names: {}", all.join(", "));
            if let Some(d) = o.default {
                let _ = writeln!(out, "* Default: `{d}`");
            }
            let _ = writeln!(out, "* Status: {}", o.status.describe());
        }
    }
    let _ = writeln!(
        out,
        "\n## uWSGI options not implemented yet\n\n\
         These uWSGI options are common in real configs, but oxgate does not implement\n\
         them yet. On the command line and in a config file each is reported with\n\
         a warning and has no effect (`--strict` refuses them); `emperor`, and the\n\
         options that open a socket oxgate lacks (`https2`, `http-to-https`), stop\n\
         the start, with what to do instead.\n"
    );
    let list: Vec<String> = not_implemented().iter().map(|n| format!("`{n}`")).collect();
    let _ = writeln!(out, "{}", list.join(", "));
    let _ = writeln!(
        out,
        "\nEvery other option of uWSGI's that this page does not list (rarer ones:\n\
         `reload-on-exception`, `idle`, `die-on-idle`, `worker-exec`, ...) is\n\
         reported the same way: named in a warning at start, with no effect.\n\
         `oxgate --strict --check-config` lists those a configuration uses."
    );
    out
}

/// GitHub's anchor for a heading.
fn anchor(title: &str) -> String {
    title
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ' || *c == '-')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// roff text: `-` as a minus (options stay copyable), `\` escaped,
/// `code spans` in bold; a line cannot start a request.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut code = false;
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '`' => {
                out.push_str(if code { "\\fR" } else { "\\fB" });
                code = !code;
            }
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// The roff tag of an option: `\fB\-l\fR, \fB\-\-listen\fR \fIN\fR`.
fn roff_names(o: &OptDef) -> String {
    let mut names: Vec<String> = Vec::new();
    if let Some(c) = o.short {
        names.push(format!("\\fB\\-{c}\\fR"));
    }
    for n in o.long_names() {
        names.push(format!("\\fB{}\\fR", roff(&format!("--{n}"))));
    }
    let mut tag = names.join(", ");
    match o.value_name {
        "" => {}
        v if v.starts_with('[') => {
            let _ = write!(tag, "[=\\fI{}\\fR]", roff(v.trim_matches(['[', '=', ']'])));
        }
        v => {
            let _ = write!(tag, " \\fI{}\\fR", roff(v));
        }
    }
    tag
}

/// The master's signals, as `lifecycle` maps them.
const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "Reload gracefully: new workers with the new code, each old worker stopping once its replacement is ready (as `--reload`).",
    ),
    (
        "SIGRTMIN+1, SIGUSR2",
        "Chain-reload: one worker at a time (as `--chain-reload`); SIGUSR2 is Gunicorn's upgrade signal.",
    ),
    (
        "SIGRTMIN+2",
        "Reload, killing the old workers at once (as `--brutal-reload`).",
    ),
    (
        "SIGTERM",
        "Stop gracefully: requests in flight finish within `--reload-mercy` (as `--stop`).",
    ),
    (
        "SIGINT, SIGQUIT",
        "Stop gracefully; the second one stops at once.",
    ),
    ("SIGTTIN, SIGTTOU", "Add a worker, remove a worker."),
    ("SIGUSR1", "Reopen the log file (for logrotate)."),
];

/// docs/oxgate.1: the man page, section 1.
pub fn man_page() -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        ".\\\" Generated from src/config/defs.rs by src/config/doc.rs: do not edit.\n\
         .\\\" Regenerate with: {REGENERATE}\n\
         .TH OXGATE 1 \"\" \"oxgate {}\" \"User Commands\"\n\
         .SH NAME\n\
         oxgate \\- {SUMMARY}\n\
         .SH SYNOPSIS\n",
        env!("CARGO_PKG_VERSION")
    );
    let more = [
        "[OPTIONS] app.ini",
        GUNICORN_USAGE,
        UVICORN_USAGE,
        "top ADDR",
    ];
    for usage in USAGE.iter().chain(&more) {
        let _ = writeln!(out, ".B oxgate\n{}\n.br", roff(usage));
    }
    let _ = write!(
        out,
        ".SH DESCRIPTION\n\
         \\fBoxgate\\fR is an application server for Python WSGI apps. It reads uWSGI's\n\
         command lines and config files unchanged: options on the command line, in ini,\n\
         YAML, JSON and XML files (section \\fB[uwsgi]\\fR or \\fB[oxgate]\\fR, with uWSGI's\n\
         placeholders, includes and logic blocks), and in \\fBUWSGI_\\fR\\fINAME\\fR or\n\
         \\fBOXGATE_\\fR\\fINAME\\fR environment variables.\n\
         .PP\n\
         Later settings override earlier ones: the environment first, then the command\n\
         line in order, each config file expanded where it is named. A switch alone means\n\
         true; \\fB\\-\\-\\fR\\fIname\\fR\\fB=false\\fR turns it off. A lone argument ending in\n\
         \\fB.ini\\fR, \\fB.yaml\\fR, \\fB.json\\fR or \\fB.xml\\fR is read as a config file; any other\n\
         argument names the app, as \\fB\\-\\-wsgi\\-file\\fR (a \\fB.py\\fR file) or \\fB\\-\\-module\\fR.\n\
         \\fBoxgate gunicorn\\fR and \\fBoxgate uvicorn\\fR read Gunicorn's and uvicorn's own command\n\
         lines (and Gunicorn's config files); each prints its options with \\fB\\-\\-help\\fR.\n\
         \\fBoxgate top\\fR \\fIADDR\\fR shows a live view of a server's \\fB\\-\\-stats\\fR socket.\n\
         .SH OPTIONS\n"
    );
    for group in Group::ALL {
        let _ = writeln!(out, ".SS {}", group.title());
        for o in defs::OPTIONS.iter().filter(|o| o.group == group) {
            let _ = writeln!(out, ".TP\n{}\n{}", roff_names(o), roff(o.help));
            let mut extra = Vec::new();
            if o.status == Status::Ignored {
                extra.push("Accepted for uWSGI compatibility; no effect.".to_string());
            }
            if let Some(d) = o.default {
                extra.push(format!("Default: \\fB{}\\fR.", roff(d)));
            }
            if !extra.is_empty() {
                let _ = writeln!(out, "{}", extra.join(" "));
            }
        }
    }
    let _ = writeln!(out, ".SH SIGNALS\nWhat the master does on each signal:");
    for (signal, what) in SIGNALS {
        let _ = writeln!(out, ".TP\n\\fB{signal}\\fR\n{}", roff(what));
    }
    let _ = write!(
        out,
        ".SH ENVIRONMENT\n\
         .TP\n\\fBUWSGI_\\fR\\fINAME\\fR, \\fBOXGATE_\\fR\\fINAME\\fR\n\
         The option \\fINAME\\fR (dashes as underscores), before the command line.\n\
         .TP\n\\fBVIRTUAL_ENV\\fR\n\
         The virtualenv to use when \\fB\\-\\-home\\fR is not given.\n\
         .TP\n\\fBLISTEN_FDS\\fR, \\fBLISTEN_PID\\fR\n\
         Sockets passed by systemd (socket activation), served besides any given.\n\
         .SH EXIT STATUS\n\
         0 on success, 1 when the server fails once started, 2 for an unusable\n\
         command line or configuration.\n\
         .SH SEE ALSO\n\
         .BR uwsgi (1),\n\
         .BR nginx (8).\n\
         The options reference \\fIdocs/options.md\\fR and the guides beside it in the\n\
         oxgate sources.\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defs::opt;
    use crate::config::load;

    #[test]
    fn help_and_man_page_name_the_gunicorn_and_uvicorn_command_lines() {
        let help = help_text();
        let man = man_page();
        for form in [
            "oxgate gunicorn [GUNICORN OPTIONS]",
            "oxgate uvicorn [UVICORN OPTIONS]",
        ] {
            assert!(help.contains(form), "{form} not in --help");
            let (_, rest) = form.split_once(' ').unwrap();
            assert!(
                man.contains(&format!(".B oxgate\n{rest}")),
                "{form} not in the man page"
            );
        }
    }

    #[test]
    fn help_shows_defaults_and_status() {
        let h = help_text();
        for o in defs::OPTIONS {
            assert!(h.contains(&format!("--{}", o.name)), "{} missing", o.name);
        }
        assert!(h.contains(
            "  -l, --listen N\n      Backlog of each listening socket (the kernel caps it at \
             net.core.somaxconn). (default: 1024)\n"
        ));
        assert!(h.contains("      Accepted, no effect: SIGTERM always stops oxgate"));
    }

    #[test]
    fn print_config_adds_defaults_commented_out() {
        let l = load([
            "--http",
            ":1",
            "--listen",
            "64",
            "-w",
            "m",
            "--print-config",
        ])
        .unwrap();
        let p = print_config(&l);
        let lines: Vec<&str> = p.lines().collect();
        // Given options as before, in table order; defaults commented out.
        assert_eq!(lines[0], "# read as: uWSGI's options");
        assert_eq!(lines[1], "http-socket = :1    # command line");
        assert!(lines.contains(&"listen = 64    # command line"));
        assert!(!p.contains("# listen = "));
        assert!(lines.contains(&"# threads = 1    # default"));
        assert!(lines.contains(&"# master = true    # default"));
        assert!(lines.contains(&"module = m    # command line"));
        let at = |s: &str| lines.iter().position(|l| *l == s).unwrap();
        assert!(at("# protocol = uwsgi    # default") < at("listen = 64    # command line"));
        for o in defs::OPTIONS.iter().filter(|o| o.default.is_some()) {
            assert!(p.contains(&format!("{} = ", o.name)), "{}", o.name);
        }
        assert_eq!(opt::PROTOCOL.default, Some("uwsgi"));
    }

    #[test]
    fn signals_section_covers_every_signal_the_master_handles() {
        use crate::lifecycle::MasterCommand;
        for (signal, command) in MasterCommand::table() {
            let name = match signal {
                libc::SIGCHLD => continue, // the master's own business
                libc::SIGHUP => "SIGHUP".to_string(),
                libc::SIGTERM => "SIGTERM".to_string(),
                libc::SIGINT => "SIGINT".to_string(),
                libc::SIGQUIT => "SIGQUIT".to_string(),
                libc::SIGTTIN => "SIGTTIN".to_string(),
                libc::SIGTTOU => "SIGTTOU".to_string(),
                libc::SIGUSR1 => "SIGUSR1".to_string(),
                libc::SIGUSR2 => "SIGUSR2".to_string(),
                s => format!("SIGRTMIN+{}", s - libc::SIGRTMIN()),
            };
            assert!(
                SIGNALS
                    .iter()
                    .any(|(names, _)| names.split(", ").any(|n| n == name)),
                "{name} ({command:?}) is missing from the man page's SIGNALS"
            );
        }
    }

    #[test]
    fn not_implemented_lists_only_unknown_options() {
        let names = not_implemented();
        assert!(names.contains(&"gevent") && names.contains(&"cheaper"));
        for known in [
            "master", "http", "endif", "if-env", "for-glob", "print", "lazy",
        ] {
            assert!(!names.contains(&known), "{known}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(
            markdown("the <uwsgi> `a<b` x * y"),
            "the &lt;uwsgi> `a<b` x \\* y"
        );
        assert_eq!(roff(".x --a `b` \\"), "\\&.x \\-\\-a \\fBb\\fR \\e");
        assert_eq!(
            anchor("Logging, stats and metrics"),
            "logging-stats-and-metrics"
        );
        assert_eq!(
            roff_names(&opt::LOGDATE),
            "\\fB\\-\\-logdate\\fR, \\fB\\-\\-log\\-date\\fR[=\\fIFORMAT\\fR]"
        );
    }

    /// docs/options.md and docs/oxgate.1 are what the table generates.
    /// With OXGATE_REGENERATE_DOCS=1, this writes them instead.
    #[test]
    fn generated_docs_are_up_to_date() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let regenerate = std::env::var_os("OXGATE_REGENERATE_DOCS").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        use super::super::completions::{Shell, completion_script};
        for (file, text) in [
            ("docs/options.md", options_markdown()),
            ("docs/oxgate.1", man_page()),
            (
                "packaging/completions/oxgate.bash",
                completion_script(Shell::Bash),
            ),
            (
                "packaging/completions/_oxgate",
                completion_script(Shell::Zsh),
            ),
            (
                "packaging/completions/oxgate.fish",
                completion_script(Shell::Fish),
            ),
        ] {
            let path = root.join(file);
            if regenerate {
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "{} differ from what src/config/defs.rs generates; regenerate with:\n    {REGENERATE}",
            stale.join(" and ")
        );
    }
}
