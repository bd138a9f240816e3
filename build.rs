// A development build must find the libpython it was linked against without
// LD_LIBRARY_PATH; otherwise the loader may silently pick a different system
// libpython (see docs/design/embedding.md §5). The interpreter's own path is
// recorded too: it becomes PyConfig's program name, so `sys.executable` and
// the standard library match the libpython we link.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=OXGATE_BUILD_PYTHON={exe}");
    } else {
        println!("cargo:rustc-env=OXGATE_BUILD_PYTHON=python3");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
