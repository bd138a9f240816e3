"""Apps that break the rules, errors, and what the log shows."""
import json
import re
import shutil
import socket
import subprocess
import time

import pytest
import requests

from conftest import APPS, raw_request

BEHAVIOUR = str(APPS / "behaviour.py")


@pytest.fixture(params=["1", "4"], ids=["inline", "threads"])
def srv(serve, request):
    return serve("--wsgi-file", BEHAVIOUR, "--threads", request.param)


def test_read_without_size_and_past_the_end(srv):
    data = b"q" * 300000
    r = requests.post(srv.url + "/read-all", data=data)
    assert r.json()["len"] == len(data) and r.json()["again"] == 0
    r = requests.post(srv.url + "/read-all", data=iter([b"a" * 10, b"b" * 100000]))
    assert r.json()["len"] == 100010


def test_unread_body_does_not_break_the_next_request(srv):
    with requests.Session() as s:
        for size in (10, 1 << 20):
            assert s.post(srv.url + "/ignore-body", data=b"z" * size).content == b"ignored"
            assert s.get(srv.url + "/thread").status_code == 200


def test_unread_body_is_drained_and_the_connection_kept(srv):
    """An app that ignores a 4 MiB body: the rest is read and dropped, and
    the next request on the same connection is answered (not a close)."""
    body = b"z" * (4 << 20)
    out = raw_request(srv.port, b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body + b"GET /thread HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2, out[:500]


@pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "threads"])
def test_socket_timeout_spares_requests_in_progress(serve, threads):
    """--socket-timeout bounds the wait for a request head, never the app
    or its response: a 1.5 s app then a 1.5 s pause between chunks, under a
    1 s timeout, get through whole. Then the idle connection is closed."""
    s = serve("--wsgi-file", BEHAVIOUR, "--threads", threads, "--socket-timeout", "1")
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        sock.sendall(b"GET /slow?first=1.5&gap=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while (b := sock.recv(65536)):
            out += b
    # recv returned b"": the server closed the idle connection by itself.
    assert out.startswith(b"HTTP/1.1 200 OK"), out
    assert out.endswith(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n"), out


@pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "threads"])
def test_socket_timeout_spares_a_response_being_read(serve, threads):
    """A 24 MiB body the client reads steadily for longer than three
    timeouts: the app is long done with it, but the connection stays open
    until all of it is sent."""
    s = serve("--wsgi-file", BEHAVIOUR, "--threads", threads, "--socket-timeout", "1")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.settimeout(15)
        sock.connect(("127.0.0.1", s.port))
        sock.sendall(b"GET /bigone?mb=24 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got, start = 0, time.monotonic()
        while (b := sock.recv(65536)):
            got += len(b)
            time.sleep(0.008)
        assert time.monotonic() - start > 3, "read too fast to test anything"
    assert got > 24 << 20 and got < (24 << 20) + 500, got


def test_exception_is_500_and_logged_not_shown(srv):
    r = requests.get(srv.url + "/raise")
    assert r.status_code == 500
    assert b"deliberate" not in r.content and b"Traceback" not in r.content
    log = srv.log()
    assert "Traceback" in log and "deliberate failure in the app" in log
    assert "GET /raise" in log
    assert requests.get(srv.url + "/thread").status_code == 200


def test_exception_after_first_chunk_cuts_the_connection(srv):
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(srv.url + "/raise-late").content
    assert "deliberate failure after the first chunk" in srv.log()
    assert requests.get(srv.url + "/thread").status_code == 200


@pytest.mark.parametrize("path,logged", [
    ("/hop", "hop-by-hop header"),
    ("/no-start", "without calling start_response"),
    ("/str-body", "a WSGI body is made of bytes"),
    ("/not-latin1", "character above U+00FF"),
])
def test_protocol_violations_are_500(srv, path, logged):
    r = requests.get(srv.url + path)
    assert r.status_code == 500
    assert logged in srv.log()
    # Nothing of the refused head, nor of the request's headers, leaks into
    # the next response's on the same connection.
    out = raw_request(srv.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Mine: m\r\n\r\n"
                      "GET /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert out.count(b"HTTP/1.1 ") == 2, out
    head = out.rsplit(b"HTTP/1.1 ", 1)[1].split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert b"content-type: text/plain" in head, head
    assert not any(b"caf" in h or b"x-fine" in h or b"x-mine" in h or b"host" in h for h in head), head


def test_short_body_closes_the_connection(srv):
    out = raw_request(srv.port, b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"content-length: 100" in head.lower()
    assert body == b"only ten b"  # and then the server closed instead of hanging


def test_long_body_is_cut_to_content_length(srv):
    out = raw_request(srv.port, b"GET /long HTTP/1.1\r\nHost: x\r\n\r\nGET /thread HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    first, rest = out.split(b"\r\n\r\n", 1)
    assert rest.startswith(b"12345HTTP/1.1 200 OK")


def test_app_output_goes_to_the_log(srv):
    assert requests.get(srv.url + "/print").content == b"printed"
    log = srv.log()
    assert "hello from the app on stdout" in log
    assert "hello from wsgi.errors" in log


def test_sys_executable_and_argv(srv):
    info = requests.get(srv.url + "/sys").json()
    assert info["argv"] == ["oxgate"]
    assert "python" in info["executable"]


@pytest.mark.parametrize("size,skip", [(100000, 0), (5, 0), (3 << 20, 1000), (0, 0)])
def test_file_wrapper_served_from_the_descriptor(srv, size, skip):
    r = requests.get(srv.url + f"/file?size={size}&skip={skip}")
    expected = (bytes(range(256)) * (size // 256) + b"z" * (size % 256))[skip:]
    assert r.content == expected
    # read from the descriptor, so the length is known without iterating
    assert r.headers["Content-Length"] == str(len(expected))


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it)")
def test_file_wrapper_goes_out_with_sendfile(srv, tmp_path):
    """The file's bytes go from the page cache to the socket: sendfile(2)
    calls, in the worker, add up to the body, and nothing reads the file."""
    requests.get(srv.url + "/thread")  # the app is loaded, its worker settled
    pids = srv.worker_pids() or [srv.proc.pid]  # no master: it serves itself
    out = tmp_path / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", *(f"-p{p}" for p in pids), "-e", "trace=sendfile,pread64,read,recvfrom",
                               "-o", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        first = tracer.stderr.readline()
        if "attached" not in first:
            pytest.skip(f"strace cannot attach here: {first.strip()}")
        # traced once a request's read shows (the event loop's thread too)
        deadline = time.monotonic() + 10
        while "recvfrom(" not in out.read_text() and time.monotonic() < deadline:
            requests.get(srv.url + "/thread")
        size, skip = 3 << 20, 1000
        r = requests.get(srv.url + f"/file?size={size}&skip={skip}")
        assert len(r.content) == size - skip
    finally:
        tracer.terminate()
        tracer.wait(10)
    calls = out.read_text()
    sent = [int(n) for n in re.findall(r"sendfile\(.*\) = (\d+)", calls)]
    assert sum(sent) == size - skip, calls[-2000:]
    # the body itself is never read into the process (small reads of the
    # request and of Python's own files may appear)
    assert not re.search(r"(pread64|read)\(.*\) = (\d{6,})", calls), calls[-2000:]


def test_file_wrapper_respects_the_apps_content_length(srv):
    r = requests.get(srv.url + "/file?size=100000&cl=1000")
    assert r.content == bytes(range(256)) * 3 + bytes(range(232))


def test_single_item_list_gets_a_length(srv):
    assert requests.get(srv.url + "/nolength").headers["Content-Length"] == "13"
    out = raw_request(srv.port, b"HEAD /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"\r\n\r\n") and b"content-length: 13" in out.lower()
