"""The smallest WSGI app: oxgate --http-socket 127.0.0.1:8000 --wsgi-file examples/hello.py"""


def application(environ, start_response):
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
