"""packaging/ (issue #19): the systemd units pass `systemd-analyze verify`,
socket activation serves on the socket systemd holds (with the protocol
the ini names for it), the example ini runs, and the logrotate snippet
parses."""
import os
import shlex
import shutil
import signal
import subprocess

import pytest

from helpers import APPS, BIN, ROOT, cgi, free_port, fresh, listens, uwsgi_request, wait_for

PACKAGING = ROOT / "packaging"


def local_copy(tmp_path, name):
    """The unit with its paths pointed at this checkout."""
    text = (PACKAGING / name).read_text()
    text = text.replace("/usr/local/bin/oxgate", str(BIN)).replace("WorkingDirectory=/srv/app",
                                                                    f"WorkingDirectory={tmp_path}")
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path):
    units = [local_copy(tmp_path, "oxgate.service"), local_copy(tmp_path, "oxgate.socket")]
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                       capture_output=True, text=True, timeout=60)
    # Unknown settings are only warned about: the output must be empty too.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    service = (PACKAGING / "oxgate.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM"):
        assert line in service


def ini_for(tmp_path, **changes):
    """packaging/app.ini, made to run here."""
    lines = []
    for line in (PACKAGING / "app.ini").read_text().splitlines():
        key = line.split("=")[0].strip()
        if key not in changes:
            lines.append(line)
    lines += [f"{k} = {v}" for k, v in changes.items() if v is not None]
    ini = tmp_path / "app.ini"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def paths_here(tmp_path, port_key, port):
    return ini_for(tmp_path, **{
        "http-socket": None, port_key: f"127.0.0.1:{port}", "chdir": str(APPS), "module": "echo:application",
        "home": None, "processes": "2", "logto": str(tmp_path / "app.log"),
        "stats": str(tmp_path / "stats.sock")})


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
@pytest.mark.parametrize("protocol", ["http-socket", "uwsgi-socket"])
def test_socket_activation_serves_the_protocol_the_ini_names(tmp_path, protocol):
    port = free_port()
    ini = paths_here(tmp_path, protocol, port)
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", str(BIN), "--ini", str(ini)],
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        # systemd-socket-activate binds the socket (the probe's connection
        # starts oxgate, which serves it like any other).
        wait_for(lambda: listens(port), what="the activation socket")
        if protocol == "http-socket":
            r = fresh(f"http://127.0.0.1:{port}/hello?x=1")
            assert r.status_code == 200 and r.json()["query"] == "x=1"
        else:
            # systemd holds the socket: the first connection starts oxgate.
            reply = uwsgi_request(port, cgi(path="/hello", query="x=1"), timeout=30)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        wait_for(lambda: (tmp_path / "app.log").exists() and "GET /hello" in (tmp_path / "app.log").read_text(),
                 what="the request in the ini's logto")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)



@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate")
def test_logrotate_snippet_parses(tmp_path):
    r = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(PACKAGING / "oxgate.logrotate")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "error" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def test_shell_completions_come_from_the_option_table(tmp_path):
    script = PACKAGING / "completions" / "oxgate.bash"

    def complete(*words):
        line = " ".join(shlex.quote(w) for w in ("oxgate",) + words)
        cmd = (f"source {shlex.quote(str(script))}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
               '_oxgate; printf "%s\\n" "${COMPREPLY[@]}"')
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.split()
    assert complete("--http-so") == ["--http-socket"]
    assert complete("--interface", "") == ["auto", "wsgi", "asgi"]
    assert complete("--loop", "uv") == ["uvloop"]
    (tmp_path / "sub").mkdir()
    assert complete("--chdir", str(tmp_path / "s")) == [str(tmp_path / "sub")]
    # What the binary prints is what packaging/ ships, for every shell.
    for shell, name in (("bash", "oxgate.bash"), ("zsh", "_oxgate"), ("fish", "oxgate.fish")):
        printed = subprocess.run([BIN, "--completions", shell], capture_output=True, text=True, check=True).stdout
        assert printed == (PACKAGING / "completions" / name).read_text(), shell
    bad = subprocess.run([BIN, "--completions", "tcsh"], capture_output=True, text=True)
    assert bad.returncode != 0 and "bash, zsh, fish" in bad.stderr
