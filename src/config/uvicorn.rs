//! uvicorn's command line (`oxgate uvicorn APP --port 8000 ...`), read
//! into oxgate's options. uvicorn has no config file; `--env-file` is read
//! here. Each option is in [`OPTIONS`] once, with what it becomes; one with
//! no meaning in oxgate is reported once at start, with the reason.

use std::ffi::OsString;
use std::rc::Rc;

use super::defs::{self, Key, opt};
use super::sources::Origin;
// Through the module's root, as `sources` does: `parse` reads this module.
use crate::config::{ConfigError, HttpsSocket, Setting};

/// How an option is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// `--reload`; with `no`, also `--no-NAME` to turn it off.
    Switch {
        no: bool,
    },
    Value,
    /// Repeatable.
    Append,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// Translated by [`translate`].
    Maps,
    /// Accepted with no effect; the reason is shown once at start.
    Ignored(&'static str),
}

struct UvicornOption {
    flag: &'static str,
    arity: Arity,
    meaning: Meaning,
}

const fn u(flag: &'static str, arity: Arity, meaning: Meaning) -> UvicornOption {
    UvicornOption {
        flag,
        arity,
        meaning,
    }
}

use Arity::{Append, Switch, Value};
use Meaning::{Ignored, Maps};

const ON: Arity = Switch { no: false };
const ON_OFF: Arity = Switch { no: true };
const NO_TLS: Meaning = Ignored(
    "oxgate's TLS is rustls's, set by --ssl-certfile, --ssl-keyfile, --ssl-ca-certs, --ssl-cert-reqs and --ssl-ciphers",
);
const OWN_PROTOCOLS: Meaning =
    Ignored("oxgate has its own HTTP and WebSocket implementations (hyper, tungstenite)");
const NO_WATCH_LIST: Meaning = Ignored("--reload watches the files of the modules the app loaded");

/// Whether `flag` (`--port`, `--no-access-log`) is one of uvicorn's.
pub fn is_uvicorn_flag(flag: &str) -> bool {
    OPTIONS.iter().any(|o| {
        o.flag == flag || (o.arity == ON_OFF && flag.strip_prefix("--no-") == Some(&o.flag[2..]))
    })
}

/// `oxgate uvicorn --help`: uvicorn's options, as oxgate reads them.
pub fn help_text() -> String {
    let mut read = String::new();
    let mut ignored = String::new();
    for o in OPTIONS {
        let shown = match o.arity {
            Switch { no: true } => format!("{} / --no-{}", o.flag, &o.flag[2..]),
            Switch { no: false } => o.flag.to_string(),
            Value | Append => format!("{} VALUE", o.flag),
        };
        match o.meaning {
            Maps => read.push_str(&format!("  {shown}\n")),
            Ignored(why) => ignored.push_str(&format!("  {shown}: {why}\n")),
        }
    }
    format!(
        "Usage: oxgate uvicorn [OPTIONS] APP\n\n\
         uvicorn's command line (also `oxgate-uvicorn`), each option read as oxgate's\n\
         (--print-config shows how); oxgate's own long options may follow (oxgate --help).\n\n\
         Read:\n{read}\nAccepted with no effect (each named at start):\n{ignored}"
    )
}

/// Every option of uvicorn 0.54's command line, in its order.
static OPTIONS: &[UvicornOption] = &[
    u("--host", Value, Maps),
    u("--port", Value, Maps),
    u("--uds", Value, Maps),
    u("--fd", Value, Maps),
    u("--reload", ON, Maps),
    u("--reload-dir", Append, NO_WATCH_LIST),
    u("--reload-include", Append, NO_WATCH_LIST),
    u("--reload-exclude", Append, NO_WATCH_LIST),
    u("--reload-delay", Value, Maps),
    u("--workers", Value, Maps),
    u("--loop", Value, Maps),
    u("--http", Value, OWN_PROTOCOLS),
    u("--http2", ON, Maps),
    u("--ws", Value, Maps),
    u("--ws-max-size", Value, Maps),
    u(
        "--ws-max-queue",
        Value,
        Ignored("oxgate's WebSocket receive queue is its own"),
    ),
    u("--ws-ping-interval", Value, Maps),
    u("--ws-ping-timeout", Value, Maps),
    u("--ws-per-message-deflate", Value, Maps),
    u("--lifespan", Value, Maps),
    u("--interface", Value, Maps),
    u("--env-file", Value, Maps),
    u("--log-config", Value, Maps),
    u("--log-level", Value, Maps),
    u("--access-log", ON_OFF, Maps),
    u(
        "--use-colors",
        ON_OFF,
        Ignored("oxgate's log lines have no colours"),
    ),
    u("--proxy-headers", ON_OFF, Maps),
    u(
        "--server-header",
        ON_OFF,
        Ignored("oxgate adds no Server header of its own"),
    ),
    u(
        "--date-header",
        ON_OFF,
        Ignored("oxgate always sends a Date header"),
    ),
    u("--forwarded-allow-ips", Value, Maps),
    u("--root-path", Value, Maps),
    u("--limit-concurrency", Value, Maps),
    u("--backlog", Value, Maps),
    u("--limit-max-requests", Value, Maps),
    u("--limit-max-requests-jitter", Value, Maps),
    u("--timeout-keep-alive", Value, Maps),
    u("--timeout-graceful-shutdown", Value, Maps),
    u(
        "--timeout-worker-healthcheck",
        Value,
        Ignored("oxgate's master watches its workers through shared memory"),
    ),
    u("--ssl-keyfile", Value, Maps),
    u("--ssl-certfile", Value, Maps),
    u("--ssl-keyfile-password", Value, NO_TLS),
    u("--ssl-version", Value, NO_TLS),
    u("--ssl-cert-reqs", Value, Maps),
    u("--ssl-ca-certs", Value, Maps),
    u("--ssl-ciphers", Value, Maps),
    u("--header", Append, Maps),
    u("--version", ON, Maps),
    u("--app-dir", Value, Maps),
    u("--h11-max-incomplete-event-size", Value, Maps),
    u(
        "--reset-contextvars",
        ON,
        Ignored("oxgate runs each ASGI request in a task of its own"),
    ),
    u("--factory", ON, Maps),
];

/// What reading uvicorn's command line produced.
#[derive(Debug, Default)]
pub struct UvicornConfig {
    pub settings: Vec<Setting>,
    /// Options given that oxgate gives no meaning, with why.
    pub warnings: Vec<String>,
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// uvicorn's access line (its `uvicorn.access` logger at INFO, without a
/// terminal's colours), in `--log-format`'s variables.
const UVICORN_ACCESS_LINE: &str = r#"INFO:     %(remote_addr):%(var.REMOTE_PORT) - "%(method) %(uri) %(proto)" %(status) %(reason)"#;

/// The message alone of uvicorn's access line, as Gunicorn writes it with
/// uvicorn's worker: its access handlers' format is the bare message, with
/// no level and no reason phrase (AccessFormatter's).
pub(super) const UVICORN_ACCESS_MESSAGE: &str =
    r#"%(remote_addr):%(var.REMOTE_PORT) - "%(method) %(uri) %(proto)" %(status)"#;

/// Reads uvicorn's command line (without the program name); `env` gives
/// `WEB_CONCURRENCY` and `FORWARDED_ALLOW_IPS`, and `read_file` the
/// `--env-file`.
pub fn read(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Result<String, String>,
) -> Result<UvicornConfig, ConfigError> {
    use lexopt::Arg;
    let mut given: Vec<(&'static str, String)> = Vec::new();
    let mut own: Vec<Setting> = Vec::new();
    // uvicorn's UVICORN_<OPTION> variables, beneath the command line.
    for o in OPTIONS {
        // click names each after its parameter, which is the flag's name
        // but for the repeatable ones named in the plural.
        let param = match o.flag {
            "--header" => "headers",
            "--reload-dir" => "reload-dirs",
            "--reload-include" => "reload-includes",
            "--reload-exclude" => "reload-excludes",
            flag => &flag[2..],
        };
        let name = format!("UVICORN_{}", param.to_ascii_uppercase().replace('-', "_"));
        let Some(v) = env(&name).filter(|v| !v.is_empty()) else {
            continue;
        };
        match o.arity {
            Switch { .. } => {
                let on = super::value::parse_bool(&v).ok_or_else(|| {
                    ConfigError(format!("${name}: expected true or false, not {v:?}"))
                })?;
                given.push((o.flag, on.to_string()));
            }
            Value => given.push((o.flag, v)),
            Append => given.extend(v.split_whitespace().map(|w| (o.flag, w.to_string()))),
        }
    }
    let mut app = env("UVICORN_APP").filter(|v| !v.is_empty());
    let mut app_from_env = app.is_some();
    let mut parser = lexopt::Parser::from_args(args);
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return err(format!("uvicorn's command line: {e}")),
        };
        let name = match arg {
            Arg::Value(v) => {
                let v = v
                    .into_string()
                    .map_err(|_| ConfigError("the app argument is not UTF-8".into()))?;
                if app.replace(v).is_some() && !std::mem::take(&mut app_from_env) {
                    return err("uvicorn's command line takes one app (module:attribute)");
                }
                continue;
            }
            Arg::Short(c) => return err(format!("unknown option -{c} for uvicorn's command line")),
            Arg::Long(l) => format!("--{l}"),
        };
        // oxgate's own long options, where uvicorn has none of that name.
        if !OPTIONS.iter().any(|o| o.flag == name)
            && let Some(o) = defs::lookup(&name[2..])
        {
            let value =
                super::gunicorn::own_option_value(&mut parser, o, &Origin::CommandLine, &name)?;
            own.push(Setting {
                opt: o,
                value,
                origin: Origin::CommandLine,
            });
            continue;
        }
        let (option, on) = match OPTIONS.iter().find(|o| o.flag == name) {
            Some(o) => (o, true),
            None => match name.strip_prefix("--no-").and_then(|rest| {
                OPTIONS
                    .iter()
                    .find(|o| o.arity == ON_OFF && o.flag[2..] == *rest)
            }) {
                Some(o) => (o, false),
                None => {
                    return err(format!(
                        "unknown option {name} for uvicorn's command line (docs/migrating.md lists uvicorn's options and what oxgate makes of them)"
                    ));
                }
            },
        };
        let value = match option.arity {
            Switch { .. } => on.to_string(),
            Value | Append => parser
                .value()
                .map_err(|e| ConfigError(format!("{name}: {e}")))?
                .into_string()
                .map_err(|_| ConfigError(format!("the value of {name} is not UTF-8")))?,
        };
        given.push((option.flag, value));
    }
    let mut out = UvicornConfig::default();
    let quiet = own
        .iter()
        .any(|s| s.opt == &opt::PRINT_CONFIG || s.opt == &opt::CHECK_CONFIG);
    translate(&given, app, quiet, env, read_file, &mut out)?;
    out.settings.extend(own);
    Ok(out)
}

/// uvicorn's numeric options: whether each is a whole number (click's
/// INT) or any (FLOAT).
const NUMBERS: &[(&str, bool)] = &[
    ("--port", true),
    ("--workers", true),
    ("--backlog", true),
    ("--limit-concurrency", true),
    ("--limit-max-requests", true),
    ("--limit-max-requests-jitter", true),
    ("--timeout-keep-alive", true),
    ("--timeout-graceful-shutdown", true),
    ("--timeout-worker-healthcheck", true),
    ("--ws-max-size", true),
    ("--ws-max-queue", true),
    ("--h11-max-incomplete-event-size", true),
    ("--ws-ping-interval", false),
    ("--ws-ping-timeout", false),
    ("--reload-delay", false),
];

fn translate(
    given: &[(&'static str, String)],
    app: Option<String>,
    quiet: bool,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Result<String, String>,
    out: &mut UvicornConfig,
) -> Result<(), ConfigError> {
    let origin = Origin::CommandLine;
    let default = Origin::File {
        path: Rc::new("(uvicorn's default)".into()),
        line: 0,
    };
    let mut push = |key: Key, value: String, origin: &Origin| {
        out.settings.push(Setting {
            opt: key,
            value,
            origin: origin.clone(),
        })
    };
    let last = |flag: &str| {
        given
            .iter()
            .rev()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| v.clone())
    };

    if last("--version").as_deref() == Some("true") {
        push(&opt::VERSION, "true".into(), &origin);
        return Ok(());
    }
    // uvicorn (click) refuses a number it cannot read; so does oxgate,
    // rather than reading `--workers two` as 0 the way uWSGI's options are
    // read (a typo in a Procfile would change the server silently).
    for (flag, whole) in NUMBERS {
        if let Some(v) = last(flag) {
            let v = v.trim();
            let read = if *whole {
                v.parse::<i64>().is_ok()
            } else {
                v.parse::<f64>().is_ok_and(f64::is_finite)
            };
            if !read {
                return err(format!(
                    "{flag} {v:?}: expected {}",
                    if *whole { "a whole number" } else { "a number" }
                ));
            }
        }
    }
    // --env-file, read as python-dotenv's load_dotenv reads it for
    // uvicorn: the environment's own values win, and what the file sets
    // is seen by the settings uvicorn reads after it (WEB_CONCURRENCY).
    let file_env = match last("--env-file") {
        Some(file) => {
            let text =
                read_file(&file).map_err(|e| ConfigError(format!("--env-file {file}: {e}")))?;
            env_file(&text, env)
        }
        None => Vec::new(),
    };
    let env = |k: &str| {
        env(k).or_else(|| {
            file_env
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        })
    };
    // One master, as `uvicorn --workers N` runs; the app is imported in
    // each worker, as uvicorn's spawned workers do.
    push(&opt::MASTER, "true".into(), &default);
    push(&opt::LAZY_APPS, "true".into(), &default);
    // --limit-max-requests replaces a worker whatever its age.
    push(&opt::MIN_WORKER_LIFETIME, "0".into(), &default);

    let socket = if let Some(path) = last("--uds") {
        // uvicorn makes its socket srw-rw-rw- whatever the umask: nginx,
        // running as another user, connects.
        push(&opt::CHMOD_SOCKET, "666".into(), &origin);
        path
    } else if let Some(fd) = last("--fd") {
        // An inherited listening socket, taken over as it is.
        format!("fd://{fd}")
    } else {
        let host = last("--host").unwrap_or_else(|| "127.0.0.1".into());
        let port = last("--port").unwrap_or_else(|| "8000".into());
        // Said as uvicorn's option, not as the socket oxgate makes of it.
        if port.parse::<u16>().is_err() {
            return err(format!(
                "--port {port:?}: expected a port number from 0 to 65535"
            ));
        }
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    // --ssl-certfile and --ssl-keyfile make the socket an HTTPS one;
    // --ssl-ca-certs with --ssl-cert-reqs 1 (optional) or 2 (required)
    // asks for client certificates.
    match (last("--ssl-certfile"), last("--ssl-keyfile")) {
        (Some(cert), key) => {
            // uvicorn's default cipher string, "TLSv1", is OpenSSL's word
            // for every suite: rustls's defaults are that.
            let ciphers = last("--ssl-ciphers").filter(|c| c != "TLSv1");
            let ca = last("--ssl-ca-certs");
            let reqs = last("--ssl-cert-reqs");
            let fields = match HttpsSocket::fields_from_python_ssl(
                cert,
                key,
                ciphers,
                ca,
                reqs.as_deref(),
            ) {
                Ok(fields) => fields,
                Err(e) => return err(e),
            };
            push(&opt::HTTPS_SOCKET, format!("{socket},{fields}"), &origin);
        }
        (None, None) => push(&opt::HTTP_SOCKET, socket, &origin),
        (None, Some(_)) => {
            return err("--ssl-keyfile without --ssl-certfile: the certificate is missing");
        }
    }
    // uvicorn runs `workers or 1`: 0 is one process, not (as uWSGI's 0)
    // the default.
    let workers = last("--workers")
        .or_else(|| env("WEB_CONCURRENCY").filter(|v| !v.is_empty()))
        .filter(|v| v.trim() != "0")
        .unwrap_or_else(|| "1".into());
    push(&opt::PROCESSES, workers, &origin);

    // uvicorn's listen backlog, unless --backlog says otherwise (below).
    push(&opt::LISTEN, "2048".into(), &default);
    // uvicorn trusts proxy headers from 127.0.0.1 unless told otherwise.
    if last("--proxy-headers").as_deref() != Some("false") {
        push(&opt::PROXY_HEADERS, "true".into(), &default);
    } else {
        // Off, as uvicorn has it: X-Forwarded-Proto is not read either
        // (oxgate's default reads it from the trusted proxies).
        push(&opt::SECURE_SCHEME_HEADER, "none".into(), &origin);
    }
    // uvicorn's access line, on stdout as uvicorn writes it:
    // `INFO:     127.0.0.1:51234 - "GET / HTTP/1.1" 200 OK`.
    // Its path is the scope's, which starts with --root-path.
    let line = match last("--root-path") {
        Some(root) if !root.contains('%') => {
            UVICORN_ACCESS_LINE.replace("%(uri)", &format!("{root}%(uri)"))
        }
        _ => UVICORN_ACCESS_LINE.into(),
    };
    push(&opt::LOG_FORMAT, line, &default);
    // uvicorn's own loggers (uvicorn.error) for the app, unless
    // --log-config replaces them, as it does uvicorn's LOGGING_CONFIG.
    if last("--log-config").is_none() {
        push(&opt::APP_LOGGERS, "uvicorn".into(), &default);
    }
    // uvicorn closes open WebSockets (1012) as its stop begins.
    push(&opt::WS_CLOSE_AT_STOP, "true".into(), &default);
    // uvicorn removes its --uds socket file when it stops.
    push(&opt::VACUUM, "true".into(), &default);
    push(&opt::REQ_LOGGER, "stdout".into(), &default);
    if last("--access-log").as_deref() == Some("false") {
        push(&opt::DISABLE_LOGGING, "true".into(), &origin);
    }
    if let Some(reload) = last("--reload")
        && reload == "true"
    {
        let every = last("--reload-delay")
            .and_then(|d| d.parse::<f64>().ok())
            .map_or(1, |d| d.ceil().max(1.0) as u64);
        push(&opt::PY_AUTORELOAD, every.to_string(), &origin);
    }
    if let Some(level) = last("--log-level") {
        let known = ["critical", "error", "warning", "info", "debug", "trace"];
        let level = level.to_ascii_lowercase();
        if !known.contains(&level.as_str()) {
            return err(format!(
                "--log-level {level:?}: expected one of {}",
                known.join(", ")
            ));
        }
        // uvicorn logs each request at INFO ("uvicorn.access"): above it,
        // none is logged.
        if ["critical", "error", "warning"].contains(&level.as_str()) {
            push(&opt::DISABLE_LOGGING, "true".into(), &origin);
        }
        push(&opt::LOG_LEVEL, level, &origin);
    }
    match last("--interface").as_deref() {
        None | Some("auto") => {}
        Some("asgi3") => push(&opt::INTERFACE, "asgi".into(), &origin),
        Some("wsgi") => {
            push(&opt::INTERFACE, "wsgi".into(), &origin);
            // uvicorn runs a WSGI app on a pool of 10 threads (its WSGI
            // middleware's, and a2wsgi's): one thread served one request
            // at a time.
            push(&opt::THREADS, "10".into(), &default);
        }
        Some("asgi2") => push(&opt::INTERFACE, "asgi2".into(), &origin),
        Some(other) => {
            return err(format!(
                "--interface {other:?}: expected auto, asgi3, asgi2 or wsgi"
            ));
        }
    }
    let direct: &[(&str, Key)] = &[
        ("--loop", &opt::LOOP),
        ("--lifespan", &opt::LIFESPAN),
        ("--ws-max-size", &opt::WS_MAX_SIZE),
        ("--ws-ping-interval", &opt::WS_PING_INTERVAL),
        ("--ws-ping-timeout", &opt::WS_PING_TIMEOUT),
        ("--root-path", &opt::ROOT_PATH),
        ("--log-config", &opt::LOG_CONFIG),
        // auto, none, and uvicorn's implementations, which --ws reads as auto.
        ("--ws", &opt::WS),
        ("--limit-concurrency", &opt::LIMIT_CONCURRENCY),
        ("--backlog", &opt::LISTEN),
        ("--limit-max-requests", &opt::MAX_REQUESTS),
        ("--limit-max-requests-jitter", &opt::MAX_REQUESTS_JITTER),
    ];
    for (flag, key) in direct {
        if let Some(v) = last(flag) {
            push(key, v, &origin);
        }
    }
    // uvicorn gives requests the whole --timeout-graceful-shutdown, then
    // runs the lifespan shutdown. A worker's stop keeps the last part of
    // its mercy (a quarter, 5 s at most) for that shutdown: the mercy is
    // made that much longer, so that requests still have the whole time
    // (a request of 8.5 s was cut at 7.5 s of 10).
    if let Some(v) = last("--timeout-graceful-shutdown") {
        let mercy = match v.trim().parse::<u64>() {
            Ok(n) => mercy_for_requests(n).to_string(),
            Err(_) => v,
        };
        push(&opt::WORKER_RELOAD_MERCY, mercy.clone(), &origin);
        push(&opt::RELOAD_MERCY, mercy, &origin);
    }
    // A click boolean: a value it does not read stops the start (`""` is
    // false); read uWSGI's way, a typo turned compression on.
    if let Some(v) = last("--ws-per-message-deflate") {
        let on = match v.trim().to_ascii_lowercase().as_str() {
            "" => false,
            v => crate::config::parse_bool(v).ok_or_else(|| {
                ConfigError(format!(
                    "--ws-per-message-deflate {v:?}: not a valid boolean (true or false)"
                ))
            })?,
        };
        push(&opt::WS_PER_MESSAGE_DEFLATE, on.to_string(), &origin);
    }
    // uvicorn's list may hold literals besides addresses and networks (a
    // unix socket's path, which it matches against the client's name):
    // they never match a TCP client, and a unix socket's client is
    // trusted as it is, so they are passed over, with a warning.
    // uvicorn reads FORWARDED_ALLOW_IPS after --env-file, whose value it
    // takes then (the environment's wins, as for any setting).
    let allow = match last("--forwarded-allow-ips") {
        Some(v) => Some(("command line: --forwarded-allow-ips", v)),
        None => env("FORWARDED_ALLOW_IPS").map(|v| ("FORWARDED_ALLOW_IPS", v)),
    };
    if let Some((said, v)) = allow {
        let (ips, literals): (Vec<&str>, Vec<&str>) = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .partition(|s| crate::request::wrappers::Trusted::parse_list(s).is_ok());
        if !literals.is_empty() {
            out.warnings.push(format!(
                "{said}: {} passed over: not an IP address or network",
                literals.join(", ")
            ));
        }
        push(&opt::FORWARDED_ALLOW_IPS, ips.join(","), &origin);
    }
    // uvicorn limits a request head only by its size (h11's incomplete
    // event, which its httptools parser does not have either): no
    // Gunicorn limits on the line, a field or their count. A --buffer-size
    // given (as this is) raises the line's and a field's to it.
    match last("--h11-max-incomplete-event-size") {
        Some(v) => push(&opt::BUFFER_SIZE, v, &origin),
        None => push(&opt::BUFFER_SIZE, "65536".into(), &default),
    }
    push(&opt::LIMIT_REQUEST_FIELDS, "0".into(), &default);
    // uvicorn serves HTTP/1.1 alone unless --http2 is given: no h2 in
    // ALPN, no h2c (as Gunicorn mode follows Gunicorn's "h1" default).
    if last("--http2").as_deref() != Some("true") {
        push(&opt::HTTP2_OFF, "true".into(), &default);
    }
    // uvicorn closes a connection 5 s after its last response.
    match last("--timeout-keep-alive") {
        Some(v) => push(&opt::KEEPALIVE_TIMEOUT, v, &origin),
        None => push(&opt::KEEPALIVE_TIMEOUT, "5".into(), &default),
    }
    for (flag, v) in given {
        if *flag == "--header" {
            push(&opt::ADD_HEADER, v.clone(), &origin);
        }
    }
    if let Some(dir) = last("--app-dir")
        && !dir.is_empty()
    {
        push(&opt::PYTHONPATH, dir, &origin);
    }
    for (key, value) in &file_env {
        push(&opt::ENV, format!("{key}={value}"), &origin);
    }

    match app {
        Some(mut app) => {
            if last("--factory").as_deref() == Some("true") && !app.ends_with(')') {
                app.push_str("()");
            }
            push(&opt::MODULE, app, &origin);
        }
        None if quiet => {}
        None => {
            return err(
                "no application given: uvicorn's command line takes the app, like main:app",
            );
        }
    }

    let mut reported = Vec::new();
    for (flag, _) in given {
        if let Some(o) = OPTIONS.iter().find(|o| o.flag == *flag)
            && let Ignored(why) = o.meaning
            && !reported.contains(flag)
        {
            reported.push(*flag);
            out.warnings
                .push(format!("command line: {flag} has no effect: {why}"));
        }
    }
    Ok(())
}

/// The mercy whose part left to requests, once the ASGI shutdown's
/// reserve is taken (`asgi_shutdown_reserve`: a quarter, 5 s at most), is
/// `n` seconds.
fn mercy_for_requests(n: u64) -> u64 {
    if n >= 15 { n + 5 } else { (4 * n).div_ceil(3) }
}

/// A dotenv file's variables, as python-dotenv reads them: `export` and
/// comments allowed (`# ...` after an unquoted value too); single quotes
/// keep the text as it is; double quotes take escapes (`\n`) and may span
/// lines; `${NAME}` and `${NAME:-default}` are expanded, from the
/// environment first, then the file's earlier values.
/// A variable the environment has already is left out: the file does not
/// override it.
fn env_file(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = rest[..line_end].trim_start();
        if line.is_empty() || line.starts_with('#') {
            rest = rest.get(line_end + 1..).unwrap_or("");
            continue;
        }
        let start = rest.len() - rest[..].trim_start().len();
        let mut body = &rest[start..];
        if let Some(b) = body.strip_prefix("export ") {
            body = b.trim_start();
        }
        let key_end = body.find(['=', '\n']).unwrap_or(body.len());
        if !body[key_end..].starts_with('=') {
            // A name alone: no value (python-dotenv sets none).
            rest = body.get(key_end + 1..).unwrap_or("");
            continue;
        }
        let key = body[..key_end].trim().to_string();
        let after = body[key_end + 1..].trim_start_matches([' ', '\t']);
        let (value, consumed) = match after.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let (value, used) = quoted(&after[1..], q);
                // What follows the closing quote on its line (a comment).
                let tail = &after[1 + used..];
                let skip = tail.find('\n').map_or(tail.len(), |n| n + 1);
                (value, 1 + used + skip)
            }
            _ => {
                let end = after.find('\n').unwrap_or(after.len());
                let raw = &after[..end];
                // ` #` starts a comment; a # inside a word does not.
                let cut = raw
                    .char_indices()
                    .find(|&(i, c)| c == '#' && i > 0 && raw[..i].ends_with([' ', '\t']))
                    .map_or(raw.len(), |(i, _)| i);
                (raw[..cut].trim().to_string(), (end + 1).min(after.len()))
            }
        };
        // (python-dotenv expands in single quotes too.)
        let value = expand_variables(&value, env, &out);
        if !key.is_empty() {
            out.push((key, value));
        }
        let used = body.len() - after.len() + consumed;
        rest = &body[used.min(body.len())..];
    }
    out.retain(|(k, _)| env(k).is_none());
    out
}

/// A quoted value's text up to its closing `quote`, and how many bytes it
/// took with that quote. In double quotes, escapes are read (`\n`, `\t`,
/// `\"`, `\\`...); in single quotes, only `\'` and `\\`.
fn quoted(s: &str, quote: char) -> (String, usize) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return (value, i + 1);
        }
        if c == '\\' {
            match chars.next() {
                Some((_, n)) if quote == '"' => {
                    let decoded = match n {
                        'n' => Some('\n'),
                        't' => Some('\t'),
                        'r' => Some('\r'),
                        'a' => Some('\u{7}'),
                        'b' => Some('\u{8}'),
                        'f' => Some('\u{c}'),
                        'v' => Some('\u{b}'),
                        '"' | '\\' | '\'' => Some(n),
                        _ => None,
                    };
                    match decoded {
                        Some(c) => value.push(c),
                        None => {
                            value.push('\\');
                            value.push(n);
                        }
                    }
                }
                Some((_, n)) if n == '\'' || n == '\\' => value.push(n),
                Some((_, n)) => {
                    value.push('\\');
                    value.push(n);
                }
                None => value.push('\\'),
            }
            continue;
        }
        value.push(c);
    }
    // No closing quote: the rest, as it is.
    (value, s.len())
}

/// `${NAME}` and `${NAME:-default}` in `value`.
fn expand_variables(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
    earlier: &[(String, String)],
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        let Some(close) = rest[at..].find('}') else {
            break;
        };
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..at + close];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        let found = env(name).or_else(|| {
            earlier
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        });
        out.push_str(found.as_deref().unwrap_or(default));
        rest = &rest[at + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_args(args: &[&str]) -> Result<UvicornConfig, ConfigError> {
        let env = |k: &str| match k {
            "WEB_CONCURRENCY" => Some("2".to_string()),
            "UVICORN_ROOT_PATH" => Some("/from-env".to_string()),
            _ => None,
        };
        let file = |_: &str| Ok("# settings\nexport A=1\nB=\"two words\"\n\nC='x'\n".to_string());
        read(args.iter().map(OsString::from).collect(), &env, &file)
    }

    fn values(c: &UvicornConfig, key: Key) -> Vec<&str> {
        c.settings
            .iter()
            .filter(|s| s.opt == key)
            .map(|s| s.value.as_str())
            .collect()
    }

    #[test]
    fn ssl_files_make_the_socket_https() {
        let c = read_args(&[
            "main:app",
            "--port",
            "8443",
            "--ssl-certfile",
            "c.pem",
            "--ssl-keyfile",
            "k.pem",
            "--ssl-ca-certs",
            "ca.pem",
            "--ssl-cert-reqs",
            "2",
        ])
        .unwrap();
        assert!(values(&c, &opt::HTTP_SOCKET).is_empty());
        assert_eq!(
            values(&c, &opt::HTTPS_SOCKET),
            ["127.0.0.1:8443,c.pem,k.pem,,!ca.pem"]
        );
        assert!(read_args(&["main:app", "--ssl-keyfile", "k.pem"]).is_err());
        let c = read_args(&["main:app", "--ssl-certfile", "both.pem"]).unwrap();
        assert_eq!(
            values(&c, &opt::HTTPS_SOCKET),
            ["127.0.0.1:8000,both.pem,both.pem,,"]
        );
    }

    #[test]
    fn keep_alive_and_headers() {
        let c = read_args(&["main:app"]).unwrap();
        assert_eq!(values(&c, &opt::KEEPALIVE_TIMEOUT), ["5"]);
        let c = read_args(&[
            "main:app",
            "--timeout-keep-alive",
            "75",
            "--header",
            "X-Frame-Options:DENY",
            "--header",
            "X-Served-By: web1",
        ])
        .unwrap();
        assert_eq!(values(&c, &opt::KEEPALIVE_TIMEOUT), ["75"]);
        assert_eq!(
            values(&c, &opt::ADD_HEADER),
            ["X-Frame-Options:DENY", "X-Served-By: web1"]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn command_line_maps_onto_options() {
        let c = read_args(&[
            "main:app",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--workers",
            "4",
            "--no-access-log",
            "--root-path",
            "/api",
            "--env-file",
            ".env",
            "--limit-max-requests",
            "100",
            "--factory",
            "--ws-max-queue",
            "8",
        ])
        .unwrap();
        assert_eq!(values(&c, &opt::HTTP_SOCKET), ["0.0.0.0:9000"]);
        assert_eq!(values(&c, &opt::PROCESSES), ["4"]);
        assert_eq!(values(&c, &opt::DISABLE_LOGGING), ["true"]);
        // The command line over $UVICORN_ROOT_PATH.
        assert_eq!(values(&c, &opt::ROOT_PATH), ["/api"]);
        assert_eq!(values(&c, &opt::ENV), ["A=1", "B=two words", "C=x"]);
        assert_eq!(values(&c, &opt::MAX_REQUESTS), ["100"]);
        assert_eq!(values(&c, &opt::MODULE), ["main:app()"]);
        assert_eq!(values(&c, &opt::PROXY_HEADERS), ["true"]);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("--ws-max-queue has no effect"))
        );
    }

    #[test]
    fn a_repeatable_options_variable_is_named_as_click_names_it() {
        // click's UVICORN_HEADERS (the parameter, `headers`), not the
        // flag's UVICORN_HEADER.
        let env = |k: &str| (k == "UVICORN_HEADERS").then(|| "X-A:1".to_string());
        let file = |_: &str| Ok(String::new());
        let c = read(vec![OsString::from("main:app")], &env, &file).unwrap();
        assert_eq!(values(&c, &opt::ADD_HEADER), ["X-A:1"]);
    }

    #[test]
    fn defaults_and_errors() {
        let c = read_args(&["main:app", "--no-proxy-headers", "--uds", "/run/a.sock"]).unwrap();
        assert_eq!(values(&c, &opt::HTTP_SOCKET), ["/run/a.sock"]);
        assert_eq!(values(&c, &opt::CHMOD_SOCKET), ["666"]);
        assert_eq!(values(&c, &opt::PROCESSES), ["2"], "$WEB_CONCURRENCY");
        assert!(values(&c, &opt::PROXY_HEADERS).is_empty());
        // Nor X-Forwarded-Proto, which oxgate's own default reads.
        assert_eq!(values(&c, &opt::SECURE_SCHEME_HEADER), ["none"]);
        assert_eq!(
            values(&c, &opt::ROOT_PATH),
            ["/from-env"],
            "$UVICORN_ROOT_PATH"
        );
        let c = read_args(&["main:app", "--host", "::1"]).unwrap();
        assert_eq!(values(&c, &opt::HTTP_SOCKET), ["[::1]:8000"]);
        assert!(read_args(&["main:app", "--bogus"]).is_err());
        let c = read_args(&["main:app", "--interface", "asgi2"]).unwrap();
        assert_eq!(values(&c, &opt::INTERFACE), ["asgi2"]);
        assert!(read_args(&["main:app", "--interface", "asgi4"]).is_err());
        assert!(read_args(&[]).is_err());
        let c = read_args(&["main:app", "--fd", "3"]).unwrap();
        assert_eq!(values(&c, &opt::HTTP_SOCKET), ["fd://3"]);
        let c = read_args(&["main:app", "--fd", "3", "--uds", "/run/a.sock"]).unwrap();
        assert_eq!(
            values(&c, &opt::HTTP_SOCKET),
            ["/run/a.sock"],
            "--uds first"
        );
    }

    #[test]
    fn every_option_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for o in OPTIONS {
            assert!(seen.insert(o.flag), "{}", o.flag);
        }
    }

    #[test]
    fn the_requests_keep_the_whole_graceful_shutdown_timeout() {
        for n in 0..100u64 {
            let mercy = std::time::Duration::from_secs(mercy_for_requests(n));
            let requests = (mercy - crate::config::asgi_shutdown_reserve(mercy)).as_secs_f64();
            assert!(requests >= n as f64, "{n}");
            assert!(requests < n as f64 + 1.0, "{n}: no more than needed");
        }
    }

    #[test]
    fn env_file_as_python_dotenv() {
        let none = |_: &str| None;
        let got = env_file(
            "# c\nexport A=1 # note\nB='x\\'y'\nC=\"l1\\nl2\nl3\"\nD=${A}-${Z:-z}\nE\nF=a#b\n",
            &none,
        );
        let want = [
            ("A", "1"),
            ("B", "x'y"),
            ("C", "l1\nl2\nl3"),
            ("D", "1-z"),
            ("F", "a#b"),
        ];
        assert_eq!(
            got,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
        let preset = |k: &str| (k == "A").then(|| "env".to_string());
        assert_eq!(
            env_file("A=file\nB=${A}\n", &preset),
            [("B".to_string(), "env".to_string())]
        );
    }

    proptest::proptest! {
        #[test]
        fn env_file_takes_any_text(text in "(?s)[A-Za-z_=#'\"\\\\${}:\\- \\tÀé\\n]{0,80}") {
            let _ = env_file(&text, &|_| None);
        }
    }
}
