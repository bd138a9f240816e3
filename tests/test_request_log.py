"""The request log: uWSGI's line, --log-format, encoders, what is logged, app output, log files, rotation, reopening."""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from helpers import (APPS, BIN, LOGGED, VENV, cgi, fcgi_request, free_port, listens, raw_request, read_records, scgi_packet,
                     uwsgi_request, wait_for)


# uWSGI's default request line (core/logging.c), every field captured.
UWSGI_LINE = re.compile(
    r"^\[pid: (?P<pid>\d+)\|app: (?P<app>-?\d+)\|req: (?P<wreq>-?\d+)/(?P<treq>\d+)\] "
    r"(?P<addr>\S+) \((?P<user>[^)]*)\) \{(?P<vars>\d+) vars in (?P<pkt>\d+) bytes\} "
    r"\[(?P<date>\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\] (?P<method>\S+) (?P<uri>\S+) => "
    r"generated (?P<size>\d+) bytes in (?P<msecs>\d+) msecs \((?P<proto>\S+) (?P<status>\d{3})\) "
    r"(?P<headers>\d+) headers in (?P<hsize>\d+) bytes \((?P<switches>\d+) switches on core (?P<core>\d+)\)$"
)

# Every variable --log-format documents (see `oxgate --help`).
FIELDS = ("uri method user addr host proto uagent referer status rsize hsize size cl micros msecs secs "
          "tmsecs tmicros time epoch ctime ltime ftime pid wid switches vars core vsz rss vszM rssM pktsize "
          "modifier1 modifier2 headers werr rerr ioerr protocol req").split()


def request_lines(text):
    return [m for m in map(UWSGI_LINE.match, text.splitlines()) if m]


MEMORY_REPORT = re.compile(r"^\{address space usage: (\d+) bytes/(\d+)MB\} \{rss usage: (\d+) bytes/(\d+)MB\} (.*)$")


def test_memory_report_starts_the_default_line_with_the_workers_memory_as_uwsgi(serve, tmp_path):
    """`memory-report = true` (in 8.6% of real uWSGI configs): uWSGI starts
    each request line with the worker's address space and RSS; oxgate took
    the option and changed nothing."""
    uwsgi_port, uwsgi_log = free_port(), tmp_path / "uwsgi.log"
    peer = subprocess.Popen([str(VENV / "bin" / "uwsgi"), "--http-socket", f"127.0.0.1:{uwsgi_port}",
                             "--wsgi-file", LOGGED, "--memory-report", "--logto", str(uwsgi_log)])
    try:
        wait_for(lambda: listens(uwsgi_port), what="uWSGI")
        requests.get(f"http://127.0.0.1:{uwsgi_port}/mem", timeout=10)
        # Its line is written after the answer.
        theirs = wait_for(lambda: "GET /mem" in uwsgi_log.read_text() and uwsgi_log.read_text(),
                          what="uWSGI's request line")
    finally:
        peer.send_signal(signal.SIGINT)
        peer.wait(20)
    s = serve("--wsgi-file", LOGGED, "--memory-report", "--processes", "1")
    requests.get(s.url + "/mem", timeout=10)
    ours = wait_for(lambda: "GET /mem" in s.log() and s.log(), what="the request line")
    for text in (theirs, ours):
        m = next(filter(None, map(MEMORY_REPORT.match, text.splitlines())), None)
        assert m, text
        vsz, vsz_mb, rss, rss_mb, rest = m.groups()
        assert int(vsz) >> 20 == int(vsz_mb) and int(rss) >> 20 == int(rss_mb) and 0 < int(rss) < int(vsz)
        assert UWSGI_LINE.match(rest), rest


def test_default_line_for_every_protocol(serve, tmp_path):
    up, sp, fp = free_port(), free_port(), free_port()
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--socket", f"127.0.0.1:{up}", "--scgi-socket", f"127.0.0.1:{sp}",
              "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--logto", str(log))
    assert requests.get(s.url + "/http?x=1", headers={"User-Agent": "t"}).status_code == 200
    assert b" 200 " in uwsgi_request(up, cgi("GET", "/uwsgi", "y=2"))
    assert b"Status: 200" in uwsgi_request(sp, scgi_packet([
        ("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/scgi"),
        ("SERVER_PROTOCOL", "HTTP/1.0"), ("REMOTE_ADDR", "10.1.2.3")]))
    with socket.create_connection(("127.0.0.1", fp)) as c:
        c.sendall(fcgi_request(1, [("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/fcgi"), ("CONTENT_LENGTH", "3"),
                                   ("SERVER_PROTOCOL", "HTTP/1.1"), ("REMOTE_ADDR", "10.9.9.9"),
                                   ("REMOTE_USER", "ann")], b"abc"))
        recs = read_records(c)
    assert any(t == 3 for t, _, _ in recs), f"the FastCGI request was not answered: {recs}"
    lines = wait_for(lambda: len(request_lines(log.read_text())) == 4 and request_lines(log.read_text()),
                     what="four request lines", show=lambda: log.read_text() + s.log())
    by_uri = {m["uri"]: m for m in lines}
    assert set(by_uri) == {"/http?x=1", "/uwsgi?y=2", "/scgi", "/fcgi"}
    (w,) = s.worker_pids()
    for m in lines:
        assert int(m["pid"]) == w and m["status"] == "200" and m["size"] == "7"
        # "HTTP/1.1 200 OK\r\n" + 2 headers + blank line, as uWSGI counts them
        assert m["headers"] == "2" and int(m["hsize"]) == 17 + len("Content-Type: text/plain\r\n") + \
            len("Content-Length: 7\r\n") + 2
    assert sorted(int(m["wreq"]) for m in lines) == [1, 2, 3, 4]
    assert by_uri["/scgi"]["addr"] == "10.1.2.3" and by_uri["/scgi"]["proto"] == "HTTP/1.0"
    assert by_uri["/fcgi"]["method"] == "POST" and by_uri["/fcgi"]["user"] == "ann"
    assert by_uri["/http?x=1"]["addr"] == "127.0.0.1"


def test_the_heads_size_counts_add_header_as_uwsgi(serve, tmp_path):
    """--add-header's headers go out with every response, and uWSGI counts
    them in the line's "N headers in B bytes" (and %(hsize), %(size));
    they were left out."""
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log),
              "--add-header", "X-Frame-Options: DENY", "--add-header", "X-Served-By: oxgate-test")
    r = requests.get(s.url + "/h")
    assert r.headers["X-Served-By"] == "oxgate-test"
    (m,) = wait_for(lambda: request_lines(log.read_text()), what="the request line")
    assert m["headers"] == "4" and int(m["hsize"]) == 17 + len("Content-Type: text/plain\r\n") + \
        len("Content-Length: 7\r\n") + len("X-Frame-Options: DENY\r\n") + len("X-Served-By: oxgate-test\r\n") + 2


def test_custom_format_renders_every_variable(serve, tmp_path):
    fmt = "|".join(f"{f}=%({f})" for f in FIELDS) + "|xtest=%(var.HTTP_X_TEST)|nope=%(nope)"
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-format", fmt,
              "--logdate", "--log-format-strftime", "--logdate=%Y/%m/%d")
    requests.get(s.url + "/big/1000?q=1", headers={"User-Agent": "ua/1", "Referer": "http://r/",
                                                    "X-Test": "hello", "Host": "h.example"})
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith("uri=")), None),
                    what="the request line")
    got = dict(kv.split("=", 1) for kv in line.split("|"))
    for f in FIELDS:
        assert got[f] != "", f
    (w,) = s.worker_pids()
    assert got["uri"] == "/big/1000?q=1" and got["method"] == "GET" and got["user"] == "-"
    assert got["addr"] == "127.0.0.1" and got["host"] == "h.example" and got["proto"] == "HTTP/1.1"
    assert got["uagent"] == "ua/1" and got["referer"] == "http://r/" and got["status"] == "200"
    assert got["rsize"] == "1000" and int(got["size"]) == 1000 + int(got["hsize"])
    assert got["pid"] == str(w) and got["wid"] == "1" and got["core"] == "0" and got["req"] == "1"
    assert got["protocol"] == "http" and got["xtest"] == "hello" and got["nope"] == "-"
    assert int(got["msecs"]) == int(got["micros"]) // 1000
    assert abs(int(got["time"]) - time.time()) < 60 and int(got["tmsecs"]) // 1000 == int(got["time"])
    assert re.fullmatch(r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", got["ltime"])
    assert re.fullmatch(r"\d{4}/\d\d/\d\d", got["ftime"])  # --log-format-strftime
    assert int(got["rss"]) > 1 << 20 and int(got["rssM"]) == int(got["rss"]) >> 20
    assert int(got["vars"]) % 2 == 0 and int(got["pktsize"]) > 100
    # As uWSGI renders them without a body or a Host: the length a number,
    # the host the server's name.
    raw_request(s.port, b"GET /status/200 HTTP/1.0\r\n\r\n")
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith("uri=/status/200")),
                                 None), what="the second request line")
    got = dict(kv.split("=", 1) for kv in line.split("|"))
    assert got["cl"] == "0" and got["host"] == "127.0.0.1", line


@pytest.mark.parametrize("app", ["wsgi-1-thread", "wsgi-2-threads", "asgi"])
def test_an_apps_error_is_logged_with_the_500_it_sent(serve, tmp_path, app):
    """The size logged is that of the 500 page sent, WSGI on one Python
    thread or several, and ASGI (each was once logged as 0 bytes and 0
    headers)."""
    log = tmp_path / "app.log"
    loading = {"wsgi-1-thread": ("--wsgi-file", LOGGED, "--threads", "1"),
               "wsgi-2-threads": ("--wsgi-file", LOGGED, "--threads", "2"),
               "asgi": ("--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app")}[app]
    path = "/raise-before" if app == "asgi" else "/boom"
    s = serve(*loading, "--processes", "1", "--logto", str(log),
              "--log-format", "%(uri) %(status) rsize=%(rsize) headers=%(headers)")
    r = requests.get(s.url + path, timeout=10)
    assert r.status_code == 500
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith(f"{path} ")), None),
                    what="the request line")
    assert line == f"{path} 500 rsize={len(r.content)} headers=2", (line, r.headers)  # type and length


def test_json_encoder(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-encoder", "json")
    requests.get(s.url + "/status/404", headers={"X-Forwarded-For": "1.2.3.4"})
    # (oxgate's own lines are {"msg": ...} objects.)
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if l.startswith('{"') and '"status"' in l),
                                 None), what="a JSON line")
    doc = json.loads(line)
    assert set(FIELDS) <= set(doc)
    assert json.loads(log.read_text().splitlines()[0])["msg"].startswith("oxgate ")
    assert doc["status"] == 404 and doc["uri"] == "/status/404" and doc["addr"] == "127.0.0.1"
    assert doc["size"] == doc["rsize"] + doc["hsize"]


def test_json_template_encoder_and_x_forwarded_for(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-x-forwarded-for",
              "--log-encoder", 'json {"unix":${unix},"msg":"${msg}"}', "--log-encoder", "nl")
    requests.get(s.url + "/a", headers={"X-Forwarded-For": "1.2.3.4"})
    line = wait_for(lambda: next((l for l in log.read_text().splitlines()
                                  if l.startswith('{"unix"') and "GET /a" in l), None), what="a JSON line")
    doc = json.loads(line)
    assert abs(doc["unix"] - time.time()) < 60
    m = UWSGI_LINE.match(doc["msg"])
    assert m and m["addr"] == "1.2.3.4" and m["uri"] == "/a"
    # the message is escaped into the template
    log2 = tmp_path / "app2.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log2), "--log-format", "%(uagent)",
              "--log-encoder", 'json {"msg":"${msg}"}')
    requests.get(s.url + "/a", headers={"User-Agent": 'say "hi" \\ bye'})
    line = wait_for(lambda: next((l for l in log2.read_text().splitlines() if l.startswith('{"msg":"say')), None),
                    what="a JSON line")
    assert json.loads(line) == {"msg": 'say "hi" \\ bye'}
    # oxgate's own lines, through the same template.
    assert json.loads(log2.read_text().splitlines()[0])["msg"].startswith("oxgate ")


def test_format_prefix_and_suffix_encoders_chain_as_uwsgis(serve, tmp_path):
    """uWSGI's `format`, `prefix` and `suffix` encoders, each given what the
    one before made (a uWSGI config with them stopped oxgate at start)."""
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-format", "%(uri)",
              "--log-req-encoder", 'format [REQ ${strftime:%Y}] "${msg}"', "--log-encoder", "prefix >> ",
              "--log-encoder", "suffix <<", "--log-encoder", "nl")
    requests.get(s.url + "/enc?q=1")
    line = wait_for(lambda: next((l for l in log.read_text().splitlines() if "/enc" in l), None),
                    what="an encoded line")
    # The request line takes --log-req-encoder's; oxgate's own, the others.
    assert line == f'[REQ {time.strftime("%Y")}] "/enc?q=1"', line
    assert log.read_text().startswith(">> oxgate ") and "<<\n" in log.read_text()
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-format", "%(uri)",
              "--log-encoder", 'format [${strftime:%Y}] "${msg}"', "--log-encoder", "suffix <<")
    requests.get(s.url + "/chained")
    wait_for(lambda: f'[{time.strftime("%Y")}] "/chained"<<' in log.read_text(), what="a chained line")

def test_an_encoder_for_one_named_logger_is_said_to_apply_to_every_line(serve):
    """uWSGI's `--log-encoder format:LOGGER ...` encodes that logger's
    lines alone; oxgate's encoders apply to every line, and it was not
    said: the other logs' format changed unseen."""
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--log-encoder", "prefix:four FOUR> ")
    s.wait_log('the encoder applies to every line, not to logger "four" alone')


def test_log_encoder_encodes_oxgates_own_lines_and_log_req_encoder_the_request_lines(serve, tmp_path):
    """As uWSGI's: --log-encoder makes every line of oxgate's JSON (a log
    shipper set up for uWSGI choked on the plain ones), and the request
    lines take --log-req-encoder's encoders when it is given."""
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-format", "%(uri)",
              "--log-encoder", 'json {"unix":${unix},"msg":"${msg}"}', "--log-req-encoder", "prefix REQ ")
    requests.get(s.url + "/own?x=1")
    wait_for(lambda: "REQ /own?x=1" in log.read_text(), what="the request line")
    lines = [l for l in log.read_text().splitlines() if l]
    own = [json.loads(l) for l in lines if not l.startswith("REQ ")]
    assert own and any(d["msg"].startswith("oxgate ") and "serving" in d["msg"] for d in own), lines
    assert all(abs(d["unix"] - time.time()) < 60 for d in own)

def test_disable_logging_and_the_conditions(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--disable-logging",
              "--log-4xx", "--log-5xx", "--log-slow", "300", "--log-big", "5000", "--log-zero")
    for path in ("/quiet", "/status/404", "/boom", "/sleep/350", "/big/6000", "/big/0", "/status/302"):
        requests.get(s.url + path)
    requests.get(s.url + "/last/status/503")  # not a status route: 200, not logged
    requests.get(s.url + "/status/503")
    wait_for(lambda: "/status/503" in log.read_text(), what="the last line")
    uris = [m["uri"] for m in request_lines(log.read_text())]
    assert uris == ["/status/404", "/boom", "/sleep/350", "/big/6000", "/big/0", "/status/503"]


def test_app_output_goes_to_the_log(srv):
    assert requests.get(srv.url + "/print").content == b"printed"
    log = srv.log()
    assert "hello from the app on stdout" in log
    assert "hello from wsgi.errors" in log


def test_app_output_goes_to_the_same_log(serve, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log))
    requests.get(s.url + "/print")
    text = wait_for(lambda: "/print" in log.read_text() and log.read_text(), what="the request line")
    for line in ("app stdout line", "app stderr line", "app wsgi.errors line"):
        assert line in text


def test_rotation_under_load_loses_no_line(serve, tmp_path):
    """Many requests from many connections, into two workers of two threads,
    with a --log-maxsize small enough to rotate several times: exactly one
    whole line per request across all the files."""
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--threads", "2", "--logto", str(log),
              "--log-maxsize", "40000")
    s.wait_workers(2)
    sent = [0] * 6
    # Until the log has rotated a few times (3 s is enough on an idle
    # machine), and 20 s at most.
    deadline = time.monotonic() + 20

    def rotated():
        return len(glob.glob(str(log) + ".*")) >= 3 and time.monotonic() > deadline - 17

    def client(i):
        with requests.Session() as http:
            while time.monotonic() < deadline and not rotated():
                assert http.get(f"{s.url}/load/{i}").status_code == 200
                sent[i] += 1
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(sent))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(sent)

    def lines():
        # The files anew each time: lines still being written may rotate
        # the log once more after the clients are done.
        return [l for f in sorted(glob.glob(str(log) + "*"))
                for l in open(f, errors="replace").read().splitlines() if "/load/" in l]
    wait_for(lambda: len(lines()) >= total, what="every line written")
    time.sleep(0.5)  # a line too many would show by now
    found = lines()
    files = sorted(glob.glob(str(log) + "*"))
    assert len(found) == total, (len(found), total)
    assert all(UWSGI_LINE.match(l) for l in found)  # whole lines, never interleaved
    assert len(files) >= 4, files  # rotated several times
    assert "log rotated to" in log.read_text() or any("log rotated to" in open(f).read() for f in files)


def test_sigusr1_and_touch_logreopen(serve, tmp_path):
    log, touch = tmp_path / "app.log", tmp_path / "reopen"
    touch.write_text("")
    s = serve("--wsgi-file", LOGGED, "--processes", "2", "--logto", str(log), "--touch-logreopen", str(touch))
    s.wait_workers(2)
    log.rename(tmp_path / "app.log.1")
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(log.exists, what="the reopened log")
    workers = s.worker_pids()
    for i in range(10):
        requests.get(s.url + f"/after-usr1/{i}")
    wait_for(lambda: log.read_text().count("/after-usr1/") == 10, what="lines in the new file")
    assert s.worker_pids() == workers  # the workers reopened, nobody died
    log.rename(tmp_path / "app.log.2")
    time.sleep(0.05)
    os.utime(touch, (time.time() + 5, time.time() + 5))
    wait_for(log.exists, what="the log reopened by --touch-logreopen")
    requests.get(s.url + "/after-touch")
    wait_for(lambda: "/after-touch" in log.read_text(), what="a line in the new file")


def test_logto_and_sigusr1_reopen(serve, app_dir, tmp_path):
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", str(app_dir / "procs.py"), "--processes", "1", "--logto", str(log))
    wait_for(lambda: log.exists() and "serving" in log.read_text(), what="log file")
    log.rename(tmp_path / "app.log.1")  # logrotate's move
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(log.exists, what="reopened log")
    os.kill(s.proc.pid, signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN" in log.read_text(), what="new lines in the new file")


def test_uwsgi_logger_and_req_logger_files(serve, tmp_path):
    """`logger = file:` and `req-logger = file:` (or logger-req), as strict
    uWSGI files name them: server lines in one file, request lines in the
    other, each reopened by SIGUSR1."""
    main, reqs = tmp_path / "server.log", tmp_path / "requests.log"
    ini = tmp_path / "app.ini"
    ini.write_text(f"[uwsgi]\nstrict = true\nwsgi-file = {LOGGED}\nprocesses = 2\n"
                   f"logger = file:{main}\nlogger-req = file:{reqs}\n")
    s = serve(str(ini))
    s.wait_workers(2)
    for i in range(4):
        requests.get(s.url + f"/split/{i}")
    wait_for(lambda: reqs.exists() and reqs.read_text().count("/split/") == 4, what="request lines")
    assert "/split/" not in main.read_text() and "serving" in main.read_text()
    assert "serving" not in reqs.read_text()
    reqs.rename(tmp_path / "requests.log.1")
    os.kill(s.proc.pid, signal.SIGUSR1)
    wait_for(reqs.exists, what="the reopened request log")
    for i in range(4):
        requests.get(s.url + f"/after/{i}")
    wait_for(lambda: reqs.read_text().count("/after/") == 4, what="lines in the new request log")
    ini.write_text(f"[uwsgi]\nhttp-socket = :1\nwsgi-file = {LOGGED}\nlogger = redislog:127.0.0.1:6379\n")
    p = subprocess.run([BIN, str(ini), "--check-config"], capture_output=True, text=True)
    assert p.returncode == 2 and 'oxgate has no logger "redislog"' in p.stderr, p.stderr


def test_no_request_can_forge_a_log_line(serve, tmp_path):
    """Control characters a request brings (a decoded %0A in a path, bytes a
    uwsgi client sent in a header) are written \\xNN, never raw."""
    up = free_port()
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--socket", f"127.0.0.1:{up}", "--processes", "1", "--logto", str(log),
              "--log-format", "%(method) %(uri) %(uagent)")
    uwsgi_request(up, cgi("GET", "/a\n[pid: 1|app: 0|req: 1/1] forged", "",
                          extra=[("HTTP_USER_AGENT", "x\r\ny\x1b[31m")]))
    line = wait_for(lambda: [l for l in log.read_text().splitlines() if l.startswith("GET ")], what="the line")
    assert line == ["GET /a\\x0A[pid: 1|app: 0|req: 1/1] forged x\\x0D\\x0Ay\\x1B[31m"]


def test_a_log_that_cannot_be_written_stops_nothing_and_is_reported_once(tmp_path):
    """The log is a pipe nobody reads (non-blocking, so a full pipe fails
    the write as a full disk does): requests go on being served, the lines
    are dropped, and once the log drains one line says how many were lost."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    port = free_port()
    proc = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", LOGGED, "--processes", "1",
                             "--log-format", "%(uri) " + "x" * 200], stdout=w, stderr=w)
    os.close(w)
    try:
        wait_for(lambda: listens(port), what="listening")
        with requests.Session() as s:
            for i in range(1000):  # ~200 KiB of lines into a 64 KiB pipe
                assert s.get(f"http://127.0.0.1:{port}/{i}").status_code == 200
        os.set_blocking(r, False)
        while True:  # drain it
            try:
                if not os.read(r, 1 << 20):
                    break
            except BlockingIOError:
                break
        assert requests.get(f"http://127.0.0.1:{port}/after").status_code == 200
        time.sleep(0.5)
        out = os.read(r, 1 << 20).decode()
        notices = [line for line in out.splitlines() if "could not be written" in line]
        assert len(notices) == 1, out
        lost = int(re.search(r"oxgate: (\d+) log line", notices[0]).group(1))
        assert 100 < lost < 1000
        assert "/after " in out
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(r)


def test_logfile_chown_lets_an_unprivileged_server_reopen_rotated_logs(serve, tmp_path):
    """Started as root with --uid, the server opened its log files as root
    and could not open them again after logrotate (SIGUSR1): it went on
    writing into the rotated files without a word. --logfile-chown (on in
    Gunicorn's command line, as Gunicorn chowns its logs) gives them to
    the user, and logrotate's `create` makes the new ones as the old."""
    import pathlib
    import pwd
    import shutil
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="oxgate-logs-"))  # pytest's are root's alone (0700)
    os.chmod(d, 0o755)
    (d / "static").mkdir()
    (d / "static" / "a.txt").write_text("a")
    err, acc = d / "err.log", d / "acc.log"
    nobody = pwd.getpwnam("nobody").pw_uid
    s = serve("--static-map", f"/s={d / 'static'}", "--uid", "nobody", "--gid", "nogroup",
              "--logfile-chown", "--logto", str(err), "--req-logger", f"file:{acc}", "--processes", "1")
    assert os.stat(err).st_uid == nobody and os.stat(acc).st_uid == nobody
    requests.get(s.url + "/s/a.txt", timeout=10)
    wait_for(lambda: "/s/a.txt" in acc.read_text(), what="the request line")
    for f in (err, acc):  # logrotate: move, then `create` as the old one was
        f.rename(f.with_suffix(".log.1"))
        f.touch(mode=0o640)
        shutil.chown(f, "nobody", "nogroup")
    os.kill(s.proc.pid, signal.SIGUSR1)

    def logged_in_the_new_file():
        # The worker reopens when the master has passed the signal on: a
        # request before that is logged in the old file, as in uWSGI.
        requests.get(s.url + "/s/a.txt?after", timeout=10)
        return "/s/a.txt?after" in acc.read_text()
    try:
        wait_for(logged_in_the_new_file, what="the request line in the new file")
        requests.get(s.url + "/s/a.txt?last", timeout=10)
        wait_for(lambda: "/s/a.txt?last" in acc.read_text(), what="the next request line in the new file")
        assert "/s/a.txt?last" not in (d / "acc.log.1").read_text()
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_a_log_that_cannot_be_reopened_says_so(serve, tmp_path):
    """Started as root with --uid (no --logfile-chown), in a directory only
    root may write: after logrotate moves the log, SIGUSR1's reopen fails.
    It says so, in the file the log stays on, as uWSGI logs its failed
    open(); it was silent, and every line went to the rotated file."""
    import pathlib
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="oxgate-logs-"))
    os.chmod(d, 0o755)
    (d / "static").mkdir()
    log = d / "app.log"
    # No Python app: this one lives under /root, which nobody cannot read.
    s = serve("--static-map", f"/s={d / 'static'}", "--uid", "nobody", "--gid", "nogroup", "--logto", str(log),
              "--processes", "1")
    try:
        log.rename(d / "app.log.1")
        os.kill(s.proc.pid, signal.SIGUSR1)
        wait_for(lambda: f"cannot reopen the log {log}: Permission denied" in (d / "app.log.1").read_text(),
                 what="the failed reopen said")
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_a_request_log_that_cannot_be_reopened_says_so(serve, tmp_path):
    """The same for --req-logger's file and a `file:` logger's: a failed
    reopen is said in the main log. They were silent, and the request
    lines went on to the rotated file."""
    import pathlib
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="oxgate-logs-"))
    os.chmod(d, 0o755)
    (d / "static").mkdir()
    log, acc, other = d / "app.log", d / "acc.log", d / "other.log"
    s = serve("--static-map", f"/s={d / 'static'}", "--uid", "nobody", "--gid", "nogroup", "--logto", str(log),
              "--logfile-chown", "--req-logger", f"file:{acc}", "--logger", f"file:{other}", "--processes", "1")
    try:
        acc.rename(d / "acc.log.1")
        other.rename(d / "other.log.1")
        os.kill(s.proc.pid, signal.SIGUSR1)
        def logged():  # oxgate's own lines go to the `file:` logger, still on other.log.1
            return "".join(f.read_text() for f in d.glob("*.log*"))
        for path in (acc, other):
            wait_for(lambda: f"cannot reopen the log {path}: Permission denied" in logged(),
                     what=f"the failed reopen of {path} said")
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_log_prefix_starts_oxgates_own_lines_as_uwsgis(serve, tmp_path):
    """--log-prefix=TEXT: "TEXT - " before each of oxgate's own lines, as
    uWSGI writes it; the request lines are left as they are. (It was an
    option oxgate named as not implemented.)"""
    log = tmp_path / "app.log"
    s = serve("--wsgi-file", LOGGED, "--processes", "1", "--logto", str(log), "--log-prefix=PFX",
              "--log-format", "%(uri)")
    requests.get(s.url + "/prefixed")
    wait_for(lambda: "/prefixed\n" in log.read_text(), what="the request line")
    lines = log.read_text().splitlines()
    assert lines[0].startswith("PFX - oxgate "), lines
    assert "/prefixed" in lines and "not implemented" not in log.read_text(), lines
