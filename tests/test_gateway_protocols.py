"""The uwsgi, SCGI and FastCGI protocols, spoken by raw clients to oxgate's gateway sockets."""
# Their malformed packets are in test_malformed_input.py; real nginx, Apache
# and lighttpd speaking them are in test_web_servers.py.
import hashlib
import json
import os
import shutil
import signal
import socket
import time
import struct
import subprocess

import pytest
import requests

from helpers import (ECHO, ROOT, cgi, fcgi_request, free_port, packet, pairs, read_records, rec, scgi_packet,
                     stdout_of, uwsgi_request, wait_for)


@pytest.fixture
def both(serve):
    """oxgate with a uwsgi socket and an HTTP socket, same app."""
    up = free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "2")
    s.uwsgi_port = up
    return s


def test_uwsgi_request_and_normalisation(both):
    out = uwsgi_request(both.uwsgi_port, cgi("POST", "/a b", "x=1", b"hello",
                                             extra=[("HTTP_CONTENT_LENGTH", "5"), ("HTTP_X_A", "1"), ("HTTP_X_A", "2"),
                                                    ("HTTP_COOKIE", "a=1"), ("HTTP_COOKIE", "b=2"),
                                                    ("UWSGI_FILE", "/tmp/evil.py"), ("HTTPS", "on")]))
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding" not in head.lower()  # never chunked on a gateway socket
    seen = json.loads(body)
    assert seen["method"] == "POST" and seen["path"] == "/a b" and seen["query"] == "x=1"
    assert seen["body_len"] == 5 and seen["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert seen["x_headers"] == {"HTTP_X_A": "1, 2"}
    assert seen["cookie"] == "a=1; b=2"
    assert seen["server_name"] == "example.com"  # empty SERVER_NAME: Host's name
    assert seen["scheme"] == "https"
    assert seen["has_http_content_length"] is False
    assert "evil" not in body.decode()


def test_environ_has_only_what_the_request_gave(both):
    """A bare packet: the environ has the variables PEP 3333 requires and
    nothing made up (no REMOTE_ADDR, HTTP_HOST, REQUEST_URI... left empty)."""
    out = uwsgi_request(both.uwsgi_port, packet([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/keys")]))
    keys = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert [k for k in keys if not k.startswith("wsgi.")] == [
        "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT",
        "SERVER_PROTOCOL"]


def test_a_small_body_cut_short_or_stalled_is_said_in_the_log(serve):
    """A uwsgi or SCGI body of up to 64 KiB (read whole before the app)
    that ends short or stalls: the connection closes, and the log says
    why, as it says for a larger one (it said nothing: whoever chased
    nginx's 502 found no line)."""
    up, sp = free_port(), free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--scgi-socket", f"127.0.0.1:{sp}",
              "--socket-timeout", "1")
    uw = packet([("REQUEST_METHOD", "POST"), ("PATH_INFO", "/"), ("CONTENT_LENGTH", "10")]) + b"abc"
    sc = scgi_packet([("CONTENT_LENGTH", "10"), ("SCGI", "1"), ("REQUEST_METHOD", "POST")], b"abc")
    for port, data in ((up, uw), (sp, sc)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b""
    s.wait_log("uwsgi connection closed: bad request body: the front end closed the connection 7 bytes short")
    s.wait_log("scgi connection closed: bad request body: the front end closed the connection 7 bytes short")
    with socket.create_connection(("127.0.0.1", up), timeout=10) as c:
        c.sendall(uw)
        assert c.recv(100) == b""
    s.wait_log("bad request body: no body bytes for 1s (--socket-timeout), 7 short of CONTENT_LENGTH")


def test_uwsgi_large_body_streams(both):
    data = os.urandom(3 * 1024 * 1024 + 5)
    seen = json.loads(uwsgi_request(both.uwsgi_port, cgi("PUT", "/big", body=data)).split(b"\r\n\r\n", 1)[1])
    assert seen["body_len"] == len(data) and seen["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_ping(both):
    assert uwsgi_request(both.uwsgi_port, packet([], m1=100)) == bytes([100, 0, 0, 1])


def test_scgi_request_and_status_header(serve):
    sp = free_port()
    serve("--wsgi-file", ECHO, "--scgi-socket", f"127.0.0.1:{sp}", "--processes", "1")
    out = uwsgi_request(sp, scgi_packet([("CONTENT_LENGTH", "5"), ("SCGI", "1"), ("REQUEST_METHOD", "POST"),
                                         ("REQUEST_URI", "/a%20b?q=1"), ("QUERY_STRING", "q=1"),
                                         ("SERVER_PROTOCOL", "HTTP/1.1"), ("HTTP_HOST", "h")], b"hello"))
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"Status: 200 OK\r\n")  # a CGI response
    seen = json.loads(body)
    assert seen["path"] == "/a b"  # no PATH_INFO sent: from REQUEST_URI, decoded
    assert seen["body_len"] == 5 and seen["server_name"] == "h"
    # A header given twice (nginx before 1.23 sends each line as a
    # variable) is joined, as over uwsgi and FastCGI; it was a 502.
    out = uwsgi_request(sp, scgi_packet([("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"),
                                         ("REQUEST_URI", "/"), ("HTTP_X_A", "1"), ("HTTP_X_A", "2")]))
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["x_headers"] == {"HTTP_X_A": "1, 2"}


@pytest.mark.parametrize("length", ["-1", "+5", "0x5", "99999999999999999999999"])
def test_a_content_length_that_is_no_length_is_refused_on_uwsgi_and_scgi(serve, length):
    """The app was called as if the request had no body, and answered 200;
    HTTP refuses such a length, and so do uwsgi and SCGI now: 400, closed
    (where the body ends cannot be known). An empty one, as nginx sends with
    a GET, is no body."""
    up, sp = free_port(), free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--scgi-socket", f"127.0.0.1:{sp}",
              "--processes", "1")
    vars_ = [("REQUEST_METHOD", "POST"), ("REQUEST_URI", "/"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"),
             ("HTTP_HOST", "h"), ("CONTENT_LENGTH", length)]
    out = uwsgi_request(up, packet(vars_) + b"abcde")
    assert out.split(b"\r\n", 1)[0].split()[1] == b"400", out[:200]
    if length.isdigit():  # SCGI's own rule refuses the others at the netstring
        out = uwsgi_request(sp, scgi_packet([("CONTENT_LENGTH", length), ("SCGI", "1")] + vars_[:-1], b"abcde"))
        assert out.startswith(b"Status: 400 "), out[:200]
    assert "CONTENT_LENGTH is not a length" in s.log()
    empty = [(k, "" if k == "CONTENT_LENGTH" else v) for k, v in vars_]
    out = uwsgi_request(up, packet(empty))
    assert b" 200 " in out.split(b"\r\n", 1)[0] and json.loads(out.split(b"\r\n\r\n", 1)[1])["body_len"] == 0


# FastCGI
PARAMS = [("REQUEST_METHOD", "POST"), ("SCRIPT_NAME", "/fx/a"), ("REQUEST_URI", "/fx/a?z=1"),
          ("DOCUMENT_URI", "/fx/a"), ("QUERY_STRING", "z=1"), ("CONTENT_LENGTH", "5"), ("CONTENT_TYPE", ""),
          ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "f"), ("SERVER_PORT", "80"), ("HTTP_X_A", "b")]


def test_fastcgi_request_keep_conn_and_padding(fcgi):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        for i, pad in enumerate((0, 3)):  # two requests on one kept connection
            c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True, pad=pad))
            recs = read_records(c)
            out = stdout_of(recs, 1)
            assert out.startswith(b"Status: 200 OK\r\n")
            seen = json.loads(out.split(b"\r\n\r\n", 1)[1])
            # nginx's fastcgi_params send SCRIPT_NAME = the whole path and no
            # PATH_INFO: the app is mounted at the root
            assert seen["path"] == "/fx/a" and seen["script_name"] == ""
            assert seen["body_len"] == 5 and seen["query"] == "z=1" and seen["x_headers"] == {"HTTP_X_A": "b"}
            kinds = [k for k, r, cnt in recs]
            assert kinds[-2:] == [6, 3] and recs[-2][2] == b""  # empty STDOUT, then END_REQUEST
            assert recs[-1][2] == b"\0" * 8  # appStatus 0, REQUEST_COMPLETE


def test_fastcgi_get_values_and_unknown_type(fcgi):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        c.sendall(rec(9, 0, pairs([("FCGI_MAX_CONNS", ""), ("FCGI_MAX_REQS", ""), ("FCGI_MPXS_CONNS", "")])))
        (kind, rid, content), = read_records(c)
        assert kind == 10 and rid == 0
        assert b"\x0f\x01FCGI_MPXS_CONNS0" in content and b"\x0d\x01FCGI_MAX_REQS1" in content
        c.sendall(rec(42, 0))
        (kind, rid, content), = read_records(c)
        assert kind == 11 and content[0] == 42


def test_fastcgi_roles_and_multiplexing(fcgi):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        c.sendall(rec(1, 7, struct.pack(">HB5x", 2, 1)))  # AUTHORIZER, keep
        (kind, rid, content), = read_records(c)
        assert (kind, rid, content[4]) == (3, 7, 3)  # UNKNOWN_ROLE
        # a second request begun before the first's params are complete
        c.sendall(rec(1, 1, struct.pack(">HB5x", 1, 1)) + rec(4, 1, pairs(PARAMS)) + rec(1, 2, struct.pack(">HB5x", 1, 1)))
        (kind, rid, content), = read_records(c)
        assert (kind, rid, content[4]) == (3, 2, 1)  # CANT_MPX_CONN for id 2
        c.sendall(rec(4, 1) + rec(5, 1, b"hello") + rec(5, 1))
        recs = read_records(c)
        assert stdout_of(recs, 1).startswith(b"Status: 200 OK")
        # an abort before the params end: END_REQUEST, and the connection lives on
        c.sendall(rec(1, 3, struct.pack(">HB5x", 1, 1)) + rec(2, 3))
        (kind, rid, content), = read_records(c)
        assert (kind, rid) == (3, 3)


def test_a_kept_fastcgi_connection_serves_a_request_begun_before_the_last_body_ended(serve):
    """Once END_REQUEST is out, the web server may begin the next request
    on the kept connection without sending the rest of the last one's
    body (Apache's mod_proxy_fcgi does, with the same id, for an answer
    given early: a 413, a 401 from an app that did not read). The next
    request is served; its records were taken for the old body, and it
    waited unanswered."""
    fp = free_port()
    serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--limit-post", "1000")
    params = [(k, v) for k, v in PARAMS if k != "CONTENT_LENGTH"] + [("CONTENT_LENGTH", "300000")]
    get = [(k, v) for k, v in PARAMS if k not in ("CONTENT_LENGTH", "REQUEST_METHOD")] + [
        ("CONTENT_LENGTH", "0"), ("REQUEST_METHOD", "GET")]
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        for _ in range(3):
            # Part of a body over --limit-post: answered 413 at once.
            c.sendall(rec(1, 1, struct.pack(">HB5x", 1, 1)) + rec(4, 1, pairs(params)) + rec(4, 1)
                      + b"".join(rec(5, 1, b"x" * 8000) for _ in range(12)))
            assert stdout_of(read_records(c), 1).startswith(b"Status: 413")
            # The next request at once, the rest of that body never sent.
            c.sendall(fcgi_request(1, get, keep=True))
            assert stdout_of(read_records(c, timeout=5), 1).startswith(b"Status: 200 OK")


def test_an_idle_kept_fastcgi_connection_waits_for_its_next_request(serve):
    """Between requests a kept connection waits as long as the web server
    keeps it (nginx closes idle upstream connections itself): not closed
    at --socket-timeout, which is for a request under way, nor logged."""
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1",
              "--socket-timeout", "1")
    with socket.create_connection(("127.0.0.1", fp)) as c:
        c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK")
        time.sleep(2.5)
        c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK")
    assert "fastcgi connection closed" not in s.log()


def test_a_fastcgi_connection_that_sends_nothing_is_closed_at_socket_timeout(serve):
    """Only a kept connection waits for its next request as long as the web
    server likes: one that never sent a request holds a --max-connections
    place, and is closed at --socket-timeout."""
    fp = free_port()
    serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--socket-timeout", "1")
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        assert c.recv(1) == b""


def test_a_buffer_size_over_64_kib_holds_for_fastcgi_and_scgi(serve):
    """Only uwsgi's vars block is limited to 16 bits: FastCGI params and an
    SCGI header block take what --buffer-size allows."""
    fp, sp = free_port(), free_port()
    serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--scgi-socket", f"127.0.0.1:{sp}",
          "--processes", "1", "--buffer-size", "262144")
    cookie = ("HTTP_COOKIE", "c=" + "x" * 70_000)
    with socket.create_connection(("127.0.0.1", fp)) as c:
        block = pairs(PARAMS + [cookie])  # over one record's 65,535 bytes: two
        c.sendall(rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, block[:60_000]) + rec(4, 1, block[60_000:])
                  + rec(4, 1) + rec(5, 1, b"hello") + rec(5, 1))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK")
    out = uwsgi_request(sp, scgi_packet([("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"),
                                         ("REQUEST_URI", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"), cookie]))
    assert out.startswith(b"Status: 200 OK"), out[:200]


def params_with_length(n):
    return [(k, str(n) if k == "CONTENT_LENGTH" else v) for k, v in PARAMS]


def test_fastcgi_aborts_and_other_records_once_the_params_are_in(fcgi):
    """FCGI_ABORT_REQUEST ends a request at any stage: while its STDIN is
    still arriving (END_REQUEST alone, the app never called), and while
    the app streams its body in (END_REQUEST, no STDOUT); a second
    BEGIN_REQUEST or a GET_VALUES meanwhile is answered; the kept
    connection serves on."""
    begin = rec(1, 1, struct.pack(">HB5x", 1, 1))
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        # Before the app: 10 of 100 bytes, then the abort.
        c.sendall(begin + rec(4, 1, pairs(params_with_length(100))) + rec(4, 1) + rec(5, 1, b"x" * 10) + rec(2, 1))
        recs = read_records(c, timeout=5)
        assert [(k, r) for k, r, _ in recs] == [(3, 1)], recs
        # A second request and a management query while the first's STDIN
        # is still arriving: refused, and answered.
        c.sendall(begin + rec(4, 1, pairs(params_with_length(5))) + rec(4, 1) + rec(5, 1, b"he")
                  + rec(1, 2, struct.pack(">HB5x", 1, 1)) + rec(9, 0, pairs([("FCGI_MPXS_CONNS", "")])))
        early = read_records(c, timeout=5)
        assert (early[0][0], early[0][1], early[0][2][4]) == (3, 2, 1), early  # CANT_MPX_CONN for id 2
        c.sendall(rec(5, 1, b"llo") + rec(5, 1))
        # read_records counts a GET_VALUES_RESULT as an end too: it may have
        # come with the refusal, or be still to come before the response.
        pending_result = 10 not in [k for k, _, _ in early]
        recs = read_records(c, until_end_requests=1 + pending_result, timeout=5)
        assert 10 in [k for k, _, _ in early + recs], early + recs  # GET_VALUES_RESULT
        seen = json.loads(stdout_of(recs, 1).split(b"\r\n\r\n", 1)[1])
        assert seen["body_len"] == 5
        # While the app reads a streamed body: END_REQUEST, no STDOUT.
        c.sendall(begin + rec(4, 1, pairs(params_with_length(200_000))) + rec(4, 1)
                  + b"".join(rec(5, 1, b"y" * 15_000) for _ in range(5)) + rec(2, 1))
        recs = read_records(c, timeout=5)
        assert [(k, r) for k, r, _ in recs] == [(3, 1)], [(k, r, len(x)) for k, r, x in recs]
        # The connection serves on.
        c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK")


@pytest.mark.skipif(not shutil.which("cgi-fcgi"), reason="cgi-fcgi (libfcgi-bin) is not installed")
def test_cgi_fcgi_client(fcgi):
    env = dict(os.environ, REQUEST_METHOD="GET", SCRIPT_NAME="/", PATH_INFO="/hello", QUERY_STRING="a=1",
               SERVER_NAME="cgi", SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1", HTTP_X_FROM="cgi-fcgi")
    p = subprocess.run(["cgi-fcgi", "-bind", "-connect", f"127.0.0.1:{fcgi.fcgi_port}"], env=env,
                       capture_output=True, timeout=20)
    head, body = p.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"Status: 200 OK")
    seen = json.loads(body)
    assert seen["path"] == "/hello" and seen["query"] == "a=1" and seen["x_headers"]["HTTP_X_FROM"] == "cgi-fcgi"


def test_fastcgi_keep_conn_does_not_hold_up_a_graceful_stop(serve):
    """nginx's `fastcgi_keep_conn on` leaves idle connections open between
    requests: a graceful stop closes them at once, instead of waiting for
    --socket-timeout or the whole --reload-mercy (both 20 s here)."""
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1",
              "--socket-timeout", "20", "--reload-mercy", "20", "--worker-reload-mercy", "20")
    s.wait_workers(1)
    with socket.create_connection(("127.0.0.1", fp)) as c:
        c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK\r\n")
        s.proc.send_signal(signal.SIGTERM)
        c.settimeout(10)
        assert c.recv(1) == b""  # closed by the server, long before 20 s
        assert s.proc.wait(10) == 0
    assert "still busy" not in s.log() and "still running" not in s.log()


def test_a_request_sent_on_a_kept_fastcgi_connection_as_the_stop_comes_is_answered(serve):
    """nginx (fastcgi_keep_conn) and Apache (enablereuse) take a kept
    connection from their cache as the worker stops: closed at once under
    them, that request was a 502 or 503 (a POST is not retried). The
    connection has a moment for it, as an idle HTTP one has; then closes."""
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1",
              "--reload-mercy", "20", "--worker-reload-mercy", "20")
    s.wait_workers(1)
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK\r\n")
        s.proc.send_signal(signal.SIGTERM)
        s.wait_log("stopping gracefully")
        time.sleep(0.2)
        c.sendall(fcgi_request(1, PARAMS, b"again", keep=True))
        out = stdout_of(read_records(c), 1)
        assert out.startswith(b"Status: 200 OK\r\n") and json.loads(out.split(b"\r\n\r\n", 1)[1])["body_len"] == 5
        assert c.recv(1) == b""  # and then closed
    assert s.proc.wait(10) == 0


def test_fastcgi_limit_post(serve):
    """--limit-post applies on FastCGI as on the other front ends: a body
    declared over it gets 413 without reaching the app, and the kept
    connection goes on with the next request. The refusal is logged, as
    uWSGI logs it (there was no trace of it)."""
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--limit-post", "100")
    big = [(k, v) for k, v in PARAMS if k != "CONTENT_LENGTH"] + [("CONTENT_LENGTH", "5000")]
    with socket.create_connection(("127.0.0.1", fp)) as c:
        c.sendall(fcgi_request(1, big, b"x" * 5000, keep=True))
        assert stdout_of(read_records(c), 1).startswith(b"Status: 413")
        c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
        out = stdout_of(read_records(c), 1)
        assert out.startswith(b"Status: 200 OK\r\n")
        assert json.loads(out.split(b"\r\n\r\n", 1)[1])["body_len"] == 5
    wait_for(lambda: "request refused with 413: a body of 5000 bytes is over --limit-post (100 bytes)" in s.log(),
             what="the 413 logged", show=s.log)


def test_fastcgi_stdin_must_be_its_content_length(serve):
    """STDIN is CONTENT_LENGTH bytes, as uwsgi and SCGI bodies are: more or
    fewer is a 400, and with no length, more than --limit-post is a 413.
    The kept connection goes on with the next request each time."""
    fp = free_port()
    serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--limit-post", "100")
    def with_length(n):
        return [(k, v) for k, v in PARAMS if k != "CONTENT_LENGTH"] + ([("CONTENT_LENGTH", n)] if n else [])
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        for length, body, status in (("5", b"x" * 10, b"400"), ("100", b"x" * 10, b"400"), ("", b"x" * 5000, b"413"),
                                     ("5", b"hello", b"200")):
            c.sendall(fcgi_request(1, with_length(length), body, keep=True))
            assert stdout_of(read_records(c), 1).startswith(b"Status: " + status), (length, len(body))
            c.sendall(fcgi_request(1, PARAMS, b"hello", keep=True))
            assert stdout_of(read_records(c), 1).startswith(b"Status: 200 OK\r\n")


def test_fastcgi_keep_conn_after_a_body_the_app_did_not_read(serve):
    """nginx with fastcgi_keep_conn: a POST larger than what is read ahead,
    to an app that answers without reading it (a 401, say), then the next
    request on the same connection. The rest of the body is skipped, by the
    connection or by the app's input draining it, and never the next
    request's records with it."""
    fp = free_port()
    serve("--wsgi-file", str(ROOT / "examples" / "hello.py"), "--fastcgi-socket", f"127.0.0.1:{fp}",
          "--processes", "1")
    params = [(k, v) for k, v in PARAMS if k != "CONTENT_LENGTH"] + [("CONTENT_LENGTH", "200000")]
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        for n in range(3):
            head = fcgi_request(1, params, b"", keep=True)[:-8]  # all but the empty STDIN
            c.sendall(head + b"".join(rec(5, 1, b"x" * 50_000) for _ in range(2)))
            assert stdout_of(read_records(c), 1).startswith(b"Status: 200"), n
            # The rest of the body and its end, then the next request at once.
            c.sendall(b"".join(rec(5, 1, b"x" * 50_000) for _ in range(2)) + rec(5, 1)
                      + fcgi_request(1, PARAMS, b"hello", keep=True))
            assert stdout_of(read_records(c), 1).startswith(b"Status: 200"), n


@pytest.mark.parametrize("front", ["uwsgi", "scgi", "fastcgi"])
def test_a_streamed_head_is_not_held_for_the_next_chunk(serve, front):
    """An app that streams its head and first chunk, then waits (as a
    server-sent event or a long poll does): the front end gets them at
    once, not with the next chunk 4 s later."""
    from helpers import BEHAVIOUR
    port = free_port()
    flag = {"uwsgi": "--uwsgi-socket", "scgi": "--scgi-socket", "fastcgi": "--fastcgi-socket"}[front]
    s = serve("--wsgi-file", BEHAVIOUR, flag, f"127.0.0.1:{port}", "--processes", "1")
    requests.get(s.url + "/", timeout=30)  # the app loaded: the 2 s below are the app's alone
    vars = [("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"), ("PATH_INFO", "/slow"),
            ("QUERY_STRING", "gap=4"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "x"),
            ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1")]
    request = {"uwsgi": lambda: packet(vars), "scgi": lambda: scgi_packet(vars),
               "fastcgi": lambda: fcgi_request(1, vars)}[front]()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
        c.sendall(request)
        got = b""
        # the head, then "a" (in a STDOUT record over FastCGI), well before "b"
        while not got.endswith(b"a"):
            chunk = c.recv(4096)  # times out (a failure) if held back
            assert chunk, got
            got += chunk
    assert b"200" in got.split(b"\r\n")[0] + got[:64] and b"b" not in got.split(b"\r\n\r\n", 1)[1]


def test_a_variable_given_twice_takes_the_last_value_headers_are_joined(both):
    """nginx's `include uwsgi_params;` then `uwsgi_param NAME value;` sends
    NAME twice: the last one counts, as in uWSGI and PHP. Repeated header
    lines are joined."""
    out = uwsgi_request(both.uwsgi_port, cgi("GET", "/", extra=[("SERVER_NAME", "first"), ("SERVER_NAME", "second"),
                                                               ("HTTP_X_A", "1"), ("HTTP_X_A", "2")]))
    seen = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert seen["server_name"] == "second" and seen["x_headers"] == {"HTTP_X_A": "1, 2"}


def test_a_flood_of_management_records_during_a_body_costs_no_memory(fcgi):
    """The answers owed while the app reads its body wait, bounded: a peer
    sending a million management records meanwhile (8 bytes each, 16 owed
    for each) made the worker hold every answer (200 MiB of them took a
    worker to 1.3 GB). Past 64 KiB owed, no more are kept; the request is
    served whole."""
    begin = rec(1, 1, struct.pack(">HB5x", 1, 1))
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port)) as c:
        c.sendall(begin + rec(4, 1, pairs(params_with_length(100_000))) + rec(4, 1) + rec(5, 1, b"a" * 1000))
        junk = rec(77, 0) * (1 << 16)
        for _ in range(16):
            c.sendall(junk)
        c.sendall(b"".join(rec(5, 1, b"a" * 33_000) for _ in range(3)) + rec(5, 1))
        c.settimeout(30)
        buf, at, unknown, stdout = bytearray(), 0, 0, b""
        while True:
            chunk = c.recv(1 << 20)
            assert chunk, "closed before the request's end"
            buf += chunk
            ended = False
            while len(buf) - at >= 8:
                _, kind, rid, clen, plen, _ = struct.unpack_from(">BBHHBB", buf, at)
                if len(buf) - at < 8 + clen + plen:
                    break
                unknown += kind == 11
                if (kind, rid) == (6, 1):
                    stdout += bytes(buf[at + 8:at + 8 + clen])
                ended |= (kind, rid) == (3, 1)
                at += 8 + clen + plen
            if ended:
                break
    assert unknown <= (64 << 10) // 16, unknown
    assert json.loads(stdout.split(b"\r\n\r\n", 1)[1])["body_len"] == 100_000


def test_an_answer_given_before_the_body_is_read_lets_the_web_server_send_the_rest(serve, tmp_path):
    """A POST over uwsgi answered without its body read (here a static
    file's 405): the rest of the body the web server is still sending is
    read and let go, as for a 413. The connection was closed with it
    unread, the web server's writes failed, and Apache's mod_proxy_uwsgi
    answered its client 503 for the answer."""
    (tmp_path / "hello.txt").write_text("hello\n")
    port = free_port()
    serve("--uwsgi-socket", f"127.0.0.1:{port}", "--static-map", f"/static={tmp_path}", "--wsgi-file", ECHO,
          "--processes", "1")
    body = b"x" * (4 << 20)
    head = packet([(k, v) for k, v in [("REQUEST_METHOD", "POST"), ("PATH_INFO", "/static/hello.txt"),
                                       ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"),
                                       ("REQUEST_URI", "/static/hello.txt"), ("REMOTE_ADDR", "127.0.0.1"),
                                       ("SERVER_PORT", "80"), ("SERVER_NAME", "x"), ("HTTP_HOST", "x"),
                                       ("CONTENT_LENGTH", str(len(body)))]])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(head + body[:65536])
        # The answer comes first, as Apache reads it once it has sent all.
        time.sleep(0.5)
        c.sendall(body[65536:])  # BrokenPipeError or ConnectionResetError when closed unread
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 405"), out[:200]


def test_a_reason_phrase_past_ascii_goes_out_in_latin_1_on_every_socket(serve, tmp_path):
    """PEP 3333's status is a latin-1 string: "200 Fine é" is the byte E9 on
    the wire, as on the HTTP socket and under uWSGI; the uwsgi, SCGI and
    FastCGI sockets wrote its UTF-8 (the client saw "Fine Ã©")."""
    (tmp_path / "reason.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 Fine \\u00e9', [('Content-Type', 'text/plain')])\n"
        "    return [b'x']\n")
    up, sp, fp = free_port(), free_port(), free_port()
    s = serve("--wsgi-file", str(tmp_path / "reason.py"), "--socket", f"127.0.0.1:{up}",
              "--scgi-socket", f"127.0.0.1:{sp}", "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1")
    line = b"HTTP/1.1 200 Fine \xe9\r\n"
    assert uwsgi_request(up, cgi()).startswith(line)
    assert uwsgi_request(sp, scgi_packet([("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET"),
                                          ("REQUEST_URI", "/")])).startswith(b"Status: 200 Fine \xe9\r\n")
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as sock:
        sock.sendall(fcgi_request(1, [("REQUEST_METHOD", "GET"), ("REQUEST_URI", "/")]))
        assert stdout_of(read_records(sock), 1).startswith(b"Status: 200 Fine \xe9\r\n")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(line)
