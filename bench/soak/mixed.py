"""The soak's app (bench/soak.sh): a hello at /, the Flask app of the tests
under /flask, an upload that is read and hashed at /upload, and a streamed
response at /stream."""
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "apps"))
from flask_app import app as flask_app  # noqa: E402


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/flask"):
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/flask", path[len("/flask"):] or "/"
        return flask_app(environ, start_response)
    if path == "/upload":
        digest = hashlib.sha256(environ["wsgi.input"].read()).hexdigest().encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(digest)))])
        return [digest]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"%d\n" % i for i in range(50))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello world\n"]
