"""Plain helpers for the test files (fixtures are in conftest.py): paths,
raw clients for the HTTP, uwsgi, SCGI and FastCGI sockets, a client load,
nginx, and waiting for a condition."""
import contextlib
import os
import pathlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
# scripts/test.sh sets it; by hand, the newer of its build and a release one.
BIN = os.environ.get("OXGATE_BIN") or max(
    (ROOT / "target" / profile / "oxgate" for profile in ("ci", "release")),
    key=lambda p: p.stat().st_mtime if p.exists() else 0).as_posix()
# The test venv (scripts/test.sh makes it); the server runs the apps from it.
VENV = pathlib.Path(sys.prefix)
# Whether BIN is the `oxgate` pip installed (a console script running the
# extension module in VENV's interpreter) rather than the stand-alone
# binary: scripts/test.sh runs the core tests against both.
try:
    with open(BIN, "rb") as _bin:
        INSTALLED = _bin.read(2) == b"#!"
except OSError:  # not built: the tests that run it fail and say so
    INSTALLED = False

# The apps of tests/apps/ that several files serve.
BEHAVIOUR = str(APPS / "behaviour.py")
ECHO = str(APPS / "echo.py")
LOGGED = str(APPS / "logged.py")


_PORTS_GIVEN = set()


def free_port():
    """A free loopback port, never one given before in this run: a test
    that takes several must not get the same one twice."""
    for tries in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN or tries == 999:
            _PORTS_GIVEN.add(port)
            return port


def listens(port):
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def raw_request(port, data, timeout=10, read_all=True, expect_close=False):
    """Sends raw bytes; returns everything the server sent until it closed
    (or went quiet for `timeout`, which fails when `expect_close`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                assert not expect_close, f"the server did not close the connection: {b''.join(chunks)[:200]!r}"
                break
            if not b:
                break
            chunks.append(b)
            if not read_all:
                break
        return b"".join(chunks)


# A fileConfig INI that writes the "myapp" logger's INFO lines to stdout,
# each marked LOGGED (the logging-config tests of Gunicorn and uvicorn).
MYAPP_LOG_INI = """[loggers]
keys=root,myapp
[handlers]
keys=h
[formatters]
keys=f
[logger_root]
handlers=
[logger_myapp]
level=INFO
handlers=h
qualname=myapp
[handler_h]
class=StreamHandler
formatter=f
args=(sys.stdout,)
[formatter_f]
format=LOGGED %(name)s %(levelname)s %(message)s
"""


def writes_after_a_request(command, port, cwd, line, what):
    """Runs `command` (a server that listens on `port`) in `cwd`, sends it
    GET /marked, and waits for `line` on its stdout; then stops it."""
    out = pathlib.Path(cwd) / f"stdout-{port}.txt"
    with open(out, "wb") as o:
        p = subprocess.Popen(command, stdout=o, stderr=subprocess.STDOUT, cwd=cwd,
                             env={**os.environ, "VIRTUAL_ENV": str(VENV)})
    try:
        wait_for(lambda: listens(port), what=f"{what} listening")
        assert requests.get(f"http://127.0.0.1:{port}/marked", timeout=10).ok
        wait_for(lambda: line in out.read_text(), what=f"{what}: {line!r} on stdout")
    finally:
        p.terminate()
        p.wait(timeout=30)


def run_fail(*args, cwd=ROOT, env=None, timeout=30):
    """Runs oxgate to its end; returns its exit code and stderr. `env` is
    added to this process's environment."""
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       env={**os.environ, **env} if env else None)
    return p.returncode, p.stderr


def wait_for(cond, timeout=20, what="condition", show=None):
    """Polls cond() until it returns something true, and returns that.
    On a timeout, the failure gives show() too (say, the log read)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{show()}" if show else ""))


def process_state(pid):
    """The state letter of /proc/PID/stat ("R", "S", "Z"...), or None once the
    process is reaped. Reaping can land between open() and read(), which then
    fails with ESRCH (ProcessLookupError): that is gone too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid):
    """Running: neither reaped nor a zombie waiting for its parent."""
    return process_state(pid) not in (None, "Z")


def fresh(url, timeout=30):
    """One request on a new connection: no keep-alive races."""
    return requests.get(url, headers={"Connection": "close"}, timeout=timeout)


def under_load(url, action, connections=8):
    """Runs `action` while wrk loads `url` on keep-alive connections (from a
    second before to a second after; at most 60 s); returns wrk's report."""
    wrk = shutil.which("wrk")
    assert wrk, "wrk is missing (scripts/test.sh installs it)"
    load = subprocess.Popen([wrk, "-t1", f"-c{connections}", "-d60s", url], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        action()
        time.sleep(1)
    finally:
        load.send_signal(signal.SIGINT)  # wrk stops and reports
    return load.communicate(timeout=30)[0]


def failures(wrk_output):
    """Requests wrk counted, and its failures: non-2xx/3xx answers and
    socket errors (connect, read, write, timeout)."""
    done = int(re.search(r"(\d+) requests in", wrk_output).group(1))
    bad = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk_output)
    if m:
        bad += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk_output)
    if m:
        bad += sum(int(x) for x in m.groups())
    return done, bad



class Load:
    """A continuous client load on new connections, for as long as it runs."""

    def __init__(self, url, clients=4):
        self.url, self.ok, self.failures, self.stop = url, 0, [], threading.Event()
        self.bodies = set()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            try:
                r = fresh(self.url)
                if r.status_code == 200:
                    self.ok += 1
                    self.bodies.add(r.text.split()[-1])
                else:
                    self.failures.append(r.status_code)
            except requests.RequestException as e:
                self.failures.append(repr(e))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        return self


# The uwsgi protocol: a packet of vars, and a request as nginx's uwsgi_params sends it.
def packet(vars, m1=0, m2=0):
    block = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                     for k, v in ((k.encode() if isinstance(k, str) else k, v.encode() if isinstance(v, str) else v)
                                  for k, v in vars))
    return struct.pack("<BHB", m1, len(block), m2) + block


def uwsgi_request(port, data, timeout=10):
    """Sends a uwsgi, SCGI or FastCGI request; returns everything the server
    sent until it closed (raw_request, under the name the callers know)."""
    return raw_request(port, data, timeout)


def cgi(method="GET", path="/", query="", body=b"", extra=()):
    v = [("REQUEST_METHOD", method), ("PATH_INFO", path), ("QUERY_STRING", query),
         ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", path + ("?" + query if query else "")),
         ("REMOTE_ADDR", "127.0.0.1"), ("SERVER_PORT", "80"), ("SERVER_NAME", ""),
         ("HTTP_HOST", "example.com:8080"), ("CONTENT_LENGTH", str(len(body)) if body else "")]
    return packet(v + list(extra)) + body


# SCGI: a netstring of NUL-separated headers, then the body.
def scgi_packet(headers, body=b""):
    block = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in headers)
    return str(len(block)).encode() + b":" + block + b"," + body


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


# nginx, run by the tests from a directory of their own.
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@contextlib.contextmanager
def traced_calls(pids, calls, tmp_path):
    """strace on `pids`, for the system calls named in `calls`: every
    thread traced into a file of its own, so that no call is split across
    lines. Yields a function that returns what was traced so far. Skips the
    test where strace cannot attach."""
    out = tmp_path / "strace"
    tracer = subprocess.Popen(["strace", "-ff", *(f"-p{p}" for p in pids), "-e", f"trace={calls}",
                               "-o", str(out)], stderr=subprocess.PIPE, text=True)

    def traced():
        return "".join(p.read_text() for p in sorted(tmp_path.glob("strace.*")))
    try:
        first = tracer.stderr.readline()
        if "attached" not in first:
            pytest.skip(f"strace cannot attach here: {first.strip()}")
        yield traced
        # strace writes a call once it has seen it end, which may be after
        # the client has its bytes: it is stopped only once what it wrote
        # has stopped growing.
        seen, deadline = None, time.monotonic() + 5
        while (now := traced()) != seen and time.monotonic() < deadline:
            seen = now
            time.sleep(0.3)
    finally:
        tracer.terminate()
        tracer.wait(10)


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



@contextlib.contextmanager
def nginx_serving(tmp_path, server, http="", main=""):
    """nginx (one worker) with `server` inside its server block, `http`
    before it and `main` at the top; yields the port it listens on."""
    port = free_port()
    d = tmp_path / "nginx"
    proc = start_nginx(d, port, f"""{main}
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;
  {http}
  server {{ listen 127.0.0.1:{port}; {server} }} }}
""")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"


@contextlib.contextmanager
def apache_serving(tmp_path, modules, directives):
    """Apache httpd (event MPM) with `modules` loaded and `directives`;
    yields its base URL once it listens."""
    d, port = tmp_path / "apache", free_port()
    (d / "logs").mkdir(parents=True)
    mods = ["mpm_event", "authz_core", *modules]
    (d / "httpd.conf").write_text(f"""
ServerRoot "{d}"
PidFile logs/httpd.pid
Listen 127.0.0.1:{port}
ServerName localhost
ErrorLog logs/error.log
LogLevel warn
{"".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so{chr(10)}" for m in mods)}
{directives}
""")
    proc = subprocess.Popen([APACHE, "-f", str(d / "httpd.conf"), "-DFOREGROUND"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"apache exited: {proc.stderr.read().decode()}")
                time.sleep(0.05)
        else:
            raise AssertionError("apache did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)

# Terminal programs (uwsgitop, oxgate top), run in tmux.
def tmux(*args):
    # A tmux server of this test process's own: with two at once (pytest -n
    # 2), one's last session ending would stop the other's server.
    return subprocess.run(["tmux", "-L", f"oxgate-test-{os.getpid()}", *args], capture_output=True, text=True,
                          timeout=10)


def screen_of(command, until, timeout=15):
    """Runs a terminal program in a detached 80x24 tmux and returns its screen
    once `until` shows, after pressing q."""
    name = f"t{os.getpid()}{int(time.monotonic() * 1000) % 100000}"
    tmux("new-session", "-d", "-s", name, "-x", "80", "-y", "24", command + "; sleep 3")
    try:
        screen = wait_for(lambda: (lambda t: until(t) and t)(tmux("capture-pane", "-p", "-t", name).stdout),
                          timeout=timeout, what=f"{until} on the screen")
        tmux("send-keys", "-t", name, "q")
        return screen
    finally:
        time.sleep(0.3)
        tmux("kill-session", "-t", name)


needs_tmux = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")


class SyslogReceiver:
    """A syslog daemon's socket, keeping every datagram: a unix datagram
    socket at `path`, or UDP on a free loopback port."""

    def __init__(self, path=None):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.messages = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                self.messages.append(self.sock.recv(65536))
            except OSError:
                return

    def wait(self, text, what):
        """The first message holding `text`."""
        return wait_for(lambda: next((m for m in self.messages if text in m), None),
                        what=f"{what} in {self.messages[-10:]}")

    def close(self):
        self.sock.close()
