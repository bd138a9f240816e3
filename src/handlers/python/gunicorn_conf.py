"""Runs a Gunicorn config file the way Gunicorn does: a fresh module
namespace, executed once in the process that will load the app; oxgate
reads its settings from the names it leaves, and keeps the namespace for
its server hooks."""
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
import types

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
    if callable(value) and not isinstance(value, (type, types.ModuleType)):
        return ("callable", None)
    return ("other", type(value).__name__)


def read(source):
    """Returns ([(name, kind, value)], None), or (None, the error)."""
    global namespace
    try:
        if source.startswith("python:"):
            # As the app is found: from the working directory first.
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
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
    names = []
    for name, value in namespace.items():
        if name.startswith("__"):
            continue
        kind, described = _describe(value)
        names.append((name, kind, described))
    return names, None
