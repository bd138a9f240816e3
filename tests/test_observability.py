"""The request log, log files and rotation, the stats server (with the real
uwsgitop and a real uWSGI to compare with), Prometheus metrics, oxgate top."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from conftest import APPS, BIN, free_port
from test_gateway import cgi, fcgi_request, packet, read_records, scgi_packet, uwsgi_request

LOGGED = str(APPS / "logged.py")
VENV_BIN = os.path.dirname(sys.executable)

# uWSGI's default request line (core/logging.c), every field captured.
UWSGI_LINE = re.compile(
    r"^\[pid: (?P<pid>\d+)\|app: (?P<app>-?\d+)\|req: (?P<wreq>-?\d+)/(?P<treq>\d+)\] "
    r"(?P<addr>\S+) \((?P<user>[^)]*)\) \{(?P<vars>\d+) vars in (?P<pkt>\d+) bytes\} "
    r"\[(?P<date>\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\] (?P<method>\S+) (?P<uri>\S+) => "
    r"generated (?P<size>\d+) bytes in (?P<msecs>\d+) msecs \((?P<proto>\S+) (?P<status>\d{3})\) "
    r"(?P<headers>\d+) headers in (?P<hsize>\d+) bytes \((?P<switches>\d+) switches on core (?P<core>\d+)\)$"
)

# Every variable --log-format documents (see `oxgate --help`).
FIELDS = ("uri method user addr host proto uagent referer status rsize hsize size cl micros msecs secs "
          "tmsecs tmicros time epoch ctime ltime ftime pid wid switches vars core vsz rss vszM rssM pktsize "
          "modifier1 modifier2 headers werr rerr ioerr protocol req").split()


def wait_for(cond, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def request_lines(text):
    return [m for m in map(UWSGI_LINE.match, text.splitlines()) if m]


def test_default_line_for_every_protocol(serve, tmp_path):
    up, sp, fp = free_port(), free_port(), free_port()
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--socket", f"127.0.0.1:{up}", "--scgi-socket", f"127.0.0.1:{sp}",
              "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--logto", str(log))
    assert requests.get(s.url + "/http?x=1", headers={"User-Agent": "t"}).status_code == 200
    assert b" 200 " in uwsgi_request(up, cgi("GET", "/uwsgi", "y=2"))
    assert b"Status: 200" in uwsgi_request(sp, scgi_packet([
        ("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/scgi"),
        ("SERVER_PROTOCOL", "HTTP/1.0"), ("REMOTE_ADDR", "10.1.2.3")]))
    with socket.create_connection(("127.0.0.1", fp)) as c:
        c.sendall(fcgi_request(1, [("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/fcgi"), ("CONTENT_LENGTH", "3"),
                                   ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "10.9.9.9"),
                                   ("REMOTE_USER", "ann")], b"abc"))
        read_records(c)
    lines = wait_for(lambda: len(request_lines(log.read_text())) == 4 and request_lines(log.read_text()),
                     what="four request lines")
    by_uri = {m["uri"]: m for m in lines}
    assert set(by_uri) == {"/http?x=1", "/uwsgi?y=2", "/scgi", "/fcgi"}
    (w,) = s.worker_pids()
    for m in lines:
        assert int(m["pid"]) == w and m["status"] == "200" and m["size"] == "7"
        # "HTTP/1.1 200 OK\r\n" + 2 headers + blank line, as uWSGI counts them
        assert m["headers"] == "2" and int(m["hsize"]) == 17 + len("Content-Type: text/plain\r\n") + \
            len("Content-Length: 7\r\n") + 2
    assert sorted(int(m["wreq"]) for m in lines) == [1, 2, 3, 4]
    assert by_uri["/scgi"]["addr"] == "10.1.2.3" and by_uri["/scgi"]["proto"] == "HTTP/1.0"
    assert by_uri["/fcgi"]["method"] == "POST" and by_uri["/fcgi"]["user"] == "ann"
    assert by_uri["/http?x=1"]["addr"] == "127.0.0.1"


def test_custom_format_renders_every_variable(serve, tmp_path):
    fmt = "|".join(f"{f}=%({f})" for f in FIELDS) + "|xtest=%(var.HTTP_X_TEST)|nope=%(nope)"
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-format", fmt,
              "--logdate", "--log-format-strftime", "--logdate=%Y/%m/%d")
    requests.get(s.url + "/big/1000?q=1", headers={"User-Agent": "ua/1", "Referer": "http://r/",
                                                    "X-Test": "hello", "Host": "h.example"})
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith("uri=")), None),
                    what="the request line")
    got = dict(kv.split("=", 1) for kv in line.split("|"))
    for f in FIELDS:
        assert got[f] != "", f
    (w,) = s.worker_pids()
    assert got["uri"] == "/big/1000?q=1" and got["method"] == "GET" and got["user"] == "-"
    assert got["addr"] == "127.0.0.1" and got["host"] == "h.example" and got["proto"] == "HTTP/1.1"
    assert got["uagent"] == "ua/1" and got["referer"] == "http://r/" and got["status"] == "200"
    assert got["rsize"] == "1000" and int(got["size"]) == 1000 + int(got["hsize"])
    assert got["pid"] == str(w) and got["wid"] == "1" and got["core"] == "0" and got["req"] == "1"
    assert got["protocol"] == "http" and got["xtest"] == "hello" and got["nope"] == "-"
    assert int(got["msecs"]) == int(got["micros"]) // 1000
    assert abs(int(got["time"]) - time.time()) < 60 and int(got["tmsecs"]) // 1000 == int(got["time"])
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", got["ltime"])
    assert re.fullmatch(r"\d{4}/\d\d/\d\d", got["ftime"])  # --log-format-strftime
    assert int(got["rss"]) > 1 << 20 and int(got["rssM"]) == int(got["rss"]) >> 20
    assert int(got["vars"]) % 2 == 0 and int(got["pktsize"]) > 100


def test_json_encoder(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-encoder", "json")
    requests.get(s.url + "/status/404", headers={"X-Forwarded-For": "1.2.3.4"})
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith("{")), None),
                    what="a JSON line")
    doc = json.loads(line)
    assert set(FIELDS) <= set(doc)
    assert doc["status"] == 404 and doc["uri"] == "/status/404" and doc["addr"] == "127.0.0.1"
    assert doc["size"] == doc["rsize"] + doc["hsize"]


def test_json_template_encoder_and_x_forwarded_for(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-x-forwarded-for",
              "--log-encoder", 'json {"unix":${unix},"msg":"${msg}"}', "--log-encoder", "nl")
    requests.get(s.url + "/a", headers={"X-Forwarded-For": "1.2.3.4"})
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith('{"unix"')), None),
                    what="a JSON line")
    doc = json.loads(line)
    assert abs(doc["unix"] - time.time()) < 60
    m = UWSGI_LINE.match(doc["msg"])
    assert m and m["addr"] == "1.2.3.4" and m["uri"] == "/a"
    # the message is escaped into the template
    log2 = tmp_path / "app2.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log2), "--log-format", "%(uagent)",
              "--log-encoder", 'json {"msg":"${msg}"}')
    requests.get(s.url + "/a", headers={"User-Agent": 'say "hi" \\ bye'})
    line = wait_for(lambda: next((l for l in log2.read_text().splitlines() if l.startswith('{"msg"')), None),
                    what="a JSON line")
    assert json.loads(line) == {"msg": 'say "hi" \\ bye'}


def test_disable_logging_and_the_conditions(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--disable-logging",
              "--log-4xx", "--log-5xx", "--log-slow", "300", "--log-big", "5000", "--log-zero")
    for path in ("/quiet", "/status/404", "/boom", "/sleep/350", "/big/6000", "/big/0", "/status/302"):
        requests.get(s.url + path)
    requests.get(s.url + "/last/status/503")  # not a status route: 200, not logged
    requests.get(s.url + "/status/503")
    wait_for(lambda: "/status/503" in log.read_text(), what="the last line")
    uris = [m["uri"] for m in request_lines(log.read_text())]
    assert uris == ["/status/404", "/boom", "/sleep/350", "/big/6000", "/big/0", "/status/503"]


def test_app_output_goes_to_the_same_log(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log))
    requests.get(s.url + "/print")
    text = wait_for(lambda: "/print" in log.read_text() and log.read_text(), what="the request line")
    for line in ("app stdout line", "app stderr line", "app wsgi.errors line"):
        assert line in text


def test_rotation_under_load_loses_no_line(serve, tmp_path):
    """Many requests from many connections, into two workers of two threads,
    with a --log-maxsize small enough to rotate several times: exactly one
    whole line per request across all the files."""
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--threads", "2", "--logto", str(log),
              "--log-maxsize", "40000")
    s.wait_workers(2)
    sent = [0] * 6
    deadline = time.monotonic() + 3

    def client(i):
        with requests.Session() as http:
            while time.monotonic() < deadline:
                assert http.get(f"{s.url}/load/{i}").status_code == 200
                sent[i] += 1
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(sent))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(sent)
    files = sorted(glob.glob(str(log) + "*"))

    def lines():
        return [l for f in files for l in open(f, errors="replace").read().splitlines() if "/load/" in l]
    wait_for(lambda: len(lines()) >= total, what="every line written")
    found = lines()
    assert len(found) == total, (len(found), total)
    assert all(UWSGI_LINE.match(l) for l in found)  # whole lines, never interleaved
    assert len(files) >= 4, files  # rotated several times
    assert "log rotated to" in log.read_text() or any("log rotated to" in open(f).read() for f in files)


def test_sigusr1_and_touch_logreopen(serve, tmp_path):
    log, touch = tmp_path / "app.log", tmp_path / "reopen"
    touch.write_text("")
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--logto", str(log), "--touch-logreopen", str(touch))
    s.wait_workers(2)
    log.rename(tmp_path / "app.log.1")
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(log.exists, what="the reopened log")
    workers = s.worker_pids()
    for i in range(10):
        requests.get(s.url + f"/after-usr1/{i}")
    wait_for(lambda: log.read_text().count("/after-usr1/") == 10, what="lines in the new file")
    assert s.worker_pids() == workers  # the workers reopened, nobody died
    log.rename(tmp_path / "app.log.2")
    time.sleep(0.05)
    os.utime(touch, (time.time() + 5, time.time() + 5))
    wait_for(log.exists, what="the log reopened by --touch-logreopen")
    requests.get(s.url + "/after-touch")
    wait_for(lambda: "/after-touch" in log.read_text(), what="a line in the new file")


def read_stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        return json.loads(b"".join(iter(lambda: c.recv(65536), b"")))


# uWSGI's stats keys (core/master_utils.c), in its order.
TOP_KEYS = ["version", "listen_queue", "listen_queue_errors", "signal_queue", "load", "pid", "uid", "gid",
            "cwd", "locks", "sockets", "workers"]
WORKER_KEYS = ["id", "pid", "accepting", "requests", "delta_requests", "exceptions", "harakiri_count",
               "signals", "signal_queue", "status", "rss", "vsz", "running_time", "last_spawn",
               "respawn_count", "tx", "avg_rt", "apps", "cores"]
CORE_KEYS = ["id", "requests", "static_requests", "routed_requests", "offloaded_requests", "write_errors",
             "read_errors", "in_request", "vars", "req_info"]


def test_stats_json_and_the_running_request(serve):
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--threads", "2", "--stats", f"127.0.0.1:{sp}")
    s.wait_workers(2)
    for _ in range(10):
        requests.get(s.url + "/")
    requests.get(s.url + "/boom")
    slow = threading.Thread(target=requests.get, args=(s.url + "/sleep/1500?who=me",))
    slow.start()
    time.sleep(0.5)
    doc = read_stats(sp)
    slow.join()
    assert list(doc)[:len(TOP_KEYS)] == TOP_KEYS
    assert doc["pid"] == s.proc.pid and isinstance(doc["uid"], int)
    assert doc["sockets"][0]["name"] == f"127.0.0.1:{s.port}" and doc["sockets"][0]["proto"] == "http"
    ws = doc["workers"]
    assert sorted(w["pid"] for w in ws) == s.worker_pids() and [w["id"] for w in ws] == [1, 2]
    for w in ws:
        assert list(w) == WORKER_KEYS and len(w["cores"]) == 2
        for c in w["cores"]:
            assert list(c)[:len(CORE_KEYS)] == CORE_KEYS
        assert w["rss"] > 1 << 20 and w["respawn_count"] == 1 and w["accepting"] == 1
    assert sum(w["requests"] for w in ws) == 11 and sum(w["exceptions"] for w in ws) == 1
    busy = [c for w in ws for c in w["cores"] if c["in_request"]]
    assert len(busy) == 1 and [w["status"] for w in ws].count("busy") == 1
    req = busy[0]["request"]  # beyond uWSGI: what it runs, for how long
    assert req["method"] == "GET" and req["uri"] == "/sleep/1500?who=me" and req["client"] == "127.0.0.1"
    assert 300 <= req["running_ms"] < 1500
    assert abs(busy[0]["req_info"]["request_start"] - time.time()) < 5
    # minified, and over HTTP
    sp2 = free_port()
    s2 = serve("--wsgi-file", LOGGED, "--processes", "1", "--stats", f"127.0.0.1:{sp2}", "--stats-http",
               "--stats-minified")
    wait_for(lambda: _up(sp2), what="the stats socket")
    r = requests.get(f"http://127.0.0.1:{sp2}/")
    assert r.headers["Content-Type"] == "application/json" and "\n" not in r.text
    assert r.json()["pid"] == s2.proc.pid


@pytest.mark.skipif(not os.path.exists(os.path.join(VENV_BIN, "uwsgi")), reason="uWSGI is not in the venv")
def test_stats_keys_match_a_real_uwsgi(serve, tmp_path):
    """The same app under the real uWSGI: every key it reports (top level,
    socket, worker, app, core) is in oxgate's document too, with the same type."""
    up, us = free_port(), free_port()
    uw = subprocess.Popen([os.path.join(VENV_BIN, "uwsgi"), "--http-socket", f"127.0.0.1:{up}", "--wsgi-file",
                           LOGGED, "--master", "--processes", "2", "--stats", f"127.0.0.1:{us}",
                           "--disable-logging", "--die-on-term"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{up}/").ok if _up(up) else False, what="uWSGI")
        ref = wait_for(lambda: _try_stats(us), what="uWSGI stats")
    finally:
        uw.terminate()
        uw.wait(10)
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--stats", f"127.0.0.1:{sp}")
    s.wait_workers(2)
    requests.get(s.url + "/")
    ours = read_stats(sp)

    def same_shape(a, b, where):
        assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, (where, a, b)
        if isinstance(a, dict):
            for k in a:
                assert k in b, f"{where}.{k} missing"
                if k not in ("req_info", "vars", "locks"):
                    same_shape(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, list) and a and b:
            same_shape(a[0], b[0], where + "[0]")
    same_shape(ref, ours, "stats")


def _up(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _try_stats(port):
    try:
        return read_stats(port)
    except (OSError, ValueError):
        return None


def tmux(*args):
    return subprocess.run(["tmux", "-L", "oxgate-test", *args], capture_output=True, text=True, timeout=10)


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


@needs_tmux
@pytest.mark.skipif(not os.path.exists(os.path.join(VENV_BIN, "uwsgitop")), reason="uwsgitop is not installed")
def test_real_uwsgitop_renders_oxgate(serve):
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--stats", f"127.0.0.1:{sp}")
    pids = s.wait_workers(2)
    for _ in range(20):
        requests.get(s.url + "/")
    screen = screen_of(f"{VENV_BIN}/uwsgitop 127.0.0.1:{sp}", lambda t: "WID" in t and "req: 20" in t)
    assert f"masterpid: {s.proc.pid}" in screen
    rows = [l.split() for l in screen.splitlines() if l.split() and l.split()[0] in ("1", "2")]
    assert sorted(int(r[2]) for r in rows) == pids
    assert sum(int(r[3]) for r in rows) == 20 and all(r[7] == "idle" for r in rows)


@needs_tmux
def test_oxgate_top(serve):
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--threads", "2", "--stats", f"127.0.0.1:{sp}")
    pids = s.wait_workers(2)
    for _ in range(7):
        requests.get(s.url + "/")
    slow = threading.Thread(target=requests.get, args=(s.url + "/sleep/4000",))
    slow.start()
    screen = screen_of(f"{BIN} top 127.0.0.1:{sp}", lambda t: "/sleep/4000" in t and "7 req" in t)
    slow.join()
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(l) <= 80 for l in lines)
    assert f"master pid {s.proc.pid}" in lines[0] and "2 workers, 1 busy" in lines[0]
    for pid in pids:
        assert str(pid) in screen
    assert "busy" in screen and "idle" in screen and "127.0.0.1" in screen


def test_oxgate_top_says_what_is_wrong():
    p = subprocess.run([BIN, "top", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "cannot read the stats from" in p.stderr


def test_prometheus_metrics(serve):
    prometheus = pytest.importorskip("prometheus_client.parser")
    sp, mp, up = free_port(), free_port(), free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--socket", f"127.0.0.1:{up}",
              "--stats", f"127.0.0.1:{sp}", "--stats-http", "--metrics", f"127.0.0.1:{mp}",
              "--max-requests", "5")
    s.wait_workers(2)
    with requests.Session() as http:
        for path in ["/"] * 6 + ["/status/404", "/boom", "/sleep/30"]:
            http.get(s.url + path)
    uwsgi_request(up, cgi("GET", "/via-uwsgi"))
    wait_for(lambda: "max-requests" in s.log(), what="a max-requests respawn")
    for url in (f"http://127.0.0.1:{mp}/metrics", f"http://127.0.0.1:{sp}/metrics"):
        r = requests.get(url)
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        fams = {f.name: f for f in prometheus.text_string_to_metric_families(r.text)}
        reqs = {(x.labels["protocol"], x.labels["status"]): x.value for x in fams["oxgate_requests"].samples}
        assert reqs[("http", "2xx")] == 7 and reqs[("http", "4xx")] == 1 and reqs[("http", "5xx")] == 1
        assert reqs[("uwsgi", "2xx")] == 1
        hist = {x.labels.get("le"): x.value for x in fams["oxgate_request_duration_seconds"].samples
                if x.name.endswith("_bucket")}
        assert hist["+Inf"] == 10 and hist["0.025"] <= 9
        respawns = {x.labels["cause"]: x.value for x in fams["oxgate_worker_respawns"].samples}
        assert respawns["max-requests"] >= 1 and respawns["crash"] == 0
        states = {x.labels["state"]: x.value for x in fams["oxgate_workers"].samples}
        assert sum(states.values()) >= 2
        assert fams["oxgate_exceptions"].samples[0].value == 1
        assert "oxgate_listen_queue" in fams and "oxgate_worker_resident_memory_bytes" in fams
        assert "oxgate_harakiri" in fams and "oxgate_requests_in_flight" in fams


def test_listen_queue_for_tcp_and_unix_sockets(serve, tmp_path):
    sock, sp = str(tmp_path / "app.sock"), free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--socket", sock, "--stats", f"127.0.0.1:{sp}",
              "--listen", "50")
    (w,) = s.wait_workers(1)
    wait_for(lambda: "GET" not in s.log() and read_stats(sp)["workers"][0]["accepting"], what="a ready worker")
    os.kill(w, signal.SIGSTOP)  # nobody accepts now
    try:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        for _ in range(4):
            c = socket.socket(socket.AF_UNIX)
            c.connect(sock)
            held.append(c)
        doc = wait_for(lambda: (lambda d: d["listen_queue"] == 4 and d)(read_stats(sp)), what="queued connections")
        queues = {x["name"]: (x["queue"], x["max_queue"]) for x in doc["sockets"]}
        assert queues == {f"127.0.0.1:{s.port}": (3, 50), sock: (4, 50)}
    finally:
        os.kill(w, signal.SIGCONT)


def test_harakiri_and_crash_in_stats_and_metrics(serve):
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--stats", f"127.0.0.1:{sp}", "--stats-http",
              "--harakiri", "1")
    (w,) = s.wait_workers(1)
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/sleep/3000")  # killed by harakiri: the connection drops
    s.wait_log("by harakiri")
    (w2,) = s.wait_workers(1)
    os.kill(w2, signal.SIGKILL)  # a crash
    wait_for(lambda: s.worker_pids() and s.worker_pids()[0] not in (w, w2), what="the respawned worker")
    wait_for(lambda: requests.get(f"http://127.0.0.1:{sp}/").json()["workers"][0]["accepting"], what="ready")
    doc = requests.get(f"http://127.0.0.1:{sp}/").json()
    worker = doc["workers"][0]
    assert worker["harakiri_count"] == 1 and worker["respawn_count"] == 3
    text = requests.get(f"http://127.0.0.1:{sp}/metrics").text
    assert "oxgate_harakiri_total 1\n" in text
    assert 'oxgate_worker_respawns_total{cause="harakiri"} 1\n' in text
    assert 'oxgate_worker_respawns_total{cause="crash"} 1\n' in text
