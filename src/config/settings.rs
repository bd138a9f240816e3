//! The resolved configuration the server runs on.

use std::path::PathBuf;
use std::time::Duration;

use crate::lifecycle::Control;

/// The most workers `--processes` may ask for: two generations must fit in
/// the scoreboard (`master::scoreboard::SLOTS`) during a reload.
pub const MAX_WORKERS: usize = 128;

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

/// An option whose value is one of a few words: each word and its value,
/// read by `resolve` and written back by `name` for the log.
pub trait Words: Copy + PartialEq + 'static {
    const WORDS: &'static [(&'static str, Self)];

    fn name(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(w, _)| w)
    }

    /// The value a word names (case-insensitive, around spaces).
    fn from_word(word: &str) -> Option<Self> {
        Self::WORDS
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(word.trim()))
            .map(|(_, v)| *v)
    }
}

/// How an app is called (`--interface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// ASGI when the callable is a coroutine function (ASGI 2 when it is
    /// a class whose instances' `__call__` is one), else WSGI.
    Auto,
    Wsgi,
    Asgi,
    /// ASGI 2: the app is called with the scope alone, and what it returns
    /// is awaited with `receive` and `send` (uvicorn's `--interface asgi2`).
    Asgi2,
}

impl Words for Interface {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("auto", Interface::Auto),
        ("wsgi", Interface::Wsgi),
        ("asgi", Interface::Asgi),
        ("asgi2", Interface::Asgi2),
    ];
}

/// `--log-level`: Gunicorn's and uvicorn's levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warning,
    Error,
    Critical,
}

impl Words for LogLevel {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("debug", LogLevel::Debug),
        // uvicorn's level below debug.
        ("trace", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warning", LogLevel::Warning),
        ("error", LogLevel::Error),
        ("critical", LogLevel::Critical),
    ];
}

/// `--app-loggers`: the Python loggers a server sets up for its apps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppLoggers {
    #[default]
    None,
    Gunicorn,
    Uvicorn,
}

impl Words for AppLoggers {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("none", AppLoggers::None),
        ("gunicorn", AppLoggers::Gunicorn),
        ("uvicorn", AppLoggers::Uvicorn),
    ];
}

/// `--lifespan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifespanMode {
    Auto,
    On,
    Off,
}

impl Words for LifespanMode {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("auto", LifespanMode::Auto),
        ("on", LifespanMode::On),
        ("off", LifespanMode::Off),
    ];
}

/// `--ws`: uvicorn's implementations all mean "serve WebSockets".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    Auto,
    None,
}

impl Words for WsMode {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("auto", WsMode::Auto),
        ("none", WsMode::None),
        ("websockets", WsMode::Auto),
        ("websockets-sansio", WsMode::Auto),
        ("wsproto", WsMode::Auto),
    ];
}

/// `--ws`, `--ws-max-size`, `--ws-ping-interval`, `--ws-ping-timeout`,
/// `--ws-per-message-deflate`.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub enabled: bool,
    pub max_size: usize,
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Option<Duration>,
    /// `--ws-per-message-deflate`.
    pub per_message_deflate: bool,
    /// `--ws-close-at-stop`: open sockets close with 1012 when a stop
    /// begins, not with 1001 after the mercy time.
    pub close_at_stop: bool,
}

/// `--loop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    Auto,
    Asyncio,
    Uvloop,
}

impl Words for LoopKind {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("auto", LoopKind::Auto),
        ("asyncio", LoopKind::Asyncio),
        ("uvloop", LoopKind::Uvloop),
    ];
}

/// What ASGI apps are run with.
#[derive(Debug, Clone)]
pub struct AsgiSettings {
    pub event_loop: LoopKind,
    pub lifespan: LifespanMode,
    /// How long the lifespan shutdown may take (`--worker-reload-mercy`).
    pub shutdown_timeout: Duration,
    pub ws: WsSettings,
}

/// An `--https-socket`: where, and the files its TLS is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSocket {
    pub addr: String,
    /// The PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// TLS suites to allow, colon-separated; empty for rustls's defaults.
    pub ciphers: String,
    /// CAs whose client certificates are asked for (`--https-client-ca`,
    /// or the fifth field).
    pub client_ca: Option<PathBuf>,
    /// A client without a valid certificate is refused.
    pub client_required: bool,
    /// An optional certificate that is given must verify, or the handshake
    /// fails (`?CA`: Python's CERT_OPTIONAL, Gunicorn's and uvicorn's
    /// `cert_reqs` 1). Without it, one that fails is the app's to judge
    /// (`SSL_CLIENT_VERIFY=FAILED:…`, Apache's `optional_no_ca`).
    pub client_verified_when_given: bool,
}

impl HttpsSocket {
    /// The fields after ADDR in `--https-socket` for Python's `ssl`
    /// settings as Gunicorn and uvicorn take them: a certificate file alone
    /// holds the key too (`load_cert_chain` reads it so), and `cert_reqs` 1
    /// (CERT_OPTIONAL) or 2 (CERT_REQUIRED) asks for client certificates
    /// signed by `ca_certs`. Client certificates asked for with no CA to
    /// check them by is an error: served unchecked, it would let every
    /// client in (Gunicorn and uvicorn fail closed).
    pub fn fields_from_python_ssl(
        cert: String,
        key: Option<String>,
        ciphers: Option<String>,
        ca_certs: Option<String>,
        cert_reqs: Option<&str>,
    ) -> Result<String, String> {
        let key = key.unwrap_or_else(|| cert.clone());
        let ca = match (ca_certs, cert_reqs.map(str::trim)) {
            (Some(ca), Some("2")) => format!("!{ca}"),
            // Python's CERT_OPTIONAL: a certificate given must verify.
            (Some(ca), Some("1")) => format!("?{ca}"),
            (None, Some(reqs @ ("1" | "2"))) => {
                return Err(format!(
                    "cert_reqs {reqs} asks for client certificates, but no ca_certs says which CAs sign them"
                ));
            }
            _ => String::new(),
        };
        if let Some(path) = [&cert, &key, &ca].into_iter().find(|f| f.contains(',')) {
            return Err(format!(
                "a certificate, key or CA path with a comma cannot be served: {path}"
            ));
        }
        // OpenSSL takes commas or colons between suites; the field, colons.
        let ciphers = ciphers.unwrap_or_default().replace(',', ":");
        Ok(format!("{cert},{key},{ciphers},{ca}"))
    }
}

/// What TLS and HTTP/2 are offered with, on every socket.
#[derive(Debug, Clone)]
pub struct TlsHttp2 {
    /// `--ssl-min-version 1.3`: TLS 1.2 is not offered.
    pub tls13_only: bool,
    /// `--sni`: other certificates, by the server name clients ask for.
    pub sni: Vec<SniCert>,
    /// HTTP/2 is offered (ALPN h2, h2c with prior knowledge): not
    /// `--http2-off`.
    pub http2: bool,
    pub http2_max_streams: u32,
    /// `--http2-max-pending`: HTTP/2 requests per worker, all connections.
    pub http2_max_pending: usize,
}

/// One `--sni NAME,CERT,KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCert {
    /// Lower case; `*.example.com` matches one level below.
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Gunicorn settings the command line or `GUNICORN_CMD_ARGS` gave,
    /// for the hooks' `server.cfg` (empty in the other dialects).
    pub gunicorn_given: Vec<(String, crate::config::gunicorn::PyValue)>,
    pub http_sockets: Vec<String>,
    pub https_sockets: Vec<HttpsSocket>,
    pub tls_http2: TlsHttp2,
    /// uwsgi-protocol sockets (`socket`, `uwsgi-socket`).
    pub uwsgi_sockets: Vec<String>,
    pub scgi_sockets: Vec<String>,
    pub fastcgi_sockets: Vec<String>,
    /// What a socket systemd passes that no option names speaks: the
    /// protocol --protocol gives --socket, when it is given (uWSGI serves
    /// such a socket as its default socket); HTTP otherwise.
    pub activated_protocol: crate::listen::Protocol,
    pub listen_backlog: i32,
    /// `--reuse-port`: TCP sockets bound with SO_REUSEPORT.
    pub reuse_port: bool,
    /// Permissions of unix sockets (0660 unless --chmod-socket says).
    pub chmod_socket: u32,
    /// The default app (`--wsgi-file`, `--module`); `None` when only
    /// `--mount` apps are given.
    pub app: Option<AppSpec>,
    /// `--mount MOUNTPOINT=APP`, in the order given.
    pub mounts: Vec<(String, AppSpec)>,
    pub manage_script_name: bool,
    /// `--no-default-app`: with mounts, no fallback to the default app.
    pub no_default_app: bool,
    /// `--wsgi-disable-file-wrapper`.
    pub wsgi_file_wrapper: bool,
    /// `--vhost`: requests' UWSGI_SCRIPT/UWSGI_MODULE/UWSGI_FILE vars load apps.
    pub vhost: bool,
    /// `--interface`/`--asgi`, `--loop`, `--lifespan`.
    pub interface: Interface,
    /// `--root-path`, `--proxy-headers` (the trusted proxies), and
    /// `--limit-concurrency`.
    pub root_path: Option<String>,
    /// `--root-path-unstripped`: requests come with the root path.
    pub root_path_unstripped: bool,
    /// `--health-path`: answered by the server, before the app.
    pub health_path: Option<String>,
    /// `--static-map` and the options around it.
    pub statics: StaticSettings,
    /// `--cgi` and the options around it.
    pub cgi: CgiSettings,
    /// `--fastcgi-pass` and the options around it.
    pub fastcgi: FastcgiSettings,
    /// `--proxy-headers` (None when off): the headers read, and from whom
    /// (`--forwarded-allow-ips`).
    pub proxy_headers: Option<(
        crate::request::wrappers::ForwardedHeaders,
        Vec<crate::request::wrappers::Trusted>,
    )>,
    /// `--secure-scheme-header`: the headers (CGI names, `HTTP_...`) and
    /// values that say https, and the proxies trusted to send them.
    pub secure_scheme: Option<SecureScheme>,
    /// `--script-name-header`: the proxies whose SCRIPT_NAME header is
    /// taken.
    pub script_name_header: Option<Vec<crate::request::wrappers::Trusted>>,
    /// `--add-header`: names and values added to every response.
    pub add_headers: Vec<(String, String)>,
    /// `--proxy-protocol` (None when off) and `--proxy-allow-from`.
    pub proxy_protocol: Option<ProxyProtocolSettings>,
    pub limit_concurrency: Option<usize>,
    pub asgi: AsgiSettings,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<PathBuf>,
    /// `--log-config`: Python's logging configuration, applied before the
    /// app loads.
    pub python_log_config: Option<PathBuf>,
    /// `--app-loggers`: the server loggers set up before the app loads.
    pub app_loggers: AppLoggers,
    /// `--import`: modules imported after the app.
    pub imports: Vec<String>,
    pub home: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `--unenv`, and `--env NAME` with no value: unset before the app
    /// starts (none of them is in `env`).
    pub unenv: Vec<String>,
    pub threads: usize,
    pub limit_post: Option<u64>,
    /// `--max-connections` per worker (0: from the open-files limit).
    pub max_connections: usize,
    /// HTTP bodies read before the app is called (`--post-buffering`).
    pub post_buffering: u64,
    /// `--min-body-rate`, bytes a second (0 is off).
    pub min_body_rate: u64,
    /// `--http-early-hints`: HTTP/1.1 requests may get 103s before their
    /// response.
    pub early_hints: bool,
    /// Gunicorn's request-head limits (HTTP only; 0 is off).
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    pub buffer_size: usize,
    pub socket_timeout: Duration,
    /// `--keepalive-timeout`: an HTTP connection's wait for its next
    /// request (`None`: the socket timeout; zero: no keep-alive).
    pub keepalive_timeout: Option<Duration>,
    /// `--statsd-host` and the options around it.
    pub statsd: Option<StatsdSettings>,
    pub process: ProcessConfig,
    pub log: LogSettings,
    pub log_files: LogFiles,
    pub stats: StatsConfig,
}

impl Config {
    /// Whether a Python app is to be loaded: without one (scripts or static
    /// files alone), Python is never started.
    pub fn needs_python(&self) -> bool {
        self.app.is_some() || !self.mounts.is_empty() || self.vhost
    }
}

/// `--secure-scheme-header`s, and the proxies (`--forwarded-allow-ips`)
/// whose requests they count on.
#[derive(Debug, Clone)]
pub struct SecureScheme {
    pub trusted: Vec<crate::request::wrappers::Trusted>,
    /// A unix socket's client is trusted too (Gunicorn's rule, for the
    /// headers given); by default only with `--forwarded-allow-ips '*'`,
    /// as uvicorn trusts it.
    pub unix_sockets_trusted: bool,
    /// (`HTTP_X_FORWARDED_PROTO`, `https`): the CGI name and the exact
    /// value (compared case-sensitively, as Gunicorn does).
    pub headers: Vec<(String, String)>,
}

/// `--statsd-host`, `--statsd-prefix` and `--dogstatsd-tags`.
#[derive(Debug, Clone)]
pub struct StatsdSettings {
    /// `host:port`, or `unix:PATH`.
    pub target: String,
    /// Empty, or the prefix with its trailing dot.
    pub prefix: String,
    /// DogStatsD tags, added to every metric as `|#TAGS`.
    pub tags: Option<String>,
}

/// Where the log goes and how it is kept.
#[derive(Debug, Clone, Default)]
pub struct LogFiles {
    /// `--log-maxsize`, bytes.
    pub maxsize: Option<u64>,
    /// `--logfile-chown`.
    pub chown: bool,
    pub backupname: Option<PathBuf>,
    pub touch_reopen: Vec<PathBuf>,
    /// `--logdate`: a strftime format for oxgate's own messages.
    pub date: Option<String>,
    /// `--log-level`: which of oxgate's own messages are written.
    pub level: LogLevel,
    /// `--log-encoder`: what oxgate's own messages become.
    pub encoders: Vec<EncodeStep>,
    /// `--log-prefix`: oxgate's own messages start with it.
    pub prefix: Option<String>,
    /// `--req-logger file:PATH`: request lines in a file of their own.
    pub requests: Option<PathBuf>,
    /// That file's `maxsize=` and `backupname=` (`--req-logger
    /// file:logfile=PATH,maxsize=N`): rotated as the log is.
    pub requests_rotation: Option<(u64, Option<PathBuf>)>,
    /// Loggers beyond one file (`--logger` several times, syslog, named
    /// loggers and their routes), installed at start.
    pub loggers: Option<crate::log::route::LogPlan>,
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
    /// `--quick-stop-on-int`: Gunicorn's meaning of SIGINT and SIGQUIT.
    pub quick_stop_on_int: bool,
    pub processes: usize,
    /// Whether `processes` was asked for, not the number of CPUs.
    pub processes_given: bool,
    pub lazy_apps: bool,
    /// `--sched-batch`: workers' threads under SCHED_BATCH.
    pub sched_batch: bool,
    pub harakiri: Option<Duration>,
    pub max_requests: Option<u64>,
    pub max_requests_delta: u64,
    /// Gunicorn's jitter: each worker adds a random 0..=N of its own.
    pub max_requests_jitter: u64,
    pub max_worker_lifetime: Option<Duration>,
    /// Bytes.
    pub reload_on_rss: Option<u64>,
    pub evil_reload_on_rss: Option<u64>,
    /// `--master-fifo` slots.
    pub master_fifo: Vec<PathBuf>,
    /// `--min-worker-lifetime` (uWSGI's default: 10 s).
    pub min_worker_lifetime: Duration,
    /// `--reload-on-as`, bytes.
    pub reload_on_as: Option<u64>,
    pub limit_as: Option<u64>,
    pub worker_reload_mercy: Duration,
    pub reload_mercy: Duration,
    /// `--drain-delay`: how long a graceful stop keeps serving with the
    /// health check failing, before the workers are told to stop.
    pub drain_delay: Option<Duration>,
    pub pidfile: Option<PathBuf>,
    /// `--pidfile-exclusive`: a live pid in it stops the start.
    pub pidfile_exclusive: bool,
    pub pidfile2: Option<PathBuf>,
    pub daemonize: Option<PathBuf>,
    pub daemonize2: Option<PathBuf>,
    pub logto: Option<PathBuf>,
    /// `--logto2`: the log file from the drop of privileges on.
    pub logto2: Option<PathBuf>,
    pub vacuum: bool,
    /// `--reaper`: workers reap the children the app left unwaited for.
    pub reaper: bool,
    pub titles: ProcessTitles,
    pub touch_reload: Vec<PathBuf>,
    pub touch_chain_reload: Vec<PathBuf>,
    /// `--exit-on-reload`: a reload asked for stops instead.
    pub exit_on_reload: bool,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// `--no-initgroups`: `--uid`'s user's supplementary groups are not
    /// taken.
    pub no_initgroups: bool,
    pub attach_daemons: Vec<String>,
    /// (pidfile, command)
    pub smart_attach_daemons: Vec<(PathBuf, String)>,
    pub py_autoreload: Option<Duration>,
    pub chown_socket: Option<String>,
    pub umask: Option<u32>,
}

/// The processes' titles, as ps shows them (`--auto-procname`,
/// `--procname*`, uWSGI's options): none of them, no title is set.
#[derive(Debug, Clone, Default)]
pub struct ProcessTitles {
    pub auto: bool,
    /// `--procname`: every process's.
    pub every: Option<String>,
    /// `--procname-master`.
    pub master: Option<String>,
    /// `--procname-prefix` (`-spaced`'s with its space).
    pub prefix: String,
    /// `--procname-append`.
    pub append: String,
}

impl ProcessTitles {
    /// Whether the processes get titles: any of the options, as in uWSGI,
    /// where a prefix, a suffix or the master's title alone give every
    /// process its title too.
    pub fn wanted(&self) -> bool {
        self.auto
            || self.every.is_some()
            || self.master.is_some()
            || !self.prefix.is_empty()
            || !self.append.is_empty()
    }

    pub fn master(&self) -> Option<String> {
        let own = self.master.as_ref().or(self.every.as_ref());
        self.dressed(|| own.cloned().unwrap_or_else(|| "oxgate master".into()))
    }

    /// Worker `id`'s (also the single process's, without a master).
    pub fn worker(&self, id: u32) -> Option<String> {
        self.dressed(|| {
            self.every
                .clone()
                .unwrap_or_else(|| format!("oxgate worker {id}"))
        })
    }

    /// The FastCGI pools' manager's.
    pub fn pools(&self) -> Option<String> {
        self.dressed(|| self.every.clone().unwrap_or_else(|| "oxgate pools".into()))
    }

    fn dressed(&self, title: impl FnOnce() -> String) -> Option<String> {
        self.wanted()
            .then(|| format!("{}{}{}", self.prefix, title(), self.append))
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Serve(Box<Config>),
    Control(Control, PathBuf),
    Help,
    Version,
    /// `--completions SHELL`: the script for that shell.
    Completions(String),
}

/// How requests are logged (from the `log-*` options).
#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    /// Every request (`--disable-logging` turns it off).
    pub enabled: bool,
    /// `--log-format`; `None` is uWSGI's default line.
    pub format: Option<String>,
    pub encoder: Encoder,
    /// `--log-format-strftime` with `--logdate FORMAT`: `%(ftime)` uses it.
    pub ftime: Option<String>,
    /// `--log-micros`: the default line says "micros" instead of "msecs".
    pub micros: bool,
    /// `--log-x-forwarded-for`: the client is X-Forwarded-For when present.
    pub x_forwarded_for: bool,
    /// `--log-escape-quotes`: `"` in a value is written `\"`.
    pub escape_quotes: bool,
    /// `--memory-report`: the default line starts with the worker's
    /// address space and resident size.
    pub memory_report: bool,
    // What is logged even with --disable-logging.
    pub slow_ms: Option<u64>,
    pub log_4xx: bool,
    pub log_5xx: bool,
    pub big: Option<u64>,
    pub zero: bool,
}

impl LogSettings {
    /// Whether any request may be logged at all.
    pub fn active(&self) -> bool {
        self.enabled
            || self.slow_ms.is_some()
            || self.log_4xx
            || self.log_5xx
            || self.big.is_some()
            || self.zero
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Encoder {
    #[default]
    Plain,
    /// A JSON object with every log variable.
    JsonFields,
    /// uWSGI's encoders, each given the line the one before made, in the
    /// order given.
    Chain(Vec<EncodeStep>),
}

pub use crate::log::encode::EncodeStep;

/// Files served from disk before the app (`handlers::static_files`).
#[derive(Debug, Clone, Default)]
pub struct StaticSettings {
    /// `--static-map` and `--static-map2`, in the order given.
    pub maps: Vec<StaticMap>,
    /// `--check-static`: served when the file exists, at the request's path.
    pub check: Vec<PathBuf>,
    /// `--static-index`.
    pub index: Vec<String>,
    /// `--static-skip-ext`.
    pub skip_ext: Vec<String>,
    /// `--static-safe`: where symbolic links may point besides the root.
    pub safe: Vec<PathBuf>,
    /// `--mimefile`; empty means /etc/mime.types when it exists.
    pub mimefiles: Vec<PathBuf>,
    /// `--check-static-docroot`: the front end's DOCUMENT_ROOT is checked
    /// too.
    pub check_docroot: bool,
    /// `--static-expires-type` (MIME type), then its -mtime form.
    pub expires_type: Vec<Expiry<String>>,
    /// `--static-expires` (regex on the file's path), then its -mtime form.
    pub expires_file: Vec<Expiry<regex::Regex>>,
    /// `--static-expires-uri` (regex on REQUEST_URI), then its -mtime form.
    pub expires_uri: Vec<Expiry<regex::Regex>>,
    /// `--static-expires-path-info` (regex on PATH_INFO), then its -mtime
    /// form.
    pub expires_path_info: Vec<Expiry<regex::Regex>>,
    /// `--static-immutable`.
    pub immutable: bool,
    /// `--static-gzip-all`, `--static-gzip-dir`, `--static-gzip-ext`,
    /// `--static-gzip` (regexes on the file's path).
    pub gzip_all: bool,
    pub gzip_dirs: Vec<PathBuf>,
    pub gzip_ext: Vec<String>,
    pub gzip_regex: Vec<regex::Regex>,
}

/// A `--static-expires*` rule: a file it matches gets Expires `seconds`
/// after now, or after the file's modification time (the -mtime forms).
#[derive(Debug, Clone)]
pub struct Expiry<M> {
    pub on: M,
    pub seconds: u64,
    pub after_mtime: bool,
}

impl StaticSettings {
    pub fn active(&self) -> bool {
        !self.maps.is_empty() || !self.check.is_empty() || self.check_docroot
    }
}

/// CGI scripts run per request (`handlers::cgi`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgiSettings {
    /// `--cgi`, in the order given.
    pub dirs: Vec<CgiDir>,
    /// `--cgi-allowed-ext`: empty allows every name.
    pub allowed_ext: Vec<String>,
    /// `--cgi-helper`: (extension with its dot, the command's words).
    pub helpers: Vec<(String, Vec<String>)>,
    /// `--cgi-index`.
    pub index: Vec<String>,
    /// `--cgi-unset`: variables no script is given.
    pub unset: Vec<String>,
    /// `--cgi-timeout`.
    pub timeout: Duration,
}

impl CgiSettings {
    pub fn active(&self) -> bool {
        !self.dirs.is_empty()
    }
}

/// One `--cgi [MOUNT=]DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiDir {
    /// The URL path prefix, without a trailing slash ("" for the root).
    pub mount: String,
    /// A directory of scripts, or one script for the whole mount.
    pub path: PathBuf,
}

/// FastCGI apps behind oxgate (`handlers::fastcgi`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastcgiSettings {
    /// `--fastcgi-app`, in the order given.
    pub apps: Vec<FastcgiApp>,
    /// `--fastcgi-app-env`.
    pub env: Vec<(String, String)>,
    /// `--fastcgi-pass`, in the order given.
    pub passes: Vec<FastcgiPass>,
    pub docroot: Option<PathBuf>,
    pub index: Vec<String>,
    pub fallback: Option<String>,
    pub timeout: Option<Duration>,
    /// `--fastcgi-app-slowlog`.
    pub slowlog: Option<Duration>,
    pub pm: ProcessManager,
    /// `--fastcgi-app-spare MIN:MAX`.
    pub spare: (usize, usize),
    pub idle_timeout: Duration,
}

impl FastcgiSettings {
    pub fn active(&self) -> bool {
        !self.passes.is_empty() || !self.apps.is_empty()
    }
}

/// `--fastcgi-app-pm`: how a pool's processes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessManager {
    Static,
    #[default]
    Dynamic,
    Ondemand,
}

impl Words for ProcessManager {
    const WORDS: &'static [(&'static str, Self)] = &[
        ("static", ProcessManager::Static),
        ("dynamic", ProcessManager::Dynamic),
        ("ondemand", ProcessManager::Ondemand),
    ];
}

/// One `--fastcgi-app [MOUNT=]COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastcgiApp {
    pub mount: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    pub processes: usize,
    pub max_requests: Option<u64>,
}

/// One `--fastcgi-pass [MOUNT=]ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastcgiPass {
    /// The URL path prefix, without a trailing slash ("" for the root).
    pub mount: String,
    pub addr: crate::listen::Address,
}

/// One `--static-map` (or `--static-map2`, which keeps the mount in the
/// file's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticMap {
    /// The URL path prefix, without a trailing slash ("" for the root).
    pub mount: String,
    pub dir: PathBuf,
    pub keep_mount: bool,
}

/// `--proxy-protocol`: the versions read, and `--proxy-allow-from`.
#[derive(Debug, Clone)]
pub struct ProxyProtocolSettings {
    pub v1: bool,
    pub v2: bool,
    pub allow: Vec<crate::request::wrappers::Trusted>,
}

/// The part of a worker's stop (`mercy`, its --worker-reload-mercy or
/// --reload-mercy) kept for its ASGI apps' lifespan shutdown, after the
/// requests: a quarter of it, 5 s at most.
pub fn asgi_shutdown_reserve(mercy: Duration) -> Duration {
    (mercy / 4).min(Duration::from_secs(5))
}
