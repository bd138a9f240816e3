"""Listening sockets: unix and IPv6 addresses, bind errors, a unix socket's
mode (0660 by default) and owner, sockets inherited on a descriptor."""
import os
import shutil
import signal
import socket
import subprocess

import pytest
import requests

from helpers import APPS, BIN, VENV, free_port, fresh, run_fail, wait_for


def test_unix_socket(serve, tmp_path):
    sock = tmp_path / "app.sock"
    s = serve("--http-socket", str(sock), "--wsgi-file", str(APPS / "validated.py"), socket_arg=False, wait=False)
    # The file appears at bind(), a moment before listen(): curl retries.
    out = wait_for(lambda: (o := subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://localhost/env"],
                                                capture_output=True, timeout=30)).returncode == 0 and o,
                   what="an answer on the socket")
    assert b'"SERVER_NAME": "localhost"' in out.stdout
    # The client has no address: REMOTE_ADDR is there and empty, as
    # Gunicorn and uWSGI give it.
    assert b'"REMOTE_ADDR": ""' in out.stdout
    # Owner and group may connect, nobody else, whatever the umask.
    assert os.stat(sock).st_mode & 0o777 == 0o660


@pytest.mark.parametrize("program", ["oxgate", "uwsgi"])
def test_a_relative_unix_socket_is_made_in_chdir_as_uwsgi_makes_it(serve, tmp_path, program):
    """`socket = app.sock` beside `chdir = /srv/app`: uWSGI changes to the
    directory before it binds, so the socket is /srv/app/app.sock, where
    nginx's uwsgi_pass looks for it. oxgate made it in the directory it was
    started in. (A relative pidfile stays the start directory's, in both.)"""
    (tmp_path / "sub").mkdir()
    (tmp_path / "start").mkdir()
    ini = tmp_path / "rel.ini"
    ini.write_text(f"[uwsgi]\nchdir = {tmp_path / 'sub'}\nhttp-socket = app.sock\nwsgi-file = {APPS / 'validated.py'}\n"
                   "pidfile = app.pid\nmaster = true\ndie-on-term = true\n")
    command = (BIN,) if program == "oxgate" else (str(VENV / "bin" / "uwsgi"),)
    serve("--ini", str(ini), socket_arg=False, wait=False, cwd=tmp_path / "start", program=command)
    sock = tmp_path / "sub" / "app.sock"
    wait_for(lambda: subprocess.run(["curl", "-s", "--unix-socket", str(sock), "http://localhost/env"],
                                    capture_output=True, timeout=30).returncode == 0, what=f"{program} on {sock}")
    assert not (tmp_path / "start" / "app.sock").exists()
    assert (tmp_path / "start" / "app.pid").exists()


def test_ipv6_and_colon_port(serve):
    s = serve("--http", "[::1]:{port}", "--wsgi-file", str(APPS / "validated.py"), socket_arg=False, wait=False)
    import time
    for _ in range(200):
        try:
            r = requests.get(f"http://[::1]:{s.port}/env", timeout=20)
            break
        except requests.ConnectionError:
            time.sleep(0.05)
    assert r.json()["REMOTE_ADDR"] == "::1"


def test_an_ipv4_client_of_a_dual_stack_socket_is_named_by_its_ipv4_address(serve):
    """http-socket = [::]:PORT, a client on 127.0.0.1: uWSGI says
    REMOTE_ADDR 127.0.0.1; oxgate said ::ffff:127.0.0.1, which allow-lists,
    Django's INTERNAL_IPS and log parsers do not match."""
    s = serve("--http-socket", "[::]:{port}", "--wsgi-file", str(APPS / "validated.py"), socket_arg=False)
    env = requests.get(f"http://127.0.0.1:{s.port}/env", timeout=20).json()
    assert (env["REMOTE_ADDR"], env["SERVER_NAME"]) == ("127.0.0.1", "127.0.0.1"), env
    s.wait_log("127.0.0.1")
    assert "::ffff:" not in s.log(), s.log()


def test_port_0_is_said_as_the_port_the_kernel_picked(serve):
    """`--http 127.0.0.1:0`: the start line gives the port to connect to
    (it said 0), and that port serves."""
    import re
    s = serve("--http", "127.0.0.1:0", "--wsgi-file", str(APPS / "validated.py"), socket_arg=False, wait=False)
    s.wait_log("serving ")
    port = int(re.search(r"on http://127\.0\.0\.1:(\d+) ", s.log()).group(1))
    assert port != 0
    wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/env", timeout=20).status_code == 200, what="a 200")


def test_reuse_port_lets_two_servers_share_a_port(serve, tmp_path):
    """Gunicorn's and uWSGI's --reuse-port (SO_REUSEPORT): a second
    instance on the same address (a blue/green twin, systemd template
    units) starts and takes its share. It was refused "Address already in
    use"; without the flag it still is."""
    first = serve("--reuse-port", "--wsgi-file", str(APPS / "procs.py"), "--processes", "1")
    second = subprocess.Popen([BIN, "gunicorn", "-b", f"127.0.0.1:{first.port}", "--reuse-port", "-w", "1",
                               "--chdir", str(APPS), "procs:application"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def both_serve():
            assert second.poll() is None, second.stderr.read()
            return len({fresh(f"{first.url}/").text.split()[0] for _ in range(20)}) == 2
        wait_for(both_serve, what="both servers taking connections")
        code, err = run_fail("--http-socket", f"127.0.0.1:{first.port}", "--wsgi-file", str(APPS / "procs.py"))
        assert code != 0 and "already in use" in err
    finally:
        second.terminate()
        second.wait(20)


def test_address_errors(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"))
    code, err = run_fail("--http-socket", f"127.0.0.1:{s.port}", "--wsgi-file", str(APPS / "validated.py"))
    assert code != 0 and "already in use" in err
    code, err = run_fail("--http-socket", "127.0.0.1:notaport", "--wsgi-file", "x.py")
    assert code != 0 and "port" in err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become nobody")
def test_a_bind_refused_for_want_of_rights_says_what_would_allow_it(tmp_path):
    # A port below the unprivileged start, bound by a user with no rights
    # to it: the message names the capability a systemd unit would grant.
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        first_free = int(f.read())
    if first_free < 2:
        pytest.skip("every port is unprivileged on this host")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN]
    app = ["--wsgi-file", str(APPS / "validated.py")]
    p = subprocess.run([*as_nobody, "--http-socket", f"127.0.0.1:{first_free - 1}", *app],
                       capture_output=True, text=True, timeout=30, cwd="/")
    assert p.returncode != 0 and "CAP_NET_BIND_SERVICE" in p.stderr, p.stderr
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    p = subprocess.run([*as_nobody, "--http-socket", str(private / "app.sock"), *app],
                       capture_output=True, text=True, timeout=30, cwd="/")
    assert p.returncode != 0 and "cannot create a file in that directory" in p.stderr, p.stderr


@pytest.mark.parametrize("address,says", [
    ("=0", "shared-socket"),  # uWSGI's reference to a shared socket: no file named "=0"
    ("{tmp}/regular", "is there and is not a socket"),
])
def test_an_address_that_cannot_be_served_says_why(tmp_path, address, says):
    (tmp_path / "regular").write_text("not a socket")
    code, err = run_fail("--http-socket", address.format(tmp=tmp_path), "--wsgi-file", str(APPS / "validated.py"),
                         cwd=tmp_path)
    assert code != 0 and says in err, err
    assert not (tmp_path / "=0").exists()
    assert (tmp_path / "regular").read_text() == "not a socket"


def test_gunicorns_unix_and_tcp_prefixes_are_read_in_every_socket_option(serve, tmp_path):
    sock, port = tmp_path / "p.sock", free_port()
    serve("--http-socket", f"unix:{sock}", "--http-socket", f"tcp://127.0.0.1:{port}",
          "--wsgi-file", str(APPS / "validated.py"), socket_arg=False, wait=False)
    wait_for(lambda: subprocess.run(["curl", "-sf", "--unix-socket", str(sock), "http://x/env"],
                                    capture_output=True, timeout=10).returncode == 0, what="the unix socket")
    assert fresh(f"http://127.0.0.1:{port}/env").status_code == 200
    # `unix://rel.sock` is relative, as Gunicorn reads it (it was /rel.sock).
    serve("--http-socket", "unix://rel.sock", "--wsgi-file", str(APPS / "validated.py"), cwd=tmp_path,
          socket_arg=False, wait=False)
    wait_for(lambda: subprocess.run(["curl", "-sf", "--unix-socket", str(tmp_path / "rel.sock"), "http://x/env"],
                                    capture_output=True, timeout=10).returncode == 0, what="the relative socket")


@pytest.mark.parametrize("value", ["1", "true", ""])
def test_chmod_socket_as_a_switch_is_666_as_in_uwsgi(serve, tmp_path, value):
    """`chmod-socket = 1` (as an ini, YAML or environment boolean gives it)
    is the switch, 666, as uWSGI reads it: it made mode 001, which shut
    the web server out."""
    sock = tmp_path / "s.sock"
    serve("--http-socket", str(sock), f"--chmod-socket={value}", "--wsgi-file", str(APPS / "validated.py"),
          socket_arg=False, wait=False)
    wait_for(lambda: sock.exists() and os.stat(sock).st_mode & 0o777 == 0o666, what="a socket of mode 666")


def test_an_abstract_socket_has_the_listen_backlog(serve, tmp_path):
    name = f"oxgate-test-{os.getpid()}"
    serve("--http-socket", f"@{name}", "--listen", "7", "--wsgi-file", str(APPS / "validated.py"),
          socket_arg=False, wait=False)

    def backlog():
        out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, timeout=10).stdout
        return next((line.split()[3] for line in out.splitlines() if f"@{name}" in line), None)
    assert wait_for(backlog, what="the abstract socket listening") == "7"


def test_one_address_named_for_two_protocols_is_refused(serve):
    """Only one of them could be served: the start is refused, rather than
    the second one's clients turned away. The same socket named twice for
    one protocol is one socket."""
    port = free_port()
    code, err = run_fail("--socket", f"127.0.0.1:{port}", "--fastcgi-socket", f"127.0.0.1:{port}",
                         "--wsgi-file", str(APPS / "validated.py"))
    assert code != 0 and f"127.0.0.1:{port} is named as a uwsgi socket and as a fastcgi socket" in err, err
    s = serve("--http-socket", "127.0.0.1:{port}", "--wsgi-file", str(APPS / "validated.py"))
    assert requests.get(s.url + "/env", timeout=10).status_code == 200


def test_umask_and_chown_socket(serve, app_dir, tmp_path):
    sock = tmp_path / "s.sock"
    s = serve("--http-socket", str(sock), "--wsgi-file", str(app_dir / "procs.py"), "--processes", "1",
              "--umask", "077", "--chown-socket", "nobody:nogroup", socket_arg=False, wait=False)
    import grp
    import pwd
    owner = (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    # The file appears at bind(), and is given away after listen().
    wait_for(lambda: sock.exists() and (os.stat(sock).st_uid, os.stat(sock).st_gid) == owner,
             what="the socket owned by nobody:nogroup")
    st = os.stat(sock)
    assert st.st_mode & 0o077 == 0


def _answer(url):
    try:
        return fresh(url, timeout=5)
    except requests.RequestException:
        return None


# The same listening socket, left open on a descriptor by the program that
# starts the server, named as each dialect names it; Gunicorn and uvicorn
# themselves run the same command line.
INHERITED = {
    "uwsgi --http-socket fd://N": ((BIN,), ["--http-socket", "fd://{fd}", "--wsgi-file", "procs.py",
                                            "--master", "--processes", "1"]),
    "gunicorn bind fd://N": ((BIN, "gunicorn"), ["-b", "fd://{fd}", "procs:application"]),
    "real gunicorn": ((str(VENV / "bin" / "gunicorn"),), ["-b", "fd://{fd}", "procs:application"]),
    "uvicorn --fd N": ((BIN, "uvicorn"), ["--fd", "{fd}", "asgi_raw:app"]),
    "real uvicorn": ((str(VENV / "bin" / "uvicorn"),), ["--fd", "{fd}", "asgi_raw:app"]),
    # On stdin, as supervisord's fcgi-program passes it (uvicorn's docs'
    # recipe) and inetd or systemd's StandardInput=socket do: it was
    # refused ("descriptors 0, 1 and 2 are stdin, stdout and stderr").
    "uvicorn --fd 0": ((BIN, "uvicorn"), ["--fd", "0", "asgi_raw:app"]),
    "real uvicorn --fd 0": ((str(VENV / "bin" / "uvicorn"),), ["--fd", "0", "asgi_raw:app"]),
    "uwsgi --http-socket fd://0": ((BIN,), ["--http-socket", "fd://0", "--wsgi-file", "procs.py",
                                            "--master", "--processes", "1"]),
}


@pytest.mark.parametrize("how", list(INHERITED))
def test_a_socket_inherited_on_a_descriptor_is_served(tmp_path, how):
    program, args = INHERITED[how]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    fd = listener.fileno()
    on_stdin = "0" in args or "fd://0" in args
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "GUNICORN_", "UVICORN_"))}
    env["VIRTUAL_ENV"] = str(VENV)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*program, *[a.replace("{fd}", str(fd)) for a in args]],
                                pass_fds=[] if on_stdin else [fd], stdin=listener if on_stdin else None,
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=APPS)
    try:
        listener.close()  # only the server holds it now
        first = wait_for(lambda: _answer(url), what=f"an answer on the inherited socket:\n{log_path.read_text()}")
        assert first.status_code == 200
        if on_stdin and program[0] == BIN:
            # The socket moved off stdin, which the app and what it runs
            # would otherwise read.
            assert not os.readlink(f"/proc/{proc.pid}/fd/0").startswith("socket:")
        if how.startswith("uwsgi"):
            # A reload re-executes the master, which takes the socket over
            # again from the image before it.
            before = first.text.split()[0]
            os.kill(proc.pid, signal.SIGHUP)
            wait_for(lambda: (r := _answer(url)) and r.status_code == 200 and r.text.split()[0] != before,
                     what=f"a new worker on the same socket after the reload:\n{log_path.read_text()}")
            assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)


def test_an_inherited_descriptor_that_is_no_listening_socket_is_refused(tmp_path):
    with open(tmp_path / "f", "w") as f:
        fd = f.fileno()
        p = subprocess.run([BIN, "--http-socket", f"fd://{fd}", "--wsgi-file", str(APPS / "procs.py")],
                           pass_fds=[fd], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and f"fd://{fd}: descriptor {fd} is not a socket" in p.stderr, p.stderr
    code, err = run_fail("--http-socket", "fd://77", "--wsgi-file", str(APPS / "procs.py"))
    assert code != 0 and "descriptor 77 is not open" in err, err
    code, err = run_fail("gunicorn", "-b", "fd://x", "procs:application", cwd=APPS)
    assert code != 0 and "not a file descriptor number" in err, err


def test_a_backlog_over_somaxconn_is_warned_of(serve):
    """The kernel caps it without a word (uWSGI refuses to start)."""
    s = serve("--listen", "1000000000", "--wsgi-file", str(APPS / "validated.py"))
    s.wait_log("is over net.core.somaxconn")
