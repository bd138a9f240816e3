"""What a request over TLS or HTTP/2 looks like to a WSGI app: the
environ's scheme, protocol and TLS variables as JSON, a streamed upload's
length and SHA-256, and a response streamed in pieces."""
import hashlib
import json

SHOWN = ("HTTPS", "wsgi.url_scheme", "SERVER_PROTOCOL", "REQUEST_SCHEME", "HTTP_HOST", "SERVER_NAME",
         "SERVER_PORT", "SSL_PROTOCOL", "SSL_CIPHER", "SSL_CLIENT_VERIFY", "SSL_CLIENT_S_DN", "SSL_CLIENT_CERT",
         "SSL_CLIENT_I_DN", "SSL_CLIENT_M_SERIAL", "SSL_CLIENT_V_START", "SSL_CLIENT_V_END", "SSL_TLS_SNI",
         "SSL_CLIENT_CERT_CHAIN_0", "SSL_CLIENT_CERT_CHAIN_1", "HTTPS_DN", "HTTPS_CLIENT_CERTIFICATE", "HTTPS_CC")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        digest, size = hashlib.sha256(), 0
        while True:
            chunk = environ["wsgi.input"].read(65536)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{size} {digest.hexdigest()}".encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"piece %d\n" % i for i in range(1000))
    body = json.dumps({k: environ.get(k) for k in SHOWN}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
