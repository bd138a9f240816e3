"""Config files in the shapes real projects write (tests/configs/real_world/:
INI, YAML, JSON and XML, with their inline comments, bare keys, logic blocks,
placeholders, typos and options oxgate only accepts): each is read, then
started with its app replaced by a stub, its sockets by free local ones,
and what needs root or absent paths (daemonize, uid, gid, logto, home,
chdir) dropped, and asked for a page. At least 95% must serve."""
import os
import socket
import subprocess
import time

from helpers import BIN, ROOT, cgi, fcgi_request, free_port, read_records, scgi_packet, stdout_of

CORPUS = ROOT / "tests" / "configs" / "real_world"
# The environment the Docker-shaped files expect.
ENV = {"PORT": "8000", "UWSGI_PROCESSES": "2", "APP_MODULE": "app:app"}
SOCKETS = {"http-socket": "http", "socket": "uwsgi", "uwsgi-socket": "uwsgi", "fastcgi-socket": "fastcgi",
           "scgi-socket": "scgi"}
# Machine-specific or the app's own: what the task says to drop.
DROPPED = {"daemonize", "daemonize2", "uid", "gid", "logto", "home", "chdir", "pythonpath", "pidfile", "pidfile2",
           "chown-socket", "logger", "req-logger", "log-backupname", "attach-daemon", "smart-attach-daemon",
           "import", "callable", "print-config", "touch-reload", "stats"}
STUB = ("def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'stub']\n")


def env():
    full = {k: v for k, v in os.environ.items() if not k.startswith(("UWSGI_", "GUNICORN_"))}
    full.pop("VIRTUAL_ENV", None)
    full.update(ENV)
    return full


def resolved(path):
    """The settings oxgate read from the file: --print-config's lines."""
    p = subprocess.run([BIN, str(path), "--print-config"], capture_output=True, text=True, timeout=30, env=env(),
                       cwd=path.parent)
    if p.returncode != 0:
        return None, p.stderr
    pairs = []
    for line in p.stdout.splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        name, rest = line.split(" = ", 1)
        pairs.append((name, rest.rsplit("    # ", 1)[0]))
    return pairs, p.stderr


def stubbed(pairs, tmp):
    """The same settings, with a stub app and local sockets."""
    lines, listens, protocol = [], [], None
    for name, value in pairs:
        if name == "protocol":
            protocol = value
    for name, value in pairs:
        if name in DROPPED:
            continue
        if name in SOCKETS:
            port = free_port()
            kind = SOCKETS[name] if name != "socket" or not protocol else protocol
            lines.append(f"{name} = 127.0.0.1:{port}")
            listens.append((kind, port))
            continue
        if name == "module":
            value = "stub:application"
        elif name == "wsgi-file":
            value = str(tmp / "stub.py")
        elif name == "mount":
            value = value.split("=", 1)[0] + "=stub:application"
        elif name == "processes":
            value = str(min(int(value.split()[0] or 1), 2))
        lines.append(f"{name} = {value}")
    return "[uwsgi]\n" + "\n".join(lines) + "\n", listens


def ask(kind, port):
    """One request in the socket's protocol; the answer's first bytes."""
    vars = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_URI", "/"), ("REMOTE_ADDR", "127.0.0.1"), ("SERVER_PORT", "80"), ("SERVER_NAME", "x"),
            ("HTTP_HOST", "x"), ("CONTENT_LENGTH", "0")]
    if kind == "http":
        data = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    elif kind == "uwsgi":
        data = cgi()
    elif kind == "fastcgi":
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(fcgi_request(1, vars))
            return stdout_of(read_records(s), 1)
    else:
        data = scgi_packet(vars)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def wait_for_log(path, text, seconds=5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def serves(text, listens, tmp):
    ini = tmp / "stubbed.ini"
    ini.write_text(text)
    log = open(tmp / "stubbed.log", "wb")
    proc = subprocess.Popen([BIN, str(ini)], stdout=log, stderr=subprocess.STDOUT, env=env(), cwd=tmp)
    try:
        deadline = time.monotonic() + 20
        kind, port = listens[0]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return f"exited with {proc.returncode}: {(tmp / 'stubbed.log').read_text()[-500:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        answer = ask(kind, port)
        # The stub's page, or the server's own answer for a vhost with no
        # app named (a 500, as uWSGI's "no python application found").
        if b"stub" in answer or b"HTTP/1.1 404" in answer or b"Status: 404" in answer:
            return None
        if b" 500 " in answer and wait_for_log(tmp / "stubbed.log", "--vhost: the request names no app"):
            return None
        return f"answered {answer[:200]!r}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_real_world_config_files_start_and_serve(tmp_path):
    files = sorted(p for p in CORPUS.iterdir() if p.suffix in (".ini", ".yaml", ".yml", ".json", ".xml"))
    assert len(files) >= 30
    (tmp_path / "stub.py").write_text(STUB)
    failures = {}
    for f in files:
        pairs, stderr = resolved(f)
        if pairs is None:
            failures[f.name] = f"not read: {stderr.strip()}"
            continue
        text, listens = stubbed(pairs, tmp_path)
        if not listens:
            failures[f.name] = "binds nothing"
            continue
        problem = serves(text, listens, tmp_path)
        if problem:
            failures[f.name] = problem
    served = len(files) - len(failures)
    assert served >= 0.95 * len(files), f"{served}/{len(files)} served; failures: {failures}"
    # What is known not to start: none today.
    assert not failures, failures
