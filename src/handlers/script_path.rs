//! From a request path to the script it names under a directory (a CGI
//! directory, a FastCGI app's document root; RFC 3875 §4.1.5): the path is
//! walked a segment at a time until a regular file is found; that is the
//! script, and the rest of the path is its PATH_INFO. Each step is opened
//! through [`RootDir`], so no path, and no symbolic link, leads out of the
//! directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::root_dir::{Denied, Refused, RootDir};

/// What a path under a script directory names.
#[derive(Debug)]
pub enum Located {
    Script(Box<Script>),
    /// A directory with an index script, asked for without its slash.
    AddSlash,
    /// There, but not a script to run: a device, a link out of the
    /// directory, no permission; where it is, and why.
    Forbidden(PathBuf, Denied),
    /// A directory without an index script: nothing to run, and nothing
    /// that forbids an app behind from answering.
    NoIndex,
    /// `..`, NUL or a backslash.
    BadPath,
    Missing,
    /// Not opened for want of descriptors or memory.
    Unavailable,
}

#[derive(Debug, Clone)]
pub struct Script {
    /// Where the script really is (every link followed, under the root).
    pub file: PathBuf,
    pub meta: Metadata,
    /// The part of the request path that names the script (with the index
    /// file's name added for a directory): the end of SCRIPT_NAME.
    pub url_path: Vec<u8>,
    /// The rest of the request path: PATH_INFO.
    pub path_info: Vec<u8>,
}

/// Whether a path has a `..` segment. Anywhere, PATH_INFO too: a script
/// joins PATH_INFO to its document root for PATH_TRANSLATED (php-cgi opens
/// it), and would be led out of it.
pub fn climbs(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|s| s == b"..")
}

/// Finds the script `rel` (a decoded `/`-separated path) names under
/// `root`, running `index` for a directory.
pub fn locate(root: &RootDir, rel: &[u8], index: &[String]) -> Located {
    if rel.contains(&0) || rel.contains(&b'\\') || climbs(rel) {
        return Located::BadPath;
    }
    let mut target = PathBuf::new();
    // The segments walked, each after one slash (`//a/./b` is `/a/b`): the
    // script's own URL, for SCRIPT_NAME.
    let mut walked = Vec::with_capacity(rel.len());
    let mut at = 0;
    while at < rel.len() {
        let end = rel[at..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(rel.len(), |i| at + i);
        let segment = &rel[at..end];
        at = end + 1;
        match segment {
            b"" | b"." => continue,
            name => {
                target.push(OsStr::from_bytes(name));
                walked.push(b'/');
                walked.extend_from_slice(name);
            }
        }
        match root.open_rel(&target) {
            Ok((_, meta)) if meta.is_dir() => continue,
            Ok((file, meta)) if meta.is_file() => {
                let Some(file_name) = root.script_name(&target, &file, &meta) else {
                    return Located::Forbidden(
                        root.dir().join(&target),
                        Denied::Open(Errno::ENOENT),
                    );
                };
                let script_end = end.min(rel.len());
                return Located::Script(Box::new(Script {
                    file: file_name,
                    meta,
                    url_path: walked,
                    path_info: clean_path_info(&rel[script_end..]),
                }));
            }
            Ok(_) => return Located::Forbidden(root.dir().join(&target), Denied::NotAFile),
            Err(Refused::Forbidden(why)) => {
                return Located::Forbidden(root.dir().join(&target), why);
            }
            Err(Refused::Missing) => return Located::Missing,
            Err(Refused::Unavailable) => return Located::Unavailable,
        }
    }
    // Every segment was a directory: its index script, if it has one.
    for name in index {
        let index = target.join(name);
        if let Ok((file, meta)) = root.open_rel(&index)
            && meta.is_file()
        {
            if !rel.ends_with(b"/") {
                return Located::AddSlash;
            }
            let Some(file_name) = root.script_name(&index, &file, &meta) else {
                return Located::Forbidden(root.dir().join(&index), Denied::Open(Errno::ENOENT));
            };
            let mut url_path = walked;
            url_path.push(b'/');
            url_path.extend_from_slice(name.as_bytes());
            return Located::Script(Box::new(Script {
                file: file_name,
                meta,
                url_path,
                path_info: Vec::new(),
            }));
        }
    }
    Located::NoIndex
}

/// PATH_INFO cleaned as SCRIPT_NAME is (`//a/./b` is `/a/b`), as Apache,
/// lighttpd and nginx clean the whole path: a script routing on it sees
/// the same path whether oxgate or a web server in front took the request.
pub fn clean_path_info(rest: &[u8]) -> Vec<u8> {
    if rest.is_empty() {
        Vec::new()
    } else {
        crate::request::cgi::normalized(rest)
    }
}

/// The scripts found lately under one root, by request path, each for
/// [`FOUND_FOR`]: a lookup is otherwise an openat2, two stats and a close
/// for every request. PHP keeps its own answers to the same question 120 s
/// (`realpath_cache_ttl`); a script deleted, or replaced by a link, is seen
/// within the second. Only scripts found are kept, by a path of at most
/// [`FOUND_PATH_MAX`] bytes naming the script alone (no PATH_INFO, where a
/// client could make every path new): a path that was missing is looked up
/// again.
#[derive(Default)]
pub struct FoundScripts {
    found: Mutex<HashMap<Vec<u8>, (Instant, Script)>>,
}

/// How long a script found is taken as found.
pub const FOUND_FOR: Duration = Duration::from_secs(1);

/// The most paths kept; past it, those out of date go, and if none is, the
/// list starts again (a client asking for endless paths finds no room to
/// grow it): at most some 4 MiB.
const FOUND_MAX: usize = 1024;

/// The longest request path kept.
const FOUND_PATH_MAX: usize = 1024;

impl FoundScripts {
    /// [`locate`], or the script found for `rel` less than [`FOUND_FOR`]
    /// before `now`. `root` and `index` must be the same at every call.
    pub fn locate(&self, root: &RootDir, rel: &[u8], index: &[String], now: Instant) -> Located {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, script)) = found.get(rel)
            && now.saturating_duration_since(*at) < FOUND_FOR
        {
            return Located::Script(Box::new(script.clone()));
        }
        let located = locate(root, rel, index);
        match &located {
            Located::Script(script)
                if script.path_info.is_empty() && rel.len() <= FOUND_PATH_MAX =>
            {
                if found.len() >= FOUND_MAX {
                    found.retain(|_, (at, _)| now.saturating_duration_since(*at) < FOUND_FOR);
                    if found.len() >= FOUND_MAX {
                        found.clear();
                    }
                }
                found.insert(rel.to_vec(), (now, (**script).clone()));
            }
            _ => {
                found.remove(rel);
            }
        }
        located
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let base =
                std::env::temp_dir().join(format!("oxgate-cgi-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(base.join("root/sub/withindex")).unwrap();
            std::fs::create_dir_all(base.join("outside")).unwrap();
            std::fs::write(base.join("root/a.cgi"), "#!/bin/sh\n").unwrap();
            std::fs::write(base.join("root/sub/b.cgi"), "#!/bin/sh\n").unwrap();
            std::fs::write(base.join("root/sub/withindex/index.cgi"), "#!/bin/sh\n").unwrap();
            std::fs::write(base.join("outside/evil.cgi"), "#!/bin/sh\n").unwrap();
            symlink(
                base.join("outside/evil.cgi"),
                base.join("root/link-out.cgi"),
            )
            .unwrap();
            Tree(base.canonicalize().unwrap())
        }

        fn locate(&self, rel: &str) -> Located {
            let root = RootDir::new(&self.0.join("root"), &[]);
            locate(&root, rel.as_bytes(), &["index.cgi".to_string()])
        }

        fn script(&self, rel: &str) -> (String, String, String) {
            match self.locate(rel) {
                Located::Script(s) => (
                    s.file
                        .strip_prefix(self.0.join("root"))
                        .unwrap()
                        .display()
                        .to_string(),
                    String::from_utf8(s.url_path).unwrap(),
                    String::from_utf8(s.path_info).unwrap(),
                ),
                other => panic!("{rel:?}: {other:?}"),
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_script_and_its_path_info() {
        let t = Tree::new("split");
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(t.script("/a.cgi"), s("a.cgi", "/a.cgi", ""));
        assert_eq!(t.script("/a.cgi/x/y"), s("a.cgi", "/a.cgi", "/x/y"));
        assert_eq!(t.script("/a.cgi/"), s("a.cgi", "/a.cgi", "/"));
        assert_eq!(t.script("/sub/b.cgi/x"), s("sub/b.cgi", "/sub/b.cgi", "/x"));
        assert_eq!(t.script("//sub/./b.cgi"), s("sub/b.cgi", "/sub/b.cgi", ""));
        assert_eq!(
            t.script("/sub/withindex/"),
            s("sub/withindex/index.cgi", "/sub/withindex/index.cgi", "")
        );
    }

    #[test]
    fn a_script_found_is_kept_for_a_second_and_a_missing_one_never() {
        let t = Tree::new("found");
        let root = RootDir::new(&t.0.join("root"), &[]);
        let found = FoundScripts::default();
        let start = Instant::now();
        let file = |l: Located| match l {
            Located::Script(s) => Some(s.file),
            _ => None,
        };
        let first = file(found.locate(&root, b"/a.cgi", &[], start)).unwrap();
        std::fs::remove_file(t.0.join("root/a.cgi")).unwrap();
        // Within the second: as found, though gone from the disk.
        let within = start + FOUND_FOR - Duration::from_millis(1);
        assert_eq!(
            file(found.locate(&root, b"/a.cgi", &[], within)),
            Some(first)
        );
        // Past it: looked up again, and missing.
        assert!(matches!(
            found.locate(&root, b"/a.cgi", &[], start + FOUND_FOR),
            Located::Missing
        ));
        std::fs::write(t.0.join("root/a.cgi"), "#!/bin/sh\n").unwrap();
        assert!(file(found.locate(&root, b"/a.cgi", &[], start + FOUND_FOR)).is_some());
        // A path with PATH_INFO is not kept: each would be new.
        assert!(file(found.locate(&root, b"/sub/b.cgi/x", &[], start)).is_some());
        assert!(
            found
                .found
                .lock()
                .unwrap()
                .get(&b"/sub/b.cgi/x"[..])
                .is_none()
        );
        // A link out of the root, put where a missing script was, is
        // refused at once: missing paths are not kept.
        assert!(matches!(
            found.locate(&root, b"/new.cgi", &[], start),
            Located::Missing
        ));
        symlink(t.0.join("outside/evil.cgi"), t.0.join("root/new.cgi")).unwrap();
        assert!(matches!(
            found.locate(&root, b"/new.cgi", &[], start),
            Located::Forbidden(..)
        ));
    }

    #[test]
    fn a_script_reached_through_links_is_named_by_its_links_as_apache_names_it() {
        let t = Tree::new("links");
        symlink("sub", t.0.join("root/dirlink")).unwrap();
        symlink(t.0.join("root/sub/b.cgi"), t.0.join("root/alias.cgi")).unwrap();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            t.script("/dirlink/b.cgi/x"),
            s("dirlink/b.cgi", "/dirlink/b.cgi", "/x")
        );
        // A multi-call script reads its `$0`; an `nph-` link is NPH.
        assert_eq!(t.script("/alias.cgi"), s("alias.cgi", "/alias.cgi", ""));
        // SCRIPT_NAME's part is the path walked, each segment once; the
        // PATH_INFO after it is cleaned the same way.
        assert_eq!(
            t.script("//sub/./b.cgi//y/./z"),
            s("sub/b.cgi", "/sub/b.cgi", "/y/z")
        );
        // With no link on the way, the same name the kernel would give.
        for rel in ["/a.cgi", "/sub/b.cgi/y", "/sub/withindex/"] {
            let Located::Script(script) = t.locate(rel) else {
                panic!("{rel}");
            };
            assert_eq!(script.file, script.file.canonicalize().unwrap(), "{rel}");
        }
    }

    #[test]
    fn a_root_renamed_since_start_up_is_not_run_by_its_old_name() {
        // `mv www www.old && mv www.new www`: the root's descriptor stays on
        // the old tree, where the script was checked; the name must say
        // so, not lead into the new tree (whose a.cgi is a link out).
        let t = Tree::new("renamed");
        let root = RootDir::new(&t.0.join("root"), &[]);
        std::fs::rename(t.0.join("root"), t.0.join("root.old")).unwrap();
        std::fs::create_dir(t.0.join("root")).unwrap();
        symlink(t.0.join("outside/evil.cgi"), t.0.join("root/a.cgi")).unwrap();
        let Located::Script(script) = locate(&root, b"/a.cgi", &[]) else {
            panic!("no script");
        };
        assert_eq!(script.file, t.0.join("root.old/a.cgi"));
    }

    #[test]
    fn what_is_not_a_script() {
        let t = Tree::new("refused");
        assert!(matches!(t.locate("/nope.cgi"), Located::Missing));
        assert!(matches!(t.locate("/sub/nope/x"), Located::Missing));
        assert!(matches!(t.locate("/sub"), Located::NoIndex));
        assert!(matches!(t.locate("/"), Located::NoIndex));
        assert!(matches!(t.locate("/sub/withindex"), Located::AddSlash));
        assert!(matches!(t.locate("/link-out.cgi"), Located::Forbidden(..)));
        for bad in [
            "/../outside/evil.cgi",
            "/sub/../../outside/evil.cgi",
            // PATH_INFO too: it becomes PATH_TRANSLATED under the root.
            "/a.cgi/../../../etc/passwd",
            "/a.cgi\0",
            "/..\\x",
        ] {
            assert!(matches!(t.locate(bad), Located::BadPath), "{bad:?}");
        }
        // Decoded once already: a literal %2e%2e is a name.
        assert!(matches!(
            t.locate("/%2e%2e/outside/evil.cgi"),
            Located::Missing
        ));
    }

    #[test]
    fn no_path_runs_a_script_outside() {
        let t = Tree::new("prop");
        proptest::proptest!(proptest::test_runner::Config::with_cases(300), |(parts in proptest::collection::vec(
            proptest::prop_oneof!["\\.\\.", "\\.", "", "a\\.cgi", "sub", "link-out\\.cgi", "outside", "evil\\.cgi", "[a-z%./\\\\]{1,6}"], 0..6))| {
            let rel = parts.join("/");
            if let Located::Script(s) = t.locate(&rel) {
                proptest::prop_assert!(s.file.starts_with(t.0.join("root")), "{rel:?} -> {:?}", s.file);
                proptest::prop_assert!(!climbs(&s.path_info));
                let info = std::str::from_utf8(&s.path_info).unwrap();
                proptest::prop_assert!(info.is_empty() || info.starts_with('/'), "{info:?}");
                proptest::prop_assert!(!info.contains("//") && !info.contains("/./"), "{info:?}");
                let walked = std::str::from_utf8(&s.url_path).unwrap();
                proptest::prop_assert!(!walked.contains("//") && !walked.contains("/./"), "{walked:?}");
            }
        });
    }
}
