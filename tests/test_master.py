"""The master and its workers: real processes, real signals, bounded loads."""
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import APPS, BIN, ROOT, VENV


def fresh(url, timeout=30):
    """One request on a new connection: no keep-alive races."""
    return requests.get(url, headers={"Connection": "close"}, timeout=timeout)


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


@pytest.fixture
def app_dir(tmp_path):
    """A copy of procs.py whose code the reload tests can change."""
    d = tmp_path / "app"
    d.mkdir()
    shutil.copy(APPS / "procs.py", d / "procs.py")
    (d / "version.txt").write_text("v1")
    return d


def test_workers_are_forked_from_a_preloaded_master(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "3")
    workers = s.wait_workers(3)
    seen = set()
    for _ in range(60):
        served_by, loaded_in, _ = fresh(s.url).text.split()
        assert int(loaded_in) == s.proc.pid  # imported once, in the master
        seen.add(int(served_by))
    assert seen <= set(workers)
    assert len(seen) >= 2, "connections should spread across workers"


def test_lazy_apps_load_in_each_worker(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--lazy-apps")
    s.wait_workers(2)
    served_by, loaded_in, _ = fresh(s.url).text.split()
    assert served_by == loaded_in


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
    assert load.ok > 50
    # Only connections the killed worker held may fail: its event loop holds
    # every connection it accepted, so up to one per client (each client has
    # one in flight), and only as resets, never as error responses.
    assert len(load.failures) <= 4, load.failures
    assert all(isinstance(f, str) and "Connection" in f for f in load.failures), load.failures


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


@pytest.mark.parametrize("how", ["reload", "chain"])
def test_twenty_reloads_under_load_lose_nothing(serve, app_dir, how):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "4")
    s.wait_workers(4)
    load = Load(s.url)
    sig = signal.SIGHUP if how == "reload" else signal.SIGRTMIN + 1
    durations = []
    for i in range(20):
        (app_dir / "version.txt").write_text(f"v{i + 2}")
        before = s.log().count("reload done")
        t0 = time.monotonic()
        os.kill(s.proc.pid, sig)
        deadline = time.monotonic() + 30
        while s.log().count("reload done") == before:
            assert time.monotonic() < deadline, s.log()
            time.sleep(0.02)
        durations.append(time.monotonic() - t0)
    time.sleep(0.5)
    load.finish()
    print(f"{how} reload, 4 workers: {load.ok} requests, 0 failed, 20 reloads, "
          f"median {sorted(durations)[10]:.2f}s, max {max(durations):.2f}s each")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    assert fresh(s.url).text.split()[-1] == "v21"  # the new code is served
    assert s.proc.poll() is None


def test_max_requests_recycles_without_failures(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--max-requests", "50")
    first = s.wait_workers(2)
    load = Load(s.url)
    deadline = time.monotonic() + 60
    while "(--max-requests)" not in s.log() or s.log().count("stopped") < 4:
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.1)
    load.finish()
    assert load.failures == [], load.failures[:5]
    assert not set(first) & set(s.wait_workers(2))


def test_graceful_stop_finishes_requests_in_flight(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1")
    s.wait_workers(1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(fresh, s.url + "/sleep?1.5")
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGTERM)
        assert slow.result().status_code == 200
    assert s.proc.wait(20) == 0
    assert "master stopped" in s.log()


def test_ttin_ttou(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2")
    s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGTTIN)
    s.wait_workers(3)
    # one at a time: two pending standard signals merge into one
    os.kill(s.proc.pid, signal.SIGTTOU)
    s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGTTOU)
    s.wait_workers(1)
    assert fresh(s.url).status_code == 200


def test_workers_die_with_a_killed_master(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2")
    workers = s.wait_workers(2)
    s.proc.kill()
    s.proc.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]
              for p in workers):
        assert time.monotonic() < deadline, "workers outlived the master"
        time.sleep(0.05)
    with pytest.raises(requests.RequestException):
        fresh(s.url, timeout=2)


def test_stop_and_reload_by_pidfile_daemonize_and_vacuum(tmp_path, app_dir):
    pidfile, sock, log = tmp_path / "m.pid", tmp_path / "app.sock", tmp_path / "daemon.log"
    args = [BIN, "--http-socket", str(sock), "--wsgi-file", str(app_dir / "procs.py"),
            "--processes", "2", "--pidfile", str(pidfile), "--daemonize", str(log), "--vacuum"]
    assert subprocess.run(args, timeout=30).returncode == 0  # returns: detached
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and sock.exists() and log.exists() and "serving" in log.read_text()):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.05)
    curl = ["curl", "-s", "--unix-socket", str(sock), "http://localhost/"]
    assert subprocess.run(curl, capture_output=True, timeout=10).stdout.endswith(b"v1")
    (app_dir / "version.txt").write_text("v2")
    assert subprocess.run([BIN, "--reload", str(pidfile)], timeout=10).returncode == 0
    deadline = time.monotonic() + 20
    while not subprocess.run(curl, capture_output=True, timeout=10).stdout.endswith(b"v2"):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    assert subprocess.run([BIN, "--stop", str(pidfile)], timeout=10).returncode == 0
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert not pidfile.exists() and not sock.exists(), "vacuum left files behind"
    p = subprocess.run([BIN, "--stop", str(pidfile)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "pidfile" in p.stderr


def readable_by_nobody(path):
    """Whether user nobody could read path (every directory on the way o+x)."""
    import stat
    parts = os.path.abspath(path).split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i]) or "/"
        if os.path.isdir(d) and not os.stat(d).st_mode & stat.S_IXOTH:
            return False
    return True


import sys  # noqa: E402

NOBODY_CAN_RUN_PYTHON = readable_by_nobody(sys.base_prefix)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_uid_drop_with_an_unreadable_interpreter_is_explained(tmp_path):
    if NOBODY_CAN_RUN_PYTHON:
        pytest.skip("the interpreter is readable by nobody here")
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--uid", "nobody", "--wsgi-file",
                        str(APPS / "procs.py")], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    import pwd
    # the switch to nobody happened (before Python started), and it says why Python cannot start
    assert f"runs as uid {pwd.getpwnam('nobody').pw_uid}" in p.stderr
    assert "must be able to read the interpreter's files" in p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_gid_drop(serve):
    import grp
    s = serve("--wsgi-file", str(APPS / "procs.py"), "--processes", "1", "--gid", "nogroup")
    (worker,) = s.wait_workers(1)
    status = open(f"/proc/{worker}/status").read()
    gid = next(l for l in status.splitlines() if l.startswith("Gid:")).split()[1]
    groups = next(l for l in status.splitlines() if l.startswith("Groups:")).split()[1:]
    assert int(gid) == grp.getgrnam("nogroup").gr_gid
    assert groups == []  # supplementary groups dropped too
    assert fresh(s.url).status_code == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.skipif(not NOBODY_CAN_RUN_PYTHON, reason=f"nobody cannot read {sys.base_prefix}")
def test_uid_gid_drop(serve):
    s = serve("--wsgi-file", str(APPS / "procs.py"), "--processes", "1", "--uid", "nobody", "--gid", "nogroup")
    (worker,) = s.wait_workers(1)
    status = open(f"/proc/{worker}/status").read()
    uid = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1]
    gid = next(l for l in status.splitlines() if l.startswith("Gid:")).split()[1]
    import grp
    import pwd
    assert int(uid) == pwd.getpwnam("nobody").pw_uid
    assert int(gid) == grp.getgrnam("nogroup").gr_gid
    assert fresh(s.url).status_code == 200


def test_lazy_app_that_cannot_load_stops_the_master(tmp_path):
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--lazy-apps", "--processes", "2",
                        "--wsgi-file", str(APPS / "broken_import.py")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "this_module_does_not_exist" in p.stderr


def pss_kb(pid):
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def test_preload_shares_memory_between_workers(serve):
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "flask_app:app", "--processes", "4")
    workers = s.wait_workers(4)
    for _ in range(40):
        assert fresh(s.url + "/").status_code == 200
    pss = [pss_kb(p) for p in workers]
    rss = s.rss_kb(pid=workers[0])
    print(f"4 Flask workers: PSS {pss} KiB (sum {sum(pss)}), one worker's RSS {rss} KiB, "
          f"master PSS {pss_kb(s.proc.pid)} KiB")
    assert sum(pss) < 4 * rss * 0.6


SYSTEM_PYTHON = "/usr/bin/python3.11"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON}")
def test_uid_gid_drop_with_a_system_python(serve):
    """Python under /usr is readable by nobody: a venv made from it runs the
    app after the switch to nobody:nogroup."""
    import grp
    import pwd
    import tempfile
    base = tempfile.mkdtemp(prefix="oxgate-uid-")
    os.chmod(base, 0o755)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", f"{base}/venv"], check=True, timeout=120)
    try:
        s = serve("--home", f"{base}/venv", "--wsgi-file", str(APPS / "procs.py"), "--processes", "1",
                  "--uid", "nobody", "--gid", "nogroup")
        (worker,) = s.wait_workers(1)
        status = open(f"/proc/{worker}/status").read()
        uid = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:]
        gid = next(l for l in status.splitlines() if l.startswith("Gid:")).split()[1:]
        assert set(map(int, uid)) == {pwd.getpwnam("nobody").pw_uid}  # real, effective, saved
        assert set(map(int, gid)) == {grp.getgrnam("nogroup").gr_gid}
        master = open(f"/proc/{s.proc.pid}/status").read()
        assert next(l for l in master.splitlines() if l.startswith("Uid:")).split()[1] == str(pwd.getpwnam("nobody").pw_uid)
        assert fresh(s.url).status_code == 200
    finally:
        shutil.rmtree(base, ignore_errors=True)


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
    assert "(1 in a row); next start in 0.2s" in log
    assert "(2 in a row); next start in 0.4s" in log
    assert "(3 in a row); next start in 0.8s" in log
    (w,) = s.wait_workers(1)  # and it comes back
    assert fresh(s.url).status_code == 200


def test_chain_and_brutal_reload_by_pidfile_and_pidfile2(serve, app_dir, tmp_path):
    pidfile, pidfile2 = tmp_path / "m.pid", tmp_path / "m2.pid"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2",
              "--pidfile", str(pidfile), "--pidfile2", str(pidfile2))
    s.wait_workers(2)
    assert pidfile.read_text().strip() == pidfile2.read_text().strip() == str(s.proc.pid)
    (app_dir / "version.txt").write_text("v-chain")
    assert subprocess.run([BIN, "--chain-reload", str(pidfile)], timeout=10).returncode == 0
    s.wait_log("chain reload done")
    assert fresh(s.url).text.endswith("v-chain")
    old = s.wait_workers(2)
    assert subprocess.run([BIN, "--brutal-reload", str(pidfile)], timeout=10).returncode == 0
    s.wait_log("brutal reload done")
    assert not set(old) & set(s.wait_workers(2))


def test_second_sigint_stops_at_once(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1")
    s.wait_workers(1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(fresh, s.url + "/sleep?30")
        time.sleep(0.5)
        s.proc.send_signal(signal.SIGINT)
        s.wait_log("stopping gracefully")
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(10) == 0  # not 30 s later
        with pytest.raises(requests.RequestException):
            slow.result()
    assert "second SIGINT, killing the workers now" in s.log()
