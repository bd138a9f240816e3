//! The kinds of app, each a `request::Handler`.

pub mod cgi;
pub mod fastcgi;
pub mod python;
mod root_dir;
mod script_path;
pub mod static_files;

/// A program to run (a CGI helper, a FastCGI pool's command): a path as
/// given, or found in PATH, at start-up.
fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let executable = |p: &std::path::Path| {
        p.metadata().is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if name.contains('/') {
        let p = std::path::PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}
