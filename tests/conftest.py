"""Starts the real oxgate binary on a port picked at run time."""
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
BIN = os.environ.get("OXGATE_BIN", str(ROOT / "target" / "release" / "oxgate"))
# The test venv (scripts/test.sh makes it); the server runs the apps from it.
VENV = pathlib.Path(sys.prefix)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp_path, args, env=None, cwd=None, wait=True):
        self.port = free_port()
        self.log_path = tmp_path / f"oxgate-{self.port}.log"
        self.args = [BIN] + [a.replace("{port}", str(self.port)) for a in args]
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
        ports = [self.port] + [int(a.rsplit(":", 1)[1]) for a in self.args
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

    def worker_pids(self):
        """The master's children (the workers), sorted."""
        try:
            text = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read()
        except FileNotFoundError:
            return []
        return sorted(int(p) for p in text.split())

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
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


@pytest.fixture
def serve(tmp_path):
    """serve(*args) starts oxgate with --http-socket on a fresh port."""
    started = []

    def start(*args, env=None, cwd=None, socket_arg=True, wait=True):
        full = (["--http-socket", "127.0.0.1:{port}"] if socket_arg else []) + list(args)
        s = Server(tmp_path, full, env=env, cwd=cwd, wait=wait)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def raw_request(port, data, timeout=10, read_all=True):
    """Sends raw bytes; returns everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_all:
                break
        return b"".join(chunks)
