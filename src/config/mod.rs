//! Configuration: the option table (`defs`), the sources that produce
//! `(option, value)` settings in order, and the resolved [`Config`] the server
//! runs on.

pub mod defs;
pub mod sources;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use defs::{Kind, OptDef};

/// Where the WSGI callable comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// `--wsgi-file FILE`: a Python file executed as a module.
    File(PathBuf),
    /// `--module pkg.mod[:callable]`: an importable module.
    Module(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub source: AppSource,
    /// The attribute to take from the module; `name()` means "call the factory".
    pub callable: String,
}

/// The resolved configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_sockets: Vec<String>,
    /// uwsgi-protocol sockets (`socket`, `uwsgi-socket`).
    pub uwsgi_sockets: Vec<String>,
    pub scgi_sockets: Vec<String>,
    pub fastcgi_sockets: Vec<String>,
    pub listen_backlog: i32,
    pub chmod_socket: Option<u32>,
    /// The default app (`--wsgi-file`, `--module`); `None` when only
    /// `--mount` apps are given.
    pub app: Option<AppSpec>,
    /// `--mount MOUNTPOINT=APP`, in the order given.
    pub mounts: Vec<(String, AppSpec)>,
    pub manage_script_name: bool,
    /// `--vhost`: requests' UWSGI_SCRIPT/UWSGI_MODULE/UWSGI_FILE vars load apps.
    pub vhost: bool,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    pub home: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub threads: usize,
    pub limit_post: Option<u64>,
    pub buffer_size: usize,
    pub socket_timeout: Duration,
    pub process: ProcessConfig,
    pub log: crate::worker::reqlog::LogSettings,
    pub log_files: LogFiles,
    pub stats: StatsConfig,
}

/// Where the log goes and how it is kept.
#[derive(Debug, Clone, Default)]
pub struct LogFiles {
    /// `--log-maxsize`, bytes.
    pub maxsize: Option<u64>,
    pub backupname: Option<PathBuf>,
    pub touch_reopen: Vec<PathBuf>,
    /// `--logdate`: a strftime format for oxgate's own messages.
    pub date: Option<String>,
}

/// `--stats`, `--metrics`.
#[derive(Debug, Clone, Default)]
pub struct StatsConfig {
    pub addr: Option<String>,
    pub http: bool,
    pub minified: bool,
    pub metrics: Option<String>,
}

/// The process model: master, workers, supervision.
#[derive(Debug, Clone, Default)]
pub struct ProcessConfig {
    pub master: bool,
    pub processes: usize,
    pub lazy_apps: bool,
    pub harakiri: Option<Duration>,
    pub max_requests: Option<u64>,
    pub max_requests_delta: u64,
    pub max_worker_lifetime: Option<Duration>,
    /// Bytes.
    pub reload_on_rss: Option<u64>,
    pub evil_reload_on_rss: Option<u64>,
    pub limit_as: Option<u64>,
    pub worker_reload_mercy: Duration,
    pub reload_mercy: Duration,
    pub pidfile: Option<PathBuf>,
    pub pidfile2: Option<PathBuf>,
    pub daemonize: Option<PathBuf>,
    pub daemonize2: Option<PathBuf>,
    pub logto: Option<PathBuf>,
    pub vacuum: bool,
    pub touch_reload: Vec<PathBuf>,
    pub touch_chain_reload: Vec<PathBuf>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub attach_daemons: Vec<String>,
    /// (pidfile, command)
    pub smart_attach_daemons: Vec<(PathBuf, String)>,
    pub py_autoreload: Option<Duration>,
    pub chown_socket: Option<String>,
    pub umask: Option<u32>,
}

/// A request to a running master, made through its pidfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Stop,
    Reload,
    ChainReload,
    BrutalReload,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Serve(Box<Config>),
    Control(Control, PathBuf),
    Help,
    Version,
}

/// One value given for one option, in the order the sources gave them.
#[derive(Debug, Clone)]
pub struct Setting {
    pub opt: &'static OptDef,
    pub value: String,
    pub origin: sources::Origin,
}

/// Everything the sources said: the options, and the keys that are not
/// options (uWSGI keeps those as placeholders).
#[derive(Debug, Default)]
pub struct Loaded {
    pub settings: Vec<Setting>,
    pub unknown: Vec<sources::Entry>,
}

impl Loaded {
    /// uWSGI options oxgate does not implement yet, and likely typos: one
    /// warning each. Under `strict`, every unknown key is an error.
    pub fn problems(&self) -> (Vec<String>, Vec<String>) {
        let strict = self
            .settings
            .iter()
            .rev()
            .find(|s| s.opt.name == "strict")
            .is_some_and(|s| parse_bool(&s.value) == Some(true));
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in &self.unknown {
            if !seen.insert(e.key.clone()) {
                continue;
            }
            let msg = if defs::UWSGI_OPTIONS.contains(&e.key.as_str()) {
                Some(format!(
                    "{}: uWSGI option '{}' is not implemented in oxgate yet; it has no effect",
                    e.origin, e.key
                ))
            } else {
                defs::suggest(&e.key).map(|s| {
                    format!(
                        "{}: unknown option '{}' (did you mean {s}?); kept as a placeholder",
                        e.origin, e.key
                    )
                })
            };
            match (strict, msg) {
                (true, m) => errors.push(m.unwrap_or_else(|| {
                    format!(
                        "{}: unknown option '{}' (--strict refuses unknown keys)",
                        e.origin, e.key
                    )
                })),
                (false, Some(m)) => warnings.push(m),
                (false, None) => {}
            }
        }
        (warnings, errors)
    }
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Reads the command line (without the program name) into ordered settings.
pub fn parse_args<I>(args: I) -> Result<Vec<Setting>, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    load(args).map(|l| l.settings)
}

/// Reads every source: `UWSGI_*`/`OXGATE_*` environment variables first
/// (lowest priority), then the command line in order, with each config
/// file it names expanded in place.
pub fn load<I>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::Arg;
    use sources::{Origin, Reader};
    let mut reader = Reader::default();
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("UWSGI_") || k.starts_with("OXGATE_"))
        .collect();
    env.sort();
    for (name, value) in env {
        let key = name
            .split_once('_')
            .map_or("", |(_, k)| k)
            .to_ascii_lowercase()
            .replace('_', "-");
        if let Some(opt) = defs::lookup_exact(&key) {
            let origin = Origin::Env(name.clone());
            if sources::INCLUDE_KEYS.contains(&opt.name) {
                reader.load_file(opt.name, &value, &origin)?;
            } else {
                reader.push(opt.name, &value, origin);
            }
        }
    }

    let mut parser = lexopt::Parser::from_args(args);
    let mut apps = Vec::new();
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return err(format!("{e}")),
        };
        let (opt, shown) = match arg {
            Arg::Long(name) => match defs::lookup(name) {
                Some(o) => (o, format!("--{name}")),
                None => {
                    let hint = defs::suggest(name)
                        .map(|s| format!(" (did you mean --{s}?)"))
                        .unwrap_or_default();
                    let not_yet = if defs::UWSGI_OPTIONS.contains(&name) {
                        " (a uWSGI option oxgate does not implement yet)"
                    } else {
                        ""
                    };
                    return err(format!(
                        "unknown option --{name}{hint}{not_yet}; run 'oxgate --help' for the list"
                    ));
                }
            },
            // uWSGI's -b is --buffer-size, Gunicorn's is --bind: a number
            // can only be a size, an address only an address.
            Arg::Short('b') => {
                let v = parser
                    .value()
                    .map_err(|_| ConfigError("-b needs a value".into()))
                    .and_then(|v| os_to_string(v, "-b"))?;
                let name = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    "buffer-size"
                } else {
                    "bind"
                };
                reader.push(name, &v, Origin::CommandLine);
                continue;
            }
            Arg::Short(c) => match defs::lookup_short(c) {
                Some(o) => (o, format!("-{c}")),
                None => {
                    return err(format!(
                        "unknown option -{c}; run 'oxgate --help' for the list"
                    ));
                }
            },
            Arg::Value(v) => {
                let v = v
                    .into_string()
                    .map_err(|v| ConfigError(format!("argument {v:?} is not valid UTF-8")))?;
                // `oxgate app.ini`: a lone config file, picked by its extension.
                let lower = v.to_ascii_lowercase();
                if [".ini", ".yaml", ".yml", ".json", ".js", ".xml"]
                    .iter()
                    .any(|e| lower.ends_with(e) || lower.contains(&format!("{e}:")))
                {
                    reader.load_file("auto", &v, &Origin::CommandLine)?;
                } else {
                    apps.push(v);
                }
                continue;
            }
        };
        let value = if matches!(opt.kind, Kind::Flag | Kind::FlagOrStr) {
            match parser.optional_value() {
                Some(v) => os_to_string(v, &shown)?,
                None => "true".to_string(),
            }
        } else {
            match parser.value() {
                Ok(v) => os_to_string(v, &shown)?,
                Err(_) => {
                    return err(format!("{shown} needs a value: {shown} {}", opt.value_name));
                }
            }
        };
        if sources::INCLUDE_KEYS.contains(&opt.name) {
            reader.load_file(opt.name, &value, &Origin::CommandLine)?;
        } else {
            reader.push(opt.name, &value, Origin::CommandLine);
        }
    }
    // Gunicorn's `oxgate pkg.mod:app` and uWSGI's `oxgate app.py` shortcuts.
    match apps.len() {
        0 => {}
        1 => {
            let p = apps.remove(0);
            let name = if p.ends_with(".py") {
                "wsgi-file"
            } else {
                "module"
            };
            reader.push(name, &p, Origin::CommandLine);
        }
        _ => {
            return err(format!(
                "expected at most one application argument (like pkg.mod:app), got {apps:?}"
            ));
        }
    }

    let mut loaded = Loaded::default();
    for e in reader.entries {
        // Command-line entries carry canonical names; file keys count as
        // written (uWSGI: `base_dir` is a placeholder, not base-dir).
        match defs::lookup_exact(&e.key) {
            Some(opt) => {
                if opt.kind == Kind::Flag && parse_bool(&e.value).is_none() {
                    return err(format!(
                        "{}: {} takes true or false, not {:?}",
                        e.origin, opt.name, e.value
                    ));
                }
                loaded.settings.push(Setting {
                    opt,
                    value: e.value,
                    origin: e.origin,
                });
            }
            None => loaded.unknown.push(e),
        }
    }
    Ok(loaded)
}

/// `--print-config`: each option set, its value(s) and where each came from.
pub fn print_config(loaded: &Loaded) -> String {
    let mut out = String::new();
    for o in defs::OPTIONS {
        for s in loaded.settings.iter().filter(|s| std::ptr::eq(s.opt, o)) {
            let _ = writeln!(out, "{} = {}    # {}", o.name, s.value, s.origin);
        }
    }
    if !loaded.unknown.is_empty() {
        let _ = writeln!(out, "# not options (kept as placeholders):");
        for e in &loaded.unknown {
            let _ = writeln!(out, "# {} = {}    # {}", e.key, e.value, e.origin);
        }
    }
    out
}

fn os_to_string(v: OsString, shown: &str) -> Result<String, ConfigError> {
    v.into_string()
        .map_err(|v| ConfigError(format!("the value of {shown} ({v:?}) is not valid UTF-8")))
}

/// Reads a boolean the way uWSGI does.
pub fn parse_bool(v: &str) -> Option<bool> {
    // "true # comment": uWSGI has no inline comments, but reads the value's
    // start, so such files work there.
    let first = v.split_whitespace().next().unwrap_or("");
    match first.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" | "y" | "t" => Some(true),
        "0" | "false" | "no" | "off" | "n" | "f" => Some(false),
        _ => None,
    }
}

/// Reads a number the way uWSGI does: its leading digits, 0 when there are none.
pub fn parse_int(v: &str) -> i64 {
    let v = v.trim();
    let (neg, digits) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let n = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |n, d| {
            n.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if neg { -n } else { n }
}

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
    for (name, what) in [
        ("stop", Control::Stop),
        ("reload", Control::Reload),
        ("chain-reload", Control::ChainReload),
        ("brutal-reload", Control::BrutalReload),
    ] {
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
            let mut encoder = crate::worker::reqlog::Encoder::Plain;
            for e in &encoders {
                let (name, arg) = e
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or((e.trim(), ""));
                // uWSGI's "json:loggerid TEMPLATE": the logger id is not used.
                let name = name.split(':').next().unwrap_or(name);
                encoder = match (name, arg.trim()) {
                    ("json", "") => crate::worker::reqlog::Encoder::JsonFields,
                    ("json", t) => crate::worker::reqlog::Encoder::JsonTemplate(t.to_string()),
                    ("nl", _) => continue,
                    _ => {
                        return err(format!(
                            "--log-encoder {e:?}: oxgate has the json and nl encoders (`json`, `json {{\"msg\":\"${{msg}}\"}}`)"
                        ));
                    }
                };
            }
            crate::worker::reqlog::LogSettings {
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
                .min(crate::master::MAX_WORKERS as i64) as usize
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

/// `--help`, generated from the option table.
pub fn help_text() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "oxgate {} - serve Python WSGI apps\n\n\
         Usage: oxgate --http-socket ADDR (--wsgi-file FILE | --module pkg.mod:app) [OPTIONS]\n       \
         oxgate [OPTIONS] pkg.mod:app",
        env!("CARGO_PKG_VERSION")
    );
    for group in defs::Group::ALL {
        let _ = writeln!(out, "\n{}:", group.title());
        for o in defs::OPTIONS.iter().filter(|o| o.group == group) {
            let mut names = String::new();
            if let Some(c) = o.short {
                let _ = write!(names, "-{c}, ");
            }
            let _ = write!(names, "--{}", o.name);
            for a in o.aliases {
                let _ = write!(names, ", --{a}");
            }
            if !o.value_name.is_empty() {
                let _ = write!(names, " {}", o.value_name);
            }
            let _ = writeln!(out, "  {names}\n      {}", o.help);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
