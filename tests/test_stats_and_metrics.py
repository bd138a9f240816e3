"""The stats server (with the real uwsgitop and a real uWSGI to compare), Prometheus metrics, oxgate top."""
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

from helpers import (BEHAVIOUR, BIN, ECHO, LOGGED, cgi, free_port, listens, needs_tmux, screen_of, uwsgi_request,
                     wait_for)

VENV_BIN = os.path.dirname(sys.executable)


def read_stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        return json.loads(b"".join(iter(lambda: c.recv(65536), b"")))


def test_a_socket_on_port_0_is_shown_with_the_port_it_got(serve):
    """As uWSGI shows it: `127.0.0.1:0` named no socket a client could
    reach, in the stats and in the metrics' labels."""
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--stats", f"127.0.0.1:{sp}", "--stats-http",
              "--socket", "127.0.0.1:0", wait=False)
    doc = wait_for(lambda: listens(sp) and requests.get(f"http://127.0.0.1:{sp}/", timeout=5).json(),
                   what="the stats", show=s.log)
    (name,) = [x["name"] for x in doc["sockets"] if x["proto"] == "uwsgi"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", name) and not name.endswith(":0"), name
    assert f"uwsgi://{name}" in s.log()
    assert f'oxgate_listen_queue{{socket="{name}",protocol="uwsgi"}}' in requests.get(
        f"http://127.0.0.1:{sp}/metrics", timeout=5).text


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

    def running_for_a_while():
        doc = read_stats(sp)
        cores = [c for w in doc["workers"] for c in w["cores"] if c["in_request"]]
        return doc if cores and cores[0]["request"]["running_ms"] >= 300 else None
    doc = wait_for(running_for_a_while, what="the slow request to be running for 300 ms")
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
    wait_for(lambda: listens(sp2), what="the stats socket")
    r = requests.get(f"http://127.0.0.1:{sp2}/")
    assert r.headers["Content-Type"] == "application/json" and "\n" not in r.text
    assert r.json()["pid"] == s2.proc.pid


@pytest.mark.skipif(not os.path.exists(os.path.join(VENV_BIN, "uwsgi")), reason="uWSGI is not in the venv")
def test_oxgate_top_reads_a_real_uwsgis_stats_over_http(tmp_path):
    """uWSGI's --stats-http answers as soon as it accepts, and closes: the
    request oxgate top wrote in three pieces met a closed socket (Broken
    pipe, or a reset) about every other time. Read each time now (to the
    point where top asks for a terminal, which it has not here)."""
    up, us = free_port(), free_port()
    uw = subprocess.Popen([os.path.join(VENV_BIN, "uwsgi"), "--http-socket", f"127.0.0.1:{up}", "--wsgi-file",
                           LOGGED, "--master", "--stats", f"127.0.0.1:{us}", "--stats-http", "--disable-logging"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listens(us), what="uWSGI's stats")
        for _ in range(10):
            p = subprocess.run([BIN, "top", f"http://127.0.0.1:{us}"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=10)
            assert "a terminal is needed" in p.stderr, p.stderr
    finally:
        uw.send_signal(signal.SIGINT)  # (SIGTERM reloads uWSGI)
        try:
            uw.wait(10)
        except subprocess.TimeoutExpired:
            uw.kill()
            uw.wait()


@pytest.mark.skipif(not os.path.exists(os.path.join(VENV_BIN, "uwsgi")), reason="uWSGI is not in the venv")
def test_stats_keys_match_a_real_uwsgi(serve, tmp_path):
    """The same app under the real uWSGI: every key it reports (top level,
    socket, worker, app, core) is in oxgate's document too, with the same type."""
    up, us = free_port(), free_port()
    uw = subprocess.Popen([os.path.join(VENV_BIN, "uwsgi"), "--http-socket", f"127.0.0.1:{up}", "--wsgi-file",
                           LOGGED, "--master", "--processes", "2", "--stats", f"127.0.0.1:{us}",
                           "--disable-logging", "--die-on-term"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{up}/").ok if listens(up) else False, what="uWSGI")
        ref = wait_for(lambda: _try_stats(us), what="uWSGI stats")
    finally:
        # The peer only had to answer; how long its stop takes is not ours
        # to test (it sometimes runs past 10 s).
        uw.terminate()
        try:
            uw.wait(10)
        except subprocess.TimeoutExpired:
            uw.kill()
            uw.wait()
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
        elif isinstance(a, list) and a:
            assert b, f"{where} is empty in ours"
            same_shape(a[0], b[0], where + "[0]")
    same_shape(ref, ours, "stats")



def _try_stats(port):
    try:
        return read_stats(port)
    except (OSError, ValueError):
        return None



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


def test_oxgate_top_says_what_is_wrong(serve):
    p = subprocess.run([BIN, "top", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "cannot read the stats from" in p.stderr
    # A frequency no Duration holds is a day at most, or said; it panicked.
    for frequency, said in [("inf", "cannot read the stats from"), ("1e20", "cannot read the stats from"),
                            ("nan", "--frequency \"nan\": expected seconds")]:
        p = subprocess.run([BIN, "top", "--frequency", frequency, f"127.0.0.1:{free_port()}"], capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == 2 and said in p.stderr and "panic" not in p.stderr, (frequency, p.stderr)
    # Without a terminal (cron, a pipe, `docker exec` without -t): said,
    # not a panic.
    sp = free_port()
    serve("--wsgi-file", ECHO, "--stats", f"127.0.0.1:{sp}")
    p = subprocess.run([BIN, "top", f"127.0.0.1:{sp}"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 2 and "oxgate top: a terminal is needed" in p.stderr and "panic" not in p.stderr, p.stderr
    # The command it suggests works (plain `curl ADDR` refuses the stats
    # socket's answer, which has no HTTP head).
    suggested = re.search(r"`(curl [^`]+)`", p.stderr)[1]
    out = subprocess.run(suggested.split(), capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "workers" in json.loads(out.stdout), (suggested, out.stderr)


def test_prometheus_metrics(serve):
    prometheus = pytest.importorskip("prometheus_client.parser")
    sp, mp, up = free_port(), free_port(), free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--socket", f"127.0.0.1:{up}",
              "--stats", f"127.0.0.1:{sp}", "--stats-http", "--metrics", f"127.0.0.1:{mp}",
              "--max-requests", "5", "--min-worker-lifetime", "0")
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
        # Across the max-requests respawn too: every request spoke HTTP/1.1
        # (the uwsgi packet's SERVER_PROTOCOL says so), and the app answered.
        versions = {x.labels["version"]: x.value for x in fams["oxgate_http_requests"].samples}
        assert versions == {"1.0": 0, "1.1": 10, "2": 0}
        handlers = {x.labels["handler"]: x.value for x in fams["oxgate_requests_by_handler"].samples}
        assert handlers == {"app": 10, "static": 0, "cgi": 0, "fastcgi": 0, "none": 0}
    # The stats server's per-app counts span the respawn, as the worker's
    # do (uWSGI's apps[].requests): they started again from 0.
    for w in requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["workers"]:
        assert w["apps"][0]["requests"] == w["requests"], w
        assert w["apps"][0]["exceptions"] == w["exceptions"], w


def test_listen_queue_for_tcp_and_unix_sockets(serve, tmp_path):
    sock, sp = str(tmp_path / "app.sock"), free_port()
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--socket", sock, "--stats", f"127.0.0.1:{sp}",
              "--listen", "50")
    (w,) = s.wait_workers(1)
    wait_for(lambda: "GET" not in s.log() and read_stats(sp)["workers"][0]["accepting"], what="a ready worker")
    os.kill(w, signal.SIGSTOP)  # nobody accepts now
    try:
        held = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
        # With their requests: a WSGI worker's TCP sockets accept only
        # connections that have sent something (TCP_DEFER_ACCEPT).
        for c in held:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(4):
            c = socket.socket(socket.AF_UNIX)
            c.connect(sock)
            held.append(c)
        doc = wait_for(lambda: (lambda d: d["listen_queue"] == 4 and d)(read_stats(sp)), what="queued connections")
        queues = {x["name"]: (x["queue"], x["max_queue"]) for x in doc["sockets"]}
        assert queues == {f"127.0.0.1:{s.port}": (3, 50), sock: (4, 50)}
    finally:
        os.kill(w, signal.SIGCONT)


def test_a_full_listen_queue_is_logged_as_uwsgi_logs_it(serve, tmp_path):
    """A socket whose listen queue is full gets a line once a second, in
    uWSGI's words, on which alerts are set (there was none)."""
    sock = str(tmp_path / "app.sock")
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--socket", sock, "--listen", "4")
    (w,) = s.wait_workers(1)
    os.kill(w, signal.SIGSTOP)  # nobody accepts now
    held = []
    try:
        for _ in range(8):
            c = socket.socket(socket.AF_UNIX)
            c.setblocking(False)
            try:
                c.connect(sock)
            except BlockingIOError:
                pass  # past the queue: refused for now
            held.append(c)
        s.wait_log(f'*** listen queue of socket "{sock}" (fd: ')
        line = next(l for l in s.log().splitlines() if "listen queue of socket" in l)
        assert re.search(r"\) full !!! \((\d+)/4\) \*\*\*$", line), line
    finally:
        os.kill(w, signal.SIGCONT)
        for c in held:
            c.close()


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


def test_a_stats_server_open_to_other_hosts_is_warned_about(serve):
    sp = free_port()
    s = serve("--wsgi-file", LOGGED, "--stats", f"0.0.0.0:{sp}")
    # Said once the master runs, which can be after the HTTP port listens.
    s.wait_log("the stats server on 0.0.0.0:%d is reachable from other hosts" % sp)
    quiet = serve("--wsgi-file", LOGGED, "--stats", f"127.0.0.1:{free_port()}")
    assert "reachable from other hosts" not in quiet.log()
    # The metrics are counters alone, scraped from other hosts by design
    # (the Kubernetes Deployment's --metrics 0.0.0.0:9100): no warning.
    mp = free_port()
    metrics = serve("--wsgi-file", LOGGED, "--metrics", f"0.0.0.0:{mp}")
    assert requests.get(f"http://127.0.0.1:{mp}/metrics", timeout=10).status_code == 200
    assert "reachable from other hosts" not in metrics.log()


def test_a_reload_shows_one_row_per_worker_id_as_uwsgi(serve):
    """While a reload's old worker finishes a long request beside its
    replacement, the stats have one row for the id, the serving one, as
    uWSGI's (it replaces in place). Two rows with one id made the real
    uwsgitop show negative request rates."""
    import threading
    stats = free_port()
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "2", "--stats", f"127.0.0.1:{stats}")
    old = set(s.wait_workers(2))
    slow = threading.Thread(target=lambda: requests.get(s.url + "/slow?first=4", timeout=30))
    slow.start()
    time.sleep(0.5)
    os.kill(s.proc.pid, signal.SIGHUP)
    seen_new = False
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        ids = [(w["id"], w["pid"]) for w in read_stats(stats)["workers"]]
        assert sorted(i for i, _ in ids) == [1, 2], ids
        seen_new |= any(pid not in old for _, pid in ids)
        time.sleep(0.1)
    slow.join(30)
    assert seen_new, "the replacements were never shown"


@pytest.mark.parametrize("kind", ["raw", "metrics"])
def test_the_stats_server_answers_through_reloads(serve, kind):
    """The stats and metrics listeners pass to the re-executed master as
    the serving sockets do: a monitor polling through a reload (uwsgitop,
    a Prometheus scrape) is answered every time. They were closed at the
    exec and bound again, so a poll then was reset or refused."""
    port = free_port()
    flag = ["--stats", f"127.0.0.1:{port}"] if kind == "raw" else ["--metrics", f"127.0.0.1:{port}"]
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "2", *flag)
    s.wait_workers(2)

    def poll():
        if kind == "raw":
            return read_stats(port)["workers"]
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    polled, errors, stop = [0], [], threading.Event()

    def poller():
        while not stop.is_set():
            try:
                poll()
                polled[0] += 1
            except (OSError, ValueError, requests.RequestException) as e:
                errors.append(repr(e))

    t = threading.Thread(target=poller)
    t.start()
    try:
        for _ in range(5):
            before = s.log().count("reload done")
            os.kill(s.proc.pid, signal.SIGHUP)
            wait_for(lambda: s.log().count("reload done") > before, timeout=30, what="reload done")
    finally:
        stop.set()
        t.join(10)
    assert errors == [], errors[:5]
    assert polled[0] > 20
