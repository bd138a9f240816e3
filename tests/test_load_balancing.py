"""Many hosts behind one balancer (issue #19): --health-path answered by the
server itself, readiness, --drain-delay, and a rolling restart of three
instances behind real HAProxy (active health checks) and nginx, under wrk
load, with no failed request."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import Server
from helpers import APPS, BIN, ECHO, LOGGED, cgi, failures, free_port, start_nginx, under_load, uwsgi_request, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WRK = shutil.which("wrk")


def health(url, path="/healthz"):
    r = requests.get(url + path, timeout=10)
    return r.status_code, r.text


def test_health_path_is_answered_by_the_server_on_every_protocol(serve, tmp_path):
    log = tmp_path / "app.log"
    up = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--health-path", "/healthz",
              "--uwsgi-socket", f"127.0.0.1:{up}", "--logto", str(log))
    s.wait_workers(2)
    wait_for(lambda: health(s.url) == (200, "ok\n"), what="health 200")
    assert health(s.url, "/healthz?probe=1") == (200, "ok\n")
    assert requests.get(s.url + "/").text == "logged\n"  # other paths reach the app
    assert requests.get(s.url + "/healthz/more").text == "logged\n"
    raw = uwsgi_request(up, cgi(path="/healthz"))
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"ok\n"), raw
    # Probes are not requests of the app: not in the request log.
    requests.get(s.url + "/logged-request")
    text = wait_for(lambda: "/logged-request" in log.read_text() and log.read_text(), what="the log line")
    assert "GET /healthz =>" not in text and "GET /healthz?" not in text
    assert "GET /healthz/more =>" in text


def test_health_fails_until_every_worker_has_loaded_the_app(serve, tmp_path):
    # The first worker to import the app goes on at once; the second waits
    # until the test lets it (--lazy-apps: each loads its own). The first
    # answers meanwhile.
    flag, go = tmp_path / "first", tmp_path / "go"
    app = tmp_path / "slowapp.py"
    app.write_text(
        "import os, time\n"
        f"try:\n    os.close(os.open({str(flag)!r}, os.O_CREAT | os.O_EXCL))\n"
        "except FileExistsError:\n"
        f"    while not os.path.exists({str(go)!r}):\n        time.sleep(0.02)\n"
        "def application(e, sr):\n"
        "    sr('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'app']\n")
    s = serve("--wsgi-file", str(app), "--processes", "2", "--lazy-apps", "--health-path", "/healthz")
    assert health(s.url) == (503, "starting\n")
    assert requests.get(s.url + "/").text == "app"  # the loaded worker serves the app
    assert health(s.url) == (503, "starting\n")
    go.touch()
    wait_for(lambda: health(s.url)[0] == 200, what="health 200 once both workers serve")


def test_drain_delay_fails_the_health_check_then_stops(serve):
    s = serve("--wsgi-file", ECHO, "--processes", "2", "--health-path", "/healthz", "--drain-delay", "3")
    s.wait_workers(2)
    wait_for(lambda: health(s.url)[0] == 200, what="health 200")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("draining for 3.0s")
    # The balancer is told first (the workers hear of it a moment after the
    # master says so); requests are still served meanwhile.
    wait_for(lambda: health(s.url) == (503, "draining\n"), timeout=2.5, what="health 503 while draining")
    assert requests.get(s.url + "/").status_code == 200
    assert s.proc.poll() is None
    assert s.proc.wait(20) == 0
    assert "master stopped" in s.log()


@pytest.mark.parametrize("opening", ["nothing", "part of a PROXY header"])
def test_a_stop_does_not_wait_for_a_connection_that_sent_no_request(serve, opening):
    """A browser's preconnect, a TCP balancer's spare connection: no
    request in flight, so a graceful stop closes it after a second's grace,
    as uvicorn does. The stop waited out --socket-timeout for it (30 s by
    default, 60 here), and `docker stop` killed the server first."""
    extra = ["--enable-proxy-protocol"] if opening != "nothing" else []
    s = serve("--wsgi-file", ECHO, "--processes", "1", "--socket-timeout", "60", *extra)
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        if opening != "nothing":
            c.sendall(b"PROXY TCP4 203.0.113.7 ")
        # Taken by the worker, and waiting for its first bytes.
        assert requests.get(s.url + "/", timeout=10).status_code == 200
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(20) == 0
        # Closed (reset, with the part of a header left unread).
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGQUIT])
def test_a_second_signal_during_the_drain_stops_at_once(serve, second):
    """Ctrl-C twice (docker run, a terminal) during --drain-delay: the
    workers are killed and the master ends. They were respawned, and the
    master waited out the whole drain."""
    s = serve("--wsgi-file", ECHO, "--processes", "2", "--health-path", "/healthz", "--drain-delay", "30")
    s.wait_workers(2)
    wait_for(lambda: health(s.url)[0] == 200, what="health 200")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("draining for 30.0s")
    s.proc.send_signal(second)
    s.proc.wait(10)
    assert "respawned" not in s.log()


def test_a_touch_reload_during_the_drain_does_not_undo_the_stop(serve, tmp_path):
    touched = tmp_path / "reload-me"
    touched.write_text("")
    s = serve("--wsgi-file", ECHO, "--processes", "1", "--health-path", "/healthz", "--drain-delay", "2",
              "--touch-reload", str(touched))
    s.wait_workers(1)
    wait_for(lambda: health(s.url)[0] == 200, what="health 200")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("draining for 2.0s")
    time.sleep(0.1)
    os.utime(touched, (time.time() + 5, time.time() + 5))
    assert s.proc.wait(20) == 0
    assert "master stopped" in s.log() and "reload requested" not in s.log()


def test_without_a_master_reload_signals_are_ignored_not_fatal(serve):
    """SIGHUP and `oxgate --reload`'s SIGRTMIN+1 would end a single process
    at their default: they are logged and ignored."""
    s = serve("--wsgi-file", ECHO, "--no-master", "--health-path", "/up")
    assert health(s.url, "/up") == (200, "ok\n")
    s.proc.send_signal(signal.SIGHUP)
    s.wait_log("SIGHUP ignored: reloads need the master")
    s.proc.send_signal(signal.SIGRTMIN + 1)
    s.wait_log("SIGRTMIN+1 ignored")
    assert s.proc.poll() is None
    assert health(s.url, "/up") == (200, "ok\n")


def test_no_master_answers_the_health_path(serve):
    s = serve("--wsgi-file", ECHO, "--no-master", "--health-path", "/up")
    assert health(s.url, "/up") == (200, "ok\n")


def test_a_health_path_must_be_a_path():
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--wsgi-file", ECHO, "--health-path", "healthz"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "a path starts with /" in p.stderr


class Instance:
    """One oxgate of the pool: a fixed port, started and stopped again."""

    def __init__(self, tmp_path, port, n):
        self.port, self.n, self.tmp_path, self.server = port, n, tmp_path, None

    def start(self):
        (self.tmp_path / f"i{self.n}").mkdir(exist_ok=True)
        self.server = Server(self.tmp_path / f"i{self.n}", [
            "--http-socket", f"127.0.0.1:{self.port}", "--wsgi-file", ECHO, "--processes", "2",
            "--health-path", "/healthz", "--drain-delay", "1.5", "--disable-logging"], wait=False)
        wait_for(lambda: self.healthy(), what=f"instance {self.n} healthy")

    def healthy(self):
        assert self.server.proc.poll() is None, self.server.log()
        try:
            return health(f"http://127.0.0.1:{self.port}")[0] == 200
        except requests.ConnectionError:
            return False

    def stop(self):
        if self.server and self.server.proc.poll() is None:
            self.server.proc.send_signal(signal.SIGTERM)
            assert self.server.proc.wait(30) == 0, self.server.log()
        self.server.log_file.close()


def rolling_restart(pool):
    for inst in pool:
        inst.stop()
        inst.start()
        time.sleep(1)  # the balancer's checks see it up again before the next goes


HAPROXY_CONF = """
global
  maxconn 256
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 0
frontend front
  bind 127.0.0.1:{port}
  default_backend pool
backend pool
  balance roundrobin
  option httpchk GET /healthz
  default-server check inter 200ms fall 1 rise 2
{servers}
"""


@pytest.fixture
def pool(tmp_path):
    """Three running instances behind the balancer a test starts."""
    instances = [Instance(tmp_path, free_port(), n) for n in range(3)]
    for inst in instances:
        inst.start()
    yield instances
    for inst in instances:
        inst.stop()


def assert_rolling_restart_loses_nothing(port, pool):
    out = under_load(f"http://127.0.0.1:{port}/", lambda: rolling_restart(pool))
    done, bad = failures(out)
    assert done > 1000 and bad == 0, out


@pytest.mark.skipif(WRK is None or not os.path.exists(HAPROXY), reason="needs wrk and haproxy")
def test_rolling_restart_behind_haproxy_loses_no_request(tmp_path, pool):
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(port=port, servers="\n".join(
        f"  server s{i.n} 127.0.0.1:{i.port}" for i in pool)))
    proxy = subprocess.Popen([HAPROXY, "-f", str(conf), "-db"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket_answers(port), what="haproxy")
        time.sleep(1)  # every server checked up (rise 2 × 200 ms)
        assert_rolling_restart_loses_nothing(port, pool)
    finally:
        proxy.terminate()
        proxy.wait(10)


@pytest.mark.skipif(WRK is None, reason="needs wrk")
def test_rolling_restart_behind_nginx_loses_no_request(tmp_path, pool):
    port = free_port()
    d = tmp_path / "nginx"
    upstreams = "\n".join(f"    server 127.0.0.1:{i.port} max_fails=1 fail_timeout=2s;" for i in pool)
    nginx = start_nginx(d, port, f"""
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 256; }}
http {{ access_log off; proxy_temp_path {d}/tmp;
  upstream pool {{
{upstreams}
    keepalive 16;
  }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_next_upstream error timeout http_503; }} }} }}
""")
    try:
        assert_rolling_restart_loses_nothing(port, pool)
    finally:
        nginx.terminate()
        nginx.wait(10)


def socket_answers(port, path="/"):
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).ok
    except requests.RequestException:
        return False


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="needs haproxy")
def test_the_client_address_through_haproxy_in_tcp_mode(serve, tmp_path, send):
    """HAProxy passing TCP through with a PROXY header (v1 or v2): the app
    sees the client's address and port, not the balancer's; its health
    checks (sent with the header too) pass."""
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--proxy-protocol")
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(f"""
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend front
  bind 127.0.0.1:{port}
  default_backend app
backend app
  server s1 127.0.0.1:{s.port} {send} check inter 200ms
""")
    proxy = subprocess.Popen([HAPROXY, "-f", str(conf), "-db"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: socket_answers(port, "/env"), what="haproxy")
        # The client connects from 127.0.0.2 and a port of its own.
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)) as c:
            client_port = c.getsockname()[1]
            c.sendall(b"GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            while chunk := c.recv(65536):
                out += chunk
        env = json.loads(out.split(b"\r\n\r\n", 1)[1])
        assert env["REMOTE_ADDR"] == "127.0.0.2" and env["REMOTE_PORT"] == str(client_port)
    finally:
        proxy.terminate()
        proxy.wait(10)
    assert "PROXY header" not in s.log()  # no header was refused


def test_a_proxy_header_from_a_peer_not_allowed_is_not_believed(serve):
    """Refused 403 with a line naming --proxy-allow-from, as Gunicorn says
    "Proxy request from ... not allowed": read as a request, it was a 400
    for an "invalid HTTP version" (a uWSGI ini with HAProxy on another
    host, uWSGI believing any peer, got that on every request)."""
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--proxy-protocol", "--proxy-allow-from", "10.0.0.0/8")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"PROXY TCP4 203.0.113.7 10.0.0.1 4242 80\r\nGET /env HTTP/1.1\r\nHost: x\r\n\r\n")
        out = c.recv(65536)
    assert out.startswith(b"HTTP/1.1 403 "), out
    assert b"203.0.113.7" not in out
    s.wait_log("a PROXY header from 127.0.0.1, which --proxy-allow-from does not list")
    # A plain request from that peer is served.
    assert requests.get(s.url + "/env", timeout=10).status_code == 200
