//! php-cgi in a pool (`--fastcgi-app php-cgi`): run so that its own
//! request cap costs a fork, not an exec.
//!
//! php-cgi exits after `PHP_FCGI_MAX_REQUESTS` requests (500 unless set).
//! Started alone, each replacement execs and loads PHP and every extension
//! again: at 500 requests a process and 9,500 req/s, that is 19 execs a
//! second on the shared core. Started with `PHP_FCGI_CHILDREN=1`, php-cgi
//! loads everything once, then forks one child that serves the inherited
//! socket, and forks another each time one exits at the cap, as a php-fpm
//! child is forked from its master. oxgate supervises the process it
//! started (the child's parent), and kills its whole process group when it
//! kills it.

use std::ffi::OsString;
use std::path::Path;

/// What oxgate knows of a pool's php-cgi: how it is run, and when a
/// serving process exits by itself.
#[derive(Debug, PartialEq)]
pub struct PhpCgi {
    /// The process oxgate starts forks the one that serves
    /// (`PHP_FCGI_CHILDREN` of 1 or more).
    pub prefork: bool,
    /// Requests one serving process handles before it exits: known when it
    /// is the only one serving its socket. Its kept connection is dropped
    /// after the last, so that no request is sent to a process on its way
    /// out.
    pub cap: Option<u64>,
    /// The cap is `--fastcgi-app-max-requests` (counted as recycles), not
    /// php-cgi's own.
    pub cap_is_ours: bool,
    /// Several children serve the one socket (`PHP_FCGI_CHILDREN` over 1):
    /// which of them takes a connection, and when each exits, is php-cgi's
    /// business.
    pub children_share_a_socket: bool,
    /// The `PHP_FCGI_*` variables oxgate sets.
    set: Vec<(&'static str, String)>,
}

/// php-cgi's own default for `PHP_FCGI_MAX_REQUESTS`.
const PHP_DEFAULT_CAP: u64 = 500;

impl PhpCgi {
    /// `None` for a program that is not php-cgi (`php-cgi`, `php-cgi8.2`,
    /// `php8.2-cgi`). `env`: the pool's environment, as given;
    /// `max_requests`: `--fastcgi-app-max-requests`.
    pub fn of(
        program: &Path,
        env: &[(OsString, OsString)],
        max_requests: Option<u64>,
    ) -> Option<PhpCgi> {
        if !is_php_cgi(program) {
            return None;
        }
        let given = |key: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| leading_number(&v.to_string_lossy()))
        };
        let children = given("PHP_FCGI_CHILDREN");
        // php-cgi reads both with atoi(): 0, or no number, is none.
        let php_cap = match given("PHP_FCGI_MAX_REQUESTS") {
            Some(n) => (n > 0).then_some(n),
            None => Some(PHP_DEFAULT_CAP),
        };
        let mut set = Vec::new();
        if children.is_none() {
            set.push(("PHP_FCGI_CHILDREN", "1".to_string()));
        }
        let prefork = children.is_none_or(|n| n > 0);
        // A cap of our own goes to php-cgi when it forks: its child is
        // replaced by a fork rather than the process by an exec.
        let ours = max_requests.filter(|&n| prefork && php_cap.is_none_or(|cap| n <= cap));
        if let Some(n) = ours {
            set.push(("PHP_FCGI_MAX_REQUESTS", n.to_string()));
        }
        Some(PhpCgi {
            prefork,
            // Several children on one socket: which serves what is
            // php-cgi's business.
            cap: if children.is_none_or(|n| n <= 1) {
                ours.or(php_cap)
            } else {
                None
            },
            cap_is_ours: ours.is_some(),
            children_share_a_socket: children.is_some_and(|n| n > 1),
            set,
        })
    }

    /// Puts the variables oxgate sets into the pool's environment.
    pub fn set_env(&self, env: &mut Vec<(OsString, OsString)>) {
        for (key, value) in &self.set {
            env.retain(|(k, _)| k != key);
            env.push((key.into(), value.into()));
        }
    }
}

/// Whether `program` is php-cgi: by its name (`php-cgi`, `php-cgi8.2`,
/// `php8.2-cgi`), or the name of the file a link leads to, or what it is
/// (Debian installs php-cgi as /usr/lib/cgi-bin/php8.2 too; a copy may
/// have any name). What is detected decides whether only `.php` files run,
/// so a name alone is not trusted to say no.
pub fn is_php_cgi(program: &Path) -> bool {
    let named = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("php") && n.contains("cgi"))
    };
    if named(program) {
        return true;
    }
    let Ok(real) = program.canonicalize() else {
        return false;
    };
    named(&real) || is_php_cgi_binary(&real)
}

/// The variable only php-cgi's FastCGI loop reads; php-fpm and the CLI do
/// not have it.
const PHP_CGI_MARK: &[u8] = b"PHP_FCGI_CHILDREN";

/// The largest program read for `PHP_CGI_MARK` (php-cgi is about 6 MB).
const MAX_PROGRAM: u64 = 256 << 20;

fn is_php_cgi_binary(program: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(program) else {
        return false;
    };
    let mut bytes = Vec::new();
    if file.take(MAX_PROGRAM).read_to_end(&mut bytes).is_err() {
        return false;
    }
    memchr::memmem::find(&bytes, PHP_CGI_MARK).is_some()
}

/// Commands that run the command after their own options: `env PHPRC=/x
/// php-cgi`, `nice -n 5 php-cgi`, `taskset -c 0 php-cgi`.
const WRAPPERS: &[&str] = &[
    "env", "nice", "ionice", "nohup", "chrt", "taskset", "stdbuf", "setpriv", "timeout", "prlimit",
    "numactl", "chpst", "runuser", "sudo", "setsid", "unshare", "cgexec",
];

/// The program a command runs in the end: through the wrappers above, the
/// first argument that is no option, no `NAME=value` and names a program.
pub fn program_behind(program: &Path, args: &[String]) -> std::path::PathBuf {
    let is_wrapper = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| WRAPPERS.contains(&n))
    };
    if !is_wrapper(program) {
        return program.to_path_buf();
    }
    for (i, arg) in args.iter().enumerate() {
        if arg.starts_with('-') || arg.contains('=') {
            continue;
        }
        if let Some(found) = super::super::find_program(arg) {
            return program_behind(&found, &args[i + 1..]);
        }
    }
    program.to_path_buf()
}

/// atoi(3): the number a string starts with (after blanks), 0 for none.
fn leading_number(s: &str) -> u64 {
    let s = s.trim_start();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    s[..digits].parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn php(name: &str, env: &[(&str, &str)], max_requests: Option<u64>) -> Option<PhpCgi> {
        let env: Vec<_> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        PhpCgi::of(Path::new(name), &env, max_requests)
    }

    fn env_after(p: &PhpCgi, env: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<_> = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        p.set_env(&mut env);
        env.into_iter()
            .map(|(k, v): (OsString, OsString)| {
                (k.into_string().unwrap(), v.into_string().unwrap())
            })
            .collect()
    }

    #[test]
    fn only_php_cgi_is_recognised() {
        for name in ["php-cgi", "/usr/bin/php-cgi8.2", "php8.2-cgi"] {
            assert!(php(name, &[], None).is_some(), "{name}");
        }
        for name in ["perl", "/usr/bin/php", "php-fpm8.2", "python3", "fcgiwrap"] {
            assert_eq!(php(name, &[], None), None, "{name}");
        }
    }

    #[test]
    fn php_cgi_is_found_behind_a_link_a_copy_or_a_wrapper() {
        let Some(real) = crate::handlers::find_program("php-cgi") else {
            return; // (the integration tests need it; this one can do without)
        };
        let dir = std::env::temp_dir().join(format!("oxgate-php-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("php");
        let copy = dir.join("php8.2");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        std::fs::copy(&real, &copy).unwrap();
        assert!(is_php_cgi(&link) && is_php_cgi(&copy));
        let env = crate::handlers::find_program("env").unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let behind = program_behind(
            &env,
            &args(&["-i", "PHPRC=/x", "nice", "-n", "5", "php-cgi", "-c", "/y"]),
        );
        assert!(is_php_cgi(&behind), "{behind:?}");
        assert!(!is_php_cgi(&program_behind(
            &env,
            &args(&["python3", "app.fcgi"])
        )));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn by_default_it_forks_one_child_that_exits_at_phps_cap() {
        let p = php("php-cgi", &[("A", "b")], None).unwrap();
        assert!(p.prefork && !p.cap_is_ours);
        assert_eq!(p.cap, Some(500));
        assert_eq!(
            env_after(&p, &[("A", "b")]),
            [
                ("A".into(), "b".into()),
                ("PHP_FCGI_CHILDREN".into(), "1".into())
            ]
        );
    }

    #[test]
    fn max_requests_becomes_the_childs_cap_when_it_is_the_lower() {
        let p = php("php-cgi", &[("PHP_FCGI_MAX_REQUESTS", "100")], Some(3)).unwrap();
        assert_eq!((p.cap, p.cap_is_ours), (Some(3), true));
        let env = env_after(&p, &[("PHP_FCGI_MAX_REQUESTS", "100")]);
        assert_eq!(
            env,
            [
                ("PHP_FCGI_CHILDREN".into(), "1".into()),
                ("PHP_FCGI_MAX_REQUESTS".into(), "3".into())
            ]
        );
        let p = php("php-cgi", &[("PHP_FCGI_MAX_REQUESTS", "100")], Some(1000)).unwrap();
        assert_eq!((p.cap, p.cap_is_ours), (Some(100), false));
        // No cap of php-cgi's (0): ours is the only one.
        let p = php("php-cgi", &[("PHP_FCGI_MAX_REQUESTS", "0")], Some(7)).unwrap();
        assert_eq!((p.cap, p.cap_is_ours), (Some(7), true));
        let p = php("php-cgi", &[("PHP_FCGI_MAX_REQUESTS", "0")], None).unwrap();
        assert_eq!(p.cap, None);
    }

    #[test]
    fn the_users_children_setting_is_kept() {
        // 0: php-cgi serves itself, exec'd anew at its cap; oxgate's own
        // cap stays oxgate's (it kills the process).
        let p = php("php-cgi", &[("PHP_FCGI_CHILDREN", "0")], Some(3)).unwrap();
        assert!(!p.prefork && !p.cap_is_ours);
        assert_eq!(p.cap, Some(500));
        assert_eq!(
            env_after(&p, &[("PHP_FCGI_CHILDREN", "0")]),
            [("PHP_FCGI_CHILDREN".into(), "0".into())]
        );
        // Several children share the socket: no cap can be followed.
        let p = php("php-cgi", &[("PHP_FCGI_CHILDREN", "4")], None).unwrap();
        assert!(p.prefork);
        assert_eq!(p.cap, None);
        // atoi(): leading blanks and trailing text.
        let p = php("php-cgi", &[("PHP_FCGI_MAX_REQUESTS", " 20x")], None).unwrap();
        assert_eq!(p.cap, Some(20));
    }
}
