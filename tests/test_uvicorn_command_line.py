"""uvicorn's command line (`oxgate uvicorn APP ...`), and the
`oxgate-gunicorn` and `oxgate-uvicorn` commands `pip install oxgate` adds."""
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import time

import pytest
import requests

from helpers import (APPS, BIN, INSTALLED, ROOT, VENV, MYAPP_LOG_INI, free_port, listens, wait_for,
                     writes_after_a_request)

SRC = ROOT / "src" / "config" / "uvicorn.rs"


def oxgate(*args, program=None, cwd=None, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "GUNICORN_", "WEB_CONCURRENCY"))}
    env.update(extra_env or {})
    return subprocess.run([program or BIN, *args], capture_output=True, text=True, timeout=30, env=env,
                          cwd=cwd or ROOT)


def settings(stdout):
    return [(l.split(" = ", 1)[0], l.split(" = ", 1)[1].split("    # ")[0])
            for l in stdout.splitlines() if not l.startswith("#") and " = " in l]


def test_every_uvicorn_option_is_in_oxgates_table():
    from uvicorn.main import main
    table = SRC.read_text()
    rows = dict(re.findall(r'u\(\s*"(--[\w-]+)",\s*(\w+)', table))
    command = getattr(main, "__self__", main)  # the click command
    for p in command.params:
        for flag in p.opts:
            if flag.startswith("--"):
                assert flag in rows, f"uvicorn's {flag} is missing from {SRC.name}"
        for flag in p.secondary_opts:  # --no-access-log and the like
            assert rows.get("--" + flag[len("--no-"):]) == "ON_OFF", flag


def test_help_lists_uvicorns_options_as_oxgate_reads_them():
    """`oxgate uvicorn --help` prints the options, as uvicorn's does; it
    said "no application given"."""
    p = oxgate("uvicorn", "--help")
    assert p.returncode == 0 and p.stdout.startswith("Usage: oxgate uvicorn"), p.stderr
    assert "  --port VALUE\n" in p.stdout and "  --proxy-headers / --no-proxy-headers\n" in p.stdout
    assert "--http VALUE: oxgate has its own HTTP and WebSocket" in p.stdout and "  --ws VALUE\n" in p.stdout


def test_http2_is_served_only_with_uvicorns_http2_flag():
    """uvicorn serves HTTP/1.1 alone unless --http2 is given; oxgate
    offered h2 in ALPN and h2c to every `oxgate uvicorn` (the app saw
    http_version "2" where uvicorn's saw "1.1")."""
    p = oxgate("uvicorn", "main:app", "--print-config")
    assert p.returncode == 0 and ("http2-off", "true") in settings(p.stdout), p.stdout
    p = oxgate("uvicorn", "main:app", "--http2", "--print-config")
    assert p.returncode == 0 and ("http2-off", "true") not in settings(p.stdout), p.stdout


def test_print_config_maps_uvicorns_options(tmp_path):
    (tmp_path / ".env").write_text("# deploy\nexport SECRET=s3\nNAME=\"two words\"\n")
    p = oxgate("uvicorn", "main:create_app", "--factory", "--uds", str(tmp_path / "a.sock"), "--workers", "3",
               "--env-file", str(tmp_path / ".env"), "--no-access-log", "--root-path", "/api",
               "--limit-max-requests", "500", "--ws-max-queue", "8", "--print-config")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("# read as: uvicorn's command line")
    got = settings(p.stdout)
    for pair in [("http-socket", str(tmp_path / "a.sock")), ("processes", "3"), ("env", "SECRET=s3"),
                 ("env", "NAME=two words"), ("disable-logging", "true"), ("root-path", "/api"),
                 ("max-requests", "500"), ("module", "main:create_app()"), ("proxy-headers", "true")]:
        assert pair in got, (pair, got)
    assert "--ws-max-queue has no effect" in p.stderr
    # uvicorn logs requests at INFO: a level above it logs none.
    for level, logged in [("warning", False), ("ERROR", False), ("info", True), ("debug", True)]:
        p = oxgate("uvicorn", "main:app", "--log-level", level, "--print-config")
        assert p.returncode == 0, p.stderr
        assert (("disable-logging", "true") not in settings(p.stdout)) == logged, (level, p.stdout)
    p = oxgate("uvicorn", "main:app", "--interface", "asgi2", "--print-config")
    assert p.returncode == 0 and ("interface", "asgi2") in settings(p.stdout), p.stderr
    p = oxgate("uvicorn", "main:app", "--interface", "asgi4")
    assert p.returncode == 2 and "expected auto, asgi3, asgi2 or wsgi" in p.stderr
    # A bad port is named as uvicorn's option (it was as --http-socket).
    p = oxgate("uvicorn", "main:app", "--port", "80800")
    assert p.returncode == 2 and '--port "80800": expected a port number' in p.stderr, p.stderr
    p = oxgate("uvicorn", "main:app", "--bogus")
    assert p.returncode == 2 and "unknown option --bogus" in p.stderr


def test_serves_what_uvicorn_serves(serve, uvicorn):
    s = serve("uvicorn", "asgi_fastapi:app", "--host", "127.0.0.1", "--port", "{port}", "--app-dir", str(APPS),
              "--workers", "2", socket_arg=False, env={"VIRTUAL_ENV": str(VENV)})
    theirs = uvicorn("asgi_fastapi:app")
    for path in ("/", "/items/7?q=x"):
        a, b = requests.get(s.url + path), requests.get(theirs + path)
        assert (a.status_code, a.json()) == (b.status_code, b.json()), path
    r = requests.post(s.url + "/items", json={"name": "n", "price": 2.5})
    assert r.status_code == 201 and r.json() == {"name": "n", "double": 5.0}
    assert len(s.wait_workers(2)) == 2


def test_long_urls_big_headers_and_many_fields_pass_as_uvicorn_passes_them(serve, uvicorn):
    """uvicorn limits a request head by its size alone: a 5,000-byte URL,
    a 12 KB cookie (a big JWT) and 120 fields are served (Gunicorn's 4094,
    8190 and 100 made them 414 and 431 in uvicorn's dialect)."""
    s = serve("uvicorn", "asgi_fastapi:app", "--host", "127.0.0.1", "--port", "{port}", "--app-dir", str(APPS),
              socket_arg=False, env={"VIRTUAL_ENV": str(VENV)})
    theirs = uvicorn("asgi_fastapi:app")
    many = {f"X-F{i}": "v" for i in range(120)}
    for url in (s.url, theirs):
        assert requests.get(url + "/?q=" + "a" * 5000).status_code == 200, url
        assert requests.get(url + "/", headers={"Cookie": "c=" + "x" * 12_000}).status_code == 200, url
        assert requests.get(url + "/", headers=many).status_code == 200, url


@pytest.mark.parametrize("kind", ["json", "ini"])
def test_log_config_configures_the_apps_loggers_as_uvicorn(tmp_path, kind):
    """--log-config is read as uvicorn reads it (JSON a dictConfig, INI a
    fileConfig) before the app loads: the app's INFO lines are written, in
    its format. It was ignored, and they were lost."""
    (tmp_path / "lg.py").write_text(textwrap.dedent("""
        import logging
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            logging.getLogger("myapp").info("APP-INFO %s", scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        """))
    if kind == "json":
        conf = tmp_path / "lc.json"
        conf.write_text(json.dumps({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"f": {"format": "LOGGED %(name)s %(levelname)s %(message)s"}},
            "handlers": {"h": {"class": "logging.StreamHandler", "formatter": "f", "stream": "ext://sys.stdout"}},
            "loggers": {"myapp": {"handlers": ["h"], "level": "INFO"}}}))
    else:
        conf = tmp_path / "lc.ini"
        conf.write_text(MYAPP_LOG_INI)
    for program in ([BIN, "uvicorn"], [str(VENV / "bin" / "uvicorn")]):
        port = free_port()
        writes_after_a_request([*program, "lg:app", "--port", str(port), "--log-config", str(conf)], port, tmp_path,
                               "LOGGED myapp INFO APP-INFO /marked", program[0])


def test_an_app_logging_through_uvicorns_error_logger_is_heard_as_under_uvicorn(tmp_path):
    """uvicorn sets up its loggers before the app loads: an app that logs
    through "uvicorn.error" (a common FastAPI recipe) writes its INFO lines
    in uvicorn's format. They were lost."""
    (tmp_path / "ul.py").write_text(textwrap.dedent("""
        import logging
        log = logging.getLogger("uvicorn.error")
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            log.info("APP-INFO %s", scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        """))
    for program in ([BIN, "uvicorn"], [str(VENV / "bin" / "uvicorn")]):
        port = free_port()
        writes_after_a_request([*program, "ul:app", "--port", str(port)], port, tmp_path,
                               "INFO:     APP-INFO /marked", program[0])


def test_no_access_log_silences_the_apps_own_access_lines_as_uvicorn(tmp_path):
    """--no-access-log: uvicorn empties its access logger's handlers, so
    what the app logs there is not written either; oxgate wrote it."""
    (tmp_path / "al.py").write_text(textwrap.dedent("""
        import logging
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            logging.getLogger("uvicorn.access").info("custom access %s", scope["path"])
            logging.getLogger("uvicorn.error").info("APP-ERR %s", scope["path"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        """))
    # (uvicorn's own access formatter cannot write a line of the app's
    # without --no-access-log: it expects its five arguments.)
    for program, quiet in (([BIN, "uvicorn"], True), ([BIN, "uvicorn"], False),
                           ([str(VENV / "bin" / "uvicorn")], True)):
        port = free_port()
        flags = ["--no-access-log"] if quiet else []
        writes_after_a_request([*program, "al:app", "--port", str(port), *flags], port, tmp_path,
                               "APP-ERR /marked", program[0])
        out = (tmp_path / f"stdout-{port}.txt").read_text()
        assert ("custom access /marked" in out) == (not quiet), (program, quiet, out)


def test_ws_none_refuses_websockets_as_uvicorn(serve, uvicorn):
    """--ws none: a WebSocket handshake is a plain request, which a FastAPI
    app answers 404, as under uvicorn (the flag was passed over, and the
    socket accepted)."""
    s = serve("uvicorn", "asgi_fastapi:app", "--host", "127.0.0.1", "--port", "{port}", "--app-dir", str(APPS),
              "--ws", "none", socket_arg=False, env={"VIRTUAL_ENV": str(VENV)})
    theirs = uvicorn("asgi_fastapi:app", args=["--ws", "none"])
    handshake = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for url in (s.url, theirs):
        r = requests.get(url + "/ws/1", headers=handshake, timeout=10)
        assert r.status_code == 404, (url, r.status_code)


@pytest.mark.parametrize("args", [["--workers", "two"], ["--limit-concurrency", "abc"], ["--ws-max-size", "1e6"],
                                  ["--timeout-graceful-shutdown", "abc"], ["--ws-ping-interval", "soon"]])
def test_a_number_that_does_not_read_is_refused_as_uvicorn_refuses_it(tmp_path, args):
    """uvicorn (click) exits 2 on a number it cannot read; oxgate read it
    the way uWSGI's options are read (`two` as 0: the core count) and went
    on, and --check-config called it usable."""
    for program in ([BIN, "uvicorn"], [str(VENV / "bin" / "uvicorn")]):
        p = subprocess.run([*program, "pid:app", *args], capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert p.returncode == 2 and args[0] in p.stderr, (program, p.returncode, p.stderr)


def test_workers_0_is_one_process_as_in_uvicorn(tmp_path):
    p = oxgate("uvicorn", "pid:app", "--workers", "0", "--print-config")
    assert p.returncode == 0 and "processes = 1 " in p.stdout, p.stdout


def test_header_and_timeout_keep_alive_as_uvicorn(serve, uvicorn):
    """--header adds a response header, and --timeout-keep-alive closes an
    idle connection about that long after its last response, in both."""
    args = ["--header", "X-Frame-Options:DENY", "--timeout-keep-alive", "1"]
    s = serve("uvicorn", "asgi_fastapi:app", "--host", "127.0.0.1", "--port", "{port}", "--app-dir", str(APPS),
              *args, socket_arg=False, env={"VIRTUAL_ENV": str(VENV)})
    theirs = uvicorn("asgi_fastapi:app", args=args)
    for url in (s.url, theirs):
        assert requests.get(url + "/").headers["X-Frame-Options"] == "DENY", url
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=15) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(4096) or pytest.fail("closed before the response")
            idle = time.monotonic()
            assert sock.recv(1) == b""
            waited = time.monotonic() - idle
        assert 0.5 < waited < 5, (url, waited)


@pytest.mark.skipif(not INSTALLED, reason="the commands pip installs (the wheel pass of scripts/test.sh)")
@pytest.mark.parametrize("command,args,first", [
    ("oxgate-gunicorn", ["-w", "3", "app:app"], "# read as: Gunicorn's settings"),
    ("oxgate-uvicorn", ["app:app", "--workers", "3"], "# read as: uvicorn's command line"),
])
def test_pip_installs_one_word_commands(tmp_path, command, args, first):
    program = os.path.join(os.path.dirname(BIN), command)
    p = oxgate(*args, "--print-config", program=program, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(first) and ("processes", "3") in settings(p.stdout)


def test_uds_is_made_as_uvicorn_makes_it(tmp_path):
    """--uds PATH is srw-rw-rw- whatever the umask, as uvicorn chmods it:
    nginx, running as another user, connects. (It was the umask's
    srw-rw----, and nginx got 502 after the switch.) At a Ctrl-C the file
    is removed, as uvicorn removes it (it was left)."""
    from helpers import wait_for
    modes, left = {}, {}
    for name, program in {"oxgate": [BIN, "uvicorn"], "uvicorn": [str(VENV / "bin" / "uvicorn")]}.items():
        path = tmp_path / f"{name}.sock"
        proc = subprocess.Popen([*program, "asgi_raw:app", "--app-dir", str(APPS), "--uds", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                                preexec_fn=lambda: os.umask(0o027))
        try:
            wait_for(path.exists, what=f"{name}'s socket")
            wait_for(lambda: path.stat().st_mode & 0o777 == 0o666 or proc.poll() is not None, timeout=5,
                     what=f"{name}'s socket mode")
            modes[name] = oct(path.stat().st_mode & 0o777)
        finally:
            # Ctrl-C: uvicorn removes the file then (not at a SIGTERM).
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        left[name] = path.exists()
    assert modes == {"oxgate": "0o666", "uvicorn": "0o666"}, modes
    assert left == {"oxgate": False, "uvicorn": False}, left


ENV_FILE = """# deploy settings
export PLAIN=value
INLINE=value # a comment
HASH=a#b
PRESET=fromfile
SINGLE='it\\'s ${FOO} \\n'
DOUBLE="line1\\nline2 \\"q\\" ${FOO}"
MULTI="first
second"
EXPANDED=${FOO}-x
DEFAULTED=${MISSING:-fallback}
EARLIER=${PLAIN}-again
SPACED = spaced out  
EMPTY=
WEB_CONCURRENCY=3
"""

ENV_APP = """
import json, os
KEYS = ["PLAIN", "INLINE", "HASH", "PRESET", "SINGLE", "DOUBLE", "MULTI", "EXPANDED", "DEFAULTED", "EARLIER",
        "SPACED", "EMPTY"]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({k: os.environ.get(k) for k in KEYS}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_env_file_is_read_as_python_dotenv_reads_it_for_uvicorn(serve, tmp_path, monkeypatch):
    """uvicorn's --env-file is python-dotenv's load_dotenv: comments after
    a value, quotes and escapes, values over lines, ${VAR} expansion, and
    the environment's own values not overridden; WEB_CONCURRENCY set there
    is the workers. (Comments were kept, nothing expanded or unescaped, a
    container's own settings lost to the file, and one worker started.)"""
    import dotenv
    (tmp_path / ".env").write_text(ENV_FILE)
    (tmp_path / "envapp.py").write_text(ENV_APP)
    server_env = {"PRESET": "fromenv", "FOO": "bar"}
    s = serve("uvicorn", "envapp:app", "--port", "{port}", "--env-file", str(tmp_path / ".env"), cwd=tmp_path,
              socket_arg=False, env=server_env)
    ours = requests.get(s.url, timeout=10).json()
    for k, v in server_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MISSING", raising=False)
    values = dotenv.main.DotEnv(tmp_path / ".env", interpolate=True, override=False).dict()
    theirs = {k: (server_env[k] if k in server_env else values.get(k)) for k in ours}
    assert ours == theirs, (ours, theirs)
    assert len(s.wait_workers(3)) == 3


@pytest.mark.parametrize("root", ["", "/api"])
def test_the_access_line_is_uvicorns_on_stdout(tmp_path, uvicorn, root):
    """`oxgate uvicorn` writes uvicorn's access line, on stdout as uvicorn
    does (it wrote uWSGI's on stderr, and log parsers set up for uvicorn
    broke); its path is the scope's, under --root-path."""
    from helpers import free_port, listens, wait_for
    lines = {}
    for name, program in {"oxgate": [BIN, "uvicorn"], "uvicorn": [str(VENV / "bin" / "uvicorn")]}.items():
        port = free_port()
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen([*program, "asgi_raw:app", "--app-dir", str(APPS), "--port", str(port),
                                     *(["--root-path", root] if root else [])],
                                    stdout=o, stderr=e, cwd=tmp_path)
        try:
            wait_for(lambda: listens(port), what=f"{name} listening")
            requests.get(f"http://127.0.0.1:{port}/x?a=1", timeout=10)
            requests.post(f"http://127.0.0.1:{port}/raise-before", timeout=10)
            wait_for(lambda: out.read_text().count("\n") >= 2, what=f"{name}'s access lines")
        finally:
            proc.terminate()
            proc.wait(30)
        # The client's port differs from run to run.
        lines[name] = [re.sub(r":\d+ - ", ":PORT - ", line) for line in out.read_text().splitlines()]
        assert "GET /x?a=1" not in err.read_text(), name
    assert lines["oxgate"] == lines["uvicorn"] == [
        f'INFO:     127.0.0.1:PORT - "GET {root}/x?a=1 HTTP/1.1" 200 OK',
        f'INFO:     127.0.0.1:PORT - "POST {root}/raise-before HTTP/1.1" 500 Internal Server Error'], lines


def test_reload_waits_for_the_fix_of_an_app_broken_at_the_start_as_uvicorn(tmp_path):
    """--reload with an app that does not import at the start: the server
    stays up and loads it once the fix is saved, as uvicorn's reloader
    does (it exited, the app's error taken for a fatal one). The
    traceback is written once, not at each try."""
    good = textwrap.dedent("""
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"fixed"})
        """)
    for name, program in (("oxgate", [BIN, "uvicorn"]), ("uvicorn", [str(VENV / "bin" / "uvicorn")])):
        where = tmp_path / name
        where.mkdir()
        (where / "main.py").write_text(good + "\nthis is not python(\n")
        port = free_port()
        log = where / "log.txt"
        with open(log, "wb") as out:
            p = subprocess.Popen([*program, "main:app", "--port", str(port), "--reload", "--reload-delay", "0.25"],
                                 stdout=out, stderr=subprocess.STDOUT, cwd=where)
        try:
            wait_for(lambda: "SyntaxError" in log.read_text(), what=f"{program}: the error")
            time.sleep(1.5)
            assert p.poll() is None, log.read_text()
            (where / "main.py").write_text(good)
            wait_for(lambda: listens(port) and requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "fixed",
                     what=f"{program}: the fixed app served", show=log.read_text)
            assert log.read_text().count("SyntaxError: ") <= 2, log.read_text()
        finally:
            p.terminate()
            p.wait(timeout=30)


FAILING_STARTUP_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "db down"})
'''


def test_a_failed_start_exits_with_status_3_as_uvicorn_and_gunicorn(tmp_path):
    """An app whose lifespan startup fails, or that cannot be imported, in
    the workers: uvicorn and Gunicorn (uvicorn's worker) stop with status
    3, which scripts and supervisors tell from other failures (oxgate
    exited with 1); a preloaded app Gunicorn cannot import is 1."""
    (tmp_path / "failstart.py").write_text(FAILING_STARTUP_APP)
    env = {**os.environ, "VIRTUAL_ENV": str(VENV)}

    def status(*command):
        port = free_port()
        command = [c.replace("PORT", str(port)) for c in command]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=60).returncode

    uvicorn, gunicorn = str(VENV / "bin" / "uvicorn"), str(VENV / "bin" / "gunicorn")
    worker = ["-k", "uvicorn.workers.UvicornWorker"]
    cases = [
        (["uvicorn", "failstart:app", "--port", "PORT"], 3),
        (["uvicorn", "no_such_module:app", "--port", "PORT"], 3),
        (["gunicorn", *worker, "-b", "127.0.0.1:PORT", "failstart:app"], 3),
        (["gunicorn", "-b", "127.0.0.1:PORT", "no_such_module:app"], 3),
        (["gunicorn", "--preload", "-b", "127.0.0.1:PORT", "no_such_module:app"], 1),
    ]
    for (peer, *args), expected in cases:
        program = uvicorn if peer == "uvicorn" else gunicorn
        assert status(program, *args) == expected, (peer, args)
        assert status(BIN, peer, *args) == expected, (peer, args)
    # uWSGI's own options: the app failing in the workers is the same stop,
    # and so is an ASGI startup failing without a master.
    assert status(BIN, "--http-socket", "127.0.0.1:PORT", "--module", "no_such_module:app", "--lazy-apps") == 3
    assert status(BIN, "--no-master", "--http-socket", "127.0.0.1:PORT", "--module", "failstart:app") == 3


SSE_APP = '''
import asyncio, os
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route


async def events(request):
    async def ticks():
        try:
            n = 0
            while True:
                yield {"data": "tick %d" % n}
                n += 1
                await asyncio.sleep(0.2)
        finally:
            with open(os.environ["SSE_NOTES"], "a") as f:
                f.write("ended\\n")
    return EventSourceResponse(ticks())

app = Starlette(routes=[Route("/events", events)])
'''


@pytest.mark.parametrize("how", ["uvicorn", "reload-mercy"])
def test_a_stop_ends_sse_starlette_streams_cleanly(tmp_path, how):
    """sse-starlette (FastAPI's usual event streams) ends its streams when
    the server stops, through its own switch, which it sets from uvicorn's
    exit handler; oxgate sets it too: at once under uvicorn's command line
    (as uvicorn, which is gone in a second), else as the mercy ends. The
    streams ran until the mercy cut them, the client's read failing
    (incomplete chunked read), the generator's finally never run."""
    (tmp_path / "sse_app.py").write_text(SSE_APP)
    notes = tmp_path / "notes"
    port = free_port()
    command = ([BIN, "uvicorn", "sse_app:app", "--port", str(port), "--timeout-graceful-shutdown", "20"]
               if how == "uvicorn" else
               [BIN, "--http-socket", f"127.0.0.1:{port}", "--module", "sse_app:app", "--reload-mercy", "6"])
    log = open(tmp_path / "log", "wb")
    p = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                         env={**os.environ, "VIRTUAL_ENV": str(VENV), "SSE_NOTES": str(notes)})
    try:
        wait_for(lambda: listens(port), what="the server")
        r = requests.get(f"http://127.0.0.1:{port}/events", stream=True, timeout=30)
        lines = r.iter_lines()
        assert next(l for l in lines if l.startswith(b"data:")) == b"data: tick 0"
        p.send_signal(signal.SIGTERM)
        # The stream ends, whole: the rest is read to its last chunk.
        rest = list(lines)
        assert all(l.startswith((b"data:", b":")) or l == b"" for l in rest), rest
        assert p.wait(30) == 0
        assert notes.read_text() == "ended\n"
    finally:
        p.kill()
        p.wait()
        log.close()


def test_the_listen_backlog_is_uvicorns():
    def listen(*args):
        out = subprocess.run([BIN, "uvicorn", "asgi_raw:app", "--app-dir", str(APPS), *args, "--print-config"],
                             capture_output=True, text=True, timeout=30).stdout
        return [line.split()[2] for line in out.splitlines() if line.startswith("listen =")][-1]
    assert listen() == "2048"
    assert listen("--backlog", "77") == "77"


def test_a_wsgi_app_gets_uvicorns_ten_threads():
    """uvicorn runs a WSGI app on 10 threads: one thread served Flask one
    request at a time (five slow requests took five times as long)."""
    got = settings(oxgate("uvicorn", "main:app", "--interface", "wsgi", "--print-config").stdout)
    assert ("threads", "10") in got and ("interface", "wsgi") in got, got


@pytest.mark.parametrize("value,on", [("true", "true"), ("false", "false"), ("", "false")])
def test_ws_per_message_deflate_is_read_as_uvicorn_reads_a_boolean(value, on):
    got = settings(oxgate("uvicorn", "main:app", f"--ws-per-message-deflate={value}", "--print-config").stdout)
    assert ("ws-per-message-deflate", on) in got, got


def test_ws_per_message_deflate_that_is_no_boolean_is_refused_as_uvicorn_refuses_it():
    p = oxgate("uvicorn", "main:app", "--ws-per-message-deflate", "flase")
    assert p.returncode == 2 and "not a valid boolean" in p.stderr, p.stderr


def test_forwarded_allow_ips_literals_are_passed_over_not_fatal():
    """uvicorn's list may name a unix socket's path: it starts, as uvicorn
    does, with the addresses in force."""
    p = oxgate("uvicorn", "main:app", "--forwarded-allow-ips", "10.0.0.1, unix:/tmp/x.sock,localhost",
               "--print-config")
    assert p.returncode == 0, p.stderr
    assert ("forwarded-allow-ips", "10.0.0.1") in settings(p.stdout), p.stdout
    assert "unix:/tmp/x.sock, localhost passed over" in p.stderr, p.stderr


def test_forwarded_allow_ips_from_the_env_file_or_the_environment_as_uvicorn_reads_it(tmp_path):
    """uvicorn reads FORWARDED_ALLOW_IPS after --env-file: a value in the
    file was ignored (the default 127.0.0.1 trusted a proxy the file did
    not name), and one in the environment with a literal stopped the start."""
    (tmp_path / "fwd.env").write_text("FORWARDED_ALLOW_IPS=10.0.0.0/8\n")
    p = oxgate("uvicorn", "main:app", "--env-file", str(tmp_path / "fwd.env"), "--print-config")
    assert p.returncode == 0, p.stderr
    assert ("forwarded-allow-ips", "10.0.0.0/8") in settings(p.stdout), p.stdout
    p = oxgate("uvicorn", "main:app", "--print-config", extra_env={"FORWARDED_ALLOW_IPS": "127.0.0.1,localhost"})
    assert p.returncode == 0, p.stderr
    assert ("forwarded-allow-ips", "127.0.0.1") in settings(p.stdout), p.stdout
    assert "FORWARDED_ALLOW_IPS: localhost passed over" in p.stderr, p.stderr
