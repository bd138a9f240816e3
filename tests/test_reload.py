"""Reloading the workers: graceful, chain and brutal; by signal, pidfile, touch file or --py-autoreload."""
import os
import re
import signal
import shutil
import subprocess
import time

import pytest
import requests

from helpers import APPS, BIN, INSTALLED, Load, failures, free_port, fresh, listens, under_load, wait_for


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


@pytest.mark.parametrize("how", ["reload", "chain"])
def test_reloads_under_keep_alive_load_lose_nothing(serve, app_dir, how):
    """wrk sends each next request the moment it has an answer: a worker
    that stops must answer a request it finds on an idle keep-alive
    connection (with Connection: close), not close the connection under
    it."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "4", "--disable-logging")
    s.wait_workers(4)
    sig = signal.SIGHUP if how == "reload" else signal.SIGRTMIN + 1

    def reloads():
        for i in range(10):
            before = s.log().count("reload done")
            os.kill(s.proc.pid, sig)
            wait_for(lambda: s.log().count("reload done") > before, timeout=30, what="reload done")

    done, bad = failures(under_load(s.url + "/", reloads, connections=50))
    print(f"{how}: 10 reloads under wrk -c50: {done} requests, {bad} failed")
    assert done > 1000
    assert bad == 0
    assert s.proc.poll() is None


def scoreboard_fd(pid):
    """The master's scoreboard memfd, as /proc shows it."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if "oxgate-scoreboard" in os.readlink(f"/proc/{pid}/fd/{fd}"):
            return f"/proc/{pid}/fd/{fd}"
    raise AssertionError("no scoreboard memfd")


@pytest.mark.parametrize("how", ["reload", "chain"])
def test_a_reload_onto_another_scoreboard_layout_starts_the_counters_again(serve, app_dir, how):
    """An upgrade: the re-executed master is another oxgate build, whose
    scoreboard layout differs (here, the stamp is overwritten). It makes a
    new scoreboard, keeps the old workers' slots theirs until they go, and
    loses no request; the next reload adopts the new one again."""
    sp = free_port()
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--stats", f"127.0.0.1:{sp}",
              "--stats-http")
    s.wait_workers(2)
    stats = f"http://127.0.0.1:{sp}/"
    for _ in range(20):
        assert fresh(s.url).status_code == 200
    assert sum(w["requests"] for w in requests.get(stats).json()["workers"]) == 20
    fd = os.open(scoreboard_fd(s.proc.pid), os.O_RDWR)
    try:
        os.pwrite(fd, b"\0" * 8, 0)
    finally:
        os.close(fd)
    load = Load(s.url)
    os.kill(s.proc.pid, signal.SIGHUP if how == "reload" else signal.SIGRTMIN + 1)
    s.wait_log("reload done", timeout=30)
    time.sleep(0.3)
    load.finish()
    assert load.failures == [] and load.ok > 0
    assert "cannot adopt the previous master's scoreboard (the scoreboard's layout is 0x0" in s.log()
    s.wait_workers(2)
    wait_for(lambda: listens(sp), what="the stats socket")
    wait_for(lambda: all(w["accepting"] for w in requests.get(stats).json()["workers"]), what="ready workers")
    for _ in range(5):
        assert fresh(s.url).status_code == 200
    # Only what the new workers served is counted: the old ones counted
    # theirs (the first 20, and some of the load) in the old scoreboard.
    metrics = requests.get(f"http://127.0.0.1:{sp}/metrics").text
    total = sum(int(n) for n in re.findall(r"^oxgate_requests_total\{.*\} (\d+)$", metrics, re.M))
    assert 5 <= total <= load.ok + 5, metrics
    # Each new worker has a slot of its own (an old worker's slot, freed
    # as it exited, would have taken a new worker out of the stats).
    workers = requests.get(stats).json()["workers"]
    assert sorted(w["pid"] for w in workers) == s.worker_pids(), workers
    assert "show no counts, and harakiri and max-requests do not see them" in s.log()
    # The new scoreboard is this build's: the next reload adopts it.
    before = s.log().count("reload done")
    os.kill(s.proc.pid, signal.SIGHUP)
    wait_for(lambda: s.log().count("reload done") > before, timeout=30, what="reload done")
    assert s.log().count("cannot adopt") == 1
    assert s.proc.poll() is None


def test_a_reload_runs_the_build_now_at_the_programs_path(serve, app_dir, tmp_path):
    """An upgrade puts a new build where the program was (apt, an install
    script: a rename over it). A reload runs that one, as uWSGI's binary
    reloading does; it ran the old build (its deleted file) again, under the
    name `exe`. (The pip-installed program is Python's: its upgrade is
    pip's, and a reload runs the interpreter again.)"""
    if INSTALLED:
        pytest.skip("the binary's own path: the pip-installed program runs under Python")
    program = tmp_path / "oxbin"
    shutil.copy(BIN, program)
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", program=(str(program),))
    s.wait_workers(1)
    shutil.copy(BIN, tmp_path / "oxbin.new")
    os.replace(tmp_path / "oxbin.new", program)
    assert os.readlink(f"/proc/{s.proc.pid}/exe").endswith(" (deleted)")
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("reload done", timeout=30)
    assert os.readlink(f"/proc/{s.proc.pid}/exe") == str(program)
    assert open(f"/proc/{s.proc.pid}/comm").read().strip() == "oxbin"
    assert [open(f"/proc/{w}/comm").read().strip() for w in s.wait_workers(1)] == ["oxbin"]
    assert fresh(s.url).status_code == 200


def test_a_reload_to_another_worker_count_says_what_it_does(serve, app_dir, tmp_path):
    """processes 2 -> 3 -> 1 in the ini, each with a SIGHUP: the worker
    count follows, and the log says how (it said "replacing 2 worker(s)"
    for both, stopping or starting the others unsaid)."""
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {app_dir / 'procs.py'}\nprocesses = 2\n")
    s = serve("--ini", str(ini))
    s.wait_workers(2)
    for n, says in ((3, "replacing 2 worker(s) and starting 1 more (--processes 3)"),
                    (1, "replacing 1 of the 3 worker(s) and stopping the other 2 (--processes 1)")):
        ini.write_text(f"[uwsgi]\nwsgi-file = {app_dir / 'procs.py'}\nprocesses = {n}\n")
        before = s.log().count("reload done")
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_for(lambda: s.log().count("reload done") > before, timeout=30, what="reload done")
        assert says in s.log(), s.log()
        s.wait_workers(n)
        assert fresh(s.url).status_code == 200


def test_brutal_reload(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2")
    old = s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGRTMIN + 2)
    s.wait_log("brutal reload done")
    new = s.wait_workers(2)
    assert not set(old) & set(new)
    assert fresh(s.url).status_code == 200
    # Not "replacing 0 worker(s)": they were killed before the exec.
    assert "re-executed, the old workers killed, starting 2" in s.log()


def test_brutal_reloads_give_back_the_killed_workers_slots(serve, app_dir):
    """The killed workers' scoreboard slots are freed before the master
    re-executes: 64 workers fill a quarter of the slots, and the fifth
    brutal reload used to find none free (no workers at all)."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "64", "--disable-logging")
    s.wait_workers(64, timeout=60)
    for n in range(1, 7):
        os.kill(s.proc.pid, signal.SIGRTMIN + 2)
        wait_for(lambda: s.log().count("brutal reload done") == n, timeout=60, what=f"brutal reload {n}")
    s.wait_workers(64, timeout=60)
    assert "no free scoreboard slot" not in s.log()
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


def test_stop_and_reload_by_pidfile_daemonize_and_vacuum(tmp_path, app_dir):
    pidfile, sock, log = tmp_path / "m.pid", tmp_path / "app.sock", tmp_path / "daemon.log"
    stats, metrics = tmp_path / "stats.sock", tmp_path / "metrics.sock"
    args = [BIN, "--http-socket", str(sock), "--wsgi-file", str(app_dir / "procs.py"),
            "--processes", "2", "--pidfile", str(pidfile), "--daemonize", str(log), "--vacuum",
            "--stats", str(stats), "--metrics", str(metrics)]
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
    # The stats and metrics sockets too, as uWSGI's vacuum removes its
    # stats socket (they were left).
    assert not pidfile.exists() and not sock.exists(), "vacuum left files behind"
    assert not stats.exists() and not metrics.exists(), "vacuum left the stats sockets"
    p = subprocess.run([BIN, "--stop", str(pidfile)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "pidfile" in p.stderr


def test_vacuum_removes_relative_paths_where_they_were_made(tmp_path):
    """Relative --pidfile and --logto paths are the start directory's, as
    uWSGI opens them before --chdir, and a relative unix socket is
    --chdir's, as uWSGI binds it after; a file of the same name in the
    other place is someone else's, and vacuum leaves it."""
    appdir = tmp_path / "appdir"
    appdir.mkdir()
    shutil.copy(APPS / "echo.py", appdir / "echo.py")
    for name in ("rel.pid", "rel.log"):
        (appdir / name).write_text("precious\n")
    (tmp_path / "rel.sock").write_text("precious\n")
    p = subprocess.Popen([BIN, "--http-socket", "rel.sock", "--chdir", str(appdir), "--wsgi-file", "echo.py",
                          "--pidfile", "rel.pid", "--logto", "rel.log", "--vacuum", "--processes", "1"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "rel.log").exists() and "serving" in (tmp_path / "rel.log").read_text(),
                 what="the server's log")
        assert (tmp_path / "rel.pid").exists() and (appdir / "rel.sock").is_socket()
        # logrotate moves the log away and asks for a reopen: the file
        # comes back where it was, not under --chdir.
        (tmp_path / "rel.log").rename(tmp_path / "rel.log.1")
        os.kill(p.pid, signal.SIGUSR1)
        wait_for(lambda: (tmp_path / "rel.log").exists(), what="the reopened log")
    finally:
        p.terminate()
        p.wait(timeout=30)
    assert not (tmp_path / "rel.pid").exists() and not (appdir / "rel.sock").exists()
    assert all((appdir / n).read_text() == "precious\n" for n in ("rel.pid", "rel.log"))
    assert (tmp_path / "rel.sock").read_text() == "precious\n"


def test_vacuum_leaves_a_socket_and_pidfile_another_server_has_taken(tmp_path):
    """A second server started on the same socket path and pidfile takes
    them over (as uWSGI's does): when the first stops, its vacuum leaves
    them, as uWSGI's ("changed inode. Skip removal"). It removed them, and
    the second server could no longer be reached."""
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    sock, pid = tmp_path / "s.sock", tmp_path / "p.pid"
    args = [BIN, "--http-socket", str(sock), "--wsgi-file", "echo.py", "--pidfile", str(pid), "--vacuum",
            "--processes", "1"]
    logs = [open(tmp_path / f"{n}.log", "wb") for n in ("first", "second")]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=logs[0], stderr=subprocess.STDOUT)
    second = None
    try:
        wait_for(lambda: pid.exists() and pid.read_text().strip() == str(first.pid), what="the first pidfile")
        # Serving, not still loading the app (a stop then is an error exit).
        wait_for(lambda: subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://x/"], capture_output=True,
                                        timeout=20).returncode == 0, what="the first server serving")
        ino = sock.stat().st_ino
        second = subprocess.Popen(args, cwd=tmp_path, stdout=logs[1], stderr=subprocess.STDOUT)
        wait_for(lambda: sock.exists() and sock.stat().st_ino != ino and pid.read_text().strip() == str(second.pid),
                 what="the second server on the same path")
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=30) == 0
        assert sock.is_socket() and pid.read_text().strip() == str(second.pid)
        out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://x/"], capture_output=True,
                             timeout=20)
        assert out.returncode == 0 and out.stdout, out
        assert "another socket now" in (tmp_path / "first.log").read_text()
    finally:
        for p in (first, second):
            if p and p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
    # The second's own vacuum removes them.
    assert not sock.exists() and not pid.exists()


@pytest.mark.parametrize("opt,done", [("--touch-reload", "graceful reload done"),
                                      ("--touch-chain-reload", "chain reload done"),
                                      # uWSGI's; it had no effect.
                                      ("--touch-workers-reload", "graceful reload done")])
def test_touch_reload(serve, app_dir, tmp_path, opt, done):
    touch = tmp_path / "touch-me"
    touch.write_text("")
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", opt, str(touch))
    s.wait_workers(2)
    (app_dir / "version.txt").write_text("v-touched")
    time.sleep(0.01)
    os.utime(touch, (time.time() + 5, time.time() + 5))
    s.wait_log(done)
    assert fresh(s.url).text.endswith("v-touched")


def test_touch_reload_fires_when_the_file_is_removed_and_when_it_comes_back(serve, app_dir, tmp_path):
    """uWSGI's --touch-reload reloads when the watched file is removed (a
    deploy that deletes it), and again when it is created; oxgate saw only
    a changed modification time."""
    touch = tmp_path / "touch-me"
    touch.write_text("")
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--touch-reload", str(touch))
    s.wait_workers(1)
    (app_dir / "version.txt").write_text("v-removed")
    touch.unlink()
    s.wait_log("was removed")
    s.wait_log("graceful reload done")
    assert fresh(s.url).text.endswith("v-removed")
    (app_dir / "version.txt").write_text("v-back")
    touch.write_text("")
    wait_for(lambda: fresh(s.url).text.endswith("v-back"), what="a reload on the file's return",
             show=s.log)
    wait_for(lambda: s.log().count("graceful reload done") == 2, what="the second reload", show=s.log)


def test_exit_on_reload_stops_where_a_reload_was_asked_for(serve, app_dir, tmp_path):
    """--exit-on-reload (uWSGI's, for containers): a SIGHUP or a touched
    file stops the server gracefully, the request in flight answered; it
    reloaded."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--exit-on-reload")
    s.wait_workers(1)
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(requests.get, s.url + "/sleep?1", timeout=20)
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGHUP)
        assert slow.result().status_code == 200
    assert s.proc.wait(20) == 0
    assert "stopping gracefully instead (--exit-on-reload)" in s.log()


def test_py_autoreload(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--py-autoreload", "1")
    s.wait_workers(2)
    assert fresh(s.url).text.endswith("v1")
    time.sleep(1.1)  # a different mtime
    (app_dir / "procs.py").write_text((app_dir / "procs.py").read_text().replace('"v0"', '"v0" # edited'))
    (app_dir / "version.txt").write_text("v-auto")
    s.wait_log("changed, reloading (--py-autoreload)")
    wait_for(lambda: fresh(s.url).text.endswith("v-auto"), what="new code")
    # An edit that does not import: the reload fails, the old workers
    # serve on, and the fix saved next reloads.
    good = (app_dir / "procs.py").read_text()
    time.sleep(1.1)
    (app_dir / "procs.py").write_text(good + "\nthis is not python\n")
    s.wait_log("reload failed")
    assert fresh(s.url).text.endswith("v-auto")
    time.sleep(1.1)
    (app_dir / "version.txt").write_text("v-fixed")
    (app_dir / "procs.py").write_text(good + "\n# fixed\n")
    wait_for(lambda: fresh(s.url).text.endswith("v-fixed"), what="the fix reloaded")


def test_reload_after_chdir_finds_a_relative_config_file(serve, tmp_path):
    # The master re-executes its command line from where it was started, not
    # from --chdir's directory: `oxgate app.ini` still finds app.ini.
    (tmp_path / "app.ini").write_text(f"[uwsgi]\nchdir = {APPS}\nwsgi-file = echo.py\nprocesses = 1\n")
    s = serve("app.ini", cwd=tmp_path)
    old = s.wait_workers(1)
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("graceful reload done")
    assert "reload failed" not in s.log()
    assert s.wait_workers(1) != old
    assert requests.get(s.url + "/x").json()["path"] == "/x"


def test_a_reload_onto_a_broken_configuration_is_refused_and_serving_goes_on(serve, tmp_path):
    """An edited config file with an error: the reload is refused (the
    command is checked with --check-config first) and the old workers serve
    on. One whose new socket cannot be bound: the new image serves on the
    sockets it has, with a warning, instead of exiting."""
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nchdir = {APPS}\nwsgi-file = echo.py\nprocesses = 1\n")
    s = serve("app.ini", cwd=tmp_path)
    old = s.wait_workers(1)
    ini.write_text(ini.read_text() + f"ini = {tmp_path}/missing.ini\n")
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("graceful reload refused: the configuration does not check")
    assert s.wait_workers(1) == old
    assert requests.get(s.url + "/x").json()["path"] == "/x"
    # A user that does not exist here: the new image could not drop to it.
    ini.write_text(ini.read_text().replace(f"ini = {tmp_path}/missing.ini\n", "uid = nosuchuser\n"))
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("--uid nosuchuser: no such user; still serving")
    assert s.wait_workers(1) == old
    assert requests.get(s.url + "/x").json()["path"] == "/x"
    ini.write_text(ini.read_text().replace("uid = nosuchuser\n",
                                           f"http-socket = {tmp_path}/no/such/dir/s.sock\n"))
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("after the reload:")
    s.wait_log("graceful reload done")
    assert s.proc.poll() is None
    assert s.wait_workers(1) != old
    assert requests.get(s.url + "/x").json()["path"] == "/x"


def test_master_fifo_commands(serve, app_dir, tmp_path):
    """uWSGI's --master-fifo: + and - change the worker count, r reloads
    (the master re-executes, same pid, new workers, and keeps the FIFO it
    reads), a digit moves to another slot, Q stops at once; an unknown
    character is named."""
    first, second = tmp_path / "a.fifo", tmp_path / "b.fifo"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--master-fifo", str(first), "--master-fifo", str(second))
    before = s.wait_workers(1)

    def send(fifo, text):
        # Non-blocking: with no reader, this fails at once instead of
        # waiting for one.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    send(first, "+")
    s.wait_workers(2)
    send(first, "-\n")
    s.wait_workers(1)
    send(first, "x1")
    s.wait_log("'x' is not a command")
    s.wait_log(f"now reading {second}")
    inode = second.stat().st_ino
    send(second, "r")
    wait_for(lambda: s.worker_pids() and not set(s.worker_pids()) & set(before), what="reloaded workers")
    wait_for(lambda: fresh(s.url).status_code == 200, what="an answer after the reload")
    assert second.stat().st_ino == inode, "the reloaded master reads the same FIFO"
    # What comes with a reload in one write is done too, before it.
    reloads = s.log().count("graceful reload done")
    send(second, "r+")
    s.wait_log("--master-fifo: '+'")
    wait_for(lambda: s.log().count("graceful reload done") > reloads, what="the second reload")
    send(second, "Q")
    assert s.proc.wait(20) is not None
    # Its lines name the FIFO's command, not SIGINTs nobody sent.
    assert "SIGINT" not in s.log() and "--master-fifo: 'Q' (immediate stop)" in s.log()
    assert not second.exists(), "the FIFO in use is removed at the end"


def test_a_stop_right_after_a_sigusr2_chain_reload_stops(serve, app_dir):
    """A SIGTERM right after a SIGUSR2 chain reload stops, as `oxgate
    --stop`, systemd and Docker expect."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1")
    (before,) = s.wait_workers(1)
    s.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: s.worker_pids() and before not in s.worker_pids(), what="the chain reload")
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(15) == 0
    assert "old master" not in s.log()
