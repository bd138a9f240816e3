"""uWSGI's loggers: `logger` (file:, stdio, syslog:, rsyslog:), `req-logger`,
`log-route`, `log-req-route` and `log-syslog`, with the app's own output
routed like oxgate's lines. (Gunicorn's syslog settings are in
test_gunicorn_config.py.)"""
import pathlib
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests

from helpers import LOGGED, SyslogReceiver, run_fail, wait_for


def _listened(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


@pytest.fixture
def dev_log():
    """The local syslog socket, /dev/log, received here. It needs root (as
    in CI), and no syslog daemon on it; a socket nobody reads, left by an
    interrupted run, is taken over."""
    if os.geteuid() != 0:
        pytest.skip("binding /dev/log needs root")
    # One test at a time has it, across test processes (pytest -n 2).
    import fcntl
    with open("/tmp/oxgate-test-dev-log.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists("/dev/log"):
            if _listened("/dev/log"):
                pytest.skip("a syslog daemon has /dev/log")
            os.unlink("/dev/log")
        r = SyslogReceiver("/dev/log")
        yield r
        r.close()
        os.unlink("/dev/log")


# `<PRI>Mmm dd hh:mm:ss ` as glibc's syslog(3) and uWSGI's rsyslog write it.
STAMP = re.compile(rb"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")


def test_syslog_logger_sends_what_glibc_sends(serve, tmp_path, dev_log):
    """`logger = syslog:IDENT,FACILITY` sends oxgate's lines, the request
    lines and the app's own output to /dev/log, each as one datagram shaped
    as glibc's syslog(3) (which uWSGI calls) shapes it: the same header as
    Python's syslog module, which calls glibc, sends."""
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nstrict = true\nwsgi-file = {LOGGED}\nmaster = true\nprocesses = 1\n"
                   "logger = syslog:myapp,local6\n")
    s = serve(str(ini))
    assert requests.get(s.url + "/print").status_code == 200
    served = dev_log.wait(b"serving", "the start line")
    app = dev_log.wait(b"app stderr line", "the app's stderr")
    dev_log.wait(b"app stdout line", "the app's stdout")
    dev_log.wait(b"GET /print", "the request line")
    subprocess.run([sys.executable, "-c", "import syslog; syslog.openlog('myapp', 0, syslog.LOG_LOCAL6); "
                    "syslog.syslog(syslog.LOG_INFO, 'glibc line')"], check=True)
    glibc = dev_log.wait(b"glibc line", "glibc's line")

    def shape(m, text):
        return STAMP.sub(rb"<\1>STAMP ", m).replace(text, b"TEXT")
    assert shape(app, b"app stderr line") == shape(glibc, b"glibc line") == b"<182>STAMP myapp: TEXT"
    assert served.startswith(b"<182>") and not served.endswith(b"\n")
    # Nothing went to stderr but what came before the loggers.
    assert "app stderr line" not in s.log() and "GET /print" not in s.log()


def test_log_syslog_and_default_ident(serve, tmp_path, dev_log):
    """`log-syslog` alone is `logger = syslog`: ident uwsgi, facility
    daemon (uWSGI's defaults)."""
    s = serve("--wsgi-file", LOGGED, "--log-syslog")
    requests.get(s.url + "/alone")
    m = dev_log.wait(b"GET /alone", "the request line")
    assert STAMP.match(m).group(1) == b"30" and b" uwsgi: " in m


def test_rsyslog_logger_over_udp(serve, tmp_path):
    """`logger = rsyslog:HOST:PORT,PREFIX,PRI`: one UDP datagram per line,
    `<PRI>Mmm dd hh:mm:ss PREFIX: line`, without its newline."""
    r = SyslogReceiver()
    try:
        s = serve("--wsgi-file", LOGGED, "--logger", f"rsyslog:127.0.0.1:{r.port},web1 myapp,134")
        requests.get(s.url + "/remote")
        m = r.wait(b"GET /remote", "the request line")
        assert STAMP.match(m).group(1) == b"134"
        assert STAMP.sub(b"", m).startswith(b"web1 myapp: [pid: ") and not m.endswith(b"\n")
    finally:
        r.close()


def test_log_route_sends_matching_lines_to_a_named_logger_only(serve, tmp_path):
    """uWSGI's dispatch: a line matching a route goes to the route's logger
    only; the others go to every unnamed logger."""
    every, slow = tmp_path / "every.log", tmp_path / "slow.log"
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nstrict = true\nwsgi-file = {LOGGED}\nmaster = true\nprocesses = 2\n"
                   f"logger = file:{every}\nlogger = stdio\nlogger = slow file:{slow}\n"
                   "log-route = slow GET /sleep/\n")
    s = serve(str(ini))
    for path in ("/sleep/1", "/fast", "/print"):
        assert requests.get(s.url + path).status_code == 200
    # Two workers: each line is waited for.
    wait_for(lambda: every.exists() and all(t in every.read_text() for t in ("GET /print", "GET /fast",
                                                                              "app stdout line")),
             what="the unrouted lines in every.log")
    wait_for(lambda: slow.exists() and "GET /sleep/1" in slow.read_text(), what="the routed line")
    text = every.read_text()
    assert "GET /fast" in text and "serving" in text and "GET /sleep/" not in text
    assert "GET /fast" not in slow.read_text() and "serving" not in slow.read_text()
    # stdio is a logger like the others: the same lines as every.log.
    wait_for(lambda: "GET /print" in s.log(), what="the lines on stderr")
    assert "GET /sleep/" not in s.log()


def test_only_named_loggers_leave_other_lines_where_they_were(serve, tmp_path):
    """When every logger has a name, the lines no route takes go to the log
    as it was (stderr here), as in uWSGI."""
    errors = tmp_path / "errors.log"
    s = serve("--wsgi-file", LOGGED, "--logger", f"errs file:{errors}", "--log-route", "errs boom")
    requests.get(s.url + "/boom")
    requests.get(s.url + "/calm")
    wait_for(lambda: errors.exists() and "boom for the log" in errors.read_text(), what="the traceback's line")
    wait_for(lambda: "GET /calm" in s.log(), what="the other lines on stderr")
    assert "GET /calm" not in errors.read_text()


def test_req_logger_and_log_req_route(serve, tmp_path):
    """Request lines go to the request loggers, and those matching a
    log-req-route to its logger only; other lines never reach them."""
    reqs, failed = tmp_path / "requests.log", tmp_path / "failed.log"
    s = serve("--wsgi-file", LOGGED, "--req-logger", f"file:{reqs}", "--req-logger", f"fails file:{failed}",
              "--log-req-route", r"fails \(HTTP/1\.1 5\d\d\)")
    requests.get(s.url + "/status/503")
    requests.get(s.url + "/status/204")
    wait_for(lambda: failed.exists() and "/status/503" in failed.read_text(), what="the failed request")
    wait_for(lambda: reqs.exists() and "/status/204" in reqs.read_text(), what="the other request")
    assert "/status/503" not in reqs.read_text() and "/status/204" not in failed.read_text()
    assert "serving" not in reqs.read_text() and "serving" in s.log()


def test_logger_mistakes_are_refused_with_the_reason():
    for args, why in [
        (["--logger", "redislog:127.0.0.1"], 'oxgate has no logger "redislog"'),
        (["--logger", "syslog:app,nowhere"], 'unknown syslog facility "nowhere"'),
        (["--log-route", "ghost x"], 'no --logger is named "ghost"'),
        (["--logger", "a file:/tmp/a", "--log-route", "a ("], "the regular expression"),
        (["--logger", "rsyslog:"], "rsyslog: needs an address"),
    ]:
        code, err = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", LOGGED, *args)
        assert code == 2 and why in err, (args, err)


def test_log_req_route_to_a_logger_without_request_loggers(serve, tmp_path):
    """log-req-route may name a --logger: the matching request lines go
    there only, the others with the rest."""
    every, failed = tmp_path / "every.log", tmp_path / "failed.log"
    s = serve("--wsgi-file", LOGGED, "--logger", f"file:{every}", "--logger", f"fails file:{failed}",
              "--log-req-route", r"fails HTTP/1\.1 5\d\d")
    requests.get(s.url + "/status/502")
    requests.get(s.url + "/status/201")
    wait_for(lambda: failed.exists() and "/status/502" in failed.read_text(), what="the failed request")
    wait_for(lambda: every.exists() and "/status/201" in every.read_text(), what="the other request")
    assert "/status/502" not in every.read_text() and "/status/201" not in failed.read_text()


def test_loggers_follow_a_reopen(serve, tmp_path):
    """SIGUSR1 after logrotate renamed the files: the `file:` loggers and
    the log behind `stdio` (--logto) are opened anew in the master and the
    workers, and the app's output is still routed."""
    main, extra = tmp_path / "main.log", tmp_path / "extra.log"
    s = serve("--wsgi-file", LOGGED, "--master", "--processes", "1", "--logto", str(main),
              "--logger", "stdio", "--logger", f"file:{extra}")
    s.wait_workers(1)
    requests.get(s.url + "/print")
    for f in (main, extra):
        wait_for(lambda: f.exists() and "app stderr line" in f.read_text(), what=f"the app's line in {f.name}")
        f.rename(f.with_suffix(".log.1"))
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(lambda: main.exists() and extra.exists(), what="the reopened files")
    requests.get(s.url + "/print?again")
    for f in (main, extra):
        wait_for(lambda: "GET /print?again" in f.read_text() and "app stderr line" in f.read_text(),
                 what=f"the request and the app's line in the new {f.name}")
    assert "GET /print?again" not in (tmp_path / "main.log.1").read_text()


FORKING_APP = """
import os, sys
def application(environ, start_response):
    if os.fork() == 0:
        print("from the forked child", flush=True)
        os._exit(0)
    os.wait()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"forked"]
"""


def test_logto2_takes_the_log_from_the_drop_of_privileges_on(serve, tmp_path):
    """uWSGI's --logto2 (in configs with --uid): the log goes to --logto's
    file until privileges are dropped, to --logto2's after, opened then.
    oxgate refused to start with it."""
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(first), "--logto2", str(second))
    requests.get(s.url + "/after-the-drop", timeout=10)
    wait_for(lambda: second.exists() and "/after-the-drop" in second.read_text(), what="the request in --logto2's file")
    assert "/after-the-drop" not in first.read_text()


def test_an_app_that_forks_is_routed_and_stops(serve, tmp_path):
    """A child the app forks writes through the same pipe; it does not keep
    the worker from stopping."""
    app, every = tmp_path / "forking.py", tmp_path / "every.log"
    app.write_text(FORKING_APP)
    s = serve("--wsgi-file", str(app), "--master", "--processes", "1", "--logger", f"file:{every}")
    assert requests.get(s.url + "/").text == "forked"
    wait_for(lambda: every.exists() and "from the forked child" in every.read_text(), what="the child's line")
    s.proc.terminate()
    assert s.proc.wait(15) == 0


def test_daemonize2_moves_the_loggers_stdio_to_its_file(tmp_path):
    """--daemonize2 detaches after the loggers are installed: `stdio` then
    means its file, not the terminal it left."""
    from helpers import BIN, free_port
    log, extra, pidfile = tmp_path / "d.log", tmp_path / "extra.log", tmp_path / "d.pid"
    port = free_port()
    p = subprocess.run([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", LOGGED, "--master",
                        "--processes", "1", "--daemonize2", str(log), "--pidfile", str(pidfile),
                        "--logger", "stdio", "--logger", f"file:{extra}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the pidfile"))
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/print"), what="the daemon serving")
        for f in (log, extra):
            wait_for(lambda: f.exists() and "GET /print" in f.read_text(), what=f"the request line in {f.name}")
        assert "GET /print" not in p.stdout + p.stderr
    finally:
        os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize("option", ["--logto", "--daemonize"])
def test_logto_and_daemonize_send_the_log_to_a_udp_address_as_uwsgi(tmp_path, option):
    """`--logto HOST:PORT` and `--daemonize HOST:PORT` ("set logfile/udp
    address", shared/seeds/000): every line, oxgate's, the requests' and
    the app's, goes as one datagram, as uWSGI sends it. They went to a
    file named "127.0.0.1:PORT" in the working directory."""
    from helpers import BIN, free_port
    r = SyslogReceiver()
    port, pidfile = free_port(), tmp_path / "o.pid"
    args = [BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", LOGGED, "--master", "--processes", "1",
            option, f"127.0.0.1:{r.port}", "--pidfile", str(pidfile)]
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the pidfile"))
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/print"), what="serving")
        r.wait(b"GET /print", "the request line")
        r.wait(b"oxgate 0.1", "oxgate's start line")
        r.wait(b"app stdout line", "the app's own output")
        assert r.wait(b"GET /print", "the request line").endswith(b"\n")
        assert sorted(os.listdir(tmp_path)) == ["o.pid"], os.listdir(tmp_path)
        os.kill(pid, signal.SIGINT)
        r.wait(b"master stopped", "the last line")
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        r.close()


def test_a_udp_log_whose_collector_is_down_fails_nothing(serve):
    """`--logto HOST:PORT` with nothing listening there (the collector is
    down): lines are lost, the app's own writes do not fail. (Sent on a
    connected socket behind the app's stdout, every other print raised
    ConnectionRefusedError: a 500.) And uWSGI's `socket:` logger sends the
    same datagrams."""
    from helpers import BIN, free_port
    port = free_port()
    p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", LOGGED, "--processes", "1",
                          "--logto", f"127.0.0.1:{free_port()}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), what="serving")
        for _ in range(6):
            assert requests.get(f"http://127.0.0.1:{port}/print", timeout=10).status_code == 200
    finally:
        p.kill()
        p.wait(10)
    r = SyslogReceiver()
    try:
        s2 = serve("--wsgi-file", LOGGED, "--processes", "1", "--logger", f"socket:127.0.0.1:{r.port}")
        requests.get(s2.url + "/print", timeout=10)
        assert r.wait(b"GET /print", "the request line").endswith(b"\n")
        r.wait(b"app stdout line", "the app's own output")
    finally:
        r.close()


def _answers(url):
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("winner,beside", [("logger", "logto"), ("logger", "daemonize"), ("daemonize", "logto")])
def test_which_log_file_wins_as_in_uwsgi(tmp_path, winner, beside):
    """`logger = file:main.log` with `logto` or `daemonize` (a common
    production pair): uWSGI's logger takes the output, and the other file
    gets nothing; oxgate wrote to the other file and never made main.log,
    so logrotate rules and log shippers pointed at it found nothing. And
    with both `daemonize` and `logto`, uWSGI logs to daemonize's file and
    does not read logto."""
    from helpers import BIN, free_port
    main, other, pidfile = tmp_path / "main.log", tmp_path / "other.log", tmp_path / "d.pid"
    port = free_port()
    first = f"logger = file:{main}" if winner == "logger" else f"{winner} = {main}"
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {LOGGED}\nmaster = true\nprocesses = 1\n"
                   f"pidfile = {pidfile}\n{first}\n{beside} = {other}\n")
    p = subprocess.Popen([BIN, "--ini", str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = None
    try:
        pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the pidfile"))
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/print"), what="the server serving")
        wait_for(lambda: main.exists() and "GET /print" in main.read_text(), what="the request line in main.log")
        assert not other.exists() or "GET /print" not in other.read_text()
    finally:
        os.kill(pid or p.pid, signal.SIGINT)
        p.wait(20)
        if pid:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                     open(f"/proc/{pid}/stat").read().split()[2] == "Z", what="the daemon's end")


def test_a_file_logger_in_uwsgis_key_value_form_writes_and_rotates(serve, tmp_path):
    """`logger = file:logfile=PATH,maxsize=N` (uWSGI's form, which Datadog's
    uWSGI docs give): the log goes to PATH, rotated past N bytes as uWSGI
    rotates it (PATH.<time>). It stopped the start: the whole value was
    taken for a path."""
    import glob
    import time
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logger", f"file:logfile={log},maxsize=2000")
    wait_for(lambda: log.exists() and "serving" in log.read_text(), what="the log file")
    deadline = time.monotonic() + 20
    while not glob.glob(f"{log}.*") and time.monotonic() < deadline:
        assert requests.get(f"{s.url}/load/x", timeout=10).status_code == 200
    rotated = glob.glob(f"{log}.*")
    assert rotated and re.fullmatch(r"\d+", rotated[0].rsplit(".", 1)[1]), rotated
    # A value that is not uWSGI's is refused, clearly.
    code, err = run_fail("--http-socket", "127.0.0.1:0", "--wsgi-file", LOGGED,
                         "--logger", f"file:logfile={log},maxsize=big")
    assert code == 2 and "maxsize=" in err, err


@pytest.mark.parametrize("master", [True, False])
def test_a_request_logger_file_with_maxsize_rotates_as_in_uwsgi(serve, tmp_path, master):
    """`req-logger = file:logfile=PATH,maxsize=N`: the request log is
    rotated past N bytes (PATH.<time>), as uWSGI rotates it. It grew
    without bound, and nothing said so."""
    import glob
    import time
    log = tmp_path / "req.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--req-logger", f"file:logfile={log},maxsize=2000",
              *([] if master else ["--no-master"]))
    deadline = time.monotonic() + 20
    while not glob.glob(f"{log}.*") and time.monotonic() < deadline:
        assert requests.get(f"{s.url}/load/x", timeout=10).status_code == 200
    rotated = glob.glob(f"{log}.*")
    assert rotated and re.fullmatch(r"\d+", rotated[0].rsplit(".", 1)[1]), rotated
    assert "GET /load/x" in pathlib.Path(rotated[0]).read_text()
    # Lines go on to the new file.
    wait_for(lambda: requests.get(f"{s.url}/load/y", timeout=10) and log.exists() and "GET /load/y" in log.read_text(),
             what="a line in the new file")


def test_request_lines_to_stdio_beside_a_file_logger_stay_on_stderr(tmp_path):
    """`req-logger = stdio` with `logger = file:X`: the request lines go to
    stderr and the rest to X, as in uWSGI (the request lines went to X)."""
    from helpers import BIN, free_port
    log, port = tmp_path / "app.log", free_port()
    p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", LOGGED, "--processes", "1",
                          "--req-logger", "stdio", "--logger", f"file:{log}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: log.exists() and "serving" in log.read_text(), what="the log file")
        assert requests.get(f"http://127.0.0.1:{port}/load/stdio", timeout=10).status_code == 200
    finally:
        # (A graceful stop: every line is written by the end.)
        p.terminate()
        err = p.communicate(timeout=20)[1]
    assert "GET /load/stdio" in err, err
    assert "/load/stdio" not in log.read_text()
