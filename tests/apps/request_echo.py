"""Answers with the request as the server parsed it, as JSON: the method,
the raw target, the path and query, the protocol, every HTTP_* variable and
CONTENT_TYPE/CONTENT_LENGTH, and the body read whole. The Gunicorn request
corpus (test_http_request_corpus.py) compares these with Gunicorn's parse."""
import json


def application(environ, start_response):
    body = environ["wsgi.input"].read()
    headers = {k: v for k, v in environ.items()
               if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    out = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "request_uri": environ.get("REQUEST_URI"),
        "path": environ["PATH_INFO"],
        "query": environ.get("QUERY_STRING", ""),
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": headers,
        "body": body.decode("latin-1"),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
