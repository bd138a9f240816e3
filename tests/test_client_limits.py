"""Slow and too many clients. Slow uploads on one worker with one Python
thread hold no app thread, fresh requests go on being served, and
--min-body-rate closes them (a trickling head: test_malformed_input.py's
test_slow_head_times_out). Past --max-connections, new connections wait in
the listen backlog."""
import hashlib
import re
import socket
import struct
import time

import pytest
import requests

from helpers import APPS, fcgi_request, free_port, packet, scgi_packet, wait_for

APP = str(APPS / "validated.py")


def slow_uploads(port, n, length=2 << 20):
    """n connections that send a head and 10 bytes of a `length` body."""
    out = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length + b"x" * 10)
        out.append(c)
    return out


def test_a_client_that_stops_reading_is_cut_after_socket_timeout(serve):
    """A client that takes none of a streamed response held the worker's
    only Python thread for as long as it kept the connection open. Now its
    connection is closed after --socket-timeout without progress (uWSGI's
    timeout on each write), the app's generator is closed, and the worker
    serves again."""
    s = serve("--wsgi-file", str(APPS / "behaviour.py"), "--processes", "1", "--threads", "1",
              "--socket-timeout", "2")
    assert requests.get(s.url + "/sys", timeout=20).status_code == 200
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("127.0.0.1", s.port))
    c.sendall(b"GET /big?mb=512 HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        s.wait_log("took no bytes of its response for --socket-timeout (2s)", timeout=30)
        assert requests.get(s.url + "/sys", timeout=10).status_code == 200
        # Cut, not finished: far less than the 512 MiB went out.
        s.wait_log("GET /big?mb=512 => generated")
        assert re.search(r"GET /big\?mb=512 => generated \d{1,8} bytes", s.log())
    finally:
        c.close()


def test_a_connection_that_sends_nothing_is_closed_after_socket_timeout(serve):
    """Not after twice the time: the wait for the first bytes and hyper's
    wait for the head are one wait, not two in a row."""
    s = serve("--wsgi-file", APP, "--processes", "1", "--socket-timeout", "3")
    c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    start = time.monotonic()
    assert c.recv(1) == b""
    waited = time.monotonic() - start
    assert 2.5 < waited < 5.5, waited
    c.close()


@pytest.mark.parametrize("proto", ["uwsgi", "scgi", "fastcgi"])
def test_a_front_end_that_stops_reading_is_cut_after_socket_timeout(serve, proto):
    """The same over the gateway protocols: a web server in front that
    stops reading a streamed response (its buffers off) is cut after
    --socket-timeout without progress, and the worker's only Python thread
    serves again."""
    port = free_port()
    s = serve("--wsgi-file", str(APPS / "behaviour.py"), "--processes", "1", "--threads", "1",
              "--socket-timeout", "2", f"--{proto}-socket", f"127.0.0.1:{port}")
    assert requests.get(s.url + "/sys", timeout=20).status_code == 200
    params = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/big"), ("QUERY_STRING", "mb=512"),
              ("REQUEST_URI", "/big?mb=512"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "x"),
              ("SERVER_PORT", "80")]
    request = {"uwsgi": packet(params),
               "scgi": scgi_packet([("CONTENT_LENGTH", "0"), ("SCGI", "1")] + params),
               "fastcgi": fcgi_request(1, params)}[proto]
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("127.0.0.1", port))
    c.sendall(request)
    try:
        s.wait_log("took no bytes of the response for 2s (--socket-timeout)", timeout=30)
        assert requests.get(s.url + "/sys", timeout=10).status_code == 200
        s.wait_log("GET /big?mb=512 => generated")
        assert re.search(r"GET /big\?mb=512 => generated \d{1,8} bytes", s.log())
    finally:
        c.close()


def test_slow_uploads_hold_no_app_thread_and_are_cut(serve):
    s = serve("--wsgi-file", APP, "--processes", "1", "--threads", "1")
    slow = slow_uploads(s.port, 20)
    # Larger than --post-buffering or not, none of them has reached the app:
    # the only Python thread is free for these.
    for _ in range(10):
        assert requests.get(s.url + "/env", timeout=5).status_code == 200
    # Far below --min-body-rate (1024 B/s after 5 s): 408, and closed.
    t0 = time.monotonic()
    for c in slow:
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        assert out.startswith(b"HTTP/1.1 408 "), out[:100]
        c.close()
    assert time.monotonic() - t0 < 20
    assert "slower than --min-body-rate" in s.log()


def test_a_body_read_ahead_reaches_the_app_whole(serve):
    """A body over --post-buffering streams on after the part read ahead."""
    s = serve("--wsgi-file", APP, "--post-buffering", "65536")
    for size in (10, 65535, 65536, 65537, 3 << 20):
        body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        r = requests.post(s.url + "/echo", data=body)
        assert r.status_code == 200 and r.content == body, size
        # chunked too
        r = requests.post(s.url + "/count", data=iter([body[:size // 2], body[size // 2:]]))
        assert r.status_code == 200 and r.json()["bytes"] == size
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_declared_length_alone_takes_no_memory(serve):
    """A client that declares 600 MB under a --post-buffering that large,
    then sends a few bytes: the worker reserved the whole 600 MB at once,
    from the client's word alone, and under --limit-as 512 aborted (every
    request in it lost). It reserves as the bytes come now."""
    s = serve("--wsgi-file", APP, "--processes", "1", "--limit-as", "512", "--post-buffering", "600000000")
    (worker,) = s.wait_workers(1)
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 600000000\r\n\r\nabc")
    time.sleep(0.3)  # the second piece is what has the rest reserved
    c.sendall(b"defgh")
    assert requests.get(s.url + "/env", timeout=10).status_code == 200
    c.close()
    assert s.worker_pids() == [worker] and "SIGABRT" not in s.log() and "memory allocation" not in s.log()


def test_a_socket_timeout_of_never_written_as_a_huge_number_serves(serve):
    """--socket-timeout 99999999999999999999 (someone meaning "never"):
    every deadline it was added to panicked (a TLS handshake, an upload in
    pieces, a uwsgi head in pieces), and the connection was dropped. It is
    taken as a century."""
    s = serve("--wsgi-file", APP, "--processes", "1", "--socket-timeout", "99999999999999999999")
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\nabcd")
    time.sleep(0.2)  # the body in two pieces: the second waits on the deadline
    c.sendall(b"efgh")
    out = b""
    while chunk := c.recv(65536):
        out += chunk
    c.close()
    assert out.startswith(b"HTTP/1.1 200 ") and b'"bytes": 8' in out, out[:300]
    assert "panicked" not in s.log()


def test_min_body_rate_off(serve):
    s = serve("--wsgi-file", APP, "--min-body-rate", "0", "--socket-timeout", "30")
    (c,) = slow_uploads(s.port, 1, length=20)
    c.settimeout(7)
    try:
        c.recv(100)
        raise AssertionError("answered before the body came")
    except socket.timeout:
        pass  # still waiting for the body, past the 5 s grace
    c.sendall(b"y" * 10)
    assert c.recv(100).startswith(b"HTTP/1.1 200 ")
    c.close()



def test_connections_past_the_limit_wait_in_the_backlog(serve):
    sp = free_port()
    s = serve("--wsgi-file", APP, "--processes", "1", "--max-connections", "3", "--stats", f"127.0.0.1:{sp}",
              "--stats-http")

    def reached():
        return requests.get(f"http://127.0.0.1:{sp}/", timeout=10).json()["max_connections_reached"]

    assert reached() == 0
    held = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(3)]
    for c in held:  # each is one of the 3 (it has been served)
        c.sendall(b"GET /env HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 200 ")
    waiting = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    waiting.sendall(b"GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    waiting.settimeout(1.5)
    try:
        waiting.recv(100)
        raise AssertionError("served past --max-connections")
    except socket.timeout:
        pass
    assert "--max-connections 3" in s.log()
    # Once per time the limit is reached (the start-up check's connection
    # may have been open too, and made it twice).
    n = reached()
    assert n in (1, 2)
    assert f"oxgate_max_connections_reached_total {n}\n" in requests.get(f"http://127.0.0.1:{sp}/metrics",
                                                                          timeout=10).text
    held.pop().close()  # room for one more
    waiting.settimeout(10)
    assert waiting.recv(100).startswith(b"HTTP/1.1 200 ")
    for c in held + [waiting]:
        c.close()


SLOW_READER = """
import time
def application(environ, start_response):
    inp = environ["wsgi.input"]
    first = inp.read(65536)
    time.sleep(7)  # longer than --min-body-rate's grace: the client waits on TCP, it is not slow
    rest = inp.read()
    body = str(len(first) + len(rest)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_an_app_that_reads_slowly_does_not_make_a_fast_client_slow(serve, tmp_path):
    """Only the time oxgate waits for the client counts against
    --min-body-rate, never the time the app takes between its reads."""
    app = tmp_path / "slow_reader.py"
    app.write_text(SLOW_READER)
    s = serve("--wsgi-file", str(app), "--post-buffering", "65536")
    body = b"x" * (8 << 20)
    r = requests.post(s.url + "/", data=body, timeout=60)
    assert r.status_code == 200 and r.text == str(len(body))
    assert "--min-body-rate" not in s.log()


@pytest.mark.parametrize("proto", ["http", "uwsgi"])
def test_memory_a_burst_of_closed_connections_held_is_given_back(serve, proto):
    """Connections that each send 60 KiB of a head (or of a uwsgi packet)
    and close: the worker's memory at the peak goes back to the kernel
    once they are gone, as it does after idle connections park (it stayed
    at the peak: over uwsgi, 2,000 of them left 170 MiB behind)."""
    if proto == "http":
        s = serve("--wsgi-file", APP, "--processes", "1")
        port = s.port
    else:
        # Alone: an HTTP connection ending would have the memory given
        # back the HTTP side's way.
        s = serve("--wsgi-file", APP, "--processes", "1", "--uwsgi-socket", "127.0.0.1:{port}", socket_arg=False)
        port = s.port
    worker = s.wait_workers(1)[0]
    base = s.rss_kb(pid=worker)
    if proto == "http":
        head, n = b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X%d: %s\r\n" % (i, b"c" * 6000) for i in range(10)), 500
    else:
        # A packet that says 65,535 bytes, all but the last few sent.
        head, n = struct.pack("<BHB", 0, 65535, 0) + b"\x05\x00HELLO\x01\x00" + b"a" * 64990, 2000
    socks = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        c.sendall(head)
        socks.append(c)
    wait_for(lambda: s.rss_kb(pid=worker) > base + 20_000, what="the burst's memory")
    time.sleep(1)  # every connection's bytes taken in
    peak = s.rss_kb(pid=worker)
    for c in socks:
        c.close()
    wait_for(lambda: s.rss_kb(pid=worker) < base + (peak - base) // 4, timeout=30, what="the memory given back")


@pytest.mark.parametrize("post_buffering", ["2 MiB", "the default, 1 MiB"])
def test_bodies_read_ahead_past_the_memory_budget_go_to_a_file_and_arrive_whole(serve, post_buffering):
    """300 clients that each send 1 MiB of a 2 MiB body and stall: the
    bodies read ahead in memory are held to 64 MiB for the process, the
    rest go to temporary files, as nginx's client body buffer spills. (They
    were all held: about 1.7 MiB a client, gigabytes for a thousand.) When
    the clients go on, every body reaches the app whole. With the default
    --post-buffering, each read ahead ends at the 1 MiB sent, and its part
    waits for the app: it was in memory outside the budget."""
    extra = ["--post-buffering", str(2 << 20)] if post_buffering == "2 MiB" else []
    s = serve("--wsgi-file", APP, "--processes", "1", *extra)
    worker = s.wait_workers(1)[0]
    base = s.rss_kb(pid=worker)
    part = bytes(range(256)) * 4096  # 1 MiB
    head = b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (2 * len(part))
    clients = []
    for _ in range(300):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        c.sendall(head + part)
        clients.append(c)
    # Each client's 1 MiB has been taken by the server (its buffers are not
    # the client's to hold): the worker holds them in memory or in files.
    time.sleep(2)
    grew_mb = (s.rss_kb(pid=worker) - base) / 1024
    print(f"300 stalled 1 MiB uploads: worker RSS +{grew_mb:.0f} MiB")
    # The 64 MiB budget, and each connection's own buffers (hyper's).
    assert grew_mb < 64 + 300 * 0.3, grew_mb
    digest = hashlib.sha256(part + part).hexdigest()
    for c in clients:
        c.sendall(part)
    for c in clients:
        out = b""
        while b"}" not in out:
            chunk = c.recv(65536)
            assert chunk, out
            out += chunk
        c.close()
        assert out.startswith(b"HTTP/1.1 200 ") and digest.encode() in out, out[:300]


def test_stalled_http2_uploads_waiting_for_the_app_are_held_to_the_budget_too(serve):
    """10 h2c connections of 16 streams, each sending 1 MiB of a 2 MiB
    body (its window's worth) and stalling, while the one app thread is
    busy: every stream's body read ahead waited for the app in memory, out
    of the 64 MiB budget (a gigabyte for 1,024 pending streams; nginx spills
    them to files). Now the budget holds, and the rest is in files."""
    import h2.config
    import h2.connection
    import h2.events
    s = serve("--wsgi-file", APP, "--processes", "1")
    worker = s.wait_workers(1)[0]
    base = s.rss_kb(pid=worker)
    part = b"u" * (1 << 20)
    conns = []
    deadline = time.monotonic() + 60
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sock.settimeout(0.2)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        streams = {}
        for _ in range(16):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":path", "/count"), (":scheme", "http"),
                                    (":authority", "x"), ("content-length", str(2 * len(part)))])
            streams[sid] = 0
        sock.sendall(conn.data_to_send())
        # Each stream's 1 MiB, as the server's windows let it through.
        while any(sent < len(part) for sent in streams.values()):
            assert time.monotonic() < deadline, streams
            for sid in streams:
                while n := min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                               len(part) - streams[sid]):
                    conn.send_data(sid, part[streams[sid]:streams[sid] + n])
                    streams[sid] += n
            sock.sendall(conn.data_to_send())
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            assert data, "the server closed the connection"
            conn.receive_data(data)
            sock.sendall(conn.data_to_send())
        conns.append(sock)
    time.sleep(2)
    grew_mb = (s.rss_kb(pid=worker) - base) / 1024
    print(f"160 stalled 1 MiB HTTP/2 uploads: worker RSS +{grew_mb:.0f} MiB")
    # The budget, and h2's buffers (it grew by 180 MiB).
    assert grew_mb < 64 + 48, grew_mb
    for sock in conns:
        sock.close()


@pytest.mark.parametrize("pieces", [1, 4096])
def test_the_head_limit_holds_however_the_head_is_split(serve, pieces):
    """98 fields of 700 bytes: each under --limit-request-field-size, fewer
    than --limit-request-fields, together over --buffer-size's 64 KiB. Sent
    in one write, it passed (hyper measures only a head still partial);
    in 4 KiB writes, 431. Now 431 both ways, and the log names the 431."""
    s = serve("--wsgi-file", APP, "--processes", "1")
    head = b"GET /env HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 700) for i in range(98)) + b"\r\n"
    assert len(head) > 64 << 10
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        for i in range(0, len(head), len(head) if pieces == 1 else pieces):
            c.sendall(head[i:i + (len(head) if pieces == 1 else pieces)])
        out = c.recv(65536)
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    assert requests.get(s.url + "/env", timeout=10).status_code == 200
    s.wait_log("request refused with 431: request head larger than --buffer-size")
    # A head far past it is hyper's to refuse, while it reads: the log
    # names the status the client got (it said 400).
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"v" * 300_000 + b"\r\n\r\n")
        assert c.recv(65536).startswith(b"HTTP/1.1 431 ")
    s.wait_log("a request head was answered 431 Request Header Fields Too Large")


def test_a_uwsgi_config_that_raises_buffer_size_takes_big_cookies_and_urls_as_uwsgi(tmp_path):
    """`buffer-size = 32768`, the value real configs raise it to for big
    cookies and URLs: a 9 KB cookie, a 20 KB header and a 10 KB query pass
    in uWSGI and in oxgate (Gunicorn's per-field and per-line limits, which
    no uWSGI config sets, refused them with 431 and 414)."""
    import signal
    import subprocess
    from helpers import BIN, VENV, listens
    results = {}
    for name in ("oxgate", "uwsgi"):
        port = free_port()
        ini = tmp_path / f"{name}.ini"
        ini.write_text(f"[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {APPS / 'echo.py'}\n"
                       "buffer-size = 32768\nmaster = true\nprocesses = 1\n")
        program = BIN if name == "oxgate" else str(VENV / "bin" / "uwsgi")
        proc = subprocess.Popen([program, "--ini", str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: listens(port), what=f"{name} listening")
            url = f"http://127.0.0.1:{port}"
            results[name] = [requests.get(url + "/", headers={"Cookie": "a=" + "x" * 9000}, timeout=10).status_code,
                             requests.get(url + "/", headers={"X-Big": "y" * 20000}, timeout=10).status_code,
                             requests.get(url + "/?q=" + "z" * 10000, timeout=10).status_code]
        finally:
            proc.send_signal(signal.SIGINT)  # (SIGTERM reloads uWSGI)
            proc.wait(30)
    assert results["oxgate"] == results["uwsgi"] == [200, 200, 200], results
