"""For the request log, stats and metrics tests: /status/NNN answers that
status, /sleep/MS sleeps first, /big/N sends N bytes, /print writes to stdout,
stderr and wsgi.errors, /boom raises."""
import sys
import time


def application(environ, start_response):
    parts = environ["PATH_INFO"].strip("/").split("/")
    status, body = "200 OK", b"logged\n"
    if parts[0] == "status":
        status = f"{parts[1]} Whatever"
    elif parts[0] == "sleep":
        time.sleep(int(parts[1]) / 1000)
    elif parts[0] == "big":
        body = b"x" * int(parts[1])
    elif parts[0] == "print":
        print("app stdout line")
        print("app stderr line", file=sys.stderr)
        environ["wsgi.errors"].write("app wsgi.errors line\n")
    elif parts[0] == "boom":
        raise RuntimeError("boom for the log")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
