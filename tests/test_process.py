"""The master process: stop signals, worker count by signal, dropping privileges, limits, daemonize, systemd."""
# --daemonize, --pidfile and --vacuum with a stop by pidfile are tested in
# test_reload.py (test_stop_and_reload_by_pidfile_daemonize_and_vacuum).
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from helpers import (APPS, BIN, ECHO, INSTALLED, VENV, alive, free_port, fresh, listens, process_state, run_fail,
                     wait_for)


def test_a_mercy_of_any_size_is_a_stop_not_a_panic(serve, app_dir):
    """A mercy meant as "never" (the largest number): the stop added it to
    the time now and the worker panicked on the overflow."""
    huge = "9223372036854775807"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--worker-reload-mercy", huge,
              "--reload-mercy", huge, "--harakiri", huge)
    s.wait_workers(1)
    assert fresh(s.url).status_code == 200
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(20) == 0
    assert "panicked" not in s.log() and "master stopped" in s.log(), s.log()


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


def probe_once(conn):
    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    return conn.recv(1000).lower()


@pytest.mark.parametrize("parked", [False, True], ids=["held", "parked"])
def test_a_stop_answers_the_next_request_on_a_keep_alive_connection_and_closes_idle_ones(serve, app_dir, parked):
    """At a stop, a keep-alive connection's next request is answered, with
    Connection: close; an idle one is closed after a moment, long before
    --reload-mercy. The same for connections idle long enough to be parked
    (taken from hyper, which serves them again when they have a request)."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--reload-mercy", "60")
    s.wait_workers(1)
    busy, idle = (socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(2))
    for c in (busy, idle):
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(1000).startswith(b"HTTP/1.1 200 ")
    if parked:
        time.sleep(2.5)  # parked after one to two seconds idle
    s.proc.send_signal(signal.SIGTERM)
    s.wait_log("stopping gracefully")
    # The stop reaches the worker through the master: the busy connection
    # asks until its answer says the worker has it (no fixed wait). Each
    # answer before that keeps the connection open; the first after it is
    # given, and says it closes. (A third connection asked before: the
    # busy one, idle meanwhile, could outlast the stop's grace on a loaded
    # machine.)
    out = wait_for(lambda: (a := probe_once(busy)) and (a if b"connection: close" in a else None),
                   what="the worker to have the stop")
    assert out.startswith(b"http/1.1 200 "), out
    assert idle.recv(1000) == b""  # closed by the worker, not waited on
    assert s.proc.wait(20) == 0
    assert "killing them" not in s.log() and "stopping anyway" not in s.log()
    busy.close()
    idle.close()


def test_a_stop_refuses_new_connections_at_once_while_its_requests_finish(serve, app_dir):
    """Once a worker has its stop, the listening socket is closed in every
    process: a new connection is refused at once (nginx or a balancer tries
    another server), as under uvicorn and Gunicorn, while the request in
    flight finishes. The worker held the master's copy of the socket until
    its last request was done: a connection made meanwhile waited in the
    backlog, then was reset."""
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--threads", "2")
    s.wait_workers(1)

    def refused():
        try:
            socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True
    # A connection the worker has taken (it answered on it), then a slow
    # request on it.
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        assert probe_once(c).startswith(b"http/1.1 200 ")
        c.sendall(b"GET /sleep?8 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.proc.send_signal(signal.SIGTERM)
        s.wait_log("stopping gracefully")
        wait_for(refused, timeout=5, what="new connections refused while the request runs")
        assert c.recv(1000).startswith(b"HTTP/1.1 200 ")  # the request in flight finished
    assert s.proc.wait(20) == 0


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


def test_workers_die_with_a_killed_master(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2")
    workers = s.wait_workers(2)
    s.proc.kill()
    s.proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers):
        assert time.monotonic() < deadline, "workers outlived the master"
        time.sleep(0.05)
    with pytest.raises(requests.RequestException):
        fresh(s.url, timeout=2)


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


# Dropping privileges (--uid, --gid).
def readable_by_nobody(path):
    """Whether user nobody could read path (every directory on the way o+x)."""
    import stat
    parts = os.path.abspath(path).split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i]) or "/"
        if os.path.isdir(d) and not os.stat(d).st_mode & stat.S_IXOTH:
            return False
    return True


NOBODY_CAN_RUN_PYTHON = readable_by_nobody(sys.base_prefix)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_uid_drop_with_an_unreadable_interpreter_is_explained(tmp_path):
    if NOBODY_CAN_RUN_PYTHON:
        pytest.skip("the interpreter is readable by nobody here")
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--uid", "nobody", "--wsgi-file",
                        str(APPS / "procs.py")], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    import pwd
    # the switch to nobody happened (before Python started, or before the
    # running interpreter imported more), and it says why Python cannot run
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
@pytest.mark.parametrize("initgroups", [True, False])
def test_uid_with_gid_takes_the_users_groups_as_uwsgi_does(serve, initgroups):
    """--uid with --gid: the user's supplementary groups are set with
    initgroups(3), --gid's group among them, as uWSGI sets them (they were
    dropped: a user that reaches a key or a socket through a group lost
    it). --no-initgroups keeps none. (root as the user: Python here may not
    be readable by another.)"""
    import grp
    s = serve("--wsgi-file", str(APPS / "procs.py"), "--processes", "1", "--uid", "root", "--gid", "nogroup",
              *([] if initgroups else ["--no-initgroups"]))
    (worker,) = s.wait_workers(1)
    status = open(f"/proc/{worker}/status").read()
    gid = next(l for l in status.splitlines() if l.startswith("Gid:")).split()[1]
    groups = [int(g) for g in next(l for l in status.splitlines() if l.startswith("Groups:")).split()[1:]]
    nogroup = grp.getgrnam("nogroup").gr_gid
    assert int(gid) == nogroup
    expected = sorted({nogroup, *(g.gr_gid for g in grp.getgrall() if "root" in g.gr_mem)}) if initgroups else []
    assert sorted(groups) == expected
    assert fresh(s.url).status_code == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_a_unix_socket_belongs_to_the_uid_and_gid_dropped_to(serve, tmp_path):
    """uWSGI's usual set-up (uid and gid www-data, chmod-socket 660, nginx as
    www-data): the socket is theirs, as uWSGI's is; it stayed root's, and
    nginx was refused. (--chown-socket, given, still decides.)"""
    import grp
    import pwd
    sock = tmp_path / "app.sock"
    user = ["--uid", "nobody"] if NOBODY_CAN_RUN_PYTHON else []
    serve("--wsgi-file", str(APPS / "procs.py"), "--processes", "1", "--socket", str(sock),
          "--chmod-socket", "660", "--gid", "nogroup", *user)
    st = os.stat(sock)
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert st.st_uid == (pwd.getpwnam("nobody").pw_uid if user else 0)
    assert st.st_mode & 0o777 == 0o660


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


SYSTEM_PYTHON = "/usr/bin/python3.11"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON}")
@pytest.mark.skipif(INSTALLED and not NOBODY_CAN_RUN_PYTHON,
                    reason=f"the oxgate pip installed runs on {sys.base_prefix}, which nobody cannot read")
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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON}")
@pytest.mark.skipif(INSTALLED, reason="the pip-installed oxgate runs on the test venv's Python")
def test_a_reload_after_a_uid_drop_keeps_the_log_and_pidfile_without_a_warning(tmp_path):
    """--logto and --pidfile, opened as root, then --uid nobody: a reload's
    new image, which may not open them again, keeps the log it has and the
    pidfile that names it already (it warned of both at every reload)."""
    import tempfile
    base = tempfile.mkdtemp(prefix="oxgate-uid-")
    os.chmod(base, 0o755)
    try:
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", f"{base}/venv"], check=True, timeout=120)
        shutil.copy(APPS / "procs.py", f"{base}/procs.py")
        os.chmod(f"{base}/procs.py", 0o644)
        log, pidfile, port = f"{base}/app.log", f"{base}/app.pid", free_port()
        proc = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--home", f"{base}/venv", "--wsgi-file",
                                 f"{base}/procs.py", "--processes", "1", "--uid", "nobody", "--gid", "nogroup",
                                 "--logto", log, "--pidfile", pidfile], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: listens(port), what="oxgate listening")
            os.kill(proc.pid, signal.SIGHUP)
            wait_for(lambda: "reload done" in open(log).read(), what="the reload", show=lambda: open(log).read())
            assert fresh(f"http://127.0.0.1:{port}/").status_code == 200
            assert "after the reload" not in open(log).read(), open(log).read()
            assert open(pidfile).read().strip() == str(proc.pid)
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_limit_as(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--limit-as", "4096")
    (w,) = s.wait_workers(1)

    def limit():
        limits = open(f"/proc/{w}/limits").read()
        line = next(l for l in limits.splitlines() if l.startswith("Max address space"))
        return None if "unlimited" in line else int(line.split()[3])
    # The worker sets the limit just after the fork: the app's 4096 MiB,
    # and the address space oxgate reserves for itself (its allocator's
    # 64 MiB arena, the scoreboard, the sendfile range) on top.
    wait_for(lambda: limit() is not None, what="RLIMIT_AS in the worker")
    assert (4096 + 64) * 2**20 < limit() < (4096 + 80) * 2**20, limit()


def test_a_flask_app_runs_under_the_seeds_limit_as_128(serve):
    """shared/seeds/003 runs its workers with --limit-as 128 (RLIMIT_AS, in
    MB). oxgate's allocator reserves 64 MiB at a time (sys/heap.rs), not
    its default 1 GiB, which left no room at all; the limit is the app's,
    with oxgate's own reservations on top."""
    s = serve("--wsgi-file", str(APPS / "flask_app.py"), "--callable", "app", "--home", str(VENV),
              "-M", "-p", "2", "--limit-as", "128")
    for _ in range(4):
        r = fresh(s.url)
        assert (r.status_code, r.text) == (200, "Hello from Flask")


def test_a_stock_django_project_runs_under_the_seeds_limit_as_128(serve, tmp_path):
    """The seed's `--limit-as 128` with a Django project as startproject
    makes it: its admin login page rendered under uWSGI, and here got a 500
    (CPython out of memory: the worker's own reservations took the room),
    and over HTTP every request an empty reply (the sendfile range, mapped
    at the first response, failed under the limit and panicked)."""
    subprocess.run([str(VENV / "bin" / "django-admin"), "startproject", "demo", str(tmp_path)],
                   check=True, timeout=60)
    s = serve("--home", str(VENV), "--chdir", str(tmp_path), "-w", "demo.wsgi",
              "-M", "-p", "1", "--limit-as", "128")
    for _ in range(3):
        r = fresh(s.url + "/admin/login/")
        assert r.status_code == 200 and "csrfmiddlewaretoken" in r.text, (r.status_code, s.log()[-2000:])
    assert "panicked" not in s.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3.11"), reason="no /usr/bin/python3.11")
@pytest.mark.skipif(INSTALLED and not NOBODY_CAN_RUN_PYTHON,
                    reason=f"the oxgate pip installed runs on {sys.base_prefix}, which nobody cannot read")
def test_daemonize2_with_uid_writes_the_daemons_pid_to_a_root_owned_pidfile(tmp_path):
    """The pidfile is written as root, then again once --daemonize2 has
    forked, by then as nobody: through the descriptor opened as root."""
    import tempfile
    base = tempfile.mkdtemp(prefix="oxgate-pid-")
    os.chmod(base, 0o755)  # root's; nobody may not create files in it
    pidfile, log = f"{base}/oxgate.pid", f"{base}/d.log"
    port = free_port()
    try:
        subprocess.run(["/usr/bin/python3.11", "-m", "venv", "--without-pip", f"{base}/venv"], check=True, timeout=120)
        import pwd
        open(log, "w").close()
        os.chown(log, pwd.getpwnam("nobody").pw_uid, -1)  # the log is nobody's to write
        p = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{port}", "--daemonize2", log, "--pidfile", pidfile,
                            "--uid", "nobody", "--gid", "nogroup", "--processes", "1", "--home", f"{base}/venv",
                            "--wsgi-file", str(APPS / "procs.py")], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: listens(port), what="the daemon serving")
        pid = int(open(pidfile).read())
        assert alive(pid) and pid != os.getpid()
        assert "cannot write pidfile" not in open(log).read()
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), what="the daemon to stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_daemonize2_reports_load_errors_on_the_terminal(tmp_path):
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--daemonize2", str(tmp_path / "d.log"),
                        "--wsgi-file", str(APPS / "broken_import.py")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "this_module_does_not_exist" in p.stderr


@pytest.mark.parametrize("mode", [["--master", "--processes", "1"], []], ids=["master", "no-master"])
def test_when_daemonize2_returns_both_pidfiles_name_the_daemon(tmp_path, mode):
    """The command returns once the daemon has rewritten its pidfiles: an
    init script (or systemd's Type=forking) reads them right then. They
    named the parent that had just exited (--pidfile2 always, --pidfile in
    a race, and both without a master)."""
    pidfile, pidfile2, port = tmp_path / "a.pid", tmp_path / "b.pid", free_port()
    p = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(APPS / "procs.py"), *mode,
                        "--daemonize2", str(tmp_path / "d.log"), "--pidfile", str(pidfile),
                        "--pidfile2", str(pidfile2)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    pids = {int(pidfile.read_text()), int(pidfile2.read_text())}
    try:
        assert len(pids) == 1 and all(alive(pid) for pid in pids), pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    wait_for(lambda: not any(alive(pid) for pid in pids), what="the daemon to stop")


def test_a_daemon_that_cannot_start_is_not_reported_started(tmp_path):
    """--daemonize's command waits for the daemon to bind: one that cannot
    (the port is taken) makes it exit 1 and name the log, not exit 0 while
    the error goes to a file nobody is reading."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "d.log"
        p = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(APPS / "procs.py"),
                            "--daemonize", str(log)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and str(log) in p.stderr, (p.returncode, p.stderr)
    assert "Address already in use" in log.read_text() or "address in use" in log.read_text().lower()


def stopped_as_systemd_is_told(proc, notify):
    """SIGTERM: STOPPING=1 on the notify socket, then a clean exit."""
    proc.terminate()
    next_notice(notify, "STOPPING=1")
    assert proc.wait(20) == 0


def next_notice(notify, what):
    """The next message on the notify socket that says `what` (a STATUS=
    may come between)."""
    while True:
        msg = notify.recv(4096).decode()
        if what in msg:
            return msg


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_running_as_root_with_no_uid_is_said_after_the_banner(serve, tmp_path):
    """The app, and any PHP or CGI script a request names, run as root
    then: uWSGI says so at every start, php-fpm refuses to start. The
    banner stays the first line."""
    s = serve("--static-map", f"/={tmp_path}")
    lines = s.log().splitlines()
    assert "serving" in lines[0] and "running as root with no --uid" in lines[1], lines[:3]
    s = serve("--static-map", f"/={tmp_path}", "--uid", "nobody", "--gid", "nogroup")
    assert "running as root" not in s.log()


def test_systemd_status_and_watchdog(tmp_path):
    """Under Type=notify the master sends its figures as STATUS= (what
    `systemctl status` shows, as php-fpm's), and with WatchdogSec= set
    (WATCHDOG_USEC) a WATCHDOG=1 with each, every half of its time."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    port = free_port()
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", ECHO, "--processes", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        next_notice(notify, "READY=1")
        for _ in range(3):
            assert fresh(f"http://127.0.0.1:{port}/").status_code == 200
        started = time.monotonic()
        while True:
            msg = next_notice(notify, "STATUS=")
            assert msg.endswith("\nWATCHDOG=1"), msg
            if "requests: 3;" in msg:
                break
            assert time.monotonic() - started < 30, f"no count of the 3 requests: {msg}"
        assert msg.startswith("STATUS=Workers: 2 (busy 0, idle 2); requests: 3; traffic: "), msg
        # And on: each within the notify socket's 20 s timeout.
        next_notice(notify, "WATCHDOG=1")
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def under_systemd_with_an_app_that(tmp_path, flag, then, **env):
    """oxgate run as a Type=notify unit (with `env`), one worker, serving
    an app that runs `then` at import while the file `flag` exists beside
    it; the notify socket it writes to, and the process."""
    (tmp_path / "app.py").write_text(
        "import os, time\n"
        f"if os.path.exists(os.path.join(os.path.dirname(__file__), {flag!r})):\n"
        f"    {then}\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'ok']\n")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    proc = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", str(tmp_path / "app.py"),
                             "--processes", "1"], env=dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return notify, proc


def test_the_watchdog_is_fed_while_a_reload_loads_the_app(tmp_path):
    """systemd keeps WatchdogSec= armed through a reload, and only
    WATCHDOG=1 resets it: the re-executed master feeds it while the new
    code imports (3 s here, with a 2 s watchdog). Nothing did, and systemd
    killed a service whose old workers served on."""
    notify, proc = under_systemd_with_an_app_that(tmp_path, "slow", "time.sleep(3)", WATCHDOG_USEC="2000000")
    try:
        next_notice(notify, "READY=1")
        (tmp_path / "slow").touch()
        proc.send_signal(signal.SIGHUP)
        next_notice(notify, "RELOADING=1")
        fed = 0
        while "READY=1" not in (msg := notify.recv(4096).decode()):
            fed += msg.count("WATCHDOG=1")
        assert fed >= 3, fed
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_systemctl_status_says_the_last_reload_failed(tmp_path):
    """A reload whose new code fails to import leaves the old workers
    serving the old code: STATUS= says so until a reload succeeds, as the
    log line that said it scrolls away."""
    notify, proc = under_systemd_with_an_app_that(tmp_path, "broken", "raise ImportError('a typo in the new code')")
    try:
        first = next_notice(notify, "STATUS=")
        assert "reload failed" not in first, first
        (tmp_path / "broken").touch()
        proc.send_signal(signal.SIGHUP)
        next_notice(notify, "RELOADING=1")
        failed = next_notice(notify, "STATUS=")
        assert "the last reload failed" in failed, failed
        (tmp_path / "broken").unlink()
        proc.send_signal(signal.SIGHUP)
        next_notice(notify, "RELOADING=1")
        mended = next_notice(notify, "STATUS=")
        assert "reload failed" not in mended, mended
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_without_the_master_a_watchdog_is_warned_of(tmp_path):
    """--no-master has no loop to feed WatchdogSec=: said at start, rather
    than the service being killed once its time is up."""
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", ECHO, "--no-master"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "watchdog (WatchdogSec=) is fed by the master alone" in line, line
    finally:
        proc.kill()
        proc.wait(10)


def test_systemd_notify_and_socket_activation(tmp_path, app_dir):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        ["bash", "-c", f'exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', BIN,
         "--wsgi-file", str(app_dir / "procs.py"), "--processes", "1"],
        pass_fds=[fd], env=env, stderr=subprocess.PIPE)
    try:
        listener.close()  # only the server holds it now
        try:
            msg = next_notice(notify, "READY=1")
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"no READY=1 on {tmp_path / 'notify'}: {proc.communicate()[1].decode()}")
        assert f"MAINPID={proc.pid}" in msg
        assert fresh(f"http://127.0.0.1:{port}/").status_code == 200
        stopped_as_systemd_is_told(proc, notify)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_without_a_master_systemd_is_told_and_master_signals_are_ignored(tmp_path, app_dir):
    """--no-master under a `Type=notify` unit: READY=1 once serving (none
    was sent, and systemd killed the unit at its start timeout), STOPPING=1
    at the stop; SIGUSR2, SIGTTIN and SIGTTOU, which ask a master for a
    chain reload or a worker more or less, are ignored, SIGUSR2 logged
    (SIGUSR2 killed the process, SIGTTIN stopped it)."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    port = free_port()
    log = tmp_path / "log"
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    env.pop("VIRTUAL_ENV", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", str(app_dir / "procs.py"),
                                 "--no-master"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        next_notice(notify, "READY=1")
        os.kill(proc.pid, signal.SIGUSR2)
        wait_for(lambda: "SIGUSR2 ignored" in log.read_text(), what="SIGUSR2 ignored")
        # Ignored by disposition, not caught (a caught SIGTTIN would loop
        # on a background read from the terminal).
        status = open(f"/proc/{proc.pid}/status").read()
        ignored = int(next(l for l in status.splitlines() if l.startswith("SigIgn:")).split()[1], 16)
        for sig in (signal.SIGTTIN, signal.SIGTTOU):
            assert ignored & (1 << (sig - 1)), sig
            os.kill(proc.pid, sig)
        assert fresh(f"http://127.0.0.1:{port}/").status_code == 200
        assert "--processes" not in log.read_text()  # none was given: no warning of the CPU count
        stopped_as_systemd_is_told(proc, notify)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("configured", ["none", "another"])
def test_sockets_systemd_passed_are_served_across_reloads(tmp_path, app_dir, configured):
    """A reload keeps serving the sockets systemd passed: when the
    configuration names no socket (the reload was refused: its check saw
    no socket, LISTEN_FDS being gone), and when it names only another
    (the passed one was closed, and systemd, which holds it, queued
    connections no one answered). A reload whose app fails to load says
    READY=1 after its RELOADING=1: the old workers serve on."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)

    def said(what):
        while True:
            try:
                msg = notify.recv(4096).decode()
            except TimeoutError:
                raise AssertionError(f"no {what}: {(tmp_path / 'log').read_text()}")
            if what in msg:
                return msg

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port, fd = listener.getsockname()[1], listener.fileno()
    pidfile = tmp_path / "m.pid"
    extra = ["--uwsgi-socket", str(tmp_path / "u.sock")] if configured == "another" else []
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"))
    env.pop("VIRTUAL_ENV", None)
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", f'exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', BIN,
             "--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--pidfile", str(pidfile), *extra],
            pass_fds=[fd], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        said("READY=1")
        assert fresh(f"http://127.0.0.1:{port}/").status_code == 200
        os.kill(proc.pid, signal.SIGHUP)
        # With the monotonic clock's µs, which Type=notify-reload needs.
        reloading = said("RELOADING=1")
        stamp = int(reloading.split("MONOTONIC_USEC=")[1].split()[0])
        assert abs(stamp - time.monotonic_ns() // 1000) < 60_000_000, reloading
        said("READY=1")
        assert "reload refused" not in (tmp_path / "log").read_text()
        assert fresh(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        (app_dir / "procs.py").write_text("raise RuntimeError('a broken deploy')\n")
        os.kill(proc.pid, signal.SIGHUP)
        said("RELOADING=1")
        said("READY=1")
        assert fresh(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        proc.terminate()
        assert proc.wait(20) == 0
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()


def activated(listener, command, log):
    """`command` started as systemd starts a socket-activated service: the
    listening socket on fd 3, LISTEN_PID and LISTEN_FDS set."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    fd = listener.fileno()
    return subprocess.Popen(["bash", "-c", f'exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', *command],
                            pass_fds=[fd], env=env, stdout=log, stderr=subprocess.STDOUT)


def test_gunicorn_under_socket_activation_serves_systemds_socket_alone_and_leaves_its_file(tmp_path):
    """Gunicorn's systemd deployment (no bind in the unit): the service
    serves the socket systemd holds, binds no 127.0.0.1:8000 of its own
    (where another such service made it fail to start), and its stop
    leaves the socket file to systemd, for the next start (vacuum, on by
    default for Gunicorn's command line, removed it: every later start
    served a socket no client could reach)."""
    path = tmp_path / "app.sock"
    held = socket.socket(socket.AF_UNIX)
    held.bind(str(path))
    held.listen(16)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        squatter.bind(("127.0.0.1", 8000))
        squatter.listen(1)
    except OSError:
        pass  # taken already: as good
    curl = ["curl", "-sS", "--max-time", "10", "--unix-socket", str(path), "http://x/"]
    try:
        for start in range(2):
            with open(tmp_path / f"log{start}", "wb") as log:
                proc = activated(held, [BIN, "gunicorn", "--chdir", str(APPS), "procs:application"], log)
            try:
                wait_for(lambda: "serving" in (tmp_path / f"log{start}").read_text() or proc.poll() is not None,
                         what="the start")
                assert proc.poll() is None, (tmp_path / f"log{start}").read_text()
                assert subprocess.run(curl, capture_output=True, timeout=15).returncode == 0
                if start == 0:  # and after a reload, which runs a new image
                    os.kill(proc.pid, signal.SIGHUP)
                    wait_for(lambda: (tmp_path / "log0").read_text().count("serving") >= 2, what="the reload")
                    assert subprocess.run(curl, capture_output=True, timeout=15).returncode == 0
                assert "8000" not in (tmp_path / f"log{start}").read_text()
            finally:
                proc.terminate()
                proc.wait(20)
            assert path.exists(), f"start {start} took systemd's socket file away"
    finally:
        held.close()
        squatter.close()


def test_a_socket_systemd_passes_unnamed_speaks_the_protocol_given(tmp_path):
    """A uWSGI config for socket activation often names no socket, and
    says `protocol = uwsgi`: the passed socket speaks it (it spoke HTTP
    whatever --protocol said)."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    port = held.getsockname()[1]
    with open(tmp_path / "log", "wb") as log:
        proc = activated(held, [BIN, "--wsgi-file", str(APPS / "procs.py"), "--processes", "1",
                                "--protocol", "uwsgi"], log)
    try:
        held.close()
        wait_for(lambda: "serving" in (tmp_path / "log").read_text(), what="the start")
        from helpers import packet, uwsgi_request
        got = uwsgi_request(port, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"),
                                          ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "x"),
                                          ("SERVER_PORT", "80")]))
        assert got.startswith(b"HTTP/1.1 200"), got
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_reload_sent_as_the_pidfile_appears_is_not_fatal(tmp_path):
    """The pidfile is written only once the master's signals are blocked:
    a SIGHUP sent the moment it appears waits for the handlers and reloads,
    instead of killing the master (SIGHUP's default action)."""
    for i in range(20):
        pidfile, port = tmp_path / f"m{i}.pid", free_port()
        log = open(tmp_path / f"m{i}.log", "wb")
        p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", ECHO,
                              "--processes", "1", "--pidfile", str(pidfile)],
                             stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while not (pidfile.exists() and pidfile.read_text().strip().isdigit()):
                assert time.monotonic() < deadline and p.poll() is None, (tmp_path / f"m{i}.log").read_text()
                time.sleep(0.0005)
            os.kill(int(pidfile.read_text()), signal.SIGHUP)
            wait_for(lambda: _answers(port), what=f"try {i}: a server after the early SIGHUP")
            assert p.poll() is None, (tmp_path / f"m{i}.log").read_text()
        finally:
            p.terminate()
            assert p.wait(20) == 0, (tmp_path / f"m{i}.log").read_text()


def _answers(port):
    try:
        return fresh(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_stop_right_after_a_request_never_waits_out_the_mercy(tmp_path):
    """A worker sees a stop however early it arrives, even before its event
    loop runs: 50 tries of start, one request, SIGTERM, while a CPU hog
    keeps both cores busy. A lost stop would show as the master killing
    its workers after --reload-mercy."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for i in range(50):
            port = free_port()
            log_path = tmp_path / f"s{i}.log"
            with open(log_path, "wb") as log:
                p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", ECHO,
                                      "--processes", "2", "--reload-mercy", "8"],
                                     stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: _answers(port), what=f"try {i}: the first answer")
            finally:
                p.send_signal(signal.SIGTERM)
                assert p.wait(30) == 0, log_path.read_text()
            text = log_path.read_text()
            assert "killing them" not in text and "stopping anyway" not in text, text
    finally:
        for h in hogs:
            h.kill()
            h.wait()


@pytest.mark.parametrize("lazy", [False, True], ids=["preload", "lazy-apps"])
def test_what_the_app_starts_does_not_inherit_blocked_signals(serve, tmp_path, lazy):
    """The master's signals are blocked only until handlers are in place;
    a process the app starts while it loads gets a clean signal mask, so
    terminate() still works on it."""
    out = tmp_path / "child.pid"
    app = tmp_path / "spawner.py"
    app.write_text(
        "import subprocess\n"
        f"p = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(out)!r}, 'w').write(str(p.pid))\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    s = serve("--wsgi-file", str(app), "--processes", "1", *(["--lazy-apps"] if lazy else []))
    pid = int(wait_for(lambda: out.exists() and out.read_text().strip(), what="the app's child"))
    try:
        blocked = [line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("SigBlk:")]
        assert blocked == ["0000000000000000"], blocked
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_pidfile_that_is_a_symlink_is_refused(tmp_path):
    """A symlink planted where the pidfile goes is not followed: a root
    master would otherwise overwrite whatever it points at."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "app.pid"
    link.symlink_to(target)
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", str(APPS / "validated.py"),
                         "--pidfile", str(link))
    assert code != 0
    assert "is a symlink" in err
    assert target.read_text() == "keep me\n"


def policies(pid):
    """The scheduling policy of each thread of process `pid`, by thread name
    (field 41 of /proc/PID/task/TID/stat: 0 is SCHED_OTHER, 3 SCHED_BATCH)."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        found.setdefault(name, set()).add(int(stat.rsplit(")", 1)[1].split()[38]))
    return found


@pytest.mark.skipif(os.sched_getscheduler(0) != os.SCHED_OTHER,
                    reason="the tests run under another scheduling policy, which oxgate keeps")
@pytest.mark.parametrize("batch", [True, False])
def test_workers_threads_run_under_sched_batch(serve, batch):
    # The worker's event loop and the ASGI app's loop hand requests to each
    # other; under SCHED_BATCH neither preempts the other on each wake-up.
    args = [] if batch else ["--sched-batch=false"]
    s = serve("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app",
              "--processes", "1", *args)
    assert requests.get(s.url + "/").status_code == 200
    (w,) = s.wait_workers(1)
    worker = policies(w)
    assert {"oxgate", "oxgate-asgi"} <= worker.keys(), worker
    expected = 3 if batch else 0
    # Every thread of the worker: the output reader starts after the switch.
    assert set().union(*worker.values()) == {expected}, worker
    # The master keeps the default policy: it must answer signals at once.
    assert policies(s.proc.pid)["oxgate"] == {0}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_the_app_is_still_importing_is_heard(tmp_path, sig):
    """An import that hangs (a database connect without a timeout): TERM
    or Ctrl-C stops the master at once, as Gunicorn --preload stops."""
    (tmp_path / "stuck.py").write_text(
        "import time, pathlib\npathlib.Path('importing').write_text('')\ntime.sleep(60)\n"
        "def application(e, s):\n    s('200 OK', [])\n    return [b'']\n")
    # With --vacuum, its socket file and pidfile go too (they were left).
    p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", "stuck.py",
                          "--processes", "1", "--socket", "app.sock", "--pidfile", "app.pid", "--vacuum"],
                         cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for((tmp_path / "importing").exists, what="the import to begin")
        assert (tmp_path / "app.sock").exists() and (tmp_path / "app.pid").exists()
        p.send_signal(sig)
        # Dead of the signal (SIGTERM for SIGQUIT, whose death dumps a
        # core), which systemd counts as a clean stop; an exit of 1 failed
        # the unit.
        assert p.wait(10) == -(signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM)
        assert "while the app was still loading: stopped" in p.stderr.read()
        assert not (tmp_path / "app.sock").exists() and not (tmp_path / "app.pid").exists()
    finally:
        p.kill()
        p.wait()


def test_a_start_that_fails_at_pidfile2_vacuums_what_it_made(tmp_path):
    """--pidfile2 that cannot be written ends the start after the sockets
    and --pidfile were made: --vacuum removes them (they were left)."""
    (tmp_path / "app.py").write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'']\n")
    p = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", "app.py",
                        "--socket", "app.sock", "--pidfile", "app.pid", "--pidfile2", "no/such/dir/app2.pid",
                        "--vacuum"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "app2.pid" in p.stderr, p.stderr
    assert not (tmp_path / "app.sock").exists() and not (tmp_path / "app.pid").exists()


def test_a_stop_while_a_reload_checks_the_configuration_is_not_lost(tmp_path):
    """A stop that comes while a reload runs --check-config (a slow
    @(exec://...) in the file here) stops the master: it used to be taken in
    by the handler and lost at the exec, and the new image served on."""
    (tmp_path / "app.py").write_text(
        "def application(e, s):\n    s('200 OK', [('Content-Length', '2')])\n    return [b'ok']\n")
    port = free_port()
    (tmp_path / "app.ini").write_text(
        f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = app.py\nprocesses = 1\n"
        "env = CHECKED=@(exec://sh -c 'if [ -e slow ]; then touch checking; sleep 3; fi; echo 1')\n")
    p = subprocess.Popen([BIN, "app.ini"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: listens(port), what="the server")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).text == "ok"
        (tmp_path / "slow").write_text("")
        p.send_signal(signal.SIGHUP)
        wait_for((tmp_path / "checking").exists, what="the reload's check")
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        err = p.stderr.read()
        assert "graceful reload abandoned: a stop came meanwhile" in err
        assert "master stopped" in err
    finally:
        p.kill()
        p.wait()


def test_a_stop_during_a_reloads_import_lets_the_old_workers_finish(tmp_path):
    """After a reload the old workers serve while the new image imports
    the app: a stop then is theirs to finish gracefully (the request in
    flight is answered), not an end at once."""
    (tmp_path / "slowload.py").write_text(
        "import os, time, pathlib\n"
        "if os.path.exists('slow'):\n    pathlib.Path('importing').write_text('')\n    time.sleep(6)\n"
        "def application(e, s):\n    pathlib.Path('serving').write_text('')\n"
        "    time.sleep(float(e.get('QUERY_STRING') or 0))\n"
        "    s('200 OK', [('Content-Length', '4')])\n    return [b'done']\n")
    port = free_port()
    p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", "slowload.py", "--processes", "1"],
                         cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listens(port), what="the server")
        # The socket listens before the first import: the app is known to
        # be loaded (and 'slow' to be for the new image only) once it answers.
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).text == "done"
        (tmp_path / "serving").unlink()
        (tmp_path / "slow").write_text("")
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            inflight = ex.submit(requests.get, f"http://127.0.0.1:{port}/?3", timeout=30)
            # In the old worker's hands (on a busy machine, a request still
            # in the backlog when the stop comes is not this test's case).
            wait_for((tmp_path / "serving").exists, what="the request to be served")
            p.send_signal(signal.SIGHUP)
            wait_for((tmp_path / "importing").exists, what="the new image's import")
            p.send_signal(signal.SIGTERM)
            r = inflight.result()
        assert (r.status_code, r.text) == (200, "done")
        p.wait(30)
    finally:
        p.kill()
        p.wait()


def test_sigtstp_does_not_freeze_the_master(serve):
    """A stray `kill -TSTP` (or ^Z) froze the master: its workers served
    on unsupervised and a stop stayed pending for ever. It is ignored, and
    the stop that follows stops."""
    s = serve("--wsgi-file", str(APPS / "procs.py"), "--processes", "1")
    s.wait_workers(1)
    os.kill(s.proc.pid, signal.SIGTSTP)
    time.sleep(0.3)
    assert process_state(s.proc.pid) != "T"
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=30) == 0


def test_no_master_says_which_options_it_cannot_keep(serve):
    """--no-master serves in one process, with no one to watch it: the
    options that need the master are named at start (they were silently
    without effect; --harakiri let a request run on)."""
    s = serve("--wsgi-file", str(APPS / "procs.py"), "--no-master", "--processes", "3", "--harakiri", "2",
              "--max-requests", "100", "--touch-reload", "/tmp/x", "--attach-daemon", "sleep 1000",
              "--py-autoreload", "1")
    s.wait_log("need the master")
    line = next(line for line in s.log().splitlines() if "need the master" in line)
    # (uWSGI starts a master for the last three; here they did nothing,
    # unsaid.)
    assert ("--harakiri, --max-requests, --touch-reload (or --touch-workers-reload), --attach-daemon, --py-autoreload "
            "need the master") in line, line
    # And the workers asked for (uWSGI's `master = false`, `processes = 3`),
    # which one process stands in for: it was not said.
    assert "--processes 3 needs the master" in s.log(), s.log()
    assert requests.get(s.url, timeout=10).ok


def cmdline(pid):
    return open(f"/proc/{pid}/cmdline", "rb").read()


TITLE_APP = """import os
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ["OXGATE_TITLE_TEST"].encode()]
"""


def test_auto_procname_titles_the_processes_and_keeps_the_environment(serve, tmp_path):
    """uWSGI's --auto-procname: ps shows `oxgate master` and `oxgate worker
    N`, with the prefix and suffix given. A title longer than the command
    line takes the environment's room too, and the environment (moved out
    of the way) stays whole, in the app and across a reload, which runs the
    command line as it was, not the title."""
    (tmp_path / "titles.py").write_text(TITLE_APP)
    prefix = "p" * 300
    mark = "m" * 500
    ini = tmp_path / "t.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = titles.py\nprocesses = 2\nauto-procname = true\n"
                   f"procname-prefix-spaced = {prefix}\nprocname-append = !\n")
    s = serve("--ini", str(ini), "--chdir", str(tmp_path), env={"OXGATE_TITLE_TEST": mark})
    assert len(" ".join(s.args)) < len(prefix), "the title must not fit in the arguments alone"

    def titles():
        return [cmdline(s.proc.pid)] + [cmdline(w) for w in s.wait_workers(2)]

    want = [f"{prefix} oxgate {who}!\0".encode() for who in ("master", "worker 1", "worker 2")]
    # (A worker has its master's title until it sets its own.)
    wait_for(lambda: titles() == want, what=f"the titles {want}")
    assert fresh(s.url).text == mark
    before = s.log().count("reload done")
    os.kill(s.proc.pid, signal.SIGHUP)
    wait_for(lambda: s.log().count("reload done") > before, timeout=30, what="reload done")
    wait_for(lambda: titles() == want, what="the titles again")
    assert fresh(s.url).text == mark


def test_procname_titles_every_process_and_procname_master_the_master(serve, tmp_path):
    (tmp_path / "titles.py").write_text(TITLE_APP)
    s = serve("--wsgi-file", str(tmp_path / "titles.py"), "--processes", "1", "--procname", "shop",
              "--procname-master", "shop-master", "--procname-prefix", "x-", env={"OXGATE_TITLE_TEST": "ok"})
    assert cmdline(s.proc.pid) == b"x-shop-master\0"
    wait_for(lambda: [cmdline(w) for w in s.wait_workers(1)] == [b"x-shop\0"], what="the worker's title")
    assert fresh(s.url).text == "ok"


def test_a_prefix_or_the_masters_title_alone_titles_every_process_as_in_uwsgi(serve, tmp_path):
    """uWSGI's procname-prefix-spaced (a common line) or procname-master,
    without auto-procname: every process is titled, as uWSGI titles them (no
    title was set; with procname-master, the workers had the master's)."""
    (tmp_path / "titles.py").write_text(TITLE_APP)
    for options, want in ((["--procname-prefix-spaced", "shop"], [b"shop oxgate master", b"shop oxgate worker 1"]),
                          (["--procname-master", "boss"], [b"boss", b"oxgate worker 1"])):
        s = serve("--wsgi-file", str(tmp_path / "titles.py"), "--processes", "1", *options,
                  env={"OXGATE_TITLE_TEST": "ok"})
        want = [w + b"\0" for w in want]
        wait_for(lambda: [cmdline(s.proc.pid)] + [cmdline(w) for w in s.wait_workers(1)] == want, what=f"{want}")
        s.stop()


def test_without_a_title_option_the_command_line_is_left_as_it_is(serve, tmp_path):
    (tmp_path / "titles.py").write_text(TITLE_APP)
    s = serve("--wsgi-file", str(tmp_path / "titles.py"), "--processes", "1", env={"OXGATE_TITLE_TEST": "ok"})
    # (The pip-installed command's begins with its Python.)
    args = [a.encode() for a in s.args[1:]]
    assert cmdline(s.proc.pid).split(b"\0")[:-1][-len(args):] == args


def test_an_app_that_handles_the_masters_signals_at_import_does_not_take_them(serve, tmp_path):
    """An app that sets its own SIGTERM, SIGHUP and SIGUSR1 handling at
    import (signal.signal, faulthandler.register) leaves the preloading
    master its own, as Gunicorn's arbiter sets its handlers after the
    preload: SIGHUP still reloads, SIGUSR1 still reopens the log, SIGTERM
    still stops, the workers at once. Said in the log."""
    app = tmp_path / "handlers.py"
    app.write_text(
        "import faulthandler, signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda s, f: print('APP HANDLER', flush=True))\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "faulthandler.register(signal.SIGUSR1)\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", str(app), "--processes", "2", "--logto", str(log), "--worker-reload-mercy", "30")
    wait_for(lambda: log.exists() and "the master's is kept" in log.read_text(), what="the warning")
    text = log.read_text()
    assert "SIGTERM" in text and "SIGHUP" in text and "SIGUSR1" in text, text
    first = s.wait_workers(2)
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not set(s.worker_pids()) & set(first) and len(s.worker_pids()) == 2,
             what=f"the workers replaced by the reload: {log.read_text()}")
    log.rename(tmp_path / "app.log.1")
    s.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: log.exists(), what="the log reopened")
    assert "Current thread" not in (tmp_path / "app.log.1").read_text()  # no faulthandler dump
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(10) == 0
    assert "APP HANDLER" not in log.read_text() + (tmp_path / "app.log.1").read_text()
