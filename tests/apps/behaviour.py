"""Apps that misbehave or push limits, unwrapped (the validator would stop
them before the server sees what they do)."""
import hashlib
import json
import threading
import time
from urllib.parse import parse_qs

RELEASE = threading.Event()


def qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


KEPT = []


def application(environ, start_response):
    path = environ["PATH_INFO"]
    q = qs(environ)
    inp = environ["wsgi.input"]

    if path == "/read-all":
        body = inp.read()
        more = inp.read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                            "again": len(more)}).encode()]

    if path == "/seek":
        # uWSGI's tell() and, on a body read whole, seek().
        seen = {"first": inp.read(3).decode(), "tell": inp.tell()}
        try:
            seen["from"] = inp.seek(int(q.get("to", 0)), int(q.get("whence", 0)))
            seen["then"] = inp.read().decode()
            seen["tell_after"] = inp.tell()
        except OSError as e:
            seen["error"] = str(e)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(seen).encode()]

    if path == "/file-wrapper-attributes":
        import io
        f = io.BytesIO(b"x")
        wrapper = environ["wsgi.file_wrapper"](f, 1234)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"filelike": wrapper.filelike is f, "blksize": wrapper.blksize}).encode()]

    if path == "/write-then-file":
        # Two write() calls, then a file: all of each, in that order.
        w = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        w(b"AAA")
        w(b"BBB")
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))

    if path == "/write-in-generator":
        # write() called while the returned generator runs.
        def gen():
            w = start_response("200 OK", [("Content-Type", "text/plain")])
            w(b"A")
            yield b"B"
            w(b"C")
            yield b"D"
        return gen()

    if path == "/start-twice-late":
        # start_response again, without exc_info, after the body began.
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first"
            start_response("500 Oops", [("Content-Type", "text/plain")])
            yield b"second"
        return gen()

    if path == "/plus-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "+2")])
        return [b"ok"]

    if path == "/flags":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({k: environ[k] for k in ("wsgi.multithread", "wsgi.multiprocess")}).encode()]

    if path == "/ignore-body-kept":
        # Ignores the body and keeps the environ (and so wsgi.input) alive,
        # as a reference cycle does until Python's collector runs (Flask's
        # abort() on a POST makes one).
        KEPT.append(environ)
        del KEPT[:-4]
        start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("Content-Length", "7")])
        return [b"ignored"]

    if path == "/ignore-body":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
        return [b"ignored"]

    if path == "/trailer-and-lists":
        # Trailer is end-to-end (RFC 9110); headers as two-item lists, as
        # Gunicorn takes them.
        start_response("200 OK", [["Content-Type", "text/plain"], ("Trailer", "X-Checksum")])
        return [b"fine"]

    if path == "/iter-raises":
        class Body:
            def __iter__(self):
                raise RuntimeError("deliberate failure in __iter__")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    if path == "/hop":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4"), ("Connection", "close"),
                                  ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked")])
        return [b"fine"]

    if path == "/raise":
        raise RuntimeError("deliberate failure in the app")

    if path == "/raise-late":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            raise RuntimeError("deliberate failure after the first chunk")
        return gen()

    if path == "/not-latin1":
        start_response("200 OK", [("X-Fine", "yes"), ("X-Wide", "caf\u0100 au lait")])
        return [b"never"]

    if path == "/no-start":
        return [b"body without start_response"]

    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str is not bytes"]

    if path == "/short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return [b"only ten b"]

    if path == "/short-streamed":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
            yield b"only ten b"
            yield b""
        return gen()

    if path == "/long":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"12345", b"67890"]

    if path == "/big":
        # A generated response of `mb` MiB, no Content-Length (chunked).
        mb = int(q.get("mb", 1))
        block = b"x" * (1 << 20)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (block for _ in range(mb))

    if path == "/blocks":
        # `n` generated blocks of `kb` KiB each, no Content-Length (chunked).
        block = b"x" * (int(q.get("kb", 64)) << 10)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (block for _ in range(int(q.get("n", 1000))))

    if path == "/slow":
        # Sleeps `first` seconds before answering, then `gap` between chunks.
        time.sleep(float(q.get("first", 0)))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"a"
            time.sleep(float(q.get("gap", 0)))
            yield b"b"
        return gen()

    if path == "/numbered":
        # `n` bytes that begin with the request's number `i`, after a pause
        # long enough that the response waits for the batch.
        time.sleep(0.0002)
        body = q.get("i", "0").encode().ljust(int(q.get("n", 100)), b".")
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    if path == "/bigone":
        # One bytes object of `mb` MiB, with its length.
        body = b"y" * (int(q.get("mb", 1)) << 20)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    if path == "/block":
        # Waits until /release is served on another connection.
        ok = RELEASE.wait(int(q.get("timeout", 20)))
        RELEASE.clear()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"released" if ok else b"timed out"]

    if path == "/release":
        RELEASE.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    if path == "/file":
        # wsgi.file_wrapper returned as is: the server reads the descriptor.
        import os
        import tempfile
        name = os.path.join(tempfile.gettempdir(), f"oxgate-bfile-{os.getpid()}")
        size = int(q.get("size", 100000))
        with open(name, "wb") as f:
            f.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
        f = open(name, "rb")
        skip = int(q.get("skip", 0))
        if skip:
            f.read(skip)
        headers = [("Content-Type", "application/octet-stream")]
        if "cl" in q:
            headers.append(("Content-Length", q["cl"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 4096)

    if path == "/nolength":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"one-item-list"]

    if path == "/thread":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]

    if path == "/print":
        print("hello from the app on stdout")
        environ["wsgi.errors"].write("hello from wsgi.errors\n")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"printed"]

    if path == "/status":
        # A status with the length and body an app might wrongly give it
        # (a 304 keeps the GET's length; a 204 with a body).
        code = environ.get("QUERY_STRING") or "200"
        start_response(f"{code} X", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/bare-status":
        # The three digits alone, as apps written against Gunicorn send it.
        start_response(environ.get("QUERY_STRING") or "200", [("Content-Type", "text/plain")])
        return [b"bare"]
    if path == "/sys":
        import sys
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"executable": sys.executable, "prefix": sys.prefix, "path": sys.path,
                            "argv": sys.argv}).encode()]

    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no route"]
