"""An app for the process-model tests: who served, slow requests, versions."""
import os
import time

# Changed by the reload tests between reloads; read at import.
VERSION = open(os.path.join(os.path.dirname(__file__), "version.txt")).read().strip() \
    if os.path.exists(os.path.join(os.path.dirname(__file__), "version.txt")) else "v0"
LOADED_IN = os.getpid()


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise RuntimeError("raised for the log")
    if path == "/sleep":
        secs = float(environ.get("QUERY_STRING") or "1")
        time.sleep(secs)
    body = f"{os.getpid()} {LOADED_IN} {VERSION}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
