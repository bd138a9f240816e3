"""Every PEP 3333 behaviour the server must support, behind wsgiref.validate.

The validator raises AssertionError (a 500 and a traceback in the log) the
moment the server breaks a rule of PEP 3333, so each test also checks that the
log is free of AssertionError and WSGIWarning.
"""
import hashlib
import json
import os
import tempfile
from urllib.parse import parse_qs
from wsgiref.validate import validator

CLOSED = os.path.join(tempfile.gettempdir(), f"oxgate-closed-{os.getpid()}")


def qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def reply(start_response, body, ctype="application/json", status="200 OK", extra=()):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


class Tracked:
    """An iterable with close(), to prove the server always calls it."""

    def __init__(self, chunks, fail_at=None):
        self.chunks, self.fail_at = chunks, fail_at

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("failing mid-response on purpose")
            yield c

    def close(self):
        with open(CLOSED, "a") as f:
            f.write("x")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = qs(environ)
    inp = environ["wsgi.input"]

    if path == "/env" or path.startswith("/env/"):
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        env["wsgi.version"] = list(environ["wsgi.version"])
        for k in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated"):
            env[k] = environ.get(k)
        return reply(start_response, env)

    if path == "/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = inp.read(n)
        return reply(start_response, body, ctype=environ.get("CONTENT_TYPE", "application/octet-stream"))

    if path == "/lines":
        first = inp.readline()
        limited = inp.readline(3)
        rest = inp.readlines()
        return reply(start_response, {"first": first.decode("latin-1"), "limited": limited.decode("latin-1"),
                                      "rest": [r.decode("latin-1") for r in rest]})

    if path == "/iterate":
        return reply(start_response, {"lines": [line.decode("latin-1") for line in inp]})

    if path == "/count":
        # Reads the body in chunks until EOF: works for chunked uploads too.
        size = int(q.get("chunk", 65536))
        h, total = hashlib.sha256(), 0
        while True:
            b = inp.read(size)
            if not b:
                break
            total += len(b)
            h.update(b)
        extra = inp.read(10)  # past the end: b"" at once, never a hang
        return reply(start_response, {"bytes": total, "sha256": h.hexdigest(), "after_end": len(extra)})

    if path == "/stream":
        count, size = int(q.get("count", 3)), int(q.get("size", 5))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (bytes([65 + i % 26]) * size for i in range(count))

    if path == "/late-status":
        def gen():
            start_response("201 Created", [("Content-Type", "text/plain")])
            yield b"late"
            yield b"-status"
        return gen()

    if path == "/empty-first":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"", b"", b"after-empties"])

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written-")
        write(b"then-")
        return [b"yielded"]

    if path == "/closed":
        try:
            n = len(open(CLOSED).read())
        except FileNotFoundError:
            n = 0
        return reply(start_response, {"closed": n})

    if path == "/tracked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked([b"a" * 100] * int(q.get("count", 3)), fail_at=int(q["fail"]) if "fail" in q else None)

    if path == "/file":
        name = os.path.join(tempfile.gettempdir(), f"oxgate-file-{os.getpid()}")
        size = int(q.get("size", 100000))
        with open(name, "wb") as f:
            f.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
        f = open(name, "rb")
        skip = int(q.get("skip", 0))
        if skip:
            f.read(skip)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)

    if path == "/status":
        return reply(start_response, b"custom", ctype="text/plain", status=q.get("s", "299 Custom Reason"))

    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("handled")
        except ValueError:
            import sys
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"recovered"]

    if path == "/headers":
        pairs = [("X-Multi", "one"), ("X-Multi", "two"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                 ("X-Latin", "caf\xe9")]
        return reply(start_response, b"ok", ctype="text/plain", extra=pairs)

    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one-item-list"]

    return reply(start_response, {"error": "no route", "path": path}, status="404 Not Found")


application = validator(app)
