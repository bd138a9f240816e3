//! Ordered settings resolved into a [`Config`], or a help, version or
//! control request.

use std::path::PathBuf;
use std::time::Duration;

use super::parse::{ConfigError, Setting, err, parse_bool, parse_int};
use super::settings::*;

/// `pkg.mod`, `pkg.mod:app` or `pkg.mod:factory()`; `--callable` (or
/// "application") when no callable is named.
fn module_spec(
    option: &str,
    value: &str,
    callable_opt: Option<String>,
) -> Result<AppSpec, ConfigError> {
    let (module, callable) = match value.split_once(':') {
        Some((m, c)) => (m, Some(c.to_string())),
        None => (value, None),
    };
    if module.is_empty() || callable.as_deref() == Some("") {
        return err(format!(
            "{option} {value:?}: expected pkg.mod, pkg.mod:app or pkg.mod:factory()"
        ));
    }
    Ok(AppSpec {
        source: AppSource::Module(module.to_string()),
        callable: callable
            .or(callable_opt)
            .unwrap_or_else(|| "application".into()),
    })
}

/// Resolves ordered settings into the configuration, or a help/version request.
pub fn resolve(settings: &[Setting]) -> Result<Action, ConfigError> {
    let last = |name: &str| {
        settings
            .iter()
            .rev()
            .find(|s| s.opt.name == name)
            .map(|s| s.value.as_str())
    };
    let all = |name: &str| -> Vec<String> {
        settings
            .iter()
            .filter(|s| s.opt.name == name)
            .map(|s| s.value.clone())
            .collect()
    };
    let flag = |name: &str| -> Result<bool, ConfigError> {
        match last(name) {
            None => Ok(false),
            Some(v) => parse_bool(v)
                .ok_or_else(|| ConfigError(format!("--{name} takes true or false, not {v:?}"))),
        }
    };
    // As in uWSGI, 0 (which is also what `threads = true` reads as) means
    // the default; only a negative number is refused.
    let positive = |name: &str, default: i64| -> Result<i64, ConfigError> {
        match last(name) {
            None => Ok(default),
            Some(v) => match parse_int(v) {
                0 => Ok(default),
                n if n < 0 => err(format!("--{name} must be a positive number, not {v:?}")),
                n => Ok(n),
            },
        }
    };

    let seconds = |name: &str| {
        last(name)
            .map(parse_int)
            .filter(|n| *n > 0)
            .map(|n| Duration::from_secs(n as u64))
    };
    let count = |name: &str| {
        last(name)
            .map(parse_int)
            .filter(|n| *n > 0)
            .map(|n| n as u64)
    };
    let megabytes = |name: &str| count(name).map(|n| n * 1024 * 1024);
    // `--logdate` alone: uWSGI's ctime-like date; `--logdate=FMT`: strftime.
    let log_date = last("logdate").and_then(|v| match parse_bool(v) {
        Some(true) => Some("%a %b %e %H:%M:%S %Y".to_string()),
        Some(false) => None,
        None => Some(v.to_string()),
    });

    if flag("help")? {
        return Ok(Action::Help);
    }
    if flag("version")? {
        return Ok(Action::Version);
    }
    for (name, what) in crate::lifecycle::Control::OPTIONS {
        if let Some(pidfile) = last(name) {
            return Ok(Action::Control(what, PathBuf::from(pidfile)));
        }
    }

    let mut http_sockets = all("http-socket");
    http_sockets.extend(all("bind"));
    let mut uwsgi_sockets = all("uwsgi-socket");
    let mut scgi_sockets = all("scgi-socket");
    let mut fastcgi_sockets = all("fastcgi-socket");
    let sockets = all("socket");
    match last("protocol")
        .map_or("uwsgi", str::trim)
        .to_ascii_lowercase()
        .as_str()
    {
        "http" => http_sockets.extend(sockets),
        "uwsgi" => uwsgi_sockets.extend(sockets),
        "scgi" => scgi_sockets.extend(sockets),
        "fastcgi" => fastcgi_sockets.extend(sockets),
        other => {
            return err(format!(
                "protocol = {other}: --socket speaks uwsgi (the default), http, scgi or fastcgi"
            ));
        }
    }
    if http_sockets.is_empty()
        && uwsgi_sockets.is_empty()
        && scgi_sockets.is_empty()
        && fastcgi_sockets.is_empty()
        && std::env::var_os("LISTEN_FDS").is_none()
    {
        return err(
            "no socket to listen on: add --http-socket ADDR (for example --http-socket 127.0.0.1:8000), or --socket ADDR for nginx's uwsgi_pass",
        );
    }

    let callable_opt = last("callable").map(str::to_string);
    // Gunicorn's `-w 4 app:app`: a module name cannot be a number, so a
    // numeric -w/--module is Gunicorn's worker count.
    let is_count = |s: &&Setting| {
        s.opt.name == "module" && !s.value.is_empty() && s.value.bytes().all(|b| b.is_ascii_digit())
    };
    let gunicorn_workers = settings
        .iter()
        .rev()
        .find(is_count)
        .map(|s| parse_int(&s.value))
        .filter(|n| *n > 0);
    let source_setting = settings
        .iter()
        .rev()
        .filter(|s| !is_count(s))
        .find(|s| s.opt.name == "wsgi-file" || s.opt.name == "module");
    let mut mounts = Vec::new();
    for m in all("mount") {
        let Some((point, target)) = m.split_once('=') else {
            return err(format!(
                "--mount {m:?}: expected MOUNTPOINT=APP, like /blog=blog.py or /api=api.wsgi:app"
            ));
        };
        let point = point.trim().trim_end_matches('/').to_string();
        let target = target.trim();
        if (!point.is_empty() && !point.starts_with('/')) || target.is_empty() {
            return err(format!(
                "--mount {m:?}: expected MOUNTPOINT=APP, with MOUNTPOINT starting with /"
            ));
        }
        // As uWSGI: a path (or a .py/.wsgi file) is a file, else a module.
        let spec = if target.contains('/') || target.ends_with(".py") || target.ends_with(".wsgi") {
            AppSpec {
                source: AppSource::File(PathBuf::from(target)),
                callable: callable_opt.clone().unwrap_or_else(|| "application".into()),
            }
        } else {
            module_spec("--mount", target, callable_opt.clone())?
        };
        mounts.push((point, spec));
    }
    let app = match source_setting {
        None if !mounts.is_empty() || flag("vhost")? => None,
        None => {
            return err(
                "no application given: add --wsgi-file FILE or --module pkg.mod:app (or just pkg.mod:app)",
            );
        }
        Some(s) if s.opt.name == "wsgi-file" => Some(AppSpec {
            source: AppSource::File(PathBuf::from(&s.value)),
            callable: callable_opt.unwrap_or_else(|| "application".into()),
        }),
        Some(s) => Some(module_spec("--module", &s.value, callable_opt)?),
    };

    let mut env = Vec::new();
    for kv in all("env") {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => return err(format!("--env {kv:?}: expected KEY=VALUE")),
        }
    }

    let chmod_socket = match last("chmod-socket") {
        None => None,
        Some(v) if v.trim().is_empty() || v.trim().eq_ignore_ascii_case("true") => Some(0o666),
        Some(v) => Some(u32::from_str_radix(v.trim(), 8).map_err(|_| {
            ConfigError(format!(
                "--chmod-socket {v:?}: expected octal permissions like 660"
            ))
        })?),
    };

    let home = last("home").map(PathBuf::from).or_else(|| {
        std::env::var_os("VIRTUAL_ENV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });

    Ok(Action::Serve(Box::new(Config {
        http_sockets,
        uwsgi_sockets,
        scgi_sockets,
        fastcgi_sockets,
        listen_backlog: positive("listen", 1024)?.min(i64::from(i32::MAX)) as i32,
        chmod_socket,
        app,
        mounts,
        manage_script_name: flag("manage-script-name")?,
        vhost: flag("vhost")?,
        chdir: last("chdir").map(PathBuf::from),
        pythonpath: all("pythonpath").into_iter().map(PathBuf::from).collect(),
        home,
        env,
        threads: positive("threads", 1)?.min(1024) as usize,
        limit_post: match last("limit-post") {
            None => None,
            Some(v) => Some(parse_int(v)).filter(|n| *n > 0).map(|n| n as u64),
        },
        buffer_size: positive("buffer-size", 65536)?.clamp(8192, 16 << 20) as usize,
        socket_timeout: Duration::from_secs(positive("socket-timeout", 30)? as u64),
        log: {
            let encoders = all("log-encoder");
            let mut encoder = Encoder::Plain;
            for e in &encoders {
                let (name, arg) = e
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((e.trim(), ""));
                // uWSGI's "json:loggerid TEMPLATE": the logger id is not used.
                let name = name.split(':').next().unwrap_or(name);
                encoder = match (name, arg.trim()) {
                    ("json", "") => Encoder::JsonFields,
                    ("json", t) => Encoder::JsonTemplate(t.to_string()),
                    ("nl", _) => continue,
                    _ => {
                        return err(format!(
                            "--log-encoder {e:?}: oxgate has the json and nl encoders (`json`, `json {{\"msg\":\"${{msg}}\"}}`)"
                        ));
                    }
                };
            }
            LogSettings {
                enabled: !flag("disable-logging")?,
                format: last("log-format").map(str::to_string),
                encoder,
                ftime: if flag("log-format-strftime")? {
                    log_date.clone()
                } else {
                    None
                },
                micros: flag("log-micros")?,
                x_forwarded_for: flag("log-x-forwarded-for")?,
                slow_ms: count("log-slow"),
                log_4xx: flag("log-4xx")?,
                log_5xx: flag("log-5xx")?,
                big: count("log-big"),
                zero: flag("log-zero")?,
            }
        },
        log_files: LogFiles {
            maxsize: count("log-maxsize"),
            backupname: last("log-backupname").map(PathBuf::from),
            touch_reopen: all("touch-logreopen")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            date: log_date,
        },
        stats: StatsConfig {
            addr: last("stats").map(str::to_string),
            http: flag("stats-http")?,
            minified: flag("stats-minified")?,
            metrics: last("metrics").map(str::to_string),
        },
        process: ProcessConfig {
            master: match (last("master"), flag("no-master")?) {
                (_, true) => false,
                (Some(_), false) => flag("master")?,
                (None, false) => true,
            },
            processes: {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
                match gunicorn_workers {
                    Some(n) => n,
                    None => positive("processes", cores)?,
                }
                .min(MAX_WORKERS as i64) as usize
            },
            lazy_apps: flag("lazy-apps")?,
            harakiri: seconds("harakiri"),
            max_requests: count("max-requests"),
            max_requests_delta: last("max-requests-delta").map_or(0, parse_int).max(0) as u64,
            max_worker_lifetime: seconds("max-worker-lifetime"),
            reload_on_rss: megabytes("reload-on-rss"),
            evil_reload_on_rss: megabytes("evil-reload-on-rss"),
            limit_as: megabytes("limit-as"),
            worker_reload_mercy: seconds("worker-reload-mercy").unwrap_or(Duration::from_secs(60)),
            reload_mercy: seconds("reload-mercy").unwrap_or(Duration::from_secs(60)),
            pidfile: last("pidfile").map(PathBuf::from),
            pidfile2: last("pidfile2").map(PathBuf::from),
            daemonize: last("daemonize").map(PathBuf::from),
            daemonize2: last("daemonize2").map(PathBuf::from),
            logto: last("logto").map(PathBuf::from),
            vacuum: flag("vacuum")?,
            touch_reload: all("touch-reload").into_iter().map(PathBuf::from).collect(),
            touch_chain_reload: all("touch-chain-reload")
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            uid: last("uid").map(str::to_string),
            gid: last("gid").map(str::to_string),
            attach_daemons: all("attach-daemon"),
            smart_attach_daemons: all("smart-attach-daemon")
                .into_iter()
                .map(|v| match v.trim().split_once(char::is_whitespace) {
                    Some((pidfile, cmd)) if !cmd.trim().is_empty() => {
                        Ok((PathBuf::from(pidfile), cmd.trim().to_string()))
                    }
                    _ => err(format!(
                        "--smart-attach-daemon {v:?}: expected PIDFILE COMMAND"
                    )),
                })
                .collect::<Result<_, _>>()?,
            py_autoreload: seconds("py-autoreload"),
            chown_socket: last("chown-socket").map(str::to_string),
            umask: match last("umask") {
                None => None,
                Some(v) => Some(u32::from_str_radix(v.trim(), 8).map_err(|_| {
                    ConfigError(format!("--umask {v:?}: expected an octal mask like 022"))
                })?),
            },
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{defs, help_text, load, parse_args};

    fn serve(args: &[&str]) -> Config {
        match resolve(&parse_args(args.iter().copied()).unwrap()).unwrap() {
            Action::Serve(c) => *c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse_args(args.iter().copied()).and_then(|s| resolve(&s)) {
            Err(e) => e.0,
            Ok(a) => panic!("expected an error, got {a:?}"),
        }
    }

    #[test]
    fn mounts_files_and_modules() {
        let c = serve(&[
            "--http",
            ":1",
            "--mount",
            "/blog/=blog.py",
            "--mount",
            "/api=pkg.api:make()",
            "--mount",
            "/w=/srv/app.wsgi",
            "--manage-script-name",
        ]);
        assert!(c.app.is_none() && c.manage_script_name);
        let m: Vec<_> = c
            .mounts
            .iter()
            .map(|(p, a)| (p.as_str(), a.source.clone(), a.callable.as_str()))
            .collect();
        assert_eq!(
            m,
            [
                ("/blog", AppSource::File("blog.py".into()), "application"),
                ("/api", AppSource::Module("pkg.api".into()), "make()"),
                ("/w", AppSource::File("/srv/app.wsgi".into()), "application"),
            ]
        );
        assert!(error(&["--http", ":1", "--mount", "blog.py"]).contains("MOUNTPOINT=APP"));
        assert!(error(&["--http", ":1", "--mount", "blog=blog.py"]).contains("starting with /"));
        assert!(serve(&["--http", ":1", "--vhost"]).vhost);
    }

    #[test]
    fn wsgi_file_and_http_alias() {
        let c = serve(&["--http", ":8000", "--wsgi-file", "app.py"]);
        assert_eq!(c.http_sockets, vec![":8000"]);
        assert_eq!(
            c.app.as_ref().unwrap().source,
            AppSource::File("app.py".into())
        );
        assert_eq!(c.app.as_ref().unwrap().callable, "application");
        let c = serve(&[
            "--http-socket=127.0.0.1:1",
            "--file",
            "a.py",
            "--callable",
            "app",
        ]);
        assert_eq!(c.app.as_ref().unwrap().callable, "app");
    }

    #[test]
    fn module_forms() {
        let c = serve(&["--http", ":1", "--module", "pkg.wsgi"]);
        assert_eq!(
            c.app.as_ref().unwrap().source,
            AppSource::Module("pkg.wsgi".into())
        );
        assert_eq!(c.app.as_ref().unwrap().callable, "application");
        let c = serve(&["--http", ":1", "-w", "pkg.mod:make()"]);
        assert_eq!(c.app.as_ref().unwrap().callable, "make()");
        let c = serve(&["--http", ":1", "demo:app"]);
        assert_eq!(
            c.app.as_ref().unwrap().source,
            AppSource::Module("demo".into())
        );
        assert_eq!(c.app.as_ref().unwrap().callable, "app");
        let c = serve(&["-b", ":1", "hello.py"]);
        assert_eq!(
            c.app.as_ref().unwrap().source,
            AppSource::File("hello.py".into())
        );
    }

    #[test]
    fn repeatable_options_keep_order() {
        let c = serve(&[
            "--http",
            ":1",
            "--http",
            "/tmp/s",
            "--pythonpath",
            "a",
            "--pp",
            "b",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--file",
            "a.py",
        ]);
        assert_eq!(c.http_sockets, vec![":1", "/tmp/s"]);
        assert_eq!(c.pythonpath, vec![PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(
            c.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }

    #[test]
    fn lenient_numbers_and_flags() {
        assert_eq!(parse_int("30 # seconds"), 30);
        assert_eq!(parse_int("true"), 0);
        assert_eq!(parse_int("-5"), -5);
        let c = serve(&[
            "--http",
            ":1",
            "--file",
            "a.py",
            "--threads",
            "4",
            "-M",
            "--master=yes",
        ]);
        assert_eq!(c.threads, 4);
    }

    #[test]
    fn dash_b_is_size_or_address() {
        let c = serve(&["-b", "32768", "-b", "127.0.0.1:9", "-w", "m"]);
        assert_eq!(c.buffer_size, 32768);
        assert_eq!(c.http_sockets, vec!["127.0.0.1:9"]);
        let l = load(["-L", "-C", "660", "-T", "-i", "--http", ":1", "-w", "m"]).unwrap();
        let names: Vec<&str> = l.settings.iter().map(|s| s.opt.name).collect();
        assert!(names.contains(&"disable-logging") && names.contains(&"chmod-socket"));
        assert!(names.contains(&"enable-threads") && names.contains(&"single-interpreter"));
    }

    #[test]
    fn gunicorn_worker_count() {
        let c = serve(&["-b", ":1", "-w", "4", "demo:app"]);
        assert_eq!(c.process.processes, 4);
        assert_eq!(
            c.app.as_ref().unwrap().source,
            AppSource::Module("demo".into())
        );
        let c = serve(&["-b", ":1", "-w", "myapp"]);
        assert_eq!(
            c.app.as_ref().unwrap().source,
            AppSource::Module("myapp".into())
        );
    }

    #[test]
    fn clear_errors() {
        assert!(error(&["--file", "a.py"]).contains("--http-socket"));
        assert!(error(&["--http", ":1"]).contains("--wsgi-file"));
        assert!(
            error(&["--http", ":1", "--wsgi-fil", "a.py"]).contains("did you mean --wsgi-file")
        );
        assert!(error(&["--http"]).contains("needs a value"));
        assert!(error(&["--http", ":1", "--file", "a", "--threads", "-1"]).contains("positive"));
        assert!(error(&["--http", ":1", "--file", "a", "--env", "novalue"]).contains("KEY=VALUE"));
    }

    #[test]
    fn help_lists_every_option() {
        let h = help_text();
        for o in defs::OPTIONS {
            assert!(h.contains(&format!("--{}", o.name)), "{} missing", o.name);
        }
    }
}
