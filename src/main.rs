use std::process::ExitCode;

use oxgate::config::{self, Action};

fn main() -> ExitCode {
    let action =
        match config::parse_args(std::env::args_os().skip(1)).and_then(|s| config::resolve(&s)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("oxgate: {e}");
                return ExitCode::from(2);
            }
        };
    match action {
        Action::Help => {
            print!("{}", config::help_text());
            ExitCode::SUCCESS
        }
        Action::Version => {
            println!("oxgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Action::Control(what, pidfile) => match oxgate::process::send_control(what, &pidfile) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxgate: {e}");
                ExitCode::FAILURE
            }
        },
        Action::Serve(cfg) => match oxgate::server::run(*cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("oxgate: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
