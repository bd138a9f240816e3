//! From a request path to an open file under a static root: the path is
//! taken as already percent-decoded once (by the front end), `..`, NUL and
//! backslashes are refused, and the file is opened through [`RootDir`],
//! which keeps it under the root.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use super::super::root_dir::RootDir;
use super::super::root_dir::{Denied, Refused};

/// What a path under a root names.
#[derive(Debug)]
pub enum Resolved {
    /// A regular file, open, and its path under the root as asked for
    /// (its name gives its type).
    File {
        file: File,
        meta: Box<Metadata>,
        path: PathBuf,
    },
    /// A directory with an index file, asked for without the trailing
    /// slash: the client is sent to `path/`.
    AddSlash,
    /// A directory without an index file (there are no listings); `slash`:
    /// asked for with its trailing slash.
    NoIndex { slash: bool },
    /// Exists but may not be served: a link out of the root, an
    /// unreadable file, a device or socket; where it is, and why.
    Forbidden(PathBuf, Denied),
    /// A path that cannot name a file under the root (`..`, NUL, `\`).
    BadPath,
    /// Not opened for want of descriptors or memory.
    Unavailable,
    /// Nothing there: the next root, or the app, may answer.
    Missing,
}

/// Opens `rel` (a `/`-separated path) under `root`, following `index` for a
/// directory.
pub fn open(root: &RootDir, rel: &[u8], index: &[String]) -> Resolved {
    if rel.contains(&0) || rel.contains(&b'\\') {
        return Resolved::BadPath;
    }
    // `dir/` and `dir/.` both ask for a directory: a file so named is
    // not there (`/app.php/.` must not open app.php past a check of its
    // name's end).
    let slash = rel.ends_with(b"/") || rel.ends_with(b"/.") || rel == b".";
    let mut target = PathBuf::new();
    for segment in rel.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Resolved::BadPath,
            name => target.push(OsStr::from_bytes(name)),
        }
    }
    let (file, meta) = match root.open_rel(&target) {
        Ok(pair) => pair,
        Err(Refused::Missing) => return Resolved::Missing,
        Err(Refused::Forbidden(why)) => return Resolved::Forbidden(root.dir().join(target), why),
        Err(Refused::Unavailable) => return Resolved::Unavailable,
    };
    let (file, meta) = if meta.is_dir() {
        let Some((name, found)) = index.iter().find_map(|name| {
            root.open_rel(&target.join(name))
                .ok()
                .filter(|(_, m)| m.is_file())
                .map(|f| (name, f))
        }) else {
            return Resolved::NoIndex { slash };
        };
        if !slash {
            return Resolved::AddSlash;
        }
        target.push(name);
        found
    } else if slash {
        // A file is not a directory: "/a.css/" names nothing.
        return Resolved::Missing;
    } else {
        (file, meta)
    };
    if !meta.is_file() {
        return Resolved::Forbidden(root.dir().join(target), Denied::NotAFile);
    }
    Resolved::File {
        file,
        meta: Box::new(meta),
        path: root.dir().join(target),
    }
}

/// `path` + `suffix` (FILE.gz beside FILE), if it is a regular file under
/// the root too.
pub fn open_variant(root: &RootDir, path: &Path, suffix: &str) -> Option<(File, Metadata)> {
    let rel = path.strip_prefix(root.dir()).ok()?;
    let mut name = rel.as_os_str().to_owned();
    name.push(suffix);
    let (file, meta) = root.open_rel(Path::new(&name)).ok()?;
    meta.is_file().then_some((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
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
            let safe = if safe {
                vec![self.base.join("outside")]
            } else {
                vec![]
            };
            let root = RootDir::new(&self.base.join("root"), &safe);
            open(&root, rel.as_bytes(), &["index.html".to_string()])
        }

        fn open_by_name(&self, rel: &str) -> Resolved {
            let root = RootDir::new(&self.base.join("root"), &[]).by_name_only();
            open(&root, rel.as_bytes(), &["index.html".to_string()])
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
        assert!(matches!(
            t.open("/sub", false),
            Resolved::NoIndex { slash: false }
        ));
        assert!(matches!(
            t.open("/sub/", false),
            Resolved::NoIndex { slash: true }
        ));
        assert!(matches!(
            t.open("/sub/withindex", false),
            Resolved::AddSlash
        ));
        assert!(matches!(
            t.open("/sub/withindex/", false),
            Resolved::File { .. }
        ));
        assert!(matches!(t.open("/link-in", false), Resolved::File { .. }));
        assert!(matches!(
            t.open("/link-out", false),
            Resolved::Forbidden(..)
        ));
        assert!(matches!(t.open("/link-out", true), Resolved::File { .. }));
        // The same answers when paths are opened by name (no openat2).
        assert!(matches!(t.open_by_name("/link-in"), Resolved::File { .. }));
        assert!(matches!(
            t.open_by_name("/link-out"),
            Resolved::Forbidden(..)
        ));
        assert!(matches!(
            t.open_by_name("/sub/withindex"),
            Resolved::AddSlash
        ));
    }

    #[test]
    fn a_directory_put_in_the_root_s_place_is_served_from() {
        let t = Tree::new("replaced");
        let root = RootDir::new(&t.base.join("root"), &[]).rechecked_always();
        let file = |rel: &str| matches!(open(&root, rel.as_bytes(), &[]), Resolved::File { .. });
        assert!(file("/a.txt"));
        // A deploy: the old tree moved aside, a new one in its place.
        std::fs::rename(t.base.join("root"), t.base.join("root.old")).unwrap();
        std::fs::create_dir(t.base.join("root")).unwrap();
        std::fs::write(t.base.join("root/new.txt"), "n").unwrap();
        assert!(file("/new.txt"));
        assert!(!file("/a.txt"));
        // A link moved to another release (Capistrano's `current`).
        let current = t.base.join("current");
        symlink(t.base.join("root.old"), &current).unwrap();
        let root = RootDir::new(&current, &[]).rechecked_always();
        let file = |rel: &str| matches!(open(&root, rel.as_bytes(), &[]), Resolved::File { .. });
        assert!(file("/a.txt"));
        std::fs::remove_file(&current).unwrap();
        symlink(t.base.join("root"), &current).unwrap();
        assert!(file("/new.txt") && !file("/a.txt"));
    }

    #[test]
    fn a_root_missing_at_start_is_served_from_once_made() {
        let t = Tree::new("late");
        let late = t.base.join("late");
        let root = RootDir::new(&late, &[]).rechecked_always();
        assert!(matches!(open(&root, b"/x.txt", &[]), Resolved::Missing));
        std::fs::create_dir(&late).unwrap();
        std::fs::write(late.join("x.txt"), "x").unwrap();
        assert!(matches!(open(&root, b"/x.txt", &[]), Resolved::File { .. }));
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
            for r in [t.open(&rel, false), t.open_by_name(&rel)] {
                if let Resolved::File { file, .. } = r {
                    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
                    proptest::prop_assert!(real.starts_with(t.base.join("root")), "{rel:?} -> {real:?}");
                }
            }
        });
    }
}
