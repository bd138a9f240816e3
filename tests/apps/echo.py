"""Echoes what the app saw, so answers through different front ends can be
compared field by field."""
import hashlib
import json


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.endswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(5))
    if path.endswith("/file"):
        # A file behind wsgi.file_wrapper, 3 MiB + 1000 bytes, read from
        # offset 7: each front end sends it from the descriptor.
        import os
        import tempfile
        name = os.path.join(tempfile.gettempdir(), "oxgate-echo-file")
        if not os.path.exists(name):
            tmp = f"{name}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(bytes(range(251)) * ((3 << 20) // 251 + 1))
            os.replace(tmp, name)  # the same bytes, whoever writes first
        f = open(name, "rb")
        f.read(7)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    if path.endswith("/keys"):
        body = json.dumps(sorted(environ)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    inp = environ["wsgi.input"]
    h, n = hashlib.sha256(), 0
    while True:
        b = inp.read(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
    seen = {
        "method": environ["REQUEST_METHOD"],
        "script_name": environ.get("SCRIPT_NAME", ""),
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "content_type": environ.get("CONTENT_TYPE", ""),
        "scheme": environ["wsgi.url_scheme"],
        "server_name": environ["SERVER_NAME"],
        "host": environ.get("HTTP_HOST"),
        "x_headers": {k: v for k, v in environ.items() if k.startswith("HTTP_X_")},
        "cookie": environ.get("HTTP_COOKIE", ""),
        "body_len": n,
        "body_sha256": h.hexdigest(),
        "has_http_content_length": "HTTP_CONTENT_LENGTH" in environ,
    }
    body = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                              ("X-Echo", "yes")])
    return [body]
