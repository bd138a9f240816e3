"""oxgate: an application server for Python web apps (WSGI and ASGI over
HTTP/1.1, uwsgi, FastCGI and SCGI), a successor to uWSGI.

The `oxgate` command and `python -m oxgate` run `main()`. The server itself
is the compiled `oxgate._oxgate`, the same code as the stand-alone binary.
"""
import signal
import sys

from ._oxgate import __version__
from ._oxgate import main as _serve

__all__ = ["__version__", "gunicorn_main", "main", "uvicorn_main"]


def main(dialect=None):
    """Runs oxgate with this process's command line; does not return.
    `dialect` ("gunicorn", "uvicorn") reads it as that command's would be:
    sys.argv stays as it is, so a reload re-executes the same command."""
    # The server owns signals: Ctrl-C stops it as SIGINT does the binary,
    # instead of raising KeyboardInterrupt inside an app.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # (stdout and stderr are made line-buffered when the app's interpreter
    # is prepared: src/handlers/python/interpreter.rs.)
    _serve(([dialect] if dialect else []) + sys.argv[1:])


def gunicorn_main():
    """`oxgate-gunicorn ARGS`: Gunicorn's command line, as `oxgate gunicorn ARGS`."""
    main("gunicorn")


def uvicorn_main():
    """`oxgate-uvicorn ARGS`: uvicorn's command line, as `oxgate uvicorn ARGS`."""
    main("uvicorn")
