//! The `oxgate` command, whoever starts it: the stand-alone binary
//! (`src/main.rs`, which starts CPython itself) and the `oxgate` command pip
//! installs (`pyext/`, a Python extension running in the interpreter that
//! was started for it). Both call `main`; only who started Python differs.

use std::ffi::OsString;
use std::io::Write;

use crate::config::{self, Action, Words as _, defs::opt};
use crate::handlers::python;

/// Runs the command with these arguments (without the program name) and
/// returns its exit status: 0, 1 when serving failed, 2 for a usage error.
pub fn main(args: Vec<OsString>) -> u8 {
    crate::process::remember_start_dir();
    crate::sys::proctitle::remember_args();
    let code = run(args);
    let _ = std::io::stdout().flush();
    code
}

/// Writes to stdout, as `print!` would without its panic when stdout is
/// closed (`oxgate --version | head -c1`): what was not read is dropped.
fn out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn run(args: Vec<OsString>) -> u8 {
    if args.first().is_some_and(|a| a == "top") {
        let rest: Option<Vec<String>> = args[1..]
            .iter()
            .map(|a| a.to_str().map(str::to_owned))
            .collect();
        let result = match rest {
            Some(rest) => crate::top::run(&rest),
            None => Err("arguments must be UTF-8".into()),
        };
        return match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("oxgate top: {e}");
                2
            }
        };
    }
    let loaded = match config::load_with(args, &python::read_gunicorn_config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("oxgate: {e}");
            return 2;
        }
    };
    if let Some(help) = &loaded.help {
        out(help);
        return 0;
    }
    let print_config = loaded.flag(&opt::PRINT_CONFIG);
    if print_config {
        out(&config::print_config(&loaded));
    }
    let (warnings, errors) = loaded.problems();
    // `--log-level error` leaves the configuration's warnings out of a
    // start, as Gunicorn's; a check or a configuration that fails shows
    // them all.
    let quiet = errors.is_empty()
        && !print_config
        && !loaded.flag(&opt::CHECK_CONFIG)
        && loaded
            .value(&opt::LOG_LEVEL)
            .and_then(config::LogLevel::from_word)
            .is_some_and(|level| level > config::LogLevel::Warning);
    for w in warnings.iter().filter(|_| !quiet) {
        eprintln!("oxgate: warning: {w}");
    }
    for e in &errors {
        eprintln!("oxgate: {e}");
    }
    if !errors.is_empty() {
        return 2;
    }
    let action = match config::resolve(&loaded.settings) {
        Ok(Action::Serve(mut cfg)) => {
            cfg.gunicorn_given = loaded.gunicorn_given.clone();
            Action::Serve(cfg)
        }
        Ok(a) => a,
        Err(e) if print_config => {
            eprintln!("oxgate: note: this configuration cannot start: {e}");
            return 0;
        }
        Err(e) => {
            eprintln!("oxgate: {e}");
            return 2;
        }
    };
    if print_config {
        return 0;
    }
    if loaded.flag(&opt::CHECK_CONFIG) {
        // The certificates and keys the sockets name are read, as the
        // start reads them: a reload to a file that names a missing one
        // is refused by this check, not left to the new image, which
        // could not start.
        let for_reload = std::env::var_os(crate::process::RELOAD_CHECK_ENV).is_some();
        if let Action::Serve(cfg) = &action {
            let here = std::env::current_dir().unwrap_or_default();
            // And, for a reload, this machine's users and groups: the new
            // image could not drop to one that does not exist.
            if let Err(e) = crate::frontend::tls::load(cfg, &here).and_then(|_| {
                if for_reload {
                    crate::startup::check_names(cfg)
                } else {
                    Ok(())
                }
            }) {
                eprintln!("oxgate: {e}");
                return 1;
            }
        }
        // A reload's own check (master/run.rs) leaves the app to the new
        // image, which keeps the old workers serving if it fails. With the
        // app, this machine is checked too (a file checked alone may be
        // another machine's, its paths and users not here).
        if loaded.flag(&opt::CHECK_APP)
            && !for_reload
            && let Action::Serve(cfg) = &action
        {
            if let Err(e) =
                crate::startup::check_start(cfg).and_then(|()| crate::startup::check_app(cfg))
            {
                eprintln!("oxgate: {e}");
                return 1;
            }
            eprintln!("oxgate: the app loads");
        }
        eprintln!(
            "oxgate: the configuration is usable ({} warning{})",
            warnings.len(),
            if warnings.len() == 1 { "" } else { "s" }
        );
        return 0;
    }
    match action {
        Action::Help => {
            out(&config::help_text());
            0
        }
        Action::Version => {
            out(&format!(
                "oxgate {}\n\
                 Python {}\n\
                 Apps: WSGI (PEP 3333); ASGI 3 (HTTP, WebSocket, lifespan); CGI; FastCGI pools\n\
                 Protocols: HTTP/1.1, HTTP/2, TLS, uwsgi, FastCGI, SCGI\n",
                env!("CARGO_PKG_VERSION"),
                python::describe_python(),
            ));
            0
        }
        Action::Completions(script) => {
            out(&script);
            0
        }
        Action::Control(what, pidfile) => match crate::process::send_control(what, &pidfile) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("oxgate: {e}");
                1
            }
        },
        Action::Serve(cfg) => match crate::startup::run(*cfg) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("oxgate: {}", e.message);
                e.status
            }
        },
    }
}
