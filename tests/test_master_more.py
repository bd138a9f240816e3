"""More of the process model: daemons, autoreload, touch files, limits,
logs, systemd. Each test runs the real binary and real signals."""
import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from conftest import APPS, BIN
from test_master import app_dir, fresh  # noqa: F401  (fixture)


def wait_for(cond, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := cond():
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
    wait_for(lambda: not os.path.exists(f"/proc/{new}") or "Z" in open(f"/proc/{new}/stat").read().split()[2],
             what="daemon stop")


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
    wait_for(lambda: not os.path.exists(f"/proc/{second}") or "Z" in open(f"/proc/{second}/stat").read().split()[2],
             what="smart daemon stop")


def test_py_autoreload(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--py-autoreload", "1")
    s.wait_workers(2)
    assert fresh(s.url).text.endswith("v1")
    time.sleep(1.1)  # a different mtime
    (app_dir / "procs.py").write_text((app_dir / "procs.py").read_text().replace('"v0"', '"v0" # edited'))
    (app_dir / "version.txt").write_text("v-auto")
    s.wait_log("changed, reloading (--py-autoreload)")
    wait_for(lambda: fresh(s.url).text.endswith("v-auto"), what="new code")


@pytest.mark.parametrize("opt,done", [("--touch-reload", "graceful reload done"),
                                      ("--touch-chain-reload", "chain reload done")])
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


def test_brutal_reload(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2")
    old = s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGRTMIN + 2)
    s.wait_log("brutal reload done")
    new = s.wait_workers(2)
    assert not set(old) & set(new)
    assert fresh(s.url).status_code == 200


def test_max_worker_lifetime(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--max-worker-lifetime", "1")
    (first,) = s.wait_workers(1)
    s.wait_log("(--max-worker-lifetime), replacing it")
    wait_for(lambda: first not in s.worker_pids() and len(s.worker_pids()) == 1, what="replacement")
    assert fresh(s.url).status_code == 200


def test_reload_on_rss(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--reload-on-rss", "1")
    s.wait_log("(--reload-on-rss), replacing it")
    assert fresh(s.url).status_code == 200


def test_evil_reload_on_rss(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--evil-reload-on-rss", "1")
    s.wait_log("(--evil-reload-on-rss), killing it")


def test_limit_as(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--limit-as", "4096")
    (w,) = s.wait_workers(1)

    def limited():
        limits = open(f"/proc/{w}/limits").read()
        line = next(l for l in limits.splitlines() if l.startswith("Max address space"))
        return str(4096 * 1024 * 1024) in line
    # The worker sets the limit just after the fork.
    wait_for(limited, what="RLIMIT_AS in the worker")


def test_logto_and_sigusr1_reopen(serve, app_dir, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--logto", str(log))
    wait_for(lambda: log.exists() and "serving" in log.read_text(), what="log file")
    log.rename(tmp_path / "app.log.1")  # logrotate's move
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(log.exists, what="reopened log")
    os.kill(s.proc.pid, signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN" in log.read_text(), what="new lines in the new file")


def test_daemonize2_reports_load_errors_on_the_terminal(tmp_path):
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--daemonize2", str(tmp_path / "d.log"),
                        "--wsgi-file", str(APPS / "broken_import.py")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "this_module_does_not_exist" in p.stderr


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
            msg = notify.recv(4096).decode()
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"no READY=1 on {tmp_path / 'notify'}: {proc.communicate()[1].decode()}")
        assert "READY=1" in msg and f"MAINPID={proc.pid}" in msg
        assert fresh(f"http://127.0.0.1:{port}/").status_code == 200
        proc.terminate()
        assert "STOPPING=1" in notify.recv(4096).decode()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_umask_and_chown_socket(serve, app_dir, tmp_path):
    sock = tmp_path / "s.sock"
    s = serve("--http-socket", str(sock), "--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--umask", "077", "--chown-socket", "nobody:nogroup", socket_arg=False, wait=False)
    wait_for(sock.exists, what="socket")
    st = os.stat(sock)
    import grp
    import pwd
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert st.st_mode & 0o077 == 0
