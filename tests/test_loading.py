"""Loading apps the uWSGI ways, Python environments, and load errors."""
import os
import subprocess
import sys

import pytest
import requests

from conftest import APPS, BIN, ROOT, VENV


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


def test_env_option(serve, tmp_path):
    app = tmp_path / "envapp.py"
    app.write_text(
        "import os\n"
        "def application(e, sr):\n"
        "    sr('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [os.environ['OXGATE_TEST_VALUE'].encode()]\n")
    s = serve("--wsgi-file", str(app), "--env", "OXGATE_TEST_VALUE=a=b")
    assert requests.get(s.url).text == "a=b"


def test_unix_socket(serve, tmp_path):
    sock = tmp_path / "app.sock"
    s = serve("--http-socket", str(sock), "--wsgi-file", str(APPS / "validated.py"), socket_arg=False, wait=False)
    import time
    for _ in range(200):
        if sock.exists():
            break
        time.sleep(0.05)
    out = subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://localhost/env"],
                         capture_output=True, timeout=10)
    assert b'"SERVER_NAME": "localhost"' in out.stdout


def test_ipv6_and_colon_port(serve):
    s = serve("--http", "[::1]:{port}", "--wsgi-file", str(APPS / "validated.py"), socket_arg=False, wait=False)
    import time
    for _ in range(200):
        try:
            r = requests.get(f"http://[::1]:{s.port}/env", timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    assert r.json()["REMOTE_ADDR"] == "::1"


def run_fail(*args, cwd=ROOT):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, cwd=cwd)
    return p.returncode, p.stderr


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


def test_address_errors(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"))
    code, err = run_fail("--http-socket", f"127.0.0.1:{s.port}", "--wsgi-file", str(APPS / "validated.py"))
    assert code != 0 and "already in use" in err
    code, err = run_fail("--http-socket", "127.0.0.1:notaport", "--wsgi-file", "x.py")
    assert code != 0 and "port" in err


def test_usage_errors():
    code, err = run_fail("--wsgi-fil", "x.py")
    assert code == 2 and "did you mean --wsgi-file" in err
    code, err = run_fail("--wsgi-file", "x.py")
    assert code == 2 and "--http-socket" in err
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--http-socket" in p.stdout and "--threads" in p.stdout
    p = subprocess.run([BIN, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("oxgate ")


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
