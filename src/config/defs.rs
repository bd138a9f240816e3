//! Every option oxgate understands, declared once: its names, the kind of
//! value it takes, its default and whether oxgate acts on it. The command
//! line, the config-file readers, `resolve()`, `--help`, `--print-config`,
//! docs/options.md and docs/oxgate.1 are all derived from this table.
//!
//! Each entry is also a typed key: code reads an option through
//! `&opt::HARAKIRI`, never through its name, so a misspelt option does not
//! compile.

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
    Static,
    Cgi,
    FastCgi,
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
            Group::Static => "Static files",
            Group::Cgi => "CGI scripts",
            Group::FastCgi => "FastCGI apps",
            Group::Logging => "Logging, stats and metrics",
            Group::Config => "Configuration files",
            Group::Info => "Information",
        }
    }
    pub const ALL: [Group; 11] = [
        Group::Sockets,
        Group::App,
        Group::Python,
        Group::Process,
        Group::Limits,
        Group::Static,
        Group::Cgi,
        Group::FastCgi,
        Group::Logging,
        Group::Config,
        Group::Info,
    ];
}

/// Whether oxgate acts on an option. (The uWSGI options oxgate does not
/// implement yet are not in the table: see [`UWSGI_OPTIONS`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// oxgate does what the option asks.
    Implemented,
    /// Accepted for uWSGI compatibility, with no effect: oxgate always
    /// behaves that way, or has nothing to switch (`--die-on-term`,
    /// `--enable-threads`, `--plugin`).
    Ignored,
}

impl Status {
    /// How the generated docs describe it.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Implemented => "implemented",
            Status::Ignored => "accepted for uWSGI compatibility; no effect",
        }
    }
}

/// One option. Each is a `static` in [`opt`], so its address is its
/// identity: two `OptDef`s are equal when they are the same entry.
#[derive(Debug)]
pub struct OptDef {
    /// The canonical name, without dashes: `--name` and `name = ` in files.
    pub name: &'static str,
    /// Other names, accepted everywhere the name is.
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub kind: Kind,
    pub group: Group,
    /// How help shows the value (`ADDR`); empty for a switch.
    pub value_name: &'static str,
    /// The value used when the option is not given, as a user would write
    /// it; `None` when absence means off, nothing, or something computed
    /// (described in `help`).
    pub default: Option<&'static str>,
    pub status: Status,
    /// One paragraph; the default and the status are added by whatever
    /// renders it, so it does not repeat them.
    pub help: &'static str,
}

/// A typed option key: `&opt::HARAKIRI`.
pub type Key = &'static OptDef;

impl PartialEq for OptDef {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for OptDef {}

/// The table's builder: `OptDef::new(name, kind, group)` then what applies.
impl OptDef {
    /// Every long name it answers to: the name, then the aliases.
    pub fn long_names(&self) -> impl Iterator<Item = &'static str> + use<> {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    pub const fn new(name: &'static str, kind: Kind, group: Group) -> OptDef {
        OptDef {
            name,
            aliases: &[],
            short: None,
            kind,
            group,
            value_name: "",
            default: None,
            status: Status::Implemented,
            help: "",
        }
    }
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> OptDef {
        self.aliases = aliases;
        self
    }
    pub const fn short(mut self, c: char) -> OptDef {
        self.short = Some(c);
        self
    }
    pub const fn value(mut self, value_name: &'static str) -> OptDef {
        self.value_name = value_name;
        self
    }
    pub const fn defaults_to(mut self, default: &'static str) -> OptDef {
        self.default = Some(default);
        self
    }
    pub const fn ignored(mut self) -> OptDef {
        self.status = Status::Ignored;
        self
    }
    pub const fn help(mut self, help: &'static str) -> OptDef {
        self.help = help;
        self
    }
}

/// Declares the table: each `KEY = OptDef::…` becomes `pub static
/// opt::KEY`, and [`OPTIONS`] lists them all in the order written.
macro_rules! options {
    ($($key:ident = $def:expr),* $(,)?) => {
        /// Every option as a typed key (`&opt::HARAKIRI`), named after it.
        pub mod opt {
            use super::{Group::*, Kind::*, OptDef};
            $(pub static $key: OptDef = $def;)*
        }

        /// Every option, in the order of the table (the order of `--help`,
        /// `--print-config` and the docs within each group).
        pub static OPTIONS: &[&OptDef] = &[$(&opt::$key),*];

        /// Each key's identifier, for the test that it spells the name.
        #[cfg(test)]
        static KEY_IDENTS: &[&str] = &[$(stringify!($key)),*];
    };
}

options! {
    HTTP_SOCKET = OptDef::new("http-socket", List, Sockets)
        .aliases(&["http", "httprouter", "http11-socket"])
        .value("ADDR")
        .help("Serve HTTP/1.1 on ADDR: host:port, :port, [::1]:port or a unix socket path. \
               --http is the same thing: oxgate's workers speak HTTP themselves, there is no separate router process. \
               A client that opens with HTTP/2's preface (h2c with prior knowledge, as load balancers do) is served HTTP/2."),
    HTTPS_SOCKET = OptDef::new("https-socket", List, Sockets)
        .aliases(&["https"])
        .value("ADDR,CERT,KEY[,CIPHERS,CA]")
        .help("Serve HTTPS on ADDR (uWSGI's syntax): TLS 1.2 and 1.3 with the PEM certificate chain CERT and its key KEY (RSA, ECDSA or Ed25519). ALPN offers HTTP/2, HTTP/1.1 and HTTP/1.0. CIPHERS may name TLS suites to allow, separated by colons; CA, the fifth field, asks clients for a certificate signed by it, as in uWSGI: one given is checked, and a bad one fails the handshake; a leading ! requires one (a leading ? is the same as none)."),
    SNI = OptDef::new("sni", List, Sockets)
        .value("NAME,CERT,KEY")
        .help("Serve the certificate CERT (with its key KEY) to HTTPS clients that ask for the server name NAME (SNI), as uWSGI's --sni does; others get their --https-socket's own. NAME may start with *. for one level of subdomains. Repeat it for each name."),
    HTTPS_CLIENT_CA = OptDef::new("https-client-ca", Str, Sockets)
        .value("FILE")
        .help("Ask HTTPS clients for a certificate signed by a CA in FILE (PEM): SSL_CLIENT_VERIFY and SSL_CLIENT_S_DN tell the app what came. A client without one, or with one the CA does not vouch for (SSL_CLIENT_VERIFY=FAILED:reason), is still served, unless --https-client-required."),
    HTTPS_CLIENT_REQUIRED = OptDef::new("https-client-required", Flag, Sockets)
        .help("With --https-client-ca: refuse the TLS handshake of a client that sends no valid certificate (mutual TLS)."),
    HTTPS_EXPORT_CERT = OptDef::new("https-export-cert", Flag, Sockets)
        .ignored()
        .help("A verified client certificate is always given to the app in PEM, as HTTPS_CC (uWSGI's name, with this option) and SSL_CLIENT_CERT."),
    SSL_MIN_VERSION = OptDef::new("ssl-min-version", Str, Sockets)
        .value("1.2|1.3")
        .defaults_to("1.2")
        .help("The oldest TLS version HTTPS sockets accept. Older ones than 1.2 are never offered."),
    HTTP_EARLY_HINTS = OptDef::new("http-early-hints", Flag, Sockets)
        .help("Let ASGI apps send 103 Early Hints (http.response.early_hint) to HTTP/1.1 clients on --http-socket too (over HTTP/2 they always may). Off unless given: nginx before 1.29 takes an upstream's 103 for the final response, and so do other old proxies; turn it on when clients reach oxgate directly, or through a proxy that passes 1xx on."),
    HTTP2_OFF = OptDef::new("http2-off", Flag, Sockets)
        .help("Serve HTTP/1.1 only: no h2 in the TLS handshake's ALPN, and no HTTP/2 with prior knowledge (h2c) on --http-socket."),
    HTTP2_MAX_STREAMS = OptDef::new("http2-max-streams", Int, Sockets)
        .value("N")
        .defaults_to("100")
        .help("The most requests (streams) one HTTP/2 connection may have open at once."),
    HTTP2_MAX_PENDING = OptDef::new("http2-max-pending", Int, Sockets)
        .value("N")
        .defaults_to("1024")
        .help("The most HTTP/2 requests a worker holds at once, across all its connections (each may buffer its body); past it, a new stream is answered 503 with Retry-After, at once."),
    SOCKET = OptDef::new("socket", List, Sockets)
        .short('s')
        .value("ADDR")
        .help("A socket in the protocol --protocol names: the uwsgi protocol by default (nginx uwsgi_pass), HTTP with --protocol http."),
    UWSGI_SOCKET = OptDef::new("uwsgi-socket", List, Sockets)
        .value("ADDR")
        .help("A uwsgi-protocol socket, whatever --protocol says."),
    FASTCGI_SOCKET = OptDef::new("fastcgi-socket", List, Sockets)
        .value("ADDR")
        .help("A FastCGI socket (nginx fastcgi_pass, with or without fastcgi_keep_conn; Apache mod_proxy_fcgi; lighttpd mod_fastcgi)."),
    SCGI_SOCKET = OptDef::new("scgi-socket", List, Sockets)
        .value("ADDR")
        .help("An SCGI socket (nginx scgi_pass, Apache mod_proxy_scgi, lighttpd mod_scgi)."),
    PROTOCOL = OptDef::new("protocol", Str, Sockets)
        .aliases(&["socket-protocol"])
        .value("NAME")
        .defaults_to("uwsgi")
        .help("The protocol of --socket: uwsgi, http, scgi or fastcgi."),
    BIND = OptDef::new("bind", List, Sockets)
        .short('b')
        .value("ADDR")
        .help("Gunicorn's spelling of --http-socket. -b with a number is uWSGI's -b, --buffer-size."),
    LISTEN = OptDef::new("listen", Int, Sockets)
        .short('l')
        .value("N")
        .defaults_to("1024")
        .help("Backlog of each listening socket (the kernel caps it at net.core.somaxconn)."),
    REUSE_PORT = OptDef::new("reuse-port", Flag, Sockets)
        .help("Bind TCP sockets with SO_REUSEPORT, so that another server (a second instance, a blue/green twin) may listen on the same address and share its connections. A reload needs none: the workers share the master's sockets, which a reload keeps."),
    CHMOD_SOCKET = OptDef::new("chmod-socket", FlagOrStr, Sockets)
        .aliases(&["chmod"])
        .short('C')
        .value("[MODE]")
        .help("Permissions of unix sockets, octal; 666 when given without a value. Without it, 660 (owner and group), or what --umask leaves."),
    WSGI_FILE = OptDef::new("wsgi-file", Str, App)
        .aliases(&["file"])
        .value("FILE")
        .help("Load the WSGI callable from a Python file."),
    MODULE = OptDef::new("module", Str, App)
        .aliases(&["wsgi"])
        .short('w')
        .value("MODULE[:CALLABLE]")
        .help("Load the WSGI callable from an importable module: pkg.mod, pkg.mod:app, or pkg.mod:factory() to call a factory."),
    MOUNT = OptDef::new("mount", List, App)
        .value("MOUNTPOINT=APP")
        .help("Serve another app under a URL prefix (repeatable): /blog=blog.py, /api=api.wsgi:app. The request's SCRIPT_NAME picks the app (the longest mountpoint that prefixes PATH_INFO with --manage-script-name); other requests go to the --wsgi-file/--module app. All apps share one interpreter."),
    VHOST = OptDef::new("vhost", Flag, App)
        .help("Dynamic apps: a request's UWSGI_SCRIPT, UWSGI_MODULE (+ UWSGI_CALLABLE) or UWSGI_FILE variable (nginx's uwsgi_param) names the app, loaded on first use after UWSGI_CHDIR and UWSGI_PYHOME, and kept. Only with --vhost: these variables let the front end load code."),
    MANAGE_SCRIPT_NAME = OptDef::new("manage-script-name", Flag, App)
        .help("Pick the --mount app by the longest mountpoint that prefixes PATH_INFO, and move that prefix from PATH_INFO to SCRIPT_NAME."),
    NO_DEFAULT_APP = OptDef::new("no-default-app", Flag, App)
        .help("With --mount, a request that no mountpoint takes is 404, instead of going to the default app (--wsgi-file or --module; without one, the first mounted app, as in uWSGI)."),
    WSGI_DISABLE_FILE_WRAPPER = OptDef::new("wsgi-disable-file-wrapper", Flag, App)
        .help("Leave wsgi.file_wrapper out of environ (the app then sends files through its own iterator)."),
    CALLABLE = OptDef::new("callable", Str, App)
        .value("NAME")
        .defaults_to("application")
        .help("Name of the WSGI callable in the module or file."),
    INTERFACE = OptDef::new("interface", Str, App)
        .value("auto|wsgi|asgi|asgi2")
        .defaults_to("auto")
        .help("The app's interface. auto takes an app as ASGI when it is a coroutine function or an object whose __call__ is one (FastAPI, Starlette, Django's ASGI handler, Quart), as ASGI 2 when it is a class whose instances' __call__ is one (the class is called with the scope, as uvicorn does), and as WSGI otherwise; the startup log says which was chosen. asgi2 takes any callable as ASGI 2: called with the scope, it returns what is awaited with receive and send."),
    ASGI = OptDef::new("asgi", Flag, App)
        .help("Serve the app as an ASGI 3 app: the same as --interface asgi."),
    LOOP = OptDef::new("loop", Str, App)
        .value("auto|asyncio|uvloop")
        .defaults_to("auto")
        .help("The event loop ASGI apps run on, one per worker: auto takes uvloop when it can be imported, else asyncio."),
    LIFESPAN = OptDef::new("lifespan", Str, App)
        .value("auto|on|off")
        .defaults_to("auto")
        .help("ASGI lifespan events (startup and shutdown) in each worker. on: a failed startup, or an app without lifespan support, stops the server. auto: an app that raises on the lifespan scope is served without it. off: no lifespan events."),
    WS = OptDef::new("ws", Str, App)
        .value("auto|none")
        .defaults_to("auto")
        .help("WebSockets for ASGI apps: auto serves them (uvicorn's websockets, wsproto and websockets-sansio mean the same); none answers a WebSocket handshake as a plain HTTP request."),
    WS_MAX_SIZE = OptDef::new("ws-max-size", Int, App)
        .value("BYTES")
        .defaults_to("16777216")
        .help("Largest WebSocket message a client may send; a larger one closes the socket with 1009 (message too big)."),
    WS_PING_INTERVAL = OptDef::new("ws-ping-interval", Str, App)
        .value("SECONDS")
        .defaults_to("20")
        .help("Ping each open WebSocket this often (0: never)."),
    WS_PING_TIMEOUT = OptDef::new("ws-ping-timeout", Str, App)
        .value("SECONDS")
        .defaults_to("20")
        .help("Close a WebSocket (1011) whose client has not answered a ping in this time (0: wait for ever)."),
    WS_PER_MESSAGE_DEFLATE = OptDef::new("ws-per-message-deflate", Flag, App)
        .defaults_to("true")
        .help("Compress WebSocket messages (permessage-deflate) with clients that offer it, as uvicorn does; each message on its own, so an open socket keeps no compression state. --ws-per-message-deflate=false turns it off."),
    WS_CLOSE_AT_STOP = OptDef::new("ws-close-at-stop", Flag, App)
        .help("Close open WebSockets as soon as a stop or reload begins, with 1012 (\"service restart\"), as uvicorn does, while HTTP requests in flight finish. Without it, they stay open through the mercy time (--reload-mercy, --worker-reload-mercy) and then close with 1001 (\"going away\"). uvicorn's command line sets it."),
    ADD_HEADER = OptDef::new("add-header", List, App)
        .value("\"NAME: VALUE\"")
        .help("Add this header to every response, the app's and the static files' (repeatable; uWSGI's add-header, uvicorn's --header)."),
    ROOT_PATH = OptDef::new("root-path", Str, App)
        .value("PATH")
        .help("The URL prefix a proxy that strips it serves the app under (uvicorn's --root-path): SCRIPT_NAME for WSGI apps, root_path for ASGI apps (whose path then starts with it). A request that carries its own SCRIPT_NAME keeps it."),
    ROOT_PATH_UNSTRIPPED = OptDef::new("root-path-unstripped", Flag, App)
        .help("With --root-path: the proxy passes the prefix on, as Gunicorn's root_path assumes. A path that starts with it is split there (root_path and SCRIPT_NAME the prefix, PATH_INFO the rest), so an ASGI app's path is the request's; one that does not is served under the prefix, as without this flag. Gunicorn's config files set it with root_path."),
    PROXY_HEADERS = OptDef::new("proxy-headers", FlagOrStr, App)
        .value("[=x-forwarded|forwarded]")
        .help("Take the client's address (and port, when the hop has one) and the scheme from the headers a proxy sets, when the request comes from an address --forwarded-allow-ips trusts: X-Forwarded-For and X-Forwarded-Proto (as uvicorn and Gunicorn), or with =forwarded RFC 7239's Forwarded (its for= and proto=). One family is read, never both: a proxy that sets one passes a client's own other on. The client is the last hop from the right that is not trusted."),
    SECURE_SCHEME_HEADER = OptDef::new("secure-scheme-header", List, App)
        .value("NAME=VALUE")
        .help("From a proxy --forwarded-allow-ips trusts (or a unix socket), a request whose header NAME is VALUE is https, and one whose NAME has another value is http; headers that disagree get 400 (Gunicorn's secure_scheme_headers, whose three a Gunicorn config gets unless it sets its own). Given none, X-Forwarded-Proto counts, as Gunicorn and uvicorn read it (from a unix socket only with --forwarded-allow-ips '*', as uvicorn); none turns it off."),
    SCRIPT_NAME_HEADER = OptDef::new("script-name-header", Flag, App)
        .help("Take SCRIPT_NAME from a request header named SCRIPT_NAME (with the underscore: nginx's proxy_set_header SCRIPT_NAME /app;) when the request comes from an address --forwarded-allow-ips trusts, as Gunicorn's forwarder_headers does: the path must start with it, and PATH_INFO is the rest (else 500, as in Gunicorn). Gunicorn's config files turn it on, as Gunicorn's default does."),
    FORWARDED_ALLOW_IPS = OptDef::new("forwarded-allow-ips", Str, App)
        .value("IPS")
        .defaults_to("127.0.0.1,::1")
        .help("The proxies --proxy-headers, --secure-scheme-header and --script-name-header trust: comma-separated addresses and networks (10.0.0.0/8, ::1), or * for any (a unix socket's peer too). $FORWARDED_ALLOW_IPS, as for uvicorn, when not given; unset, it trusts what uvicorn and Gunicorn trust."),
    PROXY_PROTOCOL = OptDef::new("proxy-protocol", FlagOrStr, Sockets)
        .aliases(&["enable-proxy-protocol", "http-enable-proxy-protocol"])
        .value("[=v1|v2|auto]")
        .help("Read the PROXY protocol header (HAProxy's send-proxy, v1 or v2) a balancer puts before an HTTP connection's first request: the client's address comes from it. Only from the peers --proxy-allow-from names; without a header, a connection is served as it is. Gunicorn's option; uWSGI's --enable-proxy-protocol."),
    PROXY_ALLOW_FROM = OptDef::new("proxy-allow-from", Str, Sockets)
        .value("IPS")
        .defaults_to("127.0.0.1,::1")
        .help("The balancers whose PROXY header --proxy-protocol believes: comma-separated addresses and networks, or * for any (unix sockets always are). Gunicorn's option."),
    CHDIR = OptDef::new("chdir", Str, App)
        .value("DIR")
        .help("Change to DIR before loading the app."),
    PYTHONPATH = OptDef::new("pythonpath", List, Python)
        .aliases(&["python-path", "pp", "early-pythonpath", "early-python-path"])
        .value("DIR")
        .help("Put DIR in front of sys.path (repeatable; each goes first in turn, so the last named is searched first, as in uWSGI and Gunicorn)."),
    LOG_CONFIG = OptDef::new("log-config", Str, Python)
        .value("FILE")
        .help("Configure Python's logging from FILE in each process that loads the app, before it loads, as uvicorn's --log-config does: a .json or .yaml file is a dictConfig, any other a fileConfig (INI). The app's own loggers write where it says; oxgate's lines and the request log are oxgate's. uvicorn's --log-config sets it."),
    APP_LOGGERS = OptDef::new("app-loggers", Str, Python)
        .value("none|gunicorn|uvicorn")
        .defaults_to("none")
        .help("Set up, before the app loads, the Python loggers that server gives its apps: gunicorn's gunicorn.error (and uvicorn.error, as uvicorn's Gunicorn worker does) in Gunicorn's line format, or uvicorn's uvicorn, uvicorn.error and uvicorn.access in uvicorn's, at --log-level, writing to oxgate's log. An app that logs through them (logging.getLogger(\"gunicorn.error\").info(...)) is heard as under that server. Gunicorn's and uvicorn's command lines and config files set it, unless they configure logging themselves (logconfig_dict, --log-config)."),
    IMPORT = OptDef::new("import", List, Python)
        .aliases(&["pyimport", "py-import", "python-import"])
        .value("MODULE")
        .help("Import MODULE (a dotted name, or a .py file) after the app is loaded, in the process that loads it: for modules that register signal handlers or timers (repeatable)."),
    HOME = OptDef::new("home", Str, Python)
        .aliases(&["virtualenv", "venv", "pyhome"])
        .short('H')
        .value("DIR")
        .help("Use the virtualenv in DIR (default: $VIRTUAL_ENV when set)."),
    ENV = OptDef::new("env", List, Python)
        .value("KEY=VALUE")
        .help("Set an environment variable before Python starts (repeatable). A name alone, with no =, unsets it, as uWSGI's putenv does."),
    UNENV = OptDef::new("unenv", List, Python)
        .value("KEY")
        .help("Unset an environment variable before Python starts (repeatable), as uWSGI does: the app, its scripts and its pools do not see it."),
    THREADS = OptDef::new("threads", Int, Process)
        .value("N")
        .defaults_to("1")
        .help("Run the app in N Python threads. A slow request then never delays requests on other connections while a thread is free."),
    MASTER = OptDef::new("master", Flag, Process)
        .short('M')
        .defaults_to("true")
        .help("Run a master that supervises the workers; --master=false or --no-master runs one process."),
    NO_MASTER = OptDef::new("no-master", Flag, Process)
        .help("Run a single process, no master."),
    PROCESSES = OptDef::new("processes", Int, Process)
        .aliases(&["workers"])
        .short('p')
        .value("N")
        .help("Number of worker processes (default: the number of CPU cores)."),
    SCHED_BATCH = OptDef::new("sched-batch", Flag, Process)
        .defaults_to("true")
        .help("Run the workers (or the single process of --no-master) under Linux's SCHED_BATCH policy: a thread woken does not preempt the one running on its core, so oxgate's event loop and the app's (ASGI) or its Python threads hand requests over in batches rather than one at a time. A woken worker may then wait out a time slice behind CPU-bound work on a shared core. A realtime or idle policy set from outside is kept. --sched-batch=false keeps the usual policy."),
    LAZY_APPS = OptDef::new("lazy-apps", Flag, Process)
        .aliases(&["lazy"])
        .help("Load the app in each worker after the fork instead of once in the master (preload is the default)."),
    NEED_APP = OptDef::new("need-app", Flag, Process)
        .ignored()
        .help("oxgate always exits non-zero when the app cannot be loaded."),
    DIE_ON_TERM = OptDef::new("die-on-term", Flag, Process)
        .ignored()
        .help("SIGTERM always stops oxgate gracefully (uWSGI 2.0 reloads on it)."),
    HOOK_MASTER_START = OptDef::new("hook-master-start", List, Process)
        .value("unix_signal:N ACTION")
        .help("uWSGI's signal hooks, accepted where oxgate's signal N already does ACTION: the common unix_signal:15 gracefully_kill_them_all (SIGTERM stops gracefully here), and SIGINT, SIGQUIT or SIGHUP with their own actions. A function oxgate does not know is warned about and ignored, as uWSGI says it finds no such function and goes on; kill_them_all (an immediate stop) on a signal that stops oxgate is warned about, the stop staying graceful; a hook that would give a signal another meaning is refused with the reason: oxgate's signals are not remapped."),
    QUICK_STOP_ON_INT = OptDef::new("quick-stop-on-int", Flag, Process)
        .help("SIGINT and SIGQUIT stop at once, as Gunicorn's quick shutdown: each worker runs Gunicorn's worker_int hook and exits without finishing its requests (killed after --worker-reload-mercy if it hangs). Gunicorn configs get it; otherwise they stop gracefully, as SIGTERM does."),
    HARAKIRI = OptDef::new("harakiri", Int, Process)
        .short('t')
        .value("SECONDS")
        .help("Kill a worker whose request runs longer than SECONDS, after logging the request and its Python stack."),
    HARAKIRI_VERBOSE = OptDef::new("harakiri-verbose", Flag, Process)
        .ignored()
        .help("oxgate's harakiri log is always verbose."),
    MAX_REQUESTS = OptDef::new("max-requests", Int, Process)
        .short('R')
        .value("N")
        .help("Replace a worker after it served N requests (its replacement is ready before it stops)."),
    MAX_REQUESTS_DELTA = OptDef::new("max-requests-delta", Int, Process)
        .value("N")
        .defaults_to("0")
        .help("Add (worker_id - 1) * N to --max-requests, as uWSGI does, so workers are not all replaced at once."),
    MAX_REQUESTS_JITTER = OptDef::new("max-requests-jitter", Int, Process)
        .value("N")
        .defaults_to("0")
        .help("Add a random 0 to N to each worker's --max-requests, drawn anew for each worker, so workers are not all replaced at once. Gunicorn's option."),
    MAX_WORKER_LIFETIME = OptDef::new("max-worker-lifetime", Int, Process)
        .value("SECONDS")
        .help("Replace a worker after it has run SECONDS."),
    RELOAD_ON_RSS = OptDef::new("reload-on-rss", Int, Process)
        .value("MB")
        .help("Replace a worker gracefully when its resident memory exceeds MB."),
    EVIL_RELOAD_ON_RSS = OptDef::new("evil-reload-on-rss", Int, Process)
        .value("MB")
        .help("Kill a worker at once when its resident memory exceeds MB."),
    MASTER_FIFO = OptDef::new("master-fifo", List, Process)
        .value("PATH")
        .help("uWSGI's master FIFO: the master makes a named pipe at PATH and takes one-character commands written to it: r or w (graceful reload), R or W (brutal reload), c (chain reload), q (graceful stop), Q (immediate stop), l (reopen the logs), + and - (one worker more or fewer). Given several times, the paths are slots, and 0-9 switch to another."),
    RELOAD_ON_AS = OptDef::new("reload-on-as", Int, Process)
        .value("MB")
        .help("Replace a worker gracefully when its address space (virtual size) reaches MB, once it is serving and has run --min-worker-lifetime."),
    MIN_WORKER_LIFETIME = OptDef::new("min-worker-lifetime", Int, Process)
        .value("SECONDS")
        .defaults_to("10")
        .help("How long a worker runs before --max-requests or --reload-on-as may replace it, as in uWSGI (it serves on meanwhile): a small --max-requests under load does not fork a worker every few milliseconds, and a worker over the memory limit from its start is not replaced in a loop. Gunicorn and uvicorn settings make it 0, as they have no such wait."),
    LIMIT_AS = OptDef::new("limit-as", Int, Process)
        .value("MB")
        .help("Limit each worker's address space to MB (RLIMIT_AS), for the app: the space oxgate reserves for itself (its allocator's 64 MiB arena, the scoreboard) is added to it, as uWSGI has no such reservations. Each thread's stack counts."),
    WORKER_RELOAD_MERCY = OptDef::new("worker-reload-mercy", Int, Process)
        .value("SECONDS")
        .defaults_to("60")
        .help("How long a worker asked to stop may finish its requests before it is killed."),
    RELOAD_MERCY = OptDef::new("reload-mercy", Int, Process)
        .value("SECONDS")
        .defaults_to("60")
        .help("How long a stopping master waits for workers to finish."),
    HEALTH_PATH = OptDef::new("health-path", Str, Process)
        .value("PATH")
        .help("Answer PATH on every socket from the server itself, not the app: 200 once every worker has loaded the app and while one serves; 503 while starting, draining, with no worker, or while a --fastcgi-app pool cannot start its processes (for load balancers and Kubernetes probes; not in the request log)."),
    DRAIN_DELAY = OptDef::new("drain-delay", Str, Process)
        .value("SECONDS")
        .defaults_to("0")
        .help("On a graceful stop, fail --health-path first and keep serving for SECONDS, so balancers stop sending before the sockets close; then stop as usual. Kubernetes users set about 5."),
    PIDFILE = OptDef::new("pidfile", Str, Process)
        .aliases(&["safe-pidfile"])
        .value("FILE")
        .help("Write the master's pid to FILE. (uWSGI's --safe-pidfile, which writes it through a temporary file, is taken as this.)"),
    PIDFILE_EXCLUSIVE = OptDef::new("pidfile-exclusive", Flag, Process)
        .help("Refuse to start when --pidfile names a process that is running (\"already running\"), before binding any socket, as Gunicorn does: a second start by mistake then cannot take over a unix socket or leave the pidfile naming itself. Gunicorn configs get it; otherwise the pidfile is overwritten, as uWSGI does."),
    PIDFILE2 = OptDef::new("pidfile2", Str, Process)
        .value("FILE")
        .help("Write the master's pid to FILE after dropping privileges."),
    DAEMONIZE = OptDef::new("daemonize", Str, Process)
        .short('d')
        .value("LOGFILE")
        .help("Detach from the terminal and log to LOGFILE (or, as HOST:PORT, send each line to that UDP address, as uWSGI does)."),
    DAEMONIZE2 = OptDef::new("daemonize2", Str, Process)
        .value("LOGFILE")
        .help("Like --daemonize, but after the app is loaded (load errors still reach the terminal)."),
    LOGTO = OptDef::new("logto", Str, Logging)
        .value("FILE")
        .help("Log to FILE instead of stderr (or, as HOST:PORT, send each line to that UDP address, as uWSGI does)."),
    LOGTO2 = OptDef::new("logto2", Str, Logging)
        .value("FILE")
        .help("Log to FILE from the moment privileges are dropped (--uid, --gid), opened as that user; until then, to --logto's file or stderr."),
    LOGGER = OptDef::new("logger", List, Logging)
        .value("[NAME ]TARGET")
        .help("uWSGI's logger, repeatable: file:PATH (or file:logfile=PATH[,maxsize=BYTES][,backupname=PATH], which rotates a lone file logger as --log-maxsize does), stdio (stderr, or --logto's file), stdout (the standard output it started with, which --logto then leaves be), syslog[:IDENT[,FACILITY]] (the local syslog, /dev/log), rsyslog:ADDR[:PORT][,PREFIX[,PRI]] (UDP) or socket:ADDR (each line as it is, a UDP datagram, or a unix one when ADDR is a path). Lines go to every logger without a NAME; a named one takes only the lines --log-route sends it. The app's own output is routed too."),
    REQ_LOGGER = OptDef::new("req-logger", List, Logging)
        .aliases(&["logger-req"])
        .value("[NAME ]TARGET")
        .help("Where request lines go, in --logger's forms (repeatable); without it they join the other lines."),
    LOG_ROUTE = OptDef::new("log-route", List, Logging)
        .value("NAME REGEXP")
        .help("Send the lines matching REGEXP to the --logger named NAME only."),
    LOG_REQ_ROUTE = OptDef::new("log-req-route", List, Logging)
        .value("NAME REGEXP")
        .help("Send the request lines matching REGEXP to the --req-logger (or --logger) named NAME only."),
    LOG_SYSLOG = OptDef::new("log-syslog", FlagOrStr, Logging)
        .value("IDENT[,FACILITY]")
        .help("Log to the local syslog: the same as --logger syslog[:IDENT[,FACILITY]]."),
    VACUUM = OptDef::new("vacuum", Flag, Process)
        .help("Remove unix sockets and pidfiles on exit."),
    STOP = OptDef::new("stop", Str, Process)
        .value("PIDFILE")
        .help("Stop the oxgate whose master pid is in PIDFILE (gracefully), then exit."),
    RELOAD = OptDef::new("reload", Str, Process)
        .value("PIDFILE")
        .help("Reload the oxgate whose master pid is in PIDFILE (new workers with the new code), then exit."),
    CHAIN_RELOAD = OptDef::new("chain-reload", Str, Process)
        .value("PIDFILE")
        .help("Reload the oxgate in PIDFILE one worker at a time, then exit."),
    BRUTAL_RELOAD = OptDef::new("brutal-reload", Str, Process)
        .value("PIDFILE")
        .help("Reload the oxgate in PIDFILE, killing its workers at once, then exit."),
    TOUCH_RELOAD = OptDef::new("touch-reload", List, Process)
        .value("FILE")
        .help("Reload gracefully when FILE is touched (repeatable)."),
    TOUCH_CHAIN_RELOAD = OptDef::new("touch-chain-reload", List, Process)
        .value("FILE")
        .help("Chain-reload when FILE is touched (repeatable)."),
    TOUCH_WORKERS_RELOAD = OptDef::new("touch-workers-reload", List, Process)
        .value("FILE")
        .help("Reload the workers gracefully when FILE is touched (repeatable; uWSGI's; here a graceful reload, as --touch-reload)."),
    EXIT_ON_RELOAD = OptDef::new("exit-on-reload", Flag, Process)
        .help("Stop gracefully where a reload was asked for (SIGHUP, a touched file, the master FIFO), as uWSGI's does: in a container, the orchestrator starts the new one."),
    ATTACH_DAEMON = OptDef::new("attach-daemon", List, Process)
        .value("COMMAND")
        .help("Run COMMAND (through /bin/sh) beside the workers: started, respawned and stopped with the master (repeatable)."),
    SMART_ATTACH_DAEMON = OptDef::new("smart-attach-daemon", List, Process)
        .value("PIDFILE COMMAND")
        .help("Run COMMAND, which daemonizes and writes PIDFILE; restart it when that pid is gone, stop it with the master."),
    PY_AUTORELOAD = OptDef::new("py-autoreload", Int, Process)
        .aliases(&["python-autoreload", "py-auto-reload", "python-auto-reload"])
        .value("SECONDS")
        .help("Every SECONDS, reload gracefully if a loaded Python module's file changed (for development). An app loaded in each worker (--lazy-apps) that does not load waits for a change to the files it failed in, then loads again, as uvicorn's and Gunicorn's --reload do; the old workers, if any, serve meanwhile."),
    CHOWN_SOCKET = OptDef::new("chown-socket", Str, Sockets)
        .value("USER[:GROUP]")
        .help("Owner of unix sockets."),
    UMASK = OptDef::new("umask", Str, Process)
        .value("MASK")
        .help("Set the umask (octal) before creating sockets and files."),
    UID = OptDef::new("uid", Str, Process)
        .value("USER")
        .help("Run as USER (name or number) after binding the sockets; the unix sockets go to USER (and --gid's group), as uWSGI's do, unless --chown-socket names another owner."),
    GID = OptDef::new("gid", Str, Process)
        .value("GROUP")
        .help("Run as GROUP (name or number) after binding the sockets."),
    NO_INITGROUPS = OptDef::new("no-initgroups", Flag, Process)
        .help("With --uid, keep no supplementary groups. Without it, the process takes --uid's user's groups, as uWSGI sets them with initgroups(3), with --gid's group (or the user's own) as the primary one."),
    LIMIT_CONCURRENCY = OptDef::new("limit-concurrency", Int, Limits)
        .value("N")
        .help("With N requests in flight in a worker (until their responses are sent), answer the next with 503 (uvicorn's option)."),
    KEEPALIVE_TIMEOUT = OptDef::new("keepalive-timeout", Int, Limits)
        .value("SECONDS")
        .help("How long an HTTP connection waits for its next request before it is closed (Gunicorn's keepalive, uvicorn's --timeout-keep-alive); --socket-timeout until given, and 0 closes each HTTP/1.1 connection after one response. Behind a load balancer, make it longer than the balancer's idle timeout."),
    HTTP_KEEPALIVE = OptDef::new("http-keepalive", FlagOrStr, Limits)
        .value("[=SECONDS]")
        .ignored()
        .help("uWSGI's HTTP router keep-alive: oxgate's HTTP/1.1 connections are always kept alive (--keepalive-timeout sets how long an idle one waits)."),
    LIMIT_POST = OptDef::new("limit-post", Int, Limits)
        .value("BYTES")
        .defaults_to("1073741824")
        .help("Refuse request bodies larger than BYTES with 413 (1 GiB unless given; 0 turns the limit off)."),
    MAX_CONNECTIONS = OptDef::new("max-connections", Int, Limits)
        .value("N")
        .help("Most connections a worker holds open at once, across its sockets; past it, new connections wait in the listen backlog until one closes (or another worker takes them). Unset or 0: the open-files limit less 64."),
    POST_BUFFERING = OptDef::new("post-buffering", Int, Limits)
        .value("BYTES")
        .defaults_to("1048576")
        .help("Read HTTP request bodies up to BYTES (at least 64 KiB) before the app is called, as nginx buffers them, so that a slow upload holds no app thread; a larger body streams to the app once that much has come. An ASGI app gets bodies as they come, as under uvicorn (unless the worker also has a WSGI app, CGI scripts or a FastCGI pool). uWSGI's option; it spills larger bodies to a file instead."),
    MIN_BODY_RATE = OptDef::new("min-body-rate", Int, Limits)
        .value("BYTES")
        .defaults_to("1024")
        .help("Bytes per second an HTTP request body must keep up, counting only the time spent waiting for the client, after 5 seconds' grace; a slower one gets 408 and its connection closes (0 turns it off)."),
    LIMIT_REQUEST_LINE = OptDef::new("limit-request-line", Int, Limits)
        .value("BYTES")
        .defaults_to("4094")
        .help("Longest HTTP request line (method, target and version) accepted; longer ones get 414. Gunicorn's option and value; 0 turns the limit off."),
    LIMIT_REQUEST_FIELDS = OptDef::new("limit-request-fields", Int, Limits)
        .value("N")
        .defaults_to("100")
        .help("Most header fields an HTTP request may have; more get 431. Gunicorn's option and value (0 means its most, 32768)."),
    LIMIT_REQUEST_FIELD_SIZE = OptDef::new("limit-request-field-size", Int, Limits)
        .value("BYTES")
        .defaults_to("8190")
        .help("Longest HTTP header field (Name: value) accepted; longer ones get 431. Gunicorn's option (also spelt --limit-request-field_size), and 0 means 8190 as there."),
    BUFFER_SIZE = OptDef::new("buffer-size", Int, Limits)
        .value("BYTES")
        .defaults_to("65536")
        .help("Largest request head accepted, in bytes (uWSGI's default, 4096, is too small for real cookies). Larger heads get 431. Given, it raises --limit-request-line and --limit-request-field-size with it, unless they are given: a uWSGI config that raises it for big cookies or URLs gets them."),
    SOCKET_TIMEOUT = OptDef::new("socket-timeout", Int, Limits)
        .short('z')
        .aliases(&["http-timeout"])
        .value("SECONDS")
        .defaults_to("30")
        .help("Close a connection whose request head does not arrive within SECONDS, or whose client takes no bytes of its response for SECONDS (the app's generator is then closed and its thread freed, as uWSGI's socket-timeout ends a stuck write). The HTTP router's --http-timeout of uWSGI reads as this."),
    INI = OptDef::new("ini", List, Config)
        .value("FILE[:SECTION]")
        .help("Read options from an INI file, section [uwsgi] (or [oxgate]) unless one is named. Expanded in place: later options override it."),
    YAML = OptDef::new("yaml", List, Config)
        .aliases(&["yml"])
        .short('y')
        .value("FILE[:SECTION]")
        .help("Read options from the uwsgi: (or oxgate:) mapping of a YAML file."),
    JSON = OptDef::new("json", List, Config)
        .aliases(&["js"])
        .short('j')
        .value("FILE[:SECTION]")
        .help("Read options from the \"uwsgi\" (or \"oxgate\") object of a JSON file."),
    XML = OptDef::new("xml", List, Config)
        .short('x')
        .value("FILE[:SECTION]")
        .help("Read options from the <uwsgi> (or <oxgate>) element of an XML file."),
    STRICT = OptDef::new("strict", Flag, Config)
        .help("Refuse unknown keys in config files instead of warning about them."),
    PRINT_CONFIG = OptDef::new("print-config", Flag, Config)
        .help("Print every option as resolved, with where it came from, and exit."),
    CHECK_CONFIG = OptDef::new("check-config", Flag, Config)
        .help("Read and check the configuration, report problems, and exit (status 0 when it is usable)."),
    CHECK_APP = OptDef::new("check-app", Flag, Config)
        .help("With --check-config: check this machine too (the users and groups --uid, --gid and --chown-socket name; the directories of unix sockets, pidfiles and logs) and import the app, as a worker would (--env, --chdir, --pythonpath and the virtualenv applied); exit 1 with the reason or the traceback if either fails, as Gunicorn's --check-config does. Gunicorn's check_config sets it."),
    DISABLE_LOGGING = OptDef::new("disable-logging", Flag, Logging)
        .short('L')
        .help("Write no request log line, except for the requests --log-slow, --log-4xx, --log-5xx, --log-big or --log-zero pick."),
    LOG_FORMAT = OptDef::new("log-format", Str, Logging)
        .aliases(&["logformat"])
        .value("FORMAT")
        .help("The request line, with uWSGI's %(var) variables: uri method user addr host proto status size rsize hsize msecs micros secs time tmsecs tmicros epoch ltime ctime ftime pid wid core switches vars pktsize headers cl rss vsz rssM vszM referer uagent protocol req, and %(var.NAME) for any request variable and %(resp.NAME) for a response header."),
    LOG_FORMAT_STRFTIME = OptDef::new("log-format-strftime", Flag, Logging)
        .aliases(&["logformat-strftime"])
        .help("Make %(ftime) use the --logdate format."),
    LOGDATE = OptDef::new("logdate", FlagOrStr, Logging)
        .aliases(&["log-date"])
        .value("[=FORMAT]")
        .help("Prefix oxgate's own log messages with the date (a strftime FORMAT, or the ctime format)."),
    LOG_PREFIX = OptDef::new("log-prefix", FlagOrStr, Logging)
        .value("=TEXT")
        .help("Start each of oxgate's own log lines with TEXT and \" - \", as uWSGI does (the request lines are left as they are)."),
    LOG_LEVEL = OptDef::new("log-level", Str, Logging)
        .value("debug|info|warning|error|critical")
        .defaults_to("info")
        .help("Which of oxgate's own lines are written. warning leaves out the routine ones (the start, a signal taken, a worker replaced after --max-requests, a reload's progress); error and critical the warnings too. Errors, deaths and harakiri are always written; request lines are not affected (--disable-logging). Gunicorn's loglevel and uvicorn's --log-level set it."),
    LOG_MICROS = OptDef::new("log-micros", Flag, Logging)
        .help("Request times in the default line in microseconds."),
    LOG_ESCAPE_QUOTES = OptDef::new("log-escape-quotes", Flag, Logging)
        .help("In request lines, write a \" in a logged value (a user agent, a header) as \\\", as Gunicorn's access log does, so that a client cannot close a quoted field or break a JSON line. Gunicorn config files set it."),
    LOG_X_FORWARDED_FOR = OptDef::new("log-x-forwarded-for", Flag, Logging)
        .help("Log the X-Forwarded-For header as the client address when a request has one."),
    LOG_SLOW = OptDef::new("log-slow", Int, Logging)
        .value("MS")
        .help("Log requests that took MS milliseconds or more (even with --disable-logging)."),
    LOG_4XX = OptDef::new("log-4xx", Flag, Logging)
        .help("Log requests answered with a 4xx status (even with --disable-logging)."),
    LOG_5XX = OptDef::new("log-5xx", Flag, Logging)
        .help("Log requests answered with a 5xx status (even with --disable-logging)."),
    LOG_BIG = OptDef::new("log-big", Int, Logging)
        .value("BYTES")
        .help("Log responses of BYTES or more (even with --disable-logging)."),
    LOG_ZERO = OptDef::new("log-zero", Flag, Logging)
        .help("Log responses with an empty body (even with --disable-logging)."),
    LOG_ENCODER = OptDef::new("log-encoder", List, Logging)
        .value("ENCODER")
        .help("Encode log lines, oxgate's own and the request lines (unless --log-req-encoder is given), as uWSGI does: `json TEMPLATE` fills uWSGI's ${msg}, ${msgnl}, ${unix}, ${micros}, ${millis}, ${strftime:FMT}, JSON-escaped; `format TEMPLATE` fills them as they are; `prefix TEXT` and `suffix TEXT` add TEXT; `nl` is accepted (lines always end with a newline); `json` alone writes a request line as a JSON object of every log variable, and oxgate's own lines as {\"msg\":...}. Given more than once, each encodes what the one before made, as uWSGI chains them. (The app's own output is written as it is.)"),
    LOG_REQ_ENCODER = OptDef::new("log-req-encoder", List, Logging)
        .value("ENCODER")
        .help("Encode the request lines with these encoders instead of --log-encoder's (the same encoders)."),
    LOGFILE_CHOWN = OptDef::new("logfile-chown", Flag, Logging)
        .help("Give the log files (--logto, --daemonize, --req-logger file:, the loggers' files) to the user and group of --uid and --gid once they are opened, so that the master and workers, no longer root, can reopen them after logrotate (SIGUSR1). Gunicorn's command line turns it on, as Gunicorn gives its log files to its user."),
    LOG_MAXSIZE = OptDef::new("log-maxsize", Int, Logging)
        .value("BYTES")
        .help("Rotate the log file (--logto, --daemonize) when it grows past BYTES: it is renamed to FILE.<unix time> and reopened."),
    LOG_BACKUPNAME = OptDef::new("log-backupname", Str, Logging)
        .value("FILE")
        .help("The name a rotated log is renamed to (each rotation overwrites it)."),
    TOUCH_LOGREOPEN = OptDef::new("touch-logreopen", List, Logging)
        .value("FILE")
        .help("Reopen the log file when FILE is touched (as SIGUSR1 does; for logrotate)."),
    LOG_REOPEN = OptDef::new("log-reopen", Flag, Logging)
        .ignored()
        .help("oxgate always reopens the log file after a reload."),
    LOG_MASTER = OptDef::new("log-master", Flag, Logging)
        .aliases(&["threaded-logger"])
        .ignored()
        .help("each process writes whole lines to the log itself, which never interleave."),
    MEMORY_REPORT = OptDef::new("memory-report", Flag, Logging)
        .help("Start each default request line with the worker's memory, as uWSGI does: {address space usage: N bytes/NMB} {rss usage: N bytes/NMB}. (The stats server always reports each worker's memory; with --log-format, %(vsz), %(rss), %(vszM) and %(rssM) say it.)"),
    STATIC_MAP = OptDef::new("static-map", List, Static)
        .value("MOUNT=DIR")
        .help("Serve the files under DIR at the URL path MOUNT (MOUNT/a.css is DIR/a.css), before the app; the longest mount wins, and a mount given again tries its directories in turn. A path with no file there goes on to the app. DIR may be one file, served at MOUNT itself (a favicon, say)."),
    STATIC_MAP2 = OptDef::new("static-map2", List, Static)
        .value("MOUNT=DIR")
        .help("As --static-map, keeping the mount in the file's path (MOUNT/a.css is DIR/MOUNT/a.css)."),
    CHECK_STATIC = OptDef::new("check-static", List, Static)
        .aliases(&["static-check"])
        .value("DIR")
        .help("Serve the request's path from DIR when such a file exists there; otherwise the app answers."),
    CHECK_STATIC_DOCROOT = OptDef::new("check-static-docroot", Flag, Static)
        .help("Serve the request's path from the DOCUMENT_ROOT the web server in front sends (nginx's uwsgi_params and fastcgi_params do), when such a file exists there; otherwise the app answers. Trusts the front end's DOCUMENT_ROOT."),
    STATIC_INDEX = OptDef::new("static-index", List, Static)
        .value("FILE")
        .help("For a directory, serve its FILE (index.html, say; the first that exists). A directory without one is 403 (no listings)."),
    STATIC_SKIP_EXT = OptDef::new("static-skip-ext", List, Static)
        .value("EXT")
        .help("Never serve files ending in EXT (.php, .py) from disk: the app gets those requests."),
    STATIC_SAFE = OptDef::new("static-safe", List, Static)
        .value("DIR")
        .help("Symbolic links under a static directory may point into DIR too (otherwise a link that leaves the directory is 403)."),
    STATIC_EXPIRES_TYPE = OptDef::new("static-expires-type", List, Static)
        .value("MIME=SECONDS")
        .help("Files of this MIME type get Expires and Cache-Control: max-age SECONDS ahead."),
    STATIC_EXPIRES = OptDef::new("static-expires", List, Static)
        .value("REGEX SECONDS")
        .help("Files whose path on disk matches REGEX get Expires and Cache-Control: max-age SECONDS ahead (REGEX=SECONDS works too)."),
    STATIC_EXPIRES_URI = OptDef::new("static-expires-uri", List, Static)
        .value("REGEX SECONDS")
        .help("Static requests whose URI matches REGEX get Expires and Cache-Control: max-age SECONDS ahead."),
    STATIC_EXPIRES_PATH_INFO = OptDef::new("static-expires-path-info", List, Static)
        .value("REGEX SECONDS")
        .help("Static requests whose PATH_INFO matches REGEX get Expires and Cache-Control: max-age SECONDS ahead."),
    STATIC_EXPIRES_TYPE_MTIME = OptDef::new("static-expires-type-mtime", List, Static)
        .value("MIME=SECONDS")
        .help("As --static-expires-type, with Expires SECONDS after the file's modification time rather than now."),
    STATIC_EXPIRES_MTIME = OptDef::new("static-expires-mtime", List, Static)
        .value("REGEX SECONDS")
        .help("As --static-expires, with Expires SECONDS after the file's modification time rather than now."),
    STATIC_EXPIRES_URI_MTIME = OptDef::new("static-expires-uri-mtime", List, Static)
        .value("REGEX SECONDS")
        .help("As --static-expires-uri, with Expires SECONDS after the file's modification time rather than now."),
    STATIC_EXPIRES_PATH_INFO_MTIME = OptDef::new("static-expires-path-info-mtime", List, Static)
        .value("REGEX SECONDS")
        .help("As --static-expires-path-info, with Expires SECONDS after the file's modification time rather than now."),
    STATIC_IMMUTABLE = OptDef::new("static-immutable", Flag, Static)
        .help("A file whose name carries a content hash (app.3f2a9c1b.css, as Django's ManifestStaticFilesStorage and bundlers make) gets Cache-Control: public, max-age=31536000, immutable."),
    STATIC_GZIP_ALL = OptDef::new("static-gzip-all", Flag, Static)
        .help("Send FILE.br or FILE.gz in place of FILE when it exists and the client accepts that encoding (Vary: Accept-Encoding)."),
    STATIC_GZIP = OptDef::new("static-gzip", List, Static)
        .value("REGEX")
        .help("As --static-gzip-all, for files whose path on disk matches REGEX."),
    STATIC_GZIP_DIR = OptDef::new("static-gzip-dir", List, Static)
        .aliases(&["static-gzip-prefix"])
        .value("DIR")
        .help("As --static-gzip-all, for files whose path on disk starts with DIR (a directory, or any prefix, as uWSGI reads it)."),
    STATIC_GZIP_EXT = OptDef::new("static-gzip-ext", List, Static)
        .aliases(&["static-gzip-suffix"])
        .value("EXT")
        .help("As --static-gzip-all, for files ending in EXT (.css, .js)."),
    MIMEFILE = OptDef::new("mimefile", List, Static)
        .aliases(&["mime-file"])
        .value("FILE")
        .help("Read file extensions' MIME types from FILE (mime.types format) instead of /etc/mime.types; a built-in table covers the rest."),
    CGI = OptDef::new("cgi", List, Cgi)
        .value("[MOUNT=]DIR")
        .help("Run the CGI scripts under DIR at the URL path MOUNT (/ when no MOUNT is given): /MOUNT/a.cgi/x runs DIR/a.cgi with PATH_INFO /x. DIR may be one script, which then answers the whole mount. A path with no script goes on to the app, if there is one."),
    CGI_ALLOWED_EXT = OptDef::new("cgi-allowed-ext", List, Cgi)
        .value("EXT")
        .help("Run only scripts whose names end in EXT (.cgi, .pl; a comma-separated list works too); any other is 403."),
    CGI_HELPER = OptDef::new("cgi-helper", List, Cgi)
        .aliases(&["cgi-map-helper"])
        .value("EXT=COMMAND")
        .help("Run scripts ending in EXT with COMMAND (.py=python3, .php=php-cgi, .pl=perl -T): the script's path is its last argument, and it need not be executable."),
    CGI_INDEX = OptDef::new("cgi-index", List, Cgi)
        .value("FILE")
        .help("For a directory, run its FILE (index.cgi, say; the first that exists)."),
    CGI_UNSET = OptDef::new("cgi-unset", List, Cgi)
        .value("NAME")
        .help("Leave the variable NAME out of every script's environment (HTTP_COOKIE, HTTP_AUTHORIZATION, say), as uWSGI's cgi-unset does."),
    CGI_TIMEOUT = OptDef::new("cgi-timeout", Int, Cgi)
        .value("SECONDS")
        .defaults_to("60")
        .help("Kill a script (and every process it started in its group) that has neither read input nor written output for SECONDS, as uWSGI's cgi-timeout waits for output; its request is answered 504 if nothing was sent yet."),
    FASTCGI_APP = OptDef::new("fastcgi-app", List, FastCgi)
        .value("[MOUNT=]COMMAND")
        .help("Run COMMAND as a pool of FastCGI processes (php-cgi, a Perl FCGI or flup app), each listening on a socket of its own on fd 0, and send the requests under MOUNT (/ when none is given) to an idle one. Also mount=/,command=php-cgi,processes=8,max-requests=500."),
    FASTCGI_APP_PROCESSES = OptDef::new("fastcgi-app-processes", Int, FastCgi)
        .value("N")
        .defaults_to("4")
        .help("How many processes a --fastcgi-app pool runs at most (php-fpm's pm.max_children): the master's, shared by every worker, which takes whichever is idle (1024 at most)."),
    FASTCGI_APP_PM = OptDef::new("fastcgi-app-pm", Str, FastCgi)
        .value("static|dynamic|ondemand")
        .defaults_to("dynamic")
        .help("How a pool's processes are kept, as php-fpm's pm: static runs them all from the start; dynamic keeps between --fastcgi-app-spare idle ones; ondemand starts them as requests come and stops them after --fastcgi-app-idle-timeout."),
    FASTCGI_APP_SPARE = OptDef::new("fastcgi-app-spare", Str, FastCgi)
        .value("MIN:MAX")
        .defaults_to("1:3")
        .help("With --fastcgi-app-pm dynamic, the idle processes kept ready in all (php-fpm's pm.min_spare_servers and pm.max_spare_servers)."),
    FASTCGI_APP_IDLE_TIMEOUT = OptDef::new("fastcgi-app-idle-timeout", Int, FastCgi)
        .value("SECONDS")
        .defaults_to("10")
        .help("Stop a process idle this long: any with ondemand, those over the spare maximum with dynamic (php-fpm's pm.process_idle_timeout)."),
    FASTCGI_APP_MAX_REQUESTS = OptDef::new("fastcgi-app-max-requests", Int, FastCgi)
        .value("N")
        .help("Replace a pool process after it has served N requests."),
    FASTCGI_APP_SLOWLOG = OptDef::new("fastcgi-app-slowlog", Int, FastCgi)
        .value("SECONDS")
        .help("Log a pool request still running after SECONDS, with its process's pid, its URI and its running time, without stopping it (php-fpm's request_slowlog_timeout)."),
    FASTCGI_APP_ENV = OptDef::new("fastcgi-app-env", List, FastCgi)
        .value("KEY=VALUE")
        .help("Set KEY in the pool processes' environment, which is otherwise empty (php-fpm's clear_env)."),
    FASTCGI_PASS = OptDef::new("fastcgi-pass", List, FastCgi)
        .value("[MOUNT=]ADDR")
        .help("Send the requests under MOUNT (/ when none is given) to the FastCGI server at ADDR (host:port, a unix socket path or @name), such as a php-fpm pool, a connection per request."),
    FASTCGI_APP_DOCROOT = OptDef::new("fastcgi-app-docroot", Str, FastCgi)
        .value("DIR")
        .help("The FastCGI app's document root: a path naming a .php file under DIR runs it (SCRIPT_FILENAME, PATH_INFO after it), a directory runs its index, other files there are served as static files."),
    FASTCGI_APP_INDEX = OptDef::new("fastcgi-app-index", List, FastCgi)
        .value("FILE")
        .help("With a document root, the script a directory runs (index.php when none is given)."),
    FASTCGI_APP_FALLBACK = OptDef::new("fastcgi-app-fallback", Str, FastCgi)
        .value("URI")
        .help("With a document root, the script a path naming nothing runs, with the query kept: the front controller (nginx's try_files $uri $uri/ /index.php?$args)."),
    FASTCGI_APP_TIMEOUT = OptDef::new("fastcgi-app-timeout", Int, FastCgi)
        .value("SECONDS")
        .help("Answer 504 to a FastCGI request still running after SECONDS from when a process took it (php-fpm's request_terminate_timeout; --harakiri does not hold FastCGI requests); a pool's process is killed and replaced, a --fastcgi-pass connection dropped. A request waits for a process as long as the ones ahead of it run (each held to SECONDS); a pool whose command cannot start answers 502 at once."),
    STATS = OptDef::new("stats", Str, Logging)
        .aliases(&["stats-server"])
        .value("ADDR")
        .help("Serve uWSGI's stats JSON (for uwsgitop and oxgate top) on ADDR: host:port or a unix socket path. Bind it to loopback or a private socket."),
    STATS_HTTP = OptDef::new("stats-http", Flag, Logging)
        .help("Answer HTTP on the stats socket: / is the JSON, /metrics the Prometheus metrics."),
    STATS_MINIFIED = OptDef::new("stats-minified", Flag, Logging)
        .aliases(&["stats-min"])
        .help("Stats JSON without indentation."),
    STATSD_HOST = OptDef::new("statsd-host", Str, Logging)
        .value("HOST:PORT")
        .help("Send Gunicorn's statsd metrics to HOST:PORT (or unix:PATH) over UDP: gunicorn.requests, gunicorn.request.status.CODE and gunicorn.request.duration for each request, gunicorn.workers when the count changes, and gunicorn.log.exception and gunicorn.log.critical for app errors and harakiri."),
    STATSD_PREFIX = OptDef::new("statsd-prefix", Str, Logging)
        .value("PREFIX")
        .help("Put PREFIX (and a dot) before every --statsd-host metric name."),
    DOGSTATSD_TAGS = OptDef::new("dogstatsd-tags", Str, Logging)
        .value("TAGS")
        .help("Add DogStatsD tags (comma-separated key:value) to every --statsd-host metric."),
    METRICS = OptDef::new("metrics", Str, Logging)
        .value("ADDR")
        .help("Serve Prometheus metrics over HTTP on ADDR (at /metrics)."),
    ENABLE_THREADS = OptDef::new("enable-threads", Flag, Python)
        .short('T')
        .ignored()
        .help("Python threads always work in oxgate."),
    SINGLE_INTERPRETER = OptDef::new("single-interpreter", Flag, Python)
        .short('i')
        .ignored()
        .help("oxgate always runs one interpreter per process."),
    PLUGIN = OptDef::new("plugin", List, Python)
        .aliases(&["plugins", "need-plugin", "need-plugins"])
        .value("NAME")
        .ignored()
        .help("Python support is built in; plugins are not needed."),
    PLUGIN_DIR = OptDef::new("plugin-dir", Str, Python)
        .aliases(&["plugins-dir"])
        .value("DIR")
        .ignored()
        .help("there are no plugins to look for."),
    HTTP_WEBSOCKETS = OptDef::new("http-websockets", Flag, Sockets)
        .ignored()
        .help("HTTP sockets always take WebSocket upgrades, for ASGI apps."),
    CLOSE_ON_EXEC = OptDef::new("close-on-exec", Flag, Process)
        .ignored()
        .help("oxgate's sockets are always closed in the processes an app executes."),
    REAPER = OptDef::new("reaper", Flag, Process)
        .short('r')
        .help("Reap, in each worker, the exited children the app leaves unwaited for (os.fork() with os._exit, a subprocess.Popen never waited for) once they have been zombies for a second: without it they stay until the worker is replaced. As uWSGI's --reaper. An app that waits for its children itself, later than that (subprocess's wait() or communicate() after other work, os.waitpid, multiprocessing), must not use it: its wait would find the child gone, and Python reports the exit status as 0. (The master always reaps its own children.)"),
    AUTO_PROCNAME = OptDef::new("auto-procname", Flag, Process)
        .help("Title the processes, as ps and top's command lines show them: `oxgate master`, `oxgate worker N` and `oxgate pools` (uWSGI's option; its titles say uWSGI)."),
    PROCNAME = OptDef::new("procname", Str, Process)
        .value("TITLE")
        .help("Title every process TITLE (instead of --auto-procname's titles; the master's is --procname-master's if given)."),
    PROCNAME_MASTER = OptDef::new("procname-master", Str, Process)
        .value("TITLE")
        .help("Title the master TITLE, and the other processes as --auto-procname does."),
    PROCNAME_PREFIX = OptDef::new("procname-prefix", Str, Process)
        .value("TEXT")
        .help("Title the processes as --auto-procname does, each title beginning with TEXT."),
    PROCNAME_PREFIX_SPACED = OptDef::new("procname-prefix-spaced", Str, Process)
        .value("TEXT")
        .help("As --procname-prefix, with a space after TEXT."),
    PROCNAME_APPEND = OptDef::new("procname-append", Str, Process)
        .value("TEXT")
        .help("Title the processes as --auto-procname does, each title ending with TEXT."),
    OFFLOAD_THREADS = OptDef::new("offload-threads", Int, Process)
        .aliases(&["offload-thread"])
        .value("N")
        .ignored()
        .help("oxgate sends static files and wsgi.file_wrapper bodies from its event loop, with no threads for it. With --threads above 1, the Python thread that made a file response stays with it until it is sent and closed, as uWSGI's and Gunicorn's threads do (its close() runs there, with its thread-local state); a client that reads nothing holds it for --socket-timeout at most."),
    THUNDER_LOCK = OptDef::new("thunder-lock", Flag, Process)
        .ignored()
        .help("workers accept from shared sockets without a lock, and connections spread across them."),
    TCP_NODELAY = OptDef::new("tcp-nodelay", Flag, Sockets)
        .ignored()
        .help("every TCP connection oxgate accepts has TCP_NODELAY: responses go out as the app produces them."),
    NO_ORPHANS = OptDef::new("no-orphans", Flag, Process)
        .ignored()
        .help("workers always die with their master (PR_SET_PDEATHSIG)."),
    IGNORE_SIGPIPE = OptDef::new("ignore-sigpipe", Flag, Process)
        .ignored()
        .help("SIGPIPE never reaches oxgate's processes."),
    IGNORE_WRITE_ERRORS = OptDef::new("ignore-write-errors", Flag, Process)
        .ignored()
        .help("a client that goes away closes its connection; the app is not told."),
    DISABLE_WRITE_EXCEPTION = OptDef::new("disable-write-exception", Flag, Process)
        .ignored()
        .help("writes to clients happen outside the app, which never sees a write exception."),
    HELP = OptDef::new("help", Flag, Info)
        .aliases(&["usage"])
        .short('h')
        .help("Print the options, grouped by topic, and exit."),
    VERSION = OptDef::new("version", Flag, Info)
        .help("Print the version and exit."),
    COMPLETIONS = OptDef::new("completions", Str, Info)
        .value("bash|zsh|fish")
        .help("Print a completion script for the shell, made from the option table, and exit (packaging/completions/ has them made)."),
}

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
    "log-date",
    "post-buffering",
    "protocol",
    "ini",
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
    "cache2",
    "cheaper-initial",
    "endif",
    "hook-master-start",
    "if-env",
    "if-not-env",
    "reload-mercy",
    "uwsgi-socket",
    "vhost",
    "cheaper-busyness-backlog-alert",
    "cheaper-busyness-max",
    "cheaper-busyness-min",
    "cheaper-busyness-multiplier",
    "cheaper-overload",
    "cheaper-step",
    "limit-as",
    "limit-post",
    "log-encoder",
    "log-route",
    "log-slow",
    "master-fifo",
    "no-default-app",
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
    // uWSGI's TLS tuning, which rustls has no switch for (a config that
    // names them still starts, with a warning).
    "https-session-context",
    "https2",
    "ssl-enable-tlsv1",
    "ssl-option",
    "ssl-sessions-use-cache",
    "ssl-verify-depth",
];

/// Finds an option by its name or one of its aliases.
pub fn lookup(name: &str) -> Option<Key> {
    lookup_exact(&name.replace('_', "-"))
}

/// As written, without turning `_` into `-`: in uWSGI config files a key
/// with `_` is a placeholder (`base_dir`), never an option.
pub fn lookup_exact(name: &str) -> Option<Key> {
    OPTIONS
        .iter()
        .copied()
        .find(|o| o.name == name || o.aliases.contains(&name))
}

pub fn lookup_short(c: char) -> Option<Key> {
    OPTIONS.iter().copied().find(|o| o.short == Some(c))
}

/// The known option closest to a misspelt one, for "did you mean" hints.
pub fn suggest(name: &str) -> Option<&'static str> {
    let mut best: Option<(usize, &'static str)> = None;
    for o in OPTIONS {
        for cand in o.long_names() {
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
    use crate::config::value::parse_bool;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for o in OPTIONS {
            for n in o.long_names() {
                assert!(seen.insert(n), "{n} declared twice");
            }
        }
        let mut shorts = std::collections::HashSet::new();
        for o in OPTIONS.iter().filter_map(|o| o.short) {
            assert!(shorts.insert(o), "-{o} declared twice");
        }
    }

    #[test]
    fn lookup_accepts_aliases_and_underscores() {
        assert_eq!(lookup("http"), Some(&opt::HTTP_SOCKET));
        assert_eq!(lookup("wsgi_file"), Some(&opt::WSGI_FILE));
        assert_eq!(lookup("virtualenv"), Some(&opt::HOME));
        assert_eq!(lookup_short('t'), Some(&opt::HARAKIRI));
        assert!(lookup("no-such-thing").is_none());
        assert_ne!(&opt::HTTP_SOCKET, &opt::SOCKET);
    }

    #[test]
    fn keys_are_named_after_their_option() {
        // macro_rules! cannot make HTTP_SOCKET out of "http-socket", so the
        // table spells both; they must agree.
        assert_eq!(KEY_IDENTS.len(), OPTIONS.len());
        for (o, ident) in OPTIONS.iter().zip(KEY_IDENTS) {
            assert_eq!(*ident, o.name.to_ascii_uppercase().replace('-', "_"));
        }
    }

    #[test]
    fn every_entry_is_complete_and_consistent() {
        for o in OPTIONS {
            let n = o.name;
            assert!(!o.help.is_empty(), "--{n} has no help");
            assert!(
                o.help.ends_with('.') || o.help.ends_with(')'),
                "--{n}: help is a sentence"
            );
            // The renderers add these; the help text must not repeat them.
            assert!(
                !o.help.starts_with("Accepted"),
                "--{n}: say .ignored() instead"
            );
            if o.default.is_some() {
                assert!(
                    !o.help.contains("default "),
                    "--{n}: the default is in .defaults_to()"
                );
            }
            assert_eq!(
                o.value_name.is_empty(),
                o.kind == Kind::Flag,
                "--{n}: value name"
            );
            if let Some(d) = o.default {
                if o.kind == Kind::Flag {
                    assert!(parse_bool(d).is_some(), "--{n}: default {d:?}");
                }
                if o.kind == Kind::Int {
                    assert!(
                        d.bytes().all(|b| b.is_ascii_digit()),
                        "--{n}: default {d:?}"
                    );
                }
                assert!(o.kind != Kind::List, "--{n}: a list has no default");
                assert_eq!(
                    o.status,
                    Status::Implemented,
                    "--{n}: ignored, yet a default"
                );
            }
        }
    }

    #[test]
    fn suggests_near_misses() {
        assert_eq!(suggest("wsgi-fil"), Some("wsgi-file"));
        assert_eq!(suggest("thread"), Some("threads"));
        assert_eq!(suggest("zzzzzzzzzz"), None);
    }
}
