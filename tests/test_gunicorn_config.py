"""Gunicorn's command line, GUNICORN_CMD_ARGS and gunicorn.conf.py, read by
oxgate and compared with the real Gunicorn (the venv's) running the same
file: workers, the access log line, the timeout, max_requests."""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import textwrap
import time

import pytest
import requests

from helpers import (APPS, BIN, MYAPP_LOG_INI, ROOT, VENV, SyslogReceiver, alive, free_port, listens, run_fail,
                     wait_for, writes_after_a_request)

GUNICORN = str(VENV / "bin" / "gunicorn")
SRC = ROOT / "src" / "config" / "gunicorn.rs"


def oxgate(*args, env=None, cwd=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "GUNICORN_"))}
    full.pop("VIRTUAL_ENV", None)
    full.update(env or {})
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, env=full, cwd=cwd or ROOT)


def conf(tmp_path, text, name="gunicorn.conf.py"):
    f = tmp_path / name
    f.write_text(text)
    shutil.copy(APPS / "procs.py", tmp_path / "procs.py")
    return f


def both(serve, tmp_path, conf_file, *args):
    """oxgate and the real Gunicorn, each on its own port, on one file."""
    common = ["-c", str(conf_file), "-b", "127.0.0.1:{port}", *args]
    env = {"VIRTUAL_ENV": str(VENV)}
    ox = serve(*common, socket_arg=False, cwd=tmp_path, env=env)
    gu = serve(*common, socket_arg=False, cwd=tmp_path, env=env, program=(GUNICORN,))
    return ox, gu


def print_config(*args, env=None, cwd=None):
    p = oxgate(*args, "--print-config", env=env, cwd=cwd)
    assert p.returncode == 0, p.stderr
    pairs = [(line.split(" = ", 1)[0], line.split(" = ", 1)[1].split("    # ")[0])
             for line in p.stdout.splitlines() if not line.startswith("#") and " = " in line]
    return p, pairs


def test_every_gunicorn_setting_is_in_oxgates_table():
    """Each setting of the installed Gunicorn has a row, with its flags."""
    from gunicorn import config
    table = SRC.read_text()
    rows = dict(re.findall(r'g\(\s*"(\w+)",\s*&\[([^\]]*)\]', table))
    for s in config.KNOWN_SETTINGS:
        assert s.name in rows, f"Gunicorn's {s.name} is missing from {SRC.name}"
        flags = re.findall(r'"([^"]+)"', rows[s.name])
        assert flags == list(s.cli or []), s.name


def test_help_lists_gunicorns_settings_as_oxgate_reads_them():
    """`oxgate gunicorn --help` (or -h) prints the settings, as Gunicorn's
    does; it said "no application given"."""
    for flag in ("--help", "-h"):
        p = oxgate("gunicorn", flag)
        assert p.returncode == 0 and p.stdout.startswith("Usage: oxgate gunicorn"), p.stderr
        assert "  workers: -w, --workers VALUE\n" in p.stdout and "post_fork" in p.stdout, p.stdout


def test_dialects_and_precedence(tmp_path):
    f = conf(tmp_path, "workers = 2\nbind = ['unix:/tmp/a.sock', '127.0.0.1:9']\ntimeout = 10\n"
                       "wsgi_app = 'procs:application'\nimport os\numask = 0o027\n")
    # -c FILE.py makes a plain command line Gunicorn's.
    p, got = print_config("-c", str(f))
    assert p.stdout.startswith(f"# read as: Gunicorn's settings, with config file {f}")
    # umask is for the unix sockets alone: srwxrwxrwx less it.
    assert ("processes", "2") in got and ("harakiri", "10") in got and ("chmod-socket", "750") in got
    assert [v for k, v in got if k == "http-socket"] == ["/tmp/a.sock", "127.0.0.1:9"]
    assert ("module", "procs:application") in got and ("lazy-apps", "true") in got
    # The command line over GUNICORN_CMD_ARGS over the file; a list anew.
    p, got = print_config("gunicorn", "-c", str(f), "-w", "5", "-b", "127.0.0.1:7",
                          env={"GUNICORN_CMD_ARGS": "--workers 3 --timeout 20 --preload"})
    assert ("processes", "5") in got and ("harakiri", "20") in got
    assert [v for k, v in got if k == "http-socket"] == ["127.0.0.1:7"]
    assert "lazy-apps" not in dict(got)
    # ./gunicorn.conf.py is read when no -c is given.
    p, got = print_config("procs:application", cwd=tmp_path)
    assert p.stdout.startswith("# read as: Gunicorn's settings, with config file gunicorn.conf.py")
    # ... but a uWSGI option keeps uWSGI's reading.
    p, got = print_config("--http-socket", ":1", "procs:application", cwd=tmp_path)
    assert p.stdout.startswith("# read as: uWSGI's options")
    # Gunicorn's defaults: one worker ($WEB_CONCURRENCY), 127.0.0.1:8000 ($PORT).
    p, got = print_config("gunicorn", "procs:application", env={"WEB_CONCURRENCY": "4", "PORT": "5000"})
    assert ("processes", "4") in got and ("http-socket", "0.0.0.0:5000") in got
    assert ("disable-logging", "true") in got and ("harakiri", "30") in got


def test_check_config_loads_the_app_as_gunicorn_does(tmp_path):
    """Gunicorn's --check-config imports the app, and fails (1) with its
    traceback when the import fails; the real Gunicorn is the reference."""
    f = conf(tmp_path, "workers = 2\n")
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    for program in ([BIN], [GUNICORN]):
        for app, code in (("procs:application", 0), ("broken:app", 1)):
            p = subprocess.run([*program, "-c", str(f), app, "--check-config"], capture_output=True,
                               text=True, timeout=30, cwd=tmp_path)
            assert p.returncode == code, (program, app, p.stderr)
            assert (code == 1) == ("No module named 'no_such_module_here'" in p.stderr), p.stderr
    # uWSGI's options check the configuration only, unless --check-app is given.
    args = ["--http-socket", ":1", "--module", "broken:app", "--check-config"]
    assert oxgate(*args, cwd=tmp_path).returncode == 0
    p = oxgate(*args, "--check-app", cwd=tmp_path)
    assert p.returncode == 1 and "no_such_module_here" in p.stderr


@pytest.mark.parametrize("args", [["--http2-cleartext", "prior-knowledge"], ["--http2-cleartext=both"]])
def test_http2_cleartext_takes_gunicorn_27s_value(tmp_path, args):
    """Gunicorn 27's --http2-cleartext takes off, prior-knowledge, upgrade
    or both (its way to h2c behind Cloud Run or Envoy); oxgate serves h2c
    anyway. It was taken as a switch, and its value as a second app."""
    (tmp_path / "gunicorn.conf.py").write_text("")
    (tmp_path / "h2app.py").write_text("def application(environ, start_response):\n    return []\n")
    p = oxgate("gunicorn", "--http-protocols", "h2,h1", *args, "h2app:application", "--check-config", cwd=tmp_path)
    assert p.returncode == 0 and "http2_cleartext has no effect" in p.stderr, p.stderr


def test_settings_oxgate_gives_no_meaning_are_reported_once(tmp_path):
    f = conf(tmp_path, "worker_connections = 50\nssl_version = 5\nworkers = 1\n"
                       "logger_class = 'simple'\n")
    p = oxgate("-c", str(f), "procs:application", "--check-config", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for name in ("worker_connections", "ssl_version", "logger_class"):
        assert p.stderr.count(f"{name} has no effect") == 1, p.stderr
    p = oxgate("gunicorn", "--bogus", "app:app")
    assert p.returncode == 2 and "unknown option --bogus" in p.stderr
    p = oxgate("gunicorn", "-k", "mypkg.MyWorker", "app:app")
    assert p.returncode == 2 and "worker_class" in p.stderr
    bad = conf(tmp_path, "workers = 2\nraise RuntimeError('broken config')\n", name="bad.py")
    p = oxgate("-c", str(bad), "app:app")
    assert p.returncode == 2 and "RuntimeError: broken config" in p.stderr
    # What Gunicorn's validators refuse: None for a number, a boolean for
    # a text (accesslog = True wrote the access log to a file named "true").
    for text, said in [("timeout = None", "Invalid value for timeout: None"),
                       ("accesslog = True", "Invalid value for accesslog: True")]:
        for program in ((BIN,), (GUNICORN,)):
            bad = conf(tmp_path, text + "\n", name="bad.py")
            p = subprocess.run([*program, "-c", str(bad), "--check-config", "procs:application"],
                               capture_output=True, text=True, timeout=30, cwd=tmp_path)
            assert p.returncode != 0 and said in p.stderr + p.stdout, (program, p.stderr)


def test_an_async_worker_class_runs_the_app_in_threads(tmp_path):
    """gevent or eventlet, chosen for many requests at once per worker (up
    to worker_connections): the app runs in that many threads, at most 64,
    unless threads says; it ran in one, a request at a time."""
    for text, threads in [("worker_class = 'gevent'\n", "64"),
                          ("worker_class = 'eventlet'\nworker_connections = 20\n", "20"),
                          ("worker_class = 'gevent'\nthreads = 4\n", "4")]:
        f = conf(tmp_path, text, name="async.py")
        p, got = print_config("-c", str(f), "procs:application", cwd=tmp_path)
        assert ("threads", threads) in got, (text, got)
        assert "without monkey-patching" in p.stderr


def test_python_module_config(tmp_path):
    (tmp_path / "deploy_settings.py").write_text("workers = 3\nthreads = 2\n")
    p, got = print_config("-c", "python:deploy_settings", "procs:application", cwd=tmp_path)
    assert ("processes", "3") in got and ("threads", "2") in got


def test_a_config_file_named_without_py_is_gunicorns(tmp_path):
    """`oxgate -c gunicorn.conf app:app`, as python.org's Procfile runs
    Gunicorn: a file that is there and is not a uWSGI one is Gunicorn's
    config (it was a second app argument, exit 2)."""
    f = conf(tmp_path, "workers = 3\nthreads = 2\n", name="gunicorn.conf")
    for args in (["-c", str(f)], [f"--config={f}"]):
        p, got = print_config(*args, "procs:application", cwd=tmp_path)
        assert ("processes", "3") in got and ("threads", "2") in got, (args, p.stderr)


def test_version_flags_as_gunicorn_takes_them():
    real = subprocess.run([GUNICORN, "-v"], capture_output=True, text=True, timeout=30)
    assert real.returncode == 0 and "gunicorn" in real.stdout + real.stderr
    for flag in ("-v", "--version"):
        p = oxgate("gunicorn", flag)
        assert p.returncode == 0 and p.stdout.startswith("oxgate "), (flag, p.stdout, p.stderr)
    # -v is not --verbose or anything else of oxgate's; GUNICORN_CMD_ARGS
    # is read as the command line is.
    assert oxgate("gunicorn", "-v", "app:app").stdout.startswith("oxgate ")
    assert oxgate("gunicorn", env={"GUNICORN_CMD_ARGS": "-v"}).stdout.startswith("oxgate ")


def docs_command_lines():
    """Every `gunicorn ...` command in the deploy, run and settings pages
    of the Gunicorn docs (from its sdist, which scripts/test.sh fetches)."""
    version = subprocess.run([str(VENV / "bin" / "python"), "-c", "import gunicorn; print(gunicorn.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    sdist = ROOT / "target" / "gunicorn-corpus" / f"gunicorn-{version}.tar.gz"
    if not sdist.exists():
        return []
    lines = []
    with tarfile.open(sdist) as t:
        for page in ("deploy.md", "run.md", "reference/settings.md"):
            text = t.extractfile(f"gunicorn-{version}/docs/content/{page}").read().decode()
            for line in text.splitlines():
                m = re.match(r"^\s*\$?\s*(gunicorn\s+[^=\s].*)$", line)
                if m and "[OPTIONS]" not in line:
                    lines.append((page, m.group(1).strip().rstrip("\\").strip()))
    return lines


@pytest.mark.parametrize("page,line", docs_command_lines() or [("none", "")])
def test_gunicorn_docs_command_lines_resolve(page, line, tmp_path):
    if not line:
        pytest.fail("Gunicorn's sdist is missing from target/gunicorn-corpus: scripts/test.sh downloads it")
    import shlex
    args = shlex.split(line)[1:]
    p = oxgate("gunicorn", *args, "--print-config", cwd=tmp_path)
    assert p.returncode == 0, (line, p.stderr)
    assert p.stdout.startswith("# read as: Gunicorn's settings"), line


def access_line(server, marker):
    line = wait_for(lambda: next((l for l in server.log().splitlines() if marker in l), None),
                    what=f"an access line with {marker}")
    return re.sub(r"\[[^\]]+\]", "[TIME]", line)


def test_access_log_matches_gunicorn_byte_for_byte(serve, tmp_path):
    f = conf(tmp_path, "accesslog = '-'\nworkers = 1\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        r = requests.get(s.url + "/hello?x=1&marker=default", headers={"Referer": "http://r/", "User-Agent": "ua/1"})
        assert r.status_code == 200
    assert access_line(ox, "marker=default") == access_line(gu, "marker=default")
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(m)s %(U)s %(q)s %(H)s %(p)s' \
          ' %({x-req}i)s %({REQUEST_METHOD}e)s %({content-type}o)s %({Content-Length}o)s %({x-missing}o)s'
    f2 = conf(tmp_path, f"accesslog = '-'\nworkers = 1\naccess_log_format = {fmt!r}\n", name="fmt.py")
    ox, gu = both(serve, tmp_path, f2, "procs:application")
    lines = []
    for s in (ox, gu):
        # A `"` in a value is written `\"`, as Gunicorn's SafeAtoms write
        # it: a client cannot close a quoted field (it could).
        requests.get(s.url + '/p?marker=custom', headers={"X-Req": 'a"bc', "User-Agent": 'ua "2"',
                                                          "Referer": 'http://x/"q'})
        line = access_line(s, "marker=custom")
        # %(p)s is the worker's pid in each.
        lines.append(re.sub(r"<\d+>", "<PID>", line))
    assert lines[0] == lines[1] and '"ua \\"2\\""' in lines[0], lines
    # The Basic user, the request's own content headers, and an empty query.
    fmt = '%(u)s "%(q)s" %({content-type}i)s %({content-length}i)s %(r)s'
    f3 = conf(tmp_path, f"accesslog = '-'\nworkers = 1\naccess_log_format = {fmt!r}\n", name="fmt3.py")
    ox, gu = both(serve, tmp_path, f3, "procs:application")
    lines = []
    for s in (ox, gu):
        requests.post(s.url + "/marker-auth", data={"a": "b"}, auth=("alice", "pw"))
        lines.append(access_line(s, "marker-auth"))
    assert lines[0] == lines[1] == 'alice "" application/x-www-form-urlencoded 3 POST /marker-auth HTTP/1.1'


def test_syslog_lines_match_gunicorns(serve, tmp_path):
    """syslog = True: the error log's lines and the access lines go to
    syslog as Gunicorn sends them (Python's SysLogHandler: `<PRI>gunicorn.
    NAME.error: [PID] line` and NUL-terminated), the error log stays on
    stderr, and access lines go only to syslog when accesslog is unset."""
    sent = {}
    for name, program in (("oxgate", (BIN,)), ("gunicorn", (GUNICORN,))):
        path = tmp_path / f"{name}.syslog"
        r = sent[name] = SyslogReceiver(path)
        f = conf(tmp_path, f"workers = 1\nsyslog = True\nsyslog_addr = 'unix://{path}#dgram'\n"
                           "syslog_facility = 'local3'\n", name=f"{name}_conf.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program)
        s.wait_workers(1)
        r.error = r.wait(b".error: [", f"{name}'s first error-log line")
        requests.get(s.url + "/hello?marker=syslog", headers={"Referer": "http://r/", "User-Agent": "ua/1"})
        r.access = r.wait(b"marker=syslog", f"{name}'s access line")
        requests.get(s.url + "/raise")
        r.raised = r.wait(b"raised for the log", f"{name}'s traceback")
        r.stderr = s.log()
    ox, gu = sent["oxgate"], sent["gunicorn"]

    def same(m):
        m = re.sub(rb"\[\d+\]", b"[PID]", m)
        m = re.sub(rb"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", b"[TIME]", m)
        return re.sub(rb'" 200 \d+ "', b'" 200 SIZE "', m)
    assert same(ox.access) == same(gu.access)
    assert ox.access.startswith(b"<158>gunicorn.procs.application.access: [") and ox.access.endswith(b"\0")
    # The error log's lines say different things, in the same frame.
    head = re.compile(rb"^<(\d+)>gunicorn\.procs\.application\.error: \[\d+\] ")
    assert head.match(ox.error).group(1) == head.match(gu.error).group(1) == b"158"
    # An app's exception is one record at level error, its traceback in it
    # (oxgate wrote it to stderr alone).
    for r in (ox, gu):
        assert head.match(r.raised).group(1) == b"155", r.raised
        assert b"Traceback (most recent call last):\n" in r.raised, r.raised
        assert b"RuntimeError: raised for the log" in r.raised, r.raised
    for r in (ox, gu):
        assert "marker=syslog" not in r.stderr and r.stderr.strip()
        r.close()


def test_gunicorn_syslog_settings_map_onto_loggers(tmp_path):
    f = conf(tmp_path, "syslog = True\nsyslog_prefix = 'shop'\naccesslog = 'access.log'\n"
                       "disable_redirect_access_to_syslog = False\n")
    p, got = print_config("-c", str(f), "app:app")
    assert [v for k, v in got if k == "logger"] == ["stdio", "gunicorn-syslog:udp://localhost:514,gunicorn.shop.error,user"]
    assert [v for k, v in got if k == "req-logger"] == [
        "file:access.log", "gunicorn-syslog:udp://localhost:514,gunicorn.shop.access,user"]
    p, got = print_config("-c", str(f), "app:app", "--disable-redirect-access-to-syslog", "-n", "x:y",
                          "--log-syslog-prefix", "")
    assert [v for k, v in got if k == "req-logger"] == ["file:access.log"]
    assert ("logger", "gunicorn-syslog:udp://localhost:514,gunicorn.x.y.error,user") in got
    for bad, why in [("syslog_addr = 'tcp://h:1'", "not TCP"), ("syslog_facility = 'nope'", "unknown syslog facility")]:
        f = conf(tmp_path, f"syslog = True\n{bad}\n", name="bad.py")
        code, err = run_fail("-c", str(f), "app:app", "--check-config")
        assert code == 2 and why in err, err


SCHEME_APP = '''
def application(environ, start_response):
    body = environ["wsgi.url_scheme"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_secure_scheme_headers_as_gunicorn_reads_them(serve, tmp_path):
    """Behind nginx on the same host, X-Forwarded-Proto: https makes the
    request https, with Gunicorn's default headers and proxies; headers that
    disagree are a 400; an address not in forwarded_allow_ips is not
    believed."""
    (tmp_path / "scheme.py").write_text(SCHEME_APP)
    cases = [
        ({"X-Forwarded-Proto": "https"}, (200, "https")),
        ({"X-Forwarded-Ssl": "on"}, (200, "https")),
        ({"X-Forwarded-Protocol": "ssl", "X-Forwarded-Proto": "https"}, (200, "https")),
        ({"X-Forwarded-Proto": "http"}, (200, "http")),
        ({}, (200, "http")),
        ({"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off"}, (400, None)),
        # One line's list is one value, not "https" (a proxy chain that
        # appends to the header): http, where oxgate answered 400.
        ({"X-Forwarded-Proto": "https, http"}, (200, "http")),
        ({"X-Forwarded-Proto": "https, https"}, (200, "http")),
    ]
    f = conf(tmp_path, "workers = 1\n")
    ox, gu = both(serve, tmp_path, f, "scheme:application")
    for headers, (status, scheme) in cases:
        for s in (ox, gu):
            r = requests.get(s.url + "/", headers=headers)
            assert r.status_code == status, (s.args[0], headers, r.text)
            if scheme:
                assert r.text == scheme, (s.args[0], headers)
    # Two lines that disagree: a 400 from both, and a line in the log.
    two = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n\r\n"
    for s in (ox, gu):
        assert _raw_status(int(s.url.rsplit(":", 1)[1]), two) == [b"400"], s.args[0]
    ox.wait_log("contradictory scheme headers")
    f = conf(tmp_path, "workers = 1\nforwarded_allow_ips = '10.9.9.9'\n"
                       "secure_scheme_headers = {'X-SCHEME': 'yes'}\n", name="other.py")
    ox, gu = both(serve, tmp_path, f, "scheme:application")
    for s in (ox, gu):
        assert requests.get(s.url + "/", headers={"X-Scheme": "yes"}).text == "http", s.args[0]
    f = conf(tmp_path, "workers = 1\nsecure_scheme_headers = {'X-SCHEME': 'yes'}\n", name="mine.py")
    ox, gu = both(serve, tmp_path, f, "scheme:application")
    for s in (ox, gu):
        assert requests.get(s.url + "/", headers={"X-Scheme": "yes"}).text == "https", s.args[0]
        assert requests.get(s.url + "/", headers={"X-Forwarded-Proto": "https"}).text == "http", s.args[0]


def test_keepalive_closes_idle_connections_as_gunicorn_does(serve, tmp_path):
    """keepalive = 1 with gthread workers: an idle connection is closed
    about a second after its last response, in both."""
    f = conf(tmp_path, "workers = 1\nworker_class = 'gthread'\nthreads = 2\nkeepalive = 1\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not re.search(rb"\r\n\r\n\d+ \d+ v0$", data):
                data += sock.recv(4096) or pytest.fail("closed before the response")
            idle = time.monotonic()
            assert sock.recv(1) == b""
            waited = time.monotonic() - idle
        assert 0.5 < waited < 5, (s.args[0], waited)


def statsd_lines(sock, want, timeout=10):
    """The statsd lines received until one starts with `want`."""
    lines = []
    sock.settimeout(timeout)
    while not any(l.startswith(want) for l in lines):
        lines += sock.recv(65536).decode().splitlines()
    return lines


def test_statsd_metrics_match_gunicorns(serve, tmp_path):
    """The same metric names and types for the same request, so that a
    Gunicorn dashboard keeps working."""
    got = {}
    for program in ((BIN,), (GUNICORN,)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            name = f"statsd-{os.path.basename(program[0])}.py"
            f = conf(tmp_path, f"workers = 1\nstatsd_host = '127.0.0.1:{port}'\nstatsd_prefix = 'web'\n",
                     name=name)
            s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False,
                      cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)}, program=program)
            lines = statsd_lines(udp, "web.gunicorn.workers:")
            assert requests.get(s.url + "/").status_code == 200
            assert requests.get(s.url + "/missing").status_code == 200
            lines += statsd_lines(udp, "web.gunicorn.request.duration:")
            # Both requests: their three lines each.
            while sum(l.startswith("web.gunicorn.requests:") for l in lines) < 2:
                lines += statsd_lines(udp, "web.gunicorn.requests:")
            s.stop()
        shapes = set()
        for line in lines:
            metric, value = line.split(":", 1)
            kind = value.split("|")[1]
            if metric == "web.gunicorn.request.duration":
                assert float(value.split("|")[0]) >= 0
            else:
                shapes.add((metric, value))
            shapes.add((metric, kind))
        got[program[0]] = shapes
    assert got[BIN] == got[GUNICORN]
    assert ("web.gunicorn.request.status.200", "1|c|@1.0") in got[BIN]
    assert ("web.gunicorn.workers", "1|g") in got[BIN]


SIGNAL_HOOKS_CONF = '''
import os, sys
EVENTS = {events!r}
workers = 1
timeout = 2
graceful_timeout = 1

def _note(name, *extra):
    with open(EVENTS, "a") as f:
        f.write(" ".join([name, str(os.getpid())] + [str(e) for e in extra]) + "\\n")

def worker_int(worker):
    _note("worker_int", worker.pid == os.getpid())

def worker_abort(worker):
    # What real hooks do here: log every thread's stack.
    def chain(f):
        while f is not None:
            yield f.f_code.co_name
            f = f.f_back
    stuck = any("application" in chain(f) for f in sys._current_frames().values())
    _note("worker_abort", worker.pid == os.getpid(), stuck)
'''


def test_worker_int_and_worker_abort_as_gunicorn_calls_them(serve, tmp_path):
    """worker_abort in the worker a timeout kills, with the stuck request's
    stack at hand; worker_int in each worker when the master is stopped
    with SIGINT."""
    got = {}
    for program in ((BIN,), (GUNICORN,)):
        events = tmp_path / f"signal-events-{os.path.basename(program[0])}.log"
        f = conf(tmp_path, SIGNAL_HOOKS_CONF.format(events=str(events)),
                 name=f"signal-hooks-{os.path.basename(program[0])}.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False,
                  cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)}, program=program)
        first = s.wait_workers(1)
        try:
            requests.get(s.url + "/sleep?8", timeout=30)
        except requests.ConnectionError:
            pass
        wait_for(lambda: events.exists() and "worker_abort" in events.read_text(), what="worker_abort")
        wait_for(lambda: s.worker_pids() and s.worker_pids() != first, what="a new worker")
        assert requests.get(s.url + "/").status_code == 200
        s.proc.send_signal(signal.SIGINT)
        s.proc.wait(timeout=20)
        master = str(s.proc.pid)
        got[program[0]] = [(l.split()[0], "master" if l.split()[1] == master else "worker", *l.split()[2:])
                           for l in events.read_text().splitlines()]
    assert got[BIN] == got[GUNICORN]
    assert got[BIN] == [("worker_abort", "worker", "True", "True"), ("worker_int", "worker", "True")]


def test_workers_and_threads_match_gunicorn(serve, tmp_path):
    f = conf(tmp_path, "workers = 3\nthreads = 2\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    assert len(ox.wait_workers(3)) == len(gu.wait_workers(3)) == 3
    ox.wait_log("3 workers, 2 Python threads each")


def test_timeout_kills_a_slow_request_as_gunicorn_does(serve, tmp_path):
    f = conf(tmp_path, "workers = 1\ntimeout = 2\ngraceful_timeout = 1\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        before = s.wait_workers(1)
        try:
            status = requests.get(s.url + "/sleep?8", timeout=30).status_code
        except requests.ConnectionError:
            status = None
        assert status != 200, s.args
        # The worker was replaced, and the new one serves.
        wait_for(lambda: s.worker_pids() and s.worker_pids() != before, what="a new worker")
        assert requests.get(s.url + "/").status_code == 200


def test_a_timeout_kills_no_long_request_of_a_threaded_worker_as_in_gunicorn(serve, tmp_path):
    """A gthread worker's timeout is a heartbeat in Gunicorn: a request
    longer than it (a report, an SSE stream) runs to its end, in both."""
    f = conf(tmp_path, "workers = 1\nthreads = 2\ntimeout = 2\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        assert requests.get(s.url + "/sleep?4", timeout=30).status_code == 200, s.args
    assert "timeout kills no request" in ox.log()


def test_unix_socket_mode_owner_and_the_umask_as_gunicorn_makes_them(tmp_path):
    """Gunicorn's unix socket is srwxrwxrwx less its umask (0 by default),
    and its umask is for the socket alone; it is removed at the stop."""
    _, pairs = print_config("gunicorn", "-b", f"unix:{tmp_path}/s.sock", "procs:application")
    assert ("chmod-socket", "777") in pairs and ("vacuum", "true") in pairs
    assert not any(k == "umask" for k, _ in pairs)
    _, pairs = print_config("gunicorn", "-b", f"unix:{tmp_path}/s.sock", "-m", "007", "-u", "nobody", "-g", "nogroup",
                            "procs:application")
    assert ("chmod-socket", "770") in pairs and ("chown-socket", "nobody:nogroup") in pairs


def test_the_config_file_imports_from_the_working_directory(tmp_path):
    (tmp_path / "settings_of_mine.py").write_text("WORKERS = 3\n")
    f = conf(tmp_path, "from settings_of_mine import WORKERS\nworkers = WORKERS\n")
    _, pairs = print_config("-c", str(f), "procs:application", cwd=tmp_path)
    assert ("processes", "3") in pairs


def test_uvicorn_workers_read_proxy_headers_and_tcp_binds_are_taken(tmp_path):
    _, pairs = print_config("gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "tcp://127.0.0.1:8123", "main:app")
    assert ("proxy-headers", "true") in pairs and ("http-socket", "127.0.0.1:8123") in pairs


HOOKS_THAT_RAISE = """
def {hook}({args}):
    raise RuntimeError("refused by {hook}")
"""
HOOK_ARGS = {"on_starting": "server", "when_ready": "server", "post_fork": "server, worker",
             "pre_request": "worker, req"}


@pytest.mark.parametrize("hook", ["on_starting", "when_ready", "post_fork"])
def test_a_startup_hook_that_raises_stops_the_server_as_in_gunicorn(tmp_path, hook):
    f = conf(tmp_path, HOOKS_THAT_RAISE.format(hook=hook, args=HOOK_ARGS[hook]))
    p = subprocess.run([BIN, "-c", str(f), "-b", f"127.0.0.1:{free_port()}", "procs:application"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode != 0 and f"refused by {hook}" in p.stderr, (p.returncode, p.stderr[-800:])


CFG_HOOK = """
import concurrent.futures
import json
timeout = 45
def when_ready(server):
    c = server.cfg
    seen = {n: getattr(c, n) for n in ("workers", "threads", "timeout", "max_requests", "preload_app",
                                      "keepalive", "loglevel", "graceful_timeout", "backlog", "bind",
                                      "raw_env", "limit_request_line", "proc_name", "env")}
    port = c.bind[0].rsplit(":", 1)[1]
    with open(f"cfg-{port}.json", "w") as f:
        json.dump(seen, f)
"""


def test_hooks_see_the_settings_in_force_as_in_gunicorn(serve, tmp_path):
    """server.cfg in a hook: the command line over the file, and Gunicorn's
    default for what neither sets, the same as in the real Gunicorn. (Only
    a dozen settings were the command line's: -t, --graceful-timeout, -e,
    --log-level and the rest answered the file's or the default.)"""
    f = conf(tmp_path, CFG_HOOK)
    ox, gu = both(serve, tmp_path, f, "-w", "2", "--max-requests", "7", "-t", "77", "--graceful-timeout", "9",
                  "-e", "A=1", "--log-level", "warning", "--limit-request-line", "1000", "-n", "myname",
                  "procs:application")
    seen = {}
    for s in (ox, gu):
        port = s.url.rsplit(":", 1)[1]
        out = tmp_path / f"cfg-{port}.json"
        # Whole, not just made: the hook may be writing it still.
        wait_for(lambda: out.exists() and out.read_text().endswith("}"), what=f"when_ready's file in {s.args[0]}")
        seen[s] = __import__("json").loads(out.read_text())
        assert seen[s].pop("bind") == [f"127.0.0.1:{port}"]
    assert seen[ox] == seen[gu]
    assert seen[ox]["workers"] == 2 and seen[ox]["max_requests"] == 7 and seen[ox]["timeout"] == 77
    assert seen[ox]["env"] == {"A": "1"} and seen[ox]["proc_name"] == "myname"


def test_a_hook_named_by_its_dotted_path_and_an_ssl_context_factory_as_in_gunicorn(serve, tmp_path):
    """`post_fork = "hookmod.post_fork"` is imported and called, as Gunicorn
    does; an ssl_context factory is passed over with a warning. (Both
    stopped the start: "must be a function", "is a setting".)"""
    (tmp_path / "hookmod.py").write_text(
        "def post_fork(server, worker):\n"
        "    open('forked-%s' % server.cfg.bind[0].rsplit(':', 1)[1], 'w').close()\n")
    f = conf(tmp_path, "workers = 1\npost_fork = 'hookmod.post_fork'\n"
                       "def ssl_context(conf, default_ssl_context_factory):\n"
                       "    return default_ssl_context_factory()\n", name="dotted.py")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        port = s.url.rsplit(":", 1)[1]
        wait_for((tmp_path / f"forked-{port}").exists, what=f"post_fork's file in {s.args[0]}")
    assert "ssl_context" in ox.log()
    bad = conf(tmp_path, "post_fork = 'hookmod.no_such_hook'\n", name="bad_dotted.py")
    p = subprocess.run([BIN, "-c", str(bad), "--check-config", "procs:application"], cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, "VIRTUAL_ENV": str(VENV)})
    assert p.returncode == 2 and "post_fork = 'hookmod.no_such_hook': cannot import it" in p.stderr, p.stderr


HOOK_OBJECTS = """
import json, os
raw_env = ["A=1", "B=two=2"]
timeout = 40
def pre_request(worker, req):
    req.headers.append(("X-REQUEST-ID", "injected-123"))
def post_request(worker, req, environ, resp):
    seen = {"remote_addr": [type(req.remote_addr).__name__, req.remote_addr[0]], "path": req.path,
            "sent": resp.sent, "response_length": resp.response_length, "env": worker.cfg.env,
            "proc_name": worker.cfg.proc_name, "worker_timeout": worker.timeout,
            "seen_by_app": environ.get("HTTP_X_REQUEST_ID")}
    with open(f"objects-{environ['SERVER_PORT']}.json", "w") as f:
        json.dump(seen, f)
"""

HOOK_APP = """
def application(environ, start_response):
    body = environ.get("HTTP_X_REQUEST_ID", "none").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def parsed_json(path):
    """The JSON document in `path`, or None while it is missing or partly
    written."""
    try:
        return __import__("json").loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_the_objects_hooks_are_given_answer_as_gunicorns_do(serve, tmp_path):
    """What hooks commonly read and change: a header pre_request adds
    reaches the app (Gunicorn makes the environ after the hook), the peer
    as (host, port), the raw path, the bytes sent, raw_env as cfg.env."""
    f = conf(tmp_path, HOOK_OBJECTS)
    (tmp_path / "hookapp.py").write_text(HOOK_APP)
    ox, gu = both(serve, tmp_path, f, "hookapp:application")
    seen = {}
    for s in (ox, gu):
        r = requests.get(s.url + "/a%20b/c?x=1", timeout=10)
        assert r.text == "injected-123", s.args
        out = tmp_path / f"objects-{s.url.rsplit(':', 1)[1]}.json"
        # (The hook opens the file before it writes: whole once it parses.)
        seen[s] = wait_for(lambda: parsed_json(out), what=f"post_request's file in {s.args[0]}")
    assert seen[ox] == seen[gu]
    assert seen[ox]["remote_addr"] == ["tuple", "127.0.0.1"] and seen[ox]["path"] == "/a%20b/c"
    assert seen[ox]["sent"] == 12 and seen[ox]["env"] == {"A": "1", "B": "two=2"}


def test_a_pre_request_hook_that_raises_is_a_500_and_the_app_is_not_called(serve, tmp_path):
    f = conf(tmp_path, HOOKS_THAT_RAISE.format(hook="pre_request", args=HOOK_ARGS["pre_request"]))
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        assert requests.get(s.url + "/", timeout=10).status_code == 500, s.args


def test_max_requests_recycles_as_gunicorn_does(serve, tmp_path):
    """The worker that served max_requests is replaced in both. (Gunicorn's
    exits first and requests wait for the next; oxgate's serves on until
    its replacement is ready, so it may serve a few more.)"""
    f = conf(tmp_path, "workers = 1\nmax_requests = 3\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")

    def pid_of(s):
        return requests.get(s.url + "/", headers={"Connection": "close"}).text.split()[0]

    for s in (ox, gu):
        first = {pid_of(s) for _ in range(3)}
        assert len(first) == 1, s.args
        wait_for(lambda: pid_of(s) not in first, what=f"a recycled worker in {s.args[0]}")


def test_max_requests_recycles_from_the_start_as_gunicorn_does(serve, tmp_path):
    """Gunicorn has no minimum lifetime: a worker is replaced at its cap
    however young. (oxgate's uWSGI default of 10 s came back for a setting
    of 0: a worker served every request of its first 10 s, past any cap.)"""
    f = conf(tmp_path, "workers = 1\nmax_requests = 3\n", name="young.py")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        s.wait_workers(1)
        pids = set()
        deadline = time.monotonic() + 4  # well inside 10 s of the worker's start
        while time.monotonic() < deadline and len(pids) < 3:
            pids.add(requests.get(s.url + "/", headers={"Connection": "close"}).text.split()[0])
            time.sleep(0.05)
        assert len(pids) >= 3, (s.args[0], pids)


def test_jitter_draws_a_limit_per_worker(serve, tmp_path):
    f = conf(tmp_path, "workers = 1\nmax_requests = 2\nmax_requests_jitter = 1000\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False,
              cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)})
    pids = {requests.get(s.url + "/", headers={"Connection": "close"}).text.split()[0] for _ in range(10)}
    # With a limit of 2 and no jitter, 10 requests would need 5 workers;
    # the jitter adds 0..1000, so (but for a 3-in-1001 chance) one serves all.
    assert len(pids) <= 3, pids


PROGRAMS = {"oxgate": (BIN,), "gunicorn": (GUNICORN,)}


def run_with_streams(tmp_path, name, program, conf_file, work):
    """Runs `program` (oxgate or Gunicorn) on conf_file, its stdout and
    stderr in files of their own; `work(port, process, stdout_path)` once it
    listens; then stops it. Returns the two files' paths."""
    port = free_port()
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.Popen([*program, "-c", str(conf_file), "-b", f"127.0.0.1:{port}", "procs:application"],
                             stdout=o, stderr=e, cwd=tmp_path, env={**os.environ, "VIRTUAL_ENV": str(VENV)})
    try:
        wait_for(lambda: listens(port), what=f"{name} listening")
        work(port, p, out)
    finally:
        p.terminate()
        p.wait(timeout=30)
    return out, err


@pytest.mark.parametrize("accesslog,errorlog", [("-", None), ("-", "errors.log"), ("/dev/stdout", "/dev/stderr"),
                                               ("/dev/stdout", "errors.log")])
def test_accesslog_dash_is_stdout_apart_from_the_error_log_as_gunicorn(tmp_path, accesslog, errorlog):
    """accesslog = "-" is stdout, and the error log stderr (or its file), as
    Gunicorn writes them: a container's log collector, `2>/dev/null` or a
    shell that splits the two see access lines on stdout alone. (They went
    to stderr, or into the errorlog file; /dev/stdout, as Docker images
    write it, went there still.)"""
    text = f"workers = 1\naccesslog = {accesslog!r}\n" + (f"errorlog = {errorlog!r}\n" if errorlog else "")
    f = conf(tmp_path, text, name="dash.py")
    streams = {}
    for name, program in PROGRAMS.items():
        def work(port, p, out):
            assert requests.get(f"http://127.0.0.1:{port}/?marker=dash", timeout=10).ok
            wait_for(lambda: "marker=dash" in out.read_text(), what=f"{name}'s access line on stdout")
        out, err = run_with_streams(tmp_path, name, program, f, work)
        in_file = errorlog and not errorlog.startswith("/dev/")
        errors = (tmp_path / errorlog).read_text() if in_file else err.read_text()
        streams[name] = ("marker=dash" in out.read_text(), "marker=dash" in errors)
        if in_file:
            (tmp_path / errorlog).unlink()
    assert streams["oxgate"] == streams["gunicorn"] == (True, False), streams


def test_the_apps_stdout_stays_stdout_beside_the_access_log_as_gunicorn(tmp_path):
    """With accesslog = "-" (a container's usual setting), what the app
    prints stays on stdout and what it writes to stderr on stderr, as
    under Gunicorn. Its stdout went to stderr, where log collectors take
    lines for errors."""
    (tmp_path / "printing.py").write_text(textwrap.dedent("""
        import sys
        def application(environ, start_response):
            print("APP-STDOUT", flush=True)
            print("APP-STDERR", file=sys.stderr, flush=True)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """))
    seen = {}
    for name, program in {"oxgate": (BIN, "gunicorn"), "gunicorn": (GUNICORN,)}.items():
        port = free_port()
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            p = subprocess.Popen([*program, "--access-logfile", "-", "-b", f"127.0.0.1:{port}", "printing:application"],
                                 stdout=o, stderr=e, cwd=tmp_path, env={**os.environ, "VIRTUAL_ENV": str(VENV)})
        try:
            wait_for(lambda: listens(port), what=f"{name} listening")
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).ok
            wait_for(lambda: "APP-STDERR" in err.read_text() and '"GET / ' in out.read_text(), what=name)
        finally:
            p.terminate()
            p.wait(timeout=30)
        seen[name] = ("APP-STDOUT" in out.read_text(), "APP-STDOUT" in err.read_text(),
                      "APP-STDERR" in err.read_text())
    assert seen["oxgate"] == seen["gunicorn"] == (True, False, True), seen


def test_a_hup_lets_a_sync_workers_request_finish_past_the_graceful_timeout_as_gunicorn(tmp_path):
    """graceful_timeout bounds the master's stop; a HUP's old sync worker
    finishes its request (the timeout bounds it), as under Gunicorn. It
    was cut at graceful_timeout."""
    (tmp_path / "slowapp.py").write_text(textwrap.dedent("""
        import time
        def application(environ, start_response):
            time.sleep(3)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"finished"]
        """))
    for name, program in {"oxgate": (BIN, "gunicorn"), "gunicorn": (GUNICORN,)}.items():
        port = free_port()
        p = subprocess.Popen([*program, "--graceful-timeout", "1", "-b", f"127.0.0.1:{port}", "slowapp:application"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                             env={**os.environ, "VIRTUAL_ENV": str(VENV)})
        try:
            wait_for(lambda: listens(port), what=f"{name} listening")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(requests.get, f"http://127.0.0.1:{port}/", timeout=20)
                time.sleep(0.5)
                p.send_signal(signal.SIGHUP)
                r = answer.result()
            assert (r.status_code, r.text) == (200, "finished"), name
        finally:
            p.terminate()
            p.wait(timeout=30)


def test_server_cfg_gives_addresses_and_lists_as_gunicorns_config(serve, tmp_path):
    """Hooks read server.address and cfg.address as Gunicorn's (host, port)
    tuples (`host, port = server.address[0]` failed on a string), the
    address lists as lists, and Gunicorn's defaults where none is set."""
    f = conf(tmp_path, textwrap.dedent("""
        workers = 1
        forwarded_allow_ips = "10.0.0.1, 10.0.0.2"
        def when_ready(server):
            host, port = server.address[0]
            server.log.info("SEEN %r %r %r %r %r", host, port == server.cfg.address[0][1],
                            server.cfg.forwarded_allow_ips, sorted(server.cfg.secure_scheme_headers),
                            server.cfg.logconfig_dict)
        """), name="cfgs.py")
    seen = []
    for s in both(serve, tmp_path, f, "procs:application"):
        s.wait_log("SEEN ")
        seen.append(next(l for l in s.log().splitlines() if "SEEN " in l).split("SEEN ", 1)[1])
    assert seen[0] == seen[1], seen
    assert seen[0].startswith("'127.0.0.1' True ['10.0.0.1', '10.0.0.2']"), seen


@pytest.mark.parametrize("how", ["alive", "max_requests"])
def test_a_post_request_hook_that_retires_its_worker_has_it_replaced_as_gunicorn(serve, tmp_path, how):
    """The recycling recipes: post_request sets worker.alive = False, or
    lowers worker.max_requests; the worker stops after the request and
    another serves (it served on). A worker on its way out reads
    alive False in worker_exit, as Gunicorn's does."""
    retire = "worker.alive = False" if how == "alive" else "worker.max_requests = worker.nr"
    f = conf(tmp_path, textwrap.dedent(f"""
        workers = 1
        def post_request(worker, req, environ, resp):
            if req.path == "/retire":
                {retire}
        def worker_exit(server, worker):
            server.log.info("exit alive=%s", worker.alive)
        """), name=f"retire_{how}.py")
    for s in both(serve, tmp_path, f, "procs:application"):
        first = requests.get(s.url + "/", timeout=10).text.split()[0]
        assert requests.get(s.url + "/retire", timeout=10).text.split()[0] == first
        wait_for(lambda: requests.get(s.url + "/", timeout=10).text.split()[0] != first,
                 what=f"{s.args[0]}: a new worker")
        s.wait_log("exit alive=False")


def test_logconfig_dict_configures_the_apps_own_loggers_as_gunicorn(tmp_path):
    """logconfig_dict is applied with dictConfig over Gunicorn's defaults
    before the app loads: the app's logger writes where it says (it was
    ignored, and the app's INFO lines were lost)."""
    (tmp_path / "logapp.py").write_text(textwrap.dedent("""
        import logging
        def application(environ, start_response):
            logging.getLogger("myapp").info("APP-INFO-LINE %s", environ["PATH_INFO"])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """))
    f = conf(tmp_path, textwrap.dedent("""
        workers = 1
        logconfig_dict = {
            "formatters": {"plain": {"format": "LOGGED %(name)s %(levelname)s %(message)s"}},
            "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain",
                                 "stream": "ext://sys.stdout"}},
            "root": {"level": "INFO", "handlers": ["out"]},
            "loggers": {},
        }
        """), name="lcd.py")
    for name, program in PROGRAMS.items():
        port = free_port()
        writes_after_a_request([*program, "-c", str(f), "-b", f"127.0.0.1:{port}", "logapp:application"], port,
                               tmp_path, "LOGGED myapp INFO APP-INFO-LINE /marked", name)
    bad = conf(tmp_path, "logconfig_dict = {'handlers': {'x': {'class': 'no.such.Handler'}}}\n", name="bad.py")
    code, out = run_fail("gunicorn", "-c", str(bad), "-b", "127.0.0.1:0", "logapp:application", cwd=tmp_path)
    assert code != 0 and "logconfig_dict" in out, out


@pytest.mark.parametrize("setting", ["logconfig_dict = {'root': {'level': 'INFO'}}", "logconfig_json = 'log.json'"])
def test_a_logging_config_without_accesslog_turns_the_access_log_on_as_in_gunicorn(tmp_path, setting):
    """Gunicorn writes access lines when logconfig_dict or logconfig_json
    is set, accesslog or not (its gunicorn.access logger, on stdout unless
    the config sends it elsewhere); oxgate wrote none, and said nothing."""
    (tmp_path / "log.json").write_text(json.dumps({"root": {"level": "INFO"}}))
    f = conf(tmp_path, f"workers = 1\n{setting}\n", name="access.py")
    for name, program in PROGRAMS.items():
        port = free_port()
        writes_after_a_request([*program, "-c", str(f), "-b", f"127.0.0.1:{port}", "procs:application"], port,
                               tmp_path, '"GET /marked HTTP/1.1" 200', name)


def test_an_app_logging_through_gunicorns_error_logger_is_heard_as_under_gunicorn(tmp_path):
    """Flask's recipe for Gunicorn (its app.logger given gunicorn.error's
    handlers and level) writes the app's INFO lines in Gunicorn's format,
    with no config file at all. There was no such logger set up, and the
    lines were lost."""
    (tmp_path / "flasklog.py").write_text(textwrap.dedent("""
        import logging
        from flask import Flask
        app = Flask(__name__)
        gunicorn_logger = logging.getLogger("gunicorn.error")
        app.logger.handlers = gunicorn_logger.handlers
        app.logger.setLevel(gunicorn_logger.level)

        @app.route("/marked")
        def marked():
            app.logger.info("FLASK-INFO %s", "/marked")
            return "ok"
        """))
    for name, program in {"oxgate": (BIN, "gunicorn"), "gunicorn": (GUNICORN,)}.items():
        port = free_port()
        writes_after_a_request([*program, "-b", f"127.0.0.1:{port}", "flasklog:app"], port, tmp_path,
                               "] [INFO] FLASK-INFO /marked", name)


def test_logconfig_ini_configures_the_apps_own_loggers_as_gunicorn(tmp_path):
    """logconfig (--log-config), a fileConfig INI, is applied before the
    app loads, as in Gunicorn: the app's logger writes where it says (it
    was ignored)."""
    (tmp_path / "logapp.py").write_text(textwrap.dedent("""
        import logging
        def application(environ, start_response):
            logging.getLogger("myapp").info("APP-INFO-LINE %s", environ["PATH_INFO"])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """))
    (tmp_path / "log.ini").write_text(MYAPP_LOG_INI)
    f = conf(tmp_path, "workers = 1\nlogconfig = 'log.ini'\n", name="ini.py")
    for name, program in PROGRAMS.items():
        port = free_port()
        writes_after_a_request([*program, "-c", str(f), "-b", f"127.0.0.1:{port}", "logapp:application"], port,
                               tmp_path, "LOGGED myapp INFO APP-INFO-LINE /marked", name)


def test_logconfig_json_configures_the_apps_own_loggers_as_gunicorn(tmp_path):
    """logconfig_json (--log-config-json), a dictConfig in a JSON file, is
    applied before the app loads, from the config file or the command line,
    as in Gunicorn (it was ignored, and the app's INFO lines were lost)."""
    (tmp_path / "logapp.py").write_text(textwrap.dedent("""
        import logging
        def application(environ, start_response):
            logging.getLogger("myapp").info("APP-INFO-LINE %s", environ["PATH_INFO"])
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """))
    # No "version": Gunicorn merges the file over its defaults, which have it.
    (tmp_path / "log.json").write_text(json.dumps({
        "formatters": {"plain": {"format": "LOGGED %(name)s %(levelname)s %(message)s"}},
        "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
        "root": {"level": "INFO", "handlers": ["out"]}, "loggers": {},
    }))
    # (Any name: Gunicorn reads the file as JSON whatever it is called.)
    shutil.copy(tmp_path / "log.json", tmp_path / "logcfg")
    f = conf(tmp_path, "workers = 1\nlogconfig_json = 'log.json'\n", name="logjson_conf.py")
    for name, program in {"oxgate": (BIN, "gunicorn"), "gunicorn": (GUNICORN,)}.items():
        for how in (["-c", str(f)], ["--log-config-json", "log.json"], ["--log-config-json", "logcfg"]):
            port = free_port()
            writes_after_a_request([*program, *how, "-b", f"127.0.0.1:{port}", "logapp:application"], port,
                                   tmp_path, "LOGGED myapp INFO APP-INFO-LINE /marked", f"{name} {how[0]}")


def test_a_hooks_log_call_that_does_not_format_is_reported_as_gunicorns_logging_reports_it(tmp_path):
    """server.log formats as the logging module does: a message that does
    not format is a "--- Logging error ---" and the hook goes on (it raised
    into when_ready, which stopped the start); a lone mapping formats by
    name; exc_info=True adds the traceback (it was left out)."""
    f = conf(tmp_path, textwrap.dedent("""
        workers = 1
        def when_ready(server):
            server.log.info("Workers: ", server.num_workers)
            server.log.info("mapped %(a)s", {"a": 5})
            try:
                1 / 0
            except ZeroDivisionError:
                server.log.error("it failed", exc_info=True)
            server.log.info("hook done")
        """), name="fmt.py")
    for name, program in PROGRAMS.items():
        def work(port, p, out):
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).ok
        out, err = run_with_streams(tmp_path, name, program, f, work)
        log = err.read_text()
        assert "--- Logging error ---" in log and "mapped 5" in log and "hook done" in log, (name, log)
        assert "ZeroDivisionError" in log.split("it failed", 1)[1], (name, log)


@pytest.mark.parametrize("level", ["warning", "error"])
def test_loglevel_above_info_quiets_the_routine_lines_as_gunicorn(tmp_path, level):
    """loglevel = "warning" leaves a start, a recycle after max_requests,
    a reload and a stop without a line from the server, as in Gunicorn;
    "error" the warnings too (a setting with no meaning here). The access
    lines are written all the same. (oxgate's own lines were all written.)"""
    f = conf(tmp_path, f"workers = 2\nmax_requests = 1\naccesslog = '-'\nloglevel = {level!r}\n"
             "worker_connections = 5\n", name="quiet.py")
    streams = {}
    for name, program in PROGRAMS.items():
        def work(port, p, out):
            for i in range(4):
                assert requests.get(f"http://127.0.0.1:{port}/?marker=q{i}", timeout=10).ok
            (tmp_path / "version.txt").write_text(f"{name}-reloaded")
            p.send_signal(signal.SIGHUP)
            wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=10).text.endswith("-reloaded"),
                     what=f"{name} serving after the reload")
            # (A worker recycled by max_requests serves the new version
            # too: the reload's own warning is what says it has run.)
            if name == "oxgate" and level == "warning":
                err = tmp_path / f"{name}.err"
                wait_for(lambda: err.read_text().count("worker_connections") == 2, what="the reload's warning")
        try:
            out, err = run_with_streams(tmp_path, name, program, f, work)
        finally:
            (tmp_path / "version.txt").unlink(missing_ok=True)
        streams[name] = (out.read_text().count("marker=q"), err.read_text())
    assert streams["gunicorn"] == (4, ""), streams
    oxgate_lines = streams["oxgate"][1].splitlines()
    assert streams["oxgate"][0] == 4 and [line for line in oxgate_lines if "worker_connections" not in line] == [], streams
    # Gunicorn says nothing of a setting it has; oxgate warns of one with
    # no meaning here, at warning level only.
    assert len(oxgate_lines) == (0 if level == "error" else 2), oxgate_lines


HOOK_STATE_CONF = """
import os

NOTES = os.environ["HOOK_NOTES"]


def note(text):
    with open(NOTES, "a") as f:
        f.write(text + "\\n")


def on_starting(server):
    server.shared = "set-in-on_starting"


def when_ready(server):
    note(f"when_ready sees {getattr(server, 'shared', 'MISSING')}")


def pre_fork(server, worker):
    taken = {getattr(w, "worker_id", None) for w in server.WORKERS.values()}
    worker.worker_id = min(set(range(8)) - taken)


def post_fork(server, worker):
    note(f"post_fork id {worker.worker_id} pid {worker.pid == os.getpid()} shared {getattr(server, 'shared', 'MISSING')}")


def child_exit(server, worker):
    note(f"child_exit id {worker.worker_id}")
"""


@pytest.mark.parametrize("program", ["oxgate", "gunicorn"])
def test_what_a_hook_sets_on_server_and_worker_is_there_for_the_next_as_in_gunicorn(serve, tmp_path, program):
    """The usual per-worker id recipe: pre_fork picks a free id among
    server.WORKERS, post_fork reads it; and on_starting's server attribute
    read in when_ready and post_fork. oxgate made new objects for each
    hook: post_fork raised AttributeError, and the server did not start."""
    f = conf(tmp_path, HOOK_STATE_CONF, name=f"state_{program}.py")
    notes = tmp_path / f"notes-{program}"
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "-w", "2", "procs:application", socket_arg=False,
              cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV), "HOOK_NOTES": str(notes)},
              program=(GUNICORN,) if program == "gunicorn" else (BIN,))
    wait_for(lambda: notes.exists() and notes.read_text().count("post_fork") == 2, what="two post_forks", show=s.log)
    lines = notes.read_text().splitlines()
    forks = sorted(line for line in lines if line.startswith("post_fork"))
    assert forks == ["post_fork id 0 pid True shared set-in-on_starting",
                     "post_fork id 1 pid True shared set-in-on_starting"], (lines, s.log())
    wait_for(lambda: "when_ready sees set-in-on_starting" in notes.read_text(), what="when_ready", show=s.log)
    # A worker replaced gets the id its predecessor gave back.
    os.kill(s.worker_pids()[0], signal.SIGKILL)
    wait_for(lambda: notes.read_text().count("post_fork") == 3, what="the replacement's post_fork", show=s.log)
    lines = notes.read_text().splitlines()
    gone = next(line for line in lines if line.startswith("child_exit")).split()[-1]
    assert lines[-1].startswith(f"post_fork id {gone} "), lines


def test_an_unknown_loglevel_is_info_as_gunicorn_reads_it(tmp_path):
    """loglevel = "warn" (Python's old name): Gunicorn serves at info;
    oxgate refused to start."""
    f = conf(tmp_path, "loglevel = 'warn'\n", name="warn.py")
    p, pairs = print_config("-c", str(f), "procs:application", cwd=tmp_path)
    assert ("log-level", "info") in pairs, pairs
    assert 'loglevel "warn"' in p.stderr, p.stderr


def test_script_name_in_the_environment_mounts_the_app_as_gunicorn(serve, tmp_path):
    """SCRIPT_NAME in Gunicorn's environment (or raw_env) is the prefix the
    app is served under: /app/env is SCRIPT_NAME /app and PATH_INFO /env,
    and a path outside it reaches no app. (It was passed over: the app saw
    /app/env as its PATH_INFO, and built its URLs without the prefix.)"""
    shutil.copy(APPS / "procs.py", tmp_path / "procs.py")
    (tmp_path / "paths.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [(environ['SCRIPT_NAME'] + '|' + environ['PATH_INFO']).encode()]\n")
    env = {"VIRTUAL_ENV": str(VENV), "SCRIPT_NAME": "/app"}
    seen = {}
    for name, program in {"oxgate": (BIN, "gunicorn"), "gunicorn": (GUNICORN,)}.items():
        s = serve("-b", "127.0.0.1:{port}", "paths:application", socket_arg=False, cwd=tmp_path, env=env,
                  program=program)
        seen[name] = [(requests.get(s.url + path, timeout=10).status_code == 200 and
                       requests.get(s.url + path, timeout=10).text) for path in ("/app/env", "/app", "/app/x/y", "/env")]
    assert seen["oxgate"] == seen["gunicorn"] == ["/app|/env", "/app|", "/app|/x/y", False], seen
    p, pairs = print_config("gunicorn", "-e", "SCRIPT_NAME=/shop/", "paths:application", cwd=tmp_path)
    assert ("mount", "/shop=paths:application") in pairs and ("manage-script-name", "true") in pairs, p.stdout


def test_flask_on_a_unix_socket_with_accesslog(serve, tmp_path):
    """Flask on a unix socket with accesslog = "-", run by oxgate and by
    Gunicorn on the same file: two workers each, the same page, and the
    same access line apart from the time."""
    lines = {}
    for name, program in PROGRAMS.items():
        sock = tmp_path / f"{name}.sock"
        f = conf(tmp_path, f"bind = 'unix:{sock}'\nworkers = 2\naccesslog = '-'\nchdir = {str(APPS)!r}\n"
                           "wsgi_app = 'flask_app:app'\n", name=f"{name}_flask.py")
        s = serve("-c", str(f), socket_arg=False, cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)}, program=program,
                  wait=False)
        wait_for(sock.exists, what=f"{name}'s socket")
        assert len(s.wait_workers(2)) == 2
        out = wait_for(lambda: subprocess.run(["curl", "-s", "--unix-socket", str(sock), "-A", "ua/3",
                                               "http://x/?marker=flask"], capture_output=True, text=True).stdout,
                       what=f"{name}'s page")
        assert out == "Hello from Flask", name
        lines[name] = access_line(s, "marker=flask")
        s.stop()
    assert lines["oxgate"] == lines["gunicorn"]
    assert '"GET /?marker=flask HTTP/1.1" 200 16 "-" "ua/3"' in lines["oxgate"]


def test_fastapi_with_uvicorn_worker_class(serve, tmp_path):
    """worker_class = "uvicorn.workers.UvicornWorker": oxgate serves the app
    as ASGI, as Gunicorn with uvicorn's worker does: the same JSON and the
    same 404 from the same file."""
    f = conf(tmp_path, "worker_class = 'uvicorn.workers.UvicornWorker'\nworkers = 1\n"
                       f"chdir = {str(APPS)!r}\n")
    p, got = print_config("-c", str(f), "asgi_fastapi:app")
    assert ("interface", "asgi") in got
    answers = {}
    for name, program in PROGRAMS.items():
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "asgi_fastapi:app", socket_arg=False,
                  cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)}, program=program)
        assert len(s.wait_workers(1)) == 1
        r = requests.get(s.url + "/")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", name
        answers[name] = (r.json(), requests.get(s.url + "/nowhere").status_code)
        s.stop()
    assert answers["oxgate"] == answers["gunicorn"]


def test_post_worker_init_runs_before_the_lifespan_startup_as_with_uvicorns_worker(serve, tmp_path):
    """Gunicorn's UvicornWorker calls post_worker_init, then starts uvicorn,
    whose lifespan runs the app's startup: instrumentation set up in the
    hook sees it. oxgate ran the startup first."""
    (tmp_path / "lifeapp.py").write_text(
        "import os\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        while True:\n"
        "            m = await receive()\n"
        "            if m['type'] == 'lifespan.startup':\n"
        "                open(os.environ['EVENTS'], 'a').write('startup\\n')\n"
        "                await send({'type': 'lifespan.startup.complete'})\n"
        "            else:\n"
        "                await send({'type': 'lifespan.shutdown.complete'})\n"
        "                return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n")
    seen = {}
    for name, program in PROGRAMS.items():
        events = tmp_path / f"events-{name}"
        f = conf(tmp_path, "import os\nworker_class = 'uvicorn.workers.UvicornWorker'\nworkers = 1\n"
                           "def post_fork(server, worker):\n"
                           "    open(os.environ['EVENTS'], 'a').write('post_fork\\n')\n"
                           "def post_worker_init(worker):\n"
                           "    open(os.environ['EVENTS'], 'a').write('post_worker_init\\n')\n",
                 name=f"{name}_life.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "lifeapp:app", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV), "EVENTS": str(events)}, program=program)
        assert wait_for(lambda: _get(s.url + "/"), what=f"{name}'s answer").status_code == 200
        seen[name] = events.read_text().split()
        s.stop()
    assert seen["oxgate"] == seen["gunicorn"] == ["post_fork", "post_worker_init", "startup"], seen


def test_uvicorns_worker_writes_uvicorns_access_lines_as_under_gunicorn(serve, tmp_path):
    """With uvicorn's worker, Gunicorn's access log gets uvicorn's lines
    (`127.0.0.1:PORT - "GET /x?y=1 HTTP/1.1" 200`), and access_log_format is
    not read; oxgate wrote Gunicorn's Apache-style line, so log parsers
    built for FastAPI on Gunicorn found nothing."""
    f = conf(tmp_path, "worker_class = 'uvicorn.workers.UvicornWorker'\nworkers = 1\naccesslog = '-'\n"
                       f"chdir = {str(APPS)!r}\naccess_log_format = 'CUSTOM %(h)s'\n")
    ox, gu = both(serve, tmp_path, f, "asgi_fastapi:app")
    for s in (ox, gu):
        assert requests.get(s.url + "/x?y=1", timeout=10).status_code == 404
        line = wait_for(lambda: re.search(r'^127\.0\.0\.1:\d+ - "GET /x\?y=1 HTTP/1\.1" 404$', s.log(), re.M),
                        what=f"uvicorn's access line from {s.args[0]}", show=s.log)
        assert "CUSTOM" not in s.log(), s.log()
    assert "access_log_format is not used with uvicorn.workers.UvicornWorker" in ox.log()
    # Gunicorn's own asgi worker writes its own lines, in that format.
    p, pairs = print_config("gunicorn", "-k", "asgi", "--access-logfile", "-", "--access-logformat", "CUSTOM %(h)s",
                            "main:app")
    assert any(k == "log-format" and v.startswith("CUSTOM ") for k, v in pairs), pairs
    assert "is not used" not in p.stderr


def test_a_tornado_application_is_refused_at_start_with_why(tmp_path):
    """worker_class tornado with a tornado.web.Application (the seed
    article's Tornado project under Gunicorn): Gunicorn's tornado worker
    serves it on Tornado's own server; oxgate cannot, and says so at start
    (it served a 500 for every request)."""
    (tmp_path / "tapp.py").write_text("import tornado.web\n"
                                      "class H(tornado.web.RequestHandler):\n"
                                      "    def get(self):\n        self.write('tornado ok')\n"
                                      "app = tornado.web.Application([(r'/', H)])\n")
    p = oxgate("gunicorn", "-k", "tornado", "-b", f"127.0.0.1:{free_port()}", "tapp:app", cwd=tmp_path,
               env={"VIRTUAL_ENV": str(VENV)})
    assert p.returncode == 3, p.stderr
    assert "is a tornado.web.Application, which runs on Tornado's own HTTP server" in p.stderr

ROOT_PATH_APP = '''
import json

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps([scope["root_path"], scope["path"], scope["raw_path"].decode()]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
'''


@pytest.mark.parametrize("worker_class", ["asgi", "uvicorn.workers.UvicornWorker"])
def test_root_path_as_gunicorns_asgi_worker_gives_it(serve, tmp_path, worker_class):
    """root_path = "/api": Gunicorn's asgi worker gives it to the app as it is
    and the request's path as it came, with the prefix (oxgate put the
    prefix before it again: /api/api/items); uvicorn's worker never reads
    it. (A path outside the prefix, /apiary, is served under it, its path
    /api/apiary as the spec has it; Gunicorn's is /apiary.)"""
    (tmp_path / "rootapp.py").write_text(ROOT_PATH_APP)
    f = conf(tmp_path, f"worker_class = {worker_class!r}\nworkers = 1\nroot_path = '/api'\n")
    answers = {}
    for name, program in PROGRAMS.items():
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "rootapp:app", socket_arg=False,
                  cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)}, program=program)
        assert len(s.wait_workers(1)) == 1
        answers[name] = [requests.get(s.url + p).json() for p in ("/api/items", "/api", "/api/a%20b")]
        s.stop()
    assert answers["oxgate"] == answers["gunicorn"]
    if worker_class == "asgi":
        assert answers["oxgate"][0] == ["/api", "/api/items", "/api/items"]


SYS_PATH_APP = '''
import json, os, sys
def application(environ, start_response):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    body = json.dumps([p for p in sys.path if p.startswith(here)] + [os.getcwd()]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''


def test_sys_path_as_gunicorn_orders_it(serve, tmp_path):
    """pythonpath "p1,p2" and chdir elsewhere: sys.path starts p2, p1, the
    chdir, then the directory Gunicorn was started in, as Gunicorn puts
    them (oxgate had p1 first and not the start directory, so a module
    beside the config file did not import)."""
    for d in ("launch", "appdir", "p1", "p2"):
        (tmp_path / d).mkdir()
    (tmp_path / "appdir" / "spapp.py").write_text(SYS_PATH_APP)
    f = conf(tmp_path / "launch", f"chdir = {str(tmp_path / 'appdir')!r}\n"
                                  f"pythonpath = '{tmp_path}/p1,{tmp_path}/p2'\nworkers = 1\n")
    answers = {}
    for name, program in PROGRAMS.items():
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "spapp:application", socket_arg=False,
                  cwd=tmp_path / "launch", env={"VIRTUAL_ENV": str(VENV)}, program=program)
        assert len(s.wait_workers(1)) == 1
        answers[name] = requests.get(s.url + "/").json()
        s.stop()
    assert answers["oxgate"] == answers["gunicorn"]
    assert answers["oxgate"][:4] == [str(tmp_path / d) for d in ("p2", "p1", "appdir", "launch")]


HOOKS_CONF = '''
import multiprocessing  # as the classic config does, for workers = cpu_count() * 2 + 1
import os
EVENTS = {events!r}
workers = 2

def _note(name, *extra):
    with open(EVENTS, "a") as f:
        f.write(" ".join([name, str(os.getpid())] + [str(e) for e in extra]) + "\\n")

def nworkers_changed(server, new_value, old_value):
    _note("nworkers_changed", new_value, old_value)

def on_starting(server):
    _note("on_starting")

def when_ready(server):
    _note("when_ready")

def pre_fork(server, worker):
    _note("pre_fork", worker.age)

def post_fork(server, worker):
    # Where real files reconnect their database: the worker's own state.
    os.environ["CONNECTED_IN"] = str(os.getpid())
    _note("post_fork", worker.pid == os.getpid(), server.pid == os.getppid(), worker.age)

def post_worker_init(worker):
    _note("post_worker_init", worker.pid == os.getpid())

def pre_request(worker, req):
    worker.log.info("%s %s", req.method, req.path)
    _note("pre_request", req.method, req.path, dict(req.headers).get("X-HOOK"))

def post_request(worker, req, environ, resp):
    _note("post_request", req.path, resp.status)

def worker_exit(server, worker):
    _note("worker_exit", worker.pid == os.getpid())

def child_exit(server, worker):
    # Its age is the one it was started with (1 or 2, in either order).
    _note("child_exit", worker.pid != os.getpid(), worker.age in (1, 2))

def on_exit(server):
    _note("on_exit")
'''

ENV_APP = '''
import os
def application(environ, start_response):
    body = os.environ.get("CONNECTED_IN", "none").encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def hook_events(tmp_path, program, serve, stop=signal.SIGTERM):
    events = tmp_path / f"events-{os.path.basename(program[0])}.log"
    f = conf(tmp_path, HOOKS_CONF.format(events=str(events)), name=f"hooks-{os.path.basename(program[0])}.py")
    (tmp_path / "envapp.py").write_text(ENV_APP)
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "envapp:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)}, program=program)
    s.wait_workers(2)
    wait_for(lambda: events.exists() and events.read_text().count("post_worker_init") == 2, what="workers up")
    r = requests.get(s.url + "/hooked", headers={"X-Hook": "yes", "Connection": "close"})
    # post_fork ran in the worker that served, before the app saw a request.
    assert r.text == wait_for(lambda: next((l.split()[1] for l in events.read_text().splitlines()
                                              if l.startswith("pre_request")), None))
    wait_for(lambda: "post_request" in events.read_text(), what="post_request")
    s.proc.send_signal(stop)
    assert s.proc.wait(20) == 0
    log = s.log()
    s.stop()
    master = str(s.proc.pid)
    lines = [l.split() for l in events.read_text().splitlines()]
    roles = [(l[0], "master" if l[1] == master else "worker", *l[2:]) for l in lines]
    return roles, log


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_hooks_are_called_where_and_when_gunicorn_calls_them(serve, tmp_path, stop):
    """The same hooks, in the same processes and order, on a stop by
    SIGTERM and by Ctrl-C. With `import multiprocessing` in the file (it
    imports `signal`, which set Python's SIGINT handler in the master), a
    SIGINT raised KeyboardInterrupt in the master's next hook: a child_exit
    was lost; and worker_exit ran twice in a worker."""
    got = {}
    for program in ((BIN,), (GUNICORN,)):
        roles, log = hook_events(tmp_path, program, serve, stop)
        assert "[INFO] GET /hooked" in log, log
        assert "KeyboardInterrupt" not in log, log
        master_seq = [r for r in roles if r[1] == "master"]
        worker_seq = sorted(r for r in roles if r[1] == "worker")
        got[program[0]] = (master_seq, worker_seq)
    (ox_master, ox_worker), (gu_master, gu_worker) = got[BIN], got[GUNICORN]
    assert ox_master == gu_master
    assert ox_master == [("nworkers_changed", "master", "2", "None"), ("on_starting", "master"),
                         ("when_ready", "master"), ("pre_fork", "master", "1"), ("pre_fork", "master", "2"),
                         ("child_exit", "master", "True", "True"), ("child_exit", "master", "True", "True"),
                         ("on_exit", "master")]
    assert ox_worker == gu_worker
    assert ("pre_request", "worker", "GET", "/hooked", "yes") in ox_worker
    assert ("post_request", "worker", "/hooked", "200", "OK") in ox_worker
    assert [r[0] for r in ox_worker].count("worker_exit") == 2



def test_on_starting_runs_before_the_sockets_are_bound(serve, tmp_path):
    """A common on_starting makes the unix socket's directory: Gunicorn calls
    it before it binds, so the bind finds the directory; so must oxgate."""
    for name, program in PROGRAMS.items():
        run_dir = tmp_path / f"run-{name}"
        sock = run_dir / "app.sock"
        seen = tmp_path / f"seen-{name}"
        f = conf(tmp_path, f"import os\nbind = 'unix:{sock}'\nworkers = 1\nchdir = {str(APPS)!r}\n"
                           "raw_env = ['FROM_CONF=yes']\n"
                           f"def on_starting(server):\n    os.makedirs({str(run_dir)!r}, exist_ok=True)\n"
                           f"    open({str(seen)!r}, 'w').write(os.getcwd() + ' ' + os.environ.get('FROM_CONF', '-'))\n",
                 name=f"{name}_starting.py")
        s = serve("-c", str(f), "procs:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program, wait=False)
        wait_for(lambda: sock.exists() or s.proc.poll() is not None, what=f"{name}'s socket")
        assert s.proc.poll() is None, s.log()
        s.wait_workers(1)
        out = wait_for(lambda: subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://x/"],
                                              capture_output=True, text=True).stdout, what=f"{name}'s page")
        assert out.split()[0].isdigit(), (name, out)
        # With Gunicorn's settings applied: chdir, the environment.
        assert seen.read_text() == f"{APPS} yes", (name, seen.read_text())
        s.stop()


PROMETHEUS_APP = '''
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

REQUESTS = Counter("hello_requests", "Requests to /")
LIVE = Gauge("hello_live_workers", "Workers alive", multiprocess_mode="livesum")
LIVE.inc()

def application(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        REQUESTS.inc()
        body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def test_prometheus_multiprocess_collector(serve, tmp_path):
    """The documented Prometheus set-up: a shared directory, and child_exit
    marking each dead worker's live gauges gone. oxgate and Gunicorn, on
    the same file, count the same and leave no live gauge behind."""
    (tmp_path / "promapp.py").write_text(PROMETHEUS_APP)
    for name, program in PROGRAMS.items():
        metrics_dir = tmp_path / f"prom-{name}"
        metrics_dir.mkdir()
        f = conf(tmp_path, "from prometheus_client import multiprocess\n"
                           f"raw_env = ['PROMETHEUS_MULTIPROC_DIR={metrics_dir}']\n"
                           "workers = 2\nmax_requests = 4\n"
                           "def child_exit(server, worker):\n"
                           "    multiprocess.mark_process_dead(worker.pid)\n", name=f"{name}_prom.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "promapp:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, program=program)
        for _ in range(10):
            # Gunicorn's recycled worker exits before its replacement is
            # up: a request that meets the gap is sent again.
            r = wait_for(lambda: _get(s.url + "/"), what=f"{name}'s answer")
            assert r.text == "hello", name
        # Counted across workers, recycled ones included (max_requests = 4).
        text = wait_for(lambda: _get(s.url + "/metrics"), what=f"{name}'s metrics").text
        assert "hello_requests_total 10.0" in text, (name, text)
        s.stop()
        # Every worker is gone, and child_exit removed each one's live gauge.
        assert not list(metrics_dir.glob("gauge_livesum_*.db")), name


def _get(url):
    try:
        return requests.get(url, headers={"Connection": "close"}, timeout=10)
    except requests.ConnectionError:
        return None


def test_access_and_error_logs_in_files_of_their_own(serve, tmp_path):
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    f = conf(tmp_path, f"accesslog = {str(access)!r}\nerrorlog = {str(error)!r}\nworkers = 1\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    requests.get(s.url + "/to-access-log")
    wait_for(lambda: access.exists() and '"GET /to-access-log HTTP/1.1" 200' in access.read_text(),
             what="the access line")
    assert "serving" in error.read_text() and "/to-access-log" not in error.read_text()


def test_relative_log_pidfile_and_socket_paths_are_chdirs_as_in_gunicorn(serve, tmp_path):
    """Gunicorn changes to `chdir` as it reads its configuration: a
    relative log, pidfile or unix socket path is in `chdir`, not in the
    directory it was started from (under systemd, `/`)."""
    for name, program in (("oxgate", (BIN,)), ("gunicorn", (GUNICORN,))):
        here = tmp_path / name
        proj = here / "proj"
        proj.mkdir(parents=True)
        f = conf(here, "chdir = 'proj'\naccesslog = 'x-access.log'\nerrorlog = 'x-error.log'\n"
                       "pidfile = 'x.pid'\nworkers = 1\n")
        shutil.copy(APPS / "procs.py", proj / "procs.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "-b", "unix:x.sock", "procs:application",
                  socket_arg=False, cwd=here, env={"VIRTUAL_ENV": str(VENV)}, program=program)
        requests.get(s.url + "/to-chdir", timeout=10)
        access = proj / "x-access.log"
        wait_for(lambda: access.exists() and "/to-chdir" in access.read_text(), what=f"{name}'s access line")
        assert (proj / "x.pid").exists() and (proj / "x.sock").exists() and (proj / "x-error.log").exists(), name
        assert not [p.name for p in here.iterdir() if p.name.startswith("x")], name
        s.stop()


def test_a_second_start_over_a_live_pidfile_is_refused_as_in_gunicorn(serve, tmp_path):
    """Started again by mistake with the same pidfile, Gunicorn refuses
    before it binds: the running server keeps its unix socket, and its
    pidfile still names it (a deploy script's `kill -HUP $(cat x.pid)`)."""
    for name, program in (("oxgate", (BIN,)), ("gunicorn", (GUNICORN,))):
        here = tmp_path / name
        here.mkdir()
        f = conf(here, f"pidfile = {str(here / 'x.pid')!r}\nworkers = 1\nchdir = {str(APPS)!r}\n")
        sock = here / "x.sock"
        args = ["-c", str(f), "-b", f"unix:{sock}", "procs:application"]
        s = serve(*args, "-b", "127.0.0.1:{port}", socket_arg=False, cwd=here,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program)
        pid = (here / "x.pid").read_text().strip()
        second = subprocess.run([*program, *args], capture_output=True, text=True, timeout=30, cwd=here,
                                env=dict(os.environ, VIRTUAL_ENV=str(VENV)))
        assert second.returncode != 0, name
        assert f"already running on pid {pid}" in (second.stdout + second.stderr).lower(), (name, second.stderr)
        assert (here / "x.pid").read_text().strip() == pid, name
        answer = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", str(sock), "http://x/"],
                                capture_output=True, text=True)
        assert answer.returncode == 0, (name, answer.stderr)
        s.stop()


def test_gunicorns_signals(serve, tmp_path):
    """USR2 (Gunicorn's upgrade) replaces the workers with new code and no
    gap; TTIN/TTOU change the count (and call nworkers_changed); HUP
    reloads; USR1 reopens the logs; WINCH is harmless."""
    import signal
    events = tmp_path / "n.log"
    f = conf(tmp_path, f"workers = 1\ndef nworkers_changed(server, new, old):\n"
                       f"    open({str(events)!r}, 'a').write(f'{{old}}->{{new}}\\n')\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    first = s.wait_workers(1)
    os.kill(s.proc.pid, signal.SIGUSR2)
    s.wait_log("chain reload")
    wait_for(lambda: s.worker_pids() and not set(s.worker_pids()) & set(first), what="new workers")
    assert requests.get(s.url + "/").status_code == 200
    os.kill(s.proc.pid, signal.SIGTTIN)
    s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGTTOU)
    s.wait_workers(1)
    wait_for(lambda: events.read_text().splitlines()[-2:] == ["1->2", "2->1"], what="nworkers_changed")
    before = s.worker_pids()
    os.kill(s.proc.pid, signal.SIGHUP)
    wait_for(lambda: s.worker_pids() and not set(s.worker_pids()) & set(before), what="reloaded workers")
    os.kill(s.proc.pid, signal.SIGWINCH)
    os.kill(s.proc.pid, signal.SIGUSR1)
    assert requests.get(s.url + "/").status_code == 200 and s.proc.poll() is None
    os.kill(s.proc.pid, signal.SIGINT)
    assert s.proc.wait(15) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
def test_int_and_quit_stop_at_once_as_gunicorn(serve, tmp_path, sig):
    """Gunicorn's quick shutdown: a request in flight is cut, and the
    server is gone at once, though graceful_timeout would give it 30 s."""
    f = conf(tmp_path, "workers = 1\ngraceful_timeout = 30\n")
    for program in ((BIN,), (GUNICORN,)):
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program)
        s.wait_workers(1)
        got = []

        def slow():
            try:
                got.append(requests.get(s.url + "/sleep?10", timeout=30).status_code)
            except requests.RequestException as e:
                got.append(type(e).__name__)
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(1)
        s.proc.send_signal(sig)
        s.proc.wait(timeout=6)
        t.join(10)
        assert got and got[0] != 200, (program, got)


def test_django_on_a_unix_socket_with_post_fork(serve, tmp_path):
    """The most common shape: Django behind nginx on a unix socket, closing
    the database connections each worker inherited in post_fork. oxgate
    and Gunicorn, on the same file: the hook runs once in each worker, in
    the worker."""
    for name, program in PROGRAMS.items():
        sock = tmp_path / f"{name}-django.sock"
        marks = tmp_path / f"{name}-post_fork.log"
        f = conf(tmp_path, f"bind = 'unix:{sock}'\nworkers = 2\nchdir = {str(APPS)!r}\n"
                           "raw_env = ['DJANGO_SETTINGS_MODULE=djproj.settings']\n"
                           "wsgi_app = 'djproj.wsgi:application'\n"
                           "import os\n"
                           "def post_fork(server, worker):\n"
                           "    from django.db import connections\n"
                           "    connections.close_all()\n"
                           f"    open({str(marks)!r}, 'a').write(f'{{worker.pid}} {{os.getpid()}}\\n')\n",
                 name=f"{name}_django.py")
        s = serve("-c", str(f), socket_arg=False, cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)}, program=program,
                  wait=False)
        wait_for(sock.exists, what=f"{name}'s socket")
        pids = s.wait_workers(2)
        out = wait_for(lambda: subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://x/"],
                                              capture_output=True, text=True).stdout, what=f"{name}'s page")
        assert out == "Hello from Django", name
        wait_for(lambda: marks.exists() and len(marks.read_text().split()) == 4, what=f"post_fork in {name}")
        called = [tuple(map(int, l.split())) for l in marks.read_text().splitlines()]
        assert sorted(called) == [(p, p) for p in pids], name
        s.stop()


def test_access_log_alone_is_reopened_by_usr1(serve, tmp_path):
    import signal
    access = tmp_path / "access.log"
    f = conf(tmp_path, f"accesslog = {str(access)!r}\nworkers = 2\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    s.wait_workers(2)
    access.rename(tmp_path / "access.log.1")
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(access.exists, what="the reopened access log")
    for i in range(6):
        requests.get(s.url + f"/after/{i}", headers={"Connection": "close"})
    wait_for(lambda: access.read_text().count("/after/") == 6, what="every worker writing to the new file")


def test_post_request_runs_when_the_app_raises(serve, tmp_path):
    marks = tmp_path / "post.log"
    (tmp_path / "raising.py").write_text("def application(environ, start_response):\n"
                                         "    raise RuntimeError('boom')\n")
    f = conf(tmp_path, "workers = 1\n"
                       "def pre_request(worker, req):\n"
                       f"    open({str(marks)!r}, 'a').write('pre ' + str(worker.nr) + '\\n')\n"
                       "def post_request(worker, req, *, unused=None):\n"
                       f"    open({str(marks)!r}, 'a').write(req.path + ' ' + str(worker.nr) + '\\n')\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "raising:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    for _ in range(2):
        assert requests.get(s.url + "/fails").status_code == 500
    # worker.nr as Gunicorn's workers count it: after pre_request (it was
    # one ahead there).
    wait_for(lambda: marks.exists() and marks.read_text().split("\n")[:4] == ["pre 0", "/fails 1", "pre 1",
                                                                              "/fails 2"],
             what="pre_request and post_request around each failed request")


def _raw_status(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        head = b""
        while b"\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.split(b"\r\n", 1)[0].split(b" ")[1:2]


def test_limit_request_settings_refuse_as_gunicorn(serve, tmp_path):
    """limit_request_line, limit_request_fields and limit_request_field_size:
    the same requests are refused by both, with the same status, and one
    within the limits is served."""
    f = conf(tmp_path, "workers = 1\nlimit_request_line = 100\nlimit_request_fields = 5\n"
                       "limit_request_field_size = 60\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    cases = {
        "within": b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "long line": b"GET /" + b"a" * 150 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "many fields": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(8)) + b"\r\n",
        "long field": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100 + b"\r\n\r\n",
    }
    got = {name: [_raw_status(s.port, data) for s in (ox, gu)] for name, data in cases.items()}
    assert got["within"] == [[b"200"], [b"200"]]
    for name in ("long line", "many fields", "long field"):
        assert got[name][0] == got[name][1] and got[name][0] != [b"200"], (name, got[name])


def test_a_head_within_gunicorns_default_limits_is_served_as_gunicorn_serves_it(serve, tmp_path):
    """99 fields of 1,000 bytes (big cookies), within Gunicorn's limits (100
    fields of 8190 bytes): Gunicorn serves it; oxgate's 64 KiB head buffer
    answered 431. A 60,000-byte line with limit_request_line = 0 too (a
    target past 65,534 bytes is refused: hyper's URI cannot hold one)."""
    f = conf(tmp_path, "workers = 1\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    big = b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + \
        b"".join(b"X-%d: %s\r\n" % (i, b"c" * 1000) for i in range(98)) + b"\r\n"
    assert [_raw_status(s.port, big) for s in (ox, gu)] == [[b"200"], [b"200"]]
    # Past them, both refuse it.
    over = b"GET /ok HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n"
    statuses = [_raw_status(s.port, over) for s in (ox, gu)]
    assert statuses[0] == statuses[1] and statuses[0] != [b"200"], statuses
    f = conf(tmp_path, "workers = 1\nlimit_request_line = 0\n", name="unlimited.py")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    long_line = b"GET /ok?" + b"a" * 60000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert [_raw_status(s.port, long_line) for s in (ox, gu)] == [[b"200"], [b"200"]]


SLOW_APP = """
import time
def application(environ, start_response):
    open({started!r}, "w").close()
    time.sleep(4)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
"""


@pytest.mark.parametrize("grace", [0, 1, 15])
def test_graceful_timeout_bounds_the_stop_as_gunicorn(serve, tmp_path, grace):
    """SIGTERM with a 4-second request in flight: within graceful_timeout it
    finishes; past it, the worker is killed and the request cut, in both."""
    f = conf(tmp_path, f"workers = 1\ngraceful_timeout = {grace}\n", name=f"grace{grace}.py")
    started = tmp_path / "started"
    (tmp_path / "slowapp.py").write_text(SLOW_APP.format(started=str(started)))
    for program in ((BIN,), (GUNICORN,)):
        started.unlink(missing_ok=True)
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "slowapp:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program)
        s.wait_workers(1)
        got = []

        def slow():
            try:
                got.append(requests.get(s.url + "/", timeout=30).status_code)
            except requests.RequestException as e:
                got.append(type(e).__name__)
        t = threading.Thread(target=slow)
        t.start()
        wait_for(started.exists, what="the request running in the app")
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=20)
        t.join(20)
        assert got == ([200] if grace == 15 else ["ConnectionError"]), (program, got)


def test_duration_atoms_as_gunicorn_writes_them(serve, tmp_path):
    """%(T)s (whole seconds), %(L)s (seconds with six decimals), %(M)s
    (milliseconds) and %(D)s (microseconds), for a 1.3-second request."""
    f = conf(tmp_path, "workers = 1\naccesslog = '-'\naccess_log_format = 'took %(T)s %(L)s %(M)s %(D)s %(U)s'\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        requests.get(s.url + "/sleep?1.3")
        line = wait_for(lambda: next((l for l in s.log().splitlines() if l.startswith("took ")), None),
                        what="the access line")
        t, l_, m, d, path = line.split()[1:]
        assert path == "/sleep" and t == "1" and re.fullmatch(r"1\.\d{6}", l_), (s.args, line)
        assert 1300 <= int(m) < 3000 and int(m) == int(d) // 1000, (s.args, line)


def test_reload_extra_files_restart_the_workers_with_reload_on(serve, tmp_path):
    """reload = True with reload_extra_files: touching a listed file brings
    new workers, in both. Without reload, Gunicorn watches nothing, and
    oxgate watches nothing either."""
    watched = tmp_path / "settings.toml"
    watched.write_text("a = 1\n")
    f = conf(tmp_path, f"workers = 1\nreload = True\nreload_extra_files = [{str(watched)!r}]\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    before = {id(s): s.wait_workers(1) for s in (ox, gu)}
    # Served once: the app is loaded, and Gunicorn's reloader has taken
    # its first look at the files.
    for s in (ox, gu):
        wait_for(lambda: _get(s.url + "/"), what="a first answer")
    time.sleep(1.1)  # a new mtime, at the file system's granularity
    watched.write_text("a = 2\n")
    for s in (ox, gu):
        wait_for(lambda: s.worker_pids() and s.worker_pids() != before[id(s)], what=f"new workers for {s.args[0]}")
        wait_for(lambda: _get(s.url + "/"), what="an answer after the reload")
    f2 = conf(tmp_path, f"reload_extra_files = [{str(watched)!r}]\n", name="noreload.py")
    p, got = print_config("-c", str(f2), "procs:application")
    assert "touch-reload" not in dict(got)


def test_daemon_detaches_and_serves_as_gunicorn(tmp_path):
    """daemon = True: the command returns at once, and the detached server,
    whose pid is in the pidfile, serves; its lines go to errorlog."""
    for name in ("oxgate", "gunicorn"):
        port = free_port()
        pidfile, errors = tmp_path / f"{name}.pid", tmp_path / f"{name}-error.log"
        f = conf(tmp_path, f"workers = 1\ndaemon = True\npidfile = {str(pidfile)!r}\nerrorlog = {str(errors)!r}\n"
                           f"bind = '127.0.0.1:{port}'\n", name=f"{name}_daemon.py")
        program = [BIN] if name == "oxgate" else [GUNICORN]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "GUNICORN_"))}
        env["VIRTUAL_ENV"] = str(VENV)
        p = subprocess.run([*program, "-c", str(f), "procs:application"], cwd=tmp_path, env=env, timeout=30,
                           capture_output=True)
        assert p.returncode == 0, (name, p.stderr)
        pid = None
        try:
            pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what=f"{name}'s pidfile"))
            assert wait_for(lambda: _get(f"http://127.0.0.1:{port}/"), what=f"{name} serving").status_code == 200
            assert errors.exists() and errors.read_text().strip(), name
        finally:
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), what=f"{name} stopped")


def test_on_reload_and_pre_exec_hooks(serve, tmp_path):
    """HUP calls on_reload in the master, in both; USR2 (Gunicorn's new
    master) calls pre_exec in oxgate's master before it re-executes."""
    for program in ((BIN,), (GUNICORN,)):
        events = tmp_path / f"reload-{os.path.basename(program[0])}.log"
        f = conf(tmp_path, "import os\nworkers = 1\n"
                           "def on_reload(server):\n"
                           f"    open({str(events)!r}, 'a').write(f'on_reload {{os.getpid()}}\\n')\n"
                           "def pre_exec(server):\n"
                           f"    open({str(events)!r}, 'a').write(f'pre_exec {{os.getpid()}}\\n')\n",
                 name=f"reload-{os.path.basename(program[0])}.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program)
        first = s.wait_workers(1)
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: events.exists() and f"on_reload {s.proc.pid}" in events.read_text(),
                 what=f"on_reload in {program[0]}")
        wait_for(lambda: s.worker_pids() and s.worker_pids() != first, what="new workers")
        if program == (BIN,):
            s.proc.send_signal(signal.SIGUSR2)
            wait_for(lambda: f"pre_exec {s.proc.pid}" in events.read_text(), what="pre_exec")
        assert wait_for(lambda: _get(s.url + "/"), what="an answer").status_code == 200
        if program == (BIN,):
            s.proc.send_signal(signal.SIGINT)
            s.proc.wait(15)
        s.stop()


def test_proxy_protocol_gives_the_client_address_as_gunicorn(serve, tmp_path):
    """proxy_protocol with proxy_allow_ips: the address in a PROXY v1 line
    is the client's, in the access line of both."""
    f = conf(tmp_path, "workers = 1\nproxy_protocol = True\nproxy_allow_ips = '127.0.0.1'\naccesslog = '-'\n"
                       "access_log_format = 'from %(h)s %(U)s'\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        status = _raw_status(s.port, b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 80\r\n"
                                     b"GET /proxied HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == [b"200"], s.args
        wait_for(lambda: "from 203.0.113.9 /proxied" in s.log(), what=f"the client's address for {s.args[0]}")


def test_behind_a_proxy_header_the_balancer_is_trusted_for_the_scheme_as_gunicorn(serve, tmp_path):
    """HAProxy's send-proxy with TLS ended at HAProxy: forwarded_allow_ips
    names the balancer, the socket's peer, and Gunicorn trusts its
    X-Forwarded-Proto; oxgate checked the client the PROXY line names, and
    the app saw http (Django's SECURE_SSL_REDIRECT redirected forever)."""
    (tmp_path / "scheme.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [(environ['wsgi.url_scheme'] + ' ' + environ['REMOTE_ADDR']).encode()]\n")
    f = conf(tmp_path, "workers = 1\nproxy_protocol = True\nproxy_allow_ips = '127.0.0.1'\n"
                       "forwarded_allow_ips = '127.0.0.1'\n")
    ox, gu = both(serve, tmp_path, f, "scheme:application")
    for s in (ox, gu):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 443\r\n"
                      b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := c.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and b"https 203.0.113.9" in answer, (s.args[0], answer)


def test_server_software_names_gunicorn_for_apps_that_hand_their_logs_to_it(serve, tmp_path):
    """Flask's recipe, `if "gunicorn" in os.environ.get("SERVER_SOFTWARE",
    "")`, hands app.logger to gunicorn.error's handlers: Gunicorn sets the
    variable, and under oxgate the app's INFO lines went nowhere."""
    (tmp_path / "recipe.py").write_text(textwrap.dedent('''
        import logging, os
        def application(environ, start_response):
            log = logging.getLogger("myapp")
            if "gunicorn" in os.environ.get("SERVER_SOFTWARE", ""):
                g = logging.getLogger("gunicorn.error")
                log.handlers, log.propagate = g.handlers, False
                log.setLevel(g.level)
            log.info("APP-INFO-LINE")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [os.environ["SERVER_SOFTWARE"].encode()]
    '''))
    s = serve("gunicorn", "-b", "127.0.0.1:{port}", "--chdir", str(tmp_path), "recipe:application",
              socket_arg=False)
    assert "(gunicorn)" in requests.get(s.url + "/", timeout=10).text
    s.wait_log("APP-INFO-LINE")


@pytest.mark.parametrize("spelling", ["egg:gunicorn#gthread", "gunicorn.workers.ggevent.GeventWorker"])
def test_worker_classes_by_gunicorns_other_spellings(spelling):
    p = oxgate("gunicorn", "-k", spelling, "procs:application", "--print-config")
    assert p.returncode == 0, p.stderr


def test_a_config_file_that_prints_much_is_reloaded_and_the_master_supervises_meanwhile(serve, tmp_path):
    """A config file that writes more than a pipe holds to stderr (here
    128 KiB) as it is read: the reload's check of it is read as it comes,
    so the check ends, the reload is done (the check waited on the master,
    which waited for it, until its 20 s were out, then refused it), and a
    worker killed meanwhile is replaced."""
    f = conf(tmp_path, "import sys\nfor _ in range(128):\n    sys.stderr.write('x' * 1023 + '\\n')\nworkers = 2\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    before = s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGHUP)
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: len(s.worker_pids()) == 2 and not set(s.worker_pids()) & set(before),
             timeout=15, what=f"the reloaded workers:\n{s.log()[-2000:]}")
    s.wait_log("graceful reload done")
    assert "refused" not in s.log()
    assert requests.get(s.url + "/").status_code == 200


def test_sigusr2_says_there_is_no_old_master_to_stop(serve, tmp_path):
    """Gunicorn's upgrade: USR2, then a stop of the old master by its pid.
    Here USR2 replaces the workers in the same process, so the log says
    there is no old master to stop (a QUIT to that pid stops the service)."""
    f = conf(tmp_path, "workers = 2\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    before = s.wait_workers(2)
    os.kill(s.proc.pid, signal.SIGUSR2)
    wait_for(lambda: len(s.worker_pids()) == 2 and not set(s.worker_pids()) & set(before), what="new workers")
    s.wait_log("there is no old master to stop afterwards")
    assert requests.get(s.url + "/", timeout=10).status_code == 200 and s.proc.poll() is None



def test_the_hooks_log_lines_follow_the_logging_config_as_gunicorns(serve, tmp_path):
    """server.log in a hook is gunicorn.error: with a logconfig_dict that
    sends it to a file in a format of its own, the hook's line goes there,
    in that format (it went to stderr in Gunicorn's default one)."""
    errors = tmp_path / "error.log"
    f = conf(tmp_path, textwrap.dedent(f"""
        workers = 1
        logconfig_dict = {{
            "formatters": {{"mine": {{"format": "MINE %(levelname)s %(message)s"}}}},
            "handlers": {{"file": {{"class": "logging.FileHandler", "formatter": "mine",
                                  "filename": {str(errors)!r}}}}},
            "root": {{"level": "WARNING", "handlers": ["file"]}},
            "loggers": {{"gunicorn.error": {{"level": "INFO", "handlers": ["file"], "propagate": False}}}},
        }}
        def when_ready(server):
            server.log.info("HOOK when_ready %s", "here")
        """))
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
              env={"VIRTUAL_ENV": str(VENV)})
    wait_for(lambda: errors.exists() and "MINE INFO HOOK when_ready here" in errors.read_text(),
             what=f"the hook's line in the configured file:\n{s.log()}")
    assert "HOOK when_ready" not in s.log()


RELOADED_MASTER = """\
import http.server, os, threading
workers = {workers}
def when_ready(server):
    # What prometheus_flask_exporter's recipe does: a server on a thread.
    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"metrics")
        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", {metrics}), Metrics)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
def on_reload(server):
    open({events!r}, "a").write(f"on_reload workers={{server.cfg.workers}}\\n")
def post_fork(server, worker):
    open({events!r}, "a").write(f"age {{worker.age}}\\n")
"""


def test_a_hup_keeps_what_when_ready_started_and_calls_the_new_files_on_reload_as_gunicorn(serve, tmp_path):
    """Gunicorn's master lives through a HUP, so a metrics server its
    when_ready started serves on; oxgate's master re-executes, so it runs
    when_ready again (the server was gone after the first reload). The
    on_reload called is the file's as read again (it saw the old worker
    count), and the workers' ages go on (they began again at 1)."""
    for program in ((BIN,), (GUNICORN,)):
        name = os.path.basename(program[0])
        events, metrics = tmp_path / f"events-{name}", free_port()
        f = tmp_path / f"reloaded-{name}.py"
        f.write_text(RELOADED_MASTER.format(workers=1, metrics=metrics, events=str(events)))
        shutil.copy(APPS / "procs.py", tmp_path / "procs.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=program)
        s.wait_workers(1)
        url = f"http://127.0.0.1:{metrics}/"
        assert wait_for(lambda: _get(url), what=f"when_ready's server in {name}").text == "metrics"
        f.write_text(RELOADED_MASTER.format(workers=2, metrics=metrics, events=str(events)))
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "on_reload" in events.read_text(), what=f"on_reload in {name}")
        wait_for(lambda: len(s.worker_pids()) == 2, what=f"two workers in {name}")
        assert "on_reload workers=2" in events.read_text(), (name, events.read_text())
        ages = [int(line.split()[1]) for line in events.read_text().splitlines() if line.startswith("age")]
        assert ages[0] == 1 and sorted(ages[1:]) == [2, 3], (name, ages)
        # Past the reload's start: the server is up again (oxgate's) or
        # never went (Gunicorn's).
        assert wait_for(lambda: _get(url), what=f"when_ready's server after the HUP in {name}").text == "metrics"
        if program == (BIN,):
            s.proc.send_signal(signal.SIGINT)
            s.proc.wait(15)
        s.stop()


def test_hooks_gunicorn_refuses_stop_the_start_as_in_gunicorn(tmp_path):
    """A hook with another number of arguments than Gunicorn passes, and a
    bind that is a bare number, stop Gunicorn before it starts; oxgate
    started, then failed each request (pre_request: a 500) or bound
    "8000:8000"."""
    shutil.copy(APPS / "procs.py", tmp_path / "procs.py")
    for text, says in [("def pre_request(req):\n    pass\n", "pre_request: Gunicorn refuses it: the hook must take "
                                                             "2 positional arguments (worker, req), it takes 1"),
                       ("def when_ready(*args):\n    pass\n", "when_ready: Gunicorn refuses it"),
                       ("on_starting = 5\n", "on_starting = 5: Gunicorn refuses it: the value is not callable"),
                       ("bind = 8000\n", "bind = 8000: Gunicorn refuses it"),
                       ("bind = ['127.0.0.1:0', 5]\n", "not a string: 5")]:
        f = tmp_path / "refused.py"
        f.write_text(text)
        for program in (BIN, GUNICORN):
            r = subprocess.run([program, "-c", str(f), "--check-config", "procs:application"], capture_output=True,
                               text=True, timeout=30, cwd=tmp_path, env={**os.environ, "VIRTUAL_ENV": str(VENV)})
            assert r.returncode != 0, (program, text, r.stdout, r.stderr)
            if program == BIN:
                assert says in r.stderr, (text, r.stderr)
    # What it accepts: post_request with 2, 3 or 4 arguments.
    for args in ("worker, req", "worker, req, environ", "worker, req, environ, resp"):
        f.write_text(f"def post_request({args}):\n    pass\n")
        r = oxgate("-c", str(f), "--check-config", "procs:application", cwd=tmp_path,
                   env={"VIRTUAL_ENV": str(VENV)})
        assert r.returncode == 0, (args, r.stderr)


CFG_IDS = """\
import json
user = {user!r}
group = {group!r}
threads = 2
def on_starting(server):
    cfg = server.cfg
    out = dict(user=cfg.user, group=cfg.group, uid=cfg.uid, gid=cfg.gid, klass=cfg.worker_class_str,
               missing=getattr(cfg, "no_such_setting", "default"))
    open({out!r}, "w").write(json.dumps(out))
"""


def test_server_cfg_gives_the_user_and_group_as_numbers_as_gunicorn(serve, tmp_path):
    """cfg.user and cfg.uid are the number, from a name too (a hook that
    chowns a directory with them failed on None); an unknown name raises
    AttributeError (getattr's default works); sync with threads is
    gthread. The same as the real Gunicorn."""
    import grp
    import pwd
    user, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    seen = {}
    for program in (BIN, GUNICORN):
        out = tmp_path / f"ids-{os.path.basename(program)}.json"
        f = tmp_path / "ids.py"
        f.write_text(CFG_IDS.format(user=user, group=group, out=str(out)))
        shutil.copy(APPS / "procs.py", tmp_path / "procs.py")
        s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False, cwd=tmp_path,
                  env={"VIRTUAL_ENV": str(VENV)}, program=(program,))
        wait_for(lambda: out.exists() and out.read_text().endswith("}"), what=f"on_starting in {program}")
        seen[program] = json.loads(out.read_text())
        s.stop()
    assert seen[BIN] == seen[GUNICORN]
    assert seen[BIN] == dict(user=os.geteuid(), group=os.getegid(), uid=os.geteuid(), gid=os.getegid(),
                             klass="gthread", missing="default")


def test_the_environ_has_gunicorns_raw_uri_and_server_software(serve, tmp_path):
    """RAW_URI (the target as sent, which apps and access log formats
    written for Gunicorn read) and SERVER_SOFTWARE, as in Gunicorn's."""
    f = conf(tmp_path, "workers = 1\naccesslog = '-'\naccess_log_format = 'raw=%({raw_uri}e)s'\n")
    ox, gu = both(serve, tmp_path, f, "procs:application")
    for s in (ox, gu):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"GET /a%2Fb?x=%20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while c.recv(65536):
            pass
        wait_for(lambda: "raw=/a%2Fb?x=%20" in s.log(), what=f"RAW_URI in {s.args}")
    shutil.copy(APPS / "echo.py", tmp_path / "echo.py")
    ox = serve("-c", str(f), "-b", "127.0.0.1:{port}", "echo:application", socket_arg=False, cwd=tmp_path,
               env={"VIRTUAL_ENV": str(VENV)})
    assert {"RAW_URI", "SERVER_SOFTWARE"} <= set(requests.get(ox.url + "/keys", timeout=10).json())
    # With uWSGI's options RAW_URI too, beside uWSGI's REQUEST_URI; no
    # SERVER_SOFTWARE made up, as uWSGI makes none.
    s = serve("--wsgi-file", str(APPS / "echo.py"))
    keys = set(requests.get(s.url + "/keys", timeout=10).json())
    assert {"RAW_URI", "REQUEST_URI"} <= keys and "SERVER_SOFTWARE" not in keys


def test_a_trusted_proxys_script_name_header_mounts_the_app_as_gunicorn(serve, tmp_path):
    """nginx's `proxy_set_header SCRIPT_NAME /app;`, from an address
    forwarded_allow_ips trusts: Gunicorn (its forwarder_headers default)
    serves the app under that prefix; oxgate ignored the header. A path
    outside it is a 500 in both; from an untrusted address, or with
    forwarder_headers leaving SCRIPT_NAME out, the header does nothing."""
    (tmp_path / "mounted.py").write_text(
        "def application(environ, start_response):\n"
        "    out = environ['SCRIPT_NAME'] + '|' + environ['PATH_INFO']\n"
        "    start_response('200 OK', [('Content-Length', str(len(out)))])\n"
        "    return [out.encode()]\n")

    def ask(s, path):
        r = requests.get(s.url + path, headers={"SCRIPT_NAME": "/pre"}, timeout=10)
        return r.status_code, (r.text if r.status_code == 200 else "")

    for text, expected in [("workers = 1\n", [(200, "/pre|/env"), (200, "/pre|"), (500, "")]),
                           ("workers = 1\nforwarded_allow_ips = '10.9.9.9'\n",
                            [(200, "|/pre/env"), (200, "|/pre"), (200, "|/other")]),
                           ("workers = 1\nforwarder_headers = 'PATH_INFO'\n",
                            [(200, "|/pre/env"), (200, "|/pre"), (200, "|/other")])]:
        f = conf(tmp_path, text)
        ox, gu = both(serve, tmp_path, f, "mounted:application")
        for s in (ox, gu):
            assert [ask(s, p) for p in ("/pre/env", "/pre", "/other")] == expected, (text, s.args[0])
            if text == "workers = 1\n":
                # Sent twice, the last counts (a proxy appends its own);
                # an encoded prefix matches the path it encodes.
                for head, body in [(b"GET /pre/env HTTP/1.1\r\nSCRIPT_NAME: /other\r\nSCRIPT_NAME: /pre\r\n",
                                    b"/pre|/env"),
                                   (b"GET /my%20app/x HTTP/1.1\r\nSCRIPT_NAME: /my%20app\r\n", b"/my%20app|/x")]:
                    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
                        c.sendall(head + b"Host: x\r\nConnection: close\r\n\r\n")
                        out = b""
                        while chunk := c.recv(65536):
                            out += chunk
                    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n" + body), (s.args[0], out)
            s.stop()
