"""Real web servers in front (nginx, Apache httpd, lighttpd): the app sees each request as if sent directly."""
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse

import pytest
import requests

from helpers import APACHE_MODULES, BEHAVIOUR, BIN, ECHO, apache_serving, free_port, nginx_serving, start_nginx


# nginx: uwsgi_pass over TCP and unix sockets, scgi_pass, fastcgi_pass, proxy_pass.
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
    location /m3x {{ include /etc/nginx/uwsgi_params; uwsgi_modifier1 30; uwsgi_param SCRIPT_NAME /m3x;
                     uwsgi_pass 127.0.0.1:{up}; }}
    location /uh/ {{ include /etc/nginx/uwsgi_params; uwsgi_param HTTP_HOST $http_host; uwsgi_pass 127.0.0.1:{up}; }}
    location /froot/ {{ include /etc/nginx/fastcgi_params; fastcgi_param PATH_INFO $fastcgi_script_name;
                        fastcgi_param SCRIPT_NAME ""; fastcgi_param HTTP_HOST $host;
                        fastcgi_param HTTP_HOST $http_host; fastcgi_pass 127.0.0.1:{fcgi}; }}
    location /s/ {{ include /etc/nginx/scgi_params; scgi_pass 127.0.0.1:{scgi}; }}
    location /f/ {{ include /etc/nginx/fastcgi_params; fastcgi_pass 127.0.0.1:{fcgi}; }}
    location /fk/ {{ include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass ox_fcgi; }}
    location /h/ {{ proxy_pass http://ox_http; proxy_http_version 1.1; proxy_set_header Connection "";
                    proxy_set_header Host $host; }}
  }}
}}
"""


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


def test_limit_post_reaches_the_client_through_nginx_as_413(serve, tmp_path):
    """A body over --limit-post is read and let go after the 413: closed
    with it unread, the connection was reset under nginx, still sending
    it, which answered 502 (uwsgi, SCGI, FastCGI without kept
    connections)."""
    up, sock, sc, fc = free_port(), tmp_path / "ox.sock", free_port(), free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--socket", str(sock),
              "--scgi-socket", f"127.0.0.1:{sc}", "--fastcgi-socket", f"127.0.0.1:{fc}",
              "--chmod-socket", "666", "--processes", "1", "--limit-post", "1000000")
    port = free_port()
    d = tmp_path / "nginx"
    proc = start_nginx(d, port, NGINX_CONF.format(d=d, port=port, up=up, sock=sock, http=s.port, scgi=sc, fcgi=fc),
                       stderr=subprocess.PIPE)
    try:
        for front in ["/u", "/unix", "/s", "/f", "/fk", "/h"]:
            for size in (1_100_000, 5_000_000):
                r = requests.post(f"http://127.0.0.1:{port}{front}/up", data=b"x" * size, timeout=30)
                assert r.status_code == 413, (front, size, r.status_code)
            # And the next request is served.
            assert requests.get(f"http://127.0.0.1:{port}{front}/", timeout=30).status_code == 200, front
    finally:
        proc.send_signal(15)
        proc.wait(10)


@pytest.mark.parametrize("proto", ["fastcgi", "fastcgi-keep-conn", "fastcgi-unix", "uwsgi", "scgi"])
@pytest.mark.parametrize("path", ["/raise-late", "/short-streamed"])
def test_a_response_cut_short_over_a_gateway_protocol_is_cut_at_nginxs_client_too(serve, tmp_path, proto, path):
    """An app that fails mid-body (no Content-Length), or ends short of
    its Content-Length: the connection to nginx is reset, and nginx cuts
    its client's response at once. Closed, nginx took the close as the
    response's end: over FastCGI without kept connections the client
    waited for the promised bytes until nginx's keepalive_timeout (75 s),
    and over each protocol a chunked body ended as if whole. Over a unix
    socket, where no reset can be sent, a record nginx refuses (version
    0) says it to FastCGI's nginx (as php-fpm's killed child does by
    leaving its records unread). curl's 18 is "transfer closed with data
    remaining"."""
    port = free_port()
    option = {"uwsgi": "--socket", "scgi": "--scgi-socket"}.get(proto, "--fastcgi-socket")
    address = str(tmp_path / "ox.sock") if proto.endswith("unix") else f"127.0.0.1:{port}"
    serve("--wsgi-file", BEHAVIOUR, option, address, "--processes", "1")
    params = proto.split("-")[0]
    upstream, target = "", f"{params}_pass {'unix:' if proto.endswith('unix') else ''}{address};"
    if proto == "fastcgi-keep-conn":
        upstream = f"upstream ox {{ server 127.0.0.1:{port}; keepalive 8; }}"
        target = "fastcgi_keep_conn on; fastcgi_pass ox;"
    with nginx_serving(tmp_path, f"location / {{ include /etc/nginx/{params}_params; {target} }}",
                       http=upstream) as front:
        for _ in range(2):
            r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "30",
                                f"http://127.0.0.1:{front}{path}"], capture_output=True, text=True, timeout=60)
            # (Over the unix socket, nginx may read the refused record with
            # the body, before it has passed anything on: it closes its
            # client's connection with nothing then, curl's 52.)
            assert r.returncode == 18 or (proto.endswith("unix") and r.returncode == 52), (r.returncode, r.stderr)
        # The next request is served whole.
        assert requests.get(f"http://127.0.0.1:{front}/status", timeout=30).text == "hello"


def test_modifier1_30_strips_script_name(nginx_front):
    seen = requests.get(nginx_front + "/m30/app/x").json()
    assert seen["script_name"] == "/m30" and seen["path"] == "/app/x"


def test_modifier1_30_strips_whole_segments_only(nginx_front):
    """`location /m3x` also matches /m3xy/z: SCRIPT_NAME /m3x is not over
    it, and PATH_INFO keeps its leading slash (it was "y/z")."""
    seen = requests.get(nginx_front + "/m3xy/z").json()
    assert seen["path"] == "/m3xy/z", seen
    seen = requests.get(nginx_front + "/m3x/z").json()
    assert seen["script_name"] == "/m3x" and seen["path"] == "/z", seen


@pytest.mark.parametrize("front", ["/uh", "/froot"])
def test_params_set_after_the_params_file_override_it(nginx_front, front):
    """The common recipes that follow `include *_params;` with their own
    lines: `HTTP_HOST $http_host` (for the port) and, for an app at the
    root, `PATH_INFO $fastcgi_script_name` with `SCRIPT_NAME ""`. The last
    value counts, as in uWSGI: Host was joined ("a, a:8443", which Django
    refuses with a 400), and the empty SCRIPT_NAME was dropped, so that the
    params file's one stayed and the path was there twice."""
    seen = requests.get(nginx_front + front + "/a/b", headers={"Host": "example.com:8443"}).json()
    assert seen["host"] == "example.com:8443" and seen["server_name"] == "example.com", seen
    assert seen["script_name"] == "" and seen["path"] == f"{front}/a/b", seen


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
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=20)
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


# Apache httpd (mod_proxy_uwsgi, mod_proxy_fcgi, mod_proxy_scgi) and lighttpd
# (mod_scgi in uwsgi mode, mod_scgi, mod_fastcgi): the project's test-peers notes, §1.2-1.3.
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"


@pytest.fixture
def upstream(serve, tmp_path):
    s = serve("--wsgi-file", ECHO, "--processes", "2", "--socket", f"127.0.0.1:{free_port()}",
              "--socket", str(tmp_path / "ox.sock"), "--scgi-socket", f"127.0.0.1:{free_port()}",
              "--fastcgi-socket", f"127.0.0.1:{free_port()}", "--chmod-socket", "666")
    ports = [a.split(":")[1] for a in s.args if a.startswith("127.0.0.1:")]
    s.uwsgi, s.scgi, s.fcgi = ports[1], ports[2], ports[3]
    s.sock = tmp_path / "ox.sock"
    return s


def start(cmd, port):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    raise AssertionError(f"{cmd[0]} did not start")


@pytest.fixture
def apache(upstream, tmp_path):
    if not os.path.exists(f"{APACHE_MODULES}/mod_proxy_uwsgi.so"):
        pytest.skip("apache2-bin is not installed")
    with apache_serving(tmp_path, ["proxy", "proxy_uwsgi", "proxy_fcgi", "proxy_scgi"], f"""
ProxyPass /u/ uwsgi://127.0.0.1:{upstream.uwsgi}/
ProxyPass /ux/ unix:{upstream.sock}|uwsgi://localhost/
ProxyPass /f/ fcgi://127.0.0.1:{upstream.fcgi}/ enablereuse=on
ProxyPass /s/ scgi://127.0.0.1:{upstream.scgi}/
""") as url:
        yield url


@pytest.fixture
def lighttpd(upstream, tmp_path):
    if not os.path.exists(LIGHTTPD):
        pytest.skip("lighttpd is not installed")
    d, port = tmp_path / "lighttpd", free_port()
    d.mkdir()
    (d / "lighttpd.conf").write_text(f"""
server.document-root = "{d}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
server.upload-dirs = ( "{d}" )
server.stream-request-body = 1
server.modules = ( "mod_fastcgi", "mod_scgi" )
$HTTP["url"] =~ "^/u/" {{ scgi.protocol = "uwsgi"
  scgi.server = ( "/u/" => (( "host" => "127.0.0.1", "port" => {upstream.uwsgi}, "check-local" => "disable" )) ) }}
$HTTP["url"] =~ "^/s/" {{
  scgi.server = ( "/s/" => (( "host" => "127.0.0.1", "port" => {upstream.scgi}, "check-local" => "disable" )) ) }}
$HTTP["url"] =~ "^/f/" {{
  fastcgi.server = ( "/f/" => (( "host" => "127.0.0.1", "port" => {upstream.fcgi}, "check-local" => "disable" )) ) }}
""")
    proc = start([LIGHTTPD, "-D", "-f", str(d / "lighttpd.conf")], port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_apaches_reused_fastcgi_connections_carry_requests_after_an_early_answer(serve, tmp_path):
    """mod_proxy_fcgi with `enablereuse=on` stops sending a body once it has
    the answer (a 413 here) and puts the connection back for the next
    request: each is answered at once (one in three waited for Apache's
    Timeout, then 504)."""
    if not os.path.exists(f"{APACHE_MODULES}/mod_proxy_fcgi.so"):
        pytest.skip("apache2-bin is not installed")
    fp = free_port()
    serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--limit-post", "100000")
    with apache_serving(tmp_path, ["proxy", "proxy_fcgi"], f"""
Timeout 5
ProxyPass /f/ fcgi://127.0.0.1:{fp}/ enablereuse=on
""") as url:
        port = int(url.rsplit(":", 1)[1])

        def status(head, body=b""):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
                c.sendall(head + body)
                out = b""
                while chunk := c.recv(65536):
                    out += chunk
            return out.split(b"\r\n", 1)[0]
        body = b"x" * 300_000
        for _ in range(8):
            refused = status(b"POST /f/post HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body), body)
            answered = status(b"GET /f/plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (refused[:12], answered) == (b"HTTP/1.1 413", b"HTTP/1.1 200 OK")


def test_a_kept_fastcgi_connection_idle_past_the_socket_timeout_still_carries_the_next(serve, tmp_path):
    """As Apache's mod_proxy_fcgi with enablereuse=on does: a POST the app
    answers without reading its body, the rest of the body never sent,
    and the connection pooled, idle. oxgate's skip of that body was held to
    --socket-timeout, and the connection then left open but unread: the
    next request on it, once the site had been idle that long, got EOF
    (Apache answered 503)."""
    from helpers import pairs, read_records, rec, stdout_of
    (tmp_path / "early.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [environ['PATH_INFO'].encode()]\n")
    fp = free_port()
    serve("--wsgi-file", str(tmp_path / "early.py"), "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1",
          "--socket-timeout", "2")

    def head(path, length):
        params = [("REQUEST_METHOD", "POST" if length else "GET"), ("SCRIPT_NAME", ""), ("PATH_INFO", path),
                  ("REQUEST_URI", path), ("CONTENT_LENGTH", str(length)), ("SERVER_NAME", "x"),
                  ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("QUERY_STRING", "")]
        return rec(1, 1, struct.pack(">HB5x", 1, 1)) + rec(4, 1, pairs(params)) + rec(4, 1)

    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        c.sendall(head("/early", 1_000_000) + rec(5, 1, b"z" * 32768))
        assert stdout_of(read_records(c), 1).endswith(b"/early")
        time.sleep(3)  # idle past the socket timeout (oxgate closed it at twice that)
        c.sendall(head("/next", 0) + rec(5, 1))
        assert stdout_of(read_records(c), 1).endswith(b"/next")


@pytest.mark.parametrize("front", ["/f", "/s"])
def test_a_path_apache_cleaned_reaches_the_app_as_it_cleaned_it(apache, front):
    """mod_proxy_fcgi and _scgi send SCRIPT_NAME as the path, cleaned
    (`//` merged, `..` resolved), and REQUEST_URI as sent: the app sees the
    cleaned path, the one Apache's <Location> rules saw, once. It saw
    SCRIPT_NAME cleaned and the raw path again behind it."""
    port = int(apache.rsplit(":", 1)[1])
    for raw, want in [(f"{front}//double//slash", f"{front}/double/slash"), (f"{front}/dot/../x", f"{front}/x")]:
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", raw)
        seen = json.loads(c.getresponse().read())
        c.close()
        assert (seen["script_name"], seen["path"]) == ("", want), (raw, seen["script_name"], seen["path"])


@pytest.mark.parametrize("front", ["/u", "/ux", "/f", "/s"])
def test_same_answers_through_apache(apache, front):
    same_answers(apache, front, split=True)


@pytest.mark.parametrize("front", ["/u", "/f", "/s"])
def test_same_answers_through_lighttpd(lighttpd, front):
    same_answers(lighttpd, front, split=True)
