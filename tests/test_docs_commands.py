"""Every oxgate command line in README.md and docs/ is run as written, so
the docs cannot rot: a server command starts and serves, and the control
commands (--reload, top) act on a running server.

What a command names outside the repository is made up in a scratch
directory first: the system paths it names (/etc, /run, /srv, /var,
/usr/lib, /tmp) move there, the apps it names are stubs, a config file it
reads says where to listen, and its fixed ports are free ones."""
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import requests
import urllib3

from helpers import BIN, ROOT, VENV, free_port, screen_of, wait_for

urllib3.disable_warnings()  # the self-signed certificate of tls-http2.md's command
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SYSTEM = ("/etc/", "/run/", "/srv/", "/var/", "/usr/lib/", "/tmp/")


def doc_commands():
    """(page, line, command) for each oxgate command line in a code block,
    with continuation lines joined and the trailing comment dropped."""
    for page in PAGES:
        if page.name == "options.md":  # generated from the option table
            continue
        lines = page.read_text().splitlines()
        in_code, i = False, 0
        while i < len(lines):
            text = lines[i].strip()
            if text.startswith("```"):
                in_code = not in_code
            elif in_code and re.match(r"^(\$ )?(oxgate|python -m oxgate)\b", text):
                start, cmd = i + 1, text.removeprefix("$ ")
                while cmd.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = cmd[:-1] + " " + lines[i].strip()
                yield page.name, start, re.sub(r"\s+#\s.*$", "", cmd).strip()
            i += 1


COMMANDS = list(doc_commands())

WSGI_STUB = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"docs"]
app = application
def create_app():
    return application
"""
ASGI_STUB = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"docs"})
application = app
"""


class Scratch:
    """The scratch directory a command runs in, and its rewriting."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.ports = {}
        (tmp_path / "app.py").write_text(WSGI_STUB)
        (tmp_path / "main.py").write_text(ASGI_STUB)
        (tmp_path / "mysite").mkdir()
        (tmp_path / "mysite" / "__init__.py").write_text("")
        (tmp_path / "mysite" / "wsgi.py").write_text(WSGI_STUB)
        (tmp_path / "mysite" / "asgi.py").write_text(ASGI_STUB)
        # --home .venv: the test venv, where the stubs' imports are.
        (tmp_path / ".venv").symlink_to(VENV)

    def port(self, fixed):
        return self.ports.setdefault(fixed, free_port())

    def path(self, p):
        """A system path, moved into the scratch directory and made: a
        directory, or the directory a file (socket, pidfile) goes in."""
        moved = self.dir / p.lstrip("/")
        if moved.suffix in (".sock", ".pid", ".crt", ".key", ".ini"):
            moved.parent.mkdir(parents=True, exist_ok=True)
        else:
            moved.mkdir(parents=True, exist_ok=True)
        if moved.suffix == ".crt":
            key = moved.with_suffix(".key")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-keyout", str(key), "-out", str(moved), "-days", "2", "-subj", "/CN=localhost"],
                           check=True, capture_output=True)
        return str(moved)

    def rewrite(self, arg):
        arg = re.sub(r"(^|[=,])((?:%s)[^,=\s]*)" % "|".join(map(re.escape, SYSTEM)),
                     lambda m: m.group(1) + self.path(m.group(2)), arg)
        # :8000, 127.0.0.1:9191: fixed ports become free ones, on loopback.
        arg = re.sub(r"(^|[=,]|^[\w.]*)(:)(\d{4})\b", lambda m: f"{m.group(1)}:{self.port(m.group(3))}", arg)
        if re.match(r"^:\d", arg):
            arg = "127.0.0.1" + arg
        if arg.endswith(".ini") and not os.path.isabs(arg):
            arg = str(self.dir / arg)
        if arg.endswith(".ini") and not os.path.exists(arg):
            pathlib.Path(arg).write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{self.port('ini')}\n"
                                         f"wsgi-file = {self.dir / 'app.py'}\nmaster = true\nprocesses = 1\n"
                                         f"pidfile = {self.dir / 'ini.pid'}\n")
        return arg

    def args(self, cmd):
        words = shlex.split(cmd)
        program = [sys.executable, "-m", "oxgate"] if words[:3] == ["python", "-m", "oxgate"] else [BIN]
        words = words[3:] if words[0] == "python" else words[1:]
        return program, [self.rewrite(w) for w in words]

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "GUNICORN_", "UVICORN_"))}
        env.pop("VIRTUAL_ENV", None)
        env["PYTHONPATH"] = str(self.dir)
        return env


def start(scratch, program, args):
    log = scratch.dir / "server.log"
    out = open(log, "wb")
    proc = subprocess.Popen([*program, *args], stdout=out, stderr=subprocess.STDOUT, cwd=scratch.dir,
                            env=scratch.env())
    proc.log = log
    try:
        wait_for(lambda: proc.poll() is not None or "serving" in log.read_text(), what="the start line")
        assert proc.poll() is None, log.read_text()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the server did not stop:\n{proc.log.read_text()}")
    assert code == 0, proc.log.read_text()


def test_the_docs_have_commands():
    assert len(COMMANDS) >= 25, COMMANDS


@pytest.mark.parametrize("page,line,cmd", COMMANDS, ids=[f"{p}:{n}" for p, n, _ in COMMANDS])
def test_doc_command_runs(tmp_path, page, line, cmd):
    scratch = Scratch(tmp_path)
    program, args = scratch.args(cmd)
    if "--check-config" in args or "--print-config" in args:
        p = subprocess.run([*program, *args], cwd=tmp_path, env=scratch.env(), capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        return
    if args[0] == "top":
        if not shutil.which("tmux"):
            pytest.skip("tmux is not installed")
        server = start(scratch, [BIN], ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", "app.py",
                                        "--stats", args[1]])
        try:
            screen = screen_of(shlex.join([*program, *args]), lambda t: "req" in t)
            assert "req" in screen
        finally:
            stop(server)
        return
    control = next((a for a in args if a in ("--reload", "--stop", "--chain-reload", "--brutal-reload")), None)
    if control:
        pidfile = args[args.index(control) + 1]
        server = start(scratch, [BIN], ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", "app.py",
                                        "--master", "--processes", "1", "--pidfile", pidfile])
        try:
            p = subprocess.run([*program, *args], cwd=tmp_path, env=scratch.env(), capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, p.stderr
            wait_for(lambda: "re-executed, " in server.log.read_text(), what="the new master image")
            assert "failed" not in server.log.read_text(), server.log.read_text()
        finally:
            stop(server)
        return
    server = start(scratch, program, args)
    try:
        answer(scratch, args)
    finally:
        stop(server)


def answer(scratch, args):
    """A request to the first HTTP(S) socket the command names answers: the
    stub app's page where it names a Python app. A command whose sockets
    are a config file's is asked there; one with only gateway sockets
    (uwsgi, FastCGI) must have made them."""
    if "ini" in scratch.ports:
        args = [*args, "--http", f"127.0.0.1:{scratch.ports['ini']}", "--wsgi-file", "app.py"]
    gateway = [v for f, v in zip(args, args[1:]) if f in ("--socket", "--fastcgi-socket", "--uwsgi-socket")]
    for flag, value in zip(args, args[1:]):
        if flag not in ("--http", "--http-socket", "-b", "--https-socket"):
            continue
        addr = value.split(",", 1)[0]
        if addr.startswith("/"):
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", addr,
                                  "http://localhost/"], capture_output=True, text=True, timeout=30).stdout
            status = int(out or 0)
        else:
            scheme = "https" if flag == "--https-socket" else "http"
            # (A 404 response is falsy: the list holds it.)
            r = wait_for(lambda: [x for x in [_get(f"{scheme}://{addr}/")] if x is not None],
                         what=f"an answer on {addr}")[0]
            status = r.status_code
            if status == 200:
                assert r.text == "docs", r.text
        # Without an app (CGI, PHP on an empty document root) a 403 or 404
        # is the right answer; never an error of the server's.
        assert status < 500 and (status == 200 or not names_an_app(args)), (args, status)
        return
    assert gateway, f"nothing to ask in {args}"
    for path in gateway:
        assert os.path.exists(path), path


def names_an_app(args):
    return any(a in ("--module", "-w", "--wsgi-file") for a in args) or any(
        re.fullmatch(r"[\w.]+:[A-Za-z_][\w()]*", a) for a in args)


def _get(url):
    try:
        return requests.get(url, timeout=10, verify=False)
    except requests.ConnectionError:
        return None
