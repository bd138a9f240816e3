"""oxgate's Python-side helpers: loading the WSGI callable and logging errors.

Kept in Python because importlib does the real work; the Rust side calls
these few functions once at start-up and on errors, never per request.
"""
import ast
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import traceback


class AppNotFound(Exception):
    """The module loaded, but the callable named is not there or not callable."""


def _is_factory(obj):
    """A plain function that takes no arguments at all (every parameter
    has a default, and none is *args): never an app, which is called with
    two (WSGI) or three (ASGI)."""
    import inspect
    if not inspect.isfunction(obj) or inspect.iscoroutinefunction(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.kind != p.VAR_POSITIONAL and p.default is not p.empty for p in params
               if p.kind != p.VAR_KEYWORD)


def _resolve_callable(module, spec, where):
    """Takes `name`, `name()` or `name(args...)` (literal arguments, by
    position or name) from module."""
    call = None
    name = spec
    m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(\((.*)\))?\s*", spec, re.S)
    if not m:
        raise AppNotFound(f"{spec!r} is not a callable name (expected name, name() or name(args))")
    name = m.group(1)
    kwargs = {}
    if m.group(2) is not None:
        # Literal arguments, by position and by name, as Gunicorn reads
        # `create_app('prod', debug=False)`.
        try:
            parsed = ast.parse(f"f({m.group(3)})", mode="eval").body
            call = tuple(ast.literal_eval(a) for a in parsed.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in parsed.keywords if k.arg}
            if len(kwargs) != len(parsed.keywords):
                raise ValueError("**kwargs")
        except (SyntaxError, ValueError) as e:
            raise AppNotFound(f"{spec!r}: the arguments must be literals (strings, numbers, ...): {e}")
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None)))
            hint = f"; callables there: {', '.join(public[:12])}" if public else ""
            raise AppNotFound(f"{where} has no attribute {name!r}{hint} (choose one with --callable NAME or pkg.mod:NAME)")
        obj = getattr(obj, part)
    if call is not None:
        obj = obj(*call, **kwargs)
    elif _is_factory(obj):
        # No WSGI or ASGI app can be called with no arguments: this one
        # makes the app (create_app), as uvicorn detects and calls it.
        sys.stderr.write(f"oxgate: warning: {where}:{name} takes no arguments: an app factory, called to make "
                         f"the app (say so with {name}() to quiet this)\n")
        obj = obj()
    if not callable(obj):
        raise AppNotFound(f"{where}:{spec} is a {type(obj).__name__}, not a WSGI callable")
    if _is_tornado_application(obj):
        # Callable, but with Tornado's own request: every request was a 500
        # (Gunicorn's tornado worker serves it on Tornado's own server).
        raise AppNotFound(f"{where}:{spec} is a tornado.web.Application, which runs on Tornado's own HTTP "
                          "server, not as a WSGI or ASGI app: run it with Tornado (or Gunicorn's tornado worker), "
                          "or serve a WSGI app")
    return obj


def _is_tornado_application(obj):
    return any(c.__module__ == "tornado.web" and c.__name__ == "Application" for c in type(obj).__mro__)


def _run_file(path, name=None):
    """Executes a file as a module, under uWSGI's name for it (or `name`).
    An explicit source loader: uWSGI executes the file whatever it is
    called, and mod_wsgi's `.wsgi` (or no suffix at all) has no loader of
    its own in importlib."""
    name = name or "uwsgi_file_" + re.sub(r"[^\w]", "_", os.path.splitext(path)[0].lstrip("/"))
    loader = importlib.machinery.SourceFileLoader(name, path)
    package = [os.path.dirname(path)] if os.path.basename(path) == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(name, path, loader=loader,
                                                  submodule_search_locations=package)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_module(target):
    """`--import`: a dotted module, or a .py file run as a module. None, or
    the error with its traceback."""
    try:
        if target.endswith(".py") or "/" in target:
            _run_file(os.path.abspath(target))
        else:
            importlib.import_module(target)
        return None
    except BaseException as e:
        return "cannot import it:\n" + "".join(traceback.format_exception(e)).rstrip()


def load(kind, target, callable_spec, module_name=None):
    """Returns (app, None) or (None, message) with the full Python error.
    A file is run as the module `module_name` when given."""
    where = target
    try:
        if kind == "file":
            path = os.path.abspath(target)
            where = f"file {target!r}"
            if not os.path.isfile(path):
                return None, f"cannot load the app: file {target!r} does not exist (looked in {os.getcwd()})"
            directory = os.path.dirname(path)
            if directory not in sys.path:
                sys.path.insert(0, directory)
            module = _run_file(path, module_name)
        else:
            where = f"module {target!r}"
            module = importlib.import_module(target)
        return _resolve_callable(module, callable_spec, where), None
    except BaseException as e:  # SystemExit and KeyboardInterrupt at import are load errors too
        head = f"cannot load the app from {where}"
        if kind != "file":
            try:
                spec = importlib.util.find_spec(target)
                if spec is not None and spec.origin:
                    head += f" ({spec.origin})"
            except Exception:
                pass
        _note_failed_files(e, os.path.abspath(target) if kind == "file" else None)
        if isinstance(e, AppNotFound):
            return None, f"{head}: {e}"
        tb = "".join(traceback.format_exception(e))
        hint = ""
        if isinstance(e, ModuleNotFoundError):
            hint = (f"\nhint: sys.path is {sys.path}; add the directory with --chdir or --pythonpath,"
                    " or select the virtualenv with --home")
        return None, f"{head}: {type(e).__name__}: {e}\n{tb.rstrip()}{hint}"


def asgi_kind(app):
    """--interface auto: 3 for an ASGI 3 app, a coroutine function or an
    object whose __call__ is one; 2 for an ASGI 2 app, a class whose
    instances' __call__ is one (uvicorn's rule: the class is instantiated
    with the scope); 0 for a WSGI app. (Here, not in asgi.py: a WSGI app's
    server never imports asyncio.)"""
    import inspect
    if inspect.isclass(app):
        # (A WSGI app may be a class too: PEP 3333 calls it with environ
        # and start_response, and iterates the instance.)
        if hasattr(app, "__await__"):
            return 3
        return 2 if inspect.iscoroutinefunction(getattr(app, "__call__", None)) else 0
    if inspect.iscoroutinefunction(app):
        return 3
    call = getattr(app, "__call__", None)
    return 3 if call is not None and inspect.iscoroutinefunction(call) else 0


def asgi2(app):
    """An ASGI 2 app as an ASGI 3 one, as uvicorn's ASGI2Middleware does:
    called with the scope, it returns the coroutine function that takes
    receive and send. The scope says version 2.0, as uvicorn's does."""
    async def asgi3(scope, receive, send):
        scope["asgi"]["version"] = "2.0"  # (each scope has its own copy)
        instance = app(scope)
        await instance(receive, send)
    return asgi3


def set_up_server_loggers(server, level, access_log=True):
    """--app-loggers: the loggers Gunicorn or uvicorn set up before they
    load an app, so that an app logging through them (a common recipe:
    `logging.getLogger("gunicorn.error")`, or "uvicorn.error") writes its
    lines, in that server's format, where that server would: stderr,
    which is oxgate's log."""
    import logging
    if server == "gunicorn":
        # Gunicorn's glogging: the error log at loglevel, not propagated;
        # the access log, which oxgate writes itself, silent for the app.
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s [%(process)d] [%(levelname)s] %(message)s", "[%Y-%m-%d %H:%M:%S %z]"))
        names = [("gunicorn.error", level, [handler]), ("gunicorn.access", logging.INFO, []),
                 # uvicorn's Gunicorn worker gives its loggers Gunicorn's handlers.
                 ("uvicorn.error", level, [handler]), ("uvicorn.access", logging.INFO, [])]
        for name, at, handlers in names:
            logger = logging.getLogger(name)
            logger.handlers = list(handlers)
            logger.setLevel(at)
            logger.propagate = False
    elif server == "uvicorn":
        class _UvicornFormatter(logging.Formatter):
            """uvicorn's DefaultFormatter without colours: `INFO:     message`."""

            def formatMessage(self, record):
                record.__dict__["levelprefix"] = record.levelname + ":" + " " * (8 - len(record.levelname))
                return super().formatMessage(record)

        # uvicorn's LOGGING_CONFIG, then --log-level on its three loggers.
        error = logging.StreamHandler(sys.stderr)
        error.setFormatter(_UvicornFormatter("%(levelprefix)s %(message)s"))
        access = logging.StreamHandler(sys.stdout)
        access.setFormatter(_UvicornFormatter("%(levelprefix)s %(message)s"))
        top = logging.getLogger("uvicorn")
        top.handlers = [error]
        top.propagate = False
        top.setLevel(logging.INFO)
        # --no-access-log silences the logger, as uvicorn does, and with it
        # what the app writes there.
        logging.getLogger("uvicorn.access").handlers = [access] if access_log else []
        logging.getLogger("uvicorn.access").propagate = False
        for name in ("uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
            logging.getLogger(name).setLevel(level)


def apply_log_config(path, app_loggers):
    """--log-config, read as uvicorn reads it: JSON or YAML is a dictConfig,
    anything else a fileConfig (INI). Returns why it cannot be used. Under
    Gunicorn's loggers, a JSON file is Gunicorn's logconfig_json: merged
    over Gunicorn's defaults, as Gunicorn does."""
    import logging.config
    path = str(path)
    # JSON by its content, whatever the file's name (Gunicorn's
    # --log-config-json takes any).
    try:
        with open(path, "rb") as f:
            is_json = f.read(4096).lstrip()[:1] == b"{"
    except OSError as e:
        return str(e)
    if app_loggers == "gunicorn" and is_json:
        import _oxgate_gunicorn_logging
        return _oxgate_gunicorn_logging.apply_logconfig_json(path)
    try:
        if is_json or path.endswith(".json"):
            import json
            with open(path) as f:
                logging.config.dictConfig(json.load(f))
        elif path.endswith((".yaml", ".yml")):
            import yaml
            with open(path) as f:
                logging.config.dictConfig(yaml.safe_load(f))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ImportError as e:
        return "%s (a YAML file needs PyYAML in the app's environment)" % e
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
    return None


def exception_text(exc):
    """An app's exception and its traceback, for oxgate's log line."""
    return "".join(traceback.format_exception(exc))


# The files an app that did not load came from (its traceback's, a
# SyntaxError's) and the directories it is looked for in, watched with the
# loaded modules' for the edit that fixes it (--py-autoreload).
_failed_files = set()


def _note_failed_files(e, path):
    try:
        for frame in traceback.extract_tb(e.__traceback__):
            _failed_files.add(frame.filename)
        if isinstance(getattr(e, "filename", None), str):
            _failed_files.add(e.filename)
        # A module not found (or not yet written) appears in a directory.
        _failed_files.add(os.path.dirname(path) if path else os.getcwd())
    except Exception:
        pass


def module_files():
    """{path: mtime} of every loaded module that comes from a file."""
    out = {}
    for path in _failed_files:
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            pass
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            try:
                out[path] = os.stat(path).st_mtime
            except OSError:
                pass
    return out


# --vhost sites share one interpreter, where uWSGI gives each its own:
# what keeps them apart is each site's directory (UWSGI_CHDIR) and its
# virtualenv (UWSGI_PYHOME). A request runs in its site's directory, first
# on sys.path, with its site's own modules (those imported from its
# directory or its virtualenv, at load or lazily in a view) in
# sys.modules: one site's `helpers` is not another's, nor is one site's
# virtualenv's Django another's.
_VHOST_MODULES = {}
# Per directory: the modules of the same names its own ones took the
# place of (a package in the base install, or in another site's
# virtualenv, which another site imports), put back when it is left.
_VHOST_DISPLACED = {}
# Per directory: the top-level module names it provides (read once).
_VHOST_NAMES = {}
# Per site: entries of sys.path under its directories besides them (a
# loaded file's own directory), set aside while another site runs.
_VHOST_PATHS = {}
# Per site (by directory): its virtualenv's site-packages, if any.
_VHOST_LIBS = {}
# Per site: the DJANGO_SETTINGS_MODULE its load left.
_VHOST_SETTINGS = {}
# Loads refused (a second Django, below), by what names the app: said
# again at once, not loaded again at every request.
_VHOST_REFUSED = {}
_VHOST_ACTIVE = [None]
# DJANGO_SETTINGS_MODULE as the environment gave it, before any site's
# load set it.
_VHOST_ENVIRON = []


def _under(m, prefix):
    f = getattr(m, "__file__", None)
    return isinstance(f, str) and f.startswith(prefix)


def _modules_under(directory):
    prefix = directory.rstrip(os.sep) + os.sep
    return {name: m for name, m in list(sys.modules.items()) if _under(m, prefix)}


def _packages_in(lib):
    """The top-level modules a virtualenv's site-packages provides: its
    packages, and its modules' names (`six.py`,
    `_cffi_backend.cpython-311-x86_64-linux-gnu.so`); never the standard
    library's, which stay as imported (as without sites)."""
    names = _VHOST_NAMES.get(lib)
    if names is None:
        try:
            entries = os.listdir(lib)
        except OSError:
            entries = []
        names = {e.partition(".")[0] for e in entries
                 if "." not in e or e.endswith((".py", ".pyc", ".so"))}
        names -= set(sys.stdlib_module_names) | set(sys.builtin_module_names)
        _VHOST_NAMES[lib] = names
    return names


def _site_dirs(directory):
    """A site's own directories: its UWSGI_CHDIR, and its virtualenv's
    site-packages (which sites naming the same UWSGI_PYHOME share)."""
    lib = _VHOST_LIBS.get(directory)
    return [directory, lib] if lib else [directory]


# Directories never set aside with a site whose directory holds them: the
# interpreter's own (a UWSGI_CHDIR of / or of a home with pyenv in it) and
# what was on sys.path before the first site loaded (--pythonpath).
_VHOST_KEPT = []


def _kept():
    if not _VHOST_KEPT:
        import sysconfig
        paths = sysconfig.get_paths()
        dirs = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
        dirs += [p for p in sys.path if p and p != os.getcwd()]
        _VHOST_KEPT.append([os.path.abspath(d).rstrip(os.sep) + os.sep for d in dirs if d])
    return _VHOST_KEPT[0]


def _set_aside(d, staying):
    """Leaves directory `d`: its modules are set aside (kept for the next
    site that has it), the ones they took the place of come back. Modules
    under a directory inside `d` that stays (a virtualenv another site
    shares, the interpreter's own) stay with it."""
    prefix = d.rstrip(os.sep) + os.sep
    inside = tuple(k for k in _kept() + [s.rstrip(os.sep) + os.sep for s in staying]
                   if k.startswith(prefix))
    own = {name: m for name, m in _modules_under(d).items() if not _under(m, inside)}
    _VHOST_MODULES[d] = own
    for name in own:
        del sys.modules[name]
    sys.modules.update(_VHOST_DISPLACED.pop(d, {}))
    return inside


def _put_in(d, lib):
    """Enters directory `d`: its modules come back, in the place of any of
    the same names from elsewhere; and, for a virtualenv (`lib`), in the
    place of any package it provides that another site imported from the
    base install (its own is imported instead)."""
    own = _VHOST_MODULES.get(d, {})
    names = _packages_in(d) if lib else ()
    prefix = d.rstrip(os.sep) + os.sep
    displaced = {name: m for name, m in list(sys.modules.items())
                 if (name in own or name.partition(".")[0] in names) and not _under(m, prefix)}
    for name in displaced:
        del sys.modules[name]
    _VHOST_DISPLACED[d] = displaced
    sys.modules.update(own)


def enter_vhost(directory):
    """Makes the site in `directory` the one requests run in. Switching
    sites sets aside the modules of the directories the one before had
    and this one has not; staying costs a getcwd()."""
    active = _VHOST_ACTIVE[0]
    if active == directory:
        if os.getcwd() != directory:
            os.chdir(directory)
        return
    os.chdir(directory)
    entering = _site_dirs(directory)
    leaving = _site_dirs(active) if active is not None else []
    gone = [d for d in leaving if d not in entering]
    kept = ()
    for d in gone:
        kept += _set_aside(d, entering)
    if gone:
        # No path under it is left to import from (`siteA.settings` is not
        # for site B to find), but those that stay.
        prefixes = tuple(d.rstrip(os.sep) + os.sep for d in gone)
        under = [p for p in sys.path if (p in gone or p.startswith(prefixes))
                 and not (p.rstrip(os.sep) + os.sep).startswith(kept)]
        _VHOST_PATHS[active] = [p for p in under if p not in gone]
        for p in under:
            sys.path.remove(p)
    for d in entering:
        if d not in leaving:
            _put_in(d, d != directory)
    for d in reversed(_VHOST_PATHS.pop(directory, [])):
        if d not in sys.path:
            sys.path.insert(0, d)
    for d in reversed(entering):
        if sys.path[:1] != [d]:
            if d in sys.path:
                sys.path.remove(d)
            sys.path.insert(0, d)
    settings = _VHOST_SETTINGS.get(directory)
    if settings is not None and os.environ.get("DJANGO_SETTINGS_MODULE") != settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings
    _VHOST_ACTIVE[0] = directory


def _django_settings_module():
    """The settings module Django (as this site imports it) was set up
    with, or None."""
    conf = sys.modules.get("django.conf")
    settings = getattr(conf, "settings", None)
    try:
        return settings.SETTINGS_MODULE if settings is not None and settings.configured else None
    except Exception:
        return None


def load_vhost(script, module, callable_name, file, chdir, pyhome):
    """--vhost: loads the app a request's UWSGI_* variables name (uWSGI's
    dynamic apps). Returns (app, None) or (None, message)."""
    import site
    key = (script, module, callable_name, file, chdir, pyhome)
    if key in _VHOST_REFUSED:
        return None, _VHOST_REFUSED[key]
    _kept()  # before any site's directory is on sys.path
    if pyhome:
        lib = os.path.join(pyhome, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
        if not os.path.isdir(lib):
            return None, f"UWSGI_PYHOME {pyhome!r}: no {lib}"
        site.addsitedir(lib)
        # the venv's packages win over the base install
        sys.path.remove(lib)
        sys.path.insert(0, lib)
        if chdir:
            _VHOST_LIBS[chdir] = lib
    if chdir:
        try:
            enter_vhost(chdir)
        except OSError as e:
            return None, f"UWSGI_CHDIR {chdir!r}: {e}"
    # Each site's wsgi.py sets DJANGO_SETTINGS_MODULE with setdefault():
    # it loads with the value the environment gave, not the one the site
    # loaded before set.
    if not _VHOST_ENVIRON:
        _VHOST_ENVIRON.append(os.environ.get("DJANGO_SETTINGS_MODULE"))
    if _VHOST_ENVIRON[0] is None:
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = _VHOST_ENVIRON[0]
    # Django keeps one settings module per process: a second site's
    # (where both import the same Django) would find the first's set up,
    # and serve the first site's pages for its own. uWSGI's interpreter
    # per site keeps them apart; here that site is refused, and said.
    django_before = _django_settings_module()
    app, message = _load_vhost_app(script, module, callable_name, file, chdir)
    wanted = os.environ.get("DJANGO_SETTINGS_MODULE")
    if chdir and wanted:
        _VHOST_SETTINGS[chdir] = wanted
    if app is not None and django_before and wanted and wanted != django_before:
        _VHOST_REFUSED[key] = (f"its Django settings {wanted!r} cannot be set up in a worker where another --vhost "
                      f"site's Django runs with {django_before!r}: Django keeps one settings module per "
                      "process (uWSGI gives each site an interpreter of its own). Give each Django site "
                      "its own UWSGI_PYHOME virtualenv with Django in it, or its own oxgate")
        return None, _VHOST_REFUSED[key]
    return app, message


def _load_vhost_app(script, module, callable_name, file, chdir):
    if file:
        return load("file", file, callable_name or "application")
    target = script or module
    spec = callable_name
    if script and ":" in script:
        target, spec = script.split(":", 1)
    spec = spec or "application"
    # Two sites may both have a "myapp" module in their own directories:
    # the one in UWSGI_CHDIR is loaded by path, under its own name (as uWSGI
    # imports it), which the site's modules keep apart from another's.
    # (Under a made-up name, the Flask layout whose views.py does `from
    # app import app` imported app.py a second time, and put its routes on
    # an app nobody served: 404 everywhere.)
    if chdir:
        for candidate in (target.replace(".", "/") + ".py", target.replace(".", "/") + "/__init__.py"):
            path = os.path.join(chdir, candidate)
            if os.path.isfile(path):
                return load("file", path, spec, module_name=target)
    return load("module", target, spec)
