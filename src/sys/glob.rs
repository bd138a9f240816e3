//! glob(3), as uWSGI calls it for `pythonpath` and `for-glob`: its
//! matching (brackets, wildcards in directories, no dotfiles unless
//! named) and its order, directories marked with a trailing slash.

use std::ffi::{CStr, CString};

/// The paths `pattern` matches, sorted; none when it matches nothing (or
/// holds a NUL byte).
pub fn glob(pattern: &str) -> Vec<String> {
    let Ok(c_pattern) = CString::new(pattern) else {
        return Vec::new();
    };
    // SAFETY: glob_t is a plain C struct for which all-zero is the state
    // glob(3) expects before its first call.
    let mut found: libc::glob_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pattern is a NUL-terminated string that outlives the
    // call; no error callback is given; `found` is valid for writes.
    let status = unsafe { libc::glob(c_pattern.as_ptr(), libc::GLOB_MARK, None, &mut found) };
    let mut paths = Vec::new();
    if status == 0 {
        for i in 0..found.gl_pathc {
            // SAFETY: on success gl_pathv holds gl_pathc pointers to
            // NUL-terminated strings, alive until globfree below.
            let path = unsafe { CStr::from_ptr(*found.gl_pathv.add(i)) };
            paths.push(path.to_string_lossy().into_owned());
        }
    }
    // SAFETY: `found` was filled by glob(3) (or is still zeroed, which
    // globfree accepts), and is freed once.
    unsafe { libc::globfree(&mut found) };
    paths
}

/// Whether `pattern` has anything glob(3) would expand.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_glob_3() {
        let dir = std::env::temp_dir().join(format!("oxgate-glob-{}", std::process::id()));
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for f in ["one.ini", "Two.ini", ".hidden", "a/x.ini", "b/x.ini"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            glob(&format!("{}/{pattern}", dir.display()))
                .into_iter()
                .map(|p| p[dir.display().to_string().len() + 1..].to_string())
                .collect()
        };
        assert_eq!(names("*"), ["Two.ini", "a/", "b/", "c/", "one.ini"]);
        assert_eq!(names("*/x.ini"), ["a/x.ini", "b/x.ini"]);
        assert_eq!(names("[ot]*.ini"), ["one.ini"]);
        assert!(names("nothing*").is_empty());
        assert!(is_pattern("a/*") && is_pattern("[ab]") && !is_pattern("/srv/app"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
