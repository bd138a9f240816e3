"""Options for running behind a proxy, for WSGI and ASGI apps alike
(uvicorn's names): --root-path, --proxy-headers with --forwarded-allow-ips,
and --limit-concurrency."""
import socket

import pytest
import requests

from helpers import APPS, VENV, free_port, nginx_serving, wait_for

WSGI_APP = """
import json
def application(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in ("SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR", "REMOTE_PORT")}
                      | {"scheme": environ["wsgi.url_scheme"], "wsgi.url_scheme": environ["wsgi.url_scheme"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


@pytest.fixture
def wsgi_app(tmp_path):
    p = tmp_path / "seen.py"
    p.write_text(WSGI_APP)
    return str(p)


def asgi(serve, *args):
    return serve("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app", *args)


def test_root_path(serve, wsgi_app):
    s = serve("--wsgi-file", wsgi_app, "--root-path", "/api/")
    seen = requests.get(s.url + "/items").json()
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/api", "/items")
    s = asgi(serve, "--root-path", "/api")
    scope = requests.get(s.url + "/scope").json()
    assert (scope["root_path"], scope["path"]) == ("/api", "/api/scope")
    # raw_path carries the prefix too, as uvicorn's does; also before a
    # target that begins with it (the path has it twice then, as uvicorn's).
    assert scope["raw_path"] == "/api/scope"
    scope = requests.get(s.url + "/api/scope%20x").json()
    assert (scope["path"], scope["raw_path"]) == ("/api/api/scope x", "/api/api/scope%20x")



def test_root_path_unstripped_splits_the_prefix_off(serve, wsgi_app):
    """--root-path-unstripped: the proxy passes the prefix on, so a path
    under it is split there, a whole segment at a time, for WSGI and ASGI
    apps alike."""
    s = serve("--wsgi-file", wsgi_app, "--root-path", "/api", "--root-path-unstripped")
    for path, want in [("/api/items", ("/api", "/items")), ("/api", ("/api", "")),
                       ("/apiary", ("/api", "/apiary"))]:
        seen = requests.get(s.url + path).json()
        assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == want, path
    s = asgi(serve, "--root-path", "/api", "--root-path-unstripped")
    scope = requests.get(s.url + "/api/scope%20x").json()
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", "/api/scope x", "/api/scope%20x")

def test_proxy_headers_from_a_trusted_proxy(serve, wsgi_app):
    forwarded = {"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Proto": "https"}
    s = serve("--wsgi-file", wsgi_app, "--proxy-headers")
    seen = requests.get(s.url, headers=forwarded).json()
    assert (seen["REMOTE_ADDR"], seen["scheme"]) == ("203.0.113.9", "https")
    # A hop with its port, as Azure and IIS ARR send it: the port is the
    # client's, as uvicorn reads it.
    seen = requests.get(s.url, headers={"X-Forwarded-For": "203.0.113.9:5555"}).json()
    assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("203.0.113.9", "5555")
    # A client's own Forwarded, which proxies pass on, names nothing: read,
    # it let any client choose its address behind nginx (as uvicorn,
    # Gunicorn and hypercorn, oxgate reads X-Forwarded-* alone).
    seen = requests.get(s.url, headers={"Forwarded": 'for="[2001:db8::7]:4711";proto=https',
                                        "X-Forwarded-Proto": "http"}).json()
    assert (seen["REMOTE_ADDR"], seen["scheme"]) == ("127.0.0.1", "http")
    s = asgi(serve, "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8,127.0.0.0/8")
    scope = requests.get(s.url + "/scope", headers=forwarded).json()
    assert (scope["client"], scope["scheme"]) == (["203.0.113.9", 0], "https")


def test_proxy_headers_forwarded_reads_rfc_7239_behind_real_nginx(serve, wsgi_app, tmp_path):
    """--proxy-headers=forwarded reads the Forwarded header nginx sets (the
    recipe that appends to what came in), walking it from the right as
    X-Forwarded-For is walked; X-Forwarded-* are not read then. The
    default reads X-Forwarded-* alone: the same nginx's Forwarded, and a
    client's own, name nothing."""
    s = serve("--wsgi-file", wsgi_app, "--proxy-headers=forwarded", "--forwarded-allow-ips", "127.0.0.1")
    plain = serve("--wsgi-file", wsgi_app, "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")
    locations = "".join(f"""
      location /{name}/ {{ proxy_pass http://127.0.0.1:{srv.port}/; proxy_bind 127.0.0.1;
        proxy_set_header Forwarded "$http_forwarded, for=$remote_addr;proto=$scheme"; }}"""
                        for name, srv in (("fwd", s), ("plain", plain)))
    with nginx_serving(tmp_path, locations) as port:
        def seen(name, headers):
            import http.client
            import json
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=("127.0.0.5", 0))
            c.request("GET", f"/{name}/", headers=headers)
            r = c.getresponse()
            assert r.status == 200, r.read()
            return json.loads(r.read())

        got = seen("fwd", {})
        assert (got["REMOTE_ADDR"], got["wsgi.url_scheme"]) == ("127.0.0.5", "http")
        # The client's own claims (a Forwarded of its own, an
        # X-Forwarded-For): the hop nginx added is the first untrusted one.
        got = seen("fwd", {"Forwarded": "for=6.6.6.6;proto=https", "X-Forwarded-For": "7.7.7.7",
                           "X-Forwarded-Proto": "https"})
        assert (got["REMOTE_ADDR"], got["wsgi.url_scheme"]) == ("127.0.0.5", "http")
        # One that does not parse is not read at all (nor the hop after it).
        got = seen("fwd", {"Forwarded": 'for="6.6.6.6'})
        assert got["REMOTE_ADDR"] == "127.0.0.1"
        got = seen("plain", {"Forwarded": "for=6.6.6.6;proto=https"})
        assert (got["REMOTE_ADDR"], got["wsgi.url_scheme"]) == ("127.0.0.1", "http")
    # Through a chain of trusted proxies, the client is the element left of
    # them, with its port and scheme.
    got = requests.get(s.url, headers={
        "Forwarded": 'for=6.6.6.6, for="[2001:db8::7]:4711";proto=https, for=127.0.0.1;proto=http',
        "X-Forwarded-For": "7.7.7.7"}).json()
    assert (got["REMOTE_ADDR"], got["REMOTE_PORT"], got["wsgi.url_scheme"]) == ("2001:db8::7", "4711", "https")


def test_proxy_headers_are_ignored_unless_asked_and_trusted(serve, wsgi_app):
    """Without --proxy-headers the client's address stays the socket's; the
    scheme is X-Forwarded-Proto's from a trusted proxy (loopback), as
    Gunicorn and uvicorn read it by default: behind nginx ending TLS on the
    same host, a Django that redirects to https looped for ever. An
    untrusted address, or `--secure-scheme-header none`, leaves it http."""
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    s = serve("--wsgi-file", wsgi_app)
    seen = requests.get(s.url, headers=forwarded).json()
    assert (seen["REMOTE_ADDR"], seen["scheme"]) == ("127.0.0.1", "https")
    # (With RFC 7239's Forwarded read, X-Forwarded-Proto is not: one family
    # is read, never both.)
    for off in (("--proxy-headers", "--forwarded-allow-ips", "10.0.0.1"), ("--secure-scheme-header", "none"),
                ("--proxy-headers=forwarded",)):
        s = serve("--wsgi-file", wsgi_app, *off)
        seen = requests.get(s.url, headers=forwarded).json()
        assert (seen["REMOTE_ADDR"], seen["scheme"]) == ("127.0.0.1", "http"), off


def test_proxy_headers_on_a_unix_socket_and_from_ipv6_loopback_as_uvicorn(serve, wsgi_app, tmp_path):
    """`*` trusts a unix socket's peer too (nginx in front on a socket
    file, as FastAPI's docs deploy it; it was never trusted), and the
    default trusts ::1 beside 127.0.0.1, as uvicorn and Gunicorn do."""
    import json
    sock = tmp_path / "app.sock"
    headers = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"

    def over_unix():
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(str(sock))
            c.sendall(f"GET / HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n".encode())
            out = b""
            while chunk := c.recv(65536):
                out += chunk
        return json.loads(out.split(b"\r\n\r\n", 1)[1])
    for allow, want in [("*", ("203.0.113.9", "https")), ("127.0.0.1", ("", "http"))]:
        s = serve("--http-socket", str(sock), "--wsgi-file", wsgi_app, "--proxy-headers",
                  "--forwarded-allow-ips", allow, socket_arg=False, wait=False)
        wait_for(lambda: unix_listens(sock), what="the socket listening")
        seen = over_unix()
        assert (seen["REMOTE_ADDR"] or "", seen["scheme"]) == want, (allow, seen)
        s.stop()
    port = free_port()
    serve("--http-socket", f"[::1]:{port}", "--wsgi-file", wsgi_app, "--proxy-headers", socket_arg=False, wait=False)
    wait_for(lambda: requests_ok(f"http://[::1]:{port}/"), what="listening on ::1")
    seen = requests.get(f"http://[::1]:{port}/", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10).json()
    assert seen["REMOTE_ADDR"] == "203.0.113.9", seen


def unix_listens(path):
    with socket.socket(socket.AF_UNIX) as c:
        try:
            c.connect(str(path))
            return True
        except OSError:
            return False


def requests_ok(url):
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def test_a_bad_trusted_list_is_a_clear_error(serve, wsgi_app):
    from helpers import run_fail
    code, out = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", wsgi_app, "--proxy-headers",
                   "--forwarded-allow-ips", "10.0.0.0/40")
    assert code != 0 and "--forwarded-allow-ips" in out and "prefix" in out
    code, out = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", wsgi_app, "--proxy-headers=rfc7239")
    assert code != 0 and "--proxy-headers" in out and "forwarded" in out


def test_limit_concurrency(serve):
    s = asgi(serve, "--processes", "1", "--limit-concurrency", "2")
    streams = []
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"tick" in c.recv(4096)
        streams.append(c)
    r = requests.get(s.url + "/refused-here")
    assert r.status_code == 503
    # Logged and counted as uvicorn logs it: load shed is seen (it was not).
    s.wait_log("GET /refused-here => generated 20 bytes")
    assert "(HTTP/1.1 503)" in [l for l in s.log().splitlines() if "/refused-here" in l][0]
    streams.pop().close()
    wait_for(lambda: requests.get(s.url + "/").status_code == 200, what="a slot freed")
    for c in streams:
        c.close()
