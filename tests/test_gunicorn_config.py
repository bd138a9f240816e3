"""Gunicorn's command line, GUNICORN_CMD_ARGS and gunicorn.conf.py, read by
oxgate and compared with the real Gunicorn (the venv's) running the same
file: workers, the access log line, the timeout, max_requests."""
import os
import re
import shutil
import subprocess
import tarfile
import time

import pytest
import requests

from helpers import APPS, BIN, ROOT, VENV, run_fail, wait_for

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


def test_dialects_and_precedence(tmp_path):
    f = conf(tmp_path, "workers = 2\nbind = ['unix:/tmp/a.sock', '127.0.0.1:9']\ntimeout = 10\n"
                       "wsgi_app = 'procs:application'\nimport os\numask = 0o027\n")
    # -c FILE.py makes a plain command line Gunicorn's.
    p, got = print_config("-c", str(f))
    assert p.stdout.startswith(f"# read as: Gunicorn's settings, with config file {f}")
    assert ("processes", "2") in got and ("harakiri", "10") in got and ("umask", "027") in got
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


def test_settings_oxgate_gives_no_meaning_are_reported_once(tmp_path):
    f = conf(tmp_path, "statsd_host = 'localhost:8125'\nkeyfile = 'k.pem'\nworkers = 1\n"
                       "secure_scheme_headers = {'X-PROTO': 'https'}\n")
    p = oxgate("-c", str(f), "procs:application", "--check-config", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for name in ("statsd_host", "keyfile", "secure_scheme_headers"):
        assert p.stderr.count(f"{name} has no effect") == 1, p.stderr
    p = oxgate("gunicorn", "--bogus", "app:app")
    assert p.returncode == 2 and "unknown option --bogus" in p.stderr
    p = oxgate("gunicorn", "-k", "mypkg.MyWorker", "app:app")
    assert p.returncode == 2 and "worker_class" in p.stderr
    bad = conf(tmp_path, "workers = 2\nraise RuntimeError('broken config')\n", name="bad.py")
    p = oxgate("-c", str(bad), "app:app")
    assert p.returncode == 2 and "RuntimeError: broken config" in p.stderr


def test_python_module_config(tmp_path):
    (tmp_path / "deploy_settings.py").write_text("workers = 3\nthreads = 2\n")
    p, got = print_config("-c", "python:deploy_settings", "procs:application", cwd=tmp_path)
    assert ("processes", "3") in got and ("threads", "2") in got


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
          ' %({x-req}i)s %({REQUEST_METHOD}e)s'
    f2 = conf(tmp_path, f"accesslog = '-'\nworkers = 1\naccess_log_format = {fmt!r}\n", name="fmt.py")
    ox, gu = both(serve, tmp_path, f2, "procs:application")
    lines = []
    for s in (ox, gu):
        requests.get(s.url + "/p?marker=custom", headers={"X-Req": "abc", "User-Agent": "ua/2"})
        line = access_line(s, "marker=custom")
        # %(p)s is the worker's pid in each.
        lines.append(re.sub(r"<\d+>", "<PID>", line))
    assert lines[0] == lines[1]


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


def test_jitter_draws_a_limit_per_worker(serve, tmp_path):
    f = conf(tmp_path, "workers = 1\nmax_requests = 2\nmax_requests_jitter = 1000\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "procs:application", socket_arg=False,
              cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)})
    pids = {requests.get(s.url + "/", headers={"Connection": "close"}).text.split()[0] for _ in range(10)}
    # With a limit of 2 and no jitter, 10 requests would need 5 workers;
    # the jitter adds 0..1000, so (but for a 3-in-1001 chance) one serves all.
    assert len(pids) <= 3, pids


def test_flask_on_a_unix_socket_with_accesslog(serve, tmp_path):
    sock = tmp_path / "app.sock"
    f = conf(tmp_path, f"bind = 'unix:{sock}'\nworkers = 2\naccesslog = '-'\nchdir = {str(APPS)!r}\n"
                       "wsgi_app = 'flask_app:app'\n")
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "-b", f"unix:{sock}", socket_arg=False,
              cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)})
    out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://x/"], capture_output=True, text=True)
    assert out.stdout == "Hello from Flask"
    wait_for(lambda: '"GET / HTTP/1.1" 200' in s.log(), what="the access line")


def test_fastapi_with_uvicorn_worker_class(serve, tmp_path):
    f = conf(tmp_path, "worker_class = 'uvicorn.workers.UvicornWorker'\nworkers = 1\n"
                       f"chdir = {str(APPS)!r}\n")
    p, got = print_config("-c", str(f), "asgi_fastapi:app")
    assert ("interface", "asgi") in got
    s = serve("-c", str(f), "-b", "127.0.0.1:{port}", "asgi_fastapi:app", socket_arg=False,
              cwd=tmp_path, env={"VIRTUAL_ENV": str(VENV)})
    r = requests.get(s.url + "/")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
