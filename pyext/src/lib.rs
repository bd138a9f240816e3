//! `oxgate._oxgate`: the `oxgate` command pip installs. It runs the same
//! master and workers as the stand-alone binary (`oxgate::cli::main`), in
//! the interpreter that was started for it, so the wheel links no libpython
//! and serves whatever virtualenv it was installed into.

use pyo3::prelude::*;

#[pymodule]
mod _oxgate {
    use std::ffi::OsString;
    use std::io::Write;

    use oxgate::handlers::python::Host;
    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }

    /// Runs oxgate with `args` (the command line after the program name)
    /// and ends the process with its exit status. It never returns: the
    /// server's processes end as the stand-alone binary's do, without
    /// finalizing the interpreter under threads it does not know of.
    #[pyfunction]
    fn main(py: Python<'_>, args: Vec<OsString>) -> PyResult<()> {
        Host::read(py)?.adopt();
        // The app sees sys.argv as under the stand-alone binary: an app
        // that parses it finds none of the server's options.
        py.import("sys")?.setattr("argv", vec!["oxgate"])?;
        let code = py.detach(move || oxgate::cli::main(args));
        let _ = std::io::stderr().flush();
        std::process::exit(i32::from(code))
    }
}
