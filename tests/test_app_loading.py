"""Loading apps: wsgi-file, module, callable, factory, preload or --lazy-apps, virtualenvs, mounts, vhost, errors."""
import concurrent.futures
import json
import re
import subprocess
import sys
import time

import pytest
import requests

from helpers import APPS, BIN, ECHO, INSTALLED, VENV, free_port, fresh, packet, run_fail, start_nginx, uwsgi_request, wait_for


def test_module_with_callable(serve):
    s = serve("--module", "flask_app:app", "--chdir", str(APPS))
    assert requests.get(s.url + "/").text == "Hello from Flask"


def test_module_default_callable_and_pythonpath(serve, tmp_path):
    s = serve("--pythonpath", str(APPS), "--module", "behaviour")
    assert requests.get(s.url + "/thread").status_code == 200


def test_callable_option_and_positional(serve):
    s = serve("--chdir", str(APPS), "--module", "flask_app", "--callable", "app")
    assert requests.get(s.url + "/").text == "Hello from Flask"
    s = serve("flask_app:app", cwd=APPS)
    assert requests.get(s.url + "/").text == "Hello from Flask"


def test_factory(serve):
    s = serve("--chdir", str(APPS), "--module", "flask_app:create_app()")
    assert requests.get(s.url + "/").text == "made by factory"
    s = serve("--chdir", str(APPS), "--module", "flask_app:create_app('custom')")
    assert requests.get(s.url + "/").text == "made by custom"
    # By name too, as Gunicorn calls `create_app(name='x')` (a SyntaxError).
    s = serve("--chdir", str(APPS), "--module", "flask_app:create_app(name='named')")
    assert requests.get(s.url + "/").text == "made by named"


def test_env_option(serve, tmp_path):
    app = tmp_path / "envapp.py"
    app.write_text(
        "import os\n"
        "def application(e, sr):\n"
        "    sr('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.environ['OXGATE_TEST_VALUE'].encode()]\n")
    s = serve("--wsgi-file", str(app), "--env", "OXGATE_TEST_VALUE=a=b")
    assert requests.get(s.url).text == "a=b"


# Preloaded in the master and forked, or loaded in each worker (--lazy-apps).
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


def test_a_logging_queue_listener_started_at_import_writes_in_every_worker(serve, tmp_path):
    """Litestar's default logging (and a dictConfig QueueHandler) starts a
    QueueListener thread at import: with the app preloaded, that thread is
    started again in each worker, so the app's log lines are written (they
    went into a queue no thread read after the fork), and the warning
    about threads lost in the fork leaves it out."""
    log = tmp_path / "app.log"
    (tmp_path / "queued.py").write_text(f"""
import logging, logging.handlers, os, queue
q = queue.Queue()
handler = logging.handlers.QueueHandler(q)
handler.listener = logging.handlers.QueueListener(q, logging.FileHandler({str(log)!r}))
handler.listener.start()
logger = logging.getLogger("queued")
logger.addHandler(handler)
logger.setLevel(logging.INFO)

def application(environ, start_response):
    logger.info("LOGGED from %d", os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
""")
    s = serve("--wsgi-file", str(tmp_path / "queued.py"), "--processes", "2")
    pids = set()

    def both_served():
        # (Until the second worker is ready, the first takes every request.)
        pids.add(requests.get(s.url + "/", headers={"Connection": "close"}, timeout=10).text)
        return len(pids) == 2
    wait_for(both_served, what="a request served by each worker")
    wait_for(lambda: all(f"LOGGED from {pid}" in log.read_text() for pid in pids), what="each worker's line")
    assert "thread(s) at import" not in s.log(), s.log()


def test_lazy_apps_load_in_each_worker(serve, app_dir):
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "2", "--lazy-apps")
    s.wait_workers(2)
    served_by, loaded_in, _ = fresh(s.url).text.split()
    assert served_by == loaded_in


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


# Load errors.
def test_import_error_is_explained():
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", str(APPS / "broken_import.py"))
    assert code != 0
    assert "broken_import.py" in err
    assert "No module named 'this_module_does_not_exist'" in err
    assert "Traceback" in err


def test_missing_module_and_callable():
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--module", "no_such_module_xyz")
    assert code != 0 and "no_such_module_xyz" in err and "ModuleNotFoundError" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--chdir", str(APPS), "--module", "flask_app:nope")
    assert code != 0 and "no attribute 'nope'" in err and "create_app" in err
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", "missing.py")
    assert code != 0 and "does not exist" in err


def test_lazy_app_that_cannot_load_stops_the_master(tmp_path):
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--lazy-apps", "--processes", "2",
                        "--wsgi-file", str(APPS / "broken_import.py")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "this_module_does_not_exist" in p.stderr


# Python environments.
def test_virtualenv_wins_over_the_base_install(serve):
    # Flask is installed in the base interpreter too; --home must pick the venv's.
    s = serve("--home", str(VENV), "--wsgi-file", str(APPS / "behaviour.py"))
    info = requests.get(s.url + "/sys").json()
    assert info["prefix"] == str(VENV)
    assert info["executable"].startswith(str(VENV))
    site = [p for p in info["path"] if p.endswith("site-packages")]
    assert site and all(p.startswith(str(VENV)) for p in site), site


def test_virtual_env_variable(serve):
    s = serve("--wsgi-file", str(APPS / "behaviour.py"), env={"VIRTUAL_ENV": str(VENV)})
    assert requests.get(s.url + "/sys").json()["prefix"] == str(VENV)


def test_home_that_is_not_a_venv(tmp_path):
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--home", str(tmp_path), "--wsgi-file", "x.py")
    assert code != 0 and "virtualenv" in err


def test_home_that_is_a_venv_of_another_python_is_refused(tmp_path):
    """A virtualenv of another Python (3.12's, for oxgate on 3.11) gave its
    sys.prefix and none of its packages, and the app's import failed with
    a hint to use --home. Refused at start, naming the version wanted."""
    venv = tmp_path / "venv312"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    mine = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / mine).rename(venv / "lib" / "python3.99")
    (tmp_path / "app.py").write_text("def application(environ, start_response):\n    return []\n")
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--home", str(venv), "--wsgi-file", str(tmp_path / "app.py"))
    assert code != 0 and f"no lib/{mine}" in err and "there" in err, err


def test_a_binary_copied_into_a_venvs_bin_gives_that_venvs_python_as_sys_executable(serve, tmp_path):
    """running.md: a binary copied into a venv's bin/ uses that venv. Its
    sys.executable was the binary itself, so what starts Python again
    (subprocess with sys.executable, multiprocessing's spawn, Django's
    autoreloader) ran oxgate, which said "no socket to listen on"."""
    import shutil
    if INSTALLED:
        pytest.skip("the binary's own path: the pip-installed program runs under Python")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    shutil.copy(BIN, venv / "bin" / "oxgate")
    (tmp_path / "again.py").write_text(
        "import subprocess, sys\n"
        "def application(environ, start_response):\n"
        "    out = subprocess.run([sys.executable, '-c', 'import sys; print(sys.prefix)'],\n"
        "                         capture_output=True, text=True, timeout=20)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [f'{sys.executable} {out.returncode} {out.stdout.strip()}'.encode()]\n")
    s = serve("--wsgi-file", str(tmp_path / "again.py"), program=(str(venv / "bin" / "oxgate"),))
    assert requests.get(s.url, timeout=30).text == f"{venv / 'bin' / 'python'} 0 {venv}"


def test_sys_executable_and_argv(srv):
    info = requests.get(srv.url + "/sys").json()
    assert info["argv"] == ["oxgate"]
    assert "python" in info["executable"]


# Several apps mounted at paths (--mount).
def mounted_app(tmp_path, name):
    f = tmp_path / f"{name}.py"
    f.write_text("import json\n"
                 "def application(environ, start_response):\n"
                 "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
                 f"    return [json.dumps(['{name}', environ['SCRIPT_NAME'], environ['PATH_INFO']]).encode()]\n")
    return f


def test_mount_with_manage_script_name(serve, tmp_path):
    blog, api = mounted_app(tmp_path, "blog"), mounted_app(tmp_path, "api")
    mounted_app(tmp_path, "root")
    s = serve("--wsgi-file", str(tmp_path / "root.py"), "--mount", f"/blog={blog}", "--mount", "/blog/api=api",
              "--pythonpath", str(tmp_path), "--manage-script-name", "--processes", "1")
    for path, want in [("/blog/x/y", ["blog", "/blog", "/x/y"]), ("/blog", ["blog", "/blog", ""]),
                       ("/blog/api/v1", ["api", "/blog/api", "/v1"]),  # the longest mountpoint wins
                       ("/blogger", ["root", "", "/blogger"]), ("/", ["root", "", "/"])]:
        assert requests.get(s.url + path).json() == want, path
    assert "/blog=" in s.log() and "/blog/api=api:application" in s.log()


def test_mount_lines_alone_serve_every_path_as_uwsgi(serve, tmp_path):
    """A config of mount lines alone (no module, no wsgi-file): uWSGI's
    first app loaded is its default, and takes every path no mount takes;
    `mount = /=app.py` serves the whole site. They were all 404 "No app is
    mounted at this path"."""
    root, blog = mounted_app(tmp_path, "root"), mounted_app(tmp_path, "blog")
    s = serve("--mount", f"/={root}", "--processes", "1")
    for path in ("/", "/other", "/api/v1"):
        assert requests.get(s.url + path, timeout=10).json() == ["root", "", path], path
    s = serve("--mount", f"/blog={blog}", "--mount", f"/={root}", "--manage-script-name", "--processes", "1")
    for path, want in [("/blog/x", ["blog", "/blog", "/x"]), ("/", ["blog", "", "/"]),
                       ("/other", ["blog", "", "/other"])]:
        assert requests.get(s.url + path, timeout=10).json() == want, path


def test_no_default_app_refuses_a_script_name_no_app_has(serve, tmp_path):
    """uWSGI's no-default-app: a request whose SCRIPT_NAME (nginx's
    uwsgi_param) names no mounted app gets the no-app answer instead of the
    default app; an empty SCRIPT_NAME is the default app's, as in uWSGI."""
    blog = mounted_app(tmp_path, "blog")
    mounted_app(tmp_path, "root")

    def ask(port, script):
        out = uwsgi_request(port, packet([("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", script), ("PATH_INFO", "/x"),
                                          ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", script + "/x")]))
        head, body = out.split(b"\r\n\r\n", 1)
        return head.split(b" ")[1], body
    for flag in ([], ["--no-default-app"]):
        up = free_port()
        serve("--socket", f"127.0.0.1:{up}", "--wsgi-file", str(tmp_path / "root.py"), "--mount", f"/blog={blog}",
              "--processes", "1", *flag)
        assert ask(up, "/blog") == (b"200", b'["blog", "/blog", "/x"]')
        assert ask(up, "") == (b"200", b'["root", "", "/x"]')
        status, body = ask(up, "/nowhere")
        if flag:
            assert status not in (b"200",) and b"root" not in body, (status, body)
        else:
            assert (status, body) == (b"200", b'["root", "/nowhere", "/x"]')


def test_with_manage_script_name_a_script_name_nginx_sent_still_picks_the_app(serve, tmp_path):
    """nginx configs that strip the prefix themselves (a rewrite, or
    modifier1 30) send SCRIPT_NAME /blog and PATH_INFO /x. With
    --manage-script-name, no mountpoint prefixes /x: uWSGI then picks the
    app by SCRIPT_NAME, as it does without the option; oxgate gave the
    request to the default app."""
    blog = mounted_app(tmp_path, "blog")
    mounted_app(tmp_path, "root")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--wsgi-file", str(tmp_path / "root.py"), "--mount", f"/blog={blog}",
          "--manage-script-name", "--processes", "1")

    def ask(script, path):
        out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", script), ("PATH_INFO", path),
                                        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", script + path)]))
        return json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert ask("/blog", "/x") == ["blog", "/blog", "/x"]
    assert ask("", "/blog/x") == ["blog", "/blog", "/x"]
    assert ask("", "/x") == ["root", "", "/x"]


def test_wsgi_disable_file_wrapper_leaves_it_out_of_environ(serve, tmp_path):
    (tmp_path / "keys.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str('wsgi.file_wrapper' in environ).encode()]\n")
    for extra, want in (([], "True"), (["--wsgi-disable-file-wrapper"], "False")):
        s = serve("--wsgi-file", "keys.py", "--processes", "1", *extra, cwd=tmp_path)
        assert requests.get(s.url + "/").text == want, extra


@pytest.mark.parametrize("name", ["site.wsgi", "site"])
def test_files_named_like_mod_wsgi_or_without_suffix(serve, tmp_path, name):
    """uWSGI executes an app file whatever its name: mod_wsgi's .wsgi, or none."""
    (tmp_path / name).write_text(mounted_app(tmp_path, "app").read_text())
    for option in ("--wsgi-file", "--file"):
        s = serve(option, name, "--processes", "1", cwd=tmp_path)
        assert requests.get(s.url + "/x").json() == ["app", "", "/x"]
    s = serve("--mount", f"/m={name}", "--manage-script-name", "--processes", "1", cwd=tmp_path)
    assert requests.get(s.url + "/m/x").json() == ["app", "/m", "/x"]


def test_import_option_runs_modules_after_the_app(serve, tmp_path):
    """uWSGI's --import: modules (registering handlers, timers) imported in
    the process that loads the app; a dotted name or a .py file."""
    (tmp_path / "envreport.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.environ.get('IMPORTED', '').encode()]\n")
    (tmp_path / "tasks.py").write_text("import os\nos.environ['IMPORTED'] = os.environ.get('IMPORTED', '') + 'a'\n")
    (tmp_path / "more.py").write_text("import os\nos.environ['IMPORTED'] = os.environ.get('IMPORTED', '') + 'b'\n")
    s = serve("--wsgi-file", "envreport.py", "--import", "tasks", "--pyimport", str(tmp_path / "more.py"),
              "--processes", "1", cwd=tmp_path)
    assert requests.get(s.url + "/").text == "ab"
    (tmp_path / "broken_task.py").write_text("raise RuntimeError('no broker')\n")
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", "envreport.py", "--import", "broken_task",
                         cwd=tmp_path)
    assert code == 1 and "--import broken_task" in err and "RuntimeError: no broker" in err


def test_mount_chosen_by_script_name_over_uwsgi(serve, tmp_path):
    """nginx's `uwsgi_param SCRIPT_NAME /blog` picks the app; a path no app
    is mounted at goes to the first mount, uWSGI's default app when no
    other is loaded (--no-default-app makes it a 404)."""
    blog = mounted_app(tmp_path, "blog")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--mount", f"/blog={blog}", "--processes", "1")

    def ask(script, path):
        out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", script), ("PATH_INFO", path),
                                        ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", script + path)]))
        head, body = out.split(b"\r\n\r\n", 1)
        return head.split(b" ")[1], body
    assert ask("/blog", "/post/1") == (b"200", json.dumps(["blog", "/blog", "/post/1"]).encode())
    status, body = ask("/other", "/x")
    assert status == b"200" and json.loads(body)[0] == "blog", body


# Apps named per request by the front end (--vhost).
def site(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    # Both sites call their module "myapp": each must get its own.
    (d / "myapp.py").write_text("import flask\n"
                                "def application(environ, start_response):\n"
                                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                                f"    return [b'{name} ' + environ['wsgi.url_scheme'].encode()]\n")
    return d


def test_vhost_dynamic_apps_behind_nginx(serve, tmp_path):
    """shared/seeds/003: one oxgate started with --vhost and no app, two nginx
    server blocks naming their app with UWSGI_SCRIPT, UWSGI_CHDIR and
    UWSGI_PYHOME (the test venv, where Flask is)."""
    one, two = site(tmp_path, "site1"), site(tmp_path, "site2")
    up, port = free_port(), free_port()
    s = serve("-s", f":{up}", "-M", "-p", "2", "-t", "30", "--limit-as", "512", "-R", "10000", "--vhost")
    d = tmp_path / "nginx"
    blocks = "".join(f"""
  server {{ listen 127.0.0.1:{port}; server_name {name}.example;
    location / {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up};
      uwsgi_param UWSGI_PYHOME {sys.prefix}; uwsgi_param UWSGI_SCRIPT myapp; uwsgi_param UWSGI_CHDIR {path};
      uwsgi_param UWSGI_SCHEME https; }} }}""" for name, path in (("site1", one), ("site2", two)))
    nginx = start_nginx(d, port, f"""
worker_processes 1; user root; pid {d}/logs/nginx.pid; error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; uwsgi_temp_path {d}/tmp; {blocks}
  server {{ listen 127.0.0.1:{port} default_server; location / {{ include /etc/nginx/uwsgi_params;
    uwsgi_pass 127.0.0.1:{up}; }} }} }}
""")
    try:
        for _ in range(3):
            for name in ("site1", "site2"):
                r = requests.get(f"http://127.0.0.1:{port}/", headers={"Host": f"{name}.example"})
                assert (r.status_code, r.text) == (200, f"{name} https"), r.text
        # no UWSGI_SCRIPT and no default app: nothing to serve, a 500 as uWSGI's
        assert requests.get(f"http://127.0.0.1:{port}/", headers={"Host": "other"}).status_code == 500
    finally:
        nginx.terminate()
        nginx.wait(10)
    assert s.log().count("--vhost: loaded the app") <= 4  # once per site and worker, then kept


@pytest.mark.parametrize("names", [
    ("UWSGI_SCRIPT",), ("UWSGI_MODULE",), ("UWSGI_MODULE", "UWSGI_CALLABLE"), ("UWSGI_FILE",),
    ("UWSGI_SCRIPT", "UWSGI_PYHOME"), ("UWSGI_CHDIR",), ("UWSGI_PYHOME",), ("UWSGI_CALLABLE",),
])
def test_uwsgi_vars_load_nothing_without_vhost(serve, tmp_path, names):
    """Every variable that names code to load does nothing unless --vhost
    asks for uWSGI's dynamic apps: the app given is the one served."""
    one = site(tmp_path, "site1")
    values = {"UWSGI_SCRIPT": "myapp", "UWSGI_MODULE": "myapp", "UWSGI_CALLABLE": "application",
              "UWSGI_FILE": str(one / "myapp.py"), "UWSGI_CHDIR": str(one), "UWSGI_PYHOME": sys.prefix}
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--wsgi-file", ECHO, "--processes", "1", "--pythonpath", str(one))
    out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1")]
                                   + [(n, values[n]) for n in names]))
    assert b'"method": "GET"' in out and b"site1" not in out  # the echo app answered


def test_an_http_client_cannot_name_an_app_even_with_vhost(serve, tmp_path):
    """Over HTTP the variables are headers (HTTP_UWSGI_SCRIPT, or dropped
    for the '_'): only a front end's uwsgi_param names an app."""
    one = site(tmp_path, "site1")
    s = serve("--vhost", "--wsgi-file", ECHO, "--processes", "1", "--pythonpath", str(one))
    for header in ("Uwsgi-Script", "UWSGI_SCRIPT", "Uwsgi-File"):
        r = requests.get(s.url + "/", headers={header: "myapp" if "Script" in header or "_" in header
                                               else str(one / "myapp.py")})
        assert r.status_code == 200 and "site1" not in r.text
    assert "--vhost: loaded the app" not in s.log()


def test_vhost_sites_in_one_worker_keep_their_own_directory_and_modules(serve, tmp_path):
    """Two sites with the same module names (myapp, helpers, a helper
    imported lazily in the view) and a data file each, served alternately
    by one worker: each runs in its own directory with its own modules, as
    under uWSGI's interpreter per app. (The second site's helpers and
    directory served the first site too.)"""
    for n in (1, 2):
        d = tmp_path / f"s{n}"
        d.mkdir()
        (d / "helpers.py").write_text(f"NAME = 'h{n}'\n")
        (d / "lazyhelper.py").write_text(f"NAME = 'lazy{n}'\n")
        (d / "data.txt").write_text(f"data{n}")
        (d / "myapp.py").write_text(
            "import os\nimport helpers\n"
            "def application(environ, start_response):\n"
            "    import lazyhelper\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    body = ' '.join([helpers.NAME, lazyhelper.NAME, os.path.basename(os.getcwd()), open('data.txt').read()])\n"
            "    return [body.encode()]\n")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")

    def ask(n):
        out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"),
                                        ("UWSGI_SCRIPT", "myapp"), ("UWSGI_CHDIR", str(tmp_path / f"s{n}"))]))
        return out.split(b"\r\n\r\n", 1)[1].decode()
    for n in (2, 1, 2, 1, 1, 2):
        assert ask(n) == f"h{n} lazy{n} s{n} data{n}", n


def test_vhost_a_script_is_its_module_for_the_modules_that_import_it(serve, tmp_path):
    """Flask's common layout: app.py makes the app and imports views, whose
    `from app import app` adds the routes. uWSGI imports UWSGI_SCRIPT as
    `app`; oxgate ran it under a made-up name, so views imported app.py a
    second time and routed an app nobody served: 404 everywhere. Two such
    sites in one worker keep their own."""
    for n in (1, 2):
        d = tmp_path / f"site{n}"
        d.mkdir()
        (d / "app.py").write_text(
            "ROUTES = {}\nimport views\n"
            "def application(environ, start_response):\n"
            "    view = ROUTES.get(environ['PATH_INFO'])\n"
            "    start_response('200 OK' if view else '404 Not Found', [('Content-Type', 'text/plain')])\n"
            "    return [view() if view else b'not found']\n")
        (d / "views.py").write_text(f"from app import ROUTES\nROUTES['/'] = lambda: b'hello from views {n}'\n")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")
    for n in (1, 2, 1, 2):
        assert ask_vhost(up, tmp_path / f"site{n}", "app:application") == ("HTTP/1.1 200 OK", f"hello from views {n}")


def django_site(base, name, venv=None):
    """A Django project `name` under base/dj_name (its wsgi.py sets its
    settings with setdefault, as startproject's does); with `venv`, a
    virtualenv's site-packages of its own, holding Django (linked from the
    test venv's) and a `libx` module naming it."""
    d = base / f"dj_{name}"
    (d / name).mkdir(parents=True)
    (d / name / "__init__.py").write_text("")
    (d / name / "settings.py").write_text(f"SECRET_KEY = 'x'\nROOT_URLCONF = '{name}.urls'\nALLOWED_HOSTS = ['*']\n"
                                          "USE_TZ = True\n")
    (d / name / "urls.py").write_text(
        "from django.http import HttpResponse\nfrom django.urls import path\nfrom django.conf import settings\n"
        "def page(request):\n"
        "    try:\n        import libx\n        lib = libx.X\n    except ImportError:\n        lib = '-'\n"
        f"    return HttpResponse('{name} ' + settings.SETTINGS_MODULE + ' ' + lib)\n"
        "urlpatterns = [path('', page)]\n")
    (d / name / "wsgi.py").write_text(
        f"import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', '{name}.settings')\n"
        "from django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n")
    if venv:
        lib = base / venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        lib.mkdir(parents=True)
        installed = VENV / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        for package in ("django", "asgiref", "sqlparse"):
            (lib / package).symlink_to(installed / package)
        (lib / "libx.py").write_text(f"X = '{venv}'\n")
    return d


def ask_vhost(port, chdir, script, pyhome=None):
    pairs = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "x"),
             ("SERVER_PORT", "80"), ("HTTP_HOST", "x"), ("UWSGI_SCRIPT", script), ("UWSGI_CHDIR", str(chdir))]
    if pyhome:
        pairs.append(("UWSGI_PYHOME", str(pyhome)))
    head, _, body = uwsgi_request(port, packet(pairs)).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body.decode()


def test_vhost_django_sites_sharing_one_django_are_not_mixed_up(serve, tmp_path):
    """Two Django sites in one worker, one Django between them: Django
    keeps one settings module per process, so the second found the first's
    set up and served the first site's pages as its own. It is refused
    now (a 500, and why), and the first site is served as before. uWSGI's
    interpreter per site kept them apart (2.0.31 on Python 3.11 fails
    both with a SystemError)."""
    a, b = django_site(tmp_path, "siteA"), django_site(tmp_path, "siteB")
    up = free_port()
    s = serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1", "--pythonpath",
              str(VENV / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"))
    for _ in range(2):
        assert ask_vhost(up, a, "siteA.wsgi") == ("HTTP/1.1 200 OK", "siteA siteA.settings -")
        status, body = ask_vhost(up, b, "siteB.wsgi")
        assert status.startswith("HTTP/1.1 500") and "siteA" not in body, (status, body)
    s.wait_log("its Django settings 'siteB.settings' cannot be set up in a worker where another --vhost "
               "site's Django runs with 'siteA.settings'")


def test_vhost_sites_with_their_own_virtualenvs_each_get_theirs(serve, tmp_path):
    """Each site's UWSGI_PYHOME is its own: its packages (here Django and
    a `libx`) are its own, as under uWSGI's interpreter per site. The
    first site's virtualenv served every site (its `libx`, its Django set
    up with the first's settings)."""
    a, b = django_site(tmp_path, "siteA", "envA"), django_site(tmp_path, "siteB", "envB")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")
    for _ in range(2):
        assert ask_vhost(up, a, "siteA.wsgi", tmp_path / "envA") == ("HTTP/1.1 200 OK", "siteA siteA.settings envA")
        assert ask_vhost(up, b, "siteB.wsgi", tmp_path / "envB") == ("HTTP/1.1 200 OK", "siteB siteB.settings envB")


def test_vhost_a_virtualenv_site_after_one_on_the_base_install_gets_its_own_packages(serve, tmp_path):
    """Site B's Django comes from the base install (--pythonpath here),
    site A's from its UWSGI_PYHOME. B loads first: A imported B's Django
    (set up for B, so A was refused), as a package another site imported
    stood in for the virtualenv's own. Each gets its own, in either order,
    and a flat Flask-less site sharing A's virtualenv sees A's `libx`."""
    a, b = django_site(tmp_path, "siteA", "envA"), django_site(tmp_path, "siteB")
    c = tmp_path / "plain"
    c.mkdir()
    (c / "plain.py").write_text("import libx\n"
                                "def application(environ, start_response):\n"
                                "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                                "    return [('plain ' + libx.X).encode()]\n")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1", "--pythonpath",
          str(VENV / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"))
    for _ in range(2):
        assert ask_vhost(up, b, "siteB.wsgi") == ("HTTP/1.1 200 OK", "siteB siteB.settings -")
        assert ask_vhost(up, a, "siteA.wsgi", tmp_path / "envA") == ("HTTP/1.1 200 OK", "siteA siteA.settings envA")
        assert ask_vhost(up, c, "plain", tmp_path / "envA") == ("HTTP/1.1 200 OK", "plain envA")


def ask_app(port, chdir, pairs):
    head, _, body = uwsgi_request(port, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"),
                                                ("SERVER_PROTOCOL", "HTTP/1.1"), ("UWSGI_CHDIR", str(chdir))]
                                               + pairs)).partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body.decode()


def test_vhost_sites_sharing_a_virtualenv_in_ones_directory_share_its_modules(serve, tmp_path):
    """Sites A and C name one UWSGI_PYHOME, inside A's directory: leaving
    A for C set aside the virtualenv's modules with A's, and C imported a
    fresh copy at every switch (a counter in it never passed 1)."""
    lib = tmp_path / "A" / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    lib.mkdir(parents=True)
    (lib / "counter.py").write_text("N = [0]\ndef bump():\n    N[0] += 1\n    return N[0]\n")
    for site in ("A", "C"):
        (tmp_path / site).mkdir(exist_ok=True)
        (tmp_path / site / f"app{site}.py").write_text(
            "import counter\n"
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [str(counter.bump()).encode()]\n")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")
    pyhome = ("UWSGI_PYHOME", str(tmp_path / "A" / "venv"))
    got = [ask_app(up, tmp_path / site, [("UWSGI_SCRIPT", f"app{site}"), pyhome])[1] for site in "ACACAC"]
    assert got == ["1", "2", "3", "4", "5", "6"], got


def test_vhost_a_site_whose_directory_holds_the_interpreter_leaves_it_be(serve, tmp_path):
    """A UWSGI_CHDIR that holds the interpreter's own library (/, a home
    with pyenv in it): leaving that site set the standard library aside
    with it, and the next site's `import fractions` failed."""
    (tmp_path / "wide.py").write_text("def application(environ, start_response):\n"
                                      "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                                      "    return [b'wide']\n")
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "narrow.py").write_text("def application(environ, start_response):\n"
                                               "    import fractions\n"
                                               "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
                                               "    return [fractions.__name__.encode()]\n")
    up = free_port()
    serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")
    narrow = [("UWSGI_SCRIPT", "narrow")]
    assert ask_app(up, tmp_path / "s2", narrow) == ("HTTP/1.1 200 OK", "fractions")
    assert ask_app(up, sys.base_prefix, [("UWSGI_FILE", str(tmp_path / "wide.py"))]) == ("HTTP/1.1 200 OK", "wide")
    assert ask_app(up, tmp_path / "s2", narrow) == ("HTTP/1.1 200 OK", "fractions")


def test_vhost_load_error_is_a_500(serve, tmp_path):
    up = free_port()
    s = serve("--socket", f"127.0.0.1:{up}", "--vhost", "--processes", "1")
    out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"),
                                    ("UWSGI_SCRIPT", "no_such_module_here")]))
    assert out.startswith(b"HTTP/1.1 500")
    s.wait_log("cannot load the app for UWSGI_SCRIPT=\"no_such_module_here\"")
    # Naming no app at all (a server block missing its uwsgi_param lines)
    # is a 500 too, as uWSGI's "no python application found"; it was a
    # 404, which a monitor of 5xx answers did not see.
    out = uwsgi_request(up, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1")]))
    assert out.startswith(b"HTTP/1.1 500"), out[:100]
    s.wait_log("--vhost: the request names no app")


@pytest.mark.parametrize("how", ["pythonpath", "app-dir", "gunicorn"])
def test_pythonpath_and_app_dir_come_before_the_working_directory(serve, tmp_path, how):
    """A main.py beside a src/main.py: --pythonpath src (uWSGI's and
    Gunicorn's) and uvicorn's --app-dir src load src/'s, as the three peers
    do; the working directory's won."""
    (tmp_path / "src").mkdir()
    for where, name in ((tmp_path, "top"), (tmp_path / "src", "src")):
        (where / "main.py").write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [b'{name}']\n"
            "async def app(scope, receive, send):\n"
            "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
            f"    await send({{'type': 'http.response.body', 'body': b'{name}'}})\n")
    if how == "pythonpath":
        s = serve("--pythonpath", "src", "--module", "main:application", cwd=tmp_path)
    elif how == "gunicorn":
        s = serve("gunicorn", "-b", "127.0.0.1:{port}", "--pythonpath", "src", "main:application", cwd=tmp_path,
                  socket_arg=False)
    else:
        s = serve("uvicorn", "main:app", "--port", "{port}", "--app-dir", "src", cwd=tmp_path, socket_arg=False)
    assert requests.get(s.url, timeout=10).text == "src"


@pytest.mark.parametrize("how", ["uwsgi", "gunicorn"])
def test_of_two_pythonpaths_with_the_same_module_the_last_named_wins(serve, tmp_path, how):
    """uWSGI (`--pythonpath a --pythonpath b`) and Gunicorn (`--pythonpath
    a,b`) put each entry first on sys.path in turn, so b's module is
    imported; oxgate imported a's."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.py").write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [b'{name}']\n")
    if how == "uwsgi":
        s = serve("--pythonpath", "a", "--pythonpath", "b", "--module", "main:application", cwd=tmp_path)
    else:
        s = serve("gunicorn", "-b", "127.0.0.1:{port}", "--pythonpath", "a,b", "main:application", cwd=tmp_path,
                  socket_arg=False)
    assert requests.get(s.url, timeout=10).text == "b"


@pytest.mark.parametrize("how", ["module", "uvicorn"])
def test_a_factory_named_without_parentheses_is_called_as_uvicorn_calls_it(serve, tmp_path, how):
    """`main:create_app`, a function that takes no arguments, is an app
    factory: uvicorn detects and calls it (with a warning); oxgate does the
    same. It was taken as the app: every request was a 500 ("create_app()
    takes 0 positional arguments but 2 were given")."""
    (tmp_path / "main.py").write_text(
        "def create_app(debug=False):\n"
        "    async def app(scope, receive, send):\n"
        "        await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "        await send({'type': 'http.response.body', 'body': b'made'})\n"
        "    def application(environ, start_response):\n"
        "        start_response('200 OK', [])\n"
        "        return [b'made']\n"
        f"    return {'app' if how == 'uvicorn' else 'application'}\n")
    if how == "module":
        s = serve("--module", "main:create_app", cwd=tmp_path)
    else:
        s = serve("uvicorn", "main:create_app", "--port", "{port}", cwd=tmp_path, socket_arg=False)
    assert requests.get(s.url, timeout=10).text == "made"
    s.wait_log("an app factory, called to make the app")


PRINTING_APP = """
import io, os, sys
def application(environ, start_response):
    print("PRINTED %s %d" % (environ["PATH_INFO"], os.getpid()))
    body = ("%s %s" % (sys.stdout.line_buffering, isinstance(sys.stdout.buffer, io.BufferedWriter))).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""


def test_lines_the_workers_print_never_run_into_each_other(serve, tmp_path):
    """print() from two workers into one --logto file: each line whole.
    Unbuffered (as `python -u`), print()'s text and its newline were two
    writes, and the other worker's line came between ("PRINTED /aPRINTED
    /b" then an empty line); a line-buffered stdout writes each line at
    once, in one write, in the binary and in the pip-installed program
    (the wheel's pass runs this file too)."""
    (tmp_path / "printing.py").write_text(PRINTING_APP)
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", "printing.py", "--processes", "2", "--logto", str(log), cwd=tmp_path,
              env={"PYTHONUNBUFFERED": "1"})
    s.wait_workers(2)
    assert requests.get(s.url + "/first", timeout=10).text == "True True"
    deadline = time.monotonic() + 2

    def hammer(name):
        with requests.Session() as session:
            n = 0
            while time.monotonic() < deadline:
                assert session.get(f"{s.url}/{name}-{n}", timeout=10).ok
                n += 1
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, "abcd"))
    printed = [l for l in log.read_text().splitlines() if "PRINTED" in l]
    assert printed and all(re.fullmatch(r"PRINTED /\S+ \d+", l) for l in printed), \
        [l for l in printed if not re.fullmatch(r"PRINTED /\S+ \d+", l)][:5]


@pytest.mark.parametrize("how", ["segfault", "os._exit"])
def test_an_app_that_kills_every_worker_at_import_stops_the_server(tmp_path, how):
    """A segfault in an extension or an os._exit(5) at import, with the app
    loaded in each worker (uvicorn's way, --lazy-apps): after five workers
    in a row died before any was ready the server stops non-zero, as
    uvicorn exits, instead of restarting workers for ever while it looks
    healthy and serves nothing."""
    kill = "import ctypes; ctypes.string_at(0)" if how == "segfault" else "import os; os._exit(5)"
    (tmp_path / "dying.py").write_text(f"{kill}\ndef app(environ, start_response):\n    return []\n")
    for args in (["uvicorn", "dying:app", "--port", str(free_port()), "--interface", "wsgi"],
                 ["--http-socket", f"127.0.0.1:{free_port()}", "--module", "dying:app", "--lazy-apps"]):
        code, err = run_fail(*args, cwd=tmp_path, timeout=60)
        # (Five at least: not while another worker is still loading.)
        assert code != 0 and re.search(r"\d+ workers in a row died before any was ready: the app cannot be loaded",
                                       err), (args, code, err[-2000:])
