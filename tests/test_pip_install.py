"""`pip install oxgate` (issue #19): the wheel maturin builds from pyext/ and
python/oxgate/. scripts/test.sh installs it into a fresh venv and runs this
file and the core test files against its `oxgate` command; against the
stand-alone binary only the tests that hold for both run. (What the app sees
of --env and of its own output is checked by test_app_loading and
test_request_log, which both passes run.)"""
import os
import platform
import signal
import subprocess
import sys

import pytest
import requests

from helpers import BIN, INSTALLED, LOGGED, ROOT, VENV, run_fail, wait_for

installed_only = pytest.mark.skipif(
    not INSTALLED, reason="for the oxgate pip installs: scripts/test.sh's second pass runs it")


def test_version_names_the_python_that_runs(tmp_path):
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("oxgate ")
    assert f"Python {platform.python_version()} " in out
    if INSTALLED:
        assert f"({VENV}/bin/python" in out and "extension module" in out, out
    else:
        assert "libpython" in out, out


@installed_only
def test_python_dash_m_oxgate_serves_and_reloads(serve):
    s = serve("--wsgi-file", str(ROOT / "examples" / "hello.py"), "--processes", "2",
              "--env", "PYTHONHASHSEED=0", program=(sys.executable, "-m", "oxgate"))
    assert requests.get(s.url).text == "Hello, World!"
    old = s.wait_workers(2)
    # The interpreter had started without it: told once, at the start.
    warned = "--env PYTHONHASHSEED: the interpreter running oxgate has started already"
    assert s.log().count(warned) == 1, s.log()
    # A reload re-executes the master: the interpreter runs `-m oxgate` again
    # (with --env's PYTHONHASHSEED this time: no warning, which was wrong).
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("graceful reload done")
    assert not set(s.wait_workers(2)) & set(old)
    assert f"master pid {s.proc.pid} re-executed" in s.log() and "reload failed" not in s.log()
    assert requests.get(s.url).text == "Hello, World!"
    assert s.log().count(warned) == 1, s.log()


@installed_only
def test_the_extension_links_no_libpython():
    import oxgate
    so = next(p for p in os.listdir(os.path.dirname(oxgate.__file__)) if p.startswith("_oxgate."))
    deps = subprocess.run(["ldd", os.path.join(os.path.dirname(oxgate.__file__), so)],
                          capture_output=True, text=True, check=True).stdout
    assert "libc.so" in deps and "libpython" not in deps, deps
    assert oxgate.__version__ == subprocess.run([BIN, "--version"], capture_output=True, text=True,
                                                check=True).stdout.split()[1]


@installed_only
def test_uvloop_extra_is_declared():
    from importlib.metadata import metadata
    meta = metadata("oxgate")
    assert "uvloop" in meta.get_all("Provides-Extra")
    assert any(r.startswith("uvloop") and r.replace("'", '"').endswith('extra == "uvloop"')
               for r in meta.get_all("Requires-Dist"))


@installed_only
def test_the_wheel_carries_its_licence_texts():
    """MIT OR Apache-2.0, as declared: both texts are in the wheel's
    dist-info (PEP 639), as the licences ask of every copy."""
    from importlib.metadata import distribution
    dist = distribution("oxgate")
    shipped = {f.name: f for f in dist.files or [] if "licenses" in f.parts}
    for name in ("LICENSE-MIT", "LICENSE-APACHE"):
        assert name in shipped, sorted(str(f) for f in dist.files or [])
        assert shipped[name].read_text() == (ROOT / name).read_text(), name


@installed_only
def test_man_page_and_completions_are_installed():
    share = VENV / "share"
    for installed, source in (("man/man1/oxgate.1", "docs/oxgate.1"),
                              ("bash-completion/completions/oxgate", "packaging/completions/oxgate.bash"),
                              ("zsh/site-functions/_oxgate", "packaging/completions/_oxgate"),
                              ("fish/vendor_completions.d/oxgate.fish", "packaging/completions/oxgate.fish")):
        assert (share / installed).read_bytes() == (ROOT / source).read_bytes(), installed


@installed_only
def test_home_adds_another_virtualenv(serve, tmp_path):
    other = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True)
    site = other / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "only_in_other.py").write_text("WHERE = 'the other venv'\n")
    app = tmp_path / "app.py"
    app.write_text("import only_in_other\n"
                   "def application(e, sr):\n"
                   "    sr('200 OK', [('Content-Type', 'text/plain')])\n"
                   "    return [only_in_other.WHERE.encode()]\n")
    s = serve("--home", str(other), "--wsgi-file", str(app))
    assert requests.get(s.url).text == "the other venv"
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--home", str(tmp_path), "--wsgi-file", str(app))
    assert code == 1 and "must be a virtualenv of that version" in err, err


@installed_only
def test_ctrl_c_stops_the_server_without_a_traceback(serve):
    s = serve("--wsgi-file", str(ROOT / "examples" / "hello.py"), "--processes", "2")
    s.wait_workers(2)
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(10) == 0
    wait_for(lambda: "master stopped" in s.log(), what="the stop")
    assert "Traceback" not in s.log() and "KeyboardInterrupt" not in s.log()


def test_app_output_is_unbuffered_without_pythonunbuffered(serve):
    # What the app prints is in the log at once, as under the binary (which
    # starts Python unbuffered), even where PYTHONUNBUFFERED is not set.
    s = serve("--wsgi-file", LOGGED, "--processes", "1", env={"PYTHONUNBUFFERED": ""})
    assert requests.get(s.url + "/print").ok
    s.wait_log("app stdout line", timeout=5)
