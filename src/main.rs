#![deny(clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;

use oxgate::config::{self, Action, defs::opt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("top") {
        return match oxgate::top::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxgate top: {e}");
                ExitCode::from(2)
            }
        };
    }
    let loaded = match config::load(std::env::args_os().skip(1)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("oxgate: {e}");
            return ExitCode::from(2);
        }
    };
    let print_config = loaded.flag(&opt::PRINT_CONFIG);
    if print_config {
        print!("{}", config::print_config(&loaded));
    }
    let (warnings, errors) = loaded.problems();
    for w in &warnings {
        eprintln!("oxgate: warning: {w}");
    }
    for e in &errors {
        eprintln!("oxgate: {e}");
    }
    if !errors.is_empty() {
        return ExitCode::from(2);
    }
    let action = match config::resolve(&loaded.settings) {
        Ok(a) => a,
        Err(e) if print_config => {
            eprintln!("oxgate: note: this configuration cannot start: {e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("oxgate: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        return ExitCode::SUCCESS;
    }
    if loaded.flag(&opt::CHECK_CONFIG) {
        eprintln!(
            "oxgate: the configuration is usable ({} warning{})",
            warnings.len(),
            if warnings.len() == 1 { "" } else { "s" }
        );
        return ExitCode::SUCCESS;
    }
    match action {
        Action::Help => {
            print!("{}", config::help_text());
            ExitCode::SUCCESS
        }
        Action::Version => {
            let (python, built_with) = oxgate::handlers::python::python_version();
            println!(
                "oxgate {}\n\
                 Python {python} (libpython, built against {built_with})\n\
                 Apps: WSGI (PEP 3333); ASGI 3 (HTTP, WebSocket, lifespan)\n\
                 Protocols: HTTP/1.1, uwsgi, FastCGI, SCGI",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Action::Completions(script) => {
            print!("{script}");
            ExitCode::SUCCESS
        }
        Action::Control(what, pidfile) => match oxgate::process::send_control(what, &pidfile) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxgate: {e}");
                ExitCode::FAILURE
            }
        },
        Action::Serve(cfg) => match oxgate::startup::run(*cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxgate: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
