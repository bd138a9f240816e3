"""What oxgate does in an interpreter that was already running when it
started (the `oxgate` pip installs): the Rust side (interpreter.rs) calls
these once, before the app is loaded."""
import os
import site
import sys


def stdlib_readable():
    """Whether this user can still import the standard library: after
    --uid, the interpreter that started as root may live where the new user
    cannot read."""
    lib = os.path.dirname(os.__file__)
    return os.access(lib, os.R_OK | os.X_OK)


def sync_environ(current):
    """Makes os.environ what the process environment is now: the interpreter
    copied it at its start, before oxgate applied --env."""
    want = dict(current)
    env = os.environb
    for key in [k for k in env if k not in want]:
        del env[key]
    for key, value in want.items():
        if env.get(key) != value:
            env[key] = value


def put_first_on_path(entries):
    """Puts `entries` first on sys.path, in order, each once."""
    for entry in reversed(entries):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def add_virtualenv(home):
    """--home: puts another virtualenv's site-packages (and its .pth files)
    first on sys.path, as activating it would. Returns False when `home`
    has none for this Python version."""
    if os.path.realpath(home) == os.path.realpath(sys.prefix):
        return True
    lib = os.path.join(home, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
    if not os.path.isdir(lib):
        return False
    before = list(sys.path)
    site.addsitedir(lib)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before
    return True
