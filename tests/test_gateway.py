"""The uwsgi protocol: a raw client for every malformed-packet class, and
real nginx in front (uwsgi_pass over TCP and unix sockets) giving the same
answers as direct HTTP."""
import hashlib
import json
import os
import shutil
import socket
import struct
import sys
import subprocess
import time
import urllib.parse

import pytest
import requests

from conftest import APPS, BIN, free_port

ECHO = str(APPS / "echo.py")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def packet(vars, m1=0, m2=0):
    block = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                     for k, v in ((k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                                  for k, v in vars))
    return struct.pack("<BHB", m1, len(block), m2) + block


def uwsgi_request(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
    return out


def cgi(method="GET", path="/", query="", body=b"", extra=()):
    v = [("REQUEST_METHOD", method), ("PATH_INFO", path), ("QUERY_STRING", query),
         ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", path + ("?" + query if query else "")),
         ("REMOTE_ADDR", "127.0.0.1"), ("SERVER_PORT", "80"), ("SERVER_NAME", ""),
         ("HTTP_HOST", "example.com:8080"), ("CONTENT_LENGTH", str(len(body)) if body else "")]
    return packet(v + list(extra)) + body


@pytest.fixture
def both(serve):
    """oxgate with a uwsgi socket and an HTTP socket, same app."""
    up = free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "2")
    s.uwsgi_port = up
    return s


def test_uwsgi_request_and_normalisation(both):
    out = uwsgi_request(both.uwsgi_port, cgi("POST", "/a b", "x=1", b"hello",
                                             extra=[("HTTP_CONTENT_LENGTH", "5"), ("HTTP_X_A", "1"), ("HTTP_X_A", "2"),
                                                    ("HTTP_COOKIE", "a=1"), ("HTTP_COOKIE", "b=2"),
                                                    ("UWSGI_FILE", "/tmp/evil.py"), ("HTTPS", "on")]))
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in head.lower()  # never chunked on a gateway socket
    seen = json.loads(body)
    assert seen["method"] == "POST" and seen["path"] == "/a b" and seen["query"] == "x=1"
    assert seen["body_len"] == 5 and seen["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert seen["x_headers"] == {"HTTP_X_A": "1, 2"}
    assert seen["cookie"] == "a=1; b=2"
    assert seen["server_name"] == "example.com"  # empty SERVER_NAME: Host's name
    assert seen["scheme"] == "https"
    assert seen["has_http_content_length"] is False
    assert "evil" not in body.decode()


def test_environ_has_only_what_the_request_gave(both):
    """A bare packet: the environ has the variables PEP 3333 requires and
    nothing made up (no REMOTE_ADDR, HTTP_HOST, REQUEST_URI... left empty)."""
    out = uwsgi_request(both.uwsgi_port, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/keys")]))
    keys = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert [k for k in keys if not k.startswith("wsgi.")] == [
        "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT",
        "SERVER_PROTOCOL"]


def test_uwsgi_large_body_streams(both):
    data = os.urandom(3 * 1024 * 1024 + 5)
    seen = json.loads(uwsgi_request(both.uwsgi_port, cgi("PUT", "/big", body=data)).split(b"\r\n\r\n", 1)[1])
    assert seen["body_len"] == len(data) and seen["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_ping(both):
    assert uwsgi_request(both.uwsgi_port, packet([], m1=100)) == bytes([100, 0, 0, 1])


@pytest.mark.parametrize("name,data,logged", [
    ("unknown modifier", packet([("A", "1")], m1=5), "modifier1 5 refused"),
    ("http to a uwsgi socket", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP was sent to a uwsgi socket"),
    ("var past datasize", struct.pack("<BHB", 0, 6, 0) + struct.pack("<H", 1) + b"A" + struct.pack("<H", 9) + b"x",
     "runs past the vars block"),
    ("zero-length key", struct.pack("<BHB", 0, 4, 0) + b"\x00\x00\x00\x00", "has an empty name"),
    ("oversized vars", packet([("HTTP_COOKIE", "x" * 10000)]), "is over --buffer-size"),
    ("ends inside a length", struct.pack("<BHB", 0, 1, 0) + b"\x01", "runs past the vars block"),
])
def test_malformed_packets(serve, name, data, logged):
    up = free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "1", "--buffer-size", "8192")
    out = uwsgi_request(up, data)
    assert not out.startswith(b"HTTP/1.1 200")
    s.wait_log(logged)
    assert uwsgi_request(up, cgi()).startswith(b"HTTP/1.1 200 OK")  # still serving


def test_truncated_header_times_out(serve):
    up = free_port()
    serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "1", "--socket-timeout", "1")
    t0 = time.monotonic()
    assert uwsgi_request(up, b"\x00\x10", timeout=10) == b""  # closed, not left hanging
    assert time.monotonic() - t0 < 8


NGINX_CONF = """
worker_processes 1;
user root;
error_log {d}/logs/error.log info;
pid {d}/logs/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fcgi; uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  client_max_body_size 100m;
  upstream ox_http {{ server 127.0.0.1:{http}; keepalive 8; }}
  upstream ox_fcgi {{ server 127.0.0.1:{fcgi}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{port};
    location /u/ {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up}; }}
    location /unix/ {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{sock}; }}
    location /m30/ {{ include /etc/nginx/uwsgi_params; uwsgi_modifier1 30; uwsgi_param SCRIPT_NAME /m30;
                      uwsgi_pass 127.0.0.1:{up}; }}
    location /s/ {{ include /etc/nginx/scgi_params; scgi_pass 127.0.0.1:{scgi}; }}
    location /f/ {{ include /etc/nginx/fastcgi_params; fastcgi_pass 127.0.0.1:{fcgi}; }}
    location /fk/ {{ include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass ox_fcgi; }}
    location /h/ {{ proxy_pass http://ox_http; proxy_http_version 1.1; proxy_set_header Connection "";
                    proxy_set_header Host $host; }}
  }}
}}
"""


def start_nginx(d, port, conf, **popen):
    """nginx run from directory `d` with `conf`, once it listens on `port`."""
    (d / "logs").mkdir(parents=True)
    (d / "tmp").mkdir()
    (d / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "logs/error.log"),
                             "-g", "daemon off;"], **popen)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc


@pytest.fixture
def nginx_front(serve, tmp_path):
    up, sock, sc, fc = free_port(), tmp_path / "ox.sock", free_port(), free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--socket", str(sock),
              "--scgi-socket", f"127.0.0.1:{sc}", "--fastcgi-socket", f"127.0.0.1:{fc}",
              "--chmod-socket", "666", "--processes", "2")
    port = free_port()
    d = tmp_path / "nginx"
    proc = start_nginx(d, port, NGINX_CONF.format(d=d, port=port, up=up, sock=sock, http=s.port, scgi=sc, fcgi=fc),
                       stderr=subprocess.PIPE)
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(15)
    proc.wait(10)


def same_answers(base, front, split=False):
    """The echo app, reached at base+front, sees each request as sent. With
    `split`, the front end may put part of the path in SCRIPT_NAME (Apache,
    lighttpd); otherwise it all arrives in PATH_INFO."""
    data = bytes(range(256)) * 4000 + os.urandom(1000)
    cases = [
        ("get", dict(method="GET", url="/p%20q/%C3%A9?a=1&b=%20")),
        ("post", dict(method="POST", url="/form", data=data, headers={"Content-Type": "application/x-bin"})),
        ("headers", dict(method="GET", url="/h", headers={"X-Custom": "v1", "Cookie": "a=1; b=2"})),
        ("upload", dict(method="PUT", url="/up", data=b"z" * (10 << 20))),
    ]
    for name, kw in cases:
        url = kw.pop("url")
        r = requests.request(url=base + front + url, timeout=60, **kw)
        assert r.status_code == 200, (name, r.status_code, r.text[:500])
        seen = r.json()
        assert seen["method"] == kw["method"]
        # PEP 3333: the decoded path's bytes, as latin-1
        raw = urllib.parse.unquote_to_bytes(url.split("?")[0]).decode("latin-1")
        path = seen["script_name"] + seen["path"] if split else seen["path"]
        assert path == f"{front}{raw}", (name, seen)
        assert seen["query"] == (url.split("?", 1)[1] if "?" in url else "")
        body = kw.get("data", b"")
        assert seen["body_len"] == len(body) and seen["body_sha256"] == hashlib.sha256(body).hexdigest(), name
        assert not seen["has_http_content_length"]
        if name == "headers":
            assert seen["x_headers"]["HTTP_X_CUSTOM"] == "v1" and seen["cookie"] == "a=1; b=2"
        if name == "post":
            assert seen["content_type"] == "application/x-bin"
    r = requests.get(base + front + "/stream", timeout=30)
    assert r.status_code == 200 and r.text == "".join(f"chunk {i}\n" for i in range(5))
    r = requests.get(base + front + "/file", timeout=30)
    whole = bytes(range(251)) * ((3 << 20) // 251 + 1)
    assert r.status_code == 200 and r.content == whole[7:]


@pytest.mark.parametrize("front", ["/u", "/unix", "/s", "/f", "/fk", "/h"])
def test_same_answers_through_nginx(nginx_front, front):
    same_answers(nginx_front, front)


def test_modifier1_30_strips_script_name(nginx_front):
    seen = requests.get(nginx_front + "/m30/app/x").json()
    assert seen["script_name"] == "/m30" and seen["path"] == "/app/x"


def test_seed_config_behind_nginx(tmp_path):
    """shared/seeds/000: its uwsgi.ini and its nginx uwsgi_pass, ports picked
    at run time and the app made up (the article's is not shown)."""
    up, port, stats = free_port(), free_port(), free_port()
    app = tmp_path / "main.py"
    app.write_text("def app(environ, start_response):\n"
                   "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [b'seed ok']\n")
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(f"""[uwsgi]
socket = 127.0.0.1:{up}
chdir = {tmp_path}/
wsgi-file = main.py
processes = 4
stats = 127.0.0.1:{stats}
daemonize = {tmp_path}/uwsgiServer.log
pidfile = {tmp_path}/uwsgi.pid
vacuum = true
log-maxsize = 50000000
disable-logging = true
callable = app
""")
    started = subprocess.run([BIN, "--ini", str(ini)], capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    d = tmp_path / "nginx"
    nginx = start_nginx(d, port, f"""
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; uwsgi_temp_path {d}/tmp;
  server {{ listen 127.0.0.1:{port};
    location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up}; }} }} }}
""")
    try:
        r = None
        for _ in range(200):
            try:
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        assert r is not None and r.text == "seed ok"
        assert "not implemented" not in started.stderr  # every option of the seed is
        log = (tmp_path / "uwsgiServer.log").read_text()
        assert "serving main.py:app on uwsgi://127.0.0.1" in log
        assert "GET / =>" not in log  # disable-logging
        with socket.create_connection(("127.0.0.1", stats), timeout=5) as c:
            doc = json.loads(b"".join(iter(lambda: c.recv(65536), b"")))
        assert len(doc["workers"]) == 4 and sum(w["requests"] for w in doc["workers"]) >= 1
    finally:
        nginx.terminate()
        nginx.wait(10)
        subprocess.run([BIN, "--stop", str(tmp_path / "uwsgi.pid")], timeout=10)
        deadline = time.monotonic() + 20
        while (tmp_path / "uwsgi.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def scgi_packet(headers, body=b""):
    block = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in headers)
    return str(len(block)).encode() + b":" + block + b"," + body


def test_scgi_request_and_status_header(serve):
    sp = free_port()
    serve("--wsgi-file", ECHO, "--scgi-socket", f"127.0.0.1:{sp}", "--processes", "1")
    out = uwsgi_request(sp, scgi_packet([("CONTENT_LENGTH", "5"), ("SCGI", "1"), ("REQUEST_METHOD", "POST"),
                                         ("REQUEST_URI", "/a%20b?q=1"), ("QUERY_STRING", "q=1"),
                                         ("SERVER_PROTOCOL", "HTTP/1.1"), ("HTTP_HOST", "h")], b"hello"))
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"Status: 200 OK\r\n")  # a CGI response
    seen = json.loads(body)
    assert seen["path"] == "/a b"  # no PATH_INFO sent: from REQUEST_URI, decoded
    assert seen["body_len"] == 5 and seen["server_name"] == "h"


@pytest.mark.parametrize("data,logged", [
    (b"012:x", "not a plain decimal"),
    (b"5:ab\0cd;", "does not end with"),
    (scgi_packet([("SCGI", "1"), ("CONTENT_LENGTH", "0")]), "first header must be CONTENT_LENGTH"),
    (scgi_packet([("CONTENT_LENGTH", "0")]), "SCGI=1 is missing"),
    (b"GET / HTTP/1.1\r\n\r\n", "HTTP was sent to an SCGI socket"),
])
def test_scgi_malformed(serve, data, logged):
    sp = free_port()
    s = serve("--wsgi-file", ECHO, "--scgi-socket", f"127.0.0.1:{sp}", "--processes", "1")
    assert not uwsgi_request(sp, data).startswith(b"Status: 200")
    s.wait_log(logged)


# FastCGI: records (version, type, id, length, padding), pairs, streams.
def rec(kind, rid, content=b"", pad=0):
    return struct.pack(">BBHHBB", 1, kind, rid, len(content), pad, 0) + content + b"\0" * pad


def pairs(items):
    out = b""
    for k, v in items:
        for n in (len(k), len(v)):
            out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
        out += k.encode() + v.encode()
    return out


def fcgi_request(rid, params, body=b"", keep=False, pad=0):
    out = rec(1, rid, struct.pack(">HB5x", 1, 1 if keep else 0))
    out += rec(4, rid, pairs(params), pad) + rec(4, rid)
    if body:
        out += rec(5, rid, body, pad)
    return out + rec(5, rid)


def read_records(sock, until_end_requests=1, timeout=10):
    sock.settimeout(timeout)
    buf, recs, ends = b"", [], 0
    while ends < until_end_requests:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 8:
            ver, kind, rid, clen, plen, _ = struct.unpack(">BBHHBB", buf[:8])
            if len(buf) < 8 + clen + plen:
                break
            recs.append((kind, rid, buf[8:8 + clen]))
            buf = buf[8 + clen + plen:]
            if kind in (3, 10, 11):
                ends += 1
    return recs


def stdout_of(recs, rid):
    return b"".join(c for k, r, c in recs if k == 6 and r == rid)


PARAMS = [("REQUEST_METHOD", "POST"), ("SCRIPT_NAME", "/fx/a"), ("REQUEST_URI", "/fx/a?z=1"),
          ("DOCUMENT_URI", "/fx/a"), ("QUERY_STRING", "z=1"), ("CONTENT_LENGTH", "5"), ("CONTENT_TYPE", ""),
          ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "f"), ("SERVER_PORT", "80"), ("HTTP_X_A", "b")]


@pytest.fixture
def fcgi(serve):
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1")
    s.fcgi_port = fp
    return s


def test_fastcgi_request_keep_conn_and_padding(fcgi):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        for i, pad in enumerate((0, 3)):  # two requests on one kept connection
            c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True, pad=pad))
            recs = read_records(c)
            out = stdout_of(recs, 1)
            assert out.startswith(b"Status: 200 OK\r\n")
            seen = json.loads(out.split(b"\r\n\r\n", 1)[1])
            # nginx's fastcgi_params send SCRIPT_NAME = the whole path and no
            # PATH_INFO: the app is mounted at the root
            assert seen["path"] == "/fx/a" and seen["script_name"] == ""
            assert seen["body_len"] == 5 and seen["query"] == "z=1" and seen["x_headers"] == {"HTTP_X_A": "b"}
            kinds = [k for k, r, cnt in recs]
            assert kinds[-2:] == [6, 3] and recs[-2][2] == b""  # empty STDOUT, then END_REQUEST
            assert recs[-1][2] == b"\0" * 8  # appStatus 0, REQUEST_COMPLETE


def test_fastcgi_get_values_and_unknown_type(fcgi):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        c.sendall(rec(9, 0, pairs([("FCGI_MAX_CONNS", ""), ("FCGI_MAX_REQS", ""), ("FCGI_MPXS_CONNS", "")])))
        (kind, rid, content), = read_records(c)
        assert kind == 10 and rid == 0
        assert b"\x0f\x01FCGI_MPXS_CONNS0" in content and b"\x0d\x01FCGI_MAX_REQS1" in content
        c.sendall(rec(42, 0))
        (kind, rid, content), = read_records(c)
        assert kind == 11 and content[0] == 42


def test_fastcgi_roles_and_multiplexing(fcgi):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        c.sendall(rec(1, 7, struct.pack(">HB5x", 2, 1)))  # AUTHORIZER, keep
        (kind, rid, content), = read_records(c)
        assert (kind, rid, content[4]) == (3, 7, 3)  # UNKNOWN_ROLE
        # a second request begun before the first's params are complete
        c.sendall(rec(1, 1, struct.pack(">HB5x", 1, 1)) + rec(4, 1, pairs(PARAMS)) + rec(1, 2, struct.pack(">HB5x", 1, 1)))
        (kind, rid, content), = read_records(c)
        assert (kind, rid, content[4]) == (3, 2, 1)  # CANT_MPX_CONN for id 2
        c.sendall(rec(4, 1) + rec(5, 1, b"hello") + rec(5, 1))
        recs = read_records(c)
        assert stdout_of(recs, 1).startswith(b"Status: 200 OK")
        # an abort before the params end: END_REQUEST, and the connection lives on
        c.sendall(rec(1, 3, struct.pack(">HB5x", 1, 1)) + rec(2, 3))
        (kind, rid, content), = read_records(c)
        assert (kind, rid) == (3, 3)


@pytest.mark.parametrize("data,logged", [
    (struct.pack(">BBHHBB", 2, 1, 1, 8, 0, 0) + b"\0" * 8, "version 2"),
    (rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, b"\x05\x05ab") + rec(4, 1), "runs past its stream"),
    (rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, b"\x00\x01x") + rec(4, 1), "empty name"),
    (rec(1, 1, b"\0\1"), "not 8 bytes"),
    (b"GET / HTTP/1.1\r\n\r\n", "HTTP was sent to a FastCGI socket"),
])
def test_fastcgi_malformed(fcgi, data, logged):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port), timeout=10) as c:
        c.sendall(data)
        c.settimeout(10)
        assert b"Status: 200" not in c.recv(65536)
    fcgi.wait_log(logged)


def test_fastcgi_oversized_params(serve):
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--buffer-size", "8192")
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        c.sendall(rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, pairs([("HTTP_COOKIE", "x" * 9000)])) + rec(4, 1))
        assert c.recv(65536) == b""
    s.wait_log("over --buffer-size 8192")


@pytest.mark.skipif(not shutil.which("cgi-fcgi"), reason="cgi-fcgi (libfcgi-bin) is not installed")
def test_cgi_fcgi_client(fcgi):
    env = dict(os.environ, REQUEST_METHOD="GET", SCRIPT_NAME="/", PATH_INFO="/hello", QUERY_STRING="a=1",
               SERVER_NAME="cgi", SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1", HTTP_X_FROM="cgi-fcgi")
    p = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"127.0.0.1:{fcgi.fcgi_port}"], env=env,
                       capture_output=True, timeout=20)
    head, body = p.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"Status: 200 OK")
    seen = json.loads(body)
    assert seen["path"] == "/hello" and seen["query"] == "a=1" and seen["x_headers"]["HTTP_X_FROM"] == "cgi-fcgi"


def mounted_app(tmp_path, name):
    f = tmp_path / f"{name}.py"
    f.write_text("import json\n"
                 "def application(environ, start_response):\n"
                 "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
                 f"    return [json.dumps(['{name}', environ['SCRIPT_NAME'], environ['PATH_INFO']]).encode()]\n")
    return f


def test_mount_with_manage_script_name(serve, tmp_path):
    blog, api = mounted_app(tmp_path, "blog"), mounted_app(tmp_path, "api")
    mounted_app(tmp_path, "root")
    s = serve("--wsgi-file", str(tmp_path / "root.py"), "--mount", f"/blog={blog}", "--mount", "/blog/api=api",
              "--pythonpath", str(tmp_path), "--manage-script-name", "--processes", "1")
    for path, want in [("/blog/x/y", ["blog", "/blog", "/x/y"]), ("/blog", ["blog", "/blog", ""]),
                       ("/blog/api/v1", ["api", "/blog/api", "/v1"]),  # the longest mountpoint wins
                       ("/blogger", ["root", "", "/blogger"]), ("/", ["root", "", "/"])]:
        assert requests.get(s.url + path).json() == want, path
    assert "/blog=" in s.log() and "/blog/api=api:application" in s.log()


def test_mount_chosen_by_script_name_over_uwsgi(serve, tmp_path):
    """nginx's `uwsgi_param SCRIPT_NAME /blog` picks the app; a path no app
    is mounted at, with no default app, is a 404."""
    blog = mounted_app(tmp_path, "blog")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--mount", f"/blog={blog}", "--processes", "1")

    def ask(script, path):
        out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", script), ("PATH_INFO", path),
                                        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", script + path)]))
        head, body = out.split(b"\r\n\r\n", 1)
        return head.split(b" ")[1], body
    assert ask("/blog", "/post/1") == (b"200", json.dumps(["blog", "/blog", "/post/1"]).encode())
    status, body = ask("/other", "/x")
    assert status == b"404" and b"No app is mounted" in body


def site(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    # Both sites call their module "myapp": each must get its own.
    (d / "myapp.py").write_text("import flask\n"
                                "def application(environ, start_response):\n"
                                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                                f"    return [b'{name} ' + environ['wsgi.url_scheme'].encode()]\n")
    return d


def test_vhost_dynamic_apps_behind_nginx(serve, tmp_path):
    """shared/seeds/003: one oxgate started with --vhost and no app, two nginx
    server blocks naming their app with UWSGI_SCRIPT, UWSGI_CHDIR and
    UWSGI_PYHOME (the test venv, where Flask is)."""
    one, two = site(tmp_path, "site1"), site(tmp_path, "site2")
    up, port = free_port(), free_port()
    s = serve("-s", f":{up}", "-M", "-p", "2", "-t", "30", "--limit-as", "512", "-R", "10000", "--vhost")
    d = tmp_path / "nginx"
    blocks = "".join(f"""
  server {{ listen 127.0.0.1:{port}; server_name {name}.example;
    location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up};
      uwsgi_param UWSGI_PYHOME {sys.prefix}; uwsgi_param UWSGI_SCRIPT myapp; uwsgi_param UWSGI_CHDIR {path};
      uwsgi_param UWSGI_SCHEME https; }} }}""" for name, path in (("site1", one), ("site2", two)))
    nginx = start_nginx(d, port, f"""
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; uwsgi_temp_path {d}/tmp; {blocks}
  server {{ listen 127.0.0.1:{port} default_server; location / {{ include /etc/nginx/uwsgi_params;
    uwsgi_pass 127.0.0.1:{up}; }} }} }}
""")
    try:
        for _ in range(3):
            for name in ("site1", "site2"):
                r = requests.get(f"http://127.0.0.1:{port}/", headers={"Host": f"{name}.example"})
                assert (r.status_code, r.text) == (200, f"{name} https"), r.text
        # no UWSGI_SCRIPT and no default app: nothing to serve
        assert requests.get(f"http://127.0.0.1:{port}/", headers={"Host": "other"}).status_code == 404
    finally:
        nginx.terminate()
        nginx.wait(10)
    assert s.log().count("--vhost: loaded the app") <= 4  # once per site and worker, then kept


def test_uwsgi_vars_load_nothing_without_vhost(serve, tmp_path):
    one = site(tmp_path, "site1")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--wsgi-file", ECHO, "--processes", "1")
    out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"),
                                    ("UWSGI_SCRIPT", "myapp"), ("UWSGI_CHDIR", str(one))]))
    assert b'"method": "GET"' in out  # the echo app answered


def test_vhost_load_error_is_a_500(serve, tmp_path):
    up = free_port()
    s = serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")
    out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"),
                                    ("UWSGI_SCRIPT", "no_such_module_here")]))
    assert out.startswith(b"HTTP/1.1 500")
    s.wait_log("cannot load the app for UWSGI_SCRIPT=\"no_such_module_here\"")
