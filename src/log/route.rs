//! Log lines to more than one place: uWSGI's `logger`, `req-logger`,
//! `log-route` and `log-req-route`, with `file:`, `stdio`, `syslog:` and
//! `rsyslog:` targets, and Gunicorn's syslog settings.
//!
//! uWSGI sends every process's output through a pipe to its master, which
//! hands each line to the loggers. Here each process sends its own lines,
//! whole: to a file with one write() on an O_APPEND descriptor, to syslog
//! as one datagram. So lines from many processes never interleave, no
//! process sits between a worker and its log, and a Gunicorn syslog line
//! carries the pid of the process that wrote it, as Gunicorn's does. What
//! the app itself writes on stdout and stderr (print, Python's logging, a
//! CGI script's errors) is read in its worker by a thread
//! (`capture_output`) and routed like oxgate's own lines.
//!
//! The dispatch is uWSGI's: a line that matches a route goes to the
//! route's logger only; any other line goes to every logger without a
//! name, or, when every logger has a name, to the log as it was (stderr,
//! or `--logto`'s file).

use std::ffi::CString;
use std::io::Read;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::fcntl::OFlag;
use regex::bytes::Regex;

/// A logger: an optional name (for routes) and where it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Logger {
    pub name: Option<String>,
    pub target: Target,
    /// `file:logfile=PATH,maxsize=N,backupname=B` (uWSGI's key=value
    /// form): the size past which the file is rotated, and to what name.
    pub rotate: Option<(u64, Option<PathBuf>)>,
}

/// Where a logger writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `stdio`: the log as it is without loggers (stderr, or `--logto`'s
    /// file).
    Stdio,
    /// `file:PATH`, appended to and reopened with the main log.
    File(PathBuf),
    /// `stdout`: the standard output the server started with (Gunicorn's
    /// `accesslog = "-"`), apart from the log on stderr.
    Stdout,
    /// `syslog[:IDENT[,FACILITY]]`: the local syslog (/dev/log), as glibc's
    /// syslog(3) writes for uWSGI: `<PRI>Mmm dd hh:mm:ss IDENT: line`, at
    /// level info.
    Syslog { ident: String, facility: u8 },
    /// `rsyslog:ADDR[:PORT][,PREFIX[,PRI]]`: uWSGI's remote syslog, one UDP
    /// datagram (a unix datagram when ADDR is a path) per line:
    /// `<PRI>Mmm dd hh:mm:ss PREFIX: line`.
    Rsyslog {
        addr: SyslogAddr,
        prefix: String,
        pri: u8,
    },
    /// `gunicorn-syslog:ADDR,PREFIX,FACILITY`: what Gunicorn's `syslog`
    /// settings send (Python's SysLogHandler): `<PRI>PREFIX: [PID] line\0`,
    /// ADDR in Gunicorn's `syslog_addr` forms.
    GunicornSyslog {
        addr: SyslogAddr,
        prefix: String,
        facility: u8,
    },
    /// `socket:ADDR` (uWSGI's socket logger), and `--logto`/`--daemonize`
    /// given `HOST:PORT`: each line as it is, one datagram (UDP, or a unix
    /// datagram when ADDR is a path). Sent unconnected and without
    /// waiting, as to syslog: a collector that is down loses lines, and
    /// neither fails the app's writes nor stalls a request.
    Datagram(SyslogAddr),
}

/// The UDP address a `--logto`/`--daemonize` value names, if it names one:
/// uWSGI sends the log there (`--logto 127.0.0.1:1717`, "set logfile/udp
/// address"), a `Target::Datagram` logger here. uWSGI takes any value
/// with a `:`; a path (with a `/`) or a name whose end is not a port stays
/// a file here.
pub fn udp_log_address(path: &Path) -> Option<&str> {
    let text = path.to_str()?;
    let (host, port) = text.rsplit_once(':')?;
    (!text.contains('/') && !host.is_empty() && port.parse::<u16>().is_ok()).then_some(text)
}

#[derive(Debug, Clone, PartialEq)]
pub enum SyslogAddr {
    /// A unix datagram socket, such as /dev/log.
    Unix(PathBuf),
    /// `host:port`, over UDP.
    Udp(String),
}

/// `log-route NAME REGEXP`: lines matching REGEXP go to the logger NAME.
#[derive(Debug, Clone)]
pub struct Route {
    pub logger: String,
    pub pattern: Regex,
}

impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.logger == other.logger && self.pattern.as_str() == other.pattern.as_str()
    }
}

/// Every logger and route, as the configuration gives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPlan {
    pub loggers: Vec<Logger>,
    pub routes: Vec<Route>,
    /// Loggers of request lines. None: request lines join the others.
    pub request_loggers: Vec<Logger>,
    pub request_routes: Vec<Route>,
}

/// Syslog's facilities by name (uWSGI's and Python's names; case does not
/// matter, as in Gunicorn).
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("security", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

pub fn facility(name: &str) -> Result<u8, String> {
    let name = name.trim();
    FACILITIES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, f)| f)
        .ok_or_else(|| {
            format!(
                "unknown syslog facility {name:?} (expected one of {})",
                FACILITIES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

const LOG_INFO: u8 = 6;
/// uWSGI's rsyslog default: daemon.notice.
const RSYSLOG_PRI: u8 = 29;
/// uWSGI's rsyslog packet is 1024 bytes, 30 of them for its header.
const RSYSLOG_MAX_MESSAGE: usize = 1024 - 30;

impl Logger {
    /// A uWSGI logger value: `[NAME ]TARGET`, where NAME is letters and
    /// digits before the first space (uWSGI's rule) and TARGET is
    /// `file:PATH`, `stdio`, `syslog[:IDENT[,FACILITY]]`,
    /// `rsyslog:ADDR[:PORT][,PREFIX[,PRI]]` or
    /// `gunicorn-syslog:ADDR,PREFIX,FACILITY`.
    pub fn parse(value: &str) -> Result<Logger, String> {
        let value = value.trim();
        let (name, target) = match value.split_once(' ') {
            Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                (Some(n.to_string()), rest.trim())
            }
            _ => (None, value),
        };
        let (kind, arg) = match target.split_once(':') {
            Some((k, a)) => (k, Some(a).filter(|a| !a.is_empty())),
            None => (target, None),
        };
        let mut rotate = None;
        let target = match (kind, arg) {
            ("stdio", _) => Target::Stdio,
            ("stdout", None) => Target::Stdout,
            // uWSGI's file logger takes `logfile=PATH[,maxsize=N][,backupname=B]`
            // too (the form Datadog's uWSGI docs give).
            ("file", Some(arg)) if arg.starts_with("logfile=") => {
                let mut path = None;
                let (mut maxsize, mut backup) = (None, None);
                for part in arg.split(',') {
                    match part.split_once('=') {
                        Some(("logfile", v)) if !v.is_empty() => path = Some(PathBuf::from(v)),
                        Some(("maxsize", v)) => {
                            maxsize = Some(v.trim().parse::<u64>().map_err(|_| {
                                format!("file:{arg}: maxsize={v:?} is not a number of bytes")
                            })?)
                        }
                        Some(("backupname", v)) if !v.is_empty() => backup = Some(PathBuf::from(v)),
                        _ => {
                            return Err(format!(
                                "file:{arg}: expected logfile=PATH, maxsize=BYTES and backupname=PATH, comma-separated"
                            ));
                        }
                    }
                }
                let Some(path) = path else {
                    return Err(format!("file:{arg}: logfile= needs a path"));
                };
                rotate = maxsize.filter(|&n| n > 0).map(|n| (n, backup));
                Target::File(path)
            }
            ("file", Some(path)) => Target::File(PathBuf::from(path)),
            ("file", None) => return Err("file: needs a path".into()),
            ("syslog", arg) => {
                let (ident, fac) = match arg.map(|a| a.split_once(',')) {
                    None => ("uwsgi", None),
                    Some(None) => (arg.unwrap_or("uwsgi"), None),
                    Some(Some((i, f))) => (i, Some(f)),
                };
                Target::Syslog {
                    ident: ident.to_string(),
                    facility: fac.map_or(Ok(3), facility)?,
                }
            }
            ("socket", None) => return Err("socket: needs an address".into()),
            ("socket", Some(addr)) if addr.starts_with('/') => {
                Target::Datagram(SyslogAddr::Unix(PathBuf::from(addr)))
            }
            ("socket", Some(addr)) => Target::Datagram(SyslogAddr::Udp(addr.to_string())),
            ("rsyslog", None) => return Err("rsyslog: needs an address".into()),
            ("rsyslog", Some(arg)) => {
                let mut parts = arg.splitn(3, ',');
                let addr = parts.next().unwrap_or_default().trim();
                let addr = if addr.starts_with('/') {
                    SyslogAddr::Unix(PathBuf::from(addr))
                } else if addr
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                {
                    SyslogAddr::Udp(addr.to_string())
                } else {
                    SyslogAddr::Udp(format!("{addr}:514"))
                };
                let prefix = match parts.next() {
                    Some(p) if !p.is_empty() => p.to_string(),
                    _ => format!("{} uwsgi", hostname()),
                };
                let pri = match parts.next() {
                    None => RSYSLOG_PRI,
                    Some(p) => p
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p < 192)
                        .ok_or_else(|| {
                            format!("rsyslog priority {p:?}: expected a number (facility * 8 + severity)")
                        })?,
                };
                Target::Rsyslog { addr, prefix, pri }
            }
            ("gunicorn-syslog", Some(arg)) => {
                // The prefix may hold commas (an app named with arguments,
                // `app:create_app(a, b)`): the facility is after the last.
                let (addr, rest) = arg.split_once(',').unwrap_or((arg, "gunicorn,user"));
                let addr = gunicorn_syslog_addr(addr)?;
                let (prefix, facility) = rest.rsplit_once(',').unwrap_or((rest, "user"));
                let prefix = prefix.to_string();
                let facility = self::facility(facility)?;
                Target::GunicornSyslog {
                    addr,
                    prefix,
                    facility,
                }
            }
            _ => {
                return Err(format!(
                    "oxgate has no logger {kind:?} (its loggers are file:PATH, stdio, stdout, syslog[:IDENT[,FACILITY]] and rsyslog:ADDR[:PORT][,PREFIX[,PRI]])"
                ));
            }
        };
        Ok(Logger {
            name,
            target,
            rotate,
        })
    }
}

/// Gunicorn's `syslog_addr`: `unix://PATH[#dgram]`, `udp://HOST[:PORT]`
/// (port 514 unless given). TCP and stream unix sockets are refused.
pub fn gunicorn_syslog_addr(addr: &str) -> Result<SyslogAddr, String> {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix("unix://") {
        let (path, kind) = rest.split_once('#').unwrap_or((rest, "dgram"));
        if kind != "dgram" && kind != "stream" {
            return Err(format!(
                "syslog address {addr:?}: expected #dgram or #stream"
            ));
        }
        if kind == "stream" {
            return Err(format!(
                "syslog address {addr:?}: oxgate sends syslog datagrams; a stream socket is not supported (/dev/log takes datagrams)"
            ));
        }
        return Ok(SyslogAddr::Unix(PathBuf::from(path)));
    }
    if let Some(rest) = addr.strip_prefix("udp://") {
        let has_port = match rest.rsplit_once(':') {
            Some((host, port)) => {
                port.parse::<u16>().is_ok() && (!host.starts_with('[') || host.ends_with(']'))
            }
            None => false,
        };
        if rest.is_empty() || rest.starts_with(':') {
            return Err(format!("syslog address {addr:?}: no host"));
        }
        return Ok(SyslogAddr::Udp(if has_port {
            rest.to_string()
        } else {
            format!("{rest}:514")
        }));
    }
    if addr.starts_with("tcp://") {
        return Err(format!(
            "syslog address {addr:?}: oxgate sends syslog over UDP or a unix datagram socket, not TCP"
        ));
    }
    Err(format!(
        "syslog address {addr:?}: expected unix://PATH or udp://HOST:PORT"
    ))
}

impl Route {
    /// `NAME REGEXP`, split at the first space, as uWSGI does.
    pub fn parse(value: &str) -> Result<Route, String> {
        let Some((name, pattern)) = value.trim().split_once(' ') else {
            return Err(format!("{value:?}: expected NAME REGEXP"));
        };
        let pattern = Regex::new(pattern.trim())
            .map_err(|e| format!("{value:?}: the regular expression: {e}"))?;
        Ok(Route {
            logger: name.to_string(),
            pattern,
        })
    }
}

impl LogPlan {
    /// Whether these loggers need this module at all: one file or stdio
    /// logger without names or routes is the plain log (`--logto`).
    pub fn is_plain(&self) -> bool {
        let plain = |loggers: &[Logger]| {
            loggers.len() <= 1
                && loggers.iter().all(|l| {
                    l.name.is_none() && matches!(l.target, Target::Stdio | Target::File(_))
                })
        };
        // (`req-logger = stdio` beside `logger = file:X` keeps the request
        // lines on stderr, as in uWSGI: the file is a logger's, not the
        // log behind stderr.)
        let stdio_beside_file = self
            .request_loggers
            .iter()
            .any(|l| l.target == Target::Stdio)
            && self
                .loggers
                .iter()
                .any(|l| matches!(l.target, Target::File(_)));
        self.routes.is_empty()
            && self.request_routes.is_empty()
            && plain(&self.loggers)
            && plain(&self.request_loggers)
            && !stdio_beside_file
    }

    /// Whether a logger writes to the standard output.
    pub fn writes_to_stdout(&self) -> bool {
        self.loggers
            .iter()
            .chain(&self.request_loggers)
            .any(|l| l.target == Target::Stdout)
    }

    /// Every route names a logger that exists.
    pub fn check(&self) -> Result<(), String> {
        let named = |loggers: &[Logger], name: &str| {
            loggers.iter().any(|l| l.name.as_deref() == Some(name))
        };
        for r in &self.routes {
            if !named(&self.loggers, &r.logger) {
                return Err(format!(
                    "--log-route {} {}: no --logger is named {:?}",
                    r.logger,
                    r.pattern.as_str(),
                    r.logger
                ));
            }
        }
        for r in &self.request_routes {
            if !named(&self.request_loggers, &r.logger) && !named(&self.loggers, &r.logger) {
                return Err(format!(
                    "--log-req-route {} {}: no --req-logger or --logger is named {:?}",
                    r.logger,
                    r.pattern.as_str(),
                    r.logger
                ));
            }
        }
        Ok(())
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A logger ready to write.
struct Sink {
    name: Option<String>,
    out: Out,
}

enum Out {
    /// The log as it was before the capture (a descriptor of its own: fd
    /// 2 itself may become the capture's pipe).
    Stdio,
    /// A file behind this descriptor, which a reopen replaces in place.
    File { fd: RawFd, path: CString },
    /// A copy of stdout as it was at the start (what the app's output
    /// capture, if any, later puts behind fd 1 is not it).
    Stdout(RawFd),
    Syslog {
        socket: Socket,
        format: SyslogFormat,
    },
}

enum Socket {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket, std::net::SocketAddr),
}

enum SyslogFormat {
    /// The line as it is (`Target::Datagram`).
    Raw,
    Libc {
        ident: String,
        facility: u8,
    },
    Rsyslog {
        prefix: String,
        pri: u8,
    },
    Gunicorn {
        prefix: String,
        facility: u8,
    },
}

struct Installed {
    /// The log as it was (stderr, or --logto's file): a close-on-exec
    /// copy, behind which a reopen or `--daemonize2` puts the new file.
    original: RawFd,
    main: Vec<Sink>,
    /// Index into `main` of each route's logger.
    routes: Vec<(Regex, usize)>,
    requests: Vec<Sink>,
    /// Routes of request lines, to a request logger or (as in uWSGI, where
    /// they name loggers) a main one.
    request_routes: Vec<(Regex, Dest)>,
    /// A logger writes to the standard output (Gunicorn's and uvicorn's
    /// access log): the app's own stdout stays there too, as under them,
    /// and only its stderr is captured.
    stdout_kept: bool,
}

#[derive(Clone, Copy)]
enum Dest {
    Main(usize),
    Request(usize),
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Opens every logger's file and socket, in this process before it forks
/// the workers, which inherit them. Lines go through the loggers from now
/// on: oxgate's own, request lines, and (once `capture_output` runs) the
/// app's.
pub fn install(plan: &LogPlan) -> Result<(), String> {
    plan.check()?;
    let original = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("loggers: cannot keep stderr: {e}"))?;
    let open_all = |loggers: &[Logger]| -> Result<Vec<Sink>, String> {
        loggers
            .iter()
            .map(|l| {
                Ok(Sink {
                    name: l.name.clone(),
                    out: open_target(&l.target)?,
                })
            })
            .collect()
    };
    let main = open_all(&plan.loggers)?;
    let requests = open_all(&plan.request_loggers)?;
    let find =
        |sinks: &[Sink], name: &str| sinks.iter().position(|s| s.name.as_deref() == Some(name));
    let routes = plan
        .routes
        .iter()
        .filter_map(|r| Some((r.pattern.clone(), find(&main, &r.logger)?)))
        .collect();
    let request_routes = plan
        .request_routes
        .iter()
        .filter_map(|r| {
            let dest = find(&requests, &r.logger)
                .map(Dest::Request)
                .or_else(|| find(&main, &r.logger).map(Dest::Main))?;
            Some((r.pattern.clone(), dest))
        })
        .collect();
    INSTALLED
        .set(Installed {
            original: original.into_raw_fd(),
            main,
            routes,
            requests,
            request_routes,
            stdout_kept: plan.writes_to_stdout(),
        })
        .map_err(|_| "loggers installed twice".to_string())
}

fn open_target(target: &Target) -> Result<Out, String> {
    Ok(match target {
        Target::Stdio => Out::Stdio,
        Target::Stdout => Out::Stdout(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("loggers: cannot keep stdout: {e}"))?
                .into_raw_fd(),
        ),
        Target::File(path) => {
            let c = crate::sys::log_path(path)?;
            let fd = crate::sys::open_append(&c)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            Out::File {
                fd: fd.into_raw_fd(),
                path: c,
            }
        }
        Target::Datagram(addr) => Out::Syslog {
            socket: socket(addr)?,
            format: SyslogFormat::Raw,
        },
        Target::Syslog { ident, facility } => Out::Syslog {
            socket: socket(&SyslogAddr::Unix(PathBuf::from("/dev/log")))?,
            format: SyslogFormat::Libc {
                ident: ident.clone(),
                facility: *facility,
            },
        },
        Target::Rsyslog { addr, prefix, pri } => Out::Syslog {
            socket: socket(addr)?,
            format: SyslogFormat::Rsyslog {
                prefix: prefix.clone(),
                pri: *pri,
            },
        },
        Target::GunicornSyslog {
            addr,
            prefix,
            facility,
        } => Out::Syslog {
            socket: socket(addr)?,
            format: SyslogFormat::Gunicorn {
                prefix: prefix.clone(),
                facility: *facility,
            },
        },
    })
}

/// An unconnected, non-blocking datagram socket: a syslog daemon that
/// restarts is found again at the next line, and a full one loses lines
/// rather than stalling the requests.
fn socket(addr: &SyslogAddr) -> Result<Socket, String> {
    match addr {
        SyslogAddr::Unix(path) => {
            let s = UnixDatagram::unbound().map_err(|e| format!("syslog socket: {e}"))?;
            let _ = s.set_nonblocking(true);
            Ok(Socket::Unix(s, path.clone()))
        }
        SyslogAddr::Udp(hostport) => {
            let to = hostport
                .to_socket_addrs()
                .map_err(|e| format!("syslog address {hostport}: {e}"))?
                .next()
                .ok_or_else(|| format!("syslog address {hostport} resolves to no address"))?;
            let local = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let s = UdpSocket::bind(local).map_err(|e| format!("syslog socket: {e}"))?;
            let _ = s.set_nonblocking(true);
            Ok(Socket::Udp(s, to))
        }
    }
}

/// The log as it was, behind its descriptor.
fn original(i: &Installed) -> BorrowedFd<'_> {
    // SAFETY: `install` made this descriptor and nothing closes it: a
    // reopen puts a new file behind the same number.
    unsafe { BorrowedFd::borrow_raw(i.original) }
}

/// The descriptor of the log as it was (stderr, or `--logto`'s file),
/// where the loggers' `stdio` writes; None without loggers.
pub fn original_fd() -> Option<RawFd> {
    INSTALLED.get().map(|i| i.original)
}

/// Puts the file behind `fd` where the loggers' `stdio` writes, after a
/// reopen or `--daemonize2`. Async-signal-safe (one atomic load and
/// dup3): a reopen runs it in a signal handler.
pub fn replace_original(fd: RawFd) {
    if let Some(i) = INSTALLED.get() {
        // SAFETY: dup3 takes integers and touches no memory of ours; it
        // closes the old file behind the number, which only the loggers
        // use.
        unsafe { libc::dup3(fd, i.original, libc::O_CLOEXEC) };
    }
}

/// Whether this process's fds 1 and 2 are the capture's pipe: a reopen
/// must then leave them be. Async-signal-safe.
pub fn capturing() -> bool {
    CAPTURING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the loggers are installed: lines go through `main_line` and
/// `request_line` rather than straight to stderr.
pub fn active() -> bool {
    INSTALLED.get().is_some()
}

/// One of oxgate's lines, or one the app wrote (with its newline).
/// False when no loggers are installed.
pub fn main_line(line: &[u8]) -> bool {
    let Some(i) = INSTALLED.get() else {
        return false;
    };
    dispatch(i, line, Kind::Main);
    true
}

fn dispatch(i: &Installed, line: &[u8], kind: Kind) {
    let bare = line.strip_suffix(b"\n").unwrap_or(line);
    let mut routed = false;
    for (pattern, logger) in &i.routes {
        if pattern.is_match(bare) {
            i.main[*logger].write(i, line, kind);
            routed = true;
        }
    }
    if !routed {
        write_unnamed(i, &i.main, line, kind);
    }
}

/// A request line (with its newline). False when no loggers are
/// installed.
pub fn request_line(line: &[u8]) -> bool {
    let Some(i) = INSTALLED.get() else {
        return false;
    };
    let bare = line.strip_suffix(b"\n").unwrap_or(line);
    let mut routed = false;
    for (pattern, dest) in &i.request_routes {
        if pattern.is_match(bare) {
            match *dest {
                Dest::Main(n) => i.main[n].write(i, line, Kind::Request),
                Dest::Request(n) => i.requests[n].write(i, line, Kind::Request),
            }
            routed = true;
        }
    }
    if !routed {
        if i.requests.is_empty() {
            // Without request loggers, request lines join the others.
            dispatch(i, line, Kind::Request);
        } else {
            write_unnamed(i, &i.requests, line, Kind::Request);
        }
    }
    true
}

/// To every logger without a name; with none, to the log as it was.
fn write_unnamed(i: &Installed, sinks: &[Sink], line: &[u8], kind: Kind) {
    let mut written = false;
    for s in sinks.iter().filter(|s| s.name.is_none()) {
        s.write(i, line, kind);
        written = true;
    }
    if !written {
        let _ = crate::sys::write_all_to(original(i), line);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// One of oxgate's own lines.
    Main,
    Request,
    /// A line the app (or a process it started) wrote on stdout or
    /// stderr.
    Output,
}

impl Sink {
    fn write(&self, i: &Installed, line: &[u8], kind: Kind) {
        match &self.out {
            // A full disk loses the line, as for the main log.
            Out::Stdio => {
                let _ = crate::sys::write_all_to(original(i), line);
            }
            Out::File { fd, .. } | Out::Stdout(fd) => {
                // SAFETY: the descriptor was opened by `install` and is
                // never closed: a reopen puts the new file behind the same
                // number.
                let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
                let _ = crate::sys::write_all_to(fd, line);
            }
            // Gunicorn's syslog handler sees its own log lines only: the
            // app's output never reaches it.
            Out::Syslog {
                format: SyslogFormat::Gunicorn { .. },
                ..
            } if kind == Kind::Output => {}
            Out::Syslog { socket, format } => {
                let message = format.message(line, kind);
                // A lost datagram is a lost line; serving goes on.
                let _ = match socket {
                    Socket::Unix(s, path) => s.send_to(&message, path),
                    Socket::Udp(s, to) => s.send_to(&message, to),
                };
            }
        }
    }
}

impl SyslogFormat {
    fn message(&self, line: &[u8], kind: Kind) -> Vec<u8> {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let now = crate::sys::clock::unix_now();
        let mut out = Vec::with_capacity(bare.len() + 64);
        match self {
            SyslogFormat::Raw => out.extend_from_slice(line),
            // glibc's syslog(3), as uWSGI calls it: openlog(ident, 0,
            // facility), syslog(LOG_INFO, "%s", line). The newline uWSGI
            // leaves on is dropped: syslog daemons end the record anyway.
            SyslogFormat::Libc { ident, facility } => {
                out.extend_from_slice(
                    format!(
                        "<{}>{} {ident}: ",
                        facility * 8 + LOG_INFO,
                        crate::sys::time::strftime("%b %e %H:%M:%S", now)
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(bare);
            }
            SyslogFormat::Rsyslog { prefix, pri } => {
                out.extend_from_slice(
                    format!(
                        "<{pri}>{} {prefix}: ",
                        crate::sys::time::strftime("%b %e %H:%M:%S", now)
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&bare[..bare.len().min(RSYSLOG_MAX_MESSAGE)]);
            }
            // Python's SysLogHandler under Gunicorn's formatter
            // "PREFIX: [%(process)d] %(message)s", NUL-terminated.
            SyslogFormat::Gunicorn { prefix, facility } => {
                let severity = match kind {
                    Kind::Main => severity_of(bare),
                    Kind::Request | Kind::Output => LOG_INFO,
                };
                out.extend_from_slice(
                    format!(
                        "<{}>{prefix}: [{}] ",
                        facility * 8 + severity,
                        std::process::id()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(bare);
                out.push(0);
            }
        }
        out
    }
}

/// The syslog severity of one of oxgate's lines, from the words it starts
/// with ("oxgate: error: ...", "oxgate: warning: ..."); info otherwise.
fn severity_of(line: &[u8]) -> u8 {
    let head = &line[..line.len().min(40)];
    let has = |word: &[u8]| {
        head.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    if has(b"critical") {
        2
    } else if has(b"error") || has(b"traceback") {
        3
    } else if has(b"warning") {
        4
    } else {
        LOG_INFO
    }
}

/// Every `file:` logger's path, to say which could not be reopened.
pub fn file_paths() -> impl Iterator<Item = &'static std::ffi::CStr> {
    let sinks = INSTALLED
        .get()
        .into_iter()
        .flat_map(|i| i.main.iter().chain(&i.requests));
    sinks.filter_map(|s| match &s.out {
        Out::File { path, .. } => Some(path.as_c_str()),
        _ => None,
    })
}

/// Reopens every `file:` logger's path behind its descriptor. Only
/// async-signal-safe calls: it runs in the log's reopen signal handler.
pub fn reopen() -> bool {
    let Some(i) = INSTALLED.get() else {
        return false;
    };
    let mut any = false;
    for s in i.main.iter().chain(&i.requests) {
        if let Out::File { fd, path } = &s.out
            && let Ok(new) = crate::sys::open_append(path)
        {
            // SAFETY: dup3 is async-signal-safe; it puts the new file behind
            // the logger's number (closing the old file there) and leaves
            // `new` to be closed when dropped.
            unsafe { libc::dup3(new.as_raw_fd(), *fd, libc::O_CLOEXEC) };
            any = true;
        }
    }
    any
}

/// The thread reading what this process writes on fds 1 and 2, until
/// `end_capture`.
static CAPTURE: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The pipe's read end, closed in a child the app forks (which has no
/// reader thread, and must not keep the pipe from ending).
static CAPTURE_READER_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn close_capture_reader_in_child() {
    let fd = CAPTURE_READER_FD.load(std::sync::atomic::Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: close is async-signal-safe, as a fork handler needs; in
        // the child nothing else uses this descriptor (the thread that
        // reads it was not copied by the fork).
        unsafe { libc::close(fd) };
    }
}

/// Puts a pipe behind fds 1 and 2 of this process (a worker) and routes
/// each line written there, from the app, its C libraries and its child
/// processes, as uWSGI's log master does. Does nothing when no loggers are
/// installed. Call it after the last fork of this process that expects to
/// keep its threads.
pub fn capture_output() -> Result<(), String> {
    let Some(installed) = INSTALLED.get() else {
        return Ok(());
    };
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| format!("loggers: cannot make the output pipe: {e}"))?;
    CAPTURE_READER_FD.store(read.as_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    // SAFETY: pthread_atfork only registers the handler, which is
    // async-signal-safe (see above), as a handler run in a forked child
    // must be.
    unsafe { libc::pthread_atfork(None, None, Some(close_capture_reader_in_child)) };
    let reader = std::thread::Builder::new()
        .name("oxgate-output".into())
        .spawn(move || route_output(std::fs::File::from(read)))
        .map_err(|e| format!("loggers: cannot start the output reader: {e}"))?;
    if !installed.stdout_kept {
        let _ = nix::unistd::dup2_stdout(&write);
    }
    let _ = nix::unistd::dup2_stderr(&write);
    CAPTURING.store(true, std::sync::atomic::Ordering::Relaxed);
    *CAPTURE.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
    Ok(())
}

fn route_output(mut pipe: std::fs::File) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            output_line(&pending[start..start + end + 1]);
            start += end + 1;
        }
        pending.drain(..start);
        // A line longer than the buffer goes out in pieces rather than
        // growing without bound.
        if pending.len() >= buf.len() {
            pending.push(b'\n');
            output_line(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        output_line(&pending);
    }
}

fn output_line(line: &[u8]) {
    if let Some(i) = INSTALLED.get() {
        dispatch(i, line, Kind::Output);
    }
}

/// Puts the log as it was back behind fds 1 and 2 and waits (a second at
/// most: a child process may still hold the pipe) for the lines already
/// written to be routed. For a worker on its way out.
pub fn end_capture() {
    let Some(reader) = CAPTURE.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let Some(i) = INSTALLED.get() else {
        return;
    };
    CAPTURING.store(false, std::sync::atomic::Ordering::Relaxed);
    if !i.stdout_kept {
        let _ = nix::unistd::dup2_stdout(original(i));
    }
    let _ = nix::unistd::dup2_stderr(original(i));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if reader.is_finished() {
        let _ = reader.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(v: &str) -> Target {
        Logger::parse(v).unwrap().target
    }

    #[test]
    fn a_log_value_is_a_udp_address_only_as_host_and_port() {
        for (value, udp) in [
            ("127.0.0.1:1717", true),
            ("logs.example:514", true),
            ("[::1]:514", true),
            ("uwsgi.log", false),
            ("/var/log/a:1717", false),
            ("./a:1717", false),
            ("a:b.log", false),
            (":1717", false),
            ("host:99999", false),
        ] {
            assert_eq!(udp_log_address(Path::new(value)).is_some(), udp, "{value}");
        }
    }

    #[test]
    fn uwsgi_logger_values() {
        assert_eq!(target("stdio"), Target::Stdio);
        assert_eq!(target("stdout"), Target::Stdout);
        assert_eq!(
            target("file:/var/log/a b.log"),
            Target::File("/var/log/a b.log".into())
        );
        assert!(Logger::parse("file:").is_err());
        // uWSGI's defaults: ident uwsgi, facility daemon.
        assert_eq!(
            target("syslog"),
            Target::Syslog {
                ident: "uwsgi".into(),
                facility: 3
            }
        );
        assert_eq!(
            target("syslog:myapp"),
            Target::Syslog {
                ident: "myapp".into(),
                facility: 3
            }
        );
        assert_eq!(
            target("syslog:myapp,LOCAL6"),
            Target::Syslog {
                ident: "myapp".into(),
                facility: 22
            }
        );
        assert!(Logger::parse("syslog:myapp,nowhere").is_err());
        // A name is letters and digits before the first space.
        let l = Logger::parse("errors1 syslog:x").unwrap();
        assert_eq!(l.name.as_deref(), Some("errors1"));
        assert_eq!(Logger::parse("syslog:x").unwrap().name, None);
        assert!(
            Logger::parse("a-b syslog").is_err(),
            "not a name, so not a target either"
        );
        assert!(Logger::parse("redislog:127.0.0.1").is_err());
    }

    #[test]
    fn rsyslog_values() {
        let Target::Rsyslog { addr, prefix, pri } = target("rsyslog:10.0.0.1") else {
            panic!()
        };
        assert_eq!(addr, SyslogAddr::Udp("10.0.0.1:514".into()));
        assert!(prefix.ends_with(" uwsgi"), "{prefix}");
        assert_eq!(pri, 29);
        assert_eq!(
            target("rsyslog:/run/log.sock,web,13"),
            Target::Rsyslog {
                addr: SyslogAddr::Unix("/run/log.sock".into()),
                prefix: "web".into(),
                pri: 13
            }
        );
        assert!(matches!(
            target("rsyslog:h:5140"),
            Target::Rsyslog { addr: SyslogAddr::Udp(a), .. } if a == "h:5140"
        ));
        assert!(Logger::parse("rsyslog:").is_err());
        assert!(Logger::parse("rsyslog:h,p,300").is_err());
    }

    #[test]
    fn gunicorn_syslog_addresses() {
        let a = |s: &str| gunicorn_syslog_addr(s);
        assert_eq!(
            a("unix:///dev/log"),
            Ok(SyslogAddr::Unix("/dev/log".into()))
        );
        assert_eq!(
            a("unix:///dev/log#dgram"),
            Ok(SyslogAddr::Unix("/dev/log".into()))
        );
        assert!(a("unix:///dev/log#stream").is_err());
        assert!(a("unix:///dev/log#other").is_err());
        assert_eq!(
            a("udp://localhost"),
            Ok(SyslogAddr::Udp("localhost:514".into()))
        );
        assert_eq!(a("udp://h:5140"), Ok(SyslogAddr::Udp("h:5140".into())));
        assert_eq!(a("udp://[::1]"), Ok(SyslogAddr::Udp("[::1]:514".into())));
        assert_eq!(a("udp://[::1]:9"), Ok(SyslogAddr::Udp("[::1]:9".into())));
        assert!(a("tcp://h:514").unwrap_err().contains("not TCP"));
        assert!(a("udp://").unwrap_err().contains("no host"));
        assert!(a("udp://:514").unwrap_err().contains("no host"));
        // A prefix may hold commas: the facility is after the last one.
        assert_eq!(
            target("gunicorn-syslog:udp://h,gunicorn.app.create_app(a, b).error,local1"),
            Target::GunicornSyslog {
                addr: SyslogAddr::Udp("h:514".into()),
                prefix: "gunicorn.app.create_app(a, b).error".into(),
                facility: 17
            }
        );
        assert!(a("h:514").is_err());
    }

    #[test]
    fn messages_in_each_shape() {
        let libc = SyslogFormat::Libc {
            ident: "app".into(),
            facility: 22,
        }
        .message(b"hello\n", Kind::Main);
        let text = String::from_utf8(libc).unwrap();
        assert!(text.starts_with("<182>"), "{text}");
        // "<182>Dec  3 10:46:18 app: hello": the date is 15 characters.
        assert_eq!(&text[5 + 15..], " app: hello");
        let long = vec![b'x'; 5000];
        let r = SyslogFormat::Rsyslog {
            prefix: "h uwsgi".into(),
            pri: 29,
        }
        .message(&long, Kind::Main);
        assert_eq!(r.len(), 4 + 15 + " h uwsgi: ".len() + RSYSLOG_MAX_MESSAGE);
        let g = |kind, line: &[u8]| {
            SyslogFormat::Gunicorn {
                prefix: "gunicorn.app.error".into(),
                facility: 1,
            }
            .message(line, kind)
        };
        let pid = std::process::id();
        assert_eq!(
            g(Kind::Main, b"oxgate: warning: slow\n"),
            format!("<12>gunicorn.app.error: [{pid}] oxgate: warning: slow\0").into_bytes()
        );
        assert_eq!(
            g(Kind::Request, b"GET / error\n"),
            format!("<14>gunicorn.app.error: [{pid}] GET / error\0").into_bytes(),
            "a request line is info, whatever it holds"
        );
    }

    #[test]
    fn severity_from_the_line() {
        assert_eq!(severity_of(b"oxgate: error: cannot"), 3);
        assert_eq!(severity_of(b"Traceback (most recent call last):"), 3);
        assert_eq!(severity_of(b"oxgate: warning: x"), 4);
        assert_eq!(severity_of(b"oxgate: serving"), LOG_INFO);
        // Only the line's head counts: a word deep in a message does not.
        let deep = format!("oxgate: {} error", "x".repeat(60));
        assert_eq!(severity_of(deep.as_bytes()), LOG_INFO);
    }

    #[test]
    fn plain_plans_and_routes() {
        let plan = |loggers: &[&str], routes: &[&str]| LogPlan {
            loggers: loggers.iter().map(|l| Logger::parse(l).unwrap()).collect(),
            routes: routes.iter().map(|r| Route::parse(r).unwrap()).collect(),
            ..LogPlan::default()
        };
        assert!(plan(&[], &[]).is_plain());
        assert!(plan(&["file:/a"], &[]).is_plain());
        assert!(!plan(&["file:/a", "file:/b"], &[]).is_plain());
        assert!(!plan(&["syslog"], &[]).is_plain());
        assert!(!plan(&["n file:/a"], &[]).is_plain());
        assert!(plan(&["n file:/a"], &["n x"]).check().is_ok());
        assert!(plan(&["file:/a"], &["n x"]).check().is_err());
        assert!(Route::parse("nospace").is_err());
        assert!(Route::parse("n (").is_err());
        // The pattern is the rest of the value, spaces and all.
        assert_eq!(Route::parse("n a b").unwrap().pattern.as_str(), "a b");
    }

    proptest::proptest! {
        #[test]
        fn no_value_makes_the_readers_panic(v in ".{0,64}") {
            let _ = Logger::parse(&v);
            let _ = Route::parse(&v);
            let _ = gunicorn_syslog_addr(&v);
            let _ = facility(&v);
        }
    }
}
