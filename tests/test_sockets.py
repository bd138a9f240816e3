"""Listening sockets: unix and IPv6 addresses, bind errors, a unix socket's mode (0660 by default) and owner."""
import os
import subprocess

import requests

from helpers import APPS, run_fail, wait_for


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
    # Owner and group may connect, nobody else, whatever the umask.
    assert os.stat(sock).st_mode & 0o777 == 0o660


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


def test_address_errors(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"))
    code, err = run_fail("--http-socket", f"127.0.0.1:{s.port}", "--wsgi-file", str(APPS / "validated.py"))
    assert code != 0 and "already in use" in err
    code, err = run_fail("--http-socket", "127.0.0.1:notaport", "--wsgi-file", "x.py")
    assert code != 0 and "port" in err


def test_umask_and_chown_socket(serve, app_dir, tmp_path):
    sock = tmp_path / "s.sock"
    s = serve("--http-socket", str(sock), "--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--umask", "077", "--chown-socket", "nobody:nogroup", socket_arg=False, wait=False)
    wait_for(sock.exists, what="socket")
    st = os.stat(sock)
    import grp
    import pwd
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and st.st_gid == grp.getgrnam("nogroup").gr_gid
    assert st.st_mode & 0o077 == 0
