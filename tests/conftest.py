"""Fixtures every test file can use: the real oxgate binary on a port picked
at run time, and the apps it serves (plain helpers are in helpers.py)."""
import atexit
import os
import signal
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from helpers import APPS, BEHAVIOUR, BIN, ECHO, ROOT, VENV, free_port, listens, wait_for

# Gunicorn 27 binds a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl, else
# ~/.gunicorn/gunicorn.ctl: a directory of this test process's own, so that
# two real Gunicorns at once (pytest -n 2) do not take each other's (it
# logs an error, which tests of Gunicorn's output see).
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="oxgate-test-runtime-")
atexit.register(shutil.rmtree, os.environ["XDG_RUNTIME_DIR"], ignore_errors=True)


def comm(pid):
    """A process's name (its comm), or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class Server:
    def __init__(self, tmp_path, args, env=None, cwd=None, wait=True, program=(BIN,)):
        self.port = free_port()
        self.log_path = tmp_path / f"oxgate-{self.port}.log"
        self.args = list(program) + [a.replace("{port}", str(self.port)) for a in args]
        full_env = dict(os.environ)
        full_env.pop("VIRTUAL_ENV", None)
        full_env.update(env or {})
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env, cwd=cwd or ROOT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=20):
        """Waits until every loopback TCP socket of the command line listens
        (they are bound one after another: the first is not enough)."""
        # (An --https-socket's address comes before its files, after a comma.)
        heads = [a.split(",", 1)[0] for a in self.args]
        ports = [self.port] + [int(a.rsplit(":", 1)[1]) for a in heads
                               if a.startswith("127.0.0.1:") and a.rsplit(":", 1)[1].isdigit()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"oxgate exited with {self.proc.returncode}:\n{self.log()}")
            try:
                for port in ports:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"oxgate did not start listening:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace")

    def rss_kb(self, field="VmRSS", pid=None):
        for line in open(f"/proc/{pid or self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)

    def children(self):
        """The master's children, with their names (comm)."""
        try:
            text = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read()
        except FileNotFoundError:
            return []
        return [(int(p), comm(int(p))) for p in text.split()]

    def worker_pids(self):
        """The master's children (the workers), sorted: not the FastCGI
        pools' manager."""
        return sorted(p for p, name in self.children() if name != "oxgate-pools")

    def pool_manager_pid(self):
        """The FastCGI pools' manager, if it runs."""
        return next((p for p, name in self.children() if name == "oxgate-pools"), None)

    def wait_log(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the log:\n{self.log()}")

    def wait_workers(self, n, timeout=20):
        """Waits until the master has n workers; returns their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == n:
                return pids
            time.sleep(0.05)
        raise AssertionError(f"expected {n} workers, have {self.worker_pids()}:\n{self.log()}")

    def stop(self):
        if self.proc.poll() is None:
            # The real uWSGI reloads on SIGTERM (its default): SIGINT stops it.
            if os.path.basename(self.args[0]) == "uwsgi":
                self.proc.send_signal(signal.SIGINT)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


@pytest.fixture
def serve(tmp_path):
    """serve(*args) starts oxgate with --http-socket on a fresh port
    (`program` runs another command, such as `python -m oxgate`)."""
    started = []

    def start(*args, env=None, cwd=None, socket_arg=True, wait=True, program=(BIN,)):
        full = (["--http-socket", "127.0.0.1:{port}"] if socket_arg else []) + list(args)
        s = Server(tmp_path, full, env=env, cwd=cwd, wait=wait, program=program)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=["1", "4"], ids=["inline", "threads"])
def srv(serve, request):
    """The misbehaving app, apps/behaviour.py, run inline and on 4 threads.
    test_pep3333.py and test_malformed_input.py override srv with their own."""
    return serve("--wsgi-file", BEHAVIOUR, "--threads", request.param)


@pytest.fixture
def app_dir(tmp_path):
    """A copy of procs.py whose code (and version.txt) a test can change."""
    d = tmp_path / "app"
    d.mkdir()
    shutil.copy(APPS / "procs.py", d / "procs.py")
    (d / "version.txt").write_text("v1")
    return d


@pytest.fixture
def fcgi(serve):
    """oxgate with a FastCGI socket (fcgi.fcgi_port) serving the echo app."""
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1")
    s.fcgi_port = fp
    return s


@pytest.fixture
def uvicorn(tmp_path):
    """uvicorn(module, env, args) runs the real uvicorn on the same app."""
    started = []

    def start(module, env=None, args=()):
        port = free_port()
        log = open(tmp_path / f"uvicorn-{port}.log", "wb")
        proc = subprocess.Popen(
            [str(VENV / "bin" / "uvicorn"), module, "--host", "127.0.0.1", "--port", str(port),
             "--app-dir", str(APPS), "--no-access-log", *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=APPS)
        started.append(proc)
        wait_for(lambda: listens(port), what="uvicorn listening")
        return f"http://127.0.0.1:{port}"

    yield start
    for p in started:
        p.terminate()
        p.wait(10)

