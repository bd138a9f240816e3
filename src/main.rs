//! The stand-alone `oxgate` binary: it links libpython and starts CPython
//! itself (`cargo install`, distro packages). The `oxgate` that pip installs
//! is `pyext/`; both run `oxgate::cli::main`.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(oxgate::cli::main(std::env::args_os().skip(1).collect()))
}
