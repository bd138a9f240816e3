"""Runs a Gunicorn config file the way Gunicorn does: a fresh module
namespace, executed once in the process that will load the app; oxgate
reads its settings from the names it leaves, and keeps the namespace for
its server hooks."""
import collections.abc
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import sys
import traceback
import types

import _oxgate_gunicorn_logging

namespace = None


def _describe(value):
    if value is None:
        return ("none", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)) and all(isinstance(i, (str, int, float)) for i in value):
        return ("list", [str(i) for i in value])
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        # secure_scheme_headers: NAME=VALUE each.
        return ("list", ["%s=%s" % (k, v) for k, v in value.items()])
    if callable(value) and not isinstance(value, (type, types.ModuleType)):
        return ("callable", None)
    return ("other", type(value).__name__)


def read(source):
    """Returns ([(name, kind, value)], None), or (None, the error)."""
    global namespace
    try:
        # As Gunicorn, which runs with the working directory on sys.path:
        # a config file's own imports (`from app.core.config import
        # settings`) are found there, as the app is.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        if source.startswith("python:"):
            module = importlib.import_module(source[len("python:"):])
        else:
            path = os.path.abspath(source)
            loader = importlib.machinery.SourceFileLoader("__config__", path)
            spec = importlib.util.spec_from_file_location("__config__", path, loader=loader)
            module = importlib.util.module_from_spec(spec)
            sys.modules["__config__"] = module
            spec.loader.exec_module(module)
    except BaseException as e:  # SystemExit too: the file is at fault, not the server
        return None, "cannot run the config file:\n" + "".join(traceback.format_exception(e)).rstrip()
    namespace = vars(module)
    # A hook may be named by its dotted path (`post_fork = "hooks.post_fork"`),
    # which Gunicorn imports.
    for name in HOOKS + ("ssl_context",):
        value = namespace.get(name)
        if isinstance(value, str) and "." in value:
            where, _, attr = value.rpartition(".")
            try:
                namespace[name] = getattr(importlib.import_module(where), attr)
            except BaseException as e:
                return None, "%s = %r: cannot import it: %s: %s" % (name, value, type(e).__name__, e)
    wrong = _wrong_arity(namespace) or _wrong_bind(namespace.get("bind"))
    if wrong:
        return None, wrong
    failed = _oxgate_gunicorn_logging.apply_logconfig_dict(namespace.get("logconfig_dict"))
    if failed:
        return None, failed
    names = []
    for name, value in namespace.items():
        if name.startswith("__"):
            continue
        kind, described = _describe(value)
        names.append((name, kind, described))
    return names, None


# The arguments Gunicorn passes each hook, whose count its validators
# want (post_request's may stop after the second or third).
_ARGUMENTS = {
    "on_starting": "server", "on_reload": "server", "when_ready": "server",
    "pre_fork": "server, worker", "post_fork": "server, worker", "post_worker_init": "worker",
    "worker_int": "worker", "worker_abort": "worker", "pre_exec": "server",
    "pre_request": "worker, req", "post_request": "worker, req, environ, resp",
    "child_exit": "server, worker", "worker_exit": "server, worker",
    "nworkers_changed": "server, new_value, old_value", "on_exit": "server",
    "ssl_context": "config, default_ssl_context_factory",
}


def _wrong_arity(ns):
    """What Gunicorn refuses to start with: a hook that is not callable or
    takes another number of positional arguments (else each call would
    fail, a request's pre_request with a 500)."""
    for name, arguments in _ARGUMENTS.items():
        hook = ns.get(name)
        if hook is None:
            continue
        if not callable(hook):
            return "%s = %r: Gunicorn refuses it: the value is not callable" % (name, hook)
        given = arguments.count(",") + 1
        wanted = (2, 3, 4) if name == "post_request" else (given,)
        count = _positional_count(hook)
        if count is not None and count not in wanted:
            return ("%s: Gunicorn refuses it: the hook must take %s positional argument%s (%s), it takes %d"
                    % (name, " or ".join(map(str, wanted)), "" if wanted == (1,) else "s", arguments, count))
    return None


def _wrong_bind(bind):
    """Gunicorn's validate_list_string: a string or a list of them; a bare
    port number (`bind = 8000`) is refused, not taken for a host."""
    if bind is None or isinstance(bind, str):
        return None
    if not isinstance(bind, (list, tuple)):
        return "bind = %r: Gunicorn refuses it: give a string, like \"0.0.0.0:%s\", or a list of them" % (bind, bind)
    for item in bind:
        if not isinstance(item, str):
            return "bind = %r: Gunicorn refuses it: not a string: %r" % (bind, item)
    return None



# Server hooks: called with duck-typed stand-ins for Gunicorn's arbiter,
# worker and request, carrying the attributes real hooks use.

import inspect
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Log:
    """Gunicorn's error log: `[date] [pid] [LEVEL] message` on stderr."""

    def _level(self):
        return _LEVELS.get(str(cfg.loglevel or "info").lower(), 20)

    def _write(self, level, msg, args, exc=False):
        if _LEVELS[level.lower()] < self._level():
            return
        # With a logging config that gives gunicorn.error handlers of its
        # own (logconfig, logconfig_dict), the hooks' lines go through it,
        # in its format, to its files, as Gunicorn's do.
        configured = logging.getLogger("gunicorn.error")
        if configured.handlers:
            configured.log(_LEVELS[level.lower()], msg, *args, exc_info=exc or None)
            return
        msg = str(msg)
        if args:
            # As the logging module formats: a lone mapping is formatted by
            # name; a message that does not format is reported, not raised
            # into the hook (which, at start-up, would stop the server).
            if len(args) == 1 and isinstance(args[0], collections.abc.Mapping) and args[0]:
                args = args[0]
            try:
                msg = msg % args
            except Exception as e:
                sys.stderr.write("--- Logging error ---\n%s: %s\nMessage: %r\nArguments: %r\n"
                                 % (type(e).__name__, e, msg, args))
                return
        line = "[%s] [%d] [%s] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S %z"), os.getpid(), level, msg)
        if exc:
            if isinstance(exc, BaseException):
                exc = (type(exc), exc, exc.__traceback__)
            line += "".join(traceback.format_exception(*exc)) if isinstance(exc, tuple) \
                else traceback.format_exc()
        sys.stderr.write(line)

    def debug(self, msg, *args, exc_info=None, **kw):
        self._write("DEBUG", msg, args, exc_info)

    def info(self, msg, *args, exc_info=None, **kw):
        self._write("INFO", msg, args, exc_info)

    def warning(self, msg, *args, exc_info=None, **kw):
        self._write("WARNING", msg, args, exc_info)

    warn = warning

    def error(self, msg, *args, exc_info=None, **kw):
        self._write("ERROR", msg, args, exc_info)

    def critical(self, msg, *args, exc_info=None, **kw):
        self._write("CRITICAL", msg, args, exc_info)

    def exception(self, msg, *args, exc_info=True, **kw):
        self._write("ERROR", msg, args, exc_info)

    def log(self, level, msg, *args, exc_info=None, **kw):
        name = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(level, "INFO")
        self._write(name, msg, args, exc_info)

    def reopen_files(self):
        pass

    def close_on_exec(self):
        pass


# Gunicorn's defaults for the settings hooks read, as its Config gives
# them (chdir, user and group are the process's own).
_DEFAULTS = {
    "access_log_format": '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
    "accesslog": None, "backlog": 2048, "bind": ["127.0.0.1:8000"], "ca_certs": None,
    "capture_output": False, "certfile": None, "check_config": False, "ciphers": None,
    "daemon": False, "default_proc_name": "gunicorn", "dogstatsd_tags": "",
    "enable_stdio_inheritance": False, "errorlog": "-",
    "forwarded_allow_ips": ["127.0.0.1", "::1"], "graceful_timeout": 30,
    "keepalive": 2, "keyfile": None, "limit_request_field_size": 8190,
    "limit_request_fields": 100, "limit_request_line": 4094, "logconfig": None,
    "loglevel": "info", "max_requests": 0, "max_requests_jitter": 0, "pidfile": None,
    "preload_app": False, "print_config": False, "proc_name": None,
    "proxy_allow_ips": ["127.0.0.1", "::1"], "proxy_protocol": False, "pythonpath": None,
    "raw_env": [], "reload": False, "reload_extra_files": [], "reuse_port": False,
    "root_path": "", "sendfile": None, "spew": False, "statsd_host": None,
    "statsd_prefix": "", "syslog": False, "syslog_addr": "udp://localhost:514",
    "syslog_facility": "user", "syslog_prefix": None, "threads": 1, "timeout": 30,
    "tmp_upload_dir": None, "umask": 0, "worker_class": "sync", "worker_connections": 1000,
    "worker_tmp_dir": None, "workers": 1, "wsgi_app": None,
}

_DEFAULTS.update({
    "secure_scheme_headers": {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                              "X-FORWARDED-SSL": "on"},
    "logconfig_dict": {}, "logconfig_json": None, "logger_class": "gunicorn.glogging.Logger",
    "forwarder_headers": ["SCRIPT_NAME", "PATH_INFO"],
})

# Settings Gunicorn reads as lists from comma-separated strings.
_ADDRESS_LISTS = ("forwarded_allow_ips", "proxy_allow_ips")


def _parse_address(bind):
    """A bind as Gunicorn's util.parse_address gives it."""
    bind = str(bind)
    for prefix in ("unix://", "unix:"):
        if bind.startswith(prefix):
            return bind[len(prefix):]
    if bind.startswith("fd://"):
        return int(bind[5:])
    if bind.startswith("tcp://"):
        bind = bind[6:]
    host, port = bind, "8000"
    if "[" in bind and "]" in bind:
        host = bind.split("]")[0][1:]
        port = (bind.split("]:") + ["8000"])[1]
    elif ":" in bind:
        host, port = (bind.split(":") + ["8000"])[:2]
    elif bind == "":
        host = "0.0.0.0"
    return host.lower(), int(port)


# What oxgate resolved from every source (the command line,
# GUNICORN_CMD_ARGS, the file), for the settings it has a value of.
_effective = {}


# Every setting Gunicorn has: `server.cfg.NAME` of another raises
# AttributeError, as Gunicorn's does (`getattr(cfg, name, default)`).
_known = set()


def set_effective(values, known=()):
    _effective.clear()
    _effective.update(values)
    _known.clear()
    _known.update(known)


def _user_id(value, by_name, own):
    """Gunicorn's validate_user/validate_group: a name or a number, as a
    number (cfg.user is the uid, as cfg.uid)."""
    if value is None:
        return own()
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    try:
        return by_name(value)
    except KeyError:
        return value


class _Cfg:
    """`server.cfg.NAME`, as Gunicorn's Config answers: the value in force
    (the command line over the variable over the file), else Gunicorn's
    default; AttributeError for a name Gunicorn has no setting for."""

    def __getattr__(self, name):
        # Config's own attributes that are not settings: dicts there.
        if name in ("settings", "ssl_options", "paste_global_conf", "env_orig"):
            return {}
        if name.startswith("__") or (
                _known and name not in _known and name not in _effective
                and name not in _DEFAULTS and name not in (namespace or {})
                and name not in ("uid", "gid")):
            raise AttributeError("No configuration setting for: %s" % name)
        value = self._lookup(name)
        # Lists Gunicorn reads from "a, b" strings.
        if name in _ADDRESS_LISTS and isinstance(value, str):
            return [a.strip() for a in value.split(",") if a.strip()]
        return value

    def _lookup(self, name):
        ns = namespace or {}
        if name in ("user", "uid"):
            import pwd
            return _user_id(_effective.get("user", ns.get("user")),
                            lambda n: pwd.getpwnam(n).pw_uid, os.geteuid)
        if name in ("group", "gid"):
            import grp
            return _user_id(_effective.get("group", ns.get("group")),
                            lambda n: grp.getgrnam(n).gr_gid, os.getegid)
        if name in _effective:
            return _effective[name]
        if name in ns:
            return ns[name]
        if name == "chdir":
            return os.getcwd()
        return _DEFAULTS.get(name)


    @property
    def worker_class_str(self):
        # As Gunicorn's: sync with threads is its gthread worker.
        uri = self.worker_class
        if isinstance(uri, str):
            if (uri == "sync" or uri.endswith("SyncWorker")) and (self.threads or 1) > 1:
                return "gthread"
            return uri
        return getattr(uri, "__name__", str(uri))

    @property
    def address(self):
        # As Gunicorn's Config.address: (host, port) tuples, unix paths,
        # descriptor numbers.
        binds = self.bind
        return [_parse_address(b) for b in ([binds] if isinstance(binds, str) else binds)]

    @property
    def is_ssl(self):
        return bool(self.certfile or self.keyfile)

    @property
    def proc_name(self):
        return self.__getattr__("proc_name") or self.default_proc_name

    @property
    def env(self):
        # raw_env's KEY=VALUE pairs, as Gunicorn's Config.env gives them.
        pairs = (e.split("=", 1) for e in (self.raw_env or []))
        return {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2}


log = _Log()
cfg = _Cfg()


class Server:
    def __init__(self, pid, num_workers):
        self.pid = pid
        self.num_workers = num_workers
        self.cfg = cfg
        self.log = log
        self.WORKERS = {}
        self.proc_name = cfg.proc_name
        self.address = cfg.address
        self.timeout = cfg.timeout


class Worker:
    def __init__(self, pid, ppid, age):
        self.pid = pid
        self.ppid = ppid
        self.age = age
        self.cfg = cfg
        self.log = log
        self.alive = True
        self.booted = False
        self.nr = 0
        self.max_requests = cfg.max_requests or sys.maxsize
        # As Gunicorn's arbiter gives it: half the timeout, its heartbeat.
        self.timeout = cfg.timeout / 2.0

    def notify(self):
        pass


class Request:
    """What hooks read of a request: Gunicorn's names, from the environ."""

    def __init__(self, environ):
        self.method = environ.get("REQUEST_METHOD", "")
        self.query = environ.get("QUERY_STRING", "")
        self.uri = environ.get("RAW_URI") or environ.get("REQUEST_URI") or \
            (environ.get("PATH_INFO", "") + ("?" + self.query if self.query else ""))
        # The path as sent (percent-encoded), as Gunicorn's parser has it.
        self.path = self.uri.split("?", 1)[0]
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            self.version = tuple(int(p) for p in proto.split("/", 1)[1].split("."))
        except (IndexError, ValueError):
            self.version = (1, 1)
        self.scheme = environ.get("wsgi.url_scheme", "http")
        # The peer, as Gunicorn's socket gives it: (host, port) over TCP.
        addr, port = environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")
        self.remote_addr = self.peer_addr = (addr, int(port)) if port.isdigit() else addr
        self.body = environ.get("wsgi.input")
        headers = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-"), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                headers.append((key.replace("_", "-"), value))
        self.headers = headers
        self._headers_given = list(headers)

    def apply_to(self, environ):
        """Gunicorn makes the environ after pre_request: a header the hook
        added, changed or removed in `headers` is the app's."""
        if self.headers == self._headers_given:
            return
        for key in [k for k in environ if k.startswith("HTTP_")]:
            del environ[key]
        for name, value in self.headers:
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
                continue
            key = "HTTP_" + key
            environ[key] = environ[key] + "," + value if key in environ else value


class Response:
    def __init__(self, status, headers, sent=0):
        self.status = status
        try:
            self.status_code = int(status.split()[0])
        except (AttributeError, IndexError, ValueError):
            self.status_code = None
        self.headers = headers
        # The body's bytes the app gave, and its Content-Length if it set one.
        self.sent = sent
        self.response_length = next(
            (int(v) for k, v in headers if k.lower() == "content-length" and str(v).isdigit()), None)


_worker = None


def has_hooks():
    return any(callable((namespace or {}).get(n)) for n in HOOKS)


def has_hook(name):
    return callable((namespace or {}).get(name))


HOOKS = ("on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
         "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
         "worker_exit", "nworkers_changed", "on_exit")


# One server object for every hook, and one worker object from its
# pre_fork to its child_exit (in the worker, from post_fork on), as
# Gunicorn's arbiter and workers are: what a hook sets on them (a worker id
# chosen in pre_fork, read in post_fork) is there for the next.
_server = None
# The master's workers by age, from pre_fork until they are forked.
_booting = {}


def _the_server(pid, num_workers):
    global _server
    if _server is None:
        _server = Server(pid, num_workers)
    _server.pid = pid
    _server.num_workers = num_workers
    return _server


def call(name, pid, age, num_workers, new, old):
    """Calls hook `name` with the arguments Gunicorn passes it. A hook
    that raises is logged, as Gunicorn logs a failing hook, and the server
    goes on."""
    global _worker
    if name == "_forked":
        # (No hook: the master forked the worker of `age` as `pid`.)
        worker = _booting.pop(age, None)
        if worker is not None:
            worker.pid = pid
            _the_server(os.getpid(), num_workers).WORKERS[pid] = worker
        return True
    # The master's record of its workers is kept whether or not the hook
    # of the moment is set.
    if name == "pre_fork":
        _booting[age] = Worker("[booting]", os.getpid(), age)
    elif name == "child_exit":
        gone = _the_server(os.getpid(), num_workers).WORKERS.pop(pid, None)
    hook = (namespace or {}).get(name)
    if not callable(hook):
        return
    in_worker = name in ("post_fork", "post_worker_init", "worker_int", "worker_abort", "worker_exit")
    server = _the_server(os.getppid() if in_worker else os.getpid(), num_workers)
    if in_worker:
        if name == "post_fork" or _worker is None:
            # The object its pre_fork was given, copied with the master.
            _worker = _booting.get(age) or Worker(os.getpid(), os.getppid(), age)
            _worker.pid, _worker.ppid = os.getpid(), os.getppid()
        worker = _worker
    elif name == "pre_fork":
        worker = _booting[age]
    elif name == "child_exit":
        worker = gone or Worker(pid, os.getpid(), age)
    else:
        worker = Worker(pid, os.getpid(), age)
    if name == "post_worker_init":
        worker.booted = True
    if name in ("worker_int", "worker_abort", "worker_exit", "child_exit"):
        # As Gunicorn's: a worker on its way out is no longer alive (code
        # that polls worker.alive sees the shutdown).
        worker.alive = False
    if name in ("on_starting", "on_reload", "when_ready", "pre_exec", "on_exit"):
        args = (server,)
    elif name in ("pre_fork", "post_fork", "child_exit", "worker_exit"):
        args = (server, worker)
    elif name == "nworkers_changed":
        args = (server, new, old)
    else:
        args = (worker,)
    try:
        hook(*args)
    except Exception:
        log.exception("Exception in %s hook", name)
        return False
    return True


class _ClosingIterable:
    """The app's response, with post_request run once it is sent."""

    def __init__(self, result, after):
        self._result = result
        self._after = after
        self.sent = 0

    def __iter__(self):
        for chunk in self._result:
            self.sent += len(chunk)
            yield chunk

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._after()


def _positional_count(func):
    """How many positional arguments a hook takes, as Gunicorn's get_arity
    counts them (`*args` is none); None when Python cannot tell (a
    builtin)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds)


def _this_worker():
    """The worker object of this process, made once (post_fork makes it
    when the file has that hook)."""
    global _worker
    if _worker is None or _worker.pid != os.getpid():
        _worker = Worker(os.getpid(), os.getppid(), 0)
    return _worker


def _leave_if_told(worker):
    """A hook that sets worker.alive = False, or lowers worker.max_requests
    to the requests served (the recipes for recycling a worker that grew),
    has the worker stop once its requests are done, as Gunicorn's worker
    leaves its loop; the master starts another. A SIGTERM to itself is
    that graceful stop."""
    if getattr(worker, "_leaving", False):
        return
    if not worker.alive or worker.nr >= worker.max_requests != (cfg.max_requests or sys.maxsize):
        worker._leaving = True
        worker.alive = False
        log.info("Autorestarting worker after current request.")
        import signal
        os.kill(os.getpid(), signal.SIGTERM)


def wrap_wsgi_app(app):
    """The app, with pre_request and post_request around each request, when
    the file defines them (otherwise the app itself: no cost)."""
    pre = (namespace or {}).get("pre_request")
    post = (namespace or {}).get("post_request")
    pre = pre if callable(pre) else None
    post = post if callable(post) else None
    if pre is None and post is None:
        return app
    # Gunicorn's post_request may take 2, 3 or 4 arguments.
    # (Checked at start: 2, 3 or 4; a builtin's, which Python cannot
    # count, is given all four.)
    post_arity = (_positional_count(post) or 4) if post is not None else 4

    def with_hooks(environ, start_response):
        worker = _this_worker()
        req = Request(environ)
        refused = False
        if pre is not None:
            try:
                pre(worker, req)
                req.apply_to(environ)
            except Exception:
                # As Gunicorn: the request is a 500, and the app not called.
                log.exception("Exception in pre_request hook")
                refused = True
        # Counted after pre_request, as Gunicorn's workers count it: the
        # requests before this one there, this one too in post_request.
        worker.nr += 1
        sent = {}
        body = None

        def recording_start_response(status, headers, exc_info=None):
            sent["status"], sent["headers"] = status, headers
            return start_response(status, headers, exc_info)

        def after():
            if post is None:
                return
            try:
                resp = Response(sent.get("status"), sent.get("headers", []),
                                body.sent if body is not None else 0)
                post(*(worker, req, environ, resp)[:post_arity])
            except Exception:
                log.exception("Exception in post_request hook")
            _leave_if_told(worker)

        if refused:
            recording_start_response("500 Internal Server Error",
                                     [("Content-Type", "text/plain"), ("Content-Length", "22")])
            body = _ClosingIterable([b"Internal Server Error\n"], after)
            return body
        try:
            result = app(environ, recording_start_response)
        except BaseException:
            # As Gunicorn: post_request runs however the request ended.
            after()
            raise
        if post is None:
            return result
        body = _ClosingIterable(result, after)
        return body

    return with_hooks
