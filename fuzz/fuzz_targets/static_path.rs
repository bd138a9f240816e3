//! The static-file path resolver on any request path: never a panic, and a
//! file it opens is always under the root, whatever links, `..`, `%2e` or
//! NUL the path holds. The root holds a file, a directory with an index,
//! and links that point in and out of it.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use oxgate::handlers::static_files::resolve::{RootDir, Resolved, open};

fn root() -> &'static (RootDir, PathBuf) {
    static ROOT: OnceLock<(RootDir, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("oxgate-fuzz-static-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("sub/index.html"), b"i").unwrap();
        std::fs::write(base.join("secret"), b"s").unwrap();
        let _ = std::os::unix::fs::symlink("../secret", root.join("out"));
        let _ = std::os::unix::fs::symlink("/etc", root.join("etc"));
        let _ = std::os::unix::fs::symlink("a.txt", root.join("in"));
        let real = root.canonicalize().unwrap();
        (RootDir::new(&root, &[]), real)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dir, real) = root();
    if let Resolved::File { file, .. } = open(dir, data, &["index.html".to_string()]) {
        let at = RootDir::real_path(&file).expect("an open file has a path");
        assert!(at.starts_with(real), "{:?} opened {at:?}", String::from_utf8_lossy(data));
    }
});
