"""PEP 3333 duties, checked through wsgiref.validate on the real server."""
import hashlib
import json
import os

import pytest
import requests

from helpers import APPS, raw_request, wait_for

VALIDATED = str(APPS / "validated.py")


# This srv overrides conftest's (the behaviour app).
@pytest.fixture(params=["1", "4"], ids=["inline", "threads"])
def srv(serve, request):
    # --threads 1 runs the app on the event loop; --threads 4 on a pool.
    s = serve("--wsgi-file", VALIDATED, "--threads", request.param)
    yield s
    log = s.log()
    assert "AssertionError" not in log, log
    assert "WSGIWarning" not in log, log
    assert "without being closed" not in log, log


def test_environ_required_keys(srv):
    r = requests.get(srv.url + "/env/a%20b/%C3%A9?x=1&y=%20", headers={"X-Custom-Thing": "v"})
    assert r.status_code == 200
    env = r.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    # percent-decoded, and the UTF-8 bytes of é carried as latin-1 code points
    assert env["PATH_INFO"] == "/env/a b/\u00c3\u00a9"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["REQUEST_URI"] == "/env/a%20b/%C3%A9?x=1&y=%20"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["HTTP_X_CUSTOM_THING"] == "v"
    assert env["HTTP_HOST"] == f"127.0.0.1:{srv.port}"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is (srv.args[-1] == "4")
    assert isinstance(env["wsgi.multiprocess"], bool)  # test_wsgi_multiprocess_says_whether_other_processes_serve
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert "CONTENT_LENGTH" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_content_headers_have_no_http_prefix(srv):
    r = requests.post(srv.url + "/env", data=b"abc", headers={"Content-Type": "text/x-test"})
    env = r.json()
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_repeated_headers_are_joined(srv):
    req = (f"GET /env HTTP/1.1\r\nHost: h:{srv.port}\r\nX-A: 1\r\nX-A: 2\r\n"
           "Cookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n").encode()
    body = raw_request(srv.port, req).split(b"\r\n\r\n", 1)[1]
    env = json.loads(body)
    assert env["HTTP_X_A"] == "1, 2"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["SERVER_NAME"] == "h"


def test_latin1_header_bytes(srv):
    req = (b"GET /env HTTP/1.1\r\nHost: x\r\nX-Bytes: caf\xc3\xa9 \xff\r\nConnection: close\r\n\r\n")
    env = json.loads(raw_request(srv.port, req).split(b"\r\n\r\n", 1)[1])
    assert env["HTTP_X_BYTES"].encode("latin-1") == b"caf\xc3\xa9 \xff"


def test_values_that_change_between_requests(srv):
    """Values equal to the last request's are shared, not decoded again:
    each request still sees its own."""
    agents = ["a", "caf\xe9", "a", "ab", "b", "b", "", "a"]
    with requests.Session() as s:
        for ua in agents:
            env = s.get(srv.url + "/env", headers={"User-Agent": ua.encode("latin-1")}).json()
            assert env["HTTP_USER_AGENT"] == ua


def test_http10_client(srv):
    out = raw_request(srv.port, b"GET /env HTTP/1.0\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    env = json.loads(body)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["SERVER_NAME"] == "127.0.0.1"  # no Host: the socket's address


def test_echo_binary_body(srv):
    data = bytes(range(256)) * 1000
    r = requests.post(srv.url + "/echo", data=data, headers={"Content-Type": "application/x-bin"})
    assert r.content == data
    assert r.headers["Content-Type"] == "application/x-bin"


def test_readline_readlines(srv):
    r = requests.post(srv.url + "/lines", data=b"line one\nabcdef\nthird\nfourth")
    assert r.json() == {"first": "line one\n", "limited": "abc", "rest": ["def\n", "third\n", "fourth"]}


def test_iteration_over_input(srv):
    r = requests.post(srv.url + "/iterate", data=b"a\nb\n\nc")
    assert r.json() == {"lines": ["a\n", "b\n", "\n", "c"]}


@pytest.mark.parametrize("size", [0, 1, 65536, 65537, 3 * 1024 * 1024 + 7])
def test_body_sizes_around_the_inline_limit(srv, size):
    data = os.urandom(size)
    r = requests.post(srv.url + "/count?chunk=10000", data=data)
    assert r.json() == {"bytes": size, "sha256": hashlib.sha256(data).hexdigest(), "after_end": 0}


def test_chunked_request_body(srv):
    parts = [os.urandom(n) for n in (1, 1000, 70000, 5)]
    r = requests.post(srv.url + "/count", data=iter(parts))
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.json()["bytes"] == sum(map(len, parts))
    assert r.json()["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_expect_100_continue(srv):
    body = b"x" * 200000
    req = (f"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
           "Expect: 100-continue\r\nConnection: close\r\n\r\n").encode()
    import socket
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(req)
        interim = s.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim
        s.sendall(body)
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert b'"bytes": 200000' in rest


def test_streamed_response_is_chunked(srv):
    r = requests.get(srv.url + "/stream?count=4&size=3", stream=True)
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.headers
    assert r.content == b"AAABBBCCCDDD"


def test_streamed_response_to_http10_closes(srv):
    out = raw_request(srv.port, b"GET /stream?count=2&size=2 HTTP/1.0\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"chunked" not in head.lower()
    assert body == b"AABB"


def test_late_start_response(srv):
    r = requests.get(srv.url + "/late-status")
    assert r.status_code == 201
    assert r.content == b"late-status"


def test_empty_chunks_before_body(srv):
    r = requests.get(srv.url + "/empty-first")
    assert r.content == b"after-empties"


def test_write_callable(srv):
    assert requests.get(srv.url + "/write").content == b"written-then-yielded"


def test_custom_status_and_reason(srv):
    out = raw_request(srv.port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 299 Custom Reason\r\n")
    out = raw_request(srv.port, b"GET /status?s=404+Gone+Fishing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 Gone Fishing\r\n")


def test_exc_info_replaces_headers(srv):
    r = requests.get(srv.url + "/exc-info")
    assert r.status_code == 503
    assert r.content == b"recovered"


def test_repeated_and_latin1_response_headers(srv):
    out = raw_request(srv.port, b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = out.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-multi: one\r\n" in head and b"x-multi: two\r\n" in head
    assert b"set-cookie: a=1\r\n" in head and b"set-cookie: b=2\r\n" in head
    assert b"x-latin: caf\xe9" in head


def test_head_has_no_body(srv):
    out = raw_request(srv.port, b"HEAD /stream?count=3&size=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")
    assert out.endswith(b"\r\n\r\n")
    out = raw_request(srv.port, b"HEAD /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"\r\n\r\n")


def test_keep_alive_and_pipelining(srv):
    reqs = b"".join(f"GET /stream?count=1&size={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for n in (1, 2, 3))
    reqs += b"GET /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_request(srv.port, reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 4
    assert out.endswith(b"\r\nD\r\none-item-list\r\n0\r\n\r\n")


def test_close_is_always_called(srv):
    before = requests.get(srv.url + "/closed").json()["closed"]
    assert requests.get(srv.url + "/tracked?count=3").content == b"a" * 300
    # failing mid-response: the connection is cut, close() still runs
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(srv.url + "/tracked?count=3&fail=1").content
    # the client hangs up before reading: close() still runs
    import socket
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /tracked?count=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(10)
    s.close()
    for _ in range(100):
        if requests.get(srv.url + "/closed").json()["closed"] == before + 3:
            break
        import time
        time.sleep(0.05)
    assert requests.get(srv.url + "/closed").json()["closed"] == before + 3


@pytest.mark.parametrize("size,skip", [(100000, 0), (5, 0), (1 << 20, 1000)])
def test_file_wrapper(srv, size, skip):
    r = requests.get(srv.url + f"/file?size={size}&skip={skip}")
    expected = (bytes(range(256)) * (size // 256) + b"z" * (size % 256))[skip:]
    assert r.content == expected  # through the validator: iterated, not unwrapped


def test_file_wrapper_names_its_file_and_block_size_as_wsgiref_and_gunicorn(serve):
    """Middleware that unwraps a response reads `filelike` and `blksize`,
    which wsgiref's and Gunicorn's wrappers have; oxgate's had neither."""
    s = serve("--wsgi-file", str(APPS / "behaviour.py"))
    assert requests.get(s.url + "/file-wrapper-attributes", timeout=10).json() == {"filelike": True, "blksize": 1234}


def test_wsgi_input_tells_and_seeks_a_body_read_whole_as_uwsgis(serve):
    """uWSGI's wsgi.input has tell(), and seek() with --post-buffering (a
    webhook's signature check reads the raw body again after a framework
    read it); a body still arriving cannot go back, with an OSError as in
    uWSGI. oxgate's input had neither."""
    s = serve("--wsgi-file", str(APPS / "behaviour.py"), "--post-buffering", "65536")
    body = b"hello-world"
    assert requests.post(s.url + "/seek", data=body, timeout=10).json() == \
        {"first": "hel", "tell": 3, "from": 0, "then": "hello-world", "tell_after": 11}
    assert requests.post(s.url + "/seek?to=-5&whence=2", data=body, timeout=10).json() == \
        {"first": "hel", "tell": 3, "from": 6, "then": "world", "tell_after": 11}
    assert requests.post(s.url + "/seek?to=2&whence=1", data=body, timeout=10).json() == \
        {"first": "hel", "tell": 3, "from": 5, "then": "-world", "tell_after": 11}
    # Past --post-buffering, the body is read as it arrives.
    big = b"z" * 200_000
    seen = requests.post(s.url + "/seek", data=big, timeout=10).json()
    assert seen["tell"] == 3 and "cannot seek" in seen["error"], seen


@pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "threads"])
def test_write_keeps_its_order_and_its_bytes(serve, threads):
    """write() before a file: every written byte, then the whole file (the
    length counted all of them); write() from inside the returned
    generator: in the order called. A second start_response without
    exc_info once the body began is the app's error, and a Content-Length
    that is not digits only (Rust's parser takes "+2") is refused."""
    s = serve("--wsgi-file", str(APPS / "behaviour.py"), "--threads", threads)
    r = requests.get(s.url + "/write-then-file", timeout=20)
    assert r.content == b"AAABBB" + (APPS / "behaviour.py").read_bytes()
    assert requests.get(s.url + "/write-in-generator", timeout=20).content == b"ABCD"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(s.url + "/start-twice-late", timeout=20).content
    s.wait_log("start_response() called a second time without exc_info")
    assert requests.get(s.url + "/plus-length", timeout=20).status_code == 500
    s.wait_log('Content-Length b"+2" is not a number')


@pytest.mark.parametrize("processes", [1, 2])
def test_wsgi_multiprocess_says_whether_other_processes_serve(serve, processes):
    s = serve("--wsgi-file", str(APPS / "behaviour.py"), "--processes", str(processes), "--threads", "2")
    flags = requests.get(s.url + "/flags", timeout=20).json()
    assert flags == {"wsgi.multithread": True, "wsgi.multiprocess": processes > 1}


SLOW_CLOSE_APP = '''
import os, time

MARKER = os.environ["CLOSE_MARKER"]


class Result:
    """The app's iterable; its close() waits for the client's word that
    the whole response came (Flask's call_on_close work, say)."""

    def __init__(self, chunks, warm=False):
        self.chunks = chunks
        self.warm = warm

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        if self.warm:
            time.sleep(0.01)
            return
        deadline = time.monotonic() + 15
        while not os.path.exists(MARKER) and time.monotonic() < deadline:
            time.sleep(0.02)
        with open(MARKER + ".closed", "a") as f:
            f.write("closed\\n")


def application(environ, start_response):
    headers = [("Content-Type", "text/plain")]
    if environ["PATH_INFO"] == "/warm":
        start_response("200 OK", headers)
        return Result([b"warm"], warm=True)
    if environ["PATH_INFO"] == "/sized":
        headers.append(("Content-Length", "5"))
        start_response("200 OK", headers)
        return Result([b"sized"])
    start_response("200 OK", headers)
    return Result((b"chunk" for _ in range(3)))
'''


@pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "threads"])
def test_the_response_goes_out_before_a_slow_close_returns(serve, tmp_path, threads):
    """close() runs after the response has gone out, as in Gunicorn and
    uWSGI: a close() that takes its time (here, until the client has the
    whole response) held the response's end back, sized or chunked. (On
    the event loop, once the app's close() has proved slow: a few of 10 ms
    first.)"""
    (tmp_path / "slowclose.py").write_text(SLOW_CLOSE_APP)
    marker = tmp_path / "got-it"
    s = serve("--wsgi-file", "slowclose.py", "--threads", threads, "--processes", "1", cwd=tmp_path,
              env={"CLOSE_MARKER": str(marker)})
    for _ in range(3):
        assert requests.get(s.url + "/warm", timeout=10).content == b"warm"
    for path, body in (("/sized", b"sized"), ("/chunked", b"chunk" * 3)):
        marker.unlink(missing_ok=True)
        # Well under close()'s own 15 s: the response must come first.
        r = requests.get(s.url + path, timeout=8)
        assert r.content == body, path
        marker.write_text("")
        wait_for(lambda: (tmp_path / "got-it.closed").exists()
                 and (tmp_path / "got-it.closed").read_text().count("closed") == (1 if path == "/sized" else 2),
                 what=f"{path}: close() called")


def test_a_stop_that_cuts_a_response_whose_close_waits_ends_cleanly(serve, tmp_path):
    """--no-master, an app whose close() has proved slow (so it runs after
    the response is written), and a stop that cuts a stream: its close()
    and log line, left for after a write that never came, ran as the
    process exited and aborted it (a panic in a thread-local's destructor,
    status 134). They run as the event loop ends."""
    (tmp_path / "slowclose.py").write_text(SLOW_CLOSE_APP)
    marker = tmp_path / "got-it"
    marker.write_text("")  # close() returns at once but for /warm's 10 ms
    (tmp_path / "streams.py").write_text(
        "import time\n"
        "from slowclose import application as slow\n"
        "def application(environ, start_response):\n"
        "    if environ['PATH_INFO'] != '/stream':\n"
        "        return slow(environ, start_response)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return forever()\n"
        "def forever():\n"
        "    while True:\n"
        "        yield b'tick\\n'\n"
        "        time.sleep(0.1)\n")
    s = serve("--no-master", "--wsgi-file", "streams.py", "--reload-mercy", "1", cwd=tmp_path,
              env={"CLOSE_MARKER": str(marker), "PYTHONPATH": str(tmp_path)})
    for _ in range(4):
        assert requests.get(s.url + "/warm", timeout=10).content == b"warm"
    r = requests.get(s.url + "/stream", stream=True, timeout=10)
    assert next(r.iter_lines()) == b"tick"
    s.proc.send_signal(15)
    assert s.proc.wait(20) == 0, s.log()
    assert "panicked" not in s.log(), s.log()


WRITE_STREAM_APP = '''
import os, time

MARKER = os.environ["WRITE_MARKER"]


def wait_for_marker(name):
    deadline = time.monotonic() + 15
    while not os.path.exists(name) and time.monotonic() < deadline:
        time.sleep(0.02)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/warm":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"warm"]
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/progress":
        # A progress page: the first line must reach the client while the
        # app still works (it waits here for the client's word).
        write(b"first\\n")
        wait_for_marker(MARKER)
        write(b"second\\n")
        return []
    if path == "/export":
        # An export of 2,000 writes of 64 KiB (131 MB): the client reads a
        # little and leaves; the app's write() must say so.
        try:
            for i in range(2000):
                write(b"x" * 65536)
        except OSError:
            outcome = f"stopped at {i}"
        else:
            outcome = "wrote all"
        with open(MARKER + ".export", "w") as f:
            f.write(outcome)
        return []
    return [b"?"]
'''


def read_until(c, needle):
    got = b""
    while needle not in got:
        chunk = c.recv(65536)  # the socket's timeout fails the test if held back
        assert chunk, got
        got += chunk
    return got


@pytest.mark.parametrize("threads", ["1", "4"], ids=["inline", "threads"])
def test_write_streams_what_the_app_writes_while_it_runs(serve, tmp_path, threads):
    """write() sends at once, as Gunicorn's and uWSGI's do: a progress page's
    first line reaches the client while the app still works, and a client
    that leaves makes write() raise instead of the worker piling up what
    the app writes. oxgate held every write() until the app returned (a
    write()-loop export of 800 MB took 800 MB; behind nginx, a slow one got
    504). With one thread the first request runs inline on the event loop
    and learns it; the requests after it stream."""
    import socket
    (tmp_path / "writer.py").write_text(WRITE_STREAM_APP)
    marker = tmp_path / "go"
    s = serve("--wsgi-file", str(tmp_path / "writer.py"), "--threads", threads, "--processes", "1",
              env={"WRITE_MARKER": str(marker)})
    if threads == "1":
        # Inline, the first write() cannot go out before the app returns:
        # after it, the app's requests run on a Python thread.
        marker.touch()
        assert requests.get(s.url + "/progress", timeout=20).text == "first\nsecond\n"
        s.wait_log("the app streams with write()")
        marker.unlink()
    with socket.create_connection(("127.0.0.1", s.port), timeout=8) as c:
        c.sendall(b"GET /progress HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until(c, b"first\n")
        assert got.startswith(b"HTTP/1.1 200") and b"second" not in got
        marker.touch()
        read_until(c, b"second\n")
    with socket.create_connection(("127.0.0.1", s.port), timeout=8) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(b"GET /export HTTP/1.1\r\nHost: x\r\n\r\n")
        read_until(c, b"xxxx")
    outcome = tmp_path / "go.export"
    wait_for(outcome.exists, what="the export's end", show=s.log)
    assert outcome.read_text().startswith("stopped at"), outcome.read_text()
    assert "Traceback" not in s.log(), s.log()
    assert requests.get(s.url + "/warm", timeout=20).text == "warm"


def test_headers_may_be_any_iterable_of_pairs_as_gunicorn_takes_them(serve, tmp_path):
    """A list's subclass, dict.items() or a generator of pairs: Gunicorn
    sends them; oxgate answered 500 (it took only an exact list or tuple)."""
    (tmp_path / "hdrs.py").write_text(
        "class Headers(list):\n"
        "    pass\n"
        "def application(environ, start_response):\n"
        "    pairs = {'Content-Type': 'text/plain', 'X-A': '1'}\n"
        "    kind = environ['PATH_INFO'][1:]\n"
        "    headers = {'subclass': lambda: Headers(pairs.items()), 'items': lambda: pairs.items(),\n"
        "               'generator': lambda: ((k, v) for k, v in pairs.items())}[kind]()\n"
        "    start_response('200 OK', headers)\n"
        "    return [kind.encode()]\n")
    s = serve("--wsgi-file", str(tmp_path / "hdrs.py"))
    for kind in ("subclass", "items", "generator"):
        r = requests.get(s.url + "/" + kind, timeout=20)
        assert (r.status_code, r.headers.get("x-a"), r.text) == (200, "1", kind), s.log()
