//! From a request path to an open file under a static root, safely: the
//! path is taken as already percent-decoded once (by the front end), `..`,
//! NUL and backslashes are refused, and the file actually opened must lie
//! under the root (or a `--static-safe` directory) after every symbolic link
//! is followed: the check reads where the open descriptor points, so a link
//! swapped in between cannot escape.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What a path under a root names.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file, open; its real path (for its type).
    File {
        file: File,
        meta: Box<Metadata>,
        real: PathBuf,
    },
    /// A directory with an index file, asked for without the trailing
    /// slash: the client is sent to `path/`.
    AddSlash,
    /// Exists but may not be served: a directory without an index, a link
    /// out of the root, an unreadable file, a device or socket.
    Forbidden,
    /// A path that cannot name a file under the root (`..`, NUL, `\`).
    BadPath,
    /// Nothing there: the next root, or the app, may answer.
    Missing,
}

/// Opens `rel` (a `/`-separated path) under `root`, following `index` for a
/// directory. `allowed` are the canonical directories a file may really be
/// in (the root's own canonical path first).
pub fn open(root: &Path, rel: &[u8], allowed: &[PathBuf], index: &[String]) -> Resolved {
    if rel.contains(&0) || rel.contains(&b'\\') {
        return Resolved::BadPath;
    }
    let mut target = root.to_path_buf();
    for segment in rel.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Resolved::BadPath,
            name => target.push(OsStr::from_bytes(name)),
        }
    }
    let (file, meta) = match open_one(&target) {
        Ok(pair) => pair,
        Err(r) => return r,
    };
    let (file, meta) = if meta.is_dir() {
        let Some(found) = index.iter().find_map(|name| {
            open_one(&target.join(name))
                .ok()
                .filter(|(_, m)| m.is_file())
        }) else {
            return Resolved::Forbidden;
        };
        if !rel.ends_with(b"/") {
            return Resolved::AddSlash;
        }
        found
    } else if rel.ends_with(b"/") {
        // A file is not a directory: "/a.css/" names nothing.
        return Resolved::Missing;
    } else {
        (file, meta)
    };
    if !meta.is_file() {
        return Resolved::Forbidden;
    }
    let Some(real) = really_under(&file, allowed) else {
        return Resolved::Forbidden;
    };
    Resolved::File {
        file,
        meta: Box::new(meta),
        real,
    }
}

/// Where an open file really is, if that is under one of `allowed`: the
/// kernel's answer after every link was followed.
fn really_under(file: &File, allowed: &[PathBuf]) -> Option<PathBuf> {
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    allowed
        .iter()
        .any(|dir| real.starts_with(dir))
        .then_some(real)
}

/// `real` + `suffix` (FILE.gz beside FILE), if it is a regular file under
/// `allowed` too.
pub fn open_variant(real: &Path, suffix: &str, allowed: &[PathBuf]) -> Option<(File, Metadata)> {
    let mut name = real.as_os_str().to_owned();
    name.push(suffix);
    let (file, meta) = open_one(Path::new(&name)).ok()?;
    (meta.is_file() && really_under(&file, allowed).is_some()).then_some((file, meta))
}

fn open_one(path: &Path) -> Result<(File, Metadata), Resolved> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
    // as not a regular file right after).
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::InvalidFilename => {
                Resolved::Missing
            }
            _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => Resolved::Missing,
            _ => Resolved::Forbidden,
        })?;
    let meta = file.metadata().map_err(|_| Resolved::Forbidden)?;
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree {
        base: PathBuf,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let base =
                std::env::temp_dir().join(format!("oxgate-static-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(base.join("root/sub/withindex")).unwrap();
            std::fs::create_dir_all(base.join("outside")).unwrap();
            std::fs::write(base.join("root/a.txt"), "a").unwrap();
            std::fs::write(base.join("root/sub/withindex/index.html"), "i").unwrap();
            std::fs::write(base.join("outside/secret"), "s").unwrap();
            symlink(base.join("outside/secret"), base.join("root/link-out")).unwrap();
            symlink(base.join("root/a.txt"), base.join("root/link-in")).unwrap();
            Tree {
                base: base.canonicalize().unwrap(),
            }
        }
        fn open(&self, rel: &str, safe: bool) -> Resolved {
            let root = self.base.join("root");
            let mut allowed = vec![root.clone()];
            if safe {
                allowed.push(self.base.join("outside"));
            }
            open(&root, rel.as_bytes(), &allowed, &["index.html".to_string()])
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn files_directories_and_links() {
        let t = Tree::new("kinds");
        assert!(matches!(t.open("/a.txt", false), Resolved::File { .. }));
        assert!(matches!(t.open("a.txt", false), Resolved::File { .. }));
        assert!(matches!(t.open("//./a.txt", false), Resolved::File { .. }));
        assert!(matches!(t.open("/a.txt/", false), Resolved::Missing));
        assert!(matches!(t.open("/nope", false), Resolved::Missing));
        assert!(matches!(t.open("/sub", false), Resolved::Forbidden));
        assert!(matches!(
            t.open("/sub/withindex", false),
            Resolved::AddSlash
        ));
        assert!(matches!(
            t.open("/sub/withindex/", false),
            Resolved::File { .. }
        ));
        assert!(matches!(t.open("/link-in", false), Resolved::File { .. }));
        assert!(matches!(t.open("/link-out", false), Resolved::Forbidden));
        assert!(matches!(t.open("/link-out", true), Resolved::File { .. }));
    }

    #[test]
    fn traversal_is_refused() {
        let t = Tree::new("traversal");
        for rel in [
            "/../outside/secret",
            "/sub/../../outside/secret",
            "/..",
            "/a.txt\0",
            "/..\\outside\\secret",
            "\\a.txt",
        ] {
            assert!(matches!(t.open(rel, false), Resolved::BadPath), "{rel:?}");
        }
        // Decoded once by the front end: a literal %2e%2e is a name, not `..`.
        assert!(matches!(
            t.open("/%2e%2e/outside/secret", false),
            Resolved::Missing
        ));
    }

    #[test]
    fn no_path_escapes_the_root() {
        let t = Tree::new("prop");
        proptest::proptest!(proptest::test_runner::Config::with_cases(300), |(parts in proptest::collection::vec(
            proptest::prop_oneof!["\\.\\.", "\\.", "", "a\\.txt", "sub", "link-out", "outside", "secret", "[a-z%./\\\\]{1,6}"], 0..6))| {
            let rel = parts.join("/");
            if let Resolved::File { real, .. } = t.open(&rel, false) {
                proptest::prop_assert!(real.starts_with(t.base.join("root")), "{rel:?} -> {real:?}");
            }
        });
    }
}
