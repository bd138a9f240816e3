"""The HTTP/1.1 front end: request and response bodies, keep-alive (--keepalive-timeout), --socket-timeout,
--add-header, sendfile, bounded memory."""
# Keep-alive, pipelining, chunked bodies and HTTP/1.0 are also checked through
# wsgiref.validate in test_pep3333.py; bad requests and --limit-post are in
# test_malformed_input.py, listening addresses in test_sockets.py.
import re
import shutil
import socket
import subprocess
import time

import pytest
import requests

from helpers import APPS, BEHAVIOUR, raw_request, traced_calls


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


def test_unread_body_is_drained_even_while_the_app_keeps_its_input(srv):
    """The same when the app's environ outlives the request (a reference
    cycle, Flask's abort() on a POST): the rest of the body is read once
    the request is over, not once wsgi.input is freed."""
    body = b"z" * (3 << 20)
    out = raw_request(srv.port, b"POST /ignore-body-kept HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body + b"GET /thread HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 401 Unauthorized") == 1 and out.count(b"HTTP/1.1 200 OK") == 1, out[:500]


def test_pipelined_responses_left_to_the_flusher_arrive_whole_and_in_order(srv):
    # Each response takes long enough to produce that it waits for the
    # batch (batch.rs), and 1,000 of 15 KB fill the socket while the client
    # is still sending: the flusher finds it full and hands the rest back.
    count, size = 1000, 15000
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(b"".join(
            b"GET /numbered?i=%d&n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (i, size)
            for i in range(count)))
        data = bytearray()
        at = 0
        for i in range(count):
            while (end := data.find(b"\r\n\r\n", at)) < 0:
                data += s.recv(1 << 20) or pytest.fail(f"closed before response {i}")
            head = bytes(data[at:end])
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            assert length == size
            while len(data) < end + 4 + length:
                data += s.recv(1 << 20) or pytest.fail(f"closed inside response {i}")
            body = bytes(data[end + 4:end + 4 + length])
            assert body == str(i).encode().ljust(size, b"."), f"response {i} out of order"
            at = end + 4 + length


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
def test_a_streamed_chunk_is_sent_before_the_app_makes_the_next(serve, threads):
    """PEP 3333: a server must not delay a block until the app yields the
    next. /slow yields "a", then sleeps 4 s before "b": "a" arrives first,
    whether the app runs on the event loop's thread or on its own."""
    s = serve("--wsgi-file", BEHAVIOUR, "--threads", threads)
    requests.get(s.url + "/", timeout=30)  # the app loaded: the 2 s below are the app's alone
    with socket.create_connection(("127.0.0.1", s.port), timeout=2) as sock:
        sock.sendall(b"GET /slow?gap=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while not out.endswith(b"\r\n1\r\na\r\n"):
            out += sock.recv(65536) or pytest.fail(f"closed: {out!r}")  # times out if held
    assert out.startswith(b"HTTP/1.1 200 OK") and b"\r\nb\r\n" not in out


def _get(sock, path=b"/ignore-body"):
    """One request on a kept-alive connection; the response's head and body."""
    sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"closed before a response: {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail("closed inside a response")
    return head, body


def test_keepalive_timeout_outlasts_the_socket_timeout(serve):
    """Behind a balancer, idle connections must outlive its own idle
    timeout: --keepalive-timeout 4 keeps one open well past a 1 s
    --socket-timeout (which would close it within 2 s), then closes it."""
    s = serve("--wsgi-file", BEHAVIOUR, "--socket-timeout", "1", "--keepalive-timeout", "4")
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        assert _get(sock)[0].startswith(b"HTTP/1.1 200")
        time.sleep(2.5)
        assert _get(sock)[0].startswith(b"HTTP/1.1 200")
        idle = time.monotonic()
        assert sock.recv(1) == b""
        waited = time.monotonic() - idle
    assert 3.5 < waited < 8, waited


def test_a_head_begun_before_the_keepalive_timeout_has_the_socket_timeout(serve):
    """The next request's head, begun within --keepalive-timeout (1 s) and
    finished after it, is served, as Gunicorn and uvicorn serve it (their
    keep-alive timers stop at the first byte) and nginx gives it
    client_header_timeout: the connection was closed mid-head, silently."""
    s = serve("--wsgi-file", BEHAVIOUR, "--socket-timeout", "6", "--keepalive-timeout", "1")
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        assert _get(sock)[0].startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /ignore-body HTTP/1.1\r\nHo")
        time.sleep(2.5)
        sock.sendall(b"st: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536) or pytest.fail(f"closed mid-head: {head!r}")
        assert head.startswith(b"HTTP/1.1 200"), head


def test_idle_keep_alive_connections_are_parked_without_their_buffers(serve):
    """A keep-alive connection idle for a second or two is parked: hyper's
    state for it (some 12 KiB, most of it two 8 KiB buffers) is freed and
    given back to the kernel, so the worker's resident memory falls back
    by most of what 1,000 connections' first requests added. Every one of
    them is then served again on its socket, pipelined requests too."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--keepalive-timeout", "60", "--listen", "2048")
    [worker] = s.wait_workers(1)

    def rss_kib():
        with open(f"/proc/{worker}/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS")).split()[1])
    conns = [socket.create_connection(("127.0.0.1", s.port), timeout=15) for _ in range(1000)]
    try:
        before = rss_kib()
        for c in conns:
            c.sendall(b"GET /ignore-body HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
        grown = rss_kib() - before
        assert grown > 8 * 1000 // 2, grown  # KiB: what the requests added
        deadline = time.monotonic() + 15
        while rss_kib() - before > grown // 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss_kib() - before <= grown // 3, (grown, rss_kib() - before)
        for c in conns[1:]:
            assert _get(c)[0].startswith(b"HTTP/1.1 200")
        conns[0].sendall(b"GET /ignore-body HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        both = b""
        while both.count(b"HTTP/1.1 200") < 2:
            both += conns[0].recv(65536) or pytest.fail(f"closed: {both!r}")
    finally:
        for c in conns:
            c.close()


def test_a_large_response_the_client_pauses_reading_is_not_parked(serve):
    """A connection whose client stops reading a large response for longer
    than it takes an idle one to be parked keeps it: the whole response
    arrives once the client reads on, and the connection serves the next
    request."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1", "--keepalive-timeout", "60")
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as c:
        c.sendall(b"GET /bigone?mb=16 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(65536)
        time.sleep(3)  # parked after one to two seconds idle, if it were
        head, _, body = got.partition(b"\r\n\r\n")
        while len(body) < 16 << 20:
            body += c.recv(1 << 20) or pytest.fail(f"closed after {len(body)} bytes")
        assert body == b"y" * (16 << 20)
        assert _get(c)[0].startswith(b"HTTP/1.1 200")


def test_keepalive_timeout_zero_closes_after_each_response(serve):
    s = serve("--wsgi-file", BEHAVIOUR, "--keepalive-timeout", "0")
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        head, _ = _get(sock)
        assert b"connection: close" in head.lower(), head
        assert sock.recv(1) == b""


def test_add_header_on_app_and_static_responses(serve, tmp_path):
    (tmp_path / "f.txt").write_text("static")
    s = serve("--wsgi-file", BEHAVIOUR, "--static-map", f"/s={tmp_path}",
              "--add-header", "X-Frame-Options: DENY", "--add-header", "X-Served-By:web1")
    for path in ("/ignore-body", "/s/f.txt"):
        r = requests.get(s.url + path)
        assert r.status_code == 200, path
        assert r.headers["X-Frame-Options"] == "DENY", path
        assert r.headers["X-Served-By"] == "web1", path


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


def test_single_item_list_gets_a_length(srv):
    assert requests.get(srv.url + "/nolength").headers["Content-Length"] == "13"
    out = raw_request(srv.port, b"HEAD /nolength HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"\r\n\r\n") and b"content-length: 13" in out.lower()


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
    with traced_calls(pids, "sendfile,pread64,read,recvfrom", tmp_path) as traced:
        # traced once a request's read shows (the event loop's thread too)
        deadline = time.monotonic() + 10
        while "recvfrom(" not in traced() and time.monotonic() < deadline:
            requests.get(srv.url + "/thread")
        size, skip = 3 << 20, 1000
        r = requests.get(srv.url + f"/file?size={size}&skip={skip}")
        assert len(r.content) == size - skip
    calls = traced()
    sent = [int(n) for n in re.findall(r"sendfile\(.*\)\s+= (\d+)", calls)]
    assert sum(sent) == size - skip, calls[-2000:]
    # the body itself is never read into the process (small reads of the
    # request and of Python's own files may appear)
    assert not re.search(r"(pread64|read)\(.*\)\s+= (\d{6,})", calls), calls[-2000:]


def test_file_wrapper_respects_the_apps_content_length(srv):
    r = requests.get(srv.url + "/file?size=100000&cl=1000")
    assert r.content == bytes(range(256)) * 3 + bytes(range(232))


# Streaming a gigabyte each way in bounded memory.
GIB = 1 << 30


def test_gigabyte_response_in_bounded_memory(serve):
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1")
    requests.get(s.url + "/big?mb=4").content  # warm up
    (worker,) = s.wait_workers(1)
    idle = s.rss_kb(pid=worker)
    total = 0
    with requests.get(s.url + "/big?mb=1024", stream=True) as r:
        for chunk in r.iter_content(1 << 20):
            total += len(chunk)
    assert total == GIB
    grew_mb = (s.rss_kb("VmHWM", pid=worker) - idle) / 1024
    print(f"1 GiB response: peak RSS {grew_mb:.1f} MiB above idle")
    assert grew_mb < 100


def test_gigabyte_upload_in_bounded_memory(serve):
    s = serve("--wsgi-file", str(APPS / "validated.py"), "--processes", "1")
    requests.post(s.url + "/count", data=b"x" * 1000000)  # warm up
    (worker,) = s.wait_workers(1)
    idle = s.rss_kb(pid=worker)
    block = b"u" * (1 << 20)
    with socket.create_connection(("127.0.0.1", s.port), timeout=60) as c:
        c.sendall(f"POST /count?chunk=65536 HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n"
                  "Connection: close\r\n\r\n".encode())
        for _ in range(1024):
            c.sendall(block)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert f'"bytes": {GIB}'.encode() in out, out[-300:]
    grew_mb = (s.rss_kb("VmHWM", pid=worker) - idle) / 1024
    print(f"1 GiB upload: peak RSS {grew_mb:.1f} MiB above idle")
    assert grew_mb < 100


def test_a_204_goes_out_without_the_apps_content_length(serve):
    """RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204; the
    app's is dropped (Gunicorn drops it too), and the body never goes."""
    s = serve("--wsgi-file", BEHAVIOUR, "--processes", "1")
    out = raw_request(s.port, b"GET /status?204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 204") and out.endswith(b"\r\n\r\n"), out
    assert b"content-length" not in out.lower(), out


def test_a_latin1_reason_phrase_goes_out_as_latin1(serve, tmp_path):
    """PEP 3333: the status is a latin-1 string: `é` is one byte on the
    wire, and a character latin-1 lacks is the app's error (500)."""
    (tmp_path / "reasons.py").write_text(
        "def application(environ, start_response):\n"
        "    reason = {'/latin1': 'caf\\xe9', '/euro': '\\u20ac'}[environ['PATH_INFO']]\n"
        "    start_response('200 ' + reason, [('Content-Length', '0')])\n"
        "    return []\n")
    s = serve("--wsgi-file", str(tmp_path / "reasons.py"), "--processes", "1")
    out = raw_request(s.port, b"GET /latin1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 caf\xe9\r\n"), out
    out = raw_request(s.port, b"GET /euro HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500"), out


def test_a_target_in_absolute_form_names_the_host_whatever_host_says(serve, tmp_path):
    """RFC 9112 §3.2.2: a server MUST ignore Host when the target is in
    absolute form. A proxy in front routes by the target, so the app's host
    checks (Django's ALLOWED_HOSTS reads HTTP_HOST) must see that host."""
    (tmp_path / "hosts.py").write_text(
        "def application(environ, start_response):\n"
        "    out = ' '.join(environ.get(k, '-') for k in ('HTTP_HOST', 'SERVER_NAME', 'SERVER_PORT', 'PATH_INFO'))\n"
        "    start_response('200 OK', [('Content-Length', str(len(out)))])\n"
        "    return [out.encode()]\n")
    s = serve("--wsgi-file", str(tmp_path / "hosts.py"), "--processes", "1")

    def ask(head):
        out = raw_request(s.port, head + b"Connection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200"), out
        return out.partition(b"\r\n\r\n")[2].decode()

    assert ask(b"GET http://good.example:8080/x HTTP/1.1\r\nHost: evil.example\r\n") == \
        "good.example:8080 good.example 8080 /x"
    assert ask(b"GET http://user:pw@good.example/x HTTP/1.1\r\nHost: good.example\r\n") == \
        f"good.example good.example {s.port} /x"
    assert ask(b"GET /x HTTP/1.1\r\nHost: plain.example:81\r\n") == "plain.example:81 plain.example 81 /x"
    # A Host that names no host, or no port number, gives the socket's: an
    # app's int(environ["SERVER_PORT"]) raised, SERVER_NAME was empty.
    for host, name, port in [(b":80", "127.0.0.1", "80"), (b"a:xyz", "a", s.port), (b"h:+80", "h", s.port),
                             (b"h:99999999999999999999", "h", s.port), (b"h:0", "h", s.port)]:
        assert ask(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\n") == f"{host.decode()} {name} {port} /x", host
    # A query and no path: the URI is "/?x=1", the path served (it was "?x=1").
    (tmp_path / "uri.py").write_text(
        "def application(environ, start_response):\n"
        "    out = environ['REQUEST_URI'] + ' ' + environ['PATH_INFO'] + ' ' + environ['QUERY_STRING']\n"
        "    start_response('200 OK', [('Content-Length', str(len(out)))])\n"
        "    return [out.encode()]\n")
    s = serve("--wsgi-file", str(tmp_path / "uri.py"), "--processes", "1")
    assert ask(b"GET http://h.example?x=1 HTTP/1.1\r\nHost: h.example\r\n") == "/?x=1 / x=1"


def test_a_client_that_half_closes_after_its_request_gets_its_answer_as_from_gunicorn(serve, tmp_path):
    """`printf 'GET ...' | nc -N`: the client ends its side after sending,
    and waits. Gunicorn and nginx answer; oxgate closed at once, the app
    never called and nothing logged. Two pipelined requests are both
    answered."""
    from helpers import ECHO, VENV, free_port, listens, wait_for
    shutil.copy(ECHO, tmp_path / "echo.py")
    ox = serve("--wsgi-file", ECHO, "--processes", "1")
    port = free_port()
    gunicorn = subprocess.Popen([str(VENV / "bin" / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", "2",
                                 "echo:application"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listens(port), what="gunicorn listening")
        requests_sent = [b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
                         b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                         b"GET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n"]
        for p in (ox.port, port):
            for req in requests_sent:
                with socket.create_connection(("127.0.0.1", p), timeout=10) as c:
                    c.sendall(req)
                    c.shutdown(socket.SHUT_WR)
                    out = b""
                    while chunk := c.recv(65536):
                        out += chunk
                assert out.count(b"HTTP/1.1 200 ") == req.count(b"HTTP/1.1\r\n"), (p, req, out)
    finally:
        gunicorn.terminate()
        gunicorn.wait(30)
