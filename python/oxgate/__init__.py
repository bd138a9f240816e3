"""oxgate: an application server for Python web apps (WSGI and ASGI over
HTTP/1.1, uwsgi, FastCGI and SCGI), a successor to uWSGI.

The `oxgate` command and `python -m oxgate` run `main()`. The server itself
is the compiled `oxgate._oxgate`, the same code as the stand-alone binary.
"""
import io
import signal
import sys

from ._oxgate import __version__
from ._oxgate import main as _serve

__all__ = ["__version__", "gunicorn_main", "main", "uvicorn_main"]


def _line_buffered(stream, fd):
    """The stream rewritten to its file descriptor a line at a time: output
    an app prints reaches the log at once, as `python -u` has it, and each
    line (print()'s text and its newline) in one write, so that the
    workers' lines never run into each other in the log (unbuffered, they
    were two writes, and another worker's came between). The server
    flushes it before each fork, so no buffer is written again by every
    worker."""
    if stream is None:
        return None
    try:
        stream.flush()
        raw = io.FileIO(fd, "w", closefd=False)
    except (OSError, ValueError):
        return stream
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors,
                            line_buffering=True)


def main(dialect=None):
    """Runs oxgate with this process's command line; does not return.
    `dialect` ("gunicorn", "uvicorn") reads it as that command's would be:
    sys.argv stays as it is, so a reload re-executes the same command."""
    # The server owns signals: Ctrl-C stops it as SIGINT does the binary,
    # instead of raising KeyboardInterrupt inside an app.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout = _line_buffered(sys.stdout, 1)
    sys.stderr = _line_buffered(sys.stderr, 2)
    _serve(([dialect] if dialect else []) + sys.argv[1:])


def gunicorn_main():
    """`oxgate-gunicorn ARGS`: Gunicorn's command line, as `oxgate gunicorn ARGS`."""
    main("gunicorn")


def uvicorn_main():
    """`oxgate-uvicorn ARGS`: uvicorn's command line, as `oxgate uvicorn ARGS`."""
    main("uvicorn")
