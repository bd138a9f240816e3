//! Gunicorn's way of being configured, read into oxgate's options: its
//! command line (`oxgate gunicorn ...`), `GUNICORN_CMD_ARGS`, and its Python
//! config file (`-c gunicorn.conf.py`, `python:module`, or
//! `./gunicorn.conf.py`), with Gunicorn's precedence: the command line over
//! the variable over the file, and a list given anew replacing the old one.
//!
//! Each Gunicorn setting is in [`SETTINGS`] once, with its flags and what
//! it becomes in oxgate; a setting oxgate gives no meaning is reported once,
//! with the reason. The file itself runs in the interpreter that will load
//! the app (a [`PythonConfigReader`] does that; this module touches no
//! Python), so its hooks can be called later.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::rc::Rc;

use super::defs::{self, Key, opt};
use super::sources::Origin;
// Through the module's root, as `sources` does: `parse` reads this module.
use crate::config::{ConfigError, HttpsSocket, Setting};

/// A top-level name of a config file, as the interpreter reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    /// A list or tuple, each item as `str()` gives it.
    List(Vec<String>),
    /// A function or other callable: a server hook.
    Callable,
    /// Anything else, by its type name.
    Other(String),
}

/// Runs a config file (a path, or `python:module.name`) in a fresh
/// namespace and reports its top-level names.
/// `home` is the virtualenv the interpreter is to start in, if it must start.
pub type PythonConfigReader<'a> =
    &'a dyn Fn(&str, Option<&std::path::Path>) -> Result<Vec<(String, PyValue)>, String>;

/// How a setting is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// A flag with no value (argparse's store_true).
    Switch,
    /// One value; the last one given counts.
    Value,
    /// Repeatable; each given list replaces the lists of weaker sources.
    Append,
    /// Only in a config file.
    FileOnly,
    /// argparse's `nargs="?"`: one of these words may follow, else the
    /// flag alone means the first (`--proxy-protocol` is `auto`).
    OptionalWord(&'static [&'static str]),
}

/// What oxgate makes of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// Translated by [`translate`].
    Maps,
    /// A server hook (a function in the config file).
    Hook,
    /// Accepted with no effect; the reason is shown once at start.
    Ignored(&'static str),
    /// Applied by the config file's interpreter itself (logconfig_dict):
    /// any value is taken here.
    InPython,
}

struct GunicornSetting {
    name: &'static str,
    flags: &'static [&'static str],
    arity: Arity,
    meaning: Meaning,
}

const fn g(
    name: &'static str,
    flags: &'static [&'static str],
    arity: Arity,
    meaning: Meaning,
) -> GunicornSetting {
    GunicornSetting {
        name,
        flags,
        arity,
        meaning,
    }
}

use Arity::{Append, FileOnly, OptionalWord, Switch, Value};
use Meaning::{Hook, Ignored, InPython, Maps};

const NO_TLS: Meaning =
    Ignored("oxgate's TLS is rustls's, set by certfile, keyfile, ca_certs, cert_reqs and ciphers");
const NO_PARSER_CHOICE: Meaning =
    Ignored("oxgate's HTTP parser is strict and has no switches to loosen it (docs/hardening.md)");
const NO_DIRTY: Meaning = Ignored("oxgate has no dirty-worker arbiter");
const NO_HTTP2: Meaning = Ignored("oxgate's HTTP/2 windows and frame sizes are hyper's defaults");
/// Gunicorn's `secure_scheme_headers` default.
const DEFAULT_SECURE_SCHEME_HEADERS: &[&str] = &[
    "X-FORWARDED-PROTOCOL=ssl",
    "X-FORWARDED-PROTO=https",
    "X-FORWARDED-SSL=on",
];
const NO_LOG_CONFIG: Meaning =
    Ignored("oxgate writes its own log lines; logging configs and logger classes are not read");

/// Every setting Gunicorn has, by its config file's name.
pub fn setting_names() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().map(|s| s.name)
}

/// `oxgate gunicorn --help`: Gunicorn's settings, as oxgate reads them.
pub fn help_text() -> String {
    let mut read = String::new();
    let mut hooks = Vec::new();
    let mut ignored = String::new();
    for s in SETTINGS {
        let flags = if s.flags.is_empty() {
            "(config file only)".to_string()
        } else {
            s.flags.join(", ")
        };
        let value = match s.arity {
            Arity::Value | Arity::Append => " VALUE",
            Arity::OptionalWord(_) => " [VALUE]",
            Arity::Switch | Arity::FileOnly => "",
        };
        match s.meaning {
            Meaning::Maps | Meaning::InPython => {
                read.push_str(&format!("  {}: {flags}{value}\n", s.name))
            }
            Meaning::Hook => hooks.push(s.name),
            Meaning::Ignored(why) => ignored.push_str(&format!("  {}: {why}\n", s.name)),
        }
    }
    format!(
        "Usage: oxgate gunicorn [OPTIONS] [APP_MODULE]\n\n\
         Gunicorn's command line and config file (-c, ./gunicorn.conf.py, GUNICORN_CMD_ARGS;\n\
         also `oxgate-gunicorn`), each setting read as oxgate's (--print-config shows how).\n\n\
         Read (setting: flags):\n{read}\nServer hooks, called as Gunicorn calls them:\n  {}\n\n\
         Accepted with no effect (each named at start):\n{ignored}",
        hooks.join(", ")
    )
}

/// Every setting of Gunicorn's settings reference (27.0), in its order.
static SETTINGS: &[GunicornSetting] = &[
    g("config", &["-c", "--config"], Value, Maps),
    g("wsgi_app", &[], FileOnly, Maps),
    g(
        "control_socket",
        &["--control-socket"],
        Value,
        Ignored("oxgate is controlled by signals, --stats and `oxgate top`"),
    ),
    g(
        "control_socket_mode",
        &["--control-socket-mode"],
        Value,
        Ignored("oxgate has no control socket"),
    ),
    g(
        "control_socket_disable",
        &["--no-control-socket"],
        Switch,
        Ignored("oxgate has no control socket"),
    ),
    g("reload", &["--reload"], Switch, Maps),
    g(
        "reload_engine",
        &["--reload-engine"],
        Value,
        Ignored("oxgate polls the loaded modules' files"),
    ),
    g("reload_extra_files", &["--reload-extra-file"], Append, Maps),
    g(
        "spew",
        &["--spew"],
        Switch,
        Ignored("oxgate has no line tracer"),
    ),
    g("check_config", &["--check-config"], Switch, Maps),
    g("print_config", &["--print-config"], Switch, Maps),
    g("on_dirty_starting", &[], FileOnly, NO_DIRTY),
    g("dirty_post_fork", &[], FileOnly, NO_DIRTY),
    g("dirty_worker_init", &[], FileOnly, NO_DIRTY),
    g("dirty_worker_exit", &[], FileOnly, NO_DIRTY),
    g("dirty_apps", &["--dirty-app"], Append, NO_DIRTY),
    g("dirty_workers", &["--dirty-workers"], Value, NO_DIRTY),
    g("dirty_timeout", &["--dirty-timeout"], Value, NO_DIRTY),
    g("dirty_threads", &["--dirty-threads"], Value, NO_DIRTY),
    g(
        "dirty_graceful_timeout",
        &["--dirty-graceful-timeout"],
        Value,
        NO_DIRTY,
    ),
    g("http_protocols", &["--http-protocols"], Value, Maps),
    g(
        "http2_cleartext",
        &["--http2-cleartext"],
        // off, prior-knowledge, upgrade or both, in Gunicorn 27.
        Value,
        Ignored(
            "with h2 in http_protocols, h2c with prior knowledge is served on every HTTP socket",
        ),
    ),
    g(
        "http2_max_concurrent_streams",
        &["--http2-max-concurrent-streams"],
        Value,
        Maps,
    ),
    g(
        "http2_initial_window_size",
        &["--http2-initial-window-size"],
        Value,
        NO_HTTP2,
    ),
    g(
        "http2_max_frame_size",
        &["--http2-max-frame-size"],
        Value,
        NO_HTTP2,
    ),
    g(
        "http2_max_header_list_size",
        &["--http2-max-header-list-size"],
        Value,
        NO_HTTP2,
    ),
    g("accesslog", &["--access-logfile"], Value, Maps),
    g(
        "disable_redirect_access_to_syslog",
        &["--disable-redirect-access-to-syslog"],
        Switch,
        Maps,
    ),
    g("access_log_format", &["--access-logformat"], Value, Maps),
    g("errorlog", &["--error-logfile", "--log-file"], Value, Maps),
    g("loglevel", &["--log-level"], Value, Maps),
    g(
        "capture_output",
        &["--capture-output"],
        Switch,
        Ignored(
            "oxgate always sends the app's stderr, and its stdout unless the access log is there, to its log",
        ),
    ),
    g("logger_class", &["--logger-class"], Value, NO_LOG_CONFIG),
    // A fileConfig INI, applied before the app loads (--log-config).
    g("logconfig", &["--log-config"], Value, Maps),
    // Applied by the config file's interpreter, before the app loads.
    g("logconfig_dict", &[], FileOnly, InPython),
    // A dictConfig in JSON, applied before the app loads (--log-config).
    g("logconfig_json", &["--log-config-json"], Value, Maps),
    g("syslog_addr", &["--log-syslog-to"], Value, Maps),
    g("syslog", &["--log-syslog"], Switch, Maps),
    g("syslog_prefix", &["--log-syslog-prefix"], Value, Maps),
    g("syslog_facility", &["--log-syslog-facility"], Value, Maps),
    g(
        "enable_stdio_inheritance",
        &["-R", "--enable-stdio-inheritance"],
        Switch,
        Ignored("oxgate's workers always inherit stdout and stderr, unbuffered"),
    ),
    g("statsd_host", &["--statsd-host"], Value, Maps),
    g("dogstatsd_tags", &["--dogstatsd-tags"], Value, Maps),
    g("statsd_prefix", &["--statsd-prefix"], Value, Maps),
    g(
        "enable_backlog_metric",
        &["--enable-backlog-metric"],
        Switch,
        Ignored("oxgate's --metrics always has the listen queue"),
    ),
    g(
        "proc_name",
        &["-n", "--name"],
        Value,
        Ignored(
            "oxgate does not set process titles (with syslog, it names the tag, as in Gunicorn)",
        ),
    ),
    g(
        "default_proc_name",
        &[],
        FileOnly,
        Ignored("oxgate does not set process titles"),
    ),
    g("keyfile", &["--keyfile"], Value, Maps),
    g("certfile", &["--certfile"], Value, Maps),
    g("ssl_version", &["--ssl-version"], Value, NO_TLS),
    g("cert_reqs", &["--cert-reqs"], Value, Maps),
    g("ca_certs", &["--ca-certs"], Value, Maps),
    g(
        "suppress_ragged_eofs",
        &["--suppress-ragged-eofs"],
        Switch,
        NO_TLS,
    ),
    g(
        "do_handshake_on_connect",
        &["--do-handshake-on-connect"],
        Switch,
        NO_TLS,
    ),
    g("ciphers", &["--ciphers"], Value, Maps),
    g("limit_request_line", &["--limit-request-line"], Value, Maps),
    g(
        "limit_request_fields",
        &["--limit-request-fields"],
        Value,
        Maps,
    ),
    g(
        "limit_request_field_size",
        &["--limit-request-field_size"],
        Value,
        Maps,
    ),
    g("on_starting", &[], FileOnly, Hook),
    g("on_reload", &[], FileOnly, Hook),
    g("when_ready", &[], FileOnly, Hook),
    g("pre_fork", &[], FileOnly, Hook),
    g("post_fork", &[], FileOnly, Hook),
    g("post_worker_init", &[], FileOnly, Hook),
    g("worker_int", &[], FileOnly, Hook),
    g("worker_abort", &[], FileOnly, Hook),
    g("pre_exec", &[], FileOnly, Hook),
    g("pre_request", &[], FileOnly, Hook),
    g("post_request", &[], FileOnly, Hook),
    g("child_exit", &[], FileOnly, Hook),
    g("worker_exit", &[], FileOnly, Hook),
    g("nworkers_changed", &[], FileOnly, Hook),
    g("on_exit", &[], FileOnly, Hook),
    g("ssl_context", &[], FileOnly, NO_TLS),
    g("preload_app", &["--preload"], Switch, Maps),
    g(
        "sendfile",
        &["--no-sendfile"],
        Switch,
        Ignored("oxgate decides on sendfile itself"),
    ),
    g("reuse_port", &["--reuse-port"], Switch, Maps),
    g("chdir", &["--chdir"], Value, Maps),
    g("daemon", &["-D", "--daemon"], Switch, Maps),
    g("raw_env", &["-e", "--env"], Append, Maps),
    g("pidfile", &["-p", "--pid"], Value, Maps),
    g(
        "worker_tmp_dir",
        &["--worker-tmp-dir"],
        Value,
        Ignored("oxgate's workers report to the master through shared memory, not files"),
    ),
    g("user", &["-u", "--user"], Value, Maps),
    g("group", &["-g", "--group"], Value, Maps),
    g("umask", &["-m", "--umask"], Value, Maps),
    g("initgroups", &["--initgroups"], Switch, Maps),
    g(
        "tmp_upload_dir",
        &[],
        FileOnly,
        Ignored("oxgate buffers request bodies in memory up to --post-buffering"),
    ),
    g("secure_scheme_headers", &[], FileOnly, Maps),
    g(
        "forwarded_allow_ips",
        &["--forwarded-allow-ips"],
        Value,
        Maps,
    ),
    g("pythonpath", &["--pythonpath"], Value, Maps),
    g(
        "paste",
        &["--paste", "--paster"],
        Value,
        Ignored("oxgate does not read PasteDeploy files: name the app as module:callable"),
    ),
    g(
        "proxy_protocol",
        &["--proxy-protocol"],
        OptionalWord(&["auto", "v1", "v2", "off", "true", "false", "none"]),
        Maps,
    ),
    g("proxy_allow_ips", &["--proxy-allow-from"], Value, Maps),
    g("protocol", &["--protocol"], Value, Maps),
    g(
        "uwsgi_allow_ips",
        &["--uwsgi-allow-from"],
        Value,
        Ignored("oxgate takes uwsgi packets from any peer that can reach the socket"),
    ),
    g(
        "raw_paste_global_conf",
        &["--paste-global"],
        Append,
        Ignored("oxgate does not read PasteDeploy files"),
    ),
    g(
        "permit_obsolete_folding",
        &["--permit-obsolete-folding"],
        Switch,
        NO_PARSER_CHOICE,
    ),
    g(
        "strip_header_spaces",
        &["--strip-header-spaces"],
        Switch,
        NO_PARSER_CHOICE,
    ),
    g(
        "permit_unconventional_http_method",
        &["--permit-unconventional-http-method"],
        Switch,
        NO_PARSER_CHOICE,
    ),
    g(
        "permit_unconventional_http_version",
        &["--permit-unconventional-http-version"],
        Switch,
        NO_PARSER_CHOICE,
    ),
    g(
        "casefold_http_method",
        &["--casefold-http-method"],
        Switch,
        NO_PARSER_CHOICE,
    ),
    g("forwarder_headers", &["--forwarder-headers"], Value, Maps),
    g(
        "header_map",
        &["--header-map"],
        Value,
        Ignored("oxgate drops headers whose names hold an underscore, as Gunicorn's default does"),
    ),
    g("root_path", &["--root-path"], Value, Maps),
    g(
        "websocket_max_message_size",
        &["--websocket-max-message-size"],
        Value,
        Maps,
    ),
    g("bind", &["-b", "--bind"], Append, Maps),
    g("backlog", &["--backlog"], Value, Maps),
    g("workers", &["-w", "--workers"], Value, Maps),
    g("worker_class", &["-k", "--worker-class"], Value, Maps),
    g("threads", &["--threads"], Value, Maps),
    g(
        "worker_connections",
        &["--worker-connections"],
        Value,
        Ignored(
            "it limits Gunicorn's gevent and eventlet workers; with one, it is the threads a worker runs (at most 64)",
        ),
    ),
    g("max_requests", &["--max-requests"], Value, Maps),
    g(
        "max_requests_jitter",
        &["--max-requests-jitter"],
        Value,
        Maps,
    ),
    g("timeout", &["-t", "--timeout"], Value, Maps),
    g("graceful_timeout", &["--graceful-timeout"], Value, Maps),
    g("keepalive", &["--keep-alive"], Value, Maps),
    g("asgi_loop", &["--asgi-loop"], Value, Maps),
    g("asgi_lifespan", &["--asgi-lifespan"], Value, Maps),
    g(
        "asgi_disconnect_grace_period",
        &["--asgi-disconnect-grace-period"],
        Value,
        Ignored("oxgate tells an ASGI app of a disconnect at once"),
    ),
    g(
        "http_parser",
        &["--http-parser"],
        Value,
        Ignored("oxgate has one HTTP parser (hyper's)"),
    ),
];

/// Gunicorn's default access log format.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// Whether `flag` (`--log-level`, `-k`) is one of Gunicorn's command-line
/// options: oxgate's own command line says how to have it read so.
pub(super) fn is_gunicorn_flag(flag: &str) -> bool {
    SETTINGS.iter().any(|s| s.flags.contains(&flag))
}

fn setting(name: &str) -> Option<&'static GunicornSetting> {
    SETTINGS.iter().find(|s| s.name == name)
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Where the values of a setting came from.
#[derive(Debug, Clone)]
struct Given {
    values: Vec<String>,
    origin: Origin,
}

/// What one source (the file, the variable, the command line) said.
#[derive(Debug, Default)]
struct SourceValues {
    settings: BTreeMap<&'static str, Given>,
    /// Long options of oxgate's own that Gunicorn does not have
    /// (`--home`, `--stats`), kept as oxgate settings.
    oxgate: Vec<(Key, String)>,
    app: Option<String>,
    hooks: Vec<&'static str>,
}

/// The command line's long option for `flag`: exact, or (as argparse
/// allows) a prefix of exactly one.
fn lookup_flag(flag: &str) -> Result<Option<&'static GunicornSetting>, String> {
    if let Some(s) = SETTINGS.iter().find(|s| s.flags.contains(&flag)) {
        return Ok(Some(s));
    }
    if !flag.starts_with("--") || flag.len() < 4 {
        return Ok(None);
    }
    let matches: Vec<_> = SETTINGS
        .iter()
        .flat_map(|s| s.flags.iter().map(move |f| (s, *f)))
        .filter(|(_, f)| f.starts_with(flag))
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [(s, _)] => Ok(Some(s)),
        many => Err(format!(
            "ambiguous option {flag}: could match {}",
            many.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Reads a Gunicorn command line (or `GUNICORN_CMD_ARGS`, split as a shell
/// would) into settings.
fn parse_command_line(args: Vec<OsString>, origin: &Origin) -> Result<SourceValues, ConfigError> {
    use lexopt::Arg;
    let mut out = SourceValues::default();
    let mut parser = lexopt::Parser::from_args(args);
    let shown = |arg: &Arg<'_>| match arg {
        Arg::Short(c) => format!("-{c}"),
        Arg::Long(l) => format!("--{l}"),
        Arg::Value(v) => v.to_string_lossy().into_owned(),
    };
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return err(format!("{origin}: {e}")),
        };
        let flag = shown(&arg);
        if let Arg::Value(v) = arg {
            let v = v
                .into_string()
                .map_err(|_| ConfigError(format!("{origin}: the app argument is not UTF-8")))?;
            if out.app.replace(v).is_some() {
                return err(format!(
                    "{origin}: Gunicorn's command line takes one app (module:callable)"
                ));
            }
            continue;
        }
        let exact = SETTINGS.iter().find(|s| s.flags.contains(&flag.as_str()));
        let oxgate_own = match arg {
            Arg::Long(name) if exact.is_none() => defs::lookup(name),
            // Gunicorn's -v is its --version (not a setting).
            Arg::Short('v') => defs::lookup("version"),
            _ => None,
        };
        let found = match (exact, oxgate_own) {
            (Some(s), _) => Some(s),
            (None, Some(_)) => None,
            (None, None) => {
                lookup_flag(&flag).map_err(|e| ConfigError(format!("{origin}: {e}")))?
            }
        };
        let Some(s) = found else {
            // oxgate's own options, where Gunicorn has none of that name.
            if let Some(o) = oxgate_own {
                out.oxgate
                    .push((o, own_option_value(&mut parser, o, origin, &flag)?));
                continue;
            }
            return err(format!(
                "{origin}: unknown option {flag}: it is neither Gunicorn's nor oxgate's (docs/migrating.md lists Gunicorn's settings and what oxgate makes of them)"
            ));
        };
        let value = match s.arity {
            Arity::Switch => "true".to_string(),
            Arity::OptionalWord(words) => match parser.optional_value() {
                Some(v) => os_string(v, origin, &flag)?,
                None => {
                    // A known word as the next argument is the value (an
                    // app, another option, is not).
                    let mut raw = parser
                        .raw_args()
                        .map_err(|e| ConfigError(format!("{origin}: {flag}: {e}")))?;
                    match raw
                        .peek()
                        .and_then(|n| n.to_str())
                        .filter(|n| words.iter().any(|w| w.eq_ignore_ascii_case(n)))
                    {
                        Some(word) => {
                            let word = word.to_string();
                            raw.next();
                            word
                        }
                        None => words[0].to_string(),
                    }
                }
            },
            _ => {
                let v = parser
                    .value()
                    .map_err(|e| ConfigError(format!("{origin}: {flag}: {e}")))?;
                os_string(v, origin, &flag)?
            }
        };
        // `--no-sendfile` stores false, as in Gunicorn.
        let value = if s.name == "sendfile" {
            "false".into()
        } else {
            value
        };
        let entry = out.settings.entry(s.name).or_insert_with(|| Given {
            values: Vec::new(),
            origin: origin.clone(),
        });
        if s.arity == Arity::Append {
            entry.values.push(value);
        } else {
            entry.values = vec![value];
        }
    }
    Ok(out)
}

/// The value of one of oxgate's own options on another command's line:
/// a switch may stand alone (`--stats-http`), anything else takes one.
pub(super) fn own_option_value(
    parser: &mut lexopt::Parser,
    o: Key,
    origin: &Origin,
    flag: &str,
) -> Result<String, ConfigError> {
    if o.kind == defs::Kind::Flag {
        return match parser.optional_value() {
            Some(v) => os_string(v, origin, flag),
            None => Ok("true".into()),
        };
    }
    let v = parser
        .value()
        .map_err(|e| ConfigError(format!("{origin}: {flag}: {e}")))?;
    os_string(v, origin, flag)
}

fn os_string(v: OsString, origin: &Origin, flag: &str) -> Result<String, ConfigError> {
    v.into_string()
        .map_err(|_| ConfigError(format!("{origin}: the value of {flag} is not UTF-8")))
}

/// The threads a worker is given for Gunicorn's async worker classes
/// (gevent, eventlet), at most, when `threads` is not set.
const ASYNC_CLASS_THREADS: u64 = 64;

/// The settings Gunicorn reads as whole numbers (`validate_pos_int`).
const WHOLE_NUMBERS: [&str; 11] = [
    "workers",
    "threads",
    "timeout",
    "graceful_timeout",
    "max_requests",
    "max_requests_jitter",
    "backlog",
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "websocket_max_message_size",
];

/// Settings Gunicorn reads as text (`validate_string`), which refuses a
/// True or False.
const TEXTS: [&str; 18] = [
    "accesslog",
    "access_log_format",
    "errorlog",
    "loglevel",
    "logconfig",
    "logconfig_json",
    "syslog_addr",
    "syslog_prefix",
    "statsd_host",
    "statsd_prefix",
    "keyfile",
    "certfile",
    "ca_certs",
    "ciphers",
    "chdir",
    "pidfile",
    "root_path",
    "worker_class",
];

/// Reads what a config file's namespace holds into settings. Names that
/// are not Gunicorn settings (imports, helpers) are passed over, as
/// Gunicorn does.
fn from_file(names: Vec<(String, PyValue)>, origin: &Origin) -> Result<SourceValues, ConfigError> {
    let mut out = SourceValues::default();
    for (name, value) in names {
        let Some(s) = setting(&name) else { continue };
        if s.meaning == Meaning::Hook {
            match value {
                PyValue::Callable => out.hooks.push(s.name),
                PyValue::None => {}
                other => {
                    return err(format!(
                        "{origin}: {name} must be a function (a server hook), not {other:?}"
                    ));
                }
            }
            continue;
        }
        let values = match value {
            // Gunicorn refuses what its validator cannot read: None for a
            // number (`timeout = None`), True or False for a text
            // (`accesslog = True`, which wrote a file named "true").
            PyValue::None if WHOLE_NUMBERS.contains(&s.name) || s.name == "keepalive" => {
                return err(format!("{origin}: Invalid value for {name}: None"));
            }
            PyValue::Int(i) if TEXTS.contains(&s.name) => {
                return err(format!(
                    "{origin}: Invalid value for {name}: Not a string: {i}"
                ));
            }
            PyValue::Bool(b) if TEXTS.contains(&s.name) => {
                return err(format!(
                    "{origin}: Invalid value for {name}: {}",
                    if b { "True" } else { "False" }
                ));
            }
            PyValue::None => continue,
            PyValue::Bool(b) => vec![b.to_string()],
            // umask is written in octal (0o022) in files, read as a number.
            PyValue::Int(i) if s.name == "umask" => vec![format!("0o{i:o}")],
            PyValue::Int(i) => vec![i.to_string()],
            PyValue::Str(v) if s.arity == Arity::Append => vec![v],
            PyValue::Str(v) => vec![v],
            PyValue::List(items) => items,
            // ssl_context's factory: a setting oxgate passes over, named
            // at start with why, as any other it has no meaning for.
            PyValue::Callable if matches!(s.meaning, Meaning::Ignored(_)) => {
                vec!["<function>".into()]
            }
            PyValue::Callable => {
                return err(format!(
                    "{origin}: {name} is a setting, not a server hook; give it a value"
                ));
            }
            PyValue::Other(t) => {
                // Dicts reach ignored settings, and those the interpreter
                // applies (logconfig_dict); anything else is a mistake.
                if matches!(s.meaning, Meaning::Ignored(_) | Meaning::InPython) {
                    vec![format!("<{t}>")]
                } else {
                    return err(format!("{origin}: {name}: a {t} is not a value it takes"));
                }
            }
        };
        if s.name == "wsgi_app" {
            out.app = values.into_iter().next();
            continue;
        }
        out.settings.insert(
            s.name,
            Given {
                values,
                origin: origin.clone(),
            },
        );
    }
    Ok(out)
}

/// What reading Gunicorn's sources produced.
#[derive(Debug, Default)]
pub struct GunicornConfig {
    pub settings: Vec<Setting>,
    /// Settings given that oxgate gives no meaning, with why: once at start.
    pub warnings: Vec<String>,
    /// The server hooks the config file defines.
    pub hooks: Vec<&'static str>,
    /// Where the config file came from, if one was read.
    pub file: Option<String>,
    /// The settings the command line or `GUNICORN_CMD_ARGS` gave, typed
    /// as Gunicorn types them: what a hook's `server.cfg` answers over
    /// the file's own values.
    pub given: Vec<(String, PyValue)>,
}

/// Where the Gunicorn dialect is chosen, for `--print-config`.
pub fn describe(cfg: &GunicornConfig) -> String {
    match &cfg.file {
        Some(f) => format!("Gunicorn's settings, with config file {f}"),
        None => "Gunicorn's settings, with no config file".into(),
    }
}

/// Reads Gunicorn's sources: `args` is its command line (without the
/// program name), `cmd_args` the value of `GUNICORN_CMD_ARGS`, and
/// `env` the process environment's `PORT` and `WEB_CONCURRENCY`.
pub fn read(
    args: Vec<OsString>,
    cmd_args: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    run_file: PythonConfigReader<'_>,
) -> Result<GunicornConfig, ConfigError> {
    let cli = parse_command_line(args, &Origin::CommandLine)?;
    let from_env = match cmd_args {
        Some(text) => {
            let words = shlex::split(text)
                .ok_or_else(|| ConfigError("GUNICORN_CMD_ARGS: unbalanced quotes".to_string()))?;
            parse_command_line(
                words.into_iter().map(OsString::from).collect(),
                &Origin::Env("GUNICORN_CMD_ARGS".into()),
            )?
        }
        None => SourceValues::default(),
    };
    // `gunicorn -v` answers before reading any file or wanting an app.
    if let Some((key, value)) = cli
        .oxgate
        .iter()
        .chain(&from_env.oxgate)
        .find(|(k, v)| *k == &opt::VERSION && v.as_str() == "true")
    {
        return Ok(GunicornConfig {
            settings: vec![Setting {
                opt: key,
                value: value.clone(),
                origin: Origin::CommandLine,
            }],
            ..GunicornConfig::default()
        });
    }
    let named = cli
        .settings
        .get("config")
        .or(from_env.settings.get("config"))
        .and_then(|g| g.values.last().cloned());
    let file_name = match named {
        Some(f) => Some(f),
        None if std::path::Path::new("gunicorn.conf.py").is_file() => {
            Some("gunicorn.conf.py".to_string())
        }
        None => None,
    };
    let file = match &file_name {
        Some(name) => {
            if !name.starts_with("python:") && !std::path::Path::new(name).exists() {
                return err(format!("config file {name:?} does not exist"));
            }
            // The virtualenv the app will run in: oxgate's --home, else
            // $VIRTUAL_ENV, as when the app is loaded.
            let home = cli
                .oxgate
                .iter()
                .chain(&from_env.oxgate)
                .rev()
                .find(|(k, _)| *k == &opt::HOME)
                .map(|(_, v)| v.clone())
                .or_else(|| env("VIRTUAL_ENV").filter(|v| !v.is_empty()))
                .map(std::path::PathBuf::from);
            let names =
                run_file(name, home.as_deref()).map_err(|e| ConfigError(format!("{name}: {e}")))?;
            from_file(
                names,
                &Origin::File {
                    path: Rc::new(name.into()),
                    line: 0,
                },
            )?
        }
        None => SourceValues::default(),
    };

    let given_outside_the_file: Vec<&'static str> = from_env
        .settings
        .keys()
        .chain(cli.settings.keys())
        .copied()
        .collect();
    // Gunicorn's precedence, setting by setting.
    let mut given: BTreeMap<&'static str, Given> = file.settings;
    given.extend(from_env.settings);
    given.extend(cli.settings);
    given.remove("config");
    within_chdir(&mut given);
    // Gunicorn's default_proc_name: the app named on the command line, or
    // "gunicorn" when only the file's wsgi_app names it.
    let proc_name = cli
        .app
        .clone()
        .or(from_env.app.clone())
        .unwrap_or_else(|| "gunicorn".into());
    let app = cli.app.or(from_env.app).or(file.app);

    let mut out = GunicornConfig {
        hooks: file.hooks,
        file: file_name,
        given: typed_as_gunicorn(&given, &given_outside_the_file),
        ..GunicornConfig::default()
    };
    translate(&given, app, &proc_name, env, &mut out)?;
    for (key, value) in file
        .oxgate
        .into_iter()
        .chain(from_env.oxgate)
        .chain(cli.oxgate)
    {
        out.settings.push(Setting {
            opt: key,
            value,
            origin: Origin::CommandLine,
        });
    }
    Ok(out)
}

/// The settings in `names`, valued as Gunicorn's Config holds them: a
/// switch as a bool, a repeatable one as a list, a number as an int.
fn typed_as_gunicorn(
    given: &BTreeMap<&'static str, Given>,
    names: &[&'static str],
) -> Vec<(String, PyValue)> {
    names
        .iter()
        .filter_map(|&name| {
            let g = given.get(name)?;
            let s = setting(name)?;
            let last = g.values.last()?;
            let value = match s.arity {
                Arity::Switch => PyValue::Bool(super::value::switch_on(last)),
                Arity::Append => PyValue::List(g.values.clone()),
                _ => match last.parse::<i64>() {
                    Ok(n) => PyValue::Int(n),
                    Err(_) => PyValue::Str(last.clone()),
                },
            };
            Some((name.to_string(), value))
        })
        .collect()
}

/// Gunicorn changes to `chdir` as it reads its configuration, before it
/// binds, writes the pidfile or opens a log: a relative path in those is
/// `chdir`'s. oxgate opens them first (uWSGI's order), so they are made
/// `chdir`'s here.
fn within_chdir(given: &mut BTreeMap<&'static str, Given>) {
    let Some(dir) = given.get("chdir").and_then(|g| g.values.last()).cloned() else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    let place = |path: &str| -> Option<String> {
        let relative = !path.is_empty() && path != "-" && std::path::Path::new(path).is_relative();
        relative.then(|| dir.join(path).to_string_lossy().into_owned())
    };
    for name in [
        "accesslog",
        "errorlog",
        "pidfile",
        "certfile",
        "keyfile",
        "ca_certs",
    ] {
        if let Some(g) = given.get_mut(name) {
            for v in &mut g.values {
                if let Some(placed) = place(v) {
                    *v = placed;
                }
            }
        }
    }
    // (A relative unix socket in `bind` is `chdir`'s too: the resolved
    // configuration places every dialect's, as uWSGI binds after its chdir.)
}

/// Gunicorn's defaults where oxgate's differ, as if the file had said them.
fn default_origin() -> Origin {
    Origin::File {
        path: Rc::new("(Gunicorn's default)".into()),
        line: 0,
    }
}

/// The worker classes that serve the app as ASGI.
fn is_asgi_class(class: &str) -> bool {
    matches!(
        class,
        "uvicorn.workers.UvicornWorker"
            | "uvicorn_worker.UvicornWorker"
            | "uvicorn.workers.UvicornH11Worker"
            | "uvicorn_worker.UvicornH11Worker"
            | "asgi"
            | "gunicorn.workers.gasgi.ASGIWorker"
    )
}

/// Gunicorn's settings into oxgate's options.
fn translate(
    given: &BTreeMap<&'static str, Given>,
    app: Option<String>,
    default_proc_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut GunicornConfig,
) -> Result<(), ConfigError> {
    let mut push = |key: Key, value: String, origin: &Origin| {
        out.settings.push(Setting {
            opt: key,
            value,
            origin: origin.clone(),
        })
    };
    let one = |name: &str| given.get(name).and_then(|g| g.values.last().cloned());
    // Gunicorn refuses a number it cannot read; so does oxgate, rather than
    // reading `-w abc` as 0 the way uWSGI's options are read.
    for name in WHOLE_NUMBERS {
        if let Some(g) = given.get(name)
            && let Some(v) = g.values.last()
            && v.trim().parse::<u64>().is_err()
        {
            return err(format!(
                "{}: {name} {v:?}: expected a whole number",
                g.origin
            ));
        }
    }
    let truthy = |name: &str| one(name).is_some_and(|v| super::value::parse_bool(&v) == Some(true));
    let default = default_origin();

    // Gunicorn always runs an arbiter, and removes its pidfile and unix
    // sockets when it stops.
    push(&opt::MASTER, "true".into(), &default);
    push(&opt::VACUUM, "true".into(), &default);
    // Gunicorn's SIGINT and SIGQUIT are its quick shutdown.
    push(&opt::QUICK_STOP_ON_INT, "true".into(), &default);
    // Gunicorn will not start over a pidfile that names a live process.
    push(&opt::PIDFILE_EXCLUSIVE, "true".into(), &default);
    // Gunicorn gives its log files to `user` and `group`.
    push(&opt::LOGFILE_CHOWN, "true".into(), &default);
    // Gunicorn sets it in its environment, and apps test it to hand their
    // logs to `gunicorn.error` (Flask's recipe: `"gunicorn" in
    // os.environ.get("SERVER_SOFTWARE", "")`), which oxgate sets up here.
    push(
        &opt::ENV,
        format!(
            "SERVER_SOFTWARE=oxgate/{} (gunicorn)",
            env!("CARGO_PKG_VERSION")
        ),
        &default,
    );
    // Gunicorn replaces a worker at max_requests whatever its age.
    push(&opt::MIN_WORKER_LIFETIME, "0".into(), &default);
    // Gunicorn's listen backlog, unless `backlog` says otherwise (below).
    push(&opt::LISTEN, "2048".into(), &default);

    // Sockets: `protocol = uwsgi` makes every bind a uwsgi socket.
    let socket_key = match one("protocol").as_deref() {
        None | Some("http") => &opt::HTTP_SOCKET,
        Some("uwsgi") => &opt::UWSGI_SOCKET,
        Some(other) => {
            return err(format!(
                "protocol {other:?}: Gunicorn's protocols are http and uwsgi"
            ));
        }
    };
    // certfile (and keyfile) make every HTTP bind an HTTPS one.
    let https = match (one("certfile"), one("keyfile")) {
        (Some(cert), key) => match HttpsSocket::fields_from_python_ssl(
            cert,
            key,
            one("ciphers"),
            one("ca_certs"),
            one("cert_reqs").as_deref(),
        ) {
            Ok(fields) => Some(fields),
            Err(e) => return err(e),
        },
        (None, None) => None,
        (None, Some(_)) => {
            return err("keyfile without certfile: the certificate is missing");
        }
    };
    if https.is_some() && socket_key != &opt::HTTP_SOCKET {
        return err(
            "certfile with protocol = uwsgi: oxgate serves TLS on HTTP sockets only; terminate it in the web server in front",
        );
    }
    let mut bind = |addr: String, origin: &Origin| match (&https, socket_key == &opt::HTTP_SOCKET) {
        (Some(tls), true) => push(&opt::HTTPS_SOCKET, format!("{addr},{tls}"), origin),
        _ => push(socket_key, addr, origin),
    };
    match given.get("bind") {
        Some(g) => {
            for b in &g.values {
                bind(bind_address(b)?, &g.origin);
            }
        }
        // Started by systemd with its sockets (LISTEN_FDS for this
        // process): Gunicorn serves those alone.
        None if activated_by_systemd(env) => {}
        None => {
            // Gunicorn listens on $PORT (all addresses) when it is set.
            let addr = match env("PORT") {
                Some(port) if !port.is_empty() => format!("0.0.0.0:{port}"),
                _ => "127.0.0.1:8000".into(),
            };
            bind(addr, &default);
        }
    }
    if let Some(g) = given.get("http2_max_concurrent_streams") {
        push(
            &opt::HTTP2_MAX_STREAMS,
            g.values.last().cloned().unwrap_or_default(),
            &g.origin,
        );
    }

    // Workers: $WEB_CONCURRENCY is Gunicorn's default, else 1.
    match given.get("workers") {
        Some(g) => push(
            &opt::PROCESSES,
            g.values.last().cloned().unwrap_or_default(),
            &g.origin,
        ),
        None => push(
            &opt::PROCESSES,
            env("WEB_CONCURRENCY")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "1".into()),
            &default,
        ),
    }
    let threads = one("threads");
    let class = one("worker_class").unwrap_or_else(|| "sync".into());
    // Gunicorn's entry-point spelling of its own classes.
    let class = class
        .strip_prefix("egg:gunicorn#")
        .map_or(class.clone(), str::to_string);
    let class_origin = given.get("worker_class").map_or(&default, |g| &g.origin);
    match class.as_str() {
        // Gunicorn turns sync with threads > 1 into gthread.
        "sync"
        | "gthread"
        | "gunicorn.workers.sync.SyncWorker"
        | "gunicorn.workers.gthread.ThreadWorker" => {}
        asgi if is_asgi_class(asgi) => {
            push(&opt::INTERFACE, "asgi".into(), class_origin);
            // uvicorn's worker reads X-Forwarded-For and -Proto from
            // forwarded_allow_ips (its proxy_headers is on).
            if class.starts_with("uvicorn") {
                push(&opt::PROXY_HEADERS, "true".into(), class_origin);
                // uvicorn's worker closes open WebSockets (1012) as the stop
                // begins, as uvicorn does; Gunicorn's own asgi worker holds
                // them through graceful_timeout.
                push(&opt::WS_CLOSE_AT_STOP, "true".into(), class_origin);
            }
        }
        "gevent"
        | "eventlet"
        | "tornado"
        | "gevent_wsgi"
        | "gevent_pywsgi"
        | "gunicorn.workers.ggevent.GeventWorker"
        | "gunicorn.workers.ggevent.GeventPyWSGIWorker"
        | "gunicorn.workers.geventlet.EventletWorker"
        | "gunicorn.workers.gtornado.TornadoWorker" => {
            // Chosen for many requests at once per worker (up to
            // worker_connections): threads give some of that, where one
            // would serve a request at a time.
            let many = threads.is_none().then(|| {
                one("worker_connections")
                    .and_then(|c| c.trim().parse::<u64>().ok())
                    .unwrap_or(1000)
                    .clamp(1, ASYNC_CLASS_THREADS)
            });
            if let Some(n) = many {
                push(&opt::THREADS, n.to_string(), class_origin);
            }
            let threads = many.map_or_else(
                || "--threads".to_string(),
                |n| format!("{n} threads a worker (worker_connections, at most {ASYNC_CLASS_THREADS}; set threads to choose)"),
            );
            out.warnings.push(format!(
                "{class_origin}: worker_class {class:?}: oxgate has no {class} workers; the app runs in {threads}, without monkey-patching"
            ));
        }
        other => {
            return err(format!(
                "{class_origin}: worker_class {other:?} is not one oxgate can run: use sync, gthread, or uvicorn.workers.UvicornWorker (ASGI)"
            ));
        }
    }
    // Gunicorn's own ASGI worker gives root_path to the app as it is, with
    // the request's path as it came (a proxy passes the prefix on). Its
    // other workers, uvicorn's among them, never read it.
    if let Some(g) = given.get("root_path")
        && let Some(v) = g.values.last()
    {
        if matches!(class.as_str(), "asgi" | "gunicorn.workers.gasgi.ASGIWorker") {
            push(&opt::ROOT_PATH, v.clone(), &g.origin);
            push(&opt::ROOT_PATH_UNSTRIPPED, "true".into(), &g.origin);
        } else if !v.is_empty() {
            out.warnings.push(format!(
                "{}: root_path is read by Gunicorn's asgi worker alone, not by {class} workers: it has no effect",
                g.origin
            ));
        }
    }
    // Gunicorn's worker timeout is harakiri (0 is off). Its 30 s default
    // kills a long request only in a sync worker with one thread (the
    // others keep their heartbeat going), so only there is it a default.
    let one_sync_thread = matches!(class.as_str(), "sync" | "gunicorn.workers.sync.SyncWorker")
        && threads.as_deref().is_none_or(|t| t.trim() == "1");
    if let Some(t) = threads {
        push(&opt::THREADS, t, &given["threads"].origin);
    }
    match given.get("timeout") {
        Some(g) if one_sync_thread => push(
            &opt::HARAKIRI,
            g.values.last().cloned().unwrap_or_default(),
            &g.origin,
        ),
        // A gthread or ASGI worker's timeout is a heartbeat its other
        // threads keep going: a long request (a report, an SSE stream) is
        // never killed for it, and a harakiri here would kill the whole
        // worker, every thread's request with it.
        Some(g) => out.warnings.push(format!(
            "{}: timeout kills no request of a {class} worker with threads (in Gunicorn it is a heartbeat): no --harakiri is set",
            g.origin
        )),
        None if one_sync_thread => push(&opt::HARAKIRI, "30".into(), &default),
        None => {}
    }
    let (grace, grace_origin) = match given.get("graceful_timeout") {
        Some(g) => (
            g.values.last().cloned().unwrap_or_default(),
            g.origin.clone(),
        ),
        None => ("30".to_string(), default.clone()),
    };
    // graceful_timeout bounds the master's stop. A HUP's old workers (and
    // a recycled one) it does not bound in a sync worker with one thread:
    // each finishes its request, which the timeout bounds (0: nothing
    // does, a day here); a gthread worker waits its requests for
    // graceful_timeout.
    let (worker_grace, worker_grace_origin) = match given.get("timeout") {
        _ if !one_sync_thread => (grace.clone(), grace_origin.clone()),
        Some(g) => {
            let t = g.values.last().cloned().unwrap_or_default();
            let t = if t.trim().parse::<f64>().is_ok_and(|t| t <= 0.0) {
                "86400".to_string()
            } else {
                t
            };
            (t, g.origin.clone())
        }
        None => ("30".to_string(), default.clone()),
    };
    push(
        &opt::WORKER_RELOAD_MERCY,
        worker_grace,
        &worker_grace_origin,
    );
    push(&opt::RELOAD_MERCY, grace, &grace_origin);

    // Preloading is Gunicorn's option, loading in each worker its default.
    if !truthy("preload_app") {
        let origin = given.get("preload_app").map_or(&default, |g| &g.origin);
        push(&opt::LAZY_APPS, "true".into(), origin);
    }

    // Syslog: the error log's lines, and unless told otherwise the access
    // lines, go to syslog as well, tagged as Gunicorn tags them.
    let syslog = match given.get("syslog") {
        Some(g) if truthy("syslog") => {
            let addr = one("syslog_addr").unwrap_or_else(|| "udp://localhost:514".into());
            crate::log::route::gunicorn_syslog_addr(&addr)
                .map_err(|e| ConfigError(format!("{}: syslog_addr: {e}", g.origin)))?;
            let facility = one("syslog_facility").unwrap_or_else(|| "user".into());
            crate::log::route::facility(&facility)
                .map_err(|e| ConfigError(format!("{}: syslog_facility: {e}", g.origin)))?;
            let name = one("syslog_prefix")
                .filter(|p| !p.is_empty())
                .or_else(|| one("proc_name").map(|n| n.replace(':', ".")))
                .unwrap_or_else(|| default_proc_name.replace(':', "."));
            let target =
                move |log: &str| format!("gunicorn-syslog:{addr},gunicorn.{name}.{log},{facility}");
            push(&opt::LOGGER, "stdio".into(), &g.origin);
            push(&opt::LOGGER, target("error"), &g.origin);
            Some((target("access"), g.origin.clone()))
                .filter(|_| !truthy("disable_redirect_access_to_syslog"))
        }
        _ => None,
    };

    // Access log: none unless asked for (or sent to syslog), in Gunicorn's
    // format.
    // The standard streams named as files (Docker images set
    // `accesslog = "/dev/stdout"`, `errorlog = "/dev/stderr"`) are the
    // streams: opened as files, /dev/stdout would be the error log once
    // --logto has put that on descriptor 1.
    let stream = |name: &str, fd: u8| {
        one(name).map(|t| {
            if t == format!("/dev/{}", ["stdin", "stdout", "stderr"][fd as usize])
                || t == format!("/proc/self/fd/{fd}")
                || t == format!("/dev/fd/{fd}")
            {
                "-".to_string()
            } else {
                t
            }
        })
    };
    let accesslog = stream("accesslog", 1);
    let errorlog = stream("errorlog", 2);
    // A logging config turns Gunicorn's access log on too: its lines go to
    // the gunicorn.access logger, which a dict or JSON config (merged over
    // Gunicorn's defaults) leaves on stdout unless it says otherwise. An
    // INI file (fileConfig) replaces the defaults: the lines go where it
    // sends gunicorn.access, if anywhere.
    // Gunicorn acts on a true value only: `logconfig_dict = {}` (its
    // default) or an empty file name is none.
    let logging_set = |k: &str| {
        given
            .get(k)
            .is_some_and(|g| g.values.last().is_some_and(|v| !v.is_empty()))
    };
    let logconfig = ["logconfig_dict", "logconfig_json", "logconfig"]
        .into_iter()
        .find(|k| logging_set(k))
        .filter(|_| accesslog.is_none() && syslog.is_none());
    // A daemon's stdout is /dev/null: Gunicorn's lines go nowhere.
    let to_stdout = logconfig.filter(|&k| k != "logconfig" && !truthy("daemon"));
    if let Some(key) = logconfig {
        let origin = &given[key].origin;
        out.warnings.push(match to_stdout {
            Some(_) => format!(
                "{origin}: {key} without accesslog: the access lines go to stdout in access_log_format, where Gunicorn's default gunicorn.access handler writes them (without its formatter's prefix); a handler or formatter the logging config gives gunicorn.access is not used (set accesslog to choose the file)"
            ),
            None => format!(
                "{origin}: {key} without accesslog: no access lines are written; a handler the logging config gives gunicorn.access is not used (set accesslog to write them)"
            ),
        });
    }
    if accesslog.is_none() && syslog.is_none() && to_stdout.is_none() {
        push(&opt::DISABLE_LOGGING, "true".into(), &default);
    } else {
        if let Some(key) = to_stdout {
            push(&opt::REQ_LOGGER, "stdout".into(), &given[key].origin);
        }
        if let Some(target) = &accesslog {
            let origin = &given["accesslog"].origin;
            let errorlog = errorlog.clone().unwrap_or_else(|| "-".into());
            // A file of its own, as in Gunicorn; "-" is stdout, apart from
            // the log on stderr (a daemon has neither: they join the log).
            if target == "-" && !truthy("daemon") {
                push(&opt::REQ_LOGGER, "stdout".into(), origin);
            } else if target != "-" && *target != errorlog {
                push(&opt::REQ_LOGGER, format!("file:{target}"), origin);
            } else if syslog.is_some() {
                push(&opt::REQ_LOGGER, "stdio".into(), origin);
            }
        }
        if let Some((target, origin)) = &syslog {
            push(&opt::REQ_LOGGER, target.clone(), origin);
        }
        if class.starts_with("uvicorn") {
            // uvicorn's worker writes uvicorn's access lines to Gunicorn's
            // access log: access_log_format is not read. (Gunicorn's own
            // asgi worker writes its own, in that format.)
            if let Some(g) = given.get("access_log_format") {
                out.warnings.push(format!(
                    "{}: access_log_format is not used with {class} (its access lines are uvicorn's, as in Gunicorn)",
                    g.origin
                ));
            }
            push(
                &opt::LOG_FORMAT,
                super::uvicorn::UVICORN_ACCESS_MESSAGE.into(),
                &default,
            );
        } else {
            let format =
                one("access_log_format").unwrap_or_else(|| DEFAULT_ACCESS_LOG_FORMAT.to_string());
            let fmt_origin = given
                .get("access_log_format")
                .map_or(&default, |g| &g.origin);
            push(&opt::LOG_FORMAT, access_log_format(&format)?, fmt_origin);
            // Gunicorn's SafeAtoms: a `"` in any value is written `\"`.
            push(&opt::LOG_ESCAPE_QUOTES, "true".into(), fmt_origin);
        }
    }
    if let Some(target) = &errorlog
        && target != "-"
    {
        push(&opt::LOGTO, target.clone(), &given["errorlog"].origin);
    }
    // Gunicorn applies one logging config: the dict (applied with the
    // config file), else the JSON file, else the INI file.
    if !logging_set("logconfig_dict") {
        for key in ["logconfig_json", "logconfig"] {
            // An empty name is none, as Gunicorn reads it.
            if let Some(file) = one(key).filter(|f| !f.is_empty()) {
                push(&opt::LOG_CONFIG, file, &given[key].origin);
                break;
            }
        }
    }
    // Gunicorn's own loggers (gunicorn.error) for the app, unless a
    // logconfig_dict (applied with the config file, over the same
    // defaults) has configured them. A logconfig_json file is merged over
    // them as the app loads, as Gunicorn merges it.
    if !logging_set("logconfig_dict") {
        push(&opt::APP_LOGGERS, "gunicorn".into(), &default);
    }
    if let Some(level) = one("loglevel") {
        let mut level = level.to_ascii_lowercase();
        // Gunicorn takes a level it does not know (`warn`) as info.
        if !["debug", "info", "warning", "error", "critical"].contains(&level.as_str()) {
            out.warnings.push(format!(
                "{}: loglevel {level:?} is not one of debug, info, warning, error and critical: info, as Gunicorn reads it",
                given["loglevel"].origin
            ));
            level = "info".into();
        }
        push(&opt::LOG_LEVEL, level, &given["loglevel"].origin);
    }

    if truthy("reuse_port") {
        push(&opt::REUSE_PORT, "true".into(), &given["reuse_port"].origin);
    }
    if truthy("daemon") {
        let origin = &given["daemon"].origin;
        let log = errorlog
            .filter(|l| l != "-")
            .unwrap_or_else(|| "/dev/null".into());
        push(&opt::DAEMONIZE, log, origin);
    }

    // Settings that are one oxgate option each.
    let direct: &[(&str, Key)] = &[
        ("backlog", &opt::LISTEN),
        ("max_requests", &opt::MAX_REQUESTS),
        ("max_requests_jitter", &opt::MAX_REQUESTS_JITTER),
        ("limit_request_line", &opt::LIMIT_REQUEST_LINE),
        ("limit_request_fields", &opt::LIMIT_REQUEST_FIELDS),
        ("limit_request_field_size", &opt::LIMIT_REQUEST_FIELD_SIZE),
        ("chdir", &opt::CHDIR),
        ("pidfile", &opt::PIDFILE),
        ("user", &opt::UID),
        ("group", &opt::GID),
        ("forwarded_allow_ips", &opt::FORWARDED_ALLOW_IPS),
        ("keepalive", &opt::KEEPALIVE_TIMEOUT),
        ("statsd_host", &opt::STATSD_HOST),
        ("statsd_prefix", &opt::STATSD_PREFIX),
        ("dogstatsd_tags", &opt::DOGSTATSD_TAGS),
        ("proxy_allow_ips", &opt::PROXY_ALLOW_FROM),
        ("asgi_loop", &opt::LOOP),
        ("asgi_lifespan", &opt::LIFESPAN),
        ("websocket_max_message_size", &opt::WS_MAX_SIZE),
        ("print_config", &opt::PRINT_CONFIG),
        ("check_config", &opt::CHECK_CONFIG),
        // Gunicorn's check loads the app.
        ("check_config", &opt::CHECK_APP),
    ];
    for (name, key) in direct {
        if let Some(g) = given.get(name)
            && let Some(v) = g.values.last()
        {
            // Gunicorn holds these to its own maxima, whatever is asked:
            // a request line to 8190 bytes, a head to 32768 fields.
            let most = match *name {
                "limit_request_line" => Some(8190),
                "limit_request_fields" => Some(32768),
                _ => None,
            };
            let v = match (most, v.trim().parse::<i64>()) {
                (Some(most), Ok(n)) if n > most => most.to_string(),
                _ => v.clone(),
            };
            push(key, v, &g.origin);
        }
    }
    // Gunicorn gives the user's supplementary groups only with
    // `initgroups`; else the process keeps none.
    if let Some(g) = given.get("user")
        && !truthy("initgroups")
    {
        push(&opt::NO_INITGROUPS, "true".into(), &g.origin);
    }
    // Gunicorn holds a request head to its line and field limits alone;
    // oxgate's --buffer-size (64 KiB) held it too, and a head within
    // Gunicorn's defaults (100 fields of 8190 bytes: big cookies) got 431.
    // The buffer is made to fit the limits (0 is Gunicorn's "no limit" for
    // the line and the field size, its most for the count).
    let limit = |name: &str, unset: usize, zero: usize, most: usize| match one(name)
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        None => unset,
        Some(0) => zero,
        Some(n) if n < 0 => most,
        Some(n) => (n as usize).min(most),
    };
    // Gunicorn's defaults for the line and a field, and its most fields.
    const LINE: usize = 4094;
    const FIELD: usize = 8190;
    const MOST_FIELDS: usize = 32768;
    let line = limit("limit_request_line", LINE, 1 << 20, 8190);
    let fields = limit("limit_request_fields", 100, MOST_FIELDS, MOST_FIELDS);
    let field = limit("limit_request_field_size", FIELD, 1 << 20, 1 << 20);
    let head = (line + 2 + fields * (field + 2) + 2).min(16 << 20);
    push(&opt::BUFFER_SIZE, head.to_string(), &default);
    // (A given --buffer-size raises the line and field limits with it:
    // these stay Gunicorn's.)
    if !given.contains_key("limit_request_line") {
        push(&opt::LIMIT_REQUEST_LINE, LINE.to_string(), &default);
    }
    if !given.contains_key("limit_request_field_size") {
        push(&opt::LIMIT_REQUEST_FIELD_SIZE, FIELD.to_string(), &default);
    }
    // Gunicorn's default: an idle connection waits 2 s for its next request.
    if !given.contains_key("keepalive") {
        push(&opt::KEEPALIVE_TIMEOUT, "2".into(), &default);
    }
    // Gunicorn's umask (0 by default) is for its unix sockets alone, made
    // srwxrwxrwx less the mask and owned by user and group; the process
    // keeps the umask it was started with (an app's uploads stay 644).
    let umask = match given.get("umask").and_then(|g| g.values.last()) {
        Some(v) => u32::from_str_radix(&octal(v)?, 8).unwrap_or(0),
        None => 0,
    };
    let umask_origin = given.get("umask").map_or(&default, |g| &g.origin);
    push(
        &opt::CHMOD_SOCKET,
        format!("{:03o}", 0o777 & !umask),
        umask_origin,
    );
    if let (Some(user), group) = (one("user"), one("group")) {
        let owner = match group {
            Some(group) => format!("{user}:{group}"),
            None => user,
        };
        push(&opt::CHOWN_SOCKET, owner, &given["user"].origin);
    }
    if let Some(g) = given.get("proxy_protocol")
        && let Some(v) = g.values.last()
    {
        // Gunicorn 26 takes off/v1/v2/auto, and older files a bool.
        let v = match super::value::parse_bool(v) {
            Some(true) => "auto".to_string(),
            Some(false) => "off".to_string(),
            None => v.clone(),
        };
        push(&opt::PROXY_PROTOCOL, v, &g.origin);
    }
    if let Some(g) = given.get("raw_env") {
        for v in &g.values {
            if !v.contains('=') {
                return err(format!("{}: raw_env {v:?}: expected KEY=VALUE", g.origin));
            }
            push(&opt::ENV, v.clone(), &g.origin);
        }
    }
    // Gunicorn puts each pythonpath entry first on sys.path in turn (the
    // last one ends up first), ahead of the chdir directory and then the
    // one it was started in, which its first chdir() put there: a
    // project's modules beside the config file import from a chdir
    // elsewhere. --pythonpath is read as uWSGI's, where each entry also
    // goes first in turn: the two directories first, then the entries in
    // the order given.
    if let Some(g) = given.get("chdir")
        && let Some(dir) = g.values.last()
        && let Ok(launch) = std::env::current_dir()
    {
        let dir = launch.join(dir);
        if dir != launch {
            push(&opt::PYTHONPATH, launch.display().to_string(), &g.origin);
            push(&opt::PYTHONPATH, dir.display().to_string(), &g.origin);
        }
    }
    if let Some(g) = given.get("pythonpath") {
        let entries = g.values.iter().flat_map(|v| v.split(',')).map(str::trim);
        for v in entries.filter(|v| !v.is_empty()) {
            push(&opt::PYTHONPATH, v.to_string(), &g.origin);
        }
    }
    if truthy("reload") {
        push(&opt::PY_AUTORELOAD, "1".into(), &given["reload"].origin);
    }
    // Gunicorn watches them only when reload is on.
    if let Some(g) = given.get("reload_extra_files")
        && truthy("reload")
    {
        for v in &g.values {
            push(&opt::TOUCH_RELOAD, v.clone(), &g.origin);
        }
    }
    // Gunicorn's scheme headers, trusted from its default proxies: behind
    // nginx on the same host, X-Forwarded-Proto: https makes the request
    // https, as under Gunicorn.
    let scheme_headers: Vec<String> = match given.get("secure_scheme_headers") {
        Some(g) => g.values.clone(),
        None => DEFAULT_SECURE_SCHEME_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect(),
    };
    let scheme_origin = given
        .get("secure_scheme_headers")
        .map_or(&default, |g| &g.origin);
    // `secure_scheme_headers = {}` is none at all (not oxgate's default).
    if scheme_headers.is_empty() {
        push(&opt::SECURE_SCHEME_HEADER, "none".into(), scheme_origin);
    }
    for h in scheme_headers {
        push(&opt::SECURE_SCHEME_HEADER, h, scheme_origin);
    }
    // Gunicorn's forwarder_headers (SCRIPT_NAME and PATH_INFO unless set):
    // a trusted proxy's SCRIPT_NAME header mounts a WSGI app under it (its
    // environ; uvicorn's worker reads none). (A PATH_INFO header is no more
    // than HTTP_PATH_INFO to Gunicorn's environ: nothing to do.)
    let forwarders = given.get("forwarder_headers");
    let takes_script_name = !is_asgi_class(&class)
        && forwarders.is_none_or(|g| {
            g.values
                .iter()
                .flat_map(|v| v.split(','))
                .any(|h| matches!(h.trim().to_ascii_uppercase().as_str(), "SCRIPT_NAME" | "*"))
        });
    if takes_script_name {
        push(
            &opt::SCRIPT_NAME_HEADER,
            "true".into(),
            forwarders.map_or(&default, |g| &g.origin),
        );
    }
    if !given.contains_key("forwarded_allow_ips") && env("FORWARDED_ALLOW_IPS").is_none() {
        push(&opt::FORWARDED_ALLOW_IPS, "127.0.0.1,::1".into(), &default);
    }
    // Gunicorn serves HTTP/1.1 alone unless `http_protocols` names h2 (its
    // default is "h1"): a TLS bind offers no h2 in ALPN.
    let protocols = one("http_protocols");
    let wanted: Vec<&str> = protocols
        .as_deref()
        .unwrap_or("h1")
        .split(',')
        .map(str::trim)
        .collect();
    if !wanted.contains(&"h2") {
        push(&opt::HTTP2_OFF, "true".into(), &default);
    }
    if let Some(p) = &protocols
        && wanted.iter().any(|w| !matches!(*w, "h1" | "h2"))
    {
        out.warnings.push(format!(
            "http_protocols {p:?}: oxgate serves h1 and h2 (HTTP/3 is not served)"
        ));
    }

    // Gunicorn serves a WSGI app under the prefix in SCRIPT_NAME (its
    // environment, which raw_env sets too): a request's path starts with
    // it, and PATH_INFO is the rest. That is a mount with
    // --manage-script-name; a path outside it has no app (Gunicorn answers
    // it with an error page too). Its ASGI workers take root_path instead.
    let script_name = given
        .get("raw_env")
        .and_then(|g| {
            g.values
                .iter()
                .rev()
                .find_map(|v| v.strip_prefix("SCRIPT_NAME="))
                .map(|v| (v.to_string(), g.origin.clone()))
        })
        .or_else(|| env("SCRIPT_NAME").map(|v| (v, Origin::Env("SCRIPT_NAME".into()))))
        .map(|(prefix, origin)| (prefix.trim_end_matches('/').to_string(), origin))
        .filter(|(prefix, _)| prefix.starts_with('/'));
    match app {
        Some(app) => match script_name.filter(|_| !is_asgi_class(&class)) {
            Some((prefix, origin)) => {
                push(&opt::MOUNT, format!("{prefix}={app}"), &origin);
                push(&opt::MANAGE_SCRIPT_NAME, "true".into(), &origin);
                push(&opt::NO_DEFAULT_APP, "true".into(), &origin);
            }
            None => push(&opt::MODULE, app, &Origin::CommandLine),
        },
        None => {
            let quiet = truthy("print_config") || truthy("check_config");
            if !quiet {
                return err(
                    "no application given: Gunicorn's command line ends with the app, like app:application, or the config file sets wsgi_app",
                );
            }
        }
    }

    for (name, g) in given {
        if let Some(s) = setting(name)
            && let Meaning::Ignored(why) = s.meaning
        {
            out.warnings
                .push(format!("{}: {name} has no effect: {why}", g.origin));
        }
    }
    Ok(())
}

/// A Gunicorn bind: `HOST:PORT`, `HOST` (port 8000), `unix:PATH`, `[::1]:PORT`,
/// `tcp://HOST:PORT`.
/// A Gunicorn bind as an oxgate socket address.
pub(super) fn bind_address(bind: &str) -> Result<String, ConfigError> {
    let bind = bind.strip_prefix("tcp://").unwrap_or(bind);
    // `unix://PATH` or `unix:PATH`, as Gunicorn's parse_address reads
    // them: `unix://app.sock` is relative, `unix:///run/app.sock` not.
    if let Some(path) = bind
        .strip_prefix("unix://")
        .or_else(|| bind.strip_prefix("unix:"))
    {
        return Ok(path.to_string());
    }
    if bind.starts_with("fd://") {
        // An inherited listening socket, taken over as it is.
        return crate::listen::parse(bind)
            .map(|a| a.to_string())
            .or_else(|e| err(format!("bind {bind:?}: {e}")));
    }
    if bind.starts_with('[') {
        return Ok(if bind.contains("]:") {
            bind.to_string()
        } else {
            format!("{bind}:8000")
        });
    }
    Ok(match bind.rsplit_once(':') {
        Some(_) => bind.to_string(),
        None => format!("{bind}:8000"),
    })
}

/// Gunicorn reads a umask as a number in any base Python's `int(v, 0)` takes.
fn octal(v: &str) -> Result<String, ConfigError> {
    let v = v.trim();
    let parsed = if let Some(o) = v.strip_prefix("0o").or(v.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if let Some(h) = v.strip_prefix("0x").or(v.strip_prefix("0X")) {
        u32::from_str_radix(h, 16)
    } else if v.len() > 1 && v.starts_with('0') {
        // Gunicorn (and the shell's habit): 022 is octal.
        u32::from_str_radix(&v[1..], 8)
    } else {
        v.parse::<u32>()
    };
    parsed
        .map(|n| format!("{n:03o}"))
        .map_err(|_| ConfigError(format!("umask {v:?}: expected a number such as 0o022")))
}

/// Gunicorn's access log atoms in oxgate's `--log-format` variables.
pub fn access_log_format(format: &str) -> Result<String, ConfigError> {
    let mut out = String::new();
    let mut rest = format;
    while let Some(start) = rest.find("%(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // Python's `%` formatting: `%(name)` then a conversion, with flags,
        // a width or a precision before it (`%(D)d`, `%(s)5s`, `%(h)-12s`);
        // these are read as the atom, written as it is, unpadded.
        let conversion = after.find(')').and_then(|close| {
            let spec = &after[close + 1..];
            let end = spec
                .find(|c: char| !(c.is_ascii_digit() || "#0- +.".contains(c)))
                .filter(|&i| "diouxXeEfFgGcrsa".contains(&spec[i..i + 1]))?;
            Some((close, close + 1 + end + 1))
        });
        let Some((close, past)) = conversion else {
            return err(format!(
                "access_log_format {format:?}: an atom is written %(name)s"
            ));
        };
        let atom = &after[..close];
        out.push_str(&match atom {
            // REMOTE_ADDR as it is: empty on a unix socket, as in Gunicorn.
            "h" => "%(remote_addr)".into(),
            "l" => "-".into(),
            "u" => "%(basic_user)".into(),
            "t" => "[%(ltime)]".into(),
            "r" => "%(method) %(uri) %(proto)".into(),
            "m" => "%(method)".into(),
            "U" => "%(var.PATH_INFO)".into(),
            "q" => "%(query)".into(),
            "H" => "%(proto)".into(),
            "s" => "%(status)".into(),
            // The body's bytes, as Gunicorn counts them.
            "B" | "b" => "%(rsize)".into(),
            "f" => "%(referer)".into(),
            "a" => "%(uagent)".into(),
            "T" => "%(whole_secs)".into(),
            "D" => "%(micros)".into(),
            "M" => "%(msecs)".into(),
            "L" => "%(secs)".into(),
            "p" => "<%(pid)>".into(),
            a if a.starts_with('{') && a.ends_with("}i") => {
                // CGI names these two without the HTTP_ prefix.
                match header_var(&a[1..a.len() - 2]).as_str() {
                    name @ ("CONTENT_TYPE" | "CONTENT_LENGTH") => format!("%(var.{name})"),
                    name => format!("%(var.HTTP_{name})"),
                }
            }
            a if a.starts_with('{') && a.ends_with("}o") => {
                format!("%(resp.{})", &a[1..a.len() - 2])
            }
            // Gunicorn looks environ names up in upper case.
            // (wsgi.url_scheme is the scheme the request variables say.)
            a if a.eq_ignore_ascii_case("{wsgi.url_scheme}e") => "%(var.REQUEST_SCHEME)".into(),
            // The environ's RAW_URI is REQUEST_URI by another name.
            a if a.eq_ignore_ascii_case("{raw_uri}e") => "%(var.REQUEST_URI)".into(),
            a if a.starts_with('{') && a.ends_with("}e") => {
                format!("%(var.{})", a[1..a.len() - 2].to_ascii_uppercase())
            }
            // An atom Gunicorn does not know is logged as `-` there.
            _ => "-".into(),
        });
        rest = &after[past..];
    }
    out.push_str(rest);
    // Python's `%` formatting: `%%` is one `%`.
    Ok(out.replace("%%", "%"))
}

fn header_var(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Whether a plain `oxgate` command line is Gunicorn's: its `-c`/`--config`
/// names a `.py` file or a `python:` module (uWSGI's -c takes no value), or
/// `GUNICORN_CMD_ARGS` is set, or `./gunicorn.conf.py` exists and every
/// option is one Gunicorn has (no uWSGI config file is named).
pub fn is_gunicorn_command_line(args: &[OsString], cmd_args_set: bool, conf_here: bool) -> bool {
    if args.is_empty() && !conf_here {
        return false;
    }
    let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    // A file of another name is Gunicorn's too if it is not a uWSGI one
    // (python.org's Procfile runs `gunicorn -c gunicorn.conf ...`).
    let gunicorn_config = |v: &str| {
        v.ends_with(".py")
            || v.starts_with("python:")
            || (!is_uwsgi_config_file(v) && std::path::Path::new(v).is_file())
    };
    let names_py_config = words
        .windows(2)
        .any(|w| (w[0] == "-c" || w[0] == "--config") && gunicorn_config(w[1]))
        || words
            .iter()
            .any(|w| w.strip_prefix("--config=").is_some_and(gunicorn_config));
    if names_py_config {
        return true;
    }
    (conf_here || cmd_args_set)
        && words.iter().all(|w| {
            if !w.starts_with('-') {
                return !is_uwsgi_config_file(w);
            }
            // Exact flags only: argparse's prefixes would take uWSGI's
            // --ini for --initgroups.
            let flag = w.split('=').next().unwrap_or(w);
            is_gunicorn_flag(flag)
        })
}

/// Whether an argument names a uWSGI config file (`app.ini`,
/// `app.ini:section`).
fn is_uwsgi_config_file(arg: &str) -> bool {
    let file = arg.split(':').next().unwrap_or(arg);
    [".ini", ".yaml", ".yml", ".json", ".xml", ".js"]
        .iter()
        .any(|ext| file.ends_with(ext))
}

/// Whether systemd passed this process its listening sockets (sd_listen_fds),
/// or the image this one replaces on a reload served sockets it had them from.
fn activated_by_systemd(env: &dyn Fn(&str) -> Option<String>) -> bool {
    if env(crate::lifecycle::SYSTEMD_SOCKETS_ENV).is_some() {
        return true;
    }
    env("LISTEN_PID").and_then(|p| p.trim().parse::<u32>().ok()) == Some(std::process::id())
        && env("LISTEN_FDS")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn read_with(
        args: &[&str],
        cmd_args: Option<&str>,
        file: Vec<(&str, PyValue)>,
    ) -> Result<GunicornConfig, ConfigError> {
        let file: Vec<(String, PyValue)> =
            file.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let reader = move |_: &str, _: Option<&std::path::Path>| Ok(file.clone());
        let env = |k: &str| (k == "WEB_CONCURRENCY").then(|| "3".to_string());
        read(os(args), cmd_args, &env, &reader)
    }

    fn values(cfg: &GunicornConfig, key: Key) -> Vec<&str> {
        cfg.settings
            .iter()
            .filter(|s| s.opt == key)
            .map(|s| s.value.as_str())
            .collect()
    }

    #[test]
    fn command_line_maps_onto_options() {
        let c = read_with(
            &[
                "-w4",
                "-b",
                "unix:/run/app.sock",
                "--bind=0.0.0.0",
                "-k",
                "gthread",
                "--threads",
                "8",
                "-t",
                "60",
                "--max-requests",
                "1000",
                "--max-requests-jit",
                "50",
                "--preload",
                "-e",
                "A=1",
                "--env",
                "B=2",
                "--pythonpath",
                "src,lib",
                "-m",
                "0o007",
                "app:application",
            ],
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::PROCESSES), ["4"]);
        assert_eq!(
            values(&c, &opt::HTTP_SOCKET),
            ["/run/app.sock", "0.0.0.0:8000"]
        );
        assert_eq!(values(&c, &opt::THREADS), ["8"]);
        // Eight threads: the timeout is a heartbeat, no harakiri.
        assert!(values(&c, &opt::HARAKIRI).is_empty());
        assert_eq!(values(&c, &opt::MAX_REQUESTS_JITTER), ["50"]);
        assert!(values(&c, &opt::LAZY_APPS).is_empty());
        assert_eq!(
            values(&c, &opt::ENV),
            [
                concat!(
                    "SERVER_SOFTWARE=oxgate/",
                    env!("CARGO_PKG_VERSION"),
                    " (gunicorn)"
                ),
                "A=1",
                "B=2"
            ]
        );
        // Each goes first in turn, with Gunicorn as with uWSGI: lib ends
        // up first on sys.path.
        assert_eq!(values(&c, &opt::PYTHONPATH), ["src", "lib"]);
        // The umask is the unix sockets' alone.
        assert!(values(&c, &opt::UMASK).is_empty());
        assert_eq!(values(&c, &opt::CHMOD_SOCKET), ["770"]);
        assert_eq!(values(&c, &opt::MODULE), ["app:application"]);
        assert_eq!(values(&c, &opt::DISABLE_LOGGING), ["true"]);
    }

    #[test]
    fn a_reloads_old_sync_workers_are_bounded_by_the_timeout_not_the_graceful_one() {
        let mercies = |args: &[&str]| {
            let c = read_with(args, None, vec![]).unwrap();
            (
                values(&c, &opt::WORKER_RELOAD_MERCY).join(","),
                values(&c, &opt::RELOAD_MERCY).join(","),
            )
        };
        let m = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            mercies(&["--graceful-timeout", "2", "app:app"]),
            m("30", "2")
        );
        assert_eq!(
            mercies(&["--graceful-timeout", "2", "-t", "60", "app:app"]),
            m("60", "2")
        );
        assert_eq!(mercies(&["-t", "0", "app:app"]), m("86400", "30"));
        let gthread = [
            "-k",
            "gthread",
            "--threads",
            "4",
            "--graceful-timeout",
            "2",
            "app:app",
        ];
        assert_eq!(mercies(&gthread), m("2", "2"));
    }

    #[test]
    fn request_limits_are_held_to_gunicorns_maxima() {
        let c = read_with(
            &[
                "--limit-request-line",
                "20000",
                "--limit-request-fields",
                "50000",
                "app:app",
            ],
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::LIMIT_REQUEST_LINE), ["8190"]);
        assert_eq!(values(&c, &opt::LIMIT_REQUEST_FIELDS), ["32768"]);
        let c = read_with(&["--limit-request-line", "0", "app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::LIMIT_REQUEST_LINE), ["0"]);
    }

    #[test]
    fn proxy_protocol_alone_is_auto_as_argparse_reads_it() {
        // Gunicorn's nargs="?": the flag alone (last, or before another
        // option) is "auto"; a mode word after it is its value.
        let mode = |args: &[&str], cmd: Option<&str>| {
            let c = read_with(args, cmd, vec![]).unwrap();
            let mode = values(&c, &opt::PROXY_PROTOCOL).join(",");
            (mode, values(&c, &opt::PROCESSES).join(","))
        };
        assert_eq!(mode(&["app:app", "--proxy-protocol"], None).0, "auto");
        assert_eq!(
            mode(&["--proxy-protocol", "-w", "2", "app:app"], None),
            ("auto".into(), "2".into())
        );
        assert_eq!(mode(&["--proxy-protocol", "v2", "app:app"], None).0, "v2");
        assert_eq!(mode(&["--proxy-protocol=v1", "app:app"], None).0, "v1");
        assert_eq!(mode(&["app:app"], Some("--proxy-protocol")).0, "auto");
    }

    #[test]
    fn certfile_and_keyfile_make_every_bind_https() {
        let file = vec![
            ("certfile", PyValue::Str("/c.pem".into())),
            ("keyfile", PyValue::Str("/k.pem".into())),
            ("ca_certs", PyValue::Str("/ca.pem".into())),
            ("cert_reqs", PyValue::Int(2)),
            ("http2_max_concurrent_streams", PyValue::Int(32)),
            ("http_protocols", PyValue::Str("h2,h1".into())),
        ];
        let c = read_with(&["-c", "/dev/null", "-b", ":8443", "app:app"], None, file).unwrap();
        assert!(
            values(&c, &opt::HTTP_SOCKET).is_empty(),
            "{:?}",
            values(&c, &opt::HTTP_SOCKET)
        );
        assert_eq!(
            values(&c, &opt::HTTPS_SOCKET),
            [":8443,/c.pem,/k.pem,,!/ca.pem"]
        );
        assert_eq!(values(&c, &opt::HTTP2_MAX_STREAMS), ["32"]);
        assert!(values(&c, &opt::HTTP2_OFF).is_empty());
        // CERT_OPTIONAL asks for a certificate without requiring one, and
        // checks one given (`?`).
        let file = vec![
            ("certfile", PyValue::Str("/c.pem".into())),
            ("keyfile", PyValue::Str("/k.pem".into())),
            ("ca_certs", PyValue::Str("/ca.pem".into())),
            ("cert_reqs", PyValue::Int(1)),
        ];
        let c = read_with(&["-c", "/dev/null", "app:app"], None, file).unwrap();
        assert_eq!(
            values(&c, &opt::HTTPS_SOCKET),
            ["127.0.0.1:8000,/c.pem,/k.pem,,?/ca.pem"]
        );
        // A certfile alone holds the key too.
        let one = vec![("certfile", PyValue::Str("/both.pem".into()))];
        let c = read_with(&["-c", "/dev/null", "app:app"], None, one).unwrap();
        assert_eq!(
            values(&c, &opt::HTTPS_SOCKET),
            ["127.0.0.1:8000,/both.pem,/both.pem,,"]
        );
        let one = vec![("keyfile", PyValue::Str("/k.pem".into()))];
        assert!(read_with(&["-c", "/dev/null", "app:app"], None, one).is_err());
    }

    #[test]
    fn a_logging_config_without_accesslog_is_said_to_leave_its_access_handler_unused() {
        let c = read_with(&["--log-config", "/l.ini", "app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::DISABLE_LOGGING), ["true"]);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("no access lines are written")),
            "{:?}",
            c.warnings
        );
        let c = read_with(&["--log-config-json", "/l.json", "app:app"], None, vec![]).unwrap();
        assert!(values(&c, &opt::DISABLE_LOGGING).is_empty());
        assert_eq!(values(&c, &opt::REQ_LOGGER), ["stdout"]);
        // Gunicorn's own default, `{}`, is no logging config; nor is an
        // empty file name.
        let empty = vec![("logconfig_dict", PyValue::List(vec![]))];
        let c = read_with(&["-c", "/dev/null", "app:app"], None, empty).unwrap();
        assert_eq!(values(&c, &opt::DISABLE_LOGGING), ["true"]);
        let c = read_with(&["--log-config-json", "", "app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::DISABLE_LOGGING), ["true"]);
        // `{}` does not hide a JSON file, nor Gunicorn's own loggers.
        let empty = vec![("logconfig_dict", PyValue::List(vec![]))];
        let c = read_with(
            &["-c", "/dev/null", "--log-config-json", "/l.json", "app:app"],
            None,
            empty,
        )
        .unwrap();
        assert_eq!(values(&c, &opt::LOG_CONFIG), ["/l.json"]);
        assert_eq!(values(&c, &opt::APP_LOGGERS), ["gunicorn"]);
        // A daemon's stdout is /dev/null: no access lines, in the error
        // log or anywhere.
        let c = read_with(
            &["--log-config-json", "/l.json", "-D", "app:app"],
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::DISABLE_LOGGING), ["true"]);
    }

    #[test]
    fn the_users_groups_are_taken_only_with_initgroups_as_in_gunicorn() {
        let c = read_with(&["-u", "app", "app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::NO_INITGROUPS), ["true"]);
        let c = read_with(&["-u", "app", "--initgroups", "app:app"], None, vec![]).unwrap();
        assert!(values(&c, &opt::NO_INITGROUPS).is_empty());
    }

    #[test]
    fn http_protocols_without_h2_turn_http2_off() {
        let c = read_with(&["--http-protocols", "h1", "app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::HTTP2_OFF), ["true"]);
        let c = read_with(&["--http-protocols", "h2,h1", "app:app"], None, vec![]).unwrap();
        assert!(values(&c, &opt::HTTP2_OFF).is_empty());
        // Gunicorn's default is "h1": HTTP/2 only when asked for.
        let c = read_with(&["app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::HTTP2_OFF), ["true"]);
    }

    #[test]
    fn defaults_are_gunicorns() {
        let c = read_with(&["app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::HTTP_SOCKET), ["127.0.0.1:8000"]);
        assert_eq!(values(&c, &opt::PROCESSES), ["3"], "$WEB_CONCURRENCY");
        assert_eq!(values(&c, &opt::HARAKIRI), ["30"]);
        assert_eq!(values(&c, &opt::LAZY_APPS), ["true"]);
        assert_eq!(values(&c, &opt::MASTER), ["true"]);
        assert_eq!(values(&c, &opt::KEEPALIVE_TIMEOUT), ["2"]);
    }

    #[test]
    fn precedence_is_command_line_then_variable_then_file() {
        let file = vec![
            ("workers", PyValue::Int(2)),
            (
                "bind",
                PyValue::List(vec!["unix:/a".into(), "unix:/b".into()]),
            ),
            ("timeout", PyValue::Int(10)),
            ("wsgi_app", PyValue::Str("file:app".into())),
            ("post_fork", PyValue::Callable),
            ("multiprocessing", PyValue::Other("module".into())),
            ("umask", PyValue::Int(0o22)),
            ("accesslog", PyValue::Str("-".into())),
        ];
        let c = read_with(
            &["-w", "5", "-c", "/dev/null"],
            Some("--timeout 20 -w 9"),
            file,
        )
        .unwrap();
        assert_eq!(values(&c, &opt::PROCESSES), ["5"]);
        assert_eq!(values(&c, &opt::HARAKIRI), ["20"]);
        // What the hooks' server.cfg answers over the file's own values:
        // the command line's and the variable's, typed.
        assert!(c.given.contains(&("workers".into(), PyValue::Int(5))));
        assert!(c.given.contains(&("timeout".into(), PyValue::Int(20))));
        assert!(!c.given.iter().any(|(name, _)| name == "bind"));
        assert_eq!(values(&c, &opt::HTTP_SOCKET), ["/a", "/b"]);
        assert_eq!(values(&c, &opt::MODULE), ["file:app"]);
        assert_eq!(values(&c, &opt::CHMOD_SOCKET), ["755"]);
        assert_eq!(c.hooks, ["post_fork"]);
        assert_eq!(
            values(&c, &opt::LOG_FORMAT),
            [
                r#"%(remote_addr) - %(basic_user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(rsize) "%(referer)" "%(uagent)""#
            ]
        );
        // A bind on the command line replaces the file's list.
        let c = read_with(
            &["-b", ":1", "-c", "/dev/null"],
            None,
            vec![
                ("bind", PyValue::List(vec!["unix:/a".into()])),
                ("wsgi_app", PyValue::Str("m:a".into())),
            ],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::HTTP_SOCKET), [":1"]);
    }

    #[test]
    fn keepalive_statsd_and_scheme_headers() {
        let c = read_with(
            &[
                "--keep-alive",
                "65",
                "--statsd-host",
                "localhost:9125",
                "--statsd-prefix",
                "web",
                "app:app",
            ],
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::KEEPALIVE_TIMEOUT), ["65"]);
        assert_eq!(values(&c, &opt::STATSD_HOST), ["localhost:9125"]);
        assert_eq!(values(&c, &opt::STATSD_PREFIX), ["web"]);
        // Gunicorn's scheme headers and trusted proxies, unless set.
        assert_eq!(
            values(&c, &opt::SECURE_SCHEME_HEADER),
            DEFAULT_SECURE_SCHEME_HEADERS
        );
        assert_eq!(values(&c, &opt::FORWARDED_ALLOW_IPS), ["127.0.0.1,::1"]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = read_with(
            &["-c", "/dev/null", "app:app"],
            None,
            vec![
                (
                    "secure_scheme_headers",
                    PyValue::List(vec!["X-SCHEME=https".into()]),
                ),
                ("forwarded_allow_ips", PyValue::Str("10.0.0.0/8".into())),
            ],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::SECURE_SCHEME_HEADER), ["X-SCHEME=https"]);
        assert_eq!(values(&c, &opt::FORWARDED_ALLOW_IPS), ["10.0.0.0/8"]);
        // An empty dict turns them off (not oxgate's default on).
        let c = read_with(
            &["-c", "/dev/null", "app:app"],
            None,
            vec![("secure_scheme_headers", PyValue::List(vec![]))],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::SECURE_SCHEME_HEADER), ["none"]);
    }

    #[test]
    fn forwarder_headers_take_script_name_for_wsgi_workers() {
        let c = read_with(&["app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::SCRIPT_NAME_HEADER), ["true"]);
        // uvicorn's worker reads no SCRIPT_NAME header, nor does a list
        // that leaves it out.
        let c = read_with(
            &["-k", "uvicorn.workers.UvicornWorker", "app:app"],
            None,
            vec![],
        )
        .unwrap();
        assert!(values(&c, &opt::SCRIPT_NAME_HEADER).is_empty());
        let c = read_with(
            &["-c", "/dev/null", "app:app"],
            None,
            vec![("forwarder_headers", PyValue::Str("PATH_INFO".into()))],
        )
        .unwrap();
        assert!(values(&c, &opt::SCRIPT_NAME_HEADER).is_empty());
    }

    #[test]
    fn unknown_ambiguous_and_ignored() {
        let e = read_with(&["--nonsense", "app:app"], None, vec![]).unwrap_err();
        assert!(e.0.contains("unknown option --nonsense"), "{}", e.0);
        let e = read_with(&["--log", "x", "app:app"], None, vec![]).unwrap_err();
        assert!(e.0.contains("ambiguous option --log"), "{}", e.0);
        let c = read_with(&["--worker-connections", "50", "app:app"], None, vec![]).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("worker_connections has no effect"))
        );
        let e = read_with(&["-k", "my.Worker", "app:app"], None, vec![]).unwrap_err();
        assert!(e.0.contains("worker_class"), "{}", e.0);
        let c = read_with(
            &["-k", "uvicorn.workers.UvicornWorker", "app:app"],
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(values(&c, &opt::INTERFACE), ["asgi"]);
        // oxgate's own long options pass through.
        let c = read_with(&["--stats", "127.0.0.1:1", "app:app"], None, vec![]).unwrap();
        assert_eq!(values(&c, &opt::STATS), ["127.0.0.1:1"]);
        let e = read_with(&["-w", "abc", "app:app"], None, vec![]).unwrap_err();
        assert!(
            e.0.contains("workers \"abc\": expected a whole number"),
            "{}",
            e.0
        );
        let e = read_with(&[], None, vec![]).unwrap_err();
        assert!(e.0.contains("no application given"), "{}", e.0);
    }

    #[test]
    fn every_setting_is_listed_once_and_flags_are_unique() {
        let mut names = std::collections::HashSet::new();
        let mut flags = std::collections::HashSet::new();
        for s in SETTINGS {
            assert!(names.insert(s.name), "{}", s.name);
            for f in s.flags {
                assert!(flags.insert(*f), "{f}");
            }
            assert_eq!(s.flags.is_empty(), s.arity == Arity::FileOnly, "{}", s.name);
        }
    }

    #[test]
    fn access_log_atoms() {
        assert_eq!(
            access_log_format(
                r#"%(h)s %({x-real-ip}i)s %({content-type}o)s %({REMOTE_ADDR}e)s %(D)s %(M)s"#
            )
            .unwrap(),
            "%(remote_addr) %(var.HTTP_X_REAL_IP) %(resp.content-type) %(var.REMOTE_ADDR) %(micros) %(msecs)"
        );
        // As Gunicorn: an unknown atom is `-`, `%%` is `%`, an environ
        // name is upper case.
        assert_eq!(
            access_log_format("%(zz)s 100%% %({remote_addr}e)s").unwrap(),
            "- 100% %(var.REMOTE_ADDR)"
        );
        assert!(access_log_format("%(h").is_err());
        assert!(access_log_format("%(h)").is_err());
        // Other conversions, widths and flags: the atom, unpadded (the
        // next atom's text was taken for this one's name).
        assert_eq!(
            access_log_format("A %(D)d %(h)s Z %(s)5s %(h)-12s %(L).3f %(r)r").unwrap(),
            "A %(micros) %(remote_addr) Z %(status) %(remote_addr) %(secs) %(method) %(uri) %(proto)"
        );
        assert_eq!(
            access_log_format("%({wsgi.url_scheme}e)s").unwrap(),
            "%(var.REQUEST_SCHEME)"
        );
    }

    #[test]
    fn which_command_lines_are_gunicorns() {
        assert!(is_gunicorn_command_line(
            &os(&["-c", "gunicorn.conf.py", "app:app"]),
            false,
            false
        ));
        assert!(is_gunicorn_command_line(
            &os(&["--config=python:conf", "app:app"]),
            false,
            false
        ));
        assert!(is_gunicorn_command_line(&os(&["app:app"]), true, false));
        // A config file of another name that is there (python.org's
        // `gunicorn -c gunicorn.conf`), not a uWSGI one.
        let dir = std::env::temp_dir().join(format!("oxgate-gconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["gunicorn.conf", "app.ini"] {
            std::fs::write(dir.join(name), "workers = 1\n").unwrap();
        }
        let conf = dir.join("gunicorn.conf").to_string_lossy().into_owned();
        let ini = dir.join("app.ini").to_string_lossy().into_owned();
        assert!(is_gunicorn_command_line(
            &os(&["-c", &conf, "app:app"]),
            false,
            false
        ));
        assert!(is_gunicorn_command_line(
            &os(&[&format!("--config={conf}"), "app:app"]),
            false,
            false
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["-c", &ini, "app:app"]),
            false,
            false
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["-c", "no-such-file", "app:app"]),
            false,
            false
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!is_gunicorn_command_line(
            &os(&["--http", ":1", "app:app"]),
            true,
            false
        ));
        assert!(is_gunicorn_command_line(
            &os(&["-w", "4", "app:app"]),
            false,
            true
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["-w", "4", "app:app"]),
            false,
            false
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["--http-socket", ":1", "app:app"]),
            false,
            true
        ));
        assert!(!is_gunicorn_command_line(&os(&["app.ini"]), false, true));
        assert!(!is_gunicorn_command_line(
            &os(&["app.ini:prod"]),
            false,
            true
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["--ini=app.ini"]),
            false,
            true
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["--ini", "app.ini"]),
            false,
            true
        ));
        assert!(!is_gunicorn_command_line(
            &os(&["-c", "--http", ":1"]),
            false,
            false
        ));
    }

    #[test]
    fn binds() {
        assert_eq!(bind_address("unix:/tmp/s").unwrap(), "/tmp/s");
        assert_eq!(bind_address("unix:///tmp/s").unwrap(), "/tmp/s");
        assert_eq!(bind_address("unix://app.sock").unwrap(), "app.sock");
        assert_eq!(bind_address("[::1]").unwrap(), "[::1]:8000");
        assert_eq!(bind_address("[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(bind_address("localhost").unwrap(), "localhost:8000");
        assert_eq!(bind_address("fd://3").unwrap(), "fd://3");
        assert!(bind_address("fd://x").is_err());
        assert_eq!(octal("18").unwrap(), "022");
        assert_eq!(octal("022").unwrap(), "022");
        assert_eq!(octal("0").unwrap(), "000");
        assert_eq!(octal("0o027").unwrap(), "027");
    }
}
