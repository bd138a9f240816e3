"""Bad HTTP gets a 4xx/5xx and a closed connection; the server keeps serving."""
import pytest
import requests

from conftest import APPS, raw_request


@pytest.fixture
def srv(serve):
    return serve("--wsgi-file", str(APPS / "validated.py"), "--limit-post", "1000", "--buffer-size", "8192")


CASES = [
    ("garbage request line", b"GARBAGE\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505),
    ("http/2 without tls", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("space in header name", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
    ("bad content-length", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("two different lengths", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    ("bad chunk size", b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("head too large", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ("body over --limit-post", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
]


@pytest.mark.parametrize("name,data,status", CASES, ids=[c[0] for c in CASES])
def test_malformed(srv, name, data, status):
    out = raw_request(srv.port, data)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), (name, out[:200])
    # the server closed the connection (raw_request returned) and still serves
    assert requests.get(srv.url + "/env").status_code == 200
    assert srv.proc.poll() is None


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
    out = raw_request(s.port, b"GET / HTTP/1.1\r\nHost: x\r\n", timeout=10)
    # hyper answers 408 or just closes; either way the connection does not hang
    assert out == b"" or out.startswith(b"HTTP/1.1 408")


def test_length_and_chunked_together_close_the_connection(srv):
    # RFC 9112 6.3: Transfer-Encoding wins, and the connection must close
    # afterwards (a smuggling attempt cannot ride on it).
    out = raw_request(srv.port, b"POST /env HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /env HTTP/1.1\r\nHost: y\r\n\r\n")
    assert out.count(b"HTTP/1.1 ") == 1
    assert b"\r\nconnection: close\r\n" in out.lower()
    assert b'"CONTENT_LENGTH"' not in out
