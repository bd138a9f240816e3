//! Ordered settings resolved into a [`Config`], or a help, version or
//! control request.

use std::path::PathBuf;
use std::time::Duration;

use super::defs::{Key, opt};
use super::parse::{ConfigError, Setting, err, last_given};
use super::settings::*;
use super::value::{parse_bool, parse_int, switch_on};
use crate::lifecycle::{Control, ReloadKind};
use crate::listen::Protocol;
use crate::log::route::{LogPlan, Logger, Route, SyslogAddr, Target, udp_log_address};
use crate::request::wrappers::Trusted;

/// `pkg.mod`, `pkg.mod:app` or `pkg.mod:factory()`; `callable` (from
/// `--callable` or its default) when no callable is named.
fn module_spec(option: &str, value: &str, callable: &str) -> Result<AppSpec, ConfigError> {
    let (module, named) = match value.split_once(':') {
        Some((m, c)) => (m, Some(c.to_string())),
        None => (value, None),
    };
    if module.is_empty() || named.as_deref() == Some("") {
        return err(format!(
            "{option} {value:?}: expected pkg.mod, pkg.mod:app or pkg.mod:factory()"
        ));
    }
    Ok(AppSpec {
        source: AppSource::Module(module.to_string()),
        callable: named.unwrap_or_else(|| callable.to_string()),
    })
}

/// The settings read through typed keys: what was given last, else the
/// option table's default, so a default is written in one place.
struct Values<'a>(&'a [Setting]);

/// `--https-socket ADDR,CERT,KEY[,CIPHERS,CA]` (uWSGI's fields; a CA
/// with a leading `!` requires client certificates), each with
/// `--https-client-ca` and `--https-client-required` filling in what its
/// fields leave out.
fn https_sockets(r: &Values<'_>) -> Result<Vec<HttpsSocket>, ConfigError> {
    let default_ca = r.path(&opt::HTTPS_CLIENT_CA);
    let required = r.flag(&opt::HTTPS_CLIENT_REQUIRED)?;
    let sockets = r
        .all(&opt::HTTPS_SOCKET)
        .iter()
        .map(|spec| {
            let fields: Vec<&str> = spec.split(',').map(str::trim).collect();
            let bad = |why: &str| {
                ConfigError(format!(
                    "--https-socket {spec:?}: {why} (expected ADDR,CERT,KEY[,CIPHERS,CA], for example :8443,site.crt,site.key)"
                ))
            };
            if fields.len() < 3 || fields.len() > 5 {
                return Err(bad("needs three to five comma-separated fields"));
            }
            if fields[..3].iter().any(|f| f.is_empty()) {
                return Err(bad("the address, certificate and key may not be empty"));
            }
            // A leading `!` requires the certificate. Without it, one given
            // is checked, failing the handshake on a bad one, as uWSGI's
            // SSL_VERIFY_PEER does (`?` says the same, for Python's
            // CERT_OPTIONAL). Only `--https-client-ca` serves a client
            // whose certificate fails, telling the app why.
            let (ca, ca_required, verified_when_given) = match fields.get(4) {
                Some(&mark @ ("!" | "?")) => {
                    return Err(bad(&format!(
                        "{mark} asks for client certificates, but names no CA after it"
                    )));
                }
                Some(ca) if ca.starts_with('!') => (Some(PathBuf::from(&ca[1..])), true, false),
                Some(ca) if ca.starts_with('?') => (Some(PathBuf::from(&ca[1..])), false, true),
                Some(ca) if !ca.is_empty() => (Some(PathBuf::from(ca)), false, true),
                _ => (default_ca.clone(), false, false),
            };
            let client_ca = ca.filter(|p| !p.as_os_str().is_empty());
            Ok(HttpsSocket {
                addr: fields[0].to_string(),
                cert: PathBuf::from(fields[1]),
                key: PathBuf::from(fields[2]),
                ciphers: fields.get(3).unwrap_or(&"").to_string(),
                client_required: client_ca.is_some() && (ca_required || required),
                client_verified_when_given: verified_when_given,
                client_ca,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if required && sockets.iter().any(|s| s.client_ca.is_none()) {
        return err(
            "--https-client-required needs --https-client-ca FILE (or a CA in each --https-socket's fifth field): the CA whose client certificates are accepted",
        );
    }
    Ok(sockets)
}

/// `--static-map` and `--static-map2`, in the order given: MOUNT=DIR each.
fn static_maps(r: &Values<'_>) -> Result<Vec<StaticMap>, ConfigError> {
    r.0.iter()
        .filter(|s| s.opt == &opt::STATIC_MAP || s.opt == &opt::STATIC_MAP2)
        .map(|s| {
            let name = s.opt.name;
            let (mount, dir) = s.value.split_once('=').ok_or_else(|| {
                ConfigError(format!("--{name} {:?}: expected MOUNT=DIR", s.value))
            })?;
            let mount = mount.trim();
            if !mount.starts_with('/') {
                return Err(ConfigError(format!(
                    "--{name} {:?}: the mount is a URL path, starting with /",
                    s.value
                )));
            }
            if dir.trim().is_empty() {
                return Err(ConfigError(format!(
                    "--{name} {:?}: no directory after =",
                    s.value
                )));
            }
            Ok(StaticMap {
                mount: mount.trim_end_matches('/').to_string(),
                dir: PathBuf::from(dir.trim()),
                keep_mount: s.opt == &opt::STATIC_MAP2,
            })
        })
        .collect()
}

/// `--cgi [MOUNT=]DIR` and its helpers. As uWSGI reads it, a value whose
/// part before `=` is not a URL path is a directory with `=` in its name.
fn cgi_settings(r: &Values<'_>) -> Result<CgiSettings, ConfigError> {
    let dirs = r
        .all(&opt::CGI)
        .into_iter()
        .map(|v| {
            let (mount, dir) = match v.split_once('=') {
                Some((m, d)) if m.trim().starts_with('/') => (m.trim(), d.trim()),
                _ => ("", v.trim()),
            };
            if dir.is_empty() {
                return err(format!("--cgi {v:?}: expected [MOUNT=]DIR"));
            }
            Ok(CgiDir {
                mount: mount.trim_end_matches('/').to_string(),
                path: PathBuf::from(dir),
            })
        })
        .collect::<Result<_, _>>()?;
    let with_dot = |e: &str| {
        let e = e.trim();
        if e.starts_with('.') {
            e.to_string()
        } else {
            format!(".{e}")
        }
    };
    let allowed_ext = r
        .all(&opt::CGI_ALLOWED_EXT)
        .iter()
        .flat_map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|e| !e.trim().is_empty())
        .map(|e| with_dot(&e))
        .collect();
    let helpers = r
        .all(&opt::CGI_HELPER)
        .iter()
        .map(|v| {
            let (ext, command) = v
                .split_once('=')
                .filter(|(e, c)| !e.trim().is_empty() && !c.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "--cgi-helper {v:?}: expected EXT=COMMAND, like .py=python3"
                    ))
                })?;
            let words = command.split_whitespace().map(str::to_string).collect();
            Ok((with_dot(ext), words))
        })
        .collect::<Result<_, ConfigError>>()?;
    Ok(CgiSettings {
        dirs,
        allowed_ext,
        helpers,
        index: r.all(&opt::CGI_INDEX),
        unset: r.all(&opt::CGI_UNSET),
        timeout: r.positive_seconds(&opt::CGI_TIMEOUT)?,
    })
}

/// `--fastcgi-pass [MOUNT=]ADDR` and the document root options.
fn fastcgi_settings(r: &Values<'_>) -> Result<FastcgiSettings, ConfigError> {
    let passes = r
        .all(&opt::FASTCGI_PASS)
        .into_iter()
        .map(|v| {
            let (mount, addr) = match v.split_once('=') {
                Some((m, a)) if m.trim().starts_with('/') => (m.trim(), a.trim()),
                _ => ("", v.trim()),
            };
            let addr = crate::listen::parse(addr)
                .map_err(|e| ConfigError(format!("--fastcgi-pass {v:?}: {e}")))?;
            if let crate::listen::Address::Fd(_) = addr {
                return err(format!(
                    "--fastcgi-pass {v:?}: fd://N names a socket to listen on, not a server to connect to"
                ));
            }
            Ok(FastcgiPass {
                mount: mount.trim_end_matches('/').to_string(),
                addr,
            })
        })
        .collect::<Result<_, ConfigError>>()?;
    // Refused, as php-fpm refuses a pm.max_children of 0: a pool of another
    // size than the one asked for was started without a word.
    let processes = match r.value(&opt::FASTCGI_APP_PROCESSES) {
        Some(v) if (1..=1024).contains(&parse_int(v)) => parse_int(v) as usize,
        v => {
            return err(format!(
                "--fastcgi-app-processes {:?}: expected a number from 1 to 1024",
                v.unwrap_or_default()
            ));
        }
    };
    let max_requests = r.count(&opt::FASTCGI_APP_MAX_REQUESTS);
    let apps = r
        .all(&opt::FASTCGI_APP)
        .into_iter()
        .map(|v| fastcgi_app(&v, processes, max_requests))
        .collect::<Result<_, ConfigError>>()?;
    let env = r
        .all(&opt::FASTCGI_APP_ENV)
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => err(format!("--fastcgi-app-env {kv:?}: expected KEY=VALUE")),
        })
        .collect::<Result<_, ConfigError>>()?;
    let fallback = r.string(&opt::FASTCGI_APP_FALLBACK);
    if let Some(f) = &fallback
        && !f.starts_with('/')
    {
        return err(format!(
            "--fastcgi-app-fallback {f:?}: a path starts with /, like /index.php"
        ));
    }
    let spare_text = r
        .string(&opt::FASTCGI_APP_SPARE)
        .unwrap_or_else(|| "1:3".into());
    let spare = spare_text
        .split_once(':')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .filter(|(min, max): &(usize, usize)| min <= max)
        .ok_or_else(|| {
            ConfigError(format!(
                "--fastcgi-app-spare {spare_text:?}: expected MIN:MAX, like 1:3"
            ))
        })?;
    Ok(FastcgiSettings {
        apps,
        env,
        pm: r.choice(&opt::FASTCGI_APP_PM)?,
        spare,
        idle_timeout: r.duration(&opt::FASTCGI_APP_IDLE_TIMEOUT),
        passes,
        docroot: r.path(&opt::FASTCGI_APP_DOCROOT),
        index: r.all(&opt::FASTCGI_APP_INDEX),
        fallback,
        timeout: r.seconds(&opt::FASTCGI_APP_TIMEOUT),
        slowlog: r.seconds(&opt::FASTCGI_APP_SLOWLOG),
    })
}

/// `[MOUNT=]COMMAND`, or uWSGI's keyval form
/// `mount=/,command=php-cgi,processes=8,max-requests=500`.
fn fastcgi_app(
    v: &str,
    processes: usize,
    max_requests: Option<u64>,
) -> Result<FastcgiApp, ConfigError> {
    let bad = |why: &str| ConfigError(format!("--fastcgi-app {v:?}: {why}"));
    let keyval = v.trim_start().starts_with("mount=") || v.trim_start().starts_with("command=");
    let (mount, command, processes, max_requests) = if keyval {
        let (mut mount, mut command, mut n, mut max) =
            (String::new(), None, processes, max_requests);
        for part in v.split(',') {
            let (k, val) = part
                .split_once('=')
                .ok_or_else(|| bad("expected key=value pairs"))?;
            let val = val.trim();
            match k.trim() {
                "mount" => mount = val.to_string(),
                "command" => command = Some(val.to_string()),
                "processes" => {
                    n = val
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| bad("processes is a number from 1 to 1024"))?
                }
                "max-requests" => max = val.parse().ok().filter(|n| *n > 0),
                other => {
                    return Err(bad(&format!(
                        "unknown key {other:?} (mount, command, processes, max-requests)"
                    )));
                }
            }
        }
        (mount, command.ok_or_else(|| bad("no command="))?, n, max)
    } else {
        match v.split_once('=') {
            Some((m, c)) if m.trim().starts_with('/') && !m.contains(' ') => {
                (m.trim().to_string(), c.to_string(), processes, max_requests)
            }
            _ => (String::new(), v.to_string(), processes, max_requests),
        }
    };
    // Split as a shell splits words: `-d 'date.timezone=Europe/Paris'`.
    let command: Vec<String> =
        shlex::split(&command).ok_or_else(|| bad("a quote is not closed in the command"))?;
    if command.is_empty() {
        return Err(bad("no command"));
    }
    if !mount.is_empty() && !mount.starts_with('/') {
        return Err(bad("the mount is a URL path, starting with /"));
    }
    Ok(FastcgiApp {
        mount: mount.trim_end_matches('/').to_string(),
        command,
        processes,
        max_requests,
    })
}

/// "X SECONDS" (uWSGI's form for the regex options) or "X=SECONDS": the
/// last space or `=` splits, so a regex may hold either.
fn value_and_seconds(key: Key, v: &str) -> Result<(String, u64), ConfigError> {
    let v = v.trim();
    let split = v.rfind(char::is_whitespace).or_else(|| v.rfind('='));
    let parsed = split.and_then(|i| {
        let (x, secs) = (v[..i].trim(), v[i + 1..].trim());
        let secs = secs.parse::<u64>().ok()?;
        (!x.is_empty()).then(|| (x.to_string(), secs))
    });
    parsed.ok_or_else(|| {
        ConfigError(format!(
            "--{} {v:?}: expected {} (seconds a whole number)",
            key.name, key.value_name
        ))
    })
}

/// A `--static-expires*` option and its -mtime form, in that order (as
/// uWSGI tries them), each value `MATCH SECONDS` made into a rule.
fn expiry_rules<M>(
    r: &Values<'_>,
    keys: [Key; 2],
    matcher: impl Fn(Key, String) -> Result<M, ConfigError>,
) -> Result<Vec<Expiry<M>>, ConfigError> {
    let mut rules = Vec::new();
    for (key, after_mtime) in [(keys[0], false), (keys[1], true)] {
        for v in r.all(key) {
            let (on, seconds) = value_and_seconds(key, &v)?;
            rules.push(Expiry {
                on: matcher(key, on)?,
                seconds,
                after_mtime,
            });
        }
    }
    Ok(rules)
}

fn regex_of(key: Key, pattern: String) -> Result<regex::Regex, ConfigError> {
    regex::Regex::new(&pattern).map_err(|e| ConfigError(format!("--{} {pattern:?}: {e}", key.name)))
}

/// `--forwarded-allow-ips`, else `$FORWARDED_ALLOW_IPS` (uvicorn's and
/// Gunicorn's variable), else the default.
fn forwarded_allow_ips(r: &Values<'_>) -> Result<Vec<Trusted>, ConfigError> {
    let list = match r.given(&opt::FORWARDED_ALLOW_IPS) {
        Some(v) => v.to_string(),
        None => std::env::var("FORWARDED_ALLOW_IPS")
            .unwrap_or_else(|_| r.defaulted(&opt::FORWARDED_ALLOW_IPS).to_string()),
    };
    Trusted::parse_list(&list).map_err(|e| ConfigError(format!("--forwarded-allow-ips: {e}")))
}

/// `--secure-scheme-header NAME=VALUE`s, as CGI names.
fn secure_scheme(r: &Values<'_>) -> Result<Option<SecureScheme>, ConfigError> {
    let mut given = r.all(&opt::SECURE_SCHEME_HEADER);
    // Given none: X-Forwarded-Proto from the trusted proxies (loopback
    // unless --forwarded-allow-ips says), as Gunicorn and uvicorn read it
    // by default (uWSGI from anyone): behind nginx ending TLS on the same
    // host, a Django that redirects to https looped. `none` turns it off.
    let defaulted = given.is_empty();
    if defaulted {
        // Not beside RFC 7239's Forwarded: one family is read, never both
        // (a proxy that sets one passes a client's own other on); nor when
        // the proxy headers were turned off.
        let not_read = r.given(&opt::PROXY_HEADERS).is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("forwarded") || v.eq_ignore_ascii_case("off")
        });
        if not_read {
            return Ok(None);
        }
        given.push("X-Forwarded-Proto=https".to_string());
    }
    if given.iter().any(|h| h.trim().eq_ignore_ascii_case("none")) {
        if given.len() > 1 {
            return err("--secure-scheme-header none: turns the headers off; give it alone");
        }
        return Ok(None);
    }
    let mut headers = Vec::new();
    for h in &given {
        let Some((name, value)) = h.split_once('=') else {
            return err(format!(
                "--secure-scheme-header {h:?}: expected NAME=VALUE, as X-Forwarded-Proto=https"
            ));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(crate::request::is_token_byte) {
            return err(format!(
                "--secure-scheme-header {h:?}: {name:?} is not a header name"
            ));
        }
        headers.push((
            format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_")),
            value.trim().to_string(),
        ));
    }
    let trusted = forwarded_allow_ips(r)?;
    Ok(Some(SecureScheme {
        unix_sockets_trusted: !defaulted
            || trusted
                .iter()
                .any(|t| matches!(t, crate::request::wrappers::Trusted::Any)),
        trusted,
        headers,
    }))
}

/// `--add-header "Name: value"`.
fn added_header(h: &str) -> Result<(String, String), ConfigError> {
    let (name, value) = h.split_once(':').unwrap_or((h, ""));
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() || !name.bytes().all(crate::request::is_token_byte) {
        return err(format!(
            "--add-header {h:?}: expected \"Name: value\" with a header name"
        ));
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return err(format!(
            "--add-header {h:?}: a header value cannot hold control characters"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// An option `resolve()` needs a default for has none in the table: a bug
/// any resolve test finds.
fn no_default(key: Key) -> ! {
    panic!("--{} needs a default in src/config/defs.rs", key.name)
}

impl<'a> Values<'a> {
    /// The value given last, if any.
    fn given(&self, key: Key) -> Option<&'a str> {
        last_given(self.0, key).map(|s| s.value.as_str())
    }
    /// The value given last, else the table's default.
    fn value(&self, key: Key) -> Option<&'a str> {
        self.given(key).or(key.default)
    }
    /// As `value`, for an option the table gives a default.
    fn defaulted(&self, key: Key) -> &'a str {
        self.value(key).unwrap_or_else(|| no_default(key))
    }
    fn default_int(key: Key) -> i64 {
        parse_int(key.default.unwrap_or_else(|| no_default(key)))
    }
    /// Every value given, in order (a repeatable option).
    fn all(&self, key: Key) -> Vec<String> {
        self.0
            .iter()
            .filter(|s| s.opt == key)
            .map(|s| s.value.clone())
            .collect()
    }
    fn paths(&self, key: Key) -> Vec<PathBuf> {
        self.all(key).into_iter().map(PathBuf::from).collect()
    }
    fn path(&self, key: Key) -> Option<PathBuf> {
        self.value(key).map(PathBuf::from)
    }
    fn string(&self, key: Key) -> Option<String> {
        self.value(key).map(str::to_string)
    }
    fn flag(&self, key: Key) -> Result<bool, ConfigError> {
        match self.value(key) {
            None => Ok(false),
            Some(v) => Ok(switch_on(v)),
        }
    }
    /// As in uWSGI, 0 (which is also what `threads = true` reads as)
    /// means the default; only a negative number is refused.
    fn positive_or(&self, key: Key, default: i64) -> Result<i64, ConfigError> {
        match self.given(key) {
            None => Ok(default),
            Some(v) => match parse_int(v) {
                0 => Ok(default),
                n if n < 0 => err(format!(
                    "--{} must be a positive number, not {v:?}",
                    key.name
                )),
                n => Ok(n),
            },
        }
    }
    /// `positive_or` with the table's default.
    fn positive(&self, key: Key) -> Result<i64, ConfigError> {
        self.positive_or(key, Self::default_int(key))
    }
    /// The number given or its default, whichever is first above 0 (0 and
    /// less mean off, as in uWSGI).
    fn count(&self, key: Key) -> Option<u64> {
        [self.given(key), key.default]
            .into_iter()
            .flatten()
            .map(parse_int)
            .find(|n| *n > 0)
            .map(|n| n as u64)
    }
    /// The number given, else the table's default.
    fn int(&self, key: Key) -> i64 {
        parse_int(self.defaulted(key))
    }
    /// Whole seconds, at most a century ([`CENTURY`]); 0 is off.
    fn seconds(&self, key: Key) -> Option<Duration> {
        self.count(key).map(|s| Duration::from_secs(s.min(CENTURY)))
    }
    /// Seconds to wait, 0 included, else the table's default: a mercy or a
    /// minimum lifetime of 0 is no wait at all (uWSGI's meaning, and what
    /// Gunicorn's `graceful_timeout = 0` and the `max_requests` it has no
    /// minimum for ask), not the default's.
    fn wait(&self, key: Key) -> Duration {
        match self.given(key) {
            Some(v) => Duration::from_secs(parse_int(v).clamp(0, CENTURY as i64) as u64),
            None => self.duration(key),
        }
    }
    /// `seconds` for an option the table gives a default.
    fn duration(&self, key: Key) -> Duration {
        self.seconds(key).unwrap_or_else(|| no_default(key))
    }
    /// Seconds that may have a fraction (uvicorn's `20.0`); 0 is off.
    fn fractional_seconds(&self, key: Key) -> Result<Option<Duration>, ConfigError> {
        let v = self.defaulted(key).trim();
        match v.parse::<f64>() {
            // A day at most: more is a mistake, and would overflow a clock.
            Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Some(Duration::from_secs_f64(s))),
            Ok(0.0) => Ok(None),
            Ok(s) if s > 86_400.0 => Err(ConfigError(format!(
                "--{}: {v} seconds is more than a day",
                key.name
            ))),
            _ => Err(ConfigError(format!(
                "--{}: {v:?} is not a number of seconds",
                key.name
            ))),
        }
    }
    /// A positive number of seconds, at most a century: "never" written
    /// as a huge number made every deadline it is added to (a TLS
    /// handshake's, a body's) panic.
    fn positive_seconds(&self, key: Key) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(
            (self.positive(key)? as u64).min(CENTURY),
        ))
    }
    fn megabytes(&self, key: Key) -> Option<u64> {
        self.count(key).map(|n| n.saturating_mul(1024 * 1024))
    }
    /// One of a fixed set of words (case-insensitive); the error lists them.
    fn choice<T: Words>(&self, key: Key) -> Result<T, ConfigError> {
        let v = self.defaulted(key).trim();
        T::from_word(v).ok_or_else(|| {
            let all: Vec<&str> = T::WORDS.iter().map(|(w, _)| *w).collect();
            ConfigError(format!(
                "--{} {v:?}: expected one of {}",
                key.name,
                all.join(", ")
            ))
        })
    }
}

/// The longest wait an option may give: "never", which a clock can still
/// add to the time now (`--reload-mercy 9223372036854775807` made the
/// worker's stop panic on the overflow).
const CENTURY: u64 = 100 * 365 * 86_400;

/// Resolves ordered settings into the configuration, or a help/version request.
pub fn resolve(settings: &[Setting]) -> Result<Action, ConfigError> {
    let r = Values(settings);
    // `--logdate` alone: uWSGI's ctime-like date; `--logdate=FMT`: strftime.
    let log_plan = log_plan(&r)?;
    let plain_rotation = || {
        log_plan
            .is_plain()
            .then(|| log_plan.loggers.first())
            .flatten()
            .and_then(|l| l.rotate.clone())
    };
    let buffer_size = r.positive(&opt::BUFFER_SIZE)?.clamp(8192, 16 << 20) as usize;
    let buffer_size_given = r.given(&opt::BUFFER_SIZE).map(|_| buffer_size);
    let log_date = r.value(&opt::LOGDATE).and_then(|v| match parse_bool(v) {
        Some(true) => Some("%a %b %e %H:%M:%S %Y".to_string()),
        Some(false) => None,
        None => Some(v.to_string()),
    });

    if r.flag(&opt::HELP)? {
        return Ok(Action::Help);
    }
    if r.flag(&opt::VERSION)? {
        return Ok(Action::Version);
    }
    if r.given(&opt::COMPLETIONS).is_some() {
        let shell = r.choice(&opt::COMPLETIONS)?;
        return Ok(Action::Completions(super::completions::completion_script(
            shell,
        )));
    }
    let controls = [
        (&opt::STOP, Control::Stop),
        (&opt::RELOAD, Control::Reload(ReloadKind::Graceful)),
        (&opt::CHAIN_RELOAD, Control::Reload(ReloadKind::Chain)),
        (&opt::BRUTAL_RELOAD, Control::Reload(ReloadKind::Brutal)),
    ];
    for (key, what) in controls {
        if let Some(pidfile) = r.path(key) {
            return Ok(Action::Control(what, pidfile));
        }
    }

    let mut http_sockets = r.all(&opt::HTTP_SOCKET);
    // -b/--bind is read as Gunicorn reads it: `unix:PATH`, `tcp://`, a
    // host alone on port 8000.
    for bind in r.all(&opt::BIND) {
        http_sockets.push(super::gunicorn::bind_address(&bind)?);
    }
    let mut uwsgi_sockets = r.all(&opt::UWSGI_SOCKET);
    let mut scgi_sockets = r.all(&opt::SCGI_SOCKET);
    let mut fastcgi_sockets = r.all(&opt::FASTCGI_SOCKET);
    let sockets = r.all(&opt::SOCKET);
    let socket_protocol = r.defaulted(&opt::PROTOCOL).trim().to_ascii_lowercase();
    let socket_protocol = match socket_protocol.as_str() {
        "http" => {
            http_sockets.extend(sockets);
            Protocol::Http
        }
        "uwsgi" => {
            uwsgi_sockets.extend(sockets);
            Protocol::Uwsgi
        }
        "scgi" => {
            scgi_sockets.extend(sockets);
            Protocol::Scgi
        }
        "fastcgi" => {
            fastcgi_sockets.extend(sockets);
            Protocol::Fastcgi
        }
        other => {
            return err(format!(
                "protocol = {other}: --socket speaks uwsgi (the default), http, scgi or fastcgi"
            ));
        }
    };
    let https_sockets = https_sockets(&r)?;
    // An address that cannot be bound is refused here, where
    // --check-config sees it too, not only when the server starts.
    for (kind, addrs) in [
        ("--http-socket", &http_sockets),
        ("--uwsgi-socket", &uwsgi_sockets),
        ("--scgi-socket", &scgi_sockets),
        ("--fastcgi-socket", &fastcgi_sockets),
    ] {
        for a in addrs {
            crate::listen::parse(a).map_err(|e| ConfigError(format!("{kind} {a:?}: {e}")))?;
        }
    }
    // An HTTPS address is one socket: given again, the first would win
    // without a word (one certificate over another, or TLS over cleartext).
    let mut seen: Vec<_> = http_sockets
        .iter()
        .filter_map(|a| crate::listen::parse(a).ok())
        .collect();
    for addr in https_sockets.iter().map(|s| &s.addr) {
        if let Ok(parsed) = crate::listen::parse(addr) {
            if seen.contains(&parsed) {
                return err(format!(
                    "{addr} is given twice (as --https-socket, or as --http-socket too): an HTTPS socket's address is its own"
                ));
            }
            seen.push(parsed);
        }
    }
    if http_sockets.is_empty()
        && https_sockets.is_empty()
        && uwsgi_sockets.is_empty()
        && scgi_sockets.is_empty()
        && fastcgi_sockets.is_empty()
        && std::env::var_os("LISTEN_FDS").is_none()
        && std::env::var_os(crate::lifecycle::SYSTEMD_SOCKETS_ENV).is_none()
    {
        return err(
            "no socket to listen on: add --http-socket ADDR (for example --http-socket 127.0.0.1:8000), or --socket ADDR for nginx's uwsgi_pass",
        );
    }

    let callable = r.defaulted(&opt::CALLABLE);
    let is_count = |s: &&Setting| s.is_worker_count();
    let gunicorn_workers = settings
        .iter()
        .rev()
        .find(is_count)
        .map(|s| parse_int(&s.value))
        .filter(|n| *n > 0);
    // A module over a file, wherever each was given, as uWSGI loads its
    // `module` first and skips a second app for the same mountpoint.
    let last_of = |key: Key| {
        settings
            .iter()
            .rev()
            .filter(|s| !is_count(s))
            .find(|s| s.opt == key)
    };
    let source_setting = last_of(&opt::MODULE).or_else(|| last_of(&opt::WSGI_FILE));
    let mut mounts = Vec::new();
    for m in r.all(&opt::MOUNT) {
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
        // As uWSGI: a path or a .py file is a file, else a module. A name
        // that is an existing file (`site.wsgi`, or no suffix at all) is a
        // file too; `mysite.wsgi` with no such file is Django's module.
        let chdir = r.path(&opt::CHDIR).unwrap_or_default();
        let is_file = target.contains('/')
            || target.ends_with(".py")
            || (!target.contains(':') && chdir.join(target).is_file());
        let spec = if is_file {
            AppSpec {
                source: AppSource::File(PathBuf::from(target)),
                callable: callable.to_string(),
            }
        } else {
            module_spec("--mount", target, callable)?
        };
        mounts.push((point, spec));
    }
    let cgi = cgi_settings(&r)?;
    let fastcgi = fastcgi_settings(&r)?;
    // Scripts, FastCGI apps or files alone need no Python app (nor Python).
    let serves_without_app = cgi.active()
        || fastcgi.active()
        || r.0.iter().any(|s| {
            s.opt == &opt::STATIC_MAP || s.opt == &opt::STATIC_MAP2 || s.opt == &opt::CHECK_STATIC
        });
    let app = match source_setting {
        None if !mounts.is_empty() || r.flag(&opt::VHOST)? || serves_without_app => None,
        None => {
            return err(
                "no application given: add --wsgi-file FILE or --module pkg.mod:app (or just pkg.mod:app), --cgi DIR, --fastcgi-app COMMAND or --fastcgi-pass ADDR",
            );
        }
        Some(s) if s.opt == &opt::WSGI_FILE => Some(AppSpec {
            source: AppSource::File(PathBuf::from(&s.value)),
            callable: callable.to_string(),
        }),
        Some(s) => Some(module_spec("--module", &s.value, callable)?),
    };

    // In the order given, as uWSGI applies them: a later one undoes an
    // earlier one for the same name.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut unenv: Vec<String> = Vec::new();
    for s in settings
        .iter()
        .filter(|s| s.opt == &opt::ENV || s.opt == &opt::UNENV)
    {
        let kv = s.value.as_str();
        let (name, value) = match kv.split_once('=') {
            Some((k, v)) if s.opt == &opt::ENV => (k, Some(v)),
            _ => (kv.trim(), None),
        };
        if name.is_empty() {
            return err(format!(
                "--{} {kv:?}: expected KEY=VALUE (or KEY alone, to unset it)",
                s.opt.name
            ));
        }
        env.retain(|(k, _)| k != name);
        unenv.retain(|k| k != name);
        match value {
            Some(v) => env.push((name.to_string(), v.to_string())),
            None => unenv.push(name.to_string()),
        }
    }

    let chmod_socket = match r.value(&opt::CHMOD_SOCKET) {
        // A --umask given is the mode asked for.
        None if r.value(&opt::UMASK).is_some() => {
            let mask = r
                .value(&opt::UMASK)
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
            0o666 & !mask.unwrap_or(0o022)
        }
        // Owner and group (the web server's, with --chown-socket), nobody
        // else; not whatever the process's umask leaves.
        None => 0o660,
        // The switch's form (`chmod-socket = true`, or 1 as an ini, YAML or
        // environment boolean gives it): uWSGI's 666 "for lazy and brave
        // users". A mode of 1 would shut the web server out.
        Some(v) if super::parse_bool(v.trim()) == Some(true) => 0o666,
        Some(v) => u32::from_str_radix(v.trim(), 8).map_err(|_| {
            ConfigError(format!(
                "--chmod-socket {v:?}: expected octal permissions like 660"
            ))
        })?,
    };

    let home = r.path(&opt::HOME).or_else(|| {
        std::env::var_os("VIRTUAL_ENV")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });

    let mut cfg = Config {
        gunicorn_given: Vec::new(),
        http_sockets,
        https_sockets,
        tls_http2: TlsHttp2 {
            sni: r
                .all(&opt::SNI)
                .iter()
                .map(|v| {
                    let fields: Vec<&str> = v.split(',').map(str::trim).collect();
                    match fields[..] {
                        [name, cert, key]
                            if !name.is_empty() && !cert.is_empty() && !key.is_empty() =>
                        {
                            Ok(SniCert {
                                name: name.to_ascii_lowercase(),
                                cert: PathBuf::from(cert),
                                key: PathBuf::from(key),
                            })
                        }
                        _ => err(format!(
                            "--sni {v:?}: expected NAME,CERT,KEY (uWSGI's cipher and CA fields are not taken per name: the --https-socket's apply)"
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
            tls13_only: match r.defaulted(&opt::SSL_MIN_VERSION).trim() {
                "1.2" | "TLSv1.2" | "tlsv1.2" => false,
                "1.3" | "TLSv1.3" | "tlsv1.3" => true,
                other => {
                    return err(format!(
                        "--ssl-min-version {other:?}: expected 1.2 or 1.3 (older versions are never offered)"
                    ));
                }
            },
            http2: !r.flag(&opt::HTTP2_OFF)?,
            http2_max_streams: r
                .positive(&opt::HTTP2_MAX_STREAMS)?
                .min(i64::from(u32::MAX)) as u32,
            http2_max_pending: r
                .positive(&opt::HTTP2_MAX_PENDING)?
                .min(tokio::sync::Semaphore::MAX_PERMITS as i64) as usize,
        },
        uwsgi_sockets,
        scgi_sockets,
        fastcgi_sockets,
        activated_protocol: if r.given(&opt::PROTOCOL).is_some() {
            socket_protocol
        } else {
            Protocol::Http
        },
        listen_backlog: r.positive(&opt::LISTEN)?.min(i64::from(i32::MAX)) as i32,
        reuse_port: r.flag(&opt::REUSE_PORT)?,
        chmod_socket,
        app,
        mounts,
        manage_script_name: r.flag(&opt::MANAGE_SCRIPT_NAME)?,
        no_default_app: r.flag(&opt::NO_DEFAULT_APP)?,
        wsgi_file_wrapper: !r.flag(&opt::WSGI_DISABLE_FILE_WRAPPER)?,
        vhost: r.flag(&opt::VHOST)?,
        root_path: r
            .string(&opt::ROOT_PATH)
            .filter(|p| !p.trim_end_matches('/').is_empty()),
        root_path_unstripped: r.flag(&opt::ROOT_PATH_UNSTRIPPED)?,
        statics: StaticSettings {
            maps: static_maps(&r)?,
            check: r.paths(&opt::CHECK_STATIC),
            index: r.all(&opt::STATIC_INDEX),
            skip_ext: r.all(&opt::STATIC_SKIP_EXT),
            safe: r.paths(&opt::STATIC_SAFE),
            mimefiles: r.paths(&opt::MIMEFILE),
            check_docroot: r.flag(&opt::CHECK_STATIC_DOCROOT)?,
            expires_type: expiry_rules(
                &r,
                [&opt::STATIC_EXPIRES_TYPE, &opt::STATIC_EXPIRES_TYPE_MTIME],
                |_, mime| Ok(mime),
            )?,
            expires_file: expiry_rules(
                &r,
                [&opt::STATIC_EXPIRES, &opt::STATIC_EXPIRES_MTIME],
                regex_of,
            )?,
            expires_uri: expiry_rules(
                &r,
                [&opt::STATIC_EXPIRES_URI, &opt::STATIC_EXPIRES_URI_MTIME],
                regex_of,
            )?,
            expires_path_info: expiry_rules(
                &r,
                [
                    &opt::STATIC_EXPIRES_PATH_INFO,
                    &opt::STATIC_EXPIRES_PATH_INFO_MTIME,
                ],
                regex_of,
            )?,
            immutable: r.flag(&opt::STATIC_IMMUTABLE)?,
            gzip_all: r.flag(&opt::STATIC_GZIP_ALL)?,
            gzip_dirs: r.paths(&opt::STATIC_GZIP_DIR),
            gzip_ext: r.all(&opt::STATIC_GZIP_EXT),
            gzip_regex: r
                .all(&opt::STATIC_GZIP)
                .into_iter()
                .map(|p| regex_of(&opt::STATIC_GZIP, p))
                .collect::<Result<_, _>>()?,
        },
        cgi,
        fastcgi,
        health_path: match r.string(&opt::HEALTH_PATH) {
            Some(p) if !p.starts_with('/') => {
                return Err(ConfigError(format!(
                    "--health-path {p:?}: a path starts with /"
                )));
            }
            p => p,
        },
        proxy_protocol: match r.value(&opt::PROXY_PROTOCOL) {
            None => None,
            Some(v) => {
                let (v1, v2) =
                    match parse_bool(v).map_or(v.trim(), |b| if b { "auto" } else { "off" }) {
                        "off" => (false, false),
                        "auto" | "" => (true, true),
                        "v1" => (true, false),
                        "v2" => (false, true),
                        other => {
                            return err(format!(
                                "--proxy-protocol {other:?}: expected off, v1, v2 or auto"
                            ));
                        }
                    };
                (v1 || v2)
                    .then(|| {
                        crate::request::wrappers::Trusted::parse_list(
                            r.defaulted(&opt::PROXY_ALLOW_FROM),
                        )
                        .map(|allow| ProxyProtocolSettings { v1, v2, allow })
                        .map_err(|e| ConfigError(format!("--proxy-allow-from: {e}")))
                    })
                    .transpose()?
            }
        },
        proxy_headers: match r.value(&opt::PROXY_HEADERS) {
            None => None,
            Some(v) => {
                use crate::request::wrappers::ForwardedHeaders;
                let headers = match parse_bool(v).map_or(v.trim(), |b| if b { "" } else { "off" })
                {
                    "off" => None,
                    "" | "x-forwarded" => Some(ForwardedHeaders::XForwarded),
                    "forwarded" => Some(ForwardedHeaders::Forwarded),
                    other => {
                        return err(format!(
                            "--proxy-headers {other:?}: expected x-forwarded (X-Forwarded-For and -Proto) or forwarded (RFC 7239's Forwarded)"
                        ));
                    }
                };
                match headers {
                    Some(h) => Some((h, forwarded_allow_ips(&r)?)),
                    None => None,
                }
            }
        },
        secure_scheme: secure_scheme(&r)?,
        script_name_header: if r.flag(&opt::SCRIPT_NAME_HEADER)? {
            Some(forwarded_allow_ips(&r)?)
        } else {
            None
        },
        add_headers: r
            .all(&opt::ADD_HEADER)
            .iter()
            .map(|h| added_header(h))
            .collect::<Result<_, _>>()?,
        limit_concurrency: r.count(&opt::LIMIT_CONCURRENCY).map(|n| n.max(1) as usize),
        interface: if r.flag(&opt::ASGI)? {
            Interface::Asgi
        } else {
            r.choice(&opt::INTERFACE)?
        },
        asgi: AsgiSettings {
            event_loop: r.choice(&opt::LOOP)?,
            shutdown_timeout: r.wait(&opt::WORKER_RELOAD_MERCY),
            lifespan: r.choice(&opt::LIFESPAN)?,
            ws: WsSettings {
                enabled: r.choice::<WsMode>(&opt::WS)? == WsMode::Auto,
                max_size: r.count(&opt::WS_MAX_SIZE).unwrap_or(16 << 20) as usize,
                ping_interval: r.fractional_seconds(&opt::WS_PING_INTERVAL)?,
                ping_timeout: r.fractional_seconds(&opt::WS_PING_TIMEOUT)?,
                per_message_deflate: r.flag(&opt::WS_PER_MESSAGE_DEFLATE)?,
                close_at_stop: r.flag(&opt::WS_CLOSE_AT_STOP)?,
            },
        },
        chdir: r.path(&opt::CHDIR),
        pythonpath: r.paths(&opt::PYTHONPATH),
        python_log_config: r.path(&opt::LOG_CONFIG),
        app_loggers: r.choice(&opt::APP_LOGGERS)?,
        imports: r.all(&opt::IMPORT),
        home,
        env,
        unenv,
        threads: r.positive(&opt::THREADS)?.min(1024) as usize,
        limit_post: Some(r.int(&opt::LIMIT_POST))
            .filter(|n| *n > 0)
            .map(|n| n as u64),
        // A --buffer-size given (uWSGI's configs raise it for big cookies
        // and URLs) raises Gunicorn's line and field limits with it, unless
        // they are given: uWSGI has no limits but the buffer's.
        limit_request_line: match (r.given(&opt::LIMIT_REQUEST_LINE), buffer_size_given) {
            (None, Some(size)) => size.max(4094),
            _ => r.int(&opt::LIMIT_REQUEST_LINE).max(0) as usize,
        },
        post_buffering: r.int(&opt::POST_BUFFERING).max(64 << 10) as u64,
        max_connections: r.count(&opt::MAX_CONNECTIONS).unwrap_or(0) as usize,
        min_body_rate: r.int(&opt::MIN_BODY_RATE).max(0) as u64,
        early_hints: r.flag(&opt::HTTP_EARLY_HINTS)?,
        // Gunicorn's readings of 0: the most headers it allows, and its
        // default field size.
        limit_request_fields: match r.int(&opt::LIMIT_REQUEST_FIELDS) {
            n if n <= 0 || n > 32768 => 32768,
            n => n as usize,
        },
        limit_request_field_size: match (
            r.given(&opt::LIMIT_REQUEST_FIELD_SIZE),
            buffer_size_given,
        ) {
            (None, Some(size)) => size.max(8190),
            _ => match r.int(&opt::LIMIT_REQUEST_FIELD_SIZE) {
                n if n <= 0 => 8190,
                n => n as usize,
            },
        },
        buffer_size,
        socket_timeout: r.positive_seconds(&opt::SOCKET_TIMEOUT)?,
        keepalive_timeout: match r.given(&opt::KEEPALIVE_TIMEOUT) {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n <= 86_400 => Some(Duration::from_secs(n)),
                _ => {
                    return err(format!(
                        "--keepalive-timeout {v:?}: expected a number of seconds (at most a day)"
                    ));
                }
            },
        },
        statsd: r.string(&opt::STATSD_HOST).map(|target| StatsdSettings {
            target,
            // Gunicorn's rule: one dot after a prefix that has none.
            prefix: match r
                .given(&opt::STATSD_PREFIX)
                .map(|p| p.trim_end_matches('.'))
            {
                Some(p) if !p.is_empty() => format!("{p}."),
                _ => String::new(),
            },
            tags: r.string(&opt::DOGSTATSD_TAGS).filter(|t| !t.is_empty()),
        }),
        log: {
            let own = encoders(&r.all(&opt::LOG_ENCODER), "--log-encoder")?;
            let requests = match r.all(&opt::LOG_REQ_ENCODER) {
                given if given.is_empty() => own.clone(),
                given => encoders(&given, "--log-req-encoder")?,
            };
            let encoder = match requests {
                (true, _) => Encoder::JsonFields,
                (false, steps) if steps.is_empty() => Encoder::Plain,
                (false, steps) => Encoder::Chain(steps),
            };
            LogSettings {
                enabled: !r.flag(&opt::DISABLE_LOGGING)?,
                format: r.string(&opt::LOG_FORMAT),
                encoder,
                ftime: if r.flag(&opt::LOG_FORMAT_STRFTIME)? {
                    log_date.clone()
                } else {
                    None
                },
                micros: r.flag(&opt::LOG_MICROS)?,
                x_forwarded_for: r.flag(&opt::LOG_X_FORWARDED_FOR)?,
                escape_quotes: r.flag(&opt::LOG_ESCAPE_QUOTES)?,
                memory_report: r.flag(&opt::MEMORY_REPORT)?,
                slow_ms: r.count(&opt::LOG_SLOW),
                log_4xx: r.flag(&opt::LOG_4XX)?,
                log_5xx: r.flag(&opt::LOG_5XX)?,
                big: r.count(&opt::LOG_BIG),
                zero: r.flag(&opt::LOG_ZERO)?,
            }
        },
        log_files: LogFiles {
            // `json` alone, every variable of a request line, is the line
            // as a message for oxgate's own.
            encoders: match encoders(&r.all(&opt::LOG_ENCODER), "--log-encoder")? {
                (true, _) => vec![EncodeStep::Json(r#"{"msg":"${msg}"}"#.into())],
                (false, steps) => steps,
            },
            // A lone file logger's `maxsize=` (uWSGI's key=value form) is
            // the log file's, which that logger is (`logto`, above).
            maxsize: r.count(&opt::LOG_MAXSIZE).or_else(|| plain_rotation().map(|(n, _)| n)),
            chown: r.flag(&opt::LOGFILE_CHOWN)?,
            backupname: r
                .path(&opt::LOG_BACKUPNAME)
                .or_else(|| plain_rotation().and_then(|(_, b)| b)),
            touch_reopen: r.paths(&opt::TOUCH_LOGREOPEN),
            date: log_date,
            // `--log-prefix` alone (uWSGI's optional value not given)
            // prefixes nothing.
            prefix: r
                .value(&opt::LOG_PREFIX)
                .filter(|v| parse_bool(v).is_none())
                .map(str::to_string),
            level: r.choice(&opt::LOG_LEVEL)?,
            requests: if log_plan.is_plain() {
                log_plan
                    .request_loggers
                    .first()
                    .and_then(|l| match &l.target {
                        Target::File(p) => Some(p.clone()),
                        _ => None,
                    })
            } else {
                None
            },
            requests_rotation: log_plan
                .is_plain()
                .then(|| log_plan.request_loggers.first())
                .flatten()
                .filter(|l| matches!(l.target, Target::File(_)))
                .and_then(|l| l.rotate.clone()),
            loggers: (!log_plan.is_plain()).then(|| log_plan.clone()),
        },
        stats: StatsConfig {
            addr: r.string(&opt::STATS),
            http: r.flag(&opt::STATS_HTTP)?,
            minified: r.flag(&opt::STATS_MINIFIED)?,
            metrics: r.string(&opt::METRICS),
        },
        process: ProcessConfig {
            master: !r.flag(&opt::NO_MASTER)? && r.flag(&opt::MASTER)?,
            processes: {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
                match gunicorn_workers {
                    Some(n) => n,
                    None => r.positive_or(&opt::PROCESSES, cores)?,
                }
                .min(MAX_WORKERS as i64) as usize
            },
            processes_given: gunicorn_workers.is_some() || r.given(&opt::PROCESSES).is_some(),
            lazy_apps: r.flag(&opt::LAZY_APPS)?,
            sched_batch: r.flag(&opt::SCHED_BATCH)?,
            quick_stop_on_int: r.flag(&opt::QUICK_STOP_ON_INT)?,
            harakiri: r.seconds(&opt::HARAKIRI),
            max_requests: r.count(&opt::MAX_REQUESTS),
            max_requests_delta: r.int(&opt::MAX_REQUESTS_DELTA).max(0) as u64,
            max_requests_jitter: r.int(&opt::MAX_REQUESTS_JITTER).max(0) as u64,
            max_worker_lifetime: r.seconds(&opt::MAX_WORKER_LIFETIME),
            reload_on_rss: r.megabytes(&opt::RELOAD_ON_RSS),
            evil_reload_on_rss: r.megabytes(&opt::EVIL_RELOAD_ON_RSS),
            reload_on_as: r.megabytes(&opt::RELOAD_ON_AS),
            min_worker_lifetime: r.wait(&opt::MIN_WORKER_LIFETIME),
            master_fifo: r.paths(&opt::MASTER_FIFO),
            limit_as: r.megabytes(&opt::LIMIT_AS),
            worker_reload_mercy: r.wait(&opt::WORKER_RELOAD_MERCY),
            reload_mercy: r.wait(&opt::RELOAD_MERCY),
            drain_delay: r.fractional_seconds(&opt::DRAIN_DELAY)?,
            pidfile: r.path(&opt::PIDFILE),
            pidfile_exclusive: r.flag(&opt::PIDFILE_EXCLUSIVE)?,
            pidfile2: r.path(&opt::PIDFILE2),
            daemonize: r.path(&opt::DAEMONIZE),
            daemonize2: r.path(&opt::DAEMONIZE2),
            logto2: r.path(&opt::LOGTO2).filter(|l| udp_log_address(l).is_none()),
            // One file logger is the log file itself. As in uWSGI, whose
            // loggers take the output over, it wins over --logto and
            // --daemonize's file, which get nothing; and --daemonize's
            // file wins over --logto, which uWSGI does not read then.
            logto: log_plan
                .is_plain()
                .then(|| log_plan.loggers.first())
                .flatten()
                .and_then(|l| match &l.target {
                    Target::File(p) => Some(p.clone()),
                    _ => None,
                })
                .or_else(|| match r.path(&opt::DAEMONIZE) {
                    Some(_) => None,
                    None => r.path(&opt::LOGTO).filter(|l| udp_log_address(l).is_none()),
                }),
            vacuum: r.flag(&opt::VACUUM)?,
            reaper: r.flag(&opt::REAPER)?,
            titles: ProcessTitles {
                auto: r.flag(&opt::AUTO_PROCNAME)?,
                every: r.string(&opt::PROCNAME),
                master: r.string(&opt::PROCNAME_MASTER),
                // uWSGI keeps one prefix: the option read last sets it.
                prefix: match r.0.iter().rev().find(|s| {
                    s.opt == &opt::PROCNAME_PREFIX || s.opt == &opt::PROCNAME_PREFIX_SPACED
                }) {
                    Some(s) if s.opt == &opt::PROCNAME_PREFIX_SPACED => format!("{} ", s.value),
                    Some(s) => s.value.clone(),
                    None => String::new(),
                },
                append: r.string(&opt::PROCNAME_APPEND).unwrap_or_default(),
            },
            touch_reload: [r.paths(&opt::TOUCH_RELOAD), r.paths(&opt::TOUCH_WORKERS_RELOAD)].concat(),
            touch_chain_reload: r.paths(&opt::TOUCH_CHAIN_RELOAD),
            exit_on_reload: r.flag(&opt::EXIT_ON_RELOAD)?,
            uid: r.string(&opt::UID),
            gid: r.string(&opt::GID),
            no_initgroups: r.flag(&opt::NO_INITGROUPS)?,
            attach_daemons: r.all(&opt::ATTACH_DAEMON),
            smart_attach_daemons: r
                .all(&opt::SMART_ATTACH_DAEMON)
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
            py_autoreload: r.seconds(&opt::PY_AUTORELOAD),
            chown_socket: r.string(&opt::CHOWN_SOCKET),
            umask: match r.value(&opt::UMASK) {
                None => None,
                Some(v) => Some(u32::from_str_radix(v.trim(), 8).map_err(|_| {
                    ConfigError(format!("--umask {v:?}: expected an octal mask like 022"))
                })?),
            },
        },
    };
    unix_sockets_within_chdir(&mut cfg);
    Ok(Action::Serve(Box::new(cfg)))
}

/// uWSGI changes to `--chdir` before it binds: a unix socket named by a
/// relative path (`socket = app.sock`, beside `chdir = /srv/app`) is made
/// there, where nginx's `uwsgi_pass unix:/srv/app/app.sock` looks for it.
/// oxgate binds first (a taken address fails before the app is
/// imported), so the path is made `--chdir`'s here.
fn unix_sockets_within_chdir(cfg: &mut Config) {
    let Some(dir) = cfg.chdir.clone() else {
        return;
    };
    let place = |spec: &mut String| {
        if let Ok(crate::listen::Address::Unix(path)) = crate::listen::parse(spec)
            && path.is_relative()
        {
            *spec = dir.join(path).to_string_lossy().into_owned();
        }
    };
    cfg.http_sockets
        .iter_mut()
        .chain(cfg.https_sockets.iter_mut().map(|s| &mut s.addr))
        .chain(cfg.uwsgi_sockets.iter_mut())
        .chain(cfg.scgi_sockets.iter_mut())
        .chain(cfg.fastcgi_sockets.iter_mut())
        .for_each(place);
}

/// `--logger`, `--log-syslog`, `--req-logger`, `--log-route` and
/// `--log-req-route`, read and checked.
fn log_plan(r: &Values<'_>) -> Result<LogPlan, ConfigError> {
    let logger = |option: &str, v: &str| {
        Logger::parse(v).map_err(|e| ConfigError(format!("--{option} {v:?}: {e}")))
    };
    let route =
        |option: &str, v: &str| Route::parse(v).map_err(|e| ConfigError(format!("--{option} {e}")));
    let mut plan = LogPlan::default();
    for v in r.all(&opt::LOGGER) {
        plan.loggers.push(logger("logger", &v)?);
    }
    if let Some(v) = r.value(&opt::LOG_SYSLOG) {
        match parse_bool(v) {
            Some(false) => {}
            Some(true) => plan.loggers.push(logger("log-syslog", "syslog")?),
            None => plan
                .loggers
                .push(logger("log-syslog", &format!("syslog:{v}"))?),
        }
    }
    // `--daemonize HOST:PORT` (which wins over --logto, as in uWSGI) or
    // `--logto HOST:PORT`: the log goes to that UDP address, a datagram a
    // line, unless loggers take it over.
    // (--logto2 before --logto: where the log ends up once privileges
    // are dropped.)
    let log = [&opt::DAEMONIZE, &opt::DAEMONIZE2, &opt::LOGTO2, &opt::LOGTO]
        .into_iter()
        .find_map(|o| r.path(o));
    let udp = log.and_then(|l| udp_log_address(&l).map(str::to_string));
    if let Some(addr) = udp
        && plan.loggers.is_empty()
    {
        plan.loggers.push(Logger {
            name: None,
            target: Target::Datagram(SyslogAddr::Udp(addr)),
            rotate: None,
        });
    }
    for v in r.all(&opt::REQ_LOGGER) {
        plan.request_loggers.push(logger("req-logger", &v)?);
    }
    for v in r.all(&opt::LOG_ROUTE) {
        plan.routes.push(route("log-route", &v)?);
    }
    for v in r.all(&opt::LOG_REQ_ROUTE) {
        plan.request_routes.push(route("log-req-route", &v)?);
    }
    plan.check().map_err(ConfigError)?;
    Ok(plan)
}

/// uWSGI's log encoders as given (`--log-encoder`, `--log-req-encoder`):
/// whether `json` alone (every variable, for request lines) was among
/// them, and the chain.
fn encoders(given: &[String], option: &str) -> Result<(bool, Vec<EncodeStep>), ConfigError> {
    let mut steps = Vec::new();
    let mut json_fields = false;
    for e in given {
        let (name, arg) = e
            .trim_start()
            .split_once(char::is_whitespace)
            .unwrap_or((e.trim(), ""));
        // uWSGI's "json:loggerid TEMPLATE": the logger id is not used.
        let name = name.split(':').next().unwrap_or(name);
        // The text as given: a prefix may end with a space.
        let arg = arg.strip_prefix(char::is_whitespace).unwrap_or(arg);
        steps.push(match (name, arg.trim()) {
            ("json", "") => {
                json_fields = true;
                continue;
            }
            ("json", t) => EncodeStep::Json(t.to_string()),
            ("format", t) => EncodeStep::Format(t.to_string()),
            ("prefix", _) => EncodeStep::Prefix(arg.to_string()),
            ("suffix", _) => EncodeStep::Suffix(arg.to_string()),
            ("nl", _) => continue,
            _ => {
                return err(format!(
                    "{option} {e:?}: oxgate has the json, format, prefix, suffix and nl encoders (`json`, `json {{\"msg\":\"${{msg}}\"}}`, `format [${{strftime:%F %T}}] ${{msg}}`)"
                ));
            }
        });
    }
    Ok((json_fields, steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, parse_args};

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
    fn huge_numbers_are_held_where_they_would_wrap_or_panic() {
        // In MB, multiplied out to bytes, 2^44 wrapped to 0 and every
        // worker was replaced after each request.
        let c = serve(&[
            "--http",
            ":1",
            "--wsgi-file",
            "app.py",
            "--reload-on-rss",
            "17592186044416",
            "--socket-timeout",
            "99999999999999999999",
            "--cgi",
            "/tmp",
            "--cgi-timeout",
            "99999999999999999999",
        ]);
        assert_eq!(c.process.reload_on_rss, Some(u64::MAX));
        // "Never" as a huge number: a century, which an Instant can hold.
        let century = Duration::from_secs(CENTURY);
        assert_eq!(c.socket_timeout, century);
        assert_eq!(c.cgi.timeout, century);
    }

    #[test]
    fn headers_keepalive_and_statsd() {
        let c = serve(&[
            "--http",
            ":1",
            "--wsgi-file",
            "app.py",
            "--add-header",
            "X-Frame-Options: DENY",
            "--add-header",
            "X-Empty:",
            "--secure-scheme-header",
            "X-Forwarded-Proto=https",
            "--keepalive-timeout",
            "0",
            "--statsd-host",
            "127.0.0.1:8125",
            "--statsd-prefix",
            "app...",
        ]);
        assert_eq!(
            c.add_headers,
            [
                ("X-Frame-Options".to_string(), "DENY".to_string()),
                ("X-Empty".to_string(), String::new())
            ]
        );
        let secure = c.secure_scheme.unwrap();
        assert_eq!(
            secure.headers,
            [("HTTP_X_FORWARDED_PROTO".to_string(), "https".to_string())]
        );
        assert_eq!(c.keepalive_timeout, Some(Duration::ZERO));
        let statsd = c.statsd.unwrap();
        assert_eq!(
            (statsd.target.as_str(), statsd.prefix.as_str()),
            ("127.0.0.1:8125", "app.")
        );
        assert!(
            serve(&["--http", ":1", "--wsgi-file", "app.py"])
                .keepalive_timeout
                .is_none()
        );
        assert!(
            error(&["--http", ":1", "-w", "a:b", "--add-header", "Bad Name: x"])
                .contains("--add-header")
        );
        assert!(
            error(&[
                "--http",
                ":1",
                "-w",
                "a:b",
                "--secure-scheme-header",
                "X-Proto"
            ])
            .contains("NAME=VALUE")
        );
        assert!(
            error(&["--http", ":1", "-w", "a:b", "--keepalive-timeout", "soon"])
                .contains("--keepalive-timeout")
        );
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
        let keys: Vec<Key> = l.settings.iter().map(|s| s.opt).collect();
        assert!(keys.contains(&&opt::DISABLE_LOGGING) && keys.contains(&&opt::CHMOD_SOCKET));
        assert!(keys.contains(&&opt::ENABLE_THREADS) && keys.contains(&&opt::SINGLE_INTERPRETER));
    }

    #[test]
    fn short_flags_cluster_as_getopt_reads_them() {
        // -M -T -p 4: the rest of a cluster after a flag is more options
        // (it was the flag's value: master = "Tp4").
        let c = serve(&["-MTp4", "--http", ":1", "-w", "m"]);
        assert!(c.process.master);
        assert_eq!(c.process.processes, 4);
        let c = serve(&["-Mp", "3", "--http", ":1", "-w", "m"]);
        assert_eq!(c.process.processes, 3);
        // uWSGI's other letters are their long names (-m is
        // --memory-report); they were "unknown option".
        let l = load(["-m", "-O", "2", "--http", ":1", "-w", "m"]).unwrap();
        assert!(l.settings.iter().any(|s| s.opt == &opt::MEMORY_REPORT));
        assert!(l.unknown.iter().any(|e| e.key == "optimize"));
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
        assert!(error(&["--http", ":1", "--file", "a", "--env", "=v"]).contains("KEY=VALUE"));
        // A name alone unsets it, as uWSGI's putenv; in the order given.
        let c = serve(&[
            "--http", ":1", "--file", "a", "--env", "GONE", "--env", "A=1", "--unenv", "A",
            "--unenv", "B", "--env", "B=2",
        ]);
        assert_eq!(c.env, vec![("B".into(), "2".into())]);
        assert_eq!(c.unenv, vec!["GONE".to_string(), "A".to_string()]);
    }

    #[test]
    fn https_sockets_read_uwsgis_fields() {
        let c = serve(&[
            "--wsgi-file",
            "a.py",
            "--https-socket",
            ":8443,a.crt,a.key",
            "--https",
            "127.0.0.1:9443, b.crt, b.key, HIGH, !ca.pem",
            "--https-socket",
            ":7443,c.crt,c.key,,ca2.pem",
        ]);
        let s = &c.https_sockets;
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].addr.as_str(), s[0].client_ca.as_ref()),
            (":8443", None)
        );
        assert_eq!(s[1].cert, PathBuf::from("b.crt"));
        assert_eq!(s[1].ciphers, "HIGH");
        assert_eq!(s[1].client_ca, Some(PathBuf::from("ca.pem")));
        assert!(s[1].client_required);
        assert_eq!(s[2].client_ca, Some(PathBuf::from("ca2.pem")));
        // As uWSGI's SSL_VERIFY_PEER: optional, but checked when given.
        assert!(!s[2].client_required && s[2].client_verified_when_given);
        // `?CA`: optional, but verified when given (Gunicorn's cert_reqs 1).
        let c = serve(&[
            "--wsgi-file",
            "a.py",
            "--https-socket",
            ":1,a.crt,a.key,,?ca.pem",
        ]);
        let s = &c.https_sockets[0];
        assert_eq!(s.client_ca, Some(PathBuf::from("ca.pem")));
        assert!(!s.client_required && s.client_verified_when_given);
        assert!(c.tls_http2.http2 && !c.tls_http2.tls13_only);
        assert_eq!(c.tls_http2.http2_max_streams, 100);
        // The CA options fill in what the fields leave out.
        let c = serve(&[
            "--wsgi-file",
            "a.py",
            "--https-socket",
            ":1,a.crt,a.key",
            "--https-client-ca",
            "ca.pem",
            "--https-client-required",
            "--ssl-min-version",
            "1.3",
            "--http2-off",
        ]);
        assert_eq!(c.https_sockets[0].client_ca, Some(PathBuf::from("ca.pem")));
        assert!(c.https_sockets[0].client_required);
        assert!(c.tls_http2.tls13_only && !c.tls_http2.http2);
        assert!(error(&["--https-socket", ":1,a.crt"]).contains("three to five"));
        assert!(error(&["--https-socket", ":1,a.crt,a.key,,!"]).contains("names no CA"));
        assert!(
            error(&[
                "--https-socket",
                ":1,a.crt,a.key",
                "--http-socket",
                "0.0.0.0:1"
            ])
            .contains("given twice")
        );
        assert!(error(&["--https-socket", ":1,,a.key"]).contains("may not be empty"));
        assert!(
            error(&[
                "--https-socket",
                ":1,a.crt,a.key",
                "--https-client-required"
            ])
            .contains("--https-client-ca")
        );
        assert!(
            error(&[
                "--wsgi-file",
                "a.py",
                "--https-socket",
                ":1,a.crt,a.key",
                "--ssl-min-version",
                "1.1"
            ])
            .contains("1.2 or 1.3")
        );
    }

    #[test]
    fn defaults_come_from_the_table() {
        let int = |key: Key| parse_int(key.default.unwrap());
        let c = serve(&["-s", ":1", "--file", "a.py"]);
        assert_eq!(i64::from(c.listen_backlog), int(&opt::LISTEN));
        assert_eq!(c.threads as i64, int(&opt::THREADS));
        assert_eq!(c.buffer_size as i64, int(&opt::BUFFER_SIZE));
        assert_eq!(c.socket_timeout.as_secs() as i64, int(&opt::SOCKET_TIMEOUT));
        let mercy = c.process.worker_reload_mercy.as_secs() as i64;
        assert_eq!(mercy, int(&opt::WORKER_RELOAD_MERCY));
        assert_eq!(
            c.process.reload_mercy.as_secs() as i64,
            int(&opt::RELOAD_MERCY)
        );
        assert_eq!(
            c.process.max_requests_delta as i64,
            int(&opt::MAX_REQUESTS_DELTA)
        );
        assert_eq!(c.uwsgi_sockets, vec![":1"]); // --protocol uwsgi
        assert_eq!(c.app.unwrap().callable, opt::CALLABLE.default.unwrap());
        assert!(c.process.master);
        // 0 (or `true`) means the default too, as in uWSGI.
        let c = serve(&["-s", ":1", "--file", "a.py", "--threads", "true"]);
        assert_eq!(c.threads as i64, int(&opt::THREADS));
        // But a wait of 0 is none, as uWSGI reads it: not the default's.
        let c = serve(&[
            "-s",
            ":1",
            "--file",
            "a.py",
            "--worker-reload-mercy",
            "0",
            "--reload-mercy",
            "0",
            "--min-worker-lifetime",
            "0",
        ]);
        assert_eq!(c.process.worker_reload_mercy, Duration::ZERO);
        assert_eq!(c.process.reload_mercy, Duration::ZERO);
        assert_eq!(c.process.min_worker_lifetime, Duration::ZERO);
        assert_eq!(c.asgi.shutdown_timeout, Duration::ZERO);
        let c = serve(&["-s", ":1", "--file", "a.py", "--no-master", "--master"]);
        assert!(!c.process.master);
        assert!(
            !serve(&["-s", ":1", "--file", "a.py", "--master=off"])
                .process
                .master
        );
    }

    #[test]
    fn control_options_match_the_lifecycle() {
        for (name, control) in Control::OPTIONS {
            let flag = format!("--{name}");
            match resolve(&parse_args([flag.as_str(), "/run/app.pid"]).unwrap()) {
                Ok(Action::Control(c, pidfile)) => {
                    assert_eq!((c, pidfile), (control, PathBuf::from("/run/app.pid")))
                }
                other => panic!("{flag}: {other:?}"),
            }
        }
    }
}
