"""Command lines and config files (ini, yaml, json, xml, environment) read as uWSGI reads them; usage errors."""
# Golden tests with --print-config and --check-config, and real servers started from files.
import json
import os
import platform
import subprocess

import pytest
import requests

from helpers import APPS, BIN, ROOT, VENV, run_fail, wait_for


def run(*args, env=None, cwd=None):
    full = dict(os.environ)
    for k in list(full):
        if k.startswith("UWSGI_") or (k.startswith("OXGATE_") and k != "OXGATE_BIN"):
            del full[k]
    full.update(env or {})
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, env=full, cwd=cwd or ROOT)


def options(out):
    """print-config output as a list of (name, value) in order."""
    pairs = []
    for line in out.splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        name, rest = line.split(" = ", 1)
        pairs.append((name, rest.split("    # ")[0]))
    return pairs


def origins(out):
    return {line.split(" = ", 1)[0]: line.split("    # ")[1] for line in out.splitlines()
            if " = " in line and "    # " in line and not line.startswith("#")}


INI = """[uwsgi]
# a comment
; another
http-socket = 127.0.0.1:8000
chdir = /srv/app
module = app:app
master = true
processes = 4 # four workers
threads = true
vacuum
env = A=1
env = B=2
harakiri = 30
"""


def test_ini_golden(tmp_path):
    f = tmp_path / "app.ini"
    f.write_text(INI)
    p = run("--ini", str(f), "--print-config")
    assert p.returncode == 0, p.stderr
    # in the option table's order; values as written (leniency applies later)
    assert options(p.stdout) == [
        ("http-socket", "127.0.0.1:8000"), ("module", "app:app"), ("chdir", "/srv/app"),
        ("env", "A=1"), ("env", "B=2"), ("threads", "true"), ("master", "true"),
        ("processes", "4 # four workers"), ("harakiri", "30"), ("vacuum", ""),
        ("print-config", "true"),
    ]
    assert origins(p.stdout)["processes"] == f"{f}:8"
    # the same file as a lone argument, picked by its extension
    assert options(run(str(f), "--print-config").stdout) == options(p.stdout)


@pytest.mark.parametrize("name,text", [
    ("app.yaml", "uwsgi:\n  http-socket: 127.0.0.1:8000\n  module: app:app\n  processes: 4\n"
                 "  env:\n    - A=1\n    - B=2\n  master: true\n"),
    ("app.json", json.dumps({"uwsgi": {"http-socket": "127.0.0.1:8000", "module": "app:app", "processes": 4,
                                       "env": ["A=1", "B=2"], "master": True}})),
    ("app.xml", "<uwsgi><http-socket>127.0.0.1:8000</http-socket><module>app:app</module>"
                "<processes>4</processes><env>A=1</env><env>B=2</env><master/></uwsgi>"),
])
def test_other_formats_golden(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    flag = {"yaml": "--yaml", "json": "--json", "xml": "--xml"}[name.split(".")[1]]
    for args in ([flag, str(f)], [str(f)]):
        p = run(*args, "--print-config")
        assert p.returncode == 0, p.stderr
        got = dict(options(p.stdout))
        assert got["http-socket"] == "127.0.0.1:8000" and got["module"] == "app:app"
        assert got["processes"] == "4"
        assert [v for k, v in options(p.stdout) if k == "env"] == ["A=1", "B=2"]
        assert got["master"] in ("true", "")


def test_precedence_and_environment(tmp_path):
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nprocesses = 4\nthreads = 2\n")
    p = run("--processes", "2", "--ini", str(f), "--threads", "8", "--http", ":1", "-w", "m",
            "--check-config", "--print-config",
            env={"UWSGI_PROCESSES": "16", "OXGATE_HARAKIRI": "5", "UWSGI_MAX_REQUESTS": "100"})
    assert p.returncode == 0, p.stderr
    o = options(p.stdout)
    # the environment comes first, the file is expanded in place
    assert [v for k, v in o if k == "processes"] == ["16", "2", "4"]
    assert [v for k, v in o if k == "threads"] == ["2", "8"]
    org = origins(p.stdout)
    assert org["harakiri"] == "environment $OXGATE_HARAKIRI"
    assert org["max-requests"] == "environment $UWSGI_MAX_REQUESTS"
    # A file named in the environment comes before the environment's own
    # options, which override it; and it makes the command uWSGI's even
    # beside a gunicorn.conf.py.
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = m\nharakiri = 30\n")
    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\n")
    p = run("--print-config", env={"UWSGI_INI": str(f), "UWSGI_HARAKIRI": "99"}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "read as: uWSGI's options" in p.stdout
    assert [v for k, v in options(p.stdout) if k == "harakiri"] == ["30", "99"]
    # A command that is Gunicorn's by its own words stays Gunicorn's.
    (tmp_path / "g.py").write_text("workers = 3\n")
    p = run("-c", "g.py", "app:app", "--print-config", env={"UWSGI_INI": str(f)}, cwd=tmp_path)
    assert p.returncode == 0 and "Gunicorn" in p.stdout, p.stdout + p.stderr
    # The file's if-opt sees the environment's options.
    f.write_text("[uwsgi]\nmodule = m\nif-not-opt = http-socket\nhttp-socket = :8000\nendif =\n")
    p = run("--print-config", env={"UWSGI_INI": str(f), "UWSGI_HTTP_SOCKET": ":9000"}, cwd=tmp_path)
    assert [v for k, v in options(p.stdout) if k == "http-socket"] == [":9000"], p.stdout


def test_an_environment_variable_that_is_not_utf8_is_no_crash(tmp_path):
    """Any variable, not only UWSGI_*: oxgate panicked at every start
    (std::env::vars), --version too; uWSGI runs."""
    env = dict(os.environb)
    env[b"SOME_LATIN1"] = b"caf\xe9"
    env[b"UWSGI_ENV"] = b"GREETING=h\xe9llo"
    p = subprocess.run([BIN, "--version"], env=env, capture_output=True, timeout=20)
    assert p.returncode == 0 and b"panicked" not in p.stderr, p.stderr
    p = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--wsgi-file", str(APPS / "procs.py"), "--check-config"],
                       env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_sections_includes_placeholders_logic(tmp_path):
    (tmp_path / "base.ini").write_text("[uwsgi]\nmaster = true\nsocket-timeout = 10\n")
    f = tmp_path / "app.ini"
    f.write_text(
        "[uwsgi]\n"
        "project = demo\n"
        "base = /srv/%(project)\n"
        "chdir = %(base)\n"
        "ini = base.ini\n"
        "ini = :prod\n"
        "pidfile = %d%n.pid\n"
        "http-socket = :$(OXGATE_TEST_PORT)\n"
        "processes = %(%k * 2)\n"
        "if-env = OXGATE_TEST_PORT\n"
        "env = PORT=%(_)\n"
        "endif =\n"
        "if-not-env = OXGATE_TEST_PORT\n"
        "env = NOPE=1\n"
        "endif =\n"
        "if-exists = %d\n"
        "env = DIR=yes\n"
        "endif =\n"
        "for = a b\n"
        "pythonpath = %(base)/%(_)\n"
        "endfor =\n"
        "log-format = %(addr) %(method) %(uri)\n"
        "logdate = %%Y-%%m-%%d\n"
        "[prod]\n"
        "harakiri = 60\n"
    )
    p = run(str(f), "--print-config", env={"OXGATE_TEST_PORT": "9191"})
    assert p.returncode == 0, p.stderr
    o = options(p.stdout)
    got = dict(o)
    assert got["chdir"] == "/srv/demo"
    assert got["master"] == "true" and got["socket-timeout"] == "10"
    assert got["harakiri"] == "60"
    assert got["pidfile"] == f"{tmp_path}/app.pid"
    assert got["http-socket"] == ":9191"
    assert got["processes"] == str(2 * os.cpu_count())
    assert [v for k, v in o if k == "env"] == ["PORT=9191", "DIR=yes"]
    assert [v for k, v in o if k == "pythonpath"] == ["/srv/demo/a", "/srv/demo/b"]
    assert "# base = /srv/demo" in p.stdout  # a user placeholder, not an option
    assert "project" not in p.stderr  # user placeholders are not warned about


def test_globs_are_glob_3s_as_uwsgi_calls_it(serve, tmp_path):
    """`pythonpath = DIR/*` is each directory it matches (it was the
    pattern itself, so the imports failed), and `for-glob` goes over what
    glob(3) matches: no dotfiles, directories with their slash, wildcards
    in a directory and brackets (it matched the last part alone, `*` and
    `?`)."""
    libs = tmp_path / "libs"
    for name in ("l1", "l2"):
        (libs / name).mkdir(parents=True)
        (libs / name / f"mod_{name}.py").write_text(f"WHO = {name!r}\n")
    (libs / ".hidden").write_text("")
    (tmp_path / "app.py").write_text(
        "import mod_l1, mod_l2\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [(mod_l1.WHO + mod_l2.WHO).encode()]\n")
    ini = tmp_path / "glob.ini"
    ini.write_text(f"[uwsgi]\npythonpath = {libs}/*\nwsgi-file = {tmp_path / 'app.py'}\n"
                   f"for-glob = {libs}/*\nenv = SEEN=%(_)\nendfor =\n"
                   f"for-glob = {libs}/*/mod_l[12].py\nenv = MOD=%(_)\nendfor =\n")
    p = run(str(ini), "--print-config")
    assert p.returncode == 0, p.stderr
    envs = [v for k, v in options(p.stdout) if k == "env"]
    assert envs == [f"SEEN={libs}/l1/", f"SEEN={libs}/l2/", f"MOD={libs}/l1/mod_l1.py", f"MOD={libs}/l2/mod_l2.py"]
    s = serve("--ini", str(ini))
    assert requests.get(s.url + "/", timeout=10).text == "l1l2"


def test_a_module_is_served_over_a_wsgi_file_as_uwsgi_serves_it(serve, tmp_path):
    """uWSGI loads `module` first and skips a second app for the same
    mountpoint, whichever line comes first; oxgate served the last of the
    two, silently."""
    for name in ("by_module", "by_file"):
        (tmp_path / f"{name}.py").write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            f"    return [b'{name}']\n")
    ini = tmp_path / "both.ini"
    ini.write_text(f"[uwsgi]\nchdir = {tmp_path}\nmodule = by_module\nwsgi-file = {tmp_path / 'by_file.py'}\n")
    s = serve("--ini", str(ini))
    assert requests.get(s.url + "/", timeout=10).text == "by_module"
    assert "--wsgi-file" in s.log() and "is not served: --module by_module" in s.log()


@pytest.mark.parametrize("program", ["oxgate", "uwsgi"])
def test_env_with_a_name_alone_and_unenv_unset_it_as_in_uwsgi(serve, tmp_path, program):
    """`env = NAME` (uWSGI's putenv of a bare name) and `unenv = NAME` take
    a variable the server was started with away from the app. (oxgate
    refused the first and passed over the second.)"""
    (tmp_path / "envapp.py").write_text(
        "import os\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [repr([os.environ.get(k) for k in ('T_NOEQ', 'T_GONE', 'T_KEPT', 'T_SET')]).encode()]\n")
    ini = tmp_path / "env.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {tmp_path / 'envapp.py'}\nenv = T_NOEQ\nunenv = T_GONE\nenv = T_SET=1\n"
                   "master = true\ndie-on-term = true\n")
    command = (BIN,) if program == "oxgate" else (str(VENV / "bin" / "uwsgi"),)
    s = serve("--ini", str(ini), program=command, env={"T_NOEQ": "x", "T_GONE": "y", "T_KEPT": "z"})
    assert requests.get(s.url + "/", timeout=10).text == "[None, None, 'z', '1']"


def test_a_file_given_alone_is_read_after_the_options_as_uwsgis_getopt_reads_it(tmp_path):
    """`uwsgi app.ini --processes 5` runs the file's processes: getopt moves
    the bare argument after the options. `--ini app.ini` is read where it
    stands, in both."""
    ini = tmp_path / "a2.ini"
    ini.write_text("[uwsgi]\nprocesses = 3\nmodule = m\nhttp-socket = :1\n")

    def processes(*args):
        p = run(*args, "--print-config")
        assert p.returncode == 0, p.stderr
        return [v for k, v in options(p.stdout) if k == "processes"][-1]
    assert processes(str(ini), "--processes", "5") == "3"
    assert processes("--ini", str(ini), "--processes", "5") == "5"
    # A chdir that is not there makes uWSGI stop after showing its config
    # (as root it would bind port 1 and serve on).
    uwsgi = subprocess.run([str(VENV / "bin" / "uwsgi"), str(ini), "--processes", "5", "--show-config",
                            "--chdir", str(tmp_path / "missing")],
                           capture_output=True, text=True, timeout=20)
    shown = [line for line in (uwsgi.stdout + uwsgi.stderr).splitlines() if line.startswith("processes = ")]
    assert shown[-1] == "processes = 3", uwsgi.stderr


def test_the_emperor_stops_the_start_with_what_to_do_instead(tmp_path):
    """It was warned about as having no effect, then the start failed for
    want of a socket: a systemd unit running `--emperor` restarted in a
    loop with no hint why."""
    p = run("--emperor", "/etc/uwsgi/vassals", "--check-config")
    assert p.returncode == 2
    assert "uWSGI's emperor ('emperor') is not in oxgate" in p.stderr and "oxgate@.service" in p.stderr
    ini = tmp_path / "emperor.ini"
    ini.write_text("[uwsgi]\nemperor = /etc/uwsgi/vassals\nemperor-tyrant = true\n")
    p = run("--ini", str(ini), "--check-config")
    assert p.returncode == 2 and f"{ini}:2: uWSGI's emperor" in p.stderr


def test_a_uwsgi_socket_oxgate_lacks_stops_the_start(tmp_path):
    """uWSGI's --https2 and --http-to-https were warned of as having no
    effect, and the server started without the HTTPS port or its
    redirect: refused now, saying what to use."""
    p = run("--http-socket", ":0", "--https2", "addr=:8443,cert=c.pem,key=k.pem", "--check-config")
    assert p.returncode == 2 and "'https2' opens a socket oxgate does not have" in p.stderr, p.stderr
    assert "--https-socket" in p.stderr
    ini = tmp_path / "redirect.ini"
    ini.write_text("[uwsgi]\nhttp-socket = :0\nhttp-to-https = :8080\n")
    p = run("--ini", str(ini), "--check-config")
    assert p.returncode == 2 and f"{ini}:3: uWSGI's 'http-to-https'" in p.stderr, p.stderr


def test_late_placeholders_and_for_blocks_read_as_uwsgi_reads_them(tmp_path):
    """A value that takes in another's, itself waiting for a name set
    later, and arithmetic on a name set later, resolve once all is read
    (they were left as written, silently); a `for` goes line by line, each
    line over every value (block by block, it changed sys.path's order).
    The same file through uWSGI's --show-config."""
    ini = tmp_path / "late.ini"
    ini.write_text("[uwsgi]\nchdir = %(base)/app\npythonpath = %(chdir)\ntouch-reload = %(chdir)/reload\n"
                   "env = m=%(processes * 2)\nprocesses = 4\nbase = /srv\n"
                   "for = one two\npythonpath = /srv/%(_)/src\npythonpath = /srv/%(_)/lib\nendfor =\n"
                   "module = m\nhttp-socket = :1\n")
    p = run(str(ini), "--print-config")
    assert p.returncode == 0, p.stderr
    ours = [(k, v) for k, v in options(p.stdout) if k in ("pythonpath", "touch-reload", "env")]
    uwsgi = subprocess.run([str(VENV / "bin" / "uwsgi"), "--ini", str(ini), "--show-config"],
                           capture_output=True, text=True, timeout=20)
    theirs = [tuple(line.split(" = ", 1)) for line in (uwsgi.stdout + uwsgi.stderr).splitlines()
              if line.split(" = ", 1)[0] in ("pythonpath", "touch-reload", "env")]
    # (--print-config groups each option's values; their order is kept.)
    def by_key(pairs):
        return {k: [v for key, v in pairs if key == k] for k in ("pythonpath", "touch-reload", "env")}
    assert by_key(ours) == by_key(theirs) == {
        "pythonpath": ["/srv/app", "/srv/one/src", "/srv/two/src", "/srv/one/lib", "/srv/two/lib"],
        "touch-reload": ["/srv/app/reload"], "env": ["m=8"]}, (ours, theirs)


def test_unknown_keys_warn_and_strict_refuses(tmp_path):
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = m\nvaccum = true\ncheaper = 2\nmy_var = x\n")
    p = run(str(f), "--check-config")
    assert p.returncode == 0
    assert f"{f}:4: unknown option 'vaccum' (did you mean vacuum?)" in p.stderr
    assert f"{f}:5: uWSGI option 'cheaper' is not implemented in oxgate yet" in p.stderr
    assert "my_var" not in p.stderr
    p = run(str(f), "--check-config", "--strict")
    assert p.returncode == 2
    assert "my_var" in p.stderr and "vaccum" in p.stderr
    # The refusal says it is --strict's (it said "it has no effect", then
    # the start failed).
    assert f"{f}:5: uWSGI option 'cheaper' is not implemented in oxgate yet (--strict refuses it" in p.stderr
    # On the command line as in a file: a warning, its value (if any) taken
    # with it; a word that is an option is not taken for its value.
    p = run("--http-socket", ":1", "--cheaper", "2", "--module", "m", "--thunder-lock", "--check-config")
    assert p.returncode == 0, p.stderr
    assert "command line: uWSGI option 'cheaper' is not implemented in oxgate yet" in p.stderr
    # What oxgate always does is no warning: every TCP connection has
    # TCP_NODELAY (it was said to be unimplemented).
    p = run("--http-socket", ":1", "--module", "m", "--tcp-nodelay", "--check-config")
    assert p.returncode == 0 and "tcp-nodelay" not in p.stderr, p.stderr
    p = run("--http-socket", ":1", "--cheaper=2", "--module", "m", "--strict", "--check-config")
    assert p.returncode == 2 and "'cheaper'" in p.stderr
    p = run("--http-socket", ":1", "--module", "m", "--no-such-thing", "--check-config")
    assert p.returncode == 2 and "unknown option --no-such-thing" in p.stderr
    # Such an option's value is taken as uWSGI's getopt takes it (its option
    # tables): a flag never takes the next word (here the app), a required
    # value always does, an optional one only as --name=value.
    p = run("--http-socket", ":1", "--honour-stdin", "app:app", "--spooler", "my dir", "--cheap",
            "--http-keepalive", "--print-config")
    assert p.returncode == 0, p.stderr
    shown = [line.split("    #")[0] for line in p.stdout.splitlines() if not line.startswith("#")]
    assert "module = app:app" in shown, p.stdout
    for name in ("honour-stdin", "spooler", "cheap"):
        assert f"command line: uWSGI option '{name}' is not implemented in oxgate yet" in p.stderr, name
    # (Keep-alive is always on: uWSGI's option for it is taken in silence.)
    assert "http-keepalive" not in p.stderr, p.stderr


def test_uwsgi_2_logic_blocks(tmp_path):
    """uWSGI 2.0's spellings: end-if, end-for, if-directory, if-hostname
    and for-times."""
    import socket
    f = tmp_path / "app.ini"
    f.write_text(f"[uwsgi]\nhttp-socket = :1\nmodule = m\nfor-times = 3\nenv = N%(_)=x\nend-for\n"
                 f"if-hostname = {socket.gethostname()}\nenv = HOST=yes\nend-if\n"
                 f"if-not-hostname = {socket.gethostname()}\nenv = HOST=no\nend-if\n"
                 f"if-directory = {tmp_path}\nenv = DIR=yes\nendif\n")
    p = run(str(f), "--print-config")
    assert p.returncode == 0, p.stderr
    assert [v for k, v in options(p.stdout) if k == "env"] == ["N1=x", "N2=x", "N3=x", "HOST=yes", "DIR=yes"]


def test_errors_name_the_file_and_line(tmp_path):
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nhttp-socket = :1\nstrict = true\nmasterr = 1\n")
    p = run(str(f))
    assert p.returncode == 2 and f"{f}:4: unknown option 'masterr'" in p.stderr
    # Refused, not "kept as a placeholder" as a warning says it.
    assert "placeholder" not in p.stderr and "--strict refuses unknown keys" in p.stderr, p.stderr
    p = run("--ini", str(tmp_path / "missing.ini"))
    assert p.returncode == 2 and "cannot read config file" in p.stderr
    # A file without the section is warned of and read as empty, as uWSGI
    # reads it (`--ini-paste development.ini` with the options on the
    # command line); it stopped the start.
    f.write_text("[other]\nx=1\n")
    p = run(str(f), "--http-socket", ":1", "--module", "m", "--print-config")
    assert p.returncode == 0 and "no [uwsgi] section (or [oxgate]): nothing is read from it" in p.stderr, p.stderr
    p = run("--ini", f"{f}:nosuch", "--http-socket", ":1", "--module", "m", "--print-config")
    assert p.returncode == 0 and "no [nosuch] section: nothing is read from it" in p.stderr, p.stderr
    f.write_text("[uwsgi]\nif-env = HOME\nmaster = true\n")
    p = run(str(f))
    assert p.returncode == 2 and "has no endif" in p.stderr
    p = run("--check-config", "--http", ":1")
    assert p.returncode == 2 and "no application given" in p.stderr


def test_files_that_only_uwsgi_reads(tmp_path):
    """What real files write and uWSGI accepts: YAML its line reader takes,
    any switch value but false/off/no/0 as on, and uWSGI's --http-timeout."""
    y = tmp_path / "app.yaml"
    y.write_text("uwsgi:\n  http-socket: 127.0.0.1:1\n  chdir: %(base)\n"
                 "  log-format: UWSGI: %(method) %(uri)\n  module: app:application\n")
    p = run(str(y), "--print-config")
    assert p.returncode == 0, p.stderr
    assert f"{y}: not valid YAML" in p.stderr and "read line by line, as uWSGI reads it" in p.stderr
    got = options(p.stdout)
    assert ("chdir", "%(base)") in got and ("log-format", "UWSGI: %(method) %(uri)") in got
    y.write_text("uwsgi:\n  chdir: %(base)\n  not a setting\n")
    p = run(str(y))
    assert p.returncode == 2 and "invalid YAML" in p.stderr and "line 3" in p.stderr

    f = tmp_path / "app.ini"
    # With vhost on, no app is needed; off, one is.
    for value, usable in [("some.host.name", True), ("Yes", True), ("OFF", False), ("0", False)]:
        f.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:1\nvhost = {value}\nstrict = true\nhttp-timeout = 7\n")
        p = run(str(f), "--check-config")
        assert (p.returncode == 0) == usable, (value, p.stderr)
        assert usable or "no application given" in p.stderr
    assert ("socket-timeout", "7") in options(run(str(f), "--print-config").stdout)
    # Options real files name whose job oxgate always does: accepted under strict.
    f.write_text("[uwsgi]\nstrict = true\nhttp-socket = 127.0.0.1:1\nmodule = app\nhttp-websockets = true\n"
                 "close-on-exec = 1\nreaper = true\nauto-procname = true\nprocname-prefix-spaced = app\n"
                 "offload-threads = 2\nimport = tasks\n")
    p = run(str(f), "--check-config")
    assert p.returncode == 0, p.stderr


def test_placeholders_file_reads_and_includes_as_uwsgi_reads_them(tmp_path):
    """A placeholder used before the line that sets it takes its first
    value, as uWSGI resolves them once every file is read; @(...) expands
    %d and $(VAR) in its path, and an unreadable file is an error, not an
    empty value; a byte that is not UTF-8 (a Latin-1 comment) does not
    make the file unreadable; a relative include is found from the current
    directory first; %d is the real directory (no "..")."""
    (tmp_path / "secret.txt").write_text("topsecret\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (tmp_path / "extra.ini").write_text("[uwsgi]\nprocesses = 3\n")
    f = conf / "app.ini"
    f.write_bytes(b"[uwsgi]\nhttp-socket = 127.0.0.1:1\nmodule = app\nchdir = %(base)/src\nbase = /srv\n"
                  b"base = /other\nenv = A=@(%d../secret.txt)\nenv = B=@($(SECRETS)/secret.txt)\n"
                  b"# f\xfcr den Betrieb\nini = extra.ini\nlogto = /var/log/%c.log\n"
                  b"log-format = %(addr) %(host) %(uri)\nhost = example.org\nenv = C=@(exec://echo %d)\n")
    p = run("--ini", "conf/../conf/app.ini", "--print-config", env={"SECRETS": str(tmp_path)}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    got = options(p.stdout)
    assert ("chdir", "/srv/src") in got
    assert ("env", "A=topsecret") in got and ("env", "B=topsecret") in got
    assert ("processes", "3") in got
    assert ("logto", "/var/log/conf.log") in got
    # A request-log format keeps its variables; a command its own words.
    assert ("log-format", "%(addr) %(host) %(uri)") in got
    assert ("env", "C=%d") in got
    (conf / "app.ini").write_text("[uwsgi]\nhttp-socket = 127.0.0.1:1\nmodule = app\nenv = A=@(%dmissing.txt)\n")
    p = run("--ini", str(conf / "app.ini"), "--check-config")
    assert p.returncode == 2 and f"app.ini:4: @({conf}/missing.txt): cannot read" in p.stderr


def test_unrendered_template_placeholders_are_named(tmp_path):
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = {{ project_name }}.wsgi:application\n")
    p = run(str(f), "--check-config")
    assert p.returncode == 2
    assert f"{f}:3: module" in p.stderr and "template placeholder {{ project_name }}" in p.stderr


def test_usage_errors():
    code, err = run_fail("--wsgi-fil", "x.py")
    assert code == 2 and "did you mean --wsgi-file" in err
    code, err = run_fail("--wsgi-file", "x.py")
    assert code == 2 and "--http-socket" in err
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--http-socket" in p.stdout and "--threads" in p.stdout
    p = subprocess.run([BIN, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("oxgate ")
    # The Python it runs (the test venv is made from the interpreter oxgate
    # is built against); test_pip_install checks what follows.
    assert f"\nPython {platform.python_version()} (" in p.stdout
    assert "ASGI 3" in p.stdout and "FastCGI" in p.stdout


SEED_INI_000 = """[uwsgi]
socket = 127.0.0.1:9005
chdir = /Users/suoning/python_project/trunk/
wsgi-file = main.py
processes = 4
stats = 127.0.0.1:9000
daemonize = /tmp/uwsgiServer.log
pidfile = /tmp/uwsgi.pid
vacuum = true
log-maxsize = 50000000
disable-logging = true
callable = app
"""

SEED_INI_002 = """[uwsgi]
; 项目路径
chdir=/app
; wsgi对象
module=demo.wsgi:application
; 主进程
master=True
; 保存进程号
pidfile=/tmp/uwsgi/demo-master.pid
; 保存日志
daemonize=/tmp/uwsgi/demo.log
; 使用http协议提供服务,测试时使用
; http=127.0.0.1:3030
; 使用socket协议,配合nginx使用,与http端口不能重复
socket=127.0.0.1:3031
"""


@pytest.mark.parametrize("text,expect", [
    (SEED_INI_000, {"socket": "127.0.0.1:9005", "wsgi-file": "main.py", "processes": "4", "callable": "app",
                    "daemonize": "/tmp/uwsgiServer.log", "pidfile": "/tmp/uwsgi.pid", "vacuum": "true"}),
    (SEED_INI_002, {"socket": "127.0.0.1:3031", "module": "demo.wsgi:application", "master": "True",
                    "chdir": "/app", "daemonize": "/tmp/uwsgi/demo.log"}),
])
def test_seed_config_files(tmp_path, text, expect):
    f = tmp_path / "uwsgi.ini"
    f.write_text(text)
    p = run("--ini", str(f), "--print-config")
    assert p.returncode == 0, p.stderr
    got = dict(options(p.stdout))
    for k, v in expect.items():
        assert got[k] == v, (k, got)
    # they bind with the uwsgi protocol (nginx uwsgi_pass), which oxgate
    # serves (test_web_servers.py runs seed 000 behind nginx)
    p = run("--ini", str(f), "--check-config")
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("cmd,expect", [
    ("-s :9090 -w myapp", {"socket": ":9090", "module": "myapp"}),
    ("-s :9090 -w myapp -M -p 4 -t 30 --limit-as 128 -R 10000 -d uwsgi.log",
     {"socket": ":9090", "module": "myapp", "master": "true", "processes": "4", "harakiri": "30",
      "limit-as": "128", "max-requests": "10000", "daemonize": "uwsgi.log"}),
    ("--http 127.0.0.1:3031 --file demo/wsgi.py", {"http-socket": "127.0.0.1:3031", "wsgi-file": "demo/wsgi.py"}),
    ("--reload path/uwsgi.pid", {"reload": "path/uwsgi.pid"}),
    ("--stop path/uwsgi.pid", {"stop": "path/uwsgi.pid"}),
    ("-w 4 demo:app", {"module": "demo:app"}),
])
def test_seed_command_lines(cmd, expect):
    p = run(*cmd.split(), "--print-config")
    assert p.returncode == 0, p.stderr
    got = dict(options(p.stdout))
    for k, v in expect.items():
        assert got[k] == v, (k, got)


def test_vhost_seed_command_line_needs_no_app():
    """shared/seeds/003 starts uWSGI with --vhost and no app (tested serving
    in test_app_loading.py); here only that the line is understood."""
    p = run(*"-s :9090 -M -p 4 -t 30 --limit-as 128 -R 10000 -d uwsgi.log --vhost".split(), "--print-config")
    assert p.returncode == 0, p.stderr
    got = dict(options(p.stdout))
    assert got["vhost"] == "true" and got["socket"] == ":9090" and "not implemented" not in p.stderr


def test_ini_file_starts_and_serves(tmp_path):
    import socket as so
    import time
    sock = so.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    f = tmp_path / "app.ini"
    f.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:$(APP_PORT)\nchdir = {APPS}\nmodule = procs\n"
                 "master = true\nprocesses = 2\nvacuum = true\ndie-on-term = true\nenable-threads = true\n"
                 "thunder-lock = true\nsingle-interpreter = true\nplugins = python3\n")
    env = dict(os.environ, APP_PORT=str(port))
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen([BIN, str(f)], env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        r = None
        for _ in range(300):
            try:
                # Listening comes before the app is loaded: a slow first answer is no failure.
                r = requests.get(f"http://127.0.0.1:{port}/", timeout=20)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert r is not None and r.status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "warning" not in err, err  # every key there is understood


def test_gunicorn_style(serve):
    p = run("-w", "4", "demo:app", "-b", ":1", "--print-config")
    assert p.returncode == 0
    # Shown as what it is read as: the worker count, not a module "4".
    shown = [line.split("    #")[0] for line in p.stdout.splitlines() if not line.startswith("#")]
    assert "processes = 4" in shown and "module = demo:app" in shown and "module = 4" not in shown, p.stdout
    s = serve("-w", "2", "procs:application", "--chdir", str(APPS))
    assert len(s.wait_workers(2)) == 2
    assert requests.get(s.url).status_code == 200


def test_bind_is_read_as_gunicorn_reads_it(serve, tmp_path):
    """`oxgate -b unix:PATH app:app`, as the docs show Gunicorn users: the
    path, not a file named "unix:PATH" in a missing directory (it failed to
    start), and `tcp://HOST:PORT`."""
    sock = tmp_path / "app.sock"
    serve("-b", f"unix:{sock}", "procs:application", "--chdir", str(APPS), socket_arg=False, wait=False)
    wait_for(sock.exists, what="the unix socket")
    out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://x/"], capture_output=True, text=True,
                         timeout=20).stdout
    assert out.endswith(" v0"), out
    s = serve("-b", "tcp://127.0.0.1:{port}", "procs:application", "--chdir", str(APPS), socket_arg=False)
    assert requests.get(s.url, timeout=10).text.endswith(" v0")


def test_seed_http_command_serves(tmp_path, serve):
    # seed 002: uwsgi --http 127.0.0.1:3031 --file demo/wsgi.py (with its app)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    data = b'Hello, World!\\n'\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(data)))])\n"
        "    return iter([data])\n")
    s = serve("--http", "127.0.0.1:{port}", "--file", "demo/wsgi.py", socket_arg=False, cwd=tmp_path)
    assert requests.get(s.url).text == "Hello, World!\n"


def test_every_uwsgi_option_is_recognised_and_routing_is_refused(tmp_path):
    """A uWSGI option oxgate lacks is named as such (not kept as a silent
    placeholder); its internal routing, whose rules guard URLs, stops the
    start; the aliases uWSGI has for oxgate's options are read."""
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nsocket = /tmp/x.sock\nwsgi-file = app.py\nchmod = 664\npy-auto-reload = 2\n"
                 "harakiri-graceful-timeout = 5\nmy_own_name = 1\n")
    p = run(str(f), "--print-config")
    assert p.returncode == 0, p.stderr
    got = options(p.stdout)
    assert ("chmod-socket", "664") in got and ("py-autoreload", "2") in got
    assert "uWSGI option 'harakiri-graceful-timeout' is not implemented" in p.stderr
    assert "my_own_name" not in p.stderr
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = m\nroute-uri = ^/admin break:403\n")
    p = run(str(f), "--check-config")
    assert p.returncode == 2 and "internal routing ('route-uri')" in p.stderr
    # So does its confinement: served without it, the app ran unconfined.
    for line in ("chroot = /srv/jail", "cap = setgid,setuid", "unshare = net", "namespace = /ns"):
        f.write_text(f"[uwsgi]\nhttp-socket = :1\nmodule = m\n{line}\n")
        p = run(str(f), "--check-config")
        key = line.split(" = ")[0]
        assert p.returncode == 2 and f"confinement option '{key}' is not implemented" in p.stderr, p.stderr
    # A uWSGI option on the command line, too.
    p = run("--http-socket", ":1", "--module", "m", "--worker-exec=x", "--check-config")
    assert p.returncode == 0 and "'worker-exec' is not implemented" in p.stderr


def test_chmod_socket_takes_its_mode_only_when_one_follows():
    for args, mode in [(["--chmod-socket", "--master"], "true"), (["-C", "660"], "660"), (["--chmod-socket=644"], "644")]:
        p = run("-s", "/tmp/x.sock", *args, "-w", "app", "--print-config")
        got = options(p.stdout)
        assert ("chmod-socket", mode) in got and ("module", "app") in got, (args, p.stderr)
    assert ("master", "true") in options(run("-s", "/tmp/x.sock", "--chmod-socket", "--master", "-w", "app",
                                             "--print-config").stdout)


def test_uwsgi_environment_variables_are_placeholders_and_command_lines_are_expanded(tmp_path):
    f = tmp_path / "q.ini"
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = m\npidfile = /run/%n.%(foo).%(bar).pid\n")
    p = run(str(f), "--print-config", env={"UWSGI_FOO": "hoge", "UWSGI_BAR": "fuga", "UWSGI_CHEAPER": "2"})
    assert ("pidfile", "/run/q.hoge.fuga.pid") in options(p.stdout), p.stdout
    assert "'cheaper' is not implemented" in p.stderr
    # $(ENV), %(placeholder) on the command line, as uWSGI expands them
    # after reading it; a log format's own %(...) are left.
    p = run("--http-socket", "127.0.0.1:$(PORT)", "--set-ph", "x=9", "--module", "m%(x)",
            "--log-format", "%(addr) %(uri)", "--print-config", env={"PORT": "8123"})
    got = options(p.stdout)
    assert ("http-socket", "127.0.0.1:8123") in got and ("module", "m9") in got, p.stderr
    assert ("log-format", "%(addr) %(uri)") in got


def test_inherit_config_and_set_read_as_in_uwsgi(tmp_path):
    (tmp_path / "base.ini").write_text("[uwsgi]\nhttp-socket = :1\nmodule = base:app\nprocesses = 3\n")
    child = tmp_path / "child.ini"
    child.write_text("[uwsgi]\ninherit = base.ini\nprocesses = 5\nset = harakiri=33\n")
    got = options(run(str(child), "--print-config").stdout)
    assert ("module", "base:app") in got and ("harakiri", "33") in got
    # uWSGI reads an inherited file after all the rest (after the command
    # line too): its processes = 3 has the last word (real uWSGI 2.0.31
    # spawns 3 workers for this child.ini).
    assert [v for k, v in got if k == "processes"][-1] == "3"
    got = options(run(str(child), "--processes", "7", "--print-config").stdout)
    assert [v for k, v in got if k == "processes"][-1] == "3"
    # Two files that inherit each other: an error, not a start that hangs.
    (tmp_path / "a.ini").write_text("[uwsgi]\ninherit = b.ini\n")
    (tmp_path / "b.ini").write_text("[uwsgi]\ninherit = a.ini\n")
    p = run(str(tmp_path / "a.ini"), "--check-config")
    assert p.returncode == 2 and "inherit each other too deeply" in p.stderr, p.stderr
    p = run("--config", str(tmp_path / "base.ini"), "-S", "threads=4", "--set", "harakiri=7", "--print-config")
    got = options(p.stdout)
    assert ("module", "base:app") in got and ("threads", "4") in got and ("harakiri", "7") in got, p.stderr


def test_check_app_finds_what_the_start_would_fail_on(tmp_path):
    """A user or group that does not exist, and a unix socket, pidfile or
    log in a directory that does not exist: --check-config --check-app
    (Gunicorn's check_config) says so (it said "usable"), each naming the
    option given, and a start refused on a name leaves no socket or
    pidfile behind, with --vacuum or without. (--check-config alone checks
    the file, which may be another machine's.)"""
    (tmp_path / "app.py").write_text("def application(e, s):\n    s('200 OK', [])\n    return [b'']\n")
    sock, pid = tmp_path / "run" / "a.sock", tmp_path / "run" / "a.pid"
    sock.parent.mkdir()
    base = ["--socket", str(sock), "--pidfile", str(pid), "--wsgi-file", "app.py", "--vacuum"]
    for extra, says in [(["--uid", "nosuchuser"], "--uid nosuchuser: no such user"),
                        (["--gid", "nosuchgroup"], "--gid nosuchgroup: no such group"),
                        (["--chown-socket", "nosuchuser"], "--chown-socket nosuchuser: no such user"),
                        (["--chown-socket", "root:nosuchgroup"], "--chown-socket nosuchgroup: no such group")]:
        code, err = run_fail(*base, *extra, "--check-config", "--check-app", cwd=tmp_path)
        assert code == 1 and says in err, (extra, err)
        code, err = run_fail(*base, *extra, cwd=tmp_path)
        assert code == 1 and says in err, (extra, err)
        assert list(sock.parent.iterdir()) == [], (extra, list(sock.parent.iterdir()))
    missing = tmp_path / "nodir"
    for option, path, what in [("--socket", missing / "a.sock", "the uwsgi socket"),
                               ("--http-socket", missing / "h.sock", "the http socket"),
                               ("--pidfile", missing / "a.pid", "--pidfile"),
                               ("--logto", missing / "a.log", "--logto")]:
        code, err = run_fail("--http-socket", ":1", "--wsgi-file", "app.py", option, str(path), "--check-config",
                             "--check-app", cwd=tmp_path)
        assert code == 1 and f"{what} {path}: the directory {missing} does not exist" in err, (option, err)
        assert run("--http-socket", ":1", "--wsgi-file", "app.py", option, str(path), "--check-config",
                   cwd=tmp_path).returncode == 0
    p = run(*base, "--check-config", "--check-app", cwd=tmp_path)
    assert p.returncode == 0 and "the configuration is usable" in p.stderr, p.stderr


def test_a_byte_order_mark_is_no_part_of_a_config_file(tmp_path):
    """Windows editors start a UTF-8 file with a byte-order mark: `[uwsgi]`
    after one was "no [uwsgi] section", and JSON after one no JSON."""
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.ini").write_bytes(bom + b"[uwsgi]\nhttp-socket = :1\nmodule = m\n")
    (tmp_path / "a.json").write_bytes(bom + b'{"uwsgi": {"http-socket": ":2", "module": "m"}}\n')
    for name, socket in [("a.ini", ":1"), ("a.json", ":2")]:
        p = run(str(tmp_path / name), "--print-config")
        assert p.returncode == 0 and ("http-socket", socket) in options(p.stdout), (name, p.stderr)


def test_a_lone_app_argument_is_read_as_uwsgi_reads_it(tmp_path):
    (tmp_path / "site.wsgi").write_text("")
    for arg, want in [("site.wsgi", [("wsgi-file", "site.wsgi")]),
                      ("app.py:application", [("wsgi-file", "app.py"), ("callable", "application")]),
                      ("pkg.mod:app", [("module", "pkg.mod:app")]), ("app:app", [("module", "app:app")])]:
        got = options(run("--http-socket", ":1", arg, "--print-config", cwd=tmp_path).stdout)
        assert all(w in got for w in want), (arg, got)
    # A number is no app: `--chmod-socket 888` (not a mode, so not taken
    # as its value) started 888 workers; Gunicorn's count is -w's.
    for args in (["--chmod-socket", "888"], ["--logdate", "5"], ["8"]):
        code, err = run_fail("--http-socket", ":1", "--wsgi-file", "app.py", *args)
        assert code == 2 and "is a number, not an application" in err, (args, err)
    assert ("processes", "4") in options(run("--http-socket", ":1", "-w", "4", "app:app", "--print-config").stdout)


def test_an_address_uwsgi_reads_is_read_and_a_bad_one_is_refused_by_the_check(tmp_path):
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nhttp-socket = 127.0.0.1:8000 # main port\nhttp = : 8001\nmodule = m\n")
    p = run(str(f), "--check-config")
    assert p.returncode == 0, p.stderr
    p = run("--http-socket", "127.0.0.1:80x", "--module", "m", "--check-config")
    assert p.returncode == 2 and "the port" in p.stderr


def test_a_linked_vassal_keeps_its_own_name_and_j_is_uwsgis_hex(tmp_path):
    """An emperor's vassal is a link to the project's file: uWSGI keeps the
    link's own path for the magic variables (%n is the vassal's name). %j
    is the path's djb33x hash, its bytes in memory order, in upper case."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "vassals").mkdir()
    (tmp_path / "proj" / "uwsgi.ini").write_text(
        "[uwsgi]\nhttp-socket = :1\nmodule = m\npidfile = %d%n.pid\nenv = J=%j\n")
    link = tmp_path / "vassals" / "myproj.ini"
    link.symlink_to(tmp_path / "proj" / "uwsgi.ini")
    got = options(run(str(link), "--print-config").stdout)
    assert ("pidfile", f"{tmp_path}/vassals/myproj.pid") in got, got
    h = 5381
    for c in str(link).encode():
        h = ((h * 33) ^ c) & 0xFFFFFFFF
    assert ("env", "J=" + h.to_bytes(4, "little").hex().upper()) in got


def test_xml_id_picks_the_uwsgi_element_by_its_id(tmp_path):
    f = tmp_path / "m.xml"
    f.write_text('<all><uwsgi id="a"><http-socket>:1</http-socket><module>a</module></uwsgi>'
                 '<uwsgi id="b"><http-socket>:2</http-socket><module>b</module></uwsgi></all>\n')
    got = options(run("--xml", f"{f}:b", "--print-config").stdout)
    assert ("module", "b") in got and ("module", "a") not in got


def test_a_placeholder_is_its_first_value_wherever_it_is_used(tmp_path):
    """uWSGI resolves %(name) after reading everything, with the first
    value given: the same before and after a second `base =`."""
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = m\nenv = BASE=%(base)\nbase = /one\nbase = /two\n"
                 "env = BASE2=%(base)\n")
    got = options(run(str(f), "--print-config").stdout)
    assert [v for k, v in got if k == "env"] == ["BASE=/one", "BASE2=/one"]


def test_uwsgi_2_logic_plugin_reload_hostname_match_and_end(tmp_path):
    import socket
    f = tmp_path / "app.ini"
    f.write_text("[uwsgi]\nhttp-socket = :1\nmodule = m\n"
                 "if-plugin = python3\nenv = PY=yes\nend\n"
                 "if-not-plugin = php\nenv = PHP=no\nendif\n"
                 "if-reload =\nenv = RELOAD=yes\nend\n"
                 f"if-hostname-match = ^{socket.gethostname()[:1]}\nenv = MATCH=yes\nend\n"
                 "for = a b\nif-env = EMPTY\nenv = E=set\nend\nenv = F%(_)=1\nend\n")
    p = run(str(f), "--print-config", env={"EMPTY": ""})
    assert p.returncode == 0, p.stderr
    # A `for` goes line by line, each over every value, as uWSGI's; a block
    # nested in it (which uWSGI refuses: "recursive logic") counts as a line.
    assert [v for k, v in options(p.stdout) if k == "env"] == ["PY=yes", "PHP=no", "MATCH=yes", "E=set", "E=set",
                                                                "Fa=1", "Fb=1"]


def test_command_line_values_as_uwsgi_expands_them(tmp_path):
    """An unset $(VAR) is left as written (a daemon's shell `$(date)` runs),
    $(VAR:-default) gives the default; a %(name) a later --ini sets is
    resolved once everything is read; --set values are expanded too; a
    Django module named like a file is a module when there is no file."""
    base = tmp_path / "base.ini"
    base.write_text("[uwsgi]\nbase = /srv/x\n")
    got = options(run("--http-socket", ":1", "--module", "m", "--attach-daemon", "echo $(date +%s) $(NOPE_UNSET)",
                      "--pidfile", "%(base)/x.pid", "--ini", str(base), "--set", "harakiri=$(HK:-30)",
                      "--print-config").stdout)
    assert ("attach-daemon", "echo $(date +%s) $(NOPE_UNSET)") in got, got
    assert ("pidfile", "/srv/x/x.pid") in got and ("harakiri", "30") in got, got
    got = options(run("--http-socket", ":1", "myproject.wsgi:application", "--print-config", cwd=tmp_path).stdout)
    assert ("module", "myproject.wsgi:application") in got, got
    (tmp_path / "site.wsgi").write_text("")
    got = options(run("--http-socket", ":1", "site.wsgi", "--print-config", cwd=tmp_path).stdout)
    assert ("wsgi-file", "site.wsgi") in got, got


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("--print-config", "--http-socket", ":1", "--module", "m"),
                                  ("top", "--help")])
def test_output_into_a_closed_pipe_is_dropped_without_a_panic(args):
    """`oxgate --version | head -c1` and the like: the reader has gone, and
    what is left is dropped (it panicked, exit 101, and the pip-installed
    command showed a PanicException traceback)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        p = subprocess.run([BIN, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(write_end)
    assert p.returncode == 0 and "panicked" not in p.stderr, p.stderr


def test_a_gunicorn_option_on_oxgates_own_command_line_says_how_to_have_it_read(tmp_path):
    """`oxgate -w 2 -k ... app:app`, as a Gunicorn user types it: the error
    says to begin with `oxgate gunicorn` (it said only "unknown option")."""
    for args, flag in [(("-w", "2", "-k", "uvicorn.workers.UvicornWorker", "app:app"), "-k"),
                       (("--access-logfile", "-", "app:app"), "--access-logfile")]:
        p = run(*args, cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        assert f"unknown option {flag} (it is Gunicorn's: begin the command with 'oxgate gunicorn'" in p.stderr, p.stderr
    # uvicorn's, as a uvicorn user types it: to `oxgate uvicorn` (it
    # suggested --vhost for --host, --import for --port).
    for flag in ("--host", "--port", "--uds", "--factory", "--no-access-log"):
        p = run("main:app", flag, "x", cwd=tmp_path)
        assert p.returncode == 2, p.stderr
        assert f"unknown option {flag} (it is uvicorn's: begin the command with 'oxgate uvicorn'" in p.stderr, p.stderr


def test_uwsgis_http11_socket_and_safe_pidfile_are_their_plain_forms(tmp_path):
    """uWSGI's http11-socket (an HTTP/1.1 socket with keep-alive, which
    oxgate's http-socket is) and safe-pidfile: warned of as not
    implemented, and the config then had no socket to serve on."""
    (tmp_path / "a.ini").write_text("[uwsgi]\nhttp11-socket = 127.0.0.1:0\nsafe-pidfile = /tmp/x.pid\n"
                                    "wsgi-file = app.py\n")
    p = run("--ini", str(tmp_path / "a.ini"), "--print-config")
    assert p.returncode == 0, p.stderr
    got = options(p.stdout)
    assert ("http-socket", "127.0.0.1:0") in got and ("pidfile", "/tmp/x.pid") in got, got
    assert "not implemented" not in p.stderr, p.stderr
