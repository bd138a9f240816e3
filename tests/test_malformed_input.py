"""Hostile and malformed input on every protocol: refused, answered 4xx/5xx or timed out, and serving goes on."""
import socket
import struct
import time

import pytest
import requests

from helpers import (APPS, ECHO, cgi, fcgi_request, free_port, packet, pairs, raw_request, rec, scgi_packet,
                     uwsgi_request, wait_for)


# HTTP. This srv overrides conftest's (the behaviour app).
@pytest.fixture
def srv(serve):
    return serve("--wsgi-file", str(APPS / "validated.py"), "--limit-post", "1000", "--buffer-size", "8192")


CASES = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505),
    # (HTTP/2's own preface is served HTTP/2: test_tls_and_http2.py.)
    ("http/2.0 request line", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
    ("bad content-length", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("two different lengths", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("bad chunk size", b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("head too large", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("body over --limit-post", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
]


def test_connect_is_answered_405_with_the_methods_allowed(srv):
    """An app server has no tunnel to offer; the 405 names what is allowed,
    as RFC 9110 requires of a 405."""
    out = raw_request(srv.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    head = out.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 405 "), out
    allow = [line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("allow:")]
    assert len(allow) == 1 and "GET" in allow[0] and "CONNECT" not in allow[0], head


def test_a_target_the_http_crate_refuses_is_a_400_with_a_log_line(srv):
    """A raw `"`, `<` or `>` in the target (curl and hand-made clients send
    them; browsers encode them): hyper's URI parsing refuses the head and
    answers 400 itself. The log says so (once a minute at most), not
    nothing."""
    out = raw_request(srv.port, b'GET /p?s="y" HTTP/1.1\r\nHost: x\r\n\r\n')
    assert out.startswith(b"HTTP/1.1 400 "), out
    srv.wait_log("a request head was answered 400 Bad Request: invalid URI (from 127.0.0.1)")


@pytest.mark.parametrize("name,data,status", CASES, ids=[c[0] for c in CASES])
def test_malformed(srv, name, data, status):
    out = raw_request(srv.port, data)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), (name, out[:200])
    # the server closed the connection (raw_request returned) and still serves
    assert requests.get(srv.url + "/env").status_code == 200
    assert srv.proc.poll() is None


def test_a_body_over_the_default_limit_is_refused(serve):
    """--limit-post is 1 GiB unless given: a 2 GiB Content-Length is refused
    before a byte of it is read; 0 turns the limit off."""
    s = serve("--wsgi-file", str(APPS / "validated.py"))
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n"
    assert raw_request(s.port, head).startswith(b"HTTP/1.1 413 ")
    wait_for(lambda: "request refused with 413: a body of 2147483648 bytes is over --limit-post "
             "(1073741824 bytes) (from 127.0.0.1)" in s.log(), what="the 413 logged", show=s.log)
    off = serve("--wsgi-file", str(APPS / "validated.py"), "--limit-post", "0")
    with socket.create_connection(("127.0.0.1", off.port), timeout=10) as c:
        c.sendall(head + b"x" * 1000)
        c.settimeout(1)
        with pytest.raises(socket.timeout):  # still reading the body
            c.recv(100)


def test_chunked_upload_over_limit_fails_cleanly(srv):
    r = requests.post(srv.url + "/count", data=iter([b"x" * 600, b"y" * 600]))
    assert r.status_code == 413
    assert "larger than --limit-post" in srv.log()
    assert requests.get(srv.url + "/env").status_code == 200


def test_bad_chunk_in_a_streamed_body_is_400(srv):
    out = raw_request(srv.port, b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert "Traceback" not in srv.log()


def test_slow_head_times_out(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--socket-timeout", "1")
    out = raw_request(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=10, expect_close=True)
    # hyper answers 408 or just closes; either way the connection does not hang
    assert out == b"" or out.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("proto", ["uwsgi", "scgi", "fastcgi"])
def test_a_gateway_head_trickled_in_is_cut_at_socket_timeout(serve, proto):
    """--socket-timeout bounds the whole head over the gateway protocols,
    not each read: a byte every half second keeps no connection."""
    port = free_port()
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--socket-timeout", "2",
              f"--{proto}-socket", f"127.0.0.1:{port}")
    params = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_NAME", "x"), ("SERVER_PORT", "80"),
              ("SERVER_PROTOCOL", "HTTP/1.1"), ("HTTP_X_PAD", "p" * 40)]
    data = {"uwsgi": packet(params), "scgi": scgi_packet([("CONTENT_LENGTH", "0"), ("SCGI", "1")] + params),
            "fastcgi": fcgi_request(1, params)}[proto]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        closed = False
        for i in range(len(data) - 1):  # never the last byte
            try:
                c.sendall(data[i:i + 1])
            except OSError:
                closed = True
                break
            time.sleep(0.5)
            if i > 16:  # past 8 s: it must have been cut by now
                break
        if not closed:
            c.settimeout(5)
            try:
                closed = c.recv(1) == b""
            except ConnectionResetError:
                closed = True
        assert closed
    s.wait_log("within 2s (--socket-timeout)")


def test_length_and_chunked_together_are_refused(srv):
    # RFC 9112 6.3 lets a server refuse it, and Gunicorn does: a proxy in
    # front may have framed it by the length. Nothing after it is read.
    out = raw_request(srv.port, b"POST /env HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /env HTTP/1.1\r\nHost: y\r\n\r\n",
                      expect_close=True)
    assert out.startswith(b"HTTP/1.1 400 ")
    assert out.count(b"HTTP/1.1 ") == 1
    assert b"\r\nconnection: close\r\n" in out.lower()
    srv.wait_log("request refused with 400: Content-Length and Transfer-Encoding together")


# uwsgi
@pytest.mark.parametrize("name,data,logged", [
    ("unknown modifier", packet([("A", "1")], m1=5), "modifier1 5 refused"),
    ("http to a uwsgi socket", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP was sent to a uwsgi socket"),
    ("var past datasize", struct.pack("<BHB", 0, 6, 0) + struct.pack("<H", 1) + b"A" + struct.pack("<H", 9) + b"x",
     "runs past the vars block"),
    ("zero-length key", struct.pack("<BHB", 0, 4, 0) + b"\x00\x00\x00\x00", "has an empty name"),
    ("oversized vars", packet([("HTTP_COOKIE", "x" * 10000)]), "is over --buffer-size"),
    ("ends inside a length", struct.pack("<BHB", 0, 1, 0) + b"\x01", "runs past the vars block"),
])
def test_malformed_packets(serve, name, data, logged):
    up = free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "1", "--buffer-size", "8192")
    out = uwsgi_request(up, data)
    assert not out.startswith(b"HTTP/1.1 200")
    s.wait_log(logged)
    assert uwsgi_request(up, cgi()).startswith(b"HTTP/1.1 200 OK")  # still serving


def test_two_content_lengths_in_a_uwsgi_packet_never_reset_the_connection(serve):
    """The last CONTENT_LENGTH is the one served (as every front end reads
    them): a first one of 0 must not let a body the packet lacks be taken
    from it (that panicked the worker's task and reset the connection)."""
    up = free_port()
    s = serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "1")
    vars = [("REQUEST_METHOD", "POST"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("CONTENT_LENGTH", "0"), ("CONTENT_LENGTH", "5")]
    with socket.create_connection(("127.0.0.1", up), timeout=10) as c:
        c.sendall(packet(vars))
        c.shutdown(socket.SHUT_WR)  # and no body: closed as any short body is
        while c.recv(65536):
            pass
    assert "panicked" not in s.log(), s.log()
    with socket.create_connection(("127.0.0.1", up), timeout=10) as c:
        c.sendall(packet(vars) + b"hello")
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 ") and b'"body_len": 5' in out, out


def test_truncated_header_times_out(serve):
    up = free_port()
    serve("--wsgi-file", ECHO, "--socket", f"127.0.0.1:{up}", "--processes", "1", "--socket-timeout", "1")
    t0 = time.monotonic()
    assert uwsgi_request(up, b"\x00\x10", timeout=10) == b""  # closed, not left hanging
    assert time.monotonic() - t0 < 8


# SCGI
@pytest.mark.parametrize("data,logged", [
    (b"012:x", "not a plain decimal"),
    (b"5:ab\0cd;", "does not end with"),
    (scgi_packet([("SCGI", "1"), ("CONTENT_LENGTH", "0")]), "first header must be CONTENT_LENGTH"),
    (scgi_packet([("CONTENT_LENGTH", "0")]), "SCGI=1 is missing"),
    (b"GET / HTTP/1.1\r\n\r\n", "HTTP was sent to an SCGI socket"),
])
def test_scgi_malformed(serve, data, logged):
    sp = free_port()
    s = serve("--wsgi-file", ECHO, "--scgi-socket", f"127.0.0.1:{sp}", "--processes", "1")
    assert not uwsgi_request(sp, data).startswith(b"Status: 200")
    s.wait_log(logged)


# FastCGI
@pytest.mark.parametrize("data,logged", [
    (struct.pack(">BBHHBB", 2, 1, 1, 8, 0, 0) + b"\0" * 8, "version 2"),
    (rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, b"\x05\x05ab") + rec(4, 1), "runs past its stream"),
    (rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, b"\x00\x01x") + rec(4, 1), "empty name"),
    (rec(1, 1, b"\0\1"), "not 8 bytes"),
    (b"GET / HTTP/1.1\r\n\r\n", "HTTP was sent to a FastCGI socket"),
])
def test_fastcgi_malformed(fcgi, data, logged):
    with socket.create_connection(("127.0.0.1", fcgi.fcgi_port), timeout=10) as c:
        c.sendall(data)
        c.settimeout(10)
        answer = c.recv(65536)
        assert b"Status: 200" not in answer
        if data.startswith(b"GET "):
            # An HTTP client is told, as on the uwsgi and SCGI sockets.
            assert answer.startswith(b"HTTP/1.0 400 Bad Request") and b"speaks the fastcgi protocol" in answer, answer
    fcgi.wait_log(logged)


def test_fastcgi_oversized_params(serve):
    fp = free_port()
    s = serve("--wsgi-file", ECHO, "--fastcgi-socket", f"127.0.0.1:{fp}", "--processes", "1", "--buffer-size", "8192")
    with socket.create_connection(("127.0.0.1", fp), timeout=10) as c:
        c.sendall(rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, pairs([("HTTP_COOKIE", "x" * 9000)])) + rec(4, 1))
        assert c.recv(65536) == b""
    s.wait_log("over --buffer-size 8192")
