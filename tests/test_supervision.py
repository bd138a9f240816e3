"""The master keeps workers and daemons running: respawn, back-off, harakiri, recycling by requests, lifetime, RSS."""
import os
import re
import signal
import time

import pytest
import requests

from helpers import Load, alive, failures, fresh, under_load, wait_for


def test_killed_worker_is_respawned_under_load(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2")
    before = s.wait_workers(2)
    load = Load(s.url)
    time.sleep(0.5)
    os.kill(before[0], signal.SIGKILL)
    s.wait_log(f"(pid {before[0]}) was killed by signal 9 (SIGKILL)")
    after = s.wait_workers(2)
    time.sleep(0.5)
    load.finish()
    assert before[0] not in after
    # uWSGI's "Respawned uWSGI worker N (new pid: P)", which log watchers
    # look for; none for the workers first started.
    (new,) = set(after) - set(before)
    wait_for(lambda: re.search(rf"respawned worker [12] \(new pid: {new}\)", s.log()), what="the respawn line")
    assert s.log().count("respawned worker") == 1
    assert load.ok > 50
    # Only connections the killed worker held may fail: its event loop holds
    # every connection it accepted, so up to one per client (each client has
    # one in flight), and only as resets, never as error responses.
    assert len(load.failures) <= 4, load.failures
    assert all(isinstance(f, str) and "Connection" in f for f in load.failures), load.failures


def test_workers_dying_at_start_back_off(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1")
    killed = set()
    deadline = time.monotonic() + 30
    while s.log().count("in a row") < 3:
        assert time.monotonic() < deadline, s.log()
        for p in s.worker_pids():
            if p not in killed:
                killed.add(p)
                os.kill(p, signal.SIGKILL)
        time.sleep(0.02)
    log = s.log()
    assert "(1 in a row); no worker starts for 0.2s" in log
    assert "(2 in a row); no worker starts for 0.4s" in log
    assert "(3 in a row); no worker starts for 0.8s" in log
    (w,) = s.wait_workers(1)  # and it comes back
    assert fresh(s.url).status_code == 200


def test_harakiri_kills_a_stuck_worker_with_its_stack(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--harakiri", "1")
    (worker,) = s.wait_workers(1)
    t0 = time.monotonic()
    with pytest.raises(requests.RequestException):
        fresh(s.url + "/sleep?30", timeout=20)
    elapsed = time.monotonic() - t0
    # killed soon after the 1 s deadline (the master looks every 0.1 s and
    # gives the stack dump 0.3 s), not after 30 s; generous for a busy CI
    assert elapsed < 3, elapsed
    s.wait_log("by harakiri")
    log = s.log()
    assert "GET /sleep?30 from 127.0.0.1" in log
    assert "procs.py" in log and "in application" in log  # the Python stack
    (new,) = s.wait_workers(1)
    assert new != worker
    assert fresh(s.url).status_code == 200


def test_harakiri_names_every_request_its_kill_cuts(serve, app_dir):
    """With threads, the kill cuts the worker's other requests too: the
    HARAKIRI line names them, as uWSGI names each core's (only the longest
    was named; the others' clients got an empty reply and the log nothing).
    The line starts with uWSGI's `*** HARAKIRI ON WORKER N (pid: P, try: 1)
    ***`, which alerts match (it said `HARAKIRI: worker N (pid P)`)."""
    import concurrent.futures
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--threads", "4", "--harakiri", "2")
    s.wait_workers(1)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(fresh, s.url + "/sleep?30", timeout=30)
        time.sleep(0.5)  # (the order of the two, for the names' places)
        second = pool.submit(fresh, s.url + "/sleep?29", timeout=30)
        for f in (first, second):
            with pytest.raises(requests.RequestException):
                f.result()
    s.wait_log("by harakiri")
    assert re.search(r"^oxgate: \*\*\* HARAKIRI ON WORKER 1 \(pid: \d+, try: 1\) \*\*\*: ", s.log(), re.M), s.log()
    harakiri = [line for line in s.log().splitlines() if "HARAKIRI ON WORKER" in line]
    assert harakiri and "GET /sleep?30" in harakiri[0] and "cutting too: GET /sleep?29" in harakiri[0], harakiri


def test_a_worker_dying_as_it_loads_the_app_is_not_said_to_be_idle(serve, tmp_path):
    """With --lazy-apps, a worker that dies importing the app died loading
    it (it was said to have died "while idle")."""
    (tmp_path / "dies.py").write_text("import os\nos.abort()\n")
    s = serve("--wsgi-file", str(tmp_path / "dies.py"), "--lazy-apps", "--processes", "1", wait=False)
    s.wait_log("no worker starts for")
    line = next(line for line in s.log().splitlines() if "SIGABRT" in line)
    assert "before it was ready" in line and "while idle" not in line, line


def test_an_app_exiting_with_status_3_mid_request_is_replaced_not_fatal(serve, tmp_path):
    """A ready worker whose app calls os._exit(3) (a C library's exit(3),
    say) is a death like any other: replaced, as uWSGI does. The master took
    it for a boot hook's failure and stopped the whole server, saying the
    app's startup failed."""
    (tmp_path / "exits.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/exit':\n"
        "        os._exit(3)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n")
    s = serve("--wsgi-file", "exits.py", "--processes", "1", cwd=tmp_path)
    first = s.wait_workers(1)[0]
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/exit", timeout=10)
    wait_for(lambda: s.worker_pids() and s.worker_pids()[0] != first, what="a new worker")
    assert requests.get(s.url + "/", timeout=10).status_code == 200
    assert s.proc.poll() is None and "startup failed" not in s.log(), s.log()


def test_a_child_the_app_forks_does_not_serve_on_as_a_worker(serve, tmp_path):
    """An app that forks and lets the child return too (no os._exit): the
    child returned into the server and served on as a worker the master
    did not know (past harakiri, recycling and reloads), some of its
    requests never answered. It now exits at once, as Gunicorn's does."""
    (tmp_path / "forks.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/fork':\n"
        "        os.fork()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    if environ['PATH_INFO'] == '/fork-in-body':\n"
        "        return forking_body()\n"
        "    return [str(os.getpid()).encode()]\n"
        "def forking_body():\n"
        "    yield b''\n"
        "    os.fork()\n"
        "    yield str(os.getpid()).encode()\n")
    s = serve("--wsgi-file", "forks.py", "--processes", "1", cwd=tmp_path)
    worker = s.wait_workers(1)[0]
    for path in ("/fork", "/fork-in-body"):
        said = s.log().count("a child the app forked returned from the app into the server; it exits")
        assert requests.get(s.url + path, timeout=10).text == str(worker)
        wait_for(lambda: s.log().count("a child the app forked returned") > said, what=f"{path}: the child's exit")
        for _ in range(20):
            assert requests.get(s.url + "/", timeout=10).text == str(worker)
    # What the worker started: nothing alive but zombies it has not reaped.
    kids = open(f"/proc/{worker}/task/{worker}/children").read().split()
    assert all(open(f"/proc/{k}/stat").read().split(") ")[1][0] == "Z" for k in kids), kids


def test_reaper_reaps_the_children_the_app_left_unwaited_for(serve, tmp_path):
    """--reaper (uWSGI's): the children an app forks and never waits for
    are reaped by the worker; they stayed zombies (it was accepted and did
    nothing). Without it they are the app's to wait for, as in uWSGI."""
    (tmp_path / "spawns.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    if os.fork() == 0:\n"
        "        os._exit(0)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n")

    def zombies(worker):
        kids = open(f"/proc/{worker}/task/{worker}/children").read().split()
        return [k for k in kids if open(f"/proc/{k}/stat").read().rsplit(") ", 1)[1][0] == "Z"]
    for flag in ([], ["--reaper"]):
        s = serve("--wsgi-file", "spawns.py", "--processes", "1", *flag, cwd=tmp_path)
        worker = s.wait_workers(1)[0]
        for _ in range(3):
            assert requests.get(s.url + "/", timeout=10).text == str(worker)
        if flag:
            wait_for(lambda: zombies(worker) == [], what="the children reaped")
        else:
            assert len(wait_for(lambda: len(zombies(worker)) == 3 and zombies(worker), what="3 zombies")) == 3
        s.stop()
    # A child the app waits for (a moment later, as after other work) is
    # the app's: its exit status is its own, not taken by the reaper.
    (tmp_path / "waits.py").write_text(
        "import subprocess, time\n"
        "def application(environ, start_response):\n"
        "    p = subprocess.Popen(['sh', '-c', 'exit 7'])\n"
        "    time.sleep(0.3)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(p.wait()).encode()]\n")
    s = serve("--wsgi-file", "waits.py", "--processes", "1", "--threads", "2", "--reaper", cwd=tmp_path)
    assert [requests.get(s.url + "/", timeout=10).text for _ in range(5)] == ["7"] * 5


def test_max_requests_recycles_without_failures(serve, app_dir):
    # (--min-worker-lifetime 0: without it, a worker is replaced only after
    # its first 10 s, as in uWSGI; test_max_requests_waits_for_the_min_lifetime.)
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--max-requests", "50",
              "--min-worker-lifetime", "0")
    first = s.wait_workers(2)
    load = Load(s.url)
    deadline = time.monotonic() + 60
    while "(--max-requests)" not in s.log() or s.log().count("stopped") < 4:
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.1)
    load.finish()
    assert load.failures == [], load.failures[:5]
    assert not set(first) & set(s.wait_workers(2))


@pytest.mark.parametrize("recycle", [("--max-requests", "5000", "--min-worker-lifetime", "0"),
                                     ("--reload-on-rss", "1")],
                         ids=["max-requests", "reload-on-rss"])
def test_recycling_under_keep_alive_load_loses_nothing(serve, app_dir, recycle):
    """wrk sends each next request the moment it has an answer: a recycled
    worker answers what it finds on its keep-alive connections with
    Connection: close rather than closing under them."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--disable-logging", *recycle)
    s.wait_workers(2)

    def recycles():
        wait_for(lambda: s.log().count("replacing it") >= 4, timeout=60, what="4 recycles")

    done, bad = failures(under_load(s.url + "/", recycles, connections=20))
    assert done > 1000
    assert bad == 0


def test_max_requests_delta_adds_nothing_to_the_first_worker_as_in_uwsgi(serve, app_dir):
    """uWSGI gives worker i N + (i-1)·D requests: worker 1 stops after N.
    (It got N + D: every worker's limit was D higher than uWSGI's.)"""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--max-requests", "3",
              "--max-requests-delta", "4", "--min-worker-lifetime", "0")
    (first,) = s.wait_workers(1)
    for _ in range(3):
        assert requests.get(s.url, timeout=10).ok
    wait_for(lambda: "served 3 requests (--max-requests)" in s.log(), what="worker 1 replaced after 3", show=s.log)


def test_max_requests_waits_for_the_min_lifetime(serve, app_dir):
    """As in uWSGI, a worker past --max-requests is replaced only once it
    has run --min-worker-lifetime (10 s by default): it serves on until
    then, rather than a worker being forked every few requests."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--max-requests", "2",
              "--min-worker-lifetime", "5")
    first = s.wait_workers(1)
    pids = {int(requests.get(s.url, timeout=10).text.split()[0]) for _ in range(6)}
    assert pids == set(first), "replaced before its --min-worker-lifetime"
    assert "(--max-requests)" not in s.log()
    wait_for(lambda: "(--max-requests)" in s.log(), timeout=30, what="the replacement after 5 s")
    assert not set(first) & set(s.wait_workers(1))


def test_max_worker_lifetime(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--max-worker-lifetime", "1")
    (first,) = s.wait_workers(1)
    s.wait_log("(--max-worker-lifetime), replacing it")
    wait_for(lambda: first not in s.worker_pids() and len(s.worker_pids()) == 1, what="replacement")
    assert fresh(s.url).status_code == 200


def test_reload_on_rss(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--reload-on-rss", "1")
    # As in uWSGI, looked at once a request is served: a worker that
    # starts over the limit is not replaced before it serves one.
    (first,) = s.wait_workers(1)
    time.sleep(0.5)
    assert s.worker_pids() == [first] and "reload-on-rss" not in s.log()
    assert fresh(s.url).status_code == 200
    s.wait_log("(--reload-on-rss), replacing it")
    assert fresh(s.url).status_code == 200


RESERVING_APP = """
import mmap
RESERVED = []
def application(environ, start_response):
    if environ["PATH_INFO"] == "/reserve":
        # Address space only: nothing is touched, so nothing is resident.
        RESERVED.append(mmap.mmap(-1, 4 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_reload_on_as_replaces_the_worker_past_its_address_space(serve, tmp_path):
    (tmp_path / "reserving.py").write_text(RESERVING_APP)
    s = serve("--wsgi-file", str(tmp_path / "reserving.py"), "--processes", "1", "--reload-on-as", "3000",
              "--min-worker-lifetime", "1")
    (first,) = s.wait_workers(1)
    assert "--reload-on-as" not in s.log()
    assert fresh(s.url + "/reserve").text == "ok"
    s.wait_log("(--reload-on-as), replacing it")
    wait_for(lambda: first not in s.worker_pids() and len(s.worker_pids()) == 1, what="replacement")
    assert fresh(s.url).status_code == 200


def test_evil_reload_on_rss(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--evil-reload-on-rss", "1")
    s.wait_log("(--evil-reload-on-rss), killing it")


# Daemons the master runs beside the workers.
def sleeping_child(s):
    """The master's child running `sleep` (a daemon past its exec), if any."""
    for p in s.worker_pids():
        try:
            if open(f"/proc/{p}/cmdline").read().startswith("sleep"):
                return p
        except FileNotFoundError:
            pass
    return None


def test_attach_daemon_is_respawned_and_stopped(serve, app_dir, tmp_path):
    marker = tmp_path / "starts"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--attach-daemon", f"echo start >> {marker}; exec sleep 300")
    s.wait_workers(2)  # the worker and the daemon
    wait_for(lambda: marker.exists() and marker.read_text().count("start") == 1, what="daemon start")
    # The marker is written before the shell execs sleep: wait for that.
    daemon = wait_for(lambda: sleeping_child(s), what="daemon exec")
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: marker.read_text().count("start") == 2, what="daemon restart")
    s.wait_log("restarting")
    new = wait_for(lambda: (p := sleeping_child(s)) != daemon and p, what="new daemon exec")
    s.proc.terminate()
    assert s.proc.wait(20) == 0
    wait_for(lambda: not alive(new),
             what="daemon stop")


def test_a_daemons_whole_process_group_stops_and_dies_with_a_killed_master(serve, app_dir, tmp_path):
    """What a daemon's shell started stops with it (uWSGI kills the
    group); a daemon the shell exec'd dies with a master killed outright."""
    inner, execd = tmp_path / "inner.pid", tmp_path / "execd.pid"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--attach-daemon", f"sh -c 'echo $$ > {inner}; exec sleep 300'; echo after")
    wait_for(lambda: inner.exists() and inner.read_text().strip(), what="the daemon's child")
    grandchild = int(inner.read_text())
    s.proc.terminate()
    assert s.proc.wait(20) == 0
    wait_for(lambda: not alive(grandchild), what="the daemon's child to stop with it")
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--attach-daemon", f"echo $$ > {execd}; exec sleep 301")
    wait_for(lambda: execd.exists() and execd.read_text().strip(), what="the daemon")
    daemon = int(execd.read_text())
    s.proc.kill()
    s.proc.wait(20)
    wait_for(lambda: not alive(daemon), what="the daemon to die with its master")


def test_smart_attach_daemon(serve, app_dir, tmp_path):
    pidfile = tmp_path / "d.pid"
    cmd = f"sh -c 'echo $$ > {pidfile}; exec sleep 300' > /dev/null 2>&1 &"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--smart-attach-daemon", f"{pidfile} {cmd}")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="smart daemon pidfile")
    first = int(pidfile.read_text())
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: pidfile.read_text().strip() and int(pidfile.read_text()) != first, what="smart restart")
    second = int(pidfile.read_text())
    s.proc.terminate()
    assert s.proc.wait(20) == 0
    wait_for(lambda: not alive(second),
             what="smart daemon stop")


def test_a_daemon_that_ignores_sigterm_is_killed_after_the_mercy(serve, app_dir, tmp_path):
    """A stop ends even when an attached daemon ignores SIGTERM: it is
    killed once --reload-mercy is over, after the workers are gone."""
    marker = tmp_path / "ready"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--reload-mercy", "2",
              "--attach-daemon", f"trap '' TERM; touch {marker}; while :; do sleep 0.1; done")
    wait_for(marker.exists, what="daemon start")
    s.proc.terminate()
    assert s.proc.wait(20) == 0
    assert "master stopped" in s.log()


BACKGROUND_APP = '''
import os, threading, time
from concurrent.futures import ThreadPoolExecutor

POOL = ThreadPoolExecutor(2)
OUT = os.environ["MARKS"]

def mark(what):
    time.sleep(1)
    with open(OUT, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")

def application(environ, start_response):
    if environ["PATH_INFO"] == "/queue":
        POOL.submit(mark, "queued")
        threading.Thread(target=mark, args=("thread",)).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


@pytest.mark.parametrize("how", ["stop", "reload"])
def test_work_a_request_left_in_threads_finishes_when_its_worker_exits(serve, tmp_path, how):
    """A job queued on a ThreadPoolExecutor and a plain thread, started by a
    request that has been answered (a mail, a webhook): a stop or a reload
    waits for them, as uWSGI's and Gunicorn's workers do (Python's own exit
    does). They were cut off, and the work lost without a word."""
    (tmp_path / "bg.py").write_text(BACKGROUND_APP)
    marks = tmp_path / "marks"
    marks.touch()
    s = serve("--wsgi-file", str(tmp_path / "bg.py"), "--processes", "1", env={"MARKS": str(marks)})
    pid = int(requests.get(s.url + "/queue", timeout=10).text)
    if how == "stop":
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(20) == 0
    else:
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not alive(pid), what="the old worker's exit")
    assert sorted(marks.read_text().split("\n")[:-1]) == [f"queued {pid}", f"thread {pid}"], s.log()


@pytest.mark.parametrize("master", [["--processes", "1"], ["--no-master"]])
def test_a_thread_that_never_ends_holds_a_stop_for_the_mercy_time_at_most(serve, tmp_path, master):
    """A non-daemon thread that never ends (a poller) a request started:
    the exit waits for the app's threads, but --reload-mercy bounds it,
    with or without a master to kill the process."""
    (tmp_path / "forever.py").write_text(
        "import threading, time\n"
        "def application(environ, start_response):\n"
        "    threading.Thread(target=lambda: time.sleep(3600)).start()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    s = serve("--wsgi-file", str(tmp_path / "forever.py"), "--reload-mercy", "2", *master)
    assert requests.get(s.url, timeout=10).text == "ok"
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) is not None
    s.wait_log("exiting without them")
