//! Every source of settings, in order: environment variables, then the
//! command line with each config file it names expanded in place.

use std::ffi::OsString;

use super::defs::{self, Key, Kind, opt};
use super::sources;
use super::value::switch_on;
use super::{gunicorn, uvicorn};

/// One value given for one option, in the order the sources gave them.
#[derive(Debug, Clone)]
pub struct Setting {
    pub opt: Key,
    pub value: String,
    pub origin: sources::Origin,
}

impl Setting {
    /// Gunicorn's `-w 4 app:app`: a module name cannot be a number, so a
    /// numeric -w/--module is Gunicorn's worker count.
    pub fn is_worker_count(&self) -> bool {
        self.opt == &opt::MODULE
            && !self.value.is_empty()
            && self.value.bytes().all(|b| b.is_ascii_digit())
    }
}

/// Everything the sources said: the options, and the keys that are not
/// options (uWSGI keeps those as placeholders).
#[derive(Debug, Default)]
pub struct Loaded {
    pub settings: Vec<Setting>,
    pub unknown: Vec<sources::Entry>,
    /// Warnings from reading the files themselves.
    pub read_warnings: Vec<String>,
    /// Whose rules the sources were read by, when not uWSGI's.
    pub dialect: Option<String>,
    /// A dialect's help, asked for (`oxgate uvicorn --help`): printed,
    /// and nothing else done.
    pub help: Option<String>,
    /// Gunicorn's settings given outside its config file (`Config`'s
    /// `gunicorn_given`).
    pub gunicorn_given: Vec<(String, super::gunicorn::PyValue)>,
}

/// The setting that counts for `key`: the last one given.
pub(super) fn last_given(settings: &[Setting], key: Key) -> Option<&Setting> {
    settings.iter().rev().find(|s| s.opt == key)
}

impl Loaded {
    /// Whether the switch `key` is on: as last given, else its default.
    pub fn flag(&self, key: Key) -> bool {
        self.value(key).is_some_and(switch_on)
    }

    /// The value of `key` as last given, else its default.
    pub fn value(&self, key: Key) -> Option<&str> {
        last_given(&self.settings, key)
            .map(|s| s.value.as_str())
            .or(key.default)
    }

    /// uWSGI options oxgate does not implement yet, and likely typos: one
    /// warning each. Under `strict`, every unknown key is an error.
    pub fn problems(&self) -> (Vec<String>, Vec<String>) {
        let strict = self.flag(&opt::STRICT);
        let mut warnings = self.read_warnings.clone();
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in &self.unknown {
            // A line of only `=` (a merge conflict's `=======`): uWSGI
            // passes over it, and so does oxgate.
            if e.key.is_empty() || !seen.insert(e.key.clone()) {
                continue;
            }
            if let Some(why) = refused_uwsgi_option(&e.key) {
                errors.push(format!("{}: {why}", e.origin));
                continue;
            }
            let msg = if defs::UWSGI_OPTIONS.contains(&e.key.as_str())
                || super::uwsgi_names::is_uwsgi_option(&e.key)
            {
                let effect = if strict {
                    " (--strict refuses it; without --strict it is warned of and has no effect)"
                } else {
                    "; it has no effect"
                };
                Some(format!(
                    "{}: uWSGI option '{}' is not implemented in oxgate yet{effect}",
                    e.origin, e.key
                ))
            } else {
                defs::suggest(&e.key).map(|s| {
                    format!(
                        "{}: unknown option '{}' (did you mean {s}?){}",
                        e.origin,
                        e.key,
                        if strict {
                            " (--strict refuses unknown keys)"
                        } else {
                            "; kept as a placeholder"
                        }
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
        let given = |key: Key| self.settings.iter().rev().find(|s| s.opt == key);
        if let (Some(module), Some(file)) = (given(&opt::MODULE), given(&opt::WSGI_FILE)) {
            warnings.push(format!(
                "{}: --wsgi-file {} is not served: --module {} ({}) is, as uWSGI serves its module and skips a second app for the same mountpoint",
                file.origin, file.value, module.value, module.origin
            ));
        }
        // A template (Jinja, Ansible, cookiecutter) copied without being
        // rendered: no value with `{{ name }}` in it can be meant.
        for s in &self.settings {
            if let Some(placeholder) = unrendered_placeholder(&s.value) {
                errors.push(format!(
                    "{}: {} = {:?} holds the template placeholder {placeholder}, left unrendered: this file is a template (Jinja, Ansible, cookiecutter); render it, or write the value in",
                    s.origin, s.opt.name, s.value
                ));
            }
        }
        // uWSGI's harakiri holds its PHP plugin's requests; oxgate's holds
        // the app's, and a pool's has a timeout of its own.
        if let (Some(h), Some(_), None) = (
            given(&opt::HARAKIRI),
            given(&opt::FASTCGI_APP),
            given(&opt::FASTCGI_APP_TIMEOUT),
        ) && h.value.trim() != "0"
        {
            warnings.push(format!(
                "{}: --harakiri does not hold --fastcgi-app requests: give them --fastcgi-app-timeout SECONDS (php-fpm's request_terminate_timeout)",
                h.origin
            ));
        }
        // uWSGI's `--log-encoder NAME:LOGGER ...` encodes that logger's
        // lines alone; oxgate's encoders apply to every line.
        for s in self
            .settings
            .iter()
            .filter(|s| s.opt == &opt::LOG_ENCODER || s.opt == &opt::LOG_REQ_ENCODER)
        {
            let name = s.value.split_whitespace().next().unwrap_or("");
            if let Some((_, logger)) = name.split_once(':')
                && !logger.is_empty()
            {
                warnings.push(format!(
                    "{}: --{} {:?}: the encoder applies to every line, not to logger {logger:?} alone, as in uWSGI",
                    s.origin, s.opt.name, s.value
                ));
            }
        }
        // Checked only: an accepted hook is what oxgate does already.
        for s in self
            .settings
            .iter()
            .filter(|s| s.opt == &opt::HOOK_MASTER_START)
        {
            match master_start_hook(&s.value) {
                Ok(None) => {}
                Ok(Some(why)) => warnings.push(format!(
                    "{}: --hook-master-start {:?}: {why}",
                    s.origin, s.value
                )),
                Err(why) => errors.push(format!(
                    "{}: --hook-master-start {:?}: {why} (oxgate's signals keep their meanings: docs/processes.md)",
                    s.origin, s.value
                )),
            }
        }
        (warnings, errors)
    }
}

/// uWSGI's `hook-master-start = unix_signal:N FUNCTION`, read as uWSGI
/// reads it (N up to the first space, by atoi; `unix_signal:15\t# ...
/// gracefully_kill_them_all` is 15): accepted where signal N already does
/// what FUNCTION does in oxgate (Docker images set SIGTERM to a graceful
/// stop this way); a FUNCTION oxgate does not know is warned about
/// (uWSGI finds no such function and logs it, and went on serving in our
/// test); a signal that would be remapped (uWSGI's own functions
/// included) is refused.
fn master_start_hook(hook: &str) -> Result<Option<String>, String> {
    use crate::lifecycle::{MasterCommand, ReloadKind};
    let Some((signal, function)) = hook
        .trim()
        .strip_prefix("unix_signal:")
        .and_then(|r| r.split_once(' '))
    else {
        return Err("only unix_signal:N FUNCTION hooks are understood".into());
    };
    let digits = signal.trim_start();
    let n = digits[..digits.bytes().take_while(u8::is_ascii_digit).count()]
        .parse::<i32>()
        .unwrap_or(0);
    let wanted = match function.trim() {
        "gracefully_kill_them_all" => |c: MasterCommand| matches!(c, MasterCommand::Stop { .. }),
        // uWSGI's immediate stop (its --die-on-term, and SIGQUIT's own
        // action): on a signal that stops oxgate, the stop is graceful
        // first, as --die-on-term is taken.
        "kill_them_all"
            if matches!(
                MasterCommand::from_signal(n),
                Some(MasterCommand::Stop { .. })
            ) =>
        {
            return Ok(Some(
                "oxgate stops gracefully on this signal, where kill_them_all stops at once (a second SIGINT or SIGQUIT does that here)".into(),
            ));
        }
        "grace_them_all" => {
            |c: MasterCommand| matches!(c, MasterCommand::Reload(ReloadKind::Graceful))
        }
        // uWSGI's own, which would give the signal another meaning.
        "kill_them_all"
        | "reap_them_all"
        | "end_me"
        | "goodbye_cruel_world"
        | "suspend_resume_them_all"
        | "stats"
        | "uwsgi_reload"
        | "brutal_reload" => |_: MasterCommand| false,
        other => {
            return Ok(Some(format!(
                "oxgate has no function {other:?}; ignored, as uWSGI goes on"
            )));
        }
    };
    match MasterCommand::from_signal(n) {
        Some(c) if wanted(c) => Ok(None),
        _ => Err("oxgate's signal does something else, and signals are not remapped".into()),
    }
}

/// uWSGI options that open a listening socket of a kind oxgate lacks.
const LISTENERS_OXGATE_LACKS: &[&str] = &[
    "https2",
    "http-to-https",
    "ssl-socket",
    "suwsgi-socket",
    "puwsgi-socket",
    "raw-socket",
    "zerg-server",
];

/// Why a uWSGI option oxgate lacks stops the start instead of being warned
/// about: passed over, it would leave the server doing something else than
/// the file asks, silently.
fn refused_uwsgi_option(key: &str) -> Option<String> {
    if super::uwsgi_names::is_routing_option(key) {
        return Some(format!(
            "uWSGI's internal routing ('{key}') is not implemented in oxgate, and its rule would not be applied; a rule that guards URLs would let every request through. Move it to the web server in front (nginx: a location with deny or return 403, a rewrite) or into the app"
        ));
    }
    if key == "emperor" || key.starts_with("emperor-") {
        return Some(format!(
            "uWSGI's emperor ('{key}') is not in oxgate: it would start no vassal. Run one oxgate for each vassal file instead; with systemd, a template unit oxgate@.service with ExecStart=/usr/bin/oxgate --ini /etc/uwsgi/vassals/%i.ini, enabled as oxgate@NAME for each (docs/migrating.md)"
        ));
    }
    if LISTENERS_OXGATE_LACKS.contains(&key) {
        let instead = match key {
            "https2" | "ssl-socket" => {
                "for HTTPS, use --https-socket ADDR,CERT,KEY (docs/tls-http2.md)"
            }
            "http-to-https" => {
                "a redirect from HTTP to HTTPS belongs to the web server in front (nginx: return 301 https://$host$request_uri;)"
            }
            "puwsgi-socket" => "for the uwsgi protocol, use --socket",
            _ => {
                "oxgate's sockets are --http-socket, --https-socket, --socket (uwsgi), --fastcgi-socket and --scgi-socket"
            }
        };
        return Some(format!(
            "uWSGI's '{key}' opens a socket oxgate does not have: the server would start without it, and refuse its clients; {instead}"
        ));
    }
    if super::uwsgi_names::is_confinement_option(key) {
        return Some(format!(
            "uWSGI's confinement option '{key}' is not implemented in oxgate; the app would run unconfined. Confine it with systemd (RootDirectory=, CapabilityBoundingSet=, PrivateTmp=, ProtectSystem=) or a container, and drop the key"
        ));
    }
    None
}

/// The first `{{ ... }}` in a value, if it holds one.
fn unrendered_placeholder(value: &str) -> Option<&str> {
    let start = value.find("{{")?;
    let len = value[start..].find("}}")? + 2;
    Some(&value[start..start + len])
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
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

/// Reads every source, with no Python to run a Gunicorn config file.
pub fn load<I>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let no_python = |_: &str, _: Option<&std::path::Path>| {
        Err("this build reads no Python config files".to_string())
    };
    load_with(args, &no_python)
}

/// Reads every source. A command line in Gunicorn's dialect (`oxgate
/// gunicorn ...`, or see [`gunicorn::is_gunicorn_command_line`]) is read
/// by Gunicorn's rules, its config file run by `run_file`. Otherwise
/// uWSGI's: `UWSGI_*`/`OXGATE_*` environment variables first (lowest
/// priority), then the command line in order, with each config file it
/// names expanded in place.
pub fn load_with<I>(
    args: I,
    run_file: gunicorn::PythonConfigReader<'_>,
) -> Result<Loaded, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // `oxgate uvicorn --help`, `oxgate gunicorn -h`: the dialect's own
    // options, as the real commands print theirs (not "no application").
    let asks_help = |rest: &[OsString], short: bool| {
        rest.iter()
            .take_while(|a| *a != "--")
            .any(|a| a == "--help" || (short && a == "-h"))
    };
    if args.first().is_some_and(|a| a == "uvicorn") && asks_help(&args[1..], false) {
        return Ok(Loaded {
            help: Some(uvicorn::help_text()),
            ..Loaded::default()
        });
    }
    if args.first().is_some_and(|a| a == "gunicorn") && asks_help(&args[1..], true) {
        return Ok(Loaded {
            help: Some(gunicorn::help_text()),
            ..Loaded::default()
        });
    }
    if args.first().is_some_and(|a| a == "uvicorn") {
        let env = |k: &str| std::env::var(k).ok();
        let read_file = |f: &str| std::fs::read_to_string(f).map_err(|e| e.to_string());
        let cfg = uvicorn::read(args[1..].to_vec(), &env, &read_file)?;
        return Ok(Loaded {
            dialect: Some("uvicorn's command line".into()),
            settings: cfg.settings,
            read_warnings: cfg.warnings,
            ..Loaded::default()
        });
    }
    let cmd_args = std::env::var("GUNICORN_CMD_ARGS").ok();
    // A uWSGI config file named in the environment (UWSGI_INI...) says a
    // plain command is uWSGI's, whatever a ./gunicorn.conf.py there says;
    // a command that is Gunicorn's by its own words stays Gunicorn's.
    let uwsgi_file_in_env = ENV_FILE_KEYS.iter().any(|k| {
        let name = format!("UWSGI_{}", k.to_ascii_uppercase());
        std::env::var_os(name).is_some_and(|v| !v.is_empty())
    });
    let gunicorn_args = if args.first().is_some_and(|a| a == "gunicorn") {
        Some(args[1..].to_vec())
    } else if gunicorn::is_gunicorn_command_line(
        &args,
        cmd_args.is_some(),
        !uwsgi_file_in_env && std::path::Path::new("gunicorn.conf.py").is_file(),
    ) {
        Some(args.clone())
    } else {
        None
    };
    if let Some(g) = gunicorn_args {
        let env = |k: &str| std::env::var(k).ok();
        let cfg = gunicorn::read(g, cmd_args.as_deref(), &env, run_file)?;
        return Ok(Loaded {
            dialect: Some(gunicorn::describe(&cfg)),
            settings: cfg.settings,
            read_warnings: cfg.warnings,
            gunicorn_given: cfg.given,
            ..Loaded::default()
        });
    }
    load_uwsgi(args)
}

/// uWSGI's short options that oxgate's table has no letter for (its
/// `--help`): the long name each stands for.
fn uwsgi_short_option(c: char) -> Option<&'static str> {
    Some(match c {
        'v' => "max-vars",
        'm' => "memory-report",
        'c' => "cgi-mode",
        'a' => "abstract-socket",
        'A' => "sharedarea",
        'Q' => "spooler",
        'J' => "test",
        'O' => "optimize",
        _ => return None,
    })
}

/// An option's value written `--name=VALUE`, or the next word when every
/// byte of it is `allowed` (a number, a mode): never a word that may be
/// the app or a file.
fn value_or_next_word(
    parser: &mut lexopt::Parser,
    shown: &str,
    allowed: impl Fn(u8) -> bool,
) -> Result<Option<String>, ConfigError> {
    if let Some(v) = parser.optional_value() {
        return os_to_string(v, shown).map(Some);
    }
    let mut raw = parser.raw_args().map_err(|e| ConfigError(e.to_string()))?;
    Ok(match raw.peek().and_then(|a| a.to_str()) {
        Some(v) if !v.is_empty() && v.bytes().all(&allowed) => {
            let v = v.to_string();
            raw.next();
            Some(v)
        }
        _ => None,
    })
}

/// The config files the environment may name (UWSGI_INI...).
const ENV_FILE_KEYS: &[&str] = &["ini", "yaml", "yml", "json", "js", "xml"];

fn load_uwsgi(args: Vec<OsString>) -> Result<Loaded, ConfigError> {
    use lexopt::Arg;
    use sources::{Origin, Reader};
    let mut reader = Reader::default();
    // (variable, option, value) for each UWSGI_*/OXGATE_* naming an option.
    // Any other UWSGI_* is a placeholder, as uWSGI exports every one
    // (`UWSGI_FOO=x` is `%(foo)`), and a uWSGI option oxgate lacks is
    // reported as in a file.
    let mut env: Vec<(String, Key, String)> = Vec::new();
    // As bytes: a variable that is not UTF-8 (a Latin-1 LANG value)
    // panicked std::env::vars(), and every command with it.
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().map(str::to_string) else {
            continue;
        };
        if !(name.starts_with("UWSGI_") || name.starts_with("OXGATE_")) {
            continue;
        }
        let value = value.to_string_lossy().into_owned();
        let key = name
            .split_once('_')
            .map_or("", |(_, k)| k)
            .to_ascii_lowercase()
            .replace('_', "-");
        match defs::lookup_exact(&key) {
            Some(opt) => env.push((name, opt, value)),
            None if name.starts_with("UWSGI_") && !key.is_empty() => {
                if super::uwsgi_names::is_uwsgi_option(&key) {
                    reader.push(&key, &value, Origin::Env(name));
                } else {
                    reader.set_placeholder(&key, &value);
                }
            }
            None => {}
        }
    }
    // Config files first, then the single options, each kind in name
    // order: UWSGI_HARAKIRI overrides the harakiri of the UWSGI_INI file.
    // The single options are placeholders already while the files are
    // read (their if-opt sees them), as they were when read first.
    let is_file = |opt: Key| sources::INCLUDE_KEYS.contains(&opt.name);
    env.sort_by(|(a, x, _), (b, y, _)| (!is_file(*x), a).cmp(&(!is_file(*y), b)));
    for (_, opt, value) in env.iter().filter(|(_, opt, _)| !is_file(*opt)) {
        reader.set_placeholder(opt.name, value);
    }
    for (name, opt, value) in env {
        let origin = Origin::Env(name);
        if is_file(opt) {
            reader.load_file(opt.name, &value, &origin)?;
        } else {
            reader.push(opt.name, &value, origin);
        }
    }

    let mut parser = lexopt::Parser::from_args(args);
    let mut apps = Vec::new();
    let mut bare_files = Vec::new();
    loop {
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            Err(e) => return err(format!("{e}")),
        };
        // uWSGI's other short options: their long names' meaning (a
        // warning for one oxgate does not implement, as written long).
        let arg = match arg {
            Arg::Short(c) if defs::lookup_short(c).is_none() => match uwsgi_short_option(c) {
                Some(name) => Arg::Long(name),
                None => arg,
            },
            arg => arg,
        };
        let (opt, shown) = match arg {
            // uWSGI's file and placeholder options, which are the reader's
            // and no setting's.
            ref a @ (Arg::Long(
                "include" | "inherit" | "config" | "set" | "set-ph" | "set-placeholder",
            )
            | Arg::Short('S')) => {
                let name = match a {
                    Arg::Long(name) => name.to_string(),
                    _ => "set".to_string(),
                };
                let value = parser
                    .value()
                    .map_err(|_| ConfigError(format!("--{name} needs a value")))
                    .and_then(|v| os_to_string(v, &name))?;
                if name == "inherit" {
                    reader.inherit(&value, &Origin::CommandLine);
                    continue;
                }
                if name == "include" || name == "config" {
                    reader.load_file("auto", &value, &Origin::CommandLine)?;
                    continue;
                }
                let Some((k, v)) = value.split_once('=').filter(|(k, _)| !k.trim().is_empty())
                else {
                    return err(format!("--{name} {value:?}: expected NAME=VALUE"));
                };
                if name == "set" {
                    reader.push_command_line(k.trim(), v.trim());
                } else {
                    reader.set_placeholder(k.trim(), v.trim());
                }
                continue;
            }
            Arg::Long(name) => match defs::lookup(name) {
                Some(o) => (o, format!("--{name}")),
                // A uWSGI option real configs use that oxgate does not
                // have yet: a warning, as in a config file (an error under
                // `strict`). Its value is taken as uWSGI's getopt takes it:
                // a flag's never (`--reuse-port app.py`), a required one's
                // always (`--procname myapp`). Where uWSGI's table is not
                // at hand, only a value written `--name=value`, or a number
                // (`--cheaper 2`), is taken, never a word that may be the
                // app or a file; without one it is an error.
                None if defs::UWSGI_OPTIONS.contains(&name)
                    || super::uwsgi_names::is_uwsgi_option(name) =>
                {
                    let name = name.to_string();
                    let value = match super::uwsgi_names::takes_next_word(&name) {
                        Some(false) => match parser.optional_value() {
                            Some(v) => Some(os_to_string(v, &name)?),
                            None => Some("true".to_string()),
                        },
                        Some(true) => Some(
                            parser
                                .value()
                                .map_err(|_| ConfigError(format!("--{name} needs a value")))
                                .and_then(|v| os_to_string(v, &name))?,
                        ),
                        None => value_or_next_word(&mut parser, &name, |c| c.is_ascii_digit())?,
                    };
                    let Some(value) = value else {
                        return err(format!(
                            "unknown option --{name} (a uWSGI option oxgate does not implement yet; written --{name}=VALUE it is warned about and passed over)"
                        ));
                    };
                    reader.push(&name, &value, Origin::CommandLine);
                    continue;
                }
                None => {
                    let flag = format!("--{name}");
                    let hint = if super::gunicorn::is_gunicorn_flag(&flag) {
                        " (it is Gunicorn's: begin the command with 'oxgate gunicorn' to read it as Gunicorn reads it)"
                            .to_string()
                    } else if uvicorn::is_uvicorn_flag(&flag) {
                        " (it is uvicorn's: begin the command with 'oxgate uvicorn' to read it as uvicorn reads it)"
                            .to_string()
                    } else {
                        defs::suggest(name)
                            .map(|s| format!(" (did you mean --{s}?)"))
                            .unwrap_or_default()
                    };
                    return err(format!(
                        "unknown option --{name}{hint}; run 'oxgate --help' for the list"
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
                let key = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    &opt::BUFFER_SIZE
                } else {
                    &opt::BIND
                };
                reader.push(key.name, &v, Origin::CommandLine);
                continue;
            }
            Arg::Short(c) => match defs::lookup_short(c) {
                Some(o) => (o, format!("-{c}")),
                None => {
                    let hint = if super::gunicorn::is_gunicorn_flag(&format!("-{c}")) {
                        " (it is Gunicorn's: begin the command with 'oxgate gunicorn' to read it as Gunicorn reads it)"
                    } else {
                        ""
                    };
                    return err(format!(
                        "unknown option -{c}{hint}; run 'oxgate --help' for the list"
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
                    // After every option, as uWSGI's getopt moves bare
                    // arguments to the end: `uwsgi app.ini --processes 5`
                    // runs the file's processes.
                    bare_files.push(v);
                } else {
                    apps.push(v);
                }
                continue;
            }
        };
        let value = if opt.name == opt::CHMOD_SOCKET.name {
            // uWSGI's optional mode: `-C`, `-C=660`, and (as oxgate has
            // always read it) `-C 660`, a word that is not a mode left for
            // what follows.
            value_or_next_word(&mut parser, &shown, |c| (b'0'..=b'7').contains(&c))?
                .unwrap_or_else(|| "true".to_string())
        } else if matches!(opt.kind, Kind::Flag | Kind::FlagOrStr) {
            // A short flag takes no value: what follows it in its cluster
            // are more options (`-MTp4` is -M -T -p 4, as getopt reads it).
            let attached = match shown.starts_with("--") {
                true => parser.optional_value(),
                false => None,
            };
            match attached {
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
            reader.push_command_line(opt.name, &value);
        }
    }
    for file in &bare_files {
        reader.load_file("auto", file, &Origin::CommandLine)?;
    }
    // Gunicorn's `oxgate pkg.mod:app` and uWSGI's `oxgate app.py` shortcuts.
    match apps.len() {
        0 => {}
        1 => {
            // As uWSGI's python plugin reads it: FILE.py or FILE.wsgi,
            // with `:callable` or without, is a file; anything else a
            // module, `pkg.mod:app` or Gunicorn's `app:app`.
            let p = apps.remove(0);
            // A number is no app, and not Gunicorn's worker count either
            // (that is `-w 4`): most likely the value of an option that
            // takes one only attached (`--chmod-socket 888`: not a mode).
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                return err(format!(
                    "argument {p:?} is a number, not an application; an option's value that is not taken from the next word is written attached, --option={p} (for the worker count: --processes {p})"
                ));
            }
            let (path, callable) = match p.rsplit_once(':') {
                Some((path, callable)) => (path, Some(callable)),
                None => (p.as_str(), None),
            };
            // (Django's `myproject.wsgi:application` is a module: a name
            // ending in .wsgi is a file only if there is one.)
            if path.ends_with(".py")
                || (path.ends_with(".wsgi") && std::path::Path::new(path).is_file())
            {
                reader.push(opt::WSGI_FILE.name, path, Origin::CommandLine);
                if let Some(callable) = callable.filter(|c| !c.is_empty()) {
                    reader.push(opt::CALLABLE.name, callable, Origin::CommandLine);
                }
            } else {
                reader.push(opt::MODULE.name, &p, Origin::CommandLine);
            }
        }
        _ => {
            return err(format!(
                "expected at most one application argument (like pkg.mod:app), got {apps:?}"
            ));
        }
    }

    reader.read_inherited()?;
    reader.resolve_late();
    let mut loaded = Loaded {
        read_warnings: std::mem::take(&mut reader.warnings),
        ..Loaded::default()
    };
    for e in reader.entries {
        // Command-line entries carry canonical names; file keys count as
        // written (uWSGI: `base_dir` is a placeholder, not base-dir).
        match defs::lookup_exact(&e.key) {
            Some(opt) => {
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

fn os_to_string(v: OsString, shown: &str) -> Result<String, ConfigError> {
    v.into_string()
        .map_err(|v| ConfigError(format!("the value of {shown} ({v:?}) is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::master_start_hook;

    #[test]
    fn master_start_hooks_are_read_as_uwsgi_reads_them() {
        for ok in [
            "unix_signal:15 gracefully_kill_them_all",
            "unix_signal:2 gracefully_kill_them_all",
            "unix_signal:1 grace_them_all",
            // N is read by atoi up to the first space: a comment between
            // (a Helm chart's) is passed over, as in uWSGI.
            "unix_signal:15\t# gracefully_kill_them_all",
        ] {
            assert_eq!(master_start_hook(ok), Ok(None), "{ok}");
        }
        for unknown in [
            "unix_signal:15 mystery",
            "unix_signal:15 gracefully_kill_them_all;",
            "unix_signal:15 reload_them_all",
            // An immediate stop, where oxgate's is graceful first.
            "unix_signal:15 kill_them_all",
        ] {
            assert!(
                master_start_hook(unknown).is_ok_and(|w| w.is_some()),
                "{unknown}"
            );
        }
        for bad in [
            "unix_signal:1 gracefully_kill_them_all",
            "unix_signal:15 grace_them_all",
            "unix_signal:15 reap_them_all",
            "unix_signal:1 kill_them_all",
            "unix_signal:15",
            "exec:echo hi",
        ] {
            assert!(master_start_hook(bad).is_err(), "{bad}");
        }
    }
}
