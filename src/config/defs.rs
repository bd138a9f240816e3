//! Every option oxgate understands, declared once. The command line, `--help`
//! and (later) the config-file readers are all derived from this table.

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch; `--name` alone means true, `--name=false` turns it off.
    Flag,
    /// A switch that may carry a value instead (`--logdate`, `--logdate=FMT`).
    FlagOrStr,
    /// A whole number.
    Int,
    /// A single string; a later setting replaces an earlier one.
    Str,
    /// A string that may be given many times; every value is kept, in order.
    List,
}

/// The help section an option is listed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Sockets,
    App,
    Python,
    Process,
    Limits,
    Logging,
    Config,
    Info,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Sockets => "Sockets",
            Group::App => "Loading the application",
            Group::Python => "Python environment",
            Group::Process => "Process",
            Group::Limits => "Limits and timeouts",
            Group::Logging => "Logging, stats and metrics",
            Group::Config => "Configuration files",
            Group::Info => "Information",
        }
    }
    pub const ALL: [Group; 8] = [
        Group::Sockets,
        Group::App,
        Group::Python,
        Group::Process,
        Group::Limits,
        Group::Logging,
        Group::Config,
        Group::Info,
    ];
}

#[derive(Debug)]
pub struct OptDef {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub kind: Kind,
    pub group: Group,
    pub value_name: &'static str,
    pub help: &'static str,
}

macro_rules! opt {
    ($name:literal, [$($alias:literal),*], $short:expr, $kind:ident, $group:ident, $vn:literal, $help:literal) => {
        OptDef {
            name: $name,
            aliases: &[$($alias),*],
            short: $short,
            kind: Kind::$kind,
            group: Group::$group,
            value_name: $vn,
            help: $help,
        }
    };
}

pub static OPTIONS: &[OptDef] = &[
    opt!(
        "http-socket",
        ["http"],
        None,
        List,
        Sockets,
        "ADDR",
        "Serve HTTP/1.1 on ADDR: host:port, :port, [::1]:port or a unix socket path. \
         --http is the same thing: oxgate's workers speak HTTP themselves, there is no separate router process."
    ),
    opt!(
        "socket",
        [],
        Some('s'),
        List,
        Sockets,
        "ADDR",
        "A socket in the protocol --protocol names: the uwsgi protocol by default (nginx uwsgi_pass), HTTP with --protocol http."
    ),
    opt!(
        "uwsgi-socket",
        [],
        None,
        List,
        Sockets,
        "ADDR",
        "A uwsgi-protocol socket, whatever --protocol says."
    ),
    opt!(
        "fastcgi-socket",
        [],
        None,
        List,
        Sockets,
        "ADDR",
        "A FastCGI socket (nginx fastcgi_pass, with or without fastcgi_keep_conn; Apache mod_proxy_fcgi; lighttpd mod_fastcgi)."
    ),
    opt!(
        "scgi-socket",
        [],
        None,
        List,
        Sockets,
        "ADDR",
        "An SCGI socket (nginx scgi_pass, Apache mod_proxy_scgi, lighttpd mod_scgi)."
    ),
    opt!(
        "protocol",
        [],
        None,
        Str,
        Sockets,
        "NAME",
        "The protocol of --socket: uwsgi (the default), http, scgi or fastcgi."
    ),
    opt!(
        "bind",
        [],
        Some('b'),
        List,
        Sockets,
        "ADDR",
        "Gunicorn's spelling of --http-socket. -b with a number is uWSGI's -b, --buffer-size."
    ),
    opt!(
        "listen",
        [],
        Some('l'),
        Int,
        Sockets,
        "N",
        "Backlog of each listening socket (default 1024; the kernel caps it at net.core.somaxconn)."
    ),
    opt!(
        "chmod-socket",
        [],
        Some('C'),
        Str,
        Sockets,
        "MODE",
        "Permissions of unix sockets, octal (default 666 when given without a value)."
    ),
    opt!(
        "wsgi-file",
        ["file"],
        None,
        Str,
        App,
        "FILE",
        "Load the WSGI callable from a Python file."
    ),
    opt!(
        "module",
        ["wsgi"],
        Some('w'),
        Str,
        App,
        "MODULE[:CALLABLE]",
        "Load the WSGI callable from an importable module: pkg.mod, pkg.mod:app, or pkg.mod:factory() to call a factory."
    ),
    opt!(
        "mount",
        [],
        None,
        List,
        App,
        "MOUNTPOINT=APP",
        "Serve another app under a URL prefix (repeatable): /blog=blog.py, /api=api.wsgi:app. The request's SCRIPT_NAME picks the app (the longest mountpoint that prefixes PATH_INFO with --manage-script-name); other requests go to the --wsgi-file/--module app. All apps share one interpreter."
    ),
    opt!(
        "vhost",
        [],
        None,
        Flag,
        App,
        "",
        "Dynamic apps: a request's UWSGI_SCRIPT, UWSGI_MODULE (+ UWSGI_CALLABLE) or UWSGI_FILE variable (nginx's uwsgi_param) names the app, loaded on first use after UWSGI_CHDIR and UWSGI_PYHOME, and kept. Only with --vhost: these variables let the front end load code."
    ),
    opt!(
        "manage-script-name",
        [],
        None,
        Flag,
        App,
        "",
        "Pick the --mount app by the longest mountpoint that prefixes PATH_INFO, and move that prefix from PATH_INFO to SCRIPT_NAME."
    ),
    opt!(
        "callable",
        [],
        None,
        Str,
        App,
        "NAME",
        "Name of the WSGI callable in the module or file (default: application)."
    ),
    opt!(
        "chdir",
        [],
        None,
        Str,
        App,
        "DIR",
        "Change to DIR before loading the app."
    ),
    opt!(
        "pythonpath",
        ["python-path", "pp"],
        None,
        List,
        Python,
        "DIR",
        "Put DIR in front of sys.path (repeatable)."
    ),
    opt!(
        "home",
        ["virtualenv", "venv", "pyhome"],
        Some('H'),
        Str,
        Python,
        "DIR",
        "Use the virtualenv in DIR (default: $VIRTUAL_ENV when set)."
    ),
    opt!(
        "env",
        [],
        None,
        List,
        Python,
        "KEY=VALUE",
        "Set an environment variable before Python starts (repeatable)."
    ),
    opt!(
        "threads",
        [],
        None,
        Int,
        Process,
        "N",
        "Run the app in N Python threads (default 1). A slow request then never delays requests on other connections while a thread is free."
    ),
    opt!(
        "master",
        [],
        Some('M'),
        Flag,
        Process,
        "",
        "Run a master that supervises the workers (the default; --master=false or --no-master runs one process)."
    ),
    opt!(
        "no-master",
        [],
        None,
        Flag,
        Process,
        "",
        "Run a single process, no master."
    ),
    opt!(
        "processes",
        ["workers"],
        Some('p'),
        Int,
        Process,
        "N",
        "Number of worker processes (default: the number of CPU cores)."
    ),
    opt!(
        "lazy-apps",
        ["lazy"],
        None,
        Flag,
        Process,
        "",
        "Load the app in each worker after the fork instead of once in the master (preload is the default)."
    ),
    opt!(
        "need-app",
        [],
        None,
        Flag,
        Process,
        "",
        "Exit non-zero when the app cannot be loaded. Always on in oxgate."
    ),
    opt!(
        "die-on-term",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted for uWSGI compatibility: in oxgate SIGTERM always stops gracefully (uWSGI 2.0 reloads on it)."
    ),
    opt!(
        "harakiri",
        [],
        Some('t'),
        Int,
        Process,
        "SECONDS",
        "Kill a worker whose request runs longer than SECONDS, after logging the request and its Python stack."
    ),
    opt!(
        "harakiri-verbose",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted: oxgate's harakiri log is always verbose."
    ),
    opt!(
        "max-requests",
        [],
        Some('R'),
        Int,
        Process,
        "N",
        "Replace a worker after it served N requests (its replacement is ready before it stops)."
    ),
    opt!(
        "max-requests-delta",
        [],
        None,
        Int,
        Process,
        "N",
        "Add worker_id * N to --max-requests, so workers are not all replaced at once."
    ),
    opt!(
        "max-worker-lifetime",
        [],
        None,
        Int,
        Process,
        "SECONDS",
        "Replace a worker after it has run SECONDS."
    ),
    opt!(
        "reload-on-rss",
        [],
        None,
        Int,
        Process,
        "MB",
        "Replace a worker gracefully when its resident memory exceeds MB."
    ),
    opt!(
        "evil-reload-on-rss",
        [],
        None,
        Int,
        Process,
        "MB",
        "Kill a worker at once when its resident memory exceeds MB."
    ),
    opt!(
        "limit-as",
        [],
        None,
        Int,
        Process,
        "MB",
        "Limit each worker's address space to MB (RLIMIT_AS)."
    ),
    opt!(
        "worker-reload-mercy",
        [],
        None,
        Int,
        Process,
        "SECONDS",
        "How long a worker asked to stop may finish its requests before it is killed (default 60)."
    ),
    opt!(
        "reload-mercy",
        [],
        None,
        Int,
        Process,
        "SECONDS",
        "How long a stopping master waits for workers to finish (default 60)."
    ),
    opt!(
        "pidfile",
        [],
        None,
        Str,
        Process,
        "FILE",
        "Write the master's pid to FILE."
    ),
    opt!(
        "pidfile2",
        [],
        None,
        Str,
        Process,
        "FILE",
        "Write the master's pid to FILE after dropping privileges."
    ),
    opt!(
        "daemonize",
        [],
        Some('d'),
        Str,
        Process,
        "LOGFILE",
        "Detach from the terminal and log to LOGFILE."
    ),
    opt!(
        "daemonize2",
        [],
        None,
        Str,
        Process,
        "LOGFILE",
        "Like --daemonize, but after the app is loaded (load errors still reach the terminal)."
    ),
    opt!(
        "logto",
        [],
        None,
        Str,
        Logging,
        "FILE",
        "Log to FILE instead of stderr."
    ),
    opt!(
        "vacuum",
        [],
        None,
        Flag,
        Process,
        "",
        "Remove unix sockets and pidfiles on exit."
    ),
    opt!(
        "stop",
        [],
        None,
        Str,
        Process,
        "PIDFILE",
        "Stop the oxgate whose master pid is in PIDFILE (gracefully), then exit."
    ),
    opt!(
        "reload",
        [],
        None,
        Str,
        Process,
        "PIDFILE",
        "Reload the oxgate whose master pid is in PIDFILE (new workers with the new code), then exit."
    ),
    opt!(
        "chain-reload",
        [],
        None,
        Str,
        Process,
        "PIDFILE",
        "Reload the oxgate in PIDFILE one worker at a time, then exit."
    ),
    opt!(
        "brutal-reload",
        [],
        None,
        Str,
        Process,
        "PIDFILE",
        "Reload the oxgate in PIDFILE, killing its workers at once, then exit."
    ),
    opt!(
        "touch-reload",
        [],
        None,
        List,
        Process,
        "FILE",
        "Reload gracefully when FILE is touched (repeatable)."
    ),
    opt!(
        "touch-chain-reload",
        [],
        None,
        List,
        Process,
        "FILE",
        "Chain-reload when FILE is touched (repeatable)."
    ),
    opt!(
        "attach-daemon",
        [],
        None,
        List,
        Process,
        "COMMAND",
        "Run COMMAND (through /bin/sh) beside the workers: started, respawned and stopped with the master (repeatable)."
    ),
    opt!(
        "smart-attach-daemon",
        [],
        None,
        List,
        Process,
        "PIDFILE COMMAND",
        "Run COMMAND, which daemonizes and writes PIDFILE; restart it when that pid is gone, stop it with the master."
    ),
    opt!(
        "py-autoreload",
        ["python-autoreload"],
        None,
        Int,
        Process,
        "SECONDS",
        "Every SECONDS, reload gracefully if a loaded Python module's file changed (for development)."
    ),
    opt!(
        "chown-socket",
        [],
        None,
        Str,
        Sockets,
        "USER[:GROUP]",
        "Owner of unix sockets."
    ),
    opt!(
        "umask",
        [],
        None,
        Str,
        Process,
        "MASK",
        "Set the umask (octal) before creating sockets and files."
    ),
    opt!(
        "uid",
        [],
        None,
        Str,
        Process,
        "USER",
        "Run as USER (name or number) after binding the sockets."
    ),
    opt!(
        "gid",
        [],
        None,
        Str,
        Process,
        "GROUP",
        "Run as GROUP (name or number) after binding the sockets."
    ),
    opt!(
        "limit-post",
        [],
        None,
        Int,
        Limits,
        "BYTES",
        "Refuse request bodies larger than BYTES with 413 (default: no limit)."
    ),
    opt!(
        "buffer-size",
        [],
        None,
        Int,
        Limits,
        "BYTES",
        "Largest request head accepted, in bytes (default 65536; uWSGI's 4096 is too small for real cookies). Larger heads get 431."
    ),
    opt!(
        "socket-timeout",
        [],
        Some('z'),
        Int,
        Limits,
        "SECONDS",
        "Close a connection whose request head does not arrive within SECONDS (default 30)."
    ),
    opt!(
        "ini",
        [],
        None,
        List,
        Config,
        "FILE[:SECTION]",
        "Read options from an INI file, section [uwsgi] (or [oxgate]) unless one is named. Expanded in place: later options override it."
    ),
    opt!(
        "yaml",
        ["yml"],
        Some('y'),
        List,
        Config,
        "FILE[:SECTION]",
        "Read options from the uwsgi: (or oxgate:) mapping of a YAML file."
    ),
    opt!(
        "json",
        ["js"],
        Some('j'),
        List,
        Config,
        "FILE[:SECTION]",
        "Read options from the \"uwsgi\" (or \"oxgate\") object of a JSON file."
    ),
    opt!(
        "xml",
        [],
        Some('x'),
        List,
        Config,
        "FILE[:SECTION]",
        "Read options from the <uwsgi> (or <oxgate>) element of an XML file."
    ),
    opt!(
        "strict",
        [],
        None,
        Flag,
        Config,
        "",
        "Refuse unknown keys in config files instead of warning about them."
    ),
    opt!(
        "print-config",
        [],
        None,
        Flag,
        Config,
        "",
        "Print every option as resolved, with where it came from, and exit."
    ),
    opt!(
        "check-config",
        [],
        None,
        Flag,
        Config,
        "",
        "Read and check the configuration, report problems, and exit (status 0 when it is usable)."
    ),
    opt!(
        "disable-logging",
        [],
        Some('L'),
        Flag,
        Logging,
        "",
        "Write no request log line, except for the requests --log-slow, --log-4xx, --log-5xx, --log-big or --log-zero pick."
    ),
    opt!(
        "log-format",
        ["logformat"],
        None,
        Str,
        Logging,
        "FORMAT",
        "The request line, with uWSGI's %(var) variables: uri method user addr host proto status size rsize hsize msecs micros secs time tmsecs tmicros epoch ltime ctime ftime pid wid core switches vars pktsize headers cl rss vsz rssM vszM referer uagent protocol req, and %(var.NAME) for any request variable."
    ),
    opt!(
        "log-format-strftime",
        ["logformat-strftime"],
        None,
        Flag,
        Logging,
        "",
        "Make %(ftime) use the --logdate format."
    ),
    opt!(
        "logdate",
        ["log-date"],
        None,
        FlagOrStr,
        Logging,
        "[=FORMAT]",
        "Prefix oxgate's own log messages with the date (a strftime FORMAT, or the ctime format)."
    ),
    opt!(
        "log-micros",
        [],
        None,
        Flag,
        Logging,
        "",
        "Request times in the default line in microseconds."
    ),
    opt!(
        "log-x-forwarded-for",
        [],
        None,
        Flag,
        Logging,
        "",
        "Log the X-Forwarded-For header as the client address when a request has one."
    ),
    opt!(
        "log-slow",
        [],
        None,
        Int,
        Logging,
        "MS",
        "Log requests that took MS milliseconds or more (even with --disable-logging)."
    ),
    opt!(
        "log-4xx",
        [],
        None,
        Flag,
        Logging,
        "",
        "Log requests answered with a 4xx status (even with --disable-logging)."
    ),
    opt!(
        "log-5xx",
        [],
        None,
        Flag,
        Logging,
        "",
        "Log requests answered with a 5xx status (even with --disable-logging)."
    ),
    opt!(
        "log-big",
        [],
        None,
        Int,
        Logging,
        "BYTES",
        "Log responses of BYTES or more (even with --disable-logging)."
    ),
    opt!(
        "log-zero",
        [],
        None,
        Flag,
        Logging,
        "",
        "Log responses with an empty body (even with --disable-logging)."
    ),
    opt!(
        "log-encoder",
        ["log-req-encoder"],
        None,
        List,
        Logging,
        "ENCODER",
        "Encode request lines: `json` writes each as a JSON object of every log variable; `json TEMPLATE` fills uWSGI's ${msg}, ${unix}, ${micros}, ${millis}, ${strftime:FMT}; `nl` is accepted (lines always end with a newline)."
    ),
    opt!(
        "log-maxsize",
        [],
        None,
        Int,
        Logging,
        "BYTES",
        "Rotate the log file (--logto, --daemonize) when it grows past BYTES: it is renamed to FILE.<unix time> and reopened."
    ),
    opt!(
        "log-backupname",
        [],
        None,
        Str,
        Logging,
        "FILE",
        "The name a rotated log is renamed to (each rotation overwrites it)."
    ),
    opt!(
        "touch-logreopen",
        [],
        None,
        List,
        Logging,
        "FILE",
        "Reopen the log file when FILE is touched (as SIGUSR1 does; for logrotate)."
    ),
    opt!(
        "log-reopen",
        [],
        None,
        Flag,
        Logging,
        "",
        "Accepted: oxgate always reopens the log file after a reload."
    ),
    opt!(
        "log-master",
        ["threaded-logger"],
        None,
        Flag,
        Logging,
        "",
        "Accepted: each process writes whole lines to the log itself, which never interleave."
    ),
    opt!(
        "memory-report",
        [],
        None,
        Flag,
        Logging,
        "",
        "Accepted: the stats server always reports each worker's memory."
    ),
    opt!(
        "stats",
        ["stats-server"],
        None,
        Str,
        Logging,
        "ADDR",
        "Serve uWSGI's stats JSON (for uwsgitop and oxgate top) on ADDR: host:port or a unix socket path. Bind it to loopback or a private socket."
    ),
    opt!(
        "stats-http",
        [],
        None,
        Flag,
        Logging,
        "",
        "Answer HTTP on the stats socket: / is the JSON, /metrics the Prometheus metrics."
    ),
    opt!(
        "stats-minified",
        ["stats-min"],
        None,
        Flag,
        Logging,
        "",
        "Stats JSON without indentation."
    ),
    opt!(
        "metrics",
        [],
        None,
        Str,
        Logging,
        "ADDR",
        "Serve Prometheus metrics over HTTP on ADDR (at /metrics)."
    ),
    opt!(
        "enable-threads",
        [],
        Some('T'),
        Flag,
        Python,
        "",
        "Accepted: Python threads always work in oxgate."
    ),
    opt!(
        "single-interpreter",
        [],
        Some('i'),
        Flag,
        Python,
        "",
        "Accepted: oxgate always runs one interpreter per process."
    ),
    opt!(
        "plugin",
        ["plugins"],
        None,
        List,
        Python,
        "NAME",
        "Accepted: Python support is built in; plugins are not needed."
    ),
    opt!(
        "plugin-dir",
        ["plugins-dir"],
        None,
        Str,
        Python,
        "DIR",
        "Accepted: there are no plugins to look for."
    ),
    opt!(
        "thunder-lock",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted: workers accept from shared sockets without a lock, and connections spread across them."
    ),
    opt!(
        "no-orphans",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted: workers always die with their master (PR_SET_PDEATHSIG)."
    ),
    opt!(
        "ignore-sigpipe",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted: SIGPIPE never reaches oxgate's processes."
    ),
    opt!(
        "ignore-write-errors",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted: a client that goes away closes its connection; the app is not told."
    ),
    opt!(
        "disable-write-exception",
        [],
        None,
        Flag,
        Process,
        "",
        "Accepted: writes to clients happen outside the app, which never sees a write exception."
    ),
    opt!(
        "help",
        ["usage"],
        Some('h'),
        Flag,
        Info,
        "",
        "Print this help and exit."
    ),
    opt!(
        "version",
        [],
        None,
        Flag,
        Info,
        "",
        "Print the version and exit."
    ),
];

/// uWSGI's options that real configs use (shared/docs/uwsgi-ini-options.tsv):
/// a key among them that oxgate does not know is "not implemented yet",
/// anything else unknown is a placeholder or a typo.
pub static UWSGI_OPTIONS: &[&str] = &[
    "master",
    "processes",
    "module",
    "socket",
    "chdir",
    "vacuum",
    "chmod-socket",
    "threads",
    "callable",
    "uid",
    "wsgi-file",
    "enable-threads",
    "max-requests",
    "die-on-term",
    "gid",
    "http",
    "pidfile",
    "harakiri",
    "home",
    "buffer-size",
    "plugin",
    "logto",
    "pythonpath",
    "http-socket",
    "env",
    "daemonize",
    "single-interpreter",
    "static-map",
    "touch-reload",
    "memory-report",
    "stats",
    "disable-logging",
    "reload-on-rss",
    "lazy-apps",
    "need-app",
    "log-format",
    "thunder-lock",
    "http-timeout",
    "log-date",
    "post-buffering",
    "protocol",
    "auto-procname",
    "ini",
    "logger",
    "socket-timeout",
    "strict",
    "chown-socket",
    "gevent",
    "worker-reload-mercy",
    "harakiri-verbose",
    "ignore-sigpipe",
    "ignore-write-errors",
    "log-5xx",
    "manage-script-name",
    "max-worker-lifetime",
    "no-orphans",
    "cheaper",
    "disable-write-exception",
    "listen",
    "log-4xx",
    "log-master",
    "log-maxsize",
    "py-autoreload",
    "attach-daemon",
    "cron",
    "mount",
    "offload-threads",
    "procname-prefix",
    "cache2",
    "cheaper-initial",
    "endif",
    "hook-master-start",
    "http-websockets",
    "if-env",
    "if-not-env",
    "import",
    "procname-prefix-spaced",
    "reload-mercy",
    "req-logger",
    "uwsgi-socket",
    "vhost",
    "cheaper-busyness-backlog-alert",
    "cheaper-busyness-max",
    "cheaper-busyness-min",
    "cheaper-busyness-multiplier",
    "cheaper-overload",
    "cheaper-step",
    "close-on-exec",
    "limit-as",
    "limit-post",
    "log-encoder",
    "log-route",
    "log-slow",
    "master-fifo",
    "no-default-app",
    "reaper",
    "reload-on-as",
    "route",
    "touch-chain-reload",
    "umask",
    "wsgi-disable-file-wrapper",
    "add-header",
    "alarm",
    "alarm-listen-queue",
    "alarm-segfault",
    "carbon-hostname-dots",
    "carbon-root",
    "cheaper-algo",
    "cheaper-busyness-backlog-step",
    "cheaper-busyness-verbose",
    "check-static",
    "cpu-affinity",
    "cron-harakiri",
    "emperor",
    "endfor",
    "exec-asap",
    "for-glob",
    "fs-reload",
    "gevent-early-monkey-patch",
    "gevent-monkey-patch",
    "honour-stdin",
    "http-enable-proxy-protocol",
    "http-keepalive",
    "http11-socket",
    "if-not-opt",
    "lazy",
    "locks",
    "log-alarm",
    "log-backupname",
    "log-micros",
    "log-reopen",
    "log-req-encoder",
    "log-sendfile",
    "log-x-forwarded-for",
    "logfile-chmod",
    "logfile-chown",
    "logformat-strftime",
    "logto2",
    "master-as-root",
    "max-requests-delta",
    "mule",
    "no-site",
    "paste",
    "plugin-dir",
    "print",
    "py-callos-afterfork",
    "pyargv",
    "refork",
    "safe-pidfile",
    "spooler",
    "static-expires",
    "static-gzip-all",
    "static-skip-ext",
    "stats-http",
    "threaded-logger",
    "shared-socket",
    "fastcgi-socket",
    "scgi-socket",
    "stats-minified",
    "wsgi",
    "file",
];

/// Finds an option by its name or one of its aliases.
pub fn lookup(name: &str) -> Option<&'static OptDef> {
    lookup_exact(&name.replace('_', "-"))
}

/// As written, without turning `_` into `-`: in uWSGI config files a key
/// with `_` is a placeholder (`base_dir`), never an option.
pub fn lookup_exact(name: &str) -> Option<&'static OptDef> {
    OPTIONS
        .iter()
        .find(|o| o.name == name || o.aliases.contains(&name))
}

pub fn lookup_short(c: char) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}

/// The known option closest to a misspelt one, for "did you mean" hints.
pub fn suggest(name: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for o in OPTIONS {
        for cand in std::iter::once(&o.name).chain(o.aliases.iter()) {
            let d = edit_distance(name, cand);
            if d <= 2.max(name.len() / 4) && best.is_none_or(|(bd, _)| d < bd) {
                best = Some((d, o.name));
            }
        }
    }
    best.map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for o in OPTIONS {
            for n in std::iter::once(&o.name).chain(o.aliases.iter()) {
                assert!(seen.insert(*n), "{n} declared twice");
            }
        }
        let mut shorts = std::collections::HashSet::new();
        for o in OPTIONS.iter().filter_map(|o| o.short) {
            assert!(shorts.insert(o), "-{o} declared twice");
        }
    }

    #[test]
    fn lookup_accepts_aliases_and_underscores() {
        assert_eq!(lookup("http").unwrap().name, "http-socket");
        assert_eq!(lookup("wsgi_file").unwrap().name, "wsgi-file");
        assert_eq!(lookup("virtualenv").unwrap().name, "home");
        assert!(lookup("no-such-thing").is_none());
    }

    #[test]
    fn suggests_near_misses() {
        assert_eq!(suggest("wsgi-fil"), Some("wsgi-file"));
        assert_eq!(suggest("thread"), Some("threads"));
        assert_eq!(suggest("zzzzzzzzzz"), None);
    }
}
