"""FastCGI apps behind oxgate (issue #14): `--fastcgi-pass` to real PHP
(php-cgi's own FastCGI server and php-fpm), a Perl FCGI app and a Python
flup app; PHP laid out with a document root and a front controller; the
timeout; behind real nginx."""
import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests

from helpers import (BIN, VENV, alive, fcgi_request, free_port, needs_tmux, nginx_serving, read_records, rec, screen_of, start_nginx,
                     stdout_of, traced_calls, uwsgi_request, wait_for)
from helpers import cgi, packet

PHP_CGI = shutil.which("php-cgi")
PHP_FPM = shutil.which("php-fpm8.2") or shutil.which("php-fpm") or "/usr/sbin/php-fpm8.2"
needs_php = pytest.mark.skipif(not PHP_CGI, reason="php-cgi is not installed (scripts/test.sh installs it)")

FRONT = """<?php
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
header('X-Php: yes');
echo json_encode([
  'uri' => $_SERVER['REQUEST_URI'], 'script' => $_SERVER['SCRIPT_NAME'],
  'file' => $_SERVER['SCRIPT_FILENAME'], 'info' => $_SERVER['PATH_INFO'] ?? null,
  'get' => $_GET, 'post' => $_POST, 'n' => $_SESSION['n'], 'pid' => getmypid(),
  'ppid' => posix_getppid(),
  'file_up' => isset($_FILES['f']) ? [$_FILES['f']['name'], sha1_file($_FILES['f']['tmp_name'])] : null,
]);
"""


@pytest.fixture
def site(tmp_path):
    d = tmp_path / "site"
    (d / "admin").mkdir(parents=True)
    (d / "sessions").mkdir()
    (d / "index.php").write_text(FRONT)
    (d / "admin" / "index.php").write_text("<?php echo 'admin index';")
    (d / "info.php").write_text("<?php phpinfo();")
    (d / "slow.php").write_text("<?php sleep(30); echo 'late';")
    (d / "style.css").write_text("body { color: red }\n")
    (d / "secret.php.txt").write_text("not php")
    return d


@pytest.fixture
def php_cgi(tmp_path, site):
    """php-cgi's own FastCGI server on a unix socket, 4 children, each
    exiting after `PHP_FCGI_MAX_REQUESTS` (its default is 500)."""
    started = []

    def start(max_requests=500, children=4):
        sock = tmp_path / f"php-{len(started)}.sock"
        env = {"PHP_FCGI_CHILDREN": str(children), "PHP_FCGI_MAX_REQUESTS": str(max_requests), "PATH": "/usr/bin:/bin"}
        p = subprocess.Popen([PHP_CGI, "-d", f"session.save_path={site / 'sessions'}", "-b", str(sock)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(p)
        wait_for(sock.exists, what="php-cgi's socket")
        return sock

    yield start
    for p in started:
        p.terminate()
        p.wait(10)


def php_server(serve, sock, site, *extra):
    return serve("--fastcgi-pass", str(sock), "--fastcgi-app-docroot", str(site),
                 "--fastcgi-app-fallback", "/index.php", *extra)


@needs_php
def test_php_get_post_files_sessions_and_phpinfo(serve, php_cgi, site):
    s = php_server(serve, php_cgi(), site)
    r = requests.get(f"{s.url}/index.php/tail?a=1&b[]=2", timeout=20)
    j = r.json()
    assert r.headers["X-Php"] == "yes"
    assert (j["script"], j["info"], j["get"], j["file"]) == ("/index.php", "/tail", {"a": "1", "b": ["2"]},
                                                            str(site / "index.php"))
    data = os.urandom(200_000)
    r = requests.post(f"{s.url}/index.php", data={"x": "y"}, files={"f": ("up.bin", data)}, timeout=20)
    assert r.json()["post"] == {"x": "y"} and r.json()["file_up"] == ["up.bin", hashlib.sha1(data).hexdigest()]
    with requests.Session() as session:
        counts = [session.get(f"{s.url}/index.php", timeout=20).json()["n"] for _ in range(3)]
    assert counts == [1, 2, 3]
    r = requests.get(f"{s.url}/info.php", timeout=20)
    assert r.status_code == 200 and "PHP Version" in r.text and "FastCGI" in r.text


@needs_php
def test_php_front_controller_index_and_static_files(serve, php_cgi, site):
    s = php_server(serve, php_cgi(), site)
    # A path naming nothing runs the front controller, the query kept.
    j = requests.get(f"{s.url}/blog/2024/hello?page=2", timeout=20).json()
    assert (j["uri"], j["script"], j["get"]) == ("/blog/2024/hello?page=2", "/index.php", {"page": "2"})
    # A directory runs its index; without its slash it is redirected.
    assert requests.get(f"{s.url}/", timeout=20).json()["script"] == "/index.php"
    assert requests.get(f"{s.url}/admin/", timeout=20).text == "admin index"
    r = requests.get(f"{s.url}/admin", allow_redirects=False, timeout=20)
    assert (r.status_code, r.headers["Location"]) == (301, "/admin/")
    # Other files are served from disk, never run, never shown as source.
    r = requests.get(f"{s.url}/style.css", timeout=20)
    assert r.text == "body { color: red }\n" and r.headers["Content-Type"].startswith("text/css")
    assert "ETag" in r.headers
    assert requests.get(f"{s.url}/secret.php.txt", timeout=20).text == "not php"
    r = requests.get(f"{s.url}/index.php", timeout=20)
    assert "<?php" not in r.text
    # A PHP script that is not there is a 404, as nginx's `location ~ \.php`
    # sites answer it: not the front controller (a bot's probe booted the app).
    for missing in ["/nope.php", "/blog/x.php"]:
        r = requests.get(f"{s.url}{missing}", timeout=20)
        assert (r.status_code, r.text) == (404, "File not found.\n"), missing
    # A path after it is not `\.php$`'s: the front controller's, as there.
    assert requests.get(f"{s.url}/nope.php/x", timeout=20).json()["script"] == "/index.php"
    # Traversal is refused.
    for raw in ["/%2e%2e/etc/passwd", "/admin/%2e%2e/%2e%2e/etc/passwd"]:
        r = requests.get(f"{s.url}{raw}", timeout=20)
        assert r.status_code in (400, 403, 404), raw


@needs_php
def test_2000_requests_over_4_php_processes_that_recycle(serve, php_cgi, site):
    """php-cgi's children exit after PHP_FCGI_MAX_REQUESTS and are replaced;
    no request fails, with two oxgate workers sharing the children."""
    s = php_server(serve, php_cgi(max_requests=100), site, "--processes", "2")

    def batch(n):
        ok, pids = 0, set()
        with requests.Session() as session:
            for i in range(n):
                r = session.get(f"{s.url}/page/{i}?i={i}", timeout=30)
                if r.status_code == 200 and r.json()["get"] == {"i": str(i)}:
                    ok += 1
                    pids.add(r.json()["pid"])
        return ok, pids

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(batch, [250] * 8))
    assert sum(ok for ok, _ in results) == 2000
    # The children were replaced along the way.
    assert len(set().union(*(p for _, p in results))) > 4


@needs_php
def test_a_slow_script_times_out_while_others_are_served(serve, php_cgi, site):
    s = php_server(serve, php_cgi(), site, "--fastcgi-app-timeout", "2", "--processes", "1")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        slow = ex.submit(requests.get, f"{s.url}/slow.php", timeout=20)
        wait_for(lambda: requests.get(f"{s.url}/index.php", timeout=10).status_code == 200,
                 what="other requests served meanwhile")
        assert slow.result().status_code == 504
    assert "no response within --fastcgi-app-timeout 2s" in s.log()


def start_php_fpm(tmp_path, site, sock):
    """The real php-fpm, 2 children on the unix socket `sock`, once it
    listens."""
    if not os.path.exists(PHP_FPM):
        pytest.skip("php-fpm is not installed (scripts/test.sh installs it)")
    conf = tmp_path / "fpm.conf"
    conf.write_text(textwrap.dedent(f"""\
        [global]
        pid = {tmp_path}/fpm.pid
        error_log = {tmp_path}/fpm.log
        daemonize = no
        [www]
        user = root
        listen = {sock}
        pm = static
        pm.max_children = 2
        php_admin_value[session.save_path] = {site / 'sessions'}
        """))
    fpm = subprocess.Popen([PHP_FPM, "-R", "-F", "-y", str(conf)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, what="php-fpm's socket")
    except BaseException:
        fpm.terminate()
        fpm.wait(10)
        raise
    return fpm


def test_php_fpm_over_a_unix_socket(serve, site, tmp_path):
    sock = tmp_path / "fpm.sock"
    fpm = start_php_fpm(tmp_path, site, sock)
    try:
        s = php_server(serve, sock, site)
        j = requests.get(f"{s.url}/shop/cart?id=7", timeout=20).json()
        assert (j["script"], j["get"], j["uri"]) == ("/index.php", {"id": "7"}, "/shop/cart?id=7")
        r = requests.post(f"{s.url}/index.php", data={"k": "v"}, timeout=20)
        assert r.json()["post"] == {"k": "v"}
        assert "php-fpm" in requests.get(f"{s.url}/info.php", timeout=20).text.lower()
    finally:
        fpm.terminate()
        fpm.wait(10)


PERL_APP = r"""
use strict; use warnings; use FCGI;
my $socket = FCGI::OpenSocket($ARGV[0], 10);
my %env;
my $req = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env, $socket);
while ($req->Accept() >= 0) {
    my $body = '';
    read(STDIN, $body, $env{CONTENT_LENGTH}) if $env{CONTENT_LENGTH};
    print "Content-Type: text/plain\r\nX-Lang: perl\r\n\r\n";
    print "$env{REQUEST_METHOD} $env{SCRIPT_NAME} $env{PATH_INFO} $env{QUERY_STRING} ", length($body), "\n";
}
"""

FLUP_APP = """
import sys
from flup.server.fcgi import WSGIServer

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Lang", "python")])
    return [f"{environ['REQUEST_METHOD']} {environ['SCRIPT_NAME']} {environ['PATH_INFO']} "
            f"{environ['QUERY_STRING']} {len(body)}\\n".encode()]

WSGIServer(app, bindAddress=sys.argv[1]).run()
"""


def test_perl_and_python_fastcgi_apps_under_mounts(serve, tmp_path):
    perl_sock, flup_sock = tmp_path / "perl.sock", tmp_path / "flup.sock"
    (tmp_path / "app.pl").write_text(PERL_APP)
    (tmp_path / "flup_app.py").write_text(FLUP_APP)
    apps = [subprocess.Popen(["perl", str(tmp_path / "app.pl"), str(perl_sock)]),
            subprocess.Popen([str(VENV / "bin" / "python"), str(tmp_path / "flup_app.py"), str(flup_sock)])]
    try:
        wait_for(lambda: perl_sock.exists() and flup_sock.exists(), what="both apps' sockets")
        s = serve("--fastcgi-pass", f"/perl={perl_sock}", "--fastcgi-pass", f"/py={flup_sock}")
        for mount, lang in [("/perl", "perl"), ("/py", "python")]:
            r = requests.get(f"{s.url}{mount}/a/b?q=1", timeout=20)
            assert (r.headers["X-Lang"], r.text) == (lang, f"GET {mount} /a/b q=1 0\n")
            r = requests.post(f"{s.url}{mount}/up", data=os.urandom(100_000), timeout=20)
            assert r.text == f"POST {mount} /up  100000\n"
        # Outside the mounts, with no app: 404.
        assert requests.get(f"{s.url}/elsewhere", timeout=20).status_code == 404
    finally:
        for p in apps:
            p.terminate()
            p.wait(10)


def test_an_unreachable_server_is_502_with_a_log_line(serve, tmp_path):
    s = serve("--fastcgi-pass", str(tmp_path / "nobody.sock"))
    assert requests.get(f"{s.url}/x", timeout=20).status_code == 502
    # The line names the request, as nginx's do.
    wait_for(lambda: "nobody.sock (GET /x): cannot connect" in s.log(), what="the log line", show=s.log)


# A FastCGI app on fd 0 (as a pool runs it) that answers request n with
# reply(n), written into the script, and logs each connection it accepts.
MISBEHAVING_APP = """
import os, socket, struct, sys

def rec(kind, rid, content=b""):
    return struct.pack(">BBHHBB", 1, kind, rid, len(content), 0, 0) + content

def answer(rid, body, after=b""):
    out = rec(6, rid, b"Content-Type: text/plain\\r\\n\\r\\n" + body) + rec(6, rid)
    return out + rec(3, rid, bytes(8)) + after

STALE = rec(6, 1, b"Content-Type: text/plain\\r\\n\\r\\nstale\\n") + rec(6, 1) + rec(3, 1, bytes(8))

def stale_once():
    # Only the first process misbehaves: its successor is well-behaved.
    if os.path.exists(sys.argv[1] + ".stale"):
        return b""
    open(sys.argv[1] + ".stale", "w").close()
    return STALE
%s

listener = socket.socket(fileno=0)
n = 0
log = open(sys.argv[1], "a", buffering=1)
while True:
    conn, _ = listener.accept()
    log.write("connection\\n")
    buf = b""
    while True:
        while len(buf) < 8 or len(buf) < 8 + struct.unpack(">H", buf[4:6])[0] + buf[6]:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
        else:
            clen, plen = struct.unpack(">H", buf[4:6])[0], buf[6]
            kind, content, buf = buf[1], buf[8:8 + clen], buf[8 + clen + plen:]
            if kind == 5 and not content:
                n += 1
                conn.sendall(reply(n))
            continue
        break
    conn.close()
"""


def misbehaving(serve, tmp_path, reply):
    (tmp_path / "app.py").write_text(MISBEHAVING_APP % reply)
    log = tmp_path / "connections.log"
    s = serve("--fastcgi-app", f"{sys.executable} {tmp_path / 'app.py'} {log}", "--fastcgi-app-processes", "1",
              "--processes", "1")
    return s, lambda: log.read_text().count("connection") if log.exists() else 0


def test_a_record_for_another_request_is_a_502_not_an_answer(serve, tmp_path):
    s, _ = misbehaving(serve, tmp_path, 'reply = lambda n: answer(2, b"someone else\'s\\n")')
    r = requests.get(f"{s.url}/x", timeout=20)
    assert r.status_code == 502 and "someone else" not in r.text
    wait_for(lambda: "a record for request 2, where 1 is the only one" in s.log(), what="the log line")


def test_bytes_after_the_end_of_a_request_never_answer_the_next(serve, tmp_path):
    """An app that writes past END_REQUEST: its connection is not kept
    (nor, as a pool process serves one connection, the process), so the
    next request gets an answer of its own, not those bytes."""
    s, connections = misbehaving(
        serve, tmp_path, 'reply = lambda n: answer(1, b"answer %d\\n" % n, stale_once())')
    assert requests.get(f"{s.url}/x", timeout=20).text == "answer 1\n"
    assert requests.get(f"{s.url}/x", timeout=20).text == "answer 1\n"  # a new process's first
    assert connections() == 2
    # A well-behaved exchange keeps its connection.
    assert requests.get(f"{s.url}/x", timeout=20).text == "answer 2\n"
    assert connections() == 2


NGINX_FRONT = """
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}/tmp;
  server {{ listen 127.0.0.1:{port};
    location /via-http/ {{ proxy_pass http://127.0.0.1:{http}/; }}
    location /via-uwsgi/ {{ include /etc/nginx/uwsgi_params; uwsgi_param PATH_INFO $uri; rewrite ^/via-uwsgi(/.*)$ $1 break;
                           uwsgi_pass 127.0.0.1:{uwsgi}; }}
    location /via-fastcgi/ {{ include /etc/nginx/fastcgi_params; rewrite ^/via-fastcgi(/.*)$ $1 break;
                             fastcgi_param SCRIPT_NAME $uri; fastcgi_pass 127.0.0.1:{fcgi}; }}
  }}
}}
"""


@needs_php
@pytest.mark.parametrize("php", ["pool", "pass"])
def test_behind_nginx_on_every_protocol(serve, php_cgi, site, tmp_path, php):
    """nginx's proxy_pass, uwsgi_pass and fastcgi_pass to oxgate, which
    runs PHP in its own pool, or passes it to php-cgi's server."""
    uwsgi, fcgi = free_port(), free_port()
    sockets = ("--uwsgi-socket", f"127.0.0.1:{uwsgi}", "--fastcgi-socket", f"127.0.0.1:{fcgi}")
    if php == "pool":
        s = php_pool(serve, site, *sockets)
    else:
        s = php_server(serve, php_cgi(), site, *sockets)
    port = free_port()
    d = tmp_path / "nginx"
    nginx = start_nginx(d, port, NGINX_FRONT.format(d=d, port=port, http=s.port, uwsgi=uwsgi, fcgi=fcgi))
    try:
        for via in ["via-http", "via-uwsgi", "via-fastcgi"]:
            r = requests.get(f"http://127.0.0.1:{port}/{via}/shop/item?id=3", timeout=20)
            assert r.status_code == 200, (via, r.status_code, r.text[:200])
            j = r.json()
            assert (j["script"], j["get"]) == ("/index.php", {"id": "3"}), via
            r = requests.post(f"http://127.0.0.1:{port}/{via}/index.php", data={"a": "b"}, timeout=20)
            assert r.json()["post"] == {"a": "b"}, via
    finally:
        nginx.terminate()
        nginx.wait(10)


@needs_php
@pytest.mark.parametrize("docroot", [False, True])
def test_behind_nginxs_fastcgi_conf_without_a_split_scripts_keep_their_names_as_under_php_fpm(
        serve, site, tmp_path, docroot):
    """nginx's fastcgi.conf without fastcgi_split_path_info sends the
    script's URL as SCRIPT_NAME and no PATH_INFO. php-fpm gives them to PHP
    so; oxgate's pool gave SCRIPT_NAME "" and the URL as PATH_INFO, which
    broke apps that take their base URL from SCRIPT_NAME."""
    (site / "sub").mkdir()
    (site / "sub" / "env.php").write_text(
        "<?php echo json_encode([$_SERVER['SCRIPT_NAME'], $_SERVER['PATH_INFO'] ?? '', $_SERVER['PHP_SELF'],"
        " $_SERVER['REQUEST_URI']]);")
    fpm_sock, ox_sock = tmp_path / "fpm.sock", tmp_path / "ox.sock"
    fpm = start_php_fpm(tmp_path, site, fpm_sock)
    extra = ("--fastcgi-app-docroot", str(site)) if docroot else ()
    serve("--fastcgi-socket", str(ox_sock), "--fastcgi-app", "php-cgi", *extra, "--processes", "1")
    # One root with the site under /fpm and /ox, the same nginx config
    # before each.
    roots = tmp_path / "roots"
    roots.mkdir()
    for prefix in ("fpm", "ox"):
        (roots / prefix).symlink_to(site)
    location = """location /{prefix}/ {{ try_files $uri /{prefix}/sub/env.php?$args; }}
      location ~ ^/{prefix}/.*\\.php$ {{ include /etc/nginx/fastcgi.conf; fastcgi_pass unix:{sock}; }}"""
    server = (f"root {roots}; " + location.format(prefix="fpm", sock=fpm_sock)
              + location.format(prefix="ox", sock=ox_sock))
    try:
        with nginx_serving(tmp_path, server) as port:
            for path in ("/sub/env.php?a=1", "/blog/x?y=1"):
                a = requests.get(f"http://127.0.0.1:{port}/fpm{path}", timeout=20)
                b = requests.get(f"http://127.0.0.1:{port}/ox{path}", timeout=20)
                assert a.status_code == b.status_code == 200, (path, a.text[:300], b.text[:300])
                assert a.text.replace("\\/fpm", "\\/ox") == b.text, path
                assert b.json()[:2] == ["/ox/sub/env.php", ""], path
    finally:
        fpm.terminate()
        fpm.wait(10)

def test_bad_fastcgi_options_are_clear_errors(tmp_path):
    from helpers import run_fail
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-pass", "/x=")
    assert code == 2 and "--fastcgi-pass" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-pass", "127.0.0.1:9",
                         "--fastcgi-app-fallback", "index.php")
    assert code == 2 and "starts with /" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-pass", "127.0.0.1:9",
                         "--fastcgi-app-docroot", str(tmp_path / "missing"))
    assert code != 0 and "not a directory" in err


def pool_pids(s):
    """The pool processes the log says were started, in order."""
    return [int(line.split("started process ")[1].split()[0]) for line in s.log().splitlines()
            if "started process " in line]


def php_pool(serve, site, *extra):
    return serve("--fastcgi-app", f"php-cgi -d session.save_path={site / 'sessions'}",
                 "--fastcgi-app-docroot", str(site), "--fastcgi-app-fallback", "/index.php", *extra)


@needs_php
def test_php_fpms_ping_path_is_the_health_path_on_the_fastcgi_socket(serve, site):
    """php-fpm's ping.path, which Docker and Kubernetes probes ask through
    the FastCGI socket (as nginx's fastcgi_params send it): --health-path
    answers it, no PHP run."""
    fp = free_port()
    php_pool(serve, site, "--fastcgi-socket", f"127.0.0.1:{fp}", "--health-path", "/fpm-ping", "--processes", "1")
    params = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/fpm-ping"), ("REQUEST_URI", "/fpm-ping"),
              ("SCRIPT_FILENAME", str(site / "fpm-ping")), ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1")]

    def ping():
        with socket.create_connection(("127.0.0.1", fp), timeout=10) as sock:
            sock.sendall(fcgi_request(1, params))
            return stdout_of(read_records(sock), 1)
    wait_for(lambda: ping().startswith(b"Status: 200"), what="the ping answered 200")
    assert ping().endswith(b"\r\n\r\nok\n")
    # The probe php-fpm's images use: cgi-fcgi, which sends no REQUEST_URI
    # (it was taken for a request to the site's root under /fpm-ping).
    if shutil.which("cgi-fcgi"):
        p = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"127.0.0.1:{fp}"], capture_output=True, timeout=20,
                           env={"SCRIPT_NAME": "/fpm-ping", "SCRIPT_FILENAME": "/fpm-ping", "REQUEST_METHOD": "GET"})
        assert p.stdout.startswith(b"Status: 200") and p.stdout.endswith(b"\r\n\r\nok\n"), p.stdout


def test_the_health_path_fails_while_a_pool_cannot_start_its_processes(serve, tmp_path):
    """php-fpm's ping page is answered by a pool process: when none can
    start (a broken php.ini, a missing extension), the probe fails and the
    balancer takes the host out. --health-path, which php-fpm's users put
    in its place, said 200 while every request was a 502."""
    (tmp_path / "broken.sh").write_text("#!/bin/sh\necho 'PHP Fatal error: broken extension' >&2\nexit 1\n")
    (tmp_path / "broken.sh").chmod(0o755)
    s = serve("--fastcgi-app", f"/php={tmp_path / 'broken.sh'}", "--health-path", "/ping", "--processes", "1")
    assert requests.get(f"{s.url}/php/x", timeout=20).status_code == 502
    # (A 503 Response is false: its text is what is waited for.)
    text = wait_for(lambda: (r := requests.get(f"{s.url}/ping", timeout=20)).status_code == 503 and r.text,
                    what="the health path to fail")
    assert "FastCGI pool cannot start" in text, text


@needs_php
def test_a_status_with_no_known_phrase_keeps_none_on_the_fastcgi_socket(serve, site):
    """header('Status: 420') from PHP, behind the FastCGI socket: `Status:
    420`, as php-fpm sends it, which nginx passes on as `420`; oxgate added
    "Unknown", which reached the client."""
    (site / "s420.php").write_text("<?php header('Status: 420'); echo 'calm';")
    fp = free_port()
    php_pool(serve, site, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1")
    params = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/s420.php"), ("REQUEST_URI", "/s420.php"),
              ("SCRIPT_FILENAME", str(site / "s420.php")), ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1")]
    with socket.create_connection(("127.0.0.1", fp), timeout=20) as sock:
        sock.sendall(fcgi_request(1, params))
        out = stdout_of(read_records(sock), 1)
    assert out.startswith(b"Status: 420\r\n") and out.endswith(b"\r\n\r\ncalm"), out

@needs_php
def test_an_index_that_is_no_script_and_a_file_with_a_path_after_it_as_nginx(serve, site):
    """nginx's `index index.php index.html`: a directory with only an
    index.html shows it (it was a 404); `try_files $uri $uri/ /index.php`:
    a file with a path after it names no file, and goes to the front
    controller (it was a 404 too)."""
    (site / "docs").mkdir()
    (site / "docs" / "index.html").write_text("<h1>docs</h1>")
    s = php_pool(serve, site, "--fastcgi-app-index", "index.php", "--fastcgi-app-index", "index.html",
                 "--processes", "1")
    r = requests.get(f"{s.url}/docs/", timeout=20)
    assert (r.status_code, r.text) == (200, "<h1>docs</h1>")
    assert requests.get(f"{s.url}/admin/", timeout=20).text == "admin index"
    j = requests.get(f"{s.url}/style.css/more", timeout=20).json()
    assert (j["script"], j["uri"]) == ("/index.php", "/style.css/more")


@needs_php
def test_a_php_pool_serves_the_site(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-env", "GREETING=hello")
    (site / "env.php").write_text("<?php echo json_encode([getenv('GREETING'), getenv('HOME'), getenv('USER'),"
                                  " getenv('PATH')]);")
    # A clean environment, with the user's HOME and USER, as php-fpm's.
    import pwd
    me = pwd.getpwuid(os.geteuid())
    assert requests.get(f"{s.url}/env.php", timeout=20).json() == ["hello", me.pw_dir, me.pw_name, False]
    j = requests.get(f"{s.url}/blog/x?page=3", timeout=20).json()
    assert (j["script"], j["get"], j["uri"]) == ("/index.php", {"page": "3"}, "/blog/x?page=3")
    data = os.urandom(100_000)
    r = requests.post(f"{s.url}/index.php", data={"a": "b"}, files={"f": ("u.bin", data)}, timeout=20)
    assert r.json()["post"] == {"a": "b"} and r.json()["file_up"] == ["u.bin", hashlib.sha1(data).hexdigest()]
    with requests.Session() as session:
        assert [session.get(f"{s.url}/index.php", timeout=20).json()["n"] for _ in range(3)] == [1, 2, 3]
    assert requests.get(f"{s.url}/style.css", timeout=20).text == "body { color: red }\n"


@needs_php
def test_a_php_ini_in_the_document_root_is_not_read_as_under_php_fpm(serve, site):
    """php-cgi reads a php.ini in the directory it starts in before the
    system's: started in the document root, anyone who could put a file
    there set auto_prepend_file or lifted disable_functions. php-fpm's pool
    does not read it; nor does oxgate's now. Scripts still run in their own
    directory, as under php-fpm."""
    (site / "php.ini").write_text("memory_limit = 7M\n")
    (site / "sub").mkdir()
    (site / "sub" / "ini.php").write_text(
        "<?php echo json_encode([ini_get('memory_limit'), php_ini_loaded_file(), getcwd()]);")
    s = php_pool(serve, site)
    limit, loaded, cwd = requests.get(f"{s.url}/sub/ini.php", timeout=20).json()
    assert limit != "7M" and loaded != str(site / "php.ini"), (limit, loaded)
    assert cwd == str(site / "sub")


@needs_php
def test_the_pools_max_listen_queue_is_the_whole_pools(serve, site):
    """php-fpm's max listen queue: the most requests waiting at once in the
    pool, whichever worker holds them; never below the queue now. (It was
    the most one worker held.)"""
    sp = free_port()
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "1", "--processes", "2",
                 "--stats", f"127.0.0.1:{sp}", "--stats-http")
    s.wait_workers(2)
    (site / "hold.php").write_text("<?php usleep(1000000); echo 'done';")

    def pool():
        (p,) = requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["fastcgi_pools"]
        return p
    # Six at once: the workers accept them between them, so no one worker
    # holds all that wait.
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        answers = [ex.submit(requests.get, f"{s.url}/hold.php?n={n}", timeout=30) for n in range(6)]
        seen = wait_for(lambda: (lambda p: p["listen_queue"] == 5 and p)(pool()), what="five requests waiting")
        assert seen["max_listen_queue"] >= 5, seen
        assert [a.result().text for a in answers] == ["done"] * 6
    assert pool()["max_listen_queue"] == 5


@needs_php
def test_what_pool_processes_write_to_stderr_is_logged_with_the_pool_and_process(serve, site):
    """php-cgi's own stderr (php://stderr, startup warnings; error_log()
    goes in FCGI_STDERR records instead) is logged a line at a time, each
    marked with the pool and the process, as php-fpm's
    catch_workers_output marks it."""
    s = php_pool(serve, site)
    (site / "stderr.php").write_text("<?php file_put_contents('php://stderr', \"first line\\nsecond\\n\"); echo 'ok';")
    assert requests.get(f"{s.url}/stderr.php", timeout=20).text == "ok"
    pid = pool_pids(s)[0]
    said = f"FastCGI pool php-cgi -d session.save_path={site / 'sessions'}: process {pid} said into stderr: "
    wait_for(lambda: said + "second" in s.log(), what="the relayed lines", show=s.log)
    assert said + "first line" in s.log()
    # What PHP sends in FCGI_STDERR records (error_log(), its errors) says
    # which request it came from, as nginx's "FastCGI sent in stderr" does.
    (site / "logged.php").write_text("<?php error_log('from error_log'); echo 'ok';")
    assert requests.get(f"{s.url}/logged.php?x=1", timeout=20).text == "ok"
    s.wait_log(f"FastCGI php-cgi -d session.save_path={site / 'sessions'} (GET /logged.php?x=1): "
               "from error_log")
    # Lines that straddle FCGI_STDERR records stay whole: 2,000 lines of
    # 510 bytes cross many records' ends (some came out in two pieces).
    (site / "many.php").write_text("<?php for ($i = 0; $i < 2000; $i++) error_log(sprintf('line %04d ', $i)"
                                   " . str_repeat('x', 500)); echo 'ok';")
    assert requests.get(f"{s.url}/many.php", timeout=20).text == "ok"
    s.wait_log("line 1999 ")
    lines = [ln.split("(GET /many.php): ", 1)[1] for ln in s.log().splitlines() if "(GET /many.php): " in ln]
    assert len(lines) == 2000 and all(re.fullmatch(r"line \d{4} x{500}", ln) for ln in lines), \
        [ln[:40] for ln in lines if not re.fullmatch(r"line \d{4} x{500}", ln)][:5]


@needs_php
def test_posts_to_php_children_sharing_a_socket_never_fail_at_their_cap(serve, site):
    """PHP_FCGI_CHILDREN=2 and a cap of 7: children exit all the time, and
    one that exits closes its connection. With one worker, whose kept
    connections a child at its cap closed just as a POST went out on them,
    some POSTs got 502; a POST cannot be sent again."""
    s = php_pool(serve, site, "--fastcgi-app-processes", "2", "--processes", "1",
                 "--fastcgi-app-env", "PHP_FCGI_CHILDREN=2", "--fastcgi-app-env", "PHP_FCGI_MAX_REQUESTS=7")

    def posts(n):
        with requests.Session() as session:
            return [session.post(f"{s.url}/p/{i}", data={"i": str(i)}, timeout=30).status_code for i in range(n)]

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        codes = [c for batch in ex.map(posts, [150] * 8) for c in batch]
    assert codes.count(200) == len(codes), {c: codes.count(c) for c in set(codes)}


@needs_php
@pytest.mark.parametrize("children", ["forked", "0"])
def test_2000_requests_over_4_pool_processes_with_phps_request_cap(serve, site, children):
    """php-cgi's serving process exits after its 500th request
    (PHP_FCGI_MAX_REQUESTS); no request fails. By default php-cgi forks it
    (PHP_FCGI_CHILDREN=1, set by oxgate) and forks the next at the cap, so
    the four processes oxgate started stay. With PHP_FCGI_CHILDREN=0 each
    process serves and exits, and is started anew."""
    extra = () if children == "forked" else ("--fastcgi-app-env", "PHP_FCGI_CHILDREN=0")
    sp = free_port()
    s = php_pool(serve, site, "--fastcgi-app-processes", "4", "--processes", "2",
                 "--stats", f"127.0.0.1:{sp}", "--stats-http", *extra)

    def batch(n):
        """Every other request a POST, which is never sent twice: one sent
        to a process on its way out would fail."""
        ok, served_by = 0, set()
        with requests.Session() as session:
            for i in range(n):
                if i % 2:
                    r = session.post(f"{s.url}/p/{i}", data={"i": str(i)}, timeout=30)
                    ok += r.status_code == 200 and r.json()["post"] == {"i": str(i)}
                else:
                    r = session.get(f"{s.url}/p/{i}?i={i}", timeout=30)
                    ok += r.status_code == 200 and r.json()["get"] == {"i": str(i)}
                served_by.add((r.json()["pid"], r.json()["ppid"]))
        return ok, served_by

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(batch, [250] * 8))
    assert sum(ok for ok, _ in results) == 2000
    served_by = set().union(*(pairs for _, pairs in results))
    # Four processes, shared out two to each worker; those that reached
    # PHP's cap were replaced (2,000 requests cannot fall 500 to each).
    if children == "forked":
        started = set(pool_pids(s))
        assert 1 <= len(started) <= 4 and "ended (" not in s.log()
        assert len(served_by) > len(started) and {ppid for _, ppid in served_by} <= started, (served_by, started)
        # Each child that ended at the cap is counted, as a process would
        # be; no process was started again.
        pools = requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["fastcgi_pools"]
        assert pools[0]["process_exits"] >= len(served_by) - len(started), pools
        assert pools[0]["process_starts"] == len(started), pools
    else:
        wait_for(lambda: len(set(pool_pids(s))) > 4, timeout=5, what="a process replaced at PHP's cap")
        assert "ended (exit status: 0)" in s.log()
        assert {pid for pid, _ in served_by} <= set(pool_pids(s))


@needs_php
def test_a_slow_upload_holds_no_pool_process_while_it_arrives(serve, site):
    """The body is read whole (into an unnamed temporary file past
    --post-buffering) before a process is taken, as nginx buffers it: with
    one process, other requests are served while an upload trickles in,
    and the upload then reaches PHP whole."""
    (site / "upload.php").write_text("<?php $b = file_get_contents('php://input'); echo strlen($b), ' ', md5($b);")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1", "--post-buffering", "65536")
    body = os.urandom(300_000)
    sent_all = threading.Event()
    result = {}

    def upload():
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        c.putrequest("POST", "/upload.php")
        c.putheader("Content-Length", str(len(body)))
        c.endheaders()
        c.send(body[:200_000])
        served.wait(20)  # the rest only once another request was served
        c.send(body[200_000:])
        sent_all.set()
        r = c.getresponse()
        result["upload"] = (r.status, r.read().decode())

    served = threading.Event()
    t = threading.Thread(target=upload)
    t.start()
    time.sleep(0.5)  # the upload's first part in (were it holding the process, the next request would wait)
    r = requests.get(f"{s.url}/index.php", timeout=20)
    assert not sent_all.is_set() and r.status_code == 200
    served.set()
    t.join(30)
    assert result["upload"] == (200, f"{len(body)} {hashlib.md5(body).hexdigest()}")


@needs_php
def test_a_process_past_its_timeout_while_the_client_stalls_is_replaced_once_not_counted_a_crash(serve, site):
    """The timeout's kill, when the response is streaming to a client that
    stopped reading, is one the pool asked for: one new process, no
    "ended" line, no process_exits."""
    sp = free_port()
    # Writes on and on (read ahead of the client, it never blocks).
    (site / "flood.php").write_text(
        "<?php while (ob_get_level()) ob_end_flush(); for (;;) { echo str_repeat('x', 65536); flush(); usleep(50000); }")
    s = php_pool(serve, site, "--fastcgi-app-timeout", "2", "--fastcgi-app-processes", "1", "--processes", "1",
                 "--stats", f"127.0.0.1:{sp}", "--stats-http")
    first = wait_for(lambda: pool_pids(s), what="the process to start")[0]
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET /flood.php HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
        # Reads no more, while the script runs on past its timeout.
        wait_for(lambda: not alive(first), what="the process to be killed at its timeout")
    wait_for(lambda: requests.get(f"{s.url}/index.php", timeout=20).status_code == 200, what="a new process serving")
    (pool,) = requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["fastcgi_pools"]
    assert pool["process_exits"] == 0, pool
    assert f"process {first} ended" not in s.log()
    assert len(pool_pids(s)) == 2, s.log()


@needs_php
def test_a_slow_pool_request_is_logged_then_504_and_its_process_replaced(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-timeout", "2", "--fastcgi-app-slowlog", "1",
                 "--fastcgi-app-processes", "2", "--processes", "1")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        slow = ex.submit(requests.get, f"{s.url}/slow.php", timeout=20)
        wait_for(lambda: len(pool_pids(s)) >= 1, what="a process to start")
        # Other requests are served meanwhile, by the other process.
        wait_for(lambda: requests.get(f"{s.url}/index.php", timeout=10).status_code == 200,
                 what="other requests served meanwhile")
        assert slow.result().status_code == 504
    slow_pid = pool_pids(s)[0]
    # The slow log named it first, without stopping it.
    assert f"slow request: pid {slow_pid}, /slow.php, running for 1s" in s.log()
    assert "/index.php, running for" not in s.log()
    wait_for(lambda: not alive(slow_pid), what="the late process to be killed")
    # Its slot gets a new process.
    for _ in range(4):
        assert requests.get(f"{s.url}/index.php", timeout=10).status_code == 200


@needs_php
def test_the_timeout_counts_from_when_a_process_takes_the_request(serve, site):
    """php-fpm's request_terminate_timeout starts when a child accepts the
    request: three 1.2 s scripts queued on one process under a 2 s timeout
    all finish, one after the other."""
    (site / "nap.php").write_text("<?php usleep(1200000); echo 'rested';")
    s = php_pool(serve, site, "--fastcgi-app-timeout", "2", "--fastcgi-app-processes", "1",
                 "--fastcgi-app-pm", "static", "--processes", "1")
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        answers = list(ex.map(lambda _: requests.get(f"{s.url}/nap.php", timeout=20), range(3)))
    assert [(r.status_code, r.text) for r in answers] == [(200, "rested")] * 3


@needs_php
def test_a_stray_header_line_from_php_is_left_out_not_a_502(serve, site):
    """nginx passes over a header line with no colon (`header('JustText')`)
    and a control byte in a value; the page is served, the line left out
    and said (the whole page was a 502)."""
    (site / "odd.php").write_text("<?php header('JustText'); header(\"X-Ctl: a\\x01b\"); "
                                  "header('X-Fine: yes'); echo 'served';")
    s = php_pool(serve, site)
    r = requests.get(f"{s.url}/odd.php", timeout=20)
    assert (r.status_code, r.text, r.headers.get("X-Fine")) == (200, "served", "yes"), (r.status_code, r.text)
    assert "X-Ctl" not in r.headers and "JustText" not in r.headers
    s.wait_log("2 malformed header line(s) left out of the response")


@needs_php
def test_harakiri_with_a_pool_and_no_timeout_of_its_own_is_warned_about(serve, site):
    """uWSGI's --harakiri holds its PHP plugin's requests; oxgate's does not
    hold a pool's (nor a --fastcgi-pass's): without --fastcgi-app-timeout
    the start says so (a 30 s script ran its 30 s under --harakiri 2,
    unsaid)."""
    s = php_pool(serve, site, "--harakiri", "2", "--fastcgi-app-processes", "1", "--processes", "1")
    s.wait_log("--harakiri does not hold --fastcgi-app requests: give them --fastcgi-app-timeout")
    assert requests.get(f"{s.url}/admin/index.php", timeout=20).text == "admin index"


@needs_php
def test_pool_figures_in_the_stats_and_metrics_as_php_fpm_status_gives_them(serve, site):
    sp = free_port()
    s = php_pool(serve, site, "--fastcgi-app-timeout", "5", "--fastcgi-app-slowlog", "1",
                 "--fastcgi-app-processes", "1", "--processes", "1", "--stats", f"127.0.0.1:{sp}", "--stats-http")

    def pool():
        (p,) = requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["fastcgi_pools"]
        return p

    # Long enough for the test to see a second request queue behind it.
    (site / "medium.php").write_text("<?php usleep(2500000); echo 'done';")
    assert pool()["name"].startswith("php-cgi -d session.save_path=") and pool()["mount"] == ""
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        medium = ex.submit(requests.get, f"{s.url}/medium.php", timeout=20)
        wait_for(lambda: pool()["active_processes"] == 1, what="a request in the process")
        # The only process is busy: the next request waits for it (within
        # its 5 s: the wait counts towards the timeout).
        waiting = ex.submit(requests.get, f"{s.url}/index.php", timeout=20)
        wait_for(lambda: pool()["listen_queue"] == 1, what="a request waiting")
        assert medium.result().status_code == 200
        assert waiting.result().status_code == 200
    assert requests.get(f"{s.url}/slow.php", timeout=20).status_code == 504
    first = wait_for(lambda: (lambda p: p["active_processes"] == 0 and p["timeouts"] == 1 and p)(pool()),
                     what="the pool idle again")
    assert {k: first[k] for k in ("listen_queue", "max_listen_queue", "accepted_conn", "slow_requests", "timeouts",
                                  "max_children_reached", "process_exits")} == {
        "listen_queue": 0, "max_listen_queue": 1, "accepted_conn": 3, "slow_requests": 2, "timeouts": 1,
        "max_children_reached": 1, "process_exits": 0}
    # A process that dies unasked is counted when it is replaced: the one
    # oxgate started (php-cgi's serving child goes with it).
    child = requests.get(f"{s.url}/index.php", timeout=20).json()["pid"]
    pid = pool_pids(s)[-1]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid) and not alive(child), what="the process and its child to die")
    assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
    text = requests.get(f"http://127.0.0.1:{sp}/metrics", timeout=10).text
    label = 'pool="php-cgi -d session.save_path=%s",mount=""' % (site / "sessions")
    for line in [f"oxgate_fastcgi_pool_requests_total{{{label}}} 5",
                 f"oxgate_fastcgi_pool_process_exits_total{{{label}}} 1",
                 f"oxgate_fastcgi_pool_process_starts_total{{{label}}} 3",
                 f"oxgate_fastcgi_pool_timeouts_total{{{label}}} 1",
                 f"oxgate_fastcgi_pool_max_waiting_requests{{{label}}} 1",
                 f'oxgate_fastcgi_pool_processes{{{label},state="busy"}} 0',
                 f'oxgate_fastcgi_pool_processes{{{label},state="idle"}} 1',
                 'oxgate_requests_by_handler_total{handler="fastcgi"} 5']:
        assert line + "\n" in text, (line, text)


@needs_php
@needs_tmux
def test_oxgate_top_shows_the_pools(serve, site):
    sp = free_port()
    s = php_pool(serve, site, "--fastcgi-app-processes", "2", "--processes", "1", "--stats", f"127.0.0.1:{sp}")
    s.wait_log("started process")
    for _ in range(3):
        assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
    screen = screen_of(f"{BIN} top 127.0.0.1:{sp}", lambda t: "FastCGI pools" in t and "php-cgi" in t)
    lines = screen.splitlines()
    header = next(line for line in lines if "POOL" in line)
    assert re.findall(r"[A-Z]+", header) == ["POOL", "BUSY", "IDLE", "QUEUE", "MAXQ", "REQ", "SLOW", "TOUT",
                                             "MAXCH"], header
    row = next(line for line in lines if "php-cgi" in line)
    # busy, idle, queue, max queue, requests, slow, timeouts, max children
    assert re.findall(r"\b\d+\b", row)[-8:] == ["0", "1", "0", "0", "3", "0", "0", "0"], row


@needs_php
def test_a_killed_pool_process_loses_only_its_request_and_is_replaced(serve, site):
    sp = free_port()
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1", "--stats", f"127.0.0.1:{sp}",
                 "--stats-http")
    first = requests.get(f"{s.url}/index.php", timeout=20).json()["pid"]
    # Crashed while it holds a request: that one gets a 502, not run twice.
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        held = ex.submit(requests.post, f"{s.url}/slow.php", data={"a": "1"}, timeout=20)
        time.sleep(0.5)  # not a timing assertion: the request is in the process either way
        os.kill(first, signal.SIGSEGV)
        assert held.result().status_code == 502
    # The 502's line names the request.
    assert "(POST /slow.php): " in s.log(), s.log()
    wait_for(lambda: not alive(first), what="the process to die")
    for _ in range(5):
        assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
    # Counted as a process that ended unasked (our own kills are not), and
    # no longer running.
    (pool,) = requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["fastcgi_pools"]
    assert (pool["process_exits"], pool["process_starts"], pool["processes"], pool["timeouts"]) == (1, 2, 1, 0), pool
    # Its socket is in a directory no other user may enter.
    sock = s.log().split("started process ")[1].split(" on ")[1].split()[0]
    assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700


@needs_php
@pytest.mark.parametrize("children", ["forked", "0"])
def test_max_requests_recycles_and_processes_outlive_a_worker(serve, site, children):
    """By default php-cgi's serving child is replaced at the cap by a fork
    of the process oxgate started; with PHP_FCGI_CHILDREN=0, oxgate
    replaces the process. The processes are the master's: a worker that
    dies takes none with it."""
    sp = free_port()
    extra = () if children == "forked" else ("--fastcgi-app-env", "PHP_FCGI_CHILDREN=0")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1", "--fastcgi-app-max-requests", "3",
                 "--stats", f"127.0.0.1:{sp}", "--stats-http", *extra)
    served = [requests.get(f"{s.url}/index.php", timeout=20).json() for _ in range(7)]
    pids = [j["pid"] for j in served]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    starts = 3 if children == "0" else 1
    if children == "forked":
        assert {j["ppid"] for j in served} == set(pool_pids(s))

    def pool():
        (p,) = requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["fastcgi_pools"]
        return {k: p[k] for k in ("accepted_conn", "process_recycles", "process_starts", "process_exits")}

    counts = {"accepted_conn": 7, "process_recycles": 2, "process_starts": starts, "process_exits": 0}
    assert pool() == counts
    worker = s.wait_workers(1)[0]
    os.kill(worker, 9)
    wait_for(lambda: s.wait_workers(1)[0] != worker, what="a new worker")
    # The process that served the 7th request serves the 8th, for the new
    # worker; the dead worker's counts are kept.
    assert requests.get(f"{s.url}/index.php", timeout=20).json()["pid"] == pids[6]
    assert pool() == {**counts, "accepted_conn": 8}


PERL_POOL_APP = r"""
use strict; use warnings; use FCGI;
my %env; my $req = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env);
while ($req->Accept() >= 0) {
    print "Content-Type: text/plain\r\n\r\nperl $env{SCRIPT_NAME} $env{PATH_INFO} $$\n";
}
"""

FLUP_POOL_APP = """
from flup.server.fcgi import WSGIServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"flup {environ['SCRIPT_NAME']} {environ['PATH_INFO']}\\n".encode()]

WSGIServer(app).run()
"""


def test_perl_and_flup_pools_on_fd_0(serve, tmp_path):
    (tmp_path / "app.pl").write_text(PERL_POOL_APP)
    (tmp_path / "flup_app.py").write_text(FLUP_POOL_APP)
    s = serve("--fastcgi-app", f"/perl=perl {tmp_path / 'app.pl'}",
              "--fastcgi-app", f"mount=/py,command={VENV / 'bin' / 'python'} {tmp_path / 'flup_app.py'},processes=2")
    assert requests.get(f"{s.url}/perl/a/b", timeout=20).text.startswith("perl /perl /a/b ")
    assert requests.get(f"{s.url}/py/c", timeout=20).text == "flup /py /c\n"
    assert requests.get(f"{s.url}/other", timeout=20).status_code == 404


# A process that outlives the one it came from, still in accept(2) on the
# socket: in its own session, out of reach of the group kill, as php-cgi's
# forked child is for a moment after its parent is killed.
PERL_POOL_APP_LEAVING_A_STRAY = r"""
use strict; use warnings; use FCGI; use POSIX ();
my $parent = $$;
if (fork() == 0) {
    POSIX::setsid();
    alarm 15;
    select(undef, undef, undef, 0.01) while getppid() == $parent;
    my $req = FCGI::Request();
    while ($req->Accept() >= 0) { print "Content-Type: text/plain\r\n\r\nstray\n"; }
    exit 0;
}
my $req = FCGI::Request();
while ($req->Accept() >= 0) { print "Content-Type: text/plain\r\n\r\nserved by $$\n"; }
"""


def test_a_process_left_from_a_replaced_one_takes_no_request_meant_for_its_successor(serve, tmp_path):
    """Each process is replaced after one request (its group killed); what
    is left of it, still accepting on the socket, answered "stray" to
    requests meant for the process that replaced it (under php-cgi, the
    child killed a moment after its parent took one and died with it: a
    502, "connection reset by peer")."""
    (tmp_path / "app.pl").write_text(PERL_POOL_APP_LEAVING_A_STRAY)
    s = serve("--fastcgi-app", f"perl {tmp_path / 'app.pl'}", "--processes", "1",
              "--fastcgi-app-processes", "1", "--fastcgi-app-max-requests", "1")
    answers = []
    for _ in range(12):
        r = requests.get(f"{s.url}/x", timeout=20)
        answers.append((r.status_code, r.text.split(" by ")[0]))
        # Time for the last one's stray to find itself alone and accept.
        time.sleep(0.1)
    assert answers == [(200, "served")] * 12, answers


def test_a_flup_pool_behind_nginxs_fastcgi_params_gets_its_requests_as_under_spawn_fcgi(serve, tmp_path):
    """nginx's fastcgi_params send SCRIPT_FILENAME to every FastCGI app (the
    seed article's block sends $fastcgi_script_name): a program that is not
    php-cgi is given it as sent, as under spawn-fcgi, and answers. (Every
    request was 404 "File not found.": php-fpm's .php-only rule was applied
    to every pool.)"""
    (tmp_path / "flup_app.py").write_text(FLUP_POOL_APP)
    fp = free_port()
    serve("--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1",
          "--fastcgi-app", f"{VENV / 'bin' / 'python'} {tmp_path / 'flup_app.py'}")
    params = " ".join(f"fastcgi_param {k} {v};" for k, v in [
        ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
        ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
        ("SCRIPT_NAME", "$fastcgi_script_name"), ("SCRIPT_FILENAME", "$fastcgi_script_name"),
        ("PATH_INFO", "$fastcgi_path_info"), ("REQUEST_URI", "$request_uri"), ("SERVER_NAME", "$server_name"),
        ("SERVER_PORT", "$server_port"), ("SERVER_PROTOCOL", "$server_protocol"), ("REMOTE_ADDR", "$remote_addr")])
    with nginx_serving(tmp_path, f"location / {{ fastcgi_pass 127.0.0.1:{fp}; {params} }}") as port:
        r = requests.get(f"http://127.0.0.1:{port}/foo/bar?x=1", timeout=20)
        assert (r.status_code, r.text) == (200, "flup /foo/bar \n"), r.text
    # The seed articles' block: PATH_INFO and SCRIPT_FILENAME, and no
    # SCRIPT_NAME. The app routes on PATH_INFO, as spawn-fcgi gives it.
    params = " ".join(f"fastcgi_param {k} {v};" for k, v in [
        ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
        ("SCRIPT_FILENAME", "$fastcgi_script_name"), ("PATH_INFO", "$fastcgi_script_name"),
        ("SERVER_NAME", "$server_name"), ("SERVER_PORT", "$server_port"),
        ("SERVER_PROTOCOL", "$server_protocol"), ("REMOTE_ADDR", "$remote_addr")])
    (tmp_path / "second").mkdir()
    with nginx_serving(tmp_path / "second", f"location / {{ fastcgi_pass 127.0.0.1:{fp}; {params} }}") as port:
        r = requests.get(f"http://127.0.0.1:{port}/env?a=1", timeout=20)
        assert (r.status_code, r.text) == (200, "flup  /env\n"), r.text


@needs_php
def test_pm_static_starts_every_process_at_once(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "3", "--processes", "1")
    wait_for(lambda: len(pool_pids(s)) == 3, what="three processes with no request")
    assert all(alive(p) for p in pool_pids(s))


@needs_php
def test_pm_ondemand_starts_at_zero_and_returns_to_zero(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-pm", "ondemand", "--fastcgi-app-idle-timeout", "1",
                 "--fastcgi-app-processes", "2", "--processes", "1")
    # Ready, and no process yet.
    assert requests.get(f"{s.url}/style.css", timeout=20).status_code == 200
    assert pool_pids(s) == []
    j = requests.get(f"{s.url}/index.php", timeout=20).json()
    # php-cgi's child serves, forked by the process oxgate started.
    pid = j["ppid"]
    assert pool_pids(s) == [pid]
    wait_for(lambda: not alive(pid) and not alive(j["pid"]), what="the idle process and its child to stop")
    assert "idle" in s.log()
    # And it starts again when needed.
    assert requests.get(f"{s.url}/index.php", timeout=20).json()["ppid"] != pid


@needs_php
def test_php_cgis_child_does_not_outlive_its_parent(serve, site):
    """php-cgi's forked child has no parent-death signal of its own: when
    the process oxgate started dies, the child goes with it, at once, not
    when the slot is next used (ondemand starts none meanwhile)."""
    s = php_pool(serve, site, "--fastcgi-app-pm", "ondemand", "--fastcgi-app-idle-timeout", "60",
                 "--fastcgi-app-processes", "1", "--processes", "1")
    j = requests.get(f"{s.url}/index.php", timeout=20).json()
    assert pool_pids(s) == [j["ppid"]]
    os.kill(j["ppid"], signal.SIGKILL)
    wait_for(lambda: not alive(j["pid"]), what="the orphaned child to be killed")
    assert requests.get(f"{s.url}/index.php", timeout=20).json()["ppid"] != j["ppid"]


@needs_php
@pytest.mark.parametrize("how", ["idle stop", "timeout", "reload"])
def test_a_job_a_script_left_in_the_background_outlives_its_php_process(serve, site, tmp_path, how):
    """`exec("cmd > /dev/null 2>&1 &")` (a video to encode, a queue to
    kick): php-fpm signals its children one by one, and the job runs on
    when the child that started it is stopped. oxgate killed the process's
    whole group, the job with it, at every idle stop, timeout and reload."""
    (site / "bg.php").write_text(
        "<?php $job = exec('nohup sleep 60 > /dev/null 2>&1 & echo $!');"
        " file_put_contents(__DIR__ . '/job.pid', $job . ' ' . getmypid()); echo $job;"
        " if (isset($_GET['then_sleep'])) sleep(30);")
    s = php_pool(serve, site, "--fastcgi-app-pm", "ondemand", "--fastcgi-app-idle-timeout", "1",
                 "--fastcgi-app-timeout", "2", "--fastcgi-app-processes", "1", "--processes", "1")
    if how == "timeout":
        r = requests.get(f"{s.url}/bg.php?then_sleep=1", timeout=20)
        assert r.status_code == 504, r.text
        s.wait_log("no response within --fastcgi-app-timeout")
    else:
        requests.get(f"{s.url}/bg.php", timeout=20)
    job, child = map(int, (site / "job.pid").read_text().split())
    php = pool_pids(s)[0]
    try:
        if how == "idle stop":
            s.wait_log("idle")
        elif how == "reload":
            os.kill(s.proc.pid, signal.SIGHUP)
            s.wait_log("reload done")
        wait_for(lambda: not alive(php), what="the php process to be stopped")
        # Its forked child went with it, and the job did not.
        wait_for(lambda: not alive(child), what="php-cgi's child to be stopped")
        assert alive(job), s.log()
        assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
    finally:
        if alive(job):
            os.kill(job, signal.SIGKILL)


@needs_php
@pytest.mark.parametrize("wrapper", ["timeout 3600"])
def test_php_cgi_behind_a_wrapper_leaves_no_process_when_stopped(serve, site, wrapper):
    """`timeout` forks php-cgi, whose own setsid() then makes it lead a
    group of its own: stopping the pool process (the wrapper) must stop
    php-cgi's serving child too. It was left orphaned, serving on, at each
    idle stop."""
    (site / "pid.php").write_text("<?php echo getmypid();")
    s = serve("--fastcgi-app", f"{wrapper} php-cgi", "--fastcgi-app-docroot", str(site),
              "--fastcgi-app-pm", "ondemand", "--fastcgi-app-idle-timeout", "1", "--fastcgi-app-processes", "1",
              "--processes", "1")
    child = int(requests.get(f"{s.url}/pid.php", timeout=20).text)
    s.wait_log("idle")
    wait_for(lambda: not alive(child), what="php-cgi's serving child to be stopped")


@needs_php
def test_a_full_pool_is_said_in_the_log_as_php_fpm_says_it(serve, site):
    """php-fpm's "server reached pm.max_children setting, consider raising
    it", the line pools are sized by: requests queued in silence, counted
    only in the stats."""
    (site / "nap.php").write_text("<?php usleep(1500000); echo 'rested';")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--fastcgi-app-pm", "static", "--processes", "1")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{s.url}/nap.php", timeout=30).text, range(3)))
    assert answers == ["rested"] * 3
    assert s.log().count("its one process is busy and requests wait") == 1, s.log()
    assert "consider raising --fastcgi-app-processes" in s.log()


@needs_php
def test_pm_dynamic_keeps_spare_processes(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-pm", "dynamic", "--fastcgi-app-spare", "2:2",
                 "--fastcgi-app-processes", "4", "--processes", "1")
    wait_for(lambda: len(pool_pids(s)) == 2, what="the two spare processes")


@needs_php
@pytest.mark.parametrize("command", ["php-cgi", "copy", "link", "env PHPRC=/nonexistent php-cgi", "nice -n 1 php-cgi"])
def test_without_a_document_root_only_a_php_file_the_front_end_names_runs(serve, site, tmp_path, command):
    """php-fpm's security.limit_extensions: the front end's SCRIPT_FILENAME
    runs only if it is a .php file that is there. php-cgi would otherwise
    walk back from /uploads/evil.jpg/x.php and run the image, and any file
    a front end names (/etc/passwd) would be read out."""
    (site / "uploads").mkdir()
    (site / "uploads" / "evil.jpg").write_text("<?php echo 'PWNED';")
    (site / "hello.php").write_text("<?php echo 'hello';")
    # php-cgi under another name (Debian's /usr/lib/cgi-bin/php8.2 is one),
    # or behind a wrapper, is php-cgi still: the check is not lost.
    if command in ("copy", "link"):
        renamed = tmp_path / "bin" / "php8.2"
        renamed.parent.mkdir()
        if command == "copy":
            shutil.copy(shutil.which("php-cgi"), renamed)
        else:
            renamed.symlink_to(shutil.which("php-cgi"))
        command = str(renamed)
    port = free_port()
    serve("--uwsgi-socket", f"127.0.0.1:{port}", "--fastcgi-app", command, "--processes", "1")

    def run(script_name, filename):
        return uwsgi_request(port, cgi(path=script_name, extra=[
            ("SCRIPT_NAME", script_name), ("SCRIPT_FILENAME", filename), ("DOCUMENT_ROOT", str(site))]))

    assert run("/hello.php", str(site / "hello.php")).endswith(b"hello")
    for name, filename in [("/uploads/evil.jpg/x.php", str(site / "uploads/evil.jpg/x.php")),
                           ("/uploads/evil.jpg", str(site / "uploads/evil.jpg")), ("/x", "/etc/passwd")]:
        out = run(name, filename)
        assert b" 404 " in out.split(b"\r\n")[0] and b"PWNED" not in out and b"root:" not in out, (name, out)


@needs_php
def test_the_command_is_split_as_a_shell_splits_it(serve, site):
    (site / "tz.php").write_text("<?php echo ini_get('date.timezone'), '|', ini_get('error_log');")
    s = serve("--fastcgi-app", "php-cgi -d 'date.timezone=Europe/Paris' -d \"error_log=/tmp/php errors.log\"",
              "--fastcgi-app-docroot", str(site), "--processes", "1")
    assert requests.get(f"{s.url}/tz.php", timeout=10).text == "Europe/Paris|/tmp/php errors.log"


@needs_php
def test_a_get_has_the_variables_nginxs_fastcgi_params_always_send(serve, site):
    (site / "vars.php").write_text("<?php echo json_encode([$_SERVER['CONTENT_TYPE'], $_SERVER['CONTENT_LENGTH'],"
                                   " $_SERVER['DOCUMENT_URI'], $_SERVER['SERVER_ADDR'] ?? null]);")
    s = php_pool(serve, site, "--processes", "1")
    assert requests.get(f"{s.url}/vars.php/more?q=1", timeout=10).json() == ["", "", "/vars.php/more", "127.0.0.1"]


def test_a_command_that_cannot_start_is_answered_502_not_left_waiting(serve, tmp_path):
    """An interpreter that is not there (a bad #! line, a php-cgi removed
    since the start): each request gets 502 at once, as nginx gives it
    with php-fpm down, instead of waiting for a process that never comes."""
    bad = tmp_path / "badshebang"
    bad.write_text("#!/nonexistent/interp\n")
    bad.chmod(0o755)
    s = serve("--fastcgi-app", str(bad), "--processes", "1", "--fastcgi-app-timeout", "30")
    for _ in range(3):
        assert requests.get(f"{s.url}/x.php", timeout=10).status_code == 502
    assert "cannot start" in s.log()


def test_a_command_that_exits_at_once_is_answered_502_not_queued_behind_its_back_off(serve, tmp_path):
    """A command that starts but exits at once (a script with a syntax
    error): the requests waiting while it is started again, with a growing
    delay, get their 502 then, not one by one as each new try dies (4 at
    once took 0 to 9 s here, 23 to 49 s in the review's trial)."""
    broken = tmp_path / "broken.fcgi"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    s = serve("--fastcgi-app", str(broken), "--processes", "1", "--fastcgi-app-processes", "2")
    # Its first tries have died, and the back-off has grown to 12.8 s.
    wait_for(lambda: s.log().count("ended (exit status: 1)") >= 7, timeout=40, what="seven quick deaths")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: requests.get(f"{s.url}/x", timeout=5).status_code, range(4)))
    assert codes == [502] * 4


def test_bad_pool_options_are_clear_errors():
    from helpers import run_fail
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-app", "mount=/x,processes=2")
    assert code == 2 and "no command=" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-app", "no-such-fcgi-program")
    assert code != 0 and "no program" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-app", "php-cgi", "--fastcgi-app-spare", "3:1")
    assert code == 2 and "MIN:MAX" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-app", "php-cgi", "--fastcgi-app-pm", "lazy")
    assert code == 2 and "fastcgi-app-pm" in err
    # A size of none, or past 1024, is refused as php-fpm refuses it (it ran
    # 4 and 1024 processes without a word).
    for n in ("0", "-3", "2000"):
        code, err = run_fail("--http-socket", "127.0.0.1:0", "--fastcgi-app", "php-cgi", "--fastcgi-app-processes", n)
        assert code == 2 and "from 1 to 1024" in err, (n, err)


@needs_php
def test_a_client_that_stops_mid_response_frees_its_process(serve, site):
    """Cut off after the head, by a script that runs on past the grace an
    abandoned request gets: the process is replaced, and the next request
    is served then, not queued behind the rest of the script."""
    (site / "stream.php").write_text("<?php while (ob_get_level()) ob_end_flush(); echo 'first'; flush(); sleep(30); echo 'late';")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1", "--fastcgi-app-timeout", "3")
    with requests.get(f"{s.url}/stream.php", stream=True, timeout=20) as r:
        assert next(r.iter_content(chunk_size=None)).startswith(b"first")
        first = pool_pids(s)[-1]
    wait_for(lambda: not alive(first), what="the abandoned process to be killed")
    assert requests.get(f"{s.url}/index.php", timeout=10).status_code == 200


@needs_php
def test_a_client_that_reads_slowly_holds_no_process(serve, site):
    """The response is read ahead of the client, as nginx buffers a
    FastCGI response (256 KiB in memory, the rest in a temporary file):
    with one process, a client that has not read its 12 MB page (more
    than the kernel's socket buffers take, ~4 MB) leaves the process free
    for the next request, and then gets the page whole."""
    (site / "page.php").write_text("<?php echo str_repeat('0123456789abcdef', 750000);")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1")
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(b"GET /page.php HTTP/1.0\r\nHost: x\r\n\r\n")
        answer = c.recv(4096)
        assert answer.startswith(b"HTTP/1.0 200"), answer
        # Reads no more for now: were the process still writing the page,
        # this request would wait for it.
        r = requests.get(f"{s.url}/index.php", timeout=5)
        assert r.status_code == 200
        while chunk := c.recv(1 << 20):
            answer += chunk
    assert answer.partition(b"\r\n\r\n")[2] == b"0123456789abcdef" * 750000


@needs_php
@pytest.mark.parametrize("pm", ["dynamic", "static"])
def test_a_get_whose_process_dies_mid_request_is_502_and_not_run_again(serve, site, tmp_path, pm):
    """A GET on a kept connection whose process is killed while it runs the
    script gets a 502, as under php-fpm: it was sent again on a new
    connection (taken for a kept connection closed as the request went
    out), and its script ran twice (a mailer, a counter)."""
    runs = tmp_path / "runs"
    (site / "once.php").write_text(
        f"<?php file_put_contents('{runs}', getmypid() . \"\\n\", FILE_APPEND); sleep(3); echo 'done';")
    s = php_pool(serve, site, "--processes", "1", "--fastcgi-app-processes", "2", "--fastcgi-app-pm", pm)
    requests.get(f"{s.url}/index.php", timeout=20)  # a kept connection to a process
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        held = ex.submit(requests.get, f"{s.url}/once.php", timeout=20)
        pid = int(wait_for(lambda: runs.exists() and runs.read_text().split()[0], what="the script to start"))
        # Not a timing assertion: the script sleeps 3 s either way, and a
        # close this late (past the 200 ms of one as the request went out)
        # is a process that was running it.
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        assert held.result().status_code == 502
    time.sleep(0.5)  # not a timing assertion: a second run would have started at once
    assert runs.read_text().split() == [str(pid)]


@needs_php
def test_a_process_that_crashes_mid_request_is_logged_with_how_it_ended(serve, site):
    """A script that crashes its process (a segfaulting extension): the 502
    names the request, and the process's end is logged with its signal, as
    php-fpm logs "exited on signal 11 (SIGSEGV)"; it was taken for one the
    pool had killed, and not logged."""
    (site / "segv.php").write_text("<?php posix_kill(posix_getpid(), 11); sleep(5);")
    # (Without php-cgi's own fork, whose children php-cgi reaps.)
    s = php_pool(serve, site, "--processes", "1", "--fastcgi-app-processes", "1", "--fastcgi-app-pm", "static",
                 "--fastcgi-app-env", "PHP_FCGI_CHILDREN=0")
    pid = requests.get(f"{s.url}/index.php", timeout=20).json()["pid"]
    assert requests.get(f"{s.url}/segv.php", timeout=20).status_code == 502
    wait_for(lambda: f"process {pid} ended (signal: 11" in s.log(), what="the crash's line", show=s.log)
    assert "(GET /segv.php): " in s.log()


@needs_php
def test_a_client_that_leaves_frees_its_process(serve, site):
    """A request given up by its client, whose script runs on past the
    grace, gives its process back (replaced): the next request is served,
    not queued behind the rest of the script."""
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1", "--fastcgi-app-timeout", "3")
    first = requests.get(f"{s.url}/index.php", timeout=20).json()["pid"]
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{s.url}/slow.php", timeout=1)
    wait_for(lambda: not alive(first), what="the abandoned process to be killed")
    r = requests.get(f"{s.url}/index.php", timeout=10)
    assert r.status_code == 200 and r.json()["pid"] != first


@needs_php
def test_fire_and_forget_work_runs_to_its_end_as_under_php_fpm(serve, site, tmp_path):
    """WordPress's wp-cron: a loopback request with a tiny timeout, whose
    script sets ignore_user_abort(true) and works on for seconds; it was
    killed 5 s after its client left."""
    marker = tmp_path / "cron"
    (site / "cron.php").write_text(
        "<?php ignore_user_abort(true); file_put_contents('" + str(marker) + "', 'start');"
        " sleep(7); file_put_contents('" + str(marker) + "', 'done');")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{s.url}/cron.php", timeout=0.5)
    wait_for(lambda: marker.exists() and marker.read_text() == "done", timeout=30, what="the cron script's end")


@needs_php
def test_a_script_whose_client_leaves_runs_to_its_end_and_keeps_its_process(serve, site, tmp_path):
    """A client that leaves, before the head or mid-response, does not have
    the script killed mid-way (a half-written file, a lost session): as
    under php-fpm, it runs to its end, its output dropped, within a grace
    of a few seconds, and its process serves the next request."""
    done = tmp_path / "done"
    (site / "finish.php").write_text(
        "<?php while (ob_get_level()) ob_end_flush();"
        " if (isset($_GET['early'])) { echo 'first'; flush(); }"
        " usleep(1500000); echo str_repeat('x', 100000);"
        f" file_put_contents('{done}-' . $_GET['n'], getmypid());")
    s = php_pool(serve, site, "--fastcgi-app-processes", "1", "--processes", "1")
    pid = requests.get(f"{s.url}/index.php", timeout=20).json()["pid"]
    # Leaves before the head.
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{s.url}/finish.php?n=1", timeout=0.5)
    # Leaves after the first bytes.
    with requests.get(f"{s.url}/finish.php?n=2&early=1", stream=True, timeout=20) as r:
        assert next(r.iter_content(chunk_size=None)).startswith(b"first")
    for n in (1, 2):
        marker = tmp_path / f"done-{n}"
        wait_for(marker.exists, what=f"script {n} to finish")
        assert marker.read_text() == str(pid)
    assert requests.get(f"{s.url}/index.php", timeout=20).json()["pid"] == pid
    assert alive(pid)


@needs_php
def test_reloads_under_load_fail_no_pool_request(serve, site):
    """A graceful reload's new workers start new processes while the old
    workers finish their requests on the old ones."""
    from helpers import Load
    s = php_pool(serve, site, "--fastcgi-app-processes", "4", "--processes", "2")
    s.wait_workers(2)
    load = Load(f"{s.url}/index.php")
    for _ in range(5):
        before = s.log().count("reload done")
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(lambda: s.log().count("reload done") > before, timeout=30, what="the reload")
    load.finish()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50


BARRIER = """<?php
// Each request waits (10 s at most) until two have come in this round:
// two run at once, or the first answers 1.
$dir = sys_get_temp_dir() . '/oxgate-barrier-' . basename($_GET['round']);
@mkdir($dir);
touch("$dir/" . getmypid());
for ($i = 0; $i < 200 && count(glob("$dir/*")) < 2; $i++) usleep(50000);
echo count(glob("$dir/*"));
"""


@needs_php
def test_every_worker_shares_the_pools_processes(serve, site):
    """--fastcgi-app-processes is the pool's total, and any worker takes any
    idle process: two requests run at once on the two processes whichever
    worker accepted them (often the same one)."""
    (site / "barrier.php").write_text(BARRIER)
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "2", "--processes", "2")
    s.wait_workers(2)
    wait_for(lambda: len(pool_pids(s)) == 2, what="the two processes")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        for n in range(6):
            url = f"{s.url}/barrier.php?round={os.getpid()}-{n}-{time.time_ns()}"
            assert list(ex.map(lambda _: requests.get(url, timeout=20).text, range(2))) == ["2", "2"]
    assert len(pool_pids(s)) == 2


@needs_php
def test_a_killed_worker_gives_up_the_processes_it_held(serve, site):
    """A worker killed mid-request (harakiri, OOM) cannot give back the
    processes it held, busy or idle: the manager replaces them, and the
    next worker has the whole pool."""
    (site / "barrier.php").write_text(BARRIER)
    started = site / "held-started"
    (site / "held.php").write_text(f"<?php touch('{started}'); sleep(30);")
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "2", "--processes", "1")
    wait_for(lambda: len(pool_pids(s)) == 2, what="the two processes")
    for _ in range(3):
        assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        held = ex.submit(requests.get, f"{s.url}/held.php", timeout=20)
        wait_for(started.exists, what="the held request to run")
        (worker,) = s.wait_workers(1)
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(requests.RequestException):
            held.result()
    wait_for(lambda: s.wait_workers(1)[0] != worker, what="a new worker")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        url = f"{s.url}/barrier.php?round={os.getpid()}-killed-{time.time_ns()}"
        assert list(ex.map(lambda _: requests.get(url, timeout=30).text, range(2))) == ["2", "2"]


@needs_php
def test_a_worker_replaced_mid_request_leaves_its_idle_processes_to_its_successor(serve, site):
    """A worker replaced (here at --max-requests) finishes its long request
    while its successor serves: the processes it kept idle, with their
    connections, are the successor's at once, not when it ends."""
    started = site / "held-started"
    (site / "held.php").write_text(f"<?php touch('{started}'); sleep(12);")
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "2", "--processes", "1",
                 "--max-requests", "2", "--min-worker-lifetime", "0")
    wait_for(lambda: len(pool_pids(s)) == 2, what="the two processes")
    (first,) = s.wait_workers(1)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        held = ex.submit(requests.get, f"{s.url}/held.php", timeout=60)
        wait_for(started.exists, what="the held request to run")
        for _ in range(2):
            assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
        wait_for(lambda: any(p != first for p in s.worker_pids()), what="the successor")
        (successor,) = [p for p in s.worker_pids() if p != first]
        # Until the first worker stops taking requests, either may take one;
        # the successor's are served at once, on the other process. (It
        # takes connections once it has started, which on a loaded machine
        # may be after many quick requests.)
        deadline, n = time.monotonic() + 8, 0
        while True:
            n += 1
            assert requests.get(f"{s.url}/index.php?n={n}", timeout=5).status_code == 200
            line = wait_for(lambda: next((line for line in s.log().splitlines()
                                          if f"index.php?n={n} " in line), None), what=f"request {n} logged")
            if f"[pid: {successor}|" in line:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the successor served none:\n{s.log()}")
            time.sleep(0.02)
        assert alive(first)
        assert held.result().status_code == 200


@needs_php
def test_two_workers_and_one_process_make_one_process(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "1", "--processes", "2")
    s.wait_workers(2)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        served = list(ex.map(lambda _: requests.get(f"{s.url}/index.php", timeout=20).json()["ppid"], range(40)))
    assert set(served) == set(pool_pids(s)) and len(pool_pids(s)) == 1


@needs_php
def test_a_reload_replaces_the_pool_and_the_old_one_ends(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "2", "--processes", "1")
    wait_for(lambda: len(pool_pids(s)) == 2, what="the two processes")
    old_manager = s.pool_manager_pid()
    old = pool_pids(s)
    old_dir = os.path.dirname(s.log().split("started process ")[1].split(" on ")[1].split()[0])
    os.kill(s.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload done" in s.log(), timeout=30, what="the reload")
    wait_for(lambda: len(pool_pids(s)) == 4, what="the new pool's processes")
    # The old manager ends once the old worker is gone, with its processes
    # and their sockets.
    wait_for(lambda: not alive(old_manager) and not any(alive(p) for p in old) and not os.path.exists(old_dir),
             what="the old pool to end")
    assert s.pool_manager_pid() not in (None, old_manager)
    assert requests.get(f"{s.url}/index.php", timeout=20).json()["ppid"] in pool_pids(s)[2:]


@needs_php
def test_a_killed_pool_manager_is_started_again_and_its_processes_replaced(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-pm", "static", "--fastcgi-app-processes", "2", "--processes", "1")
    wait_for(lambda: len(pool_pids(s)) == 2, what="the two processes")
    manager, old = s.pool_manager_pid(), pool_pids(s)
    assert requests.get(f"{s.url}/index.php", timeout=20).status_code == 200
    os.kill(manager, signal.SIGKILL)
    # Its processes die with it; the master starts another, which starts
    # new ones, and the worker uses them.
    wait_for(lambda: not any(alive(p) for p in old), what="the old processes to die with their manager")
    wait_for(lambda: len(pool_pids(s)) == 4, timeout=20, what="new processes")
    assert "FastCGI pool manager (pid" in s.log()
    assert requests.get(f"{s.url}/index.php", timeout=20).json()["ppid"] in pool_pids(s)[2:]


@needs_php
def test_a_single_process_runs_the_pool_itself(serve, site):
    s = php_pool(serve, site, "--no-master", "--fastcgi-app-processes", "2")
    j = requests.get(f"{s.url}/index.php", timeout=20).json()
    assert j["ppid"] in pool_pids(s)
    sock_dir = os.path.dirname(s.log().split("started process ")[1].split(" on ")[1].split()[0])
    s.stop()
    assert not alive(j["ppid"]) and not os.path.exists(sock_dir)


@needs_php
def test_a_stop_takes_the_pool_and_its_sockets_with_it(serve, site):
    s = php_pool(serve, site, "--fastcgi-app-processes", "2", "--processes", "1")
    pid = requests.get(f"{s.url}/index.php", timeout=20).json()["pid"]
    sock_dir = os.path.dirname(s.log().split("started process ")[1].split(" on ")[1].split()[0])
    assert os.path.isdir(sock_dir)
    s.stop()
    assert not alive(pid) and not os.path.exists(sock_dir)


@needs_php
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it)")
def test_a_small_php_request_and_its_answer_each_go_in_one_write(serve, site, tmp_path):
    """Each process on the way reads a FastCGI record at a time and wakes
    once for a request that arrives whole: the request to the pool goes in
    one write, its empty STDIN with it, and the answer to the front end in
    one write, END_REQUEST with it."""
    (site / "hello.php").write_text("<?php echo 'hello';")
    fp = free_port()
    s = php_pool(serve, site, "--fastcgi-socket", f"127.0.0.1:{fp}", "--fastcgi-app-processes", "1",
                 "--processes", "1")
    params = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/hello.php"), ("REQUEST_URI", "/hello.php"),
              ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "127.0.0.1")]

    def ask():
        with socket.create_connection(("127.0.0.1", fp), timeout=10) as sock:
            sock.sendall(fcgi_request(1, params))
            return stdout_of(read_records(sock), 1)

    assert ask().endswith(b"hello")  # the process is running
    (worker,) = s.wait_workers(1)
    with traced_calls([worker], "sendto,write,writev", tmp_path) as traced:
        assert ask().endswith(b"hello")
        wait_for(lambda: '"\\1\\6\\0\\1' in traced(), what="the traced answer")
        time.sleep(0.5)  # not a timing assertion: a second write, if any, is traced too
    writes = [line for line in traced().splitlines() if re.match(r"(sendto|write|writev)\(", line)]
    to_pool = [w for w in writes if '"\\1\\1\\0\\1' in w]  # BEGIN_REQUEST first
    to_front = [w for w in writes if '"\\1\\6\\0\\1' in w]  # STDOUT first
    assert len(to_pool) == 1 and len(to_front) == 1, writes
    # One write each: nothing else to either socket.
    fd = lambda w: re.match(r"\w+\((\d+),", w)[1]
    assert [w for w in writes if fd(w) in (fd(to_pool[0]), fd(to_front[0]))] == to_pool + to_front, writes


# Debian's nginx site for php-fpm, as its default site shows it: only the
# socket's path names the server behind.
def stop(*processes):
    """Stops nginx and php-fpm (None where there is none)."""
    for p in processes:
        if p:
            p.terminate()
            p.wait(10)


NGINX_PHP_FPM_SITE = """
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}/tmp; upstream php {{ server unix:{sock}; {keepalive} }}
  server {{ listen 127.0.0.1:{port}; root {site}; index index.php index.html;
    location / {{ try_files $uri $uri/ /index.php?$args; }}
    location ~ \\.php$ {{ include snippets/fastcgi-php.conf; fastcgi_pass php; {keep_conn} }}
  }}
}}
"""


@needs_php
@pytest.mark.skipif(not os.path.exists("/etc/nginx/snippets/fastcgi-php.conf"),
                    reason="needs Debian's nginx snippets (scripts/test.sh installs nginx)")
@pytest.mark.parametrize("server", ["php-fpm", "oxgate", "oxgate, nginx keeping its connections",
                                    "oxgate with no document root of its own"])
def test_oxgate_takes_php_fpms_place_behind_an_unchanged_nginx_site(serve, site, tmp_path, server):
    """Debian's nginx site for php-fpm (snippets/fastcgi-php.conf, the
    front controller in try_files) answers the same with oxgate's pool on
    php-fpm's socket as with php-fpm itself: scripts, PATH_INFO, the query,
    POST, uploads and sessions. And with nginx keeping its connections to
    oxgate (which php-fpm's children cannot take: each would sit on one)."""
    sock = tmp_path / "php.sock"
    if server == "php-fpm":
        fpm = start_php_fpm(tmp_path, site, sock)
    elif "no document root" in server:
        # As php-fpm runs: the script is the SCRIPT_FILENAME nginx sends.
        serve("--fastcgi-app", f"php-cgi -d session.save_path={site / 'sessions'}", "--fastcgi-socket", str(sock),
              "--fastcgi-app-processes", "2")
        fpm = None
    else:
        php_pool(serve, site, "--fastcgi-socket", str(sock), "--fastcgi-app-processes", "2")
        fpm = None
    port = free_port()
    d = tmp_path / "nginx"
    # Its includes, where nginx looks for them: beside its nginx.conf.
    shutil.copytree("/etc/nginx/snippets", d / "snippets")
    shutil.copy("/etc/nginx/fastcgi.conf", d)
    keep = "keeping" in server
    nginx = start_nginx(d, port, NGINX_PHP_FPM_SITE.format(
        d=d, port=port, site=site, sock=sock, keepalive="keepalive 4;" if keep else "",
        keep_conn="fastcgi_keep_conn on;" if keep else ""))
    try:
        base = f"http://127.0.0.1:{port}"
        j = requests.get(f"{base}/blog/2024/hello?page=2", timeout=20).json()
        assert (j["uri"], j["script"], j["get"], j["file"]) == (
            "/blog/2024/hello?page=2", "/index.php", {"page": "2"}, str(site / "index.php"))
        # (Not a `\.php$` location: try_files sends it to the front
        # controller, with no PATH_INFO.)
        j = requests.get(f"{base}/index.php/tail?a=1", timeout=20).json()
        assert (j["uri"], j["script"], j["info"], j["get"]) == ("/index.php/tail?a=1", "/index.php", "", {"a": "1"})
        assert requests.get(f"{base}/admin/", timeout=20).text == "admin index"
        data = os.urandom(50_000)
        r = requests.post(f"{base}/index.php", data={"x": "y"}, files={"f": ("up.bin", data)}, timeout=20)
        assert r.json()["post"] == {"x": "y"} and r.json()["file_up"] == ["up.bin", hashlib.sha1(data).hexdigest()]
        with requests.Session() as session:
            assert [session.get(f"{base}/", timeout=20).json()["n"] for _ in range(3)] == [1, 2, 3]
        assert requests.get(f"{base}/missing.php", timeout=20).status_code == 404
        assert requests.get(f"{base}/style.css", timeout=20).text == "body { color: red }\n"
    finally:
        stop(nginx, fpm)



NGINX_TWO_ROOTS = """
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}/tmp;
  server {{ listen 127.0.0.1:{port}; root {other};
    location = /who.php {{ include fastcgi.conf; fastcgi_pass unix:{sock}; }}
    location /aliased/ {{ alias {aliased}/;
      location ~ \\.php$ {{ include fastcgi.conf; fastcgi_param SCRIPT_FILENAME $request_filename;
                             fastcgi_pass unix:{sock}; }} }}
  }}
}}
"""


@needs_php
@pytest.mark.parametrize("server", ["php-fpm", "oxgate"])
def test_behind_nginx_the_script_run_is_the_one_nginx_names_as_under_php_fpm(serve, site, tmp_path, server):
    """A pool with a document root of its own, behind an nginx site whose
    `root` (or `alias`) is elsewhere (one pool for many sites; Debian's
    adminer and dokuwiki snippets alias): the script run is the
    SCRIPT_FILENAME nginx sends, as php-fpm runs it. oxgate ran the file of
    that name under its own document root (other code), or answered 404."""
    other = tmp_path / "other"
    aliased = tmp_path / "aliased"
    for d in (other, aliased):
        d.mkdir()
        (d / "who.php").write_text(f"<?php echo '{d.name} ', $_SERVER['SCRIPT_FILENAME'];")
    (site / "who.php").write_text("<?php echo 'the pool document root';")
    sock = tmp_path / "php.sock"
    fpm = None
    if server == "php-fpm":
        fpm = start_php_fpm(tmp_path, site, sock)
    else:
        php_pool(serve, site, "--fastcgi-socket", str(sock), "--fastcgi-app-processes", "1")
    port = free_port()
    d = tmp_path / "nginx"
    d.mkdir()
    shutil.copy("/etc/nginx/fastcgi.conf", d)
    nginx = start_nginx(d, port, NGINX_TWO_ROOTS.format(d=d, port=port, other=other, aliased=aliased, sock=sock))
    try:
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/who.php", timeout=20).text == f"other {other}/who.php"
        assert requests.get(f"{base}/aliased/who.php", timeout=20).text == f"aliased {aliased}/who.php"
    finally:
        stop(nginx, fpm)


@needs_php
def test_links_out_of_the_document_root_are_followed_where_static_safe_allows(serve, site, tmp_path):
    """Debian's dokuwiki links lib/tpl and lib/plugins out of its
    document root: --static-safe allows where they lead, for the pool's
    document root as for static files (its images and scripts were 403
    whatever it said). A link elsewhere stays 403."""
    outside = tmp_path / "var-lib" / "tpl"
    outside.mkdir(parents=True)
    (outside / "logo.txt").write_text("logo")
    (outside / "main.php").write_text("<?php echo 'template';")
    (site / "tpl").symlink_to(outside)
    (site / "etc").symlink_to(tmp_path / "nginx-nowhere", target_is_directory=True)
    (tmp_path / "nginx-nowhere").mkdir()
    (tmp_path / "nginx-nowhere" / "x.php").write_text("<?php echo 'elsewhere';")
    s = php_pool(serve, site, "--static-safe", str(tmp_path / "var-lib"))
    assert requests.get(s.url + "/tpl/logo.txt", timeout=20).text == "logo"
    assert requests.get(s.url + "/tpl/main.php", timeout=20).text == "template"
    assert requests.get(s.url + "/etc/x.php", timeout=20).status_code == 403


def test_an_answer_short_of_its_content_length_goes_out_then_is_cut(serve, tmp_path):
    """As nginx passes it on: the head and the bytes there are, then the
    connection closes, so the client knows the body is short (before, it
    got nothing at all)."""
    s, _ = misbehaving(serve, tmp_path, 'reply = lambda n: rec(6, 1, b"Content-Type: text/plain\\r\\n'
                                        'Content-Length: 100\\r\\n\\r\\nshort") + rec(6, 1) + rec(3, 1, bytes(8))')
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    try:
        c.request("GET", "/x")
        r = c.getresponse()
        assert (r.status, r.getheader("content-length")) == (200, "100")
        with pytest.raises(http.client.IncompleteRead) as cut:
            r.read()
        assert cut.value.partial == b"short"
    finally:
        c.close()
    wait_for(lambda: "ended 95 bytes short of its Content-Length" in s.log(), what="the log line")


@needs_php
def test_a_php_site_under_apaches_proxypass_prefix_over_uwsgi(serve, site):
    """Apache's `ProxyPass /shop uwsgi://...` sends SCRIPT_NAME=/shop and
    the rest as PATH_INFO: the script is PATH_INFO's under the document
    root, and PHP sees its whole URL (every page was a 404)."""
    (site / "who.php").write_text("<?php echo $_SERVER['SCRIPT_NAME'], '|', $_SERVER['PATH_INFO'] ?? '', '|',"
                                  " $_SERVER['SCRIPT_FILENAME'];")
    port = free_port()
    php_pool(serve, site, "--uwsgi-socket", f"127.0.0.1:{port}")

    def get(path_info):
        out = uwsgi_request(port, packet([
            ("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/shop"), ("PATH_INFO", path_info), ("QUERY_STRING", ""),
            ("REQUEST_URI", "/shop" + path_info), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "127.0.0.1"),
            ("SERVER_NAME", "x"), ("SERVER_PORT", "80"), ("HTTP_HOST", "x")]))
        return out.split(b"\r\n", 1)[0], out.split(b"\r\n\r\n", 1)[1]

    status, body = get("/who.php/extra")
    assert b" 200" in status and body == f"/shop/who.php|/extra|{site / 'who.php'}".encode(), (status, body)
    # No such script: the front controller, under the prefix too.
    status, body = get("/blog/post")
    assert b" 200" in status and json.loads(body)["script"] == "/shop/index.php", (status, body)
