"""ASGI 3 apps (issue #13): real FastAPI, Starlette and Django ASGI apps,
each request sent to oxgate and to uvicorn running the same app, with the
same answers expected; lifespan; streaming both ways; disconnects; errors;
the gateway protocols behind real nginx."""
import concurrent.futures
import http.client
import json
import hashlib
import re
import shutil
import signal
import time
import os
import socket
import struct
import subprocess

import pytest
import requests

from helpers import (APACHE_MODULES, APPS, BIN, ROOT, VENV, apache_serving, free_port, listens, nginx_serving, run_fail,
                     start_nginx, traced_calls, wait_for)

# Headers that differ between servers by nature: the date, the server's
# name, and the framing (a body the app sent whole, without a length, goes
# out with Content-Length from oxgate and chunked from uvicorn).
VARYING = {"date", "server", "content-length", "transfer-encoding"}


def asgi(serve, module, *args, env=None):
    return serve("--home", str(VENV), "--chdir", str(APPS), "--module", module, "--processes", "1",
                 *args, env=env)


def answer(r):
    headers = sorted((k.lower(), v) for k, v in r.headers.items() if k.lower() not in VARYING)
    return r.status_code, headers, r.content


def same_answers(ours, theirs, requests_to_send):
    for method, path, kwargs in requests_to_send:
        a = requests.request(method, ours + path, allow_redirects=False, **kwargs)
        b = requests.request(method, theirs + path, allow_redirects=False, **kwargs)
        assert answer(a) == answer(b), f"{method} {path}"


FASTAPI_REQUESTS = [
    ("GET", "/", {}),
    ("GET", "/items/5?q=x", {}),
    ("GET", "/items/404", {}),
    ("GET", "/items/abc", {}),  # 422
    ("POST", "/items", {"json": {"name": "pen", "price": 1.5}}),
    ("POST", "/items", {"json": {"name": 1}}),  # 422
    ("DELETE", "/items/5", {}),  # 405
    ("GET", "/nowhere", {}),  # 404
    ("GET", "/state", {}),
    ("POST", "/form", {"data": {"name": "n", "n": "3"}}),
    ("POST", "/upload", {"files": {"file": ("a.bin", b"\x01" * 70000)}, "data": {"note": "x"}}),
    ("GET", "/sse", {}),
    ("GET", "/sync", {}),
    ("GET", "/text", {}),
    ("HEAD", "/text", {}),
    ("GET", "/fail", {}),
]


def test_fastapi_answers_as_uvicorn_does(serve, uvicorn, tmp_path):
    env = {"ASGI_MARKERS": str(tmp_path)}
    s = asgi(serve, "asgi_fastapi:app", env=env)
    same_answers(s.url, uvicorn("asgi_fastapi:app", env), FASTAPI_REQUESTS)
    assert "asgi_fastapi:app is ASGI" in s.log()
    s.wait_log("fastapi view failed")


@pytest.mark.parametrize("module,args", [
    ("asgi2_app:App", []),
    ("asgi2_app:factory", ["--interface", "asgi2"]),
], ids=["class-found-by-auto", "function-by-interface-asgi2"])
def test_asgi2_apps_answer_as_uvicorn_does(serve, uvicorn, module, args):
    """ASGI 2: called with the scope, then what it returns with receive and
    send; a class is found as such by --interface auto (uvicorn's rule),
    any callable by --interface asgi2. Lifespan runs, and the scope says
    version 2.0, as uvicorn's does."""
    s = asgi(serve, module, *args)
    s.wait_log(f"{module} is ASGI 2")
    same_answers(s.url, uvicorn(module, args=args), [
        ("GET", "/a/b", {}),
        ("POST", "/up", {"data": b"x" * 100_000}),
    ])
    r = requests.post(s.url + "/p", data=b"hi")
    assert r.json() == {"asgi": "2.0", "method": "POST", "path": "/p", "body": "hi", "started": True}


def test_interface_auto_tells_wsgi_asgi2_and_asgi3_apart():
    """loader.asgi_kind, which --interface auto calls, on each shape of app.
    Where uvicorn takes anything else for ASGI 2 (it never meets WSGI),
    oxgate keeps WSGI: a PEP 3333 class app, or an instance whose __call__
    is synchronous (an ASGI 2 one of those needs --interface asgi2)."""
    import functools
    import importlib.util
    spec = importlib.util.spec_from_file_location("oxgate_loader", ROOT / "src/handlers/python/loader.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)

    def wsgi(environ, start_response):
        return []

    class WsgiClass:  # PEP 3333: called with environ and start_response, then iterated
        def __init__(self, environ, start_response):
            pass

        def __iter__(self):
            return iter([])

    class Asgi2:
        def __init__(self, scope):
            pass

        async def __call__(self, receive, send):
            pass

    async def asgi3(scope, receive, send):
        pass

    class Asgi3Object:
        async def __call__(self, scope, receive, send):
            pass

    class Awaitable:  # instantiated with all three, then awaited
        def __init__(self, scope, receive, send):
            pass

        def __await__(self):
            yield

    kinds = {"wsgi function": (wsgi, 0), "PEP 3333 class": (WsgiClass, 0), "ASGI 2 class": (Asgi2, 2),
             "coroutine function": (asgi3, 3), "object with async __call__": (Asgi3Object(), 3),
             "partial of a coroutine function": (functools.partial(asgi3), 3),
             "class with __await__": (Awaitable, 3)}
    for name, (app, kind) in kinds.items():
        assert loader.asgi_kind(app) == kind, name


def test_asgi2_websocket_under_uvicorns_command_line(serve):
    from websockets.sync.client import connect
    s = serve("uvicorn", "asgi2_app:factory", "--interface", "asgi2", "--app-dir", str(APPS),
              "--host", "127.0.0.1", "--port", "{port}", socket_arg=False, env={"VIRTUAL_ENV": str(VENV)})
    with connect(f"ws://127.0.0.1:{s.port}/ws") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"


def test_starlette_answers_as_uvicorn_does(serve, uvicorn):
    s = asgi(serve, "asgi_starlette:app")
    same_answers(s.url, uvicorn("asgi_starlette:app"), [
        ("GET", "/", {}),
        ("POST", "/echo?a=1&a=2&b=3", {"data": b"x" * 1000, "headers": {"Content-Type": "text/x"}}),
        ("PUT", "/echo", {"data": b""}),
        ("GET", "/nowhere", {}),  # 404
        ("GET", "/cookie", {}),
        ("GET", "/go", {}),
        # http.response.pathsend for oxgate, Starlette's own reads for uvicorn
        ("GET", "/file", {}),
        ("GET", "/file", {"headers": {"Range": "bytes=10-20"}}),
        ("HEAD", "/file", {}),
    ])


def test_django_asgi_answers_as_uvicorn_does(serve, uvicorn):
    s = asgi(serve, "djproj.asgi:application")
    same_answers(s.url, uvicorn("djproj.asgi:application"), [
        ("GET", "/", {}),
        ("POST", "/echo/?q=1", {"data": b"payload", "headers": {"User-Agent": "t/1"}}),
        ("GET", "/stream/", {}),
        ("GET", "/missing/", {}),
    ])
    assert "djproj.asgi:application is ASGI" in s.log()


def test_django_closes_a_response_whose_client_left_mid_stream_as_under_uvicorn(serve, uvicorn, tmp_path):
    """A client that leaves a fast stream: Django's handler hears the
    disconnect, cancels its sender, and closes the response, which sends
    request_finished (where Django closes its database connections, and
    a FileResponse its file), as under uvicorn. The sender's send() failed
    in the same loop turn, and Django skipped both: the file stayed open
    until a garbage collection, and request_finished never came."""
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    s = asgi(serve, "djproj.asgi:application", env={"DJANGO_MARKERS": str(ours)})
    uvicorn_url = uvicorn("djproj.asgi:application", env={"DJANGO_MARKERS": str(theirs)})
    for url, markers in ((s.url, ours), (uvicorn_url, theirs)):
        port = int(url.rsplit(":", 1)[1])
        for n in range(1, 4):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"GET /long/ HTTP/1.1\r\nHost: x\r\n\r\n")
                got = 0
                while got < 1 << 20:
                    more = c.recv(65536)
                    assert more, url
                    got += len(more)
            done = markers / "request_finished"
            wait_for(lambda: done.exists() and done.read_text().count("x") == n,
                     what=f"{url}: request_finished after {n} clients left")


def test_upload_of_10_mib_arrives_whole(serve, tmp_path):
    s = asgi(serve, "asgi_fastapi:app", env={"ASGI_MARKERS": str(tmp_path)})
    data = os.urandom(10 * 1024 * 1024)
    r = requests.post(s.url + "/upload", files={"file": ("big.bin", data)}, data={"note": "big"})
    assert r.json() == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "note": "big",
                        "filename": "big.bin"}


def test_request_body_streams_to_the_app_and_back(serve):
    s = asgi(serve, "asgi_raw:app")
    data = os.urandom(3 * 1024 * 1024)

    def chunks():
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]

    r = requests.post(s.url + "/echo", data=chunks())  # chunked: the body streams
    assert r.content == data
    r = requests.post(s.url + "/count", data=data)
    assert r.text == str(len(data))


def post_in_pieces(s, path, pieces):
    """POST with a Content-Length, the body sent as (pause, bytes) pieces;
    gives the response's body."""
    length = sum(len(p) for _, p in pieces)
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
                  "Connection: close\r\n\r\n".encode())
        for pause, piece in pieces:
            time.sleep(pause)
            c.sendall(piece)
        answer = b""
        while chunk := c.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_a_receive_the_app_gives_up_on_loses_no_body_bytes(serve):
    """A receive() cancelled (a timeout) after its chunk was read from the
    client, or while the app was not asking, hands that chunk to the next
    receive(): the body reaches the app whole and in order."""
    s = asgi(serve, "asgi_raw:app", "--post-buffering", "65536")
    # 64 KiB come first: the app is called, and the rest streams to it.
    part = os.urandom(65536)
    # Cancelled while its chunk was on the way to the (blocked) loop.
    pieces = [(0, part), (0.2, b"hello world")]
    assert post_in_pieces(s, "/given-up", pieces) == part + b"hello world"
    # Timed out, then a pause in which a piece arrives: it waits for the app.
    pieces = [(0, part), (0.2, b"hello "), (0.5, b"world"), (0.4, b"!")]
    assert post_in_pieces(s, "/impatient", pieces) == part + b"hello world!"


@pytest.mark.parametrize("factory", [False, True], ids=["asyncio", "the-apps-task-factory"])
def test_each_request_runs_in_a_task_of_its_own(serve, factory):
    """asyncio.current_task() is the request's task (anyio's cancel scopes
    need it), from the loop's task factory when the app set one in its
    lifespan startup; each request's context variables are its own."""
    env = {"ASGI_TASK_FACTORY": "1"} if factory else None
    s = asgi(serve, "asgi_raw:app", env=env)
    for query in ("", "wait", ""):
        r = requests.get(s.url + "/task?" + query, timeout=10)
        assert r.json() == {"task": "Task", "done": False, "made_by_the_app": factory, "seen": "unset"}


def test_header_pairs_may_be_tuples_lists_or_other_iterables(serve):
    s = asgi(serve, "asgi_raw:app")
    r = requests.get(s.url + "/header-forms", timeout=10)
    assert (r.status_code, r.text) == (200, "ok")
    assert [r.headers.get(h) for h in ("x-tuple", "x-list", "x-iter")] == ["1", "2", "3"]
    r = requests.get(s.url + "/header-triple", timeout=10)
    assert r.status_code == 500
    s.wait_log("each header must be a [name, value] pair of bytes")


def test_a_task_waiting_on_what_only_it_holds_is_not_collected(serve):
    """asyncio holds tasks weakly: the server keeps each request's task
    until the app ends, as uvicorn does, or the collector ends it mid-wait."""
    s = asgi(serve, "asgi_raw:app")
    r = requests.get(s.url + "/weakly-held", timeout=10)
    assert (r.status_code, r.text) == (200, "kept")


def test_sse_is_read_while_it_streams(serve, tmp_path):
    s = asgi(serve, "asgi_fastapi:app", env={"ASGI_MARKERS": str(tmp_path)})
    gate = tmp_path / "gate"
    with requests.get(s.url + "/sse", params={"gate": str(gate)}, stream=True, timeout=10) as r:
        lines = r.iter_lines()
        assert next(lines) == b"data: first"
        gate.write_text("go")
        rest = [line for line in lines if line]
    assert rest == [b"data: 0", b"data: 1", b"data: 2"]


def test_sse_is_read_while_it_streams_behind_nginxs_stock_proxy_pass(serve, tmp_path):
    """nginx's `proxy_pass` with Debian's proxy_params asks in HTTP/1.0,
    whose answer ends by closing, and nginx held such an event stream in
    its buffers: the browser saw no event (uvicorn answers in chunks,
    which nginx passes on). The stream is now sent with X-Accel-Buffering:
    no, as sse-starlette sends it."""
    s = asgi(serve, "asgi_fastapi:app", env={"ASGI_MARKERS": str(tmp_path)})
    gate = tmp_path / "gate"
    # Debian's proxy_params, and a bare proxy_pass (no X-Forwarded-For).
    server = (f"location / {{ proxy_pass http://127.0.0.1:{s.port}; include /etc/nginx/proxy_params; }}"
              f"location /bare/ {{ proxy_pass http://127.0.0.1:{s.port}/; }}")
    with nginx_serving(tmp_path, server) as port:
        for path in ("/sse", "/bare/sse"):
            if gate.exists():
                gate.unlink()
            with requests.get(f"http://127.0.0.1:{port}{path}", params={"gate": str(gate)}, stream=True,
                              timeout=10) as r:
                lines = r.iter_lines()
                assert next(lines) == b"data: first", path
                gate.write_text("go")
                rest = [line for line in lines if line]
            assert rest == [b"data: 0", b"data: 1", b"data: 2"], path


def test_a_client_that_leaves_mid_stream_is_an_http_disconnect(serve, tmp_path):
    s = asgi(serve, "asgi_raw:app", env={"ASGI_MARKERS": str(tmp_path)})
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        c.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"tick" in c.recv(4096)
    wait_for(lambda: (tmp_path / "disconnected").exists(), what="the app seeing the disconnect")
    assert (tmp_path / "disconnected").read_text() == "http.disconnect"
    assert requests.get(s.url + "/").text == "hello GET"


def test_a_client_that_leaves_a_long_poll_behind_nginxs_gateways_is_an_http_disconnect(serve, tmp_path):
    """Behind uwsgi_pass, scgi_pass and fastcgi_pass (kept or not), nginx
    closes its connection when its client leaves: the app's waiting
    receive() says http.disconnect, as over HTTP. (It never returned: a
    long-poll ran on, holding its task and socket, and a stop waited.) A
    FastCGI abort does the same, and the kept connection serves on."""
    from helpers import fcgi_request, read_records, rec
    ports = {name: free_port() for name in ("uwsgi", "scgi", "fastcgi")}
    s = asgi(serve, "asgi_raw:app", "--uwsgi-socket", f"127.0.0.1:{ports['uwsgi']}",
             "--scgi-socket", f"127.0.0.1:{ports['scgi']}", "--fastcgi-socket", f"127.0.0.1:{ports['fastcgi']}",
             env={"ASGI_MARKERS": str(tmp_path)})
    # /u/longpoll reaches the app as /longpoll over uwsgi, and so on.
    server = "".join(
        f"location /{prefix}/ {{ rewrite ^/{prefix}(/.*)$ $1 break; include /etc/nginx/{params}; {passing} }}"
        for prefix, params, passing in [
            ("u", "uwsgi_params", f"uwsgi_pass 127.0.0.1:{ports['uwsgi']};"),
            ("s", "scgi_params", f"scgi_pass 127.0.0.1:{ports['scgi']};"),
            ("f", "fastcgi_params", f"fastcgi_pass 127.0.0.1:{ports['fastcgi']};"),
            ("k", "fastcgi_params", "fastcgi_pass kept; fastcgi_keep_conn on;")])
    upstream = f"upstream kept {{ server 127.0.0.1:{ports['fastcgi']}; keepalive 4; }}"
    with nginx_serving(tmp_path, server, http=upstream) as port:
        for prefix in ("u", "s", "f", "k"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(f"GET /{prefix}/longpoll?{prefix} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                time.sleep(0.6)  # past the wait before a connection is watched
            marker = tmp_path / f"longpoll-{prefix}"
            wait_for(marker.exists, what=f"the app seeing the client leave ({prefix})")
            assert marker.read_text() == "http.disconnect", prefix
        assert requests.get(f"http://127.0.0.1:{port}/u/", timeout=10).text == "hello GET"
    # And over HTTP, directly: its close ends the wait as well.
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /longpoll?h HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
    wait_for((tmp_path / "longpoll-h").exists, what="the app seeing the HTTP client leave")
    assert (tmp_path / "longpoll-h").read_text() == "http.disconnect"
    params = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", ""), ("PATH_INFO", "/longpoll"), ("QUERY_STRING", "abort"),
              ("SERVER_NAME", "x"), ("SERVER_PORT", "80"), ("SERVER_PROTOCOL", "HTTP/1.1")]
    with socket.create_connection(("127.0.0.1", ports["fastcgi"]), timeout=10) as c:
        c.sendall(fcgi_request(1, params, keep=True))
        time.sleep(0.6)
        c.sendall(rec(2, 1))  # FCGI_ABORT_REQUEST
        assert [r[0] for r in read_records(c)] == [3]  # END_REQUEST alone
        wait_for((tmp_path / "longpoll-abort").exists, what="the app seeing the abort")
        assert (tmp_path / "longpoll-abort").read_text() == "http.disconnect"
        c.sendall(fcgi_request(2, [p if p[0] != "PATH_INFO" else ("PATH_INFO", "/") for p in params], keep=True))
        assert any(r[0] == 6 and b"hello GET" in r[2] for r in read_records(c))


def test_an_apps_connection_close_closes_the_connection_as_uvicorn(serve, uvicorn):
    """An app's `Connection: close` closes the connection after its
    response, as uvicorn and hypercorn close it: the request pipelined
    behind it is not answered. (The header was dropped and the connection
    kept.)"""
    from helpers import raw_request
    s = asgi(serve, "asgi_raw:app")
    peer = uvicorn("asgi_raw:app")
    two = b"GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for port in (s.port, int(peer.rsplit(":", 1)[1])):
        out = raw_request(port, two)
        assert out.count(b"HTTP/1.1 ") == 1 and out.endswith(b"draining"), out
        assert b"connection: close" in out.lower(), out


def test_an_apps_own_error_after_the_client_left_is_logged(serve):
    """The OSError a send() raises once the client is gone is not logged
    (the app's error is about that), but an error of the app's own after
    it is, as uvicorn logs it."""
    s = asgi(serve, "asgi_raw:app")
    with socket.create_connection(("127.0.0.1", s.port)) as c:
        c.sendall(b"GET /raise-when-left HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"started" in c.recv(4096)
    s.wait_log("a bug in the cleanup after the client left")
    assert "(after the client left)" in s.log()


STREAMING_STARLETTE = """
import os
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route


async def chunks():
    for i in range(3):
        yield f"chunk {i}\\n"
    with open(os.environ["STREAM_MARKER"], "a") as f:
        f.write("streamed to the end\\n")


async def stream(request):
    return StreamingResponse(chunks(), media_type="text/plain")


app = Starlette(routes=[Route("/s", stream, methods=["GET", "HEAD"])])
"""


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_a_head_of_a_streaming_response_runs_the_app_to_its_end_quietly(serve, tmp_path, http2):
    """HEAD of a Starlette StreamingResponse (a load balancer's health
    check): the body is not sent, and the app's sends are taken, as uvicorn
    takes them. oxgate failed them as if the client had left, and logged a
    ClientDisconnect traceback for every HEAD."""
    (tmp_path / "streaming.py").write_text(STREAMING_STARLETTE)
    marker = tmp_path / "marker"
    s = serve("--home", str(VENV), "--chdir", str(tmp_path), "--module", "streaming:app", "--processes", "1",
              env={"STREAM_MARKER": str(marker)})
    command = ["curl", "-sS", "-I", "--max-time", "10", s.url + "/s"]
    if http2:
        command.insert(1, "--http2-prior-knowledge")
    for n in (1, 2):
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
        assert out.returncode == 0 and " 200" in out.stdout.splitlines()[0], out
        wait_for(lambda: marker.exists() and marker.read_text().count("end") == n, what="the stream's end",
                 show=s.log)
    assert requests.get(s.url + "/s", timeout=10).text == "chunk 0\nchunk 1\nchunk 2\n"
    log = s.log()
    assert "Traceback" not in log and "error in HEAD" not in log, log


def test_a_head_with_no_body_yet_reaches_the_client(serve):
    """An event stream starts its response and sends nothing until its
    first event: its head must reach the client meanwhile (an EventSource
    opens then), as uvicorn sends it, not wait for a body."""
    s = asgi(serve, "asgi_raw:app")
    head = get_until(s.port, b"/events", b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-type: text/event-stream" in head.lower()
    assert b"late" not in head
    assert requests.get(s.url + "/", timeout=10).text == "hello GET"


def get_until(port, path, mark):
    """GETs `path` on a new connection, reads until `mark` has come, and
    closes the connection: what came."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while mark not in got:
            more = c.recv(4096)
            assert more, got
            got += more
    return got


def test_a_starlette_stream_idle_between_events_ends_when_its_client_leaves_as_under_uvicorn(serve, uvicorn,
                                                                                             tmp_path):
    """An SSE stream that waits on a queue between events: under uvicorn,
    Starlette's StreamingResponse ends it as soon as the client leaves (it
    listens for http.disconnect, since uvicorn says ASGI 2.3) and runs its
    background task. oxgate said 2.4, so Starlette only waited for a send
    to fail: the stream ran on, its background task never ran, and a
    traceback was logged for each client that left."""
    seen = {}
    for name in ("oxgate", "uvicorn"):
        events = tmp_path / f"{name}.events"
        env = {"IDLE_STREAM_EVENTS": str(events)}
        url = asgi(serve, "asgi_idle_stream:app", env=env).url if name == "oxgate" else \
            uvicorn("asgi_idle_stream:app", env)
        get_until(int(url.rsplit(":", 1)[1]), b"/stream", b"data: first")  # then the client leaves
        seen[name] = wait_for(lambda: events.exists() and "background" in events.read_text() and
                              sorted(events.read_text().splitlines()), what=f"{name}'s stream to end")
    assert seen["oxgate"] == seen["uvicorn"] == ["background", "stream ended by CancelledError"], seen


def test_scope(serve):
    s = asgi(serve, "asgi_raw:app")
    scope = requests.get(s.url + "/scope/caf%C3%A9?x=1&y=%20", headers={"X-Custom": "v"}).json()
    assert scope["type"] == "http"
    # 2.3 for HTTP, as uvicorn says it (see the idle stream test).
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/café"
    assert scope["raw_path"] == "/scope/caf%C3%A9"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["root_path"] == ""
    assert scope["client"][0] == "127.0.0.1" and scope["client"][1] > 0
    assert scope["server"][1] == s.port
    assert ["x-custom", "v"] in scope["headers"]
    assert ["host", f"127.0.0.1:{s.port}"] in scope["headers"]
    assert scope["state"] == ["started"]  # the lifespan state, copied
    # A header given twice is two headers, as sent (the spec: duplicates
    # must be preserved), where WSGI's environ joins them.
    assert repeated_headers_seen("127.0.0.1", s.port, "/scope") == REPEATED_SEEN
    # Over HTTP/2 too, where cookies come in crumbs.
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge", "-H", "Cookie: a=1",
                          "-H", "Cookie: b=2", "-H", "X-Dup: a", "-H", "X-Dup: b, c", s.url + "/scope"],
                         capture_output=True, text=True, check=True).stdout
    scope = json.loads(out)
    assert scope["http_version"] == "2"
    # (hyper may order names otherwise; each name's values keep theirs.)
    by_name = sorted((h for h in scope["headers"] if h[0] in ("x-dup", "cookie")), key=lambda h: h[0] != "x-dup")
    assert by_name == REPEATED_SEEN


def test_scope_server_is_the_listening_socket_not_the_host_header_as_uvicorn(serve, uvicorn):
    """scope["server"] is "the listening address for this server": the
    socket's, whatever Host the client sends, as uvicorn says it. It was
    Host's name and port, which the client chooses (Django's SERVER_NAME
    and get_port() read it)."""
    s = asgi(serve, "asgi_raw:app")
    theirs = uvicorn("asgi_raw:app")
    for url in (s.url, theirs):
        port = int(url.rsplit(":", 1)[1])
        for host in ("evil.example:1234", "example.org", "a:b"):
            scope = requests.get(url + "/scope", headers={"Host": host}, timeout=10).json()
            assert scope["server"] == ["127.0.0.1", port], (url, host, scope["server"])
            assert ["host", host] in scope["headers"], (url, host)


# A header given twice, one value with a comma of its own; and cookies,
# which stay one field (an HTTP/2 client's crumbs are joined for the app,
# RFC 9113 §8.2.3).
REPEATED_HEADERS = [["x-dup", "a"], ["x-dup", "b, c"], ["cookie", "a=1"], ["cookie", "b=2"]]
REPEATED_SEEN = [["x-dup", "a"], ["x-dup", "b, c"], ["cookie", "a=1; b=2"]]


def repeated_headers_seen(host, port, path):
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.putrequest("GET", path)
        for name, value in REPEATED_HEADERS:
            c.putheader(name, value)
        c.endheaders()
        scope = json.loads(c.getresponse().read())
    finally:
        c.close()
    return [h for h in scope["headers"] if h[0] in ("x-dup", "cookie")]


def test_raw_path_under_a_mount_whose_name_is_encoded(serve):
    """nginx passes SCRIPT_NAME decoded and REQUEST_URI as sent: the
    target already has the prefix, and raw_path is the target."""
    from helpers import packet, uwsgi_request
    up = free_port()
    s = asgi(serve, "asgi_raw:app", "--uwsgi-socket", f"127.0.0.1:{up}")
    vars = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/my app"), ("PATH_INFO", "/scope"),
            ("REQUEST_URI", "/my%20app/scope"), ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "x"), ("SERVER_PORT", "80")]
    out = uwsgi_request(up, packet(vars))
    scope = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/my app", "/my app/scope", "/my%20app/scope")
    # PATH_INFO normalised (nginx merges slashes), REQUEST_URI as sent: the
    # target still has the prefix.
    vars = [(k, {"SCRIPT_NAME": "/app", "REQUEST_URI": "/app//scope"}.get(k, v)) for k, v in vars]
    scope = json.loads(uwsgi_request(up, packet(vars)).split(b"\r\n\r\n", 1)[1])
    assert (scope["path"], scope["raw_path"]) == ("/app/scope", "/app//scope")
    assert requests.get(s.url + "/", timeout=10).text == "hello GET"


def test_a_prefixs_own_page_from_apaches_uwsgi_proxy_has_the_prefix_as_root_path(serve, tmp_path):
    """Apache's mod_proxy_uwsgi sends `/app/` as SCRIPT_NAME `/app/` and
    PATH_INFO `/`: root_path is `/app` and path `/app/`, as the WSGI
    frameworks read them (it was `/app/` and `/app//`, and request.url had
    the `//`)."""
    from helpers import packet, uwsgi_request
    (tmp_path / "paths.py").write_text(
        "import json\n"
        "async def app(scope, receive, send):\n"
        "    body = json.dumps([scope['root_path'], scope['path'], scope['raw_path'].decode()]).encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n")
    up = free_port()
    serve("--wsgi-file", str(tmp_path / "paths.py"), "--callable", "app", "--uwsgi-socket", f"127.0.0.1:{up}", "--processes", "1")
    vars = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/app/"), ("PATH_INFO", "/"), ("REQUEST_URI", "/app/"),
            ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "x"), ("SERVER_PORT", "80")]
    out = uwsgi_request(up, packet(vars))
    assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == ["/app", "/app/", "/app/"]


def test_errors_before_and_after_the_response_starts(serve):
    s = asgi(serve, "asgi_raw:app")
    r = requests.get(s.url + "/raise-before")
    assert r.status_code == 500
    s.wait_log("raised before the response")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(s.url + "/raise-after").content
    s.wait_log("raised after the response started")
    # A head nothing followed is held back: the client gets a whole 500,
    # and the log says so (it said the connection was cut).
    r = requests.get(s.url + "/pathsend?/")
    assert r.status_code == 500
    s.wait_log("must name a regular file")
    assert "GET /pathsend?/ (after the response started, before any of it was sent: answered 500)" in s.log()
    assert requests.get(s.url + "/no-response").status_code == 500
    s.wait_log("returned without starting its response")
    assert requests.get(s.url + "/bad-header").status_code == 500
    s.wait_log("control character")
    # A length the body does not have, or two that differ: a 500, and the
    # kept-alive connection stays in step for the next request.
    with requests.Session() as keep:
        for declared, status in (("11", 200), ("5", 500), ("100", 500), ("11,11", 200), ("11,5", 500), ("x", 500)):
            r = keep.get(s.url + "/length/" + declared, timeout=10)
            assert r.status_code == status, (declared, r.status_code, r.content)
            if status == 200:
                assert r.content == b"hello world"
            assert keep.get(s.url + "/", timeout=10).text == "hello GET"
    s.wait_log("Response content longer than Content-Length")
    s.wait_log("Response content shorter than Content-Length")
    s.wait_log("two content-length headers that differ")
    # Sent in pieces, the head goes first: the piece past the length is
    # the app's error (as uvicorn raises it), not cut away unsaid, and a
    # body that ends short cuts the connection.
    r = requests.get(s.url + "/length-streamed/5", timeout=10)
    assert r.content == b"hello"
    s.wait_log("send raised: Response content longer than Content-Length")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(s.url + "/length-streamed/100", timeout=10).content
    s.wait_log("send raised: Response content shorter than Content-Length")
    r = requests.get(s.url + "/length-streamed/11", timeout=10)
    assert r.content == b"hello world"
    # The worker is fine after all that.
    assert requests.get(s.url + "/").text == "hello GET"


def test_a_body_the_app_leaves_unread_is_drained_and_the_connection_kept(serve):
    """A 4 MiB body (past --post-buffering, so still arriving) that the app
    never receives: the rest is read and dropped, as uvicorn and the WSGI
    host do, and the request pipelined after it is answered."""
    from helpers import raw_request
    s = asgi(serve, "asgi_raw:app")
    body = b"z" * (4 << 20)
    out = raw_request(s.port, b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body + b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(b"hello GET"), out[:500]


def test_a_large_streamed_response_arrives_whole(serve):
    s = asgi(serve, "asgi_raw:app")
    assert requests.get(s.url + "/big").content == b"x" * 65536 * 64


def test_lifespan_state_and_shutdown(serve, tmp_path):
    s = asgi(serve, "asgi_fastapi:app", env={"ASGI_MARKERS": str(tmp_path)})
    assert requests.get(s.url + "/state").json() == {"greeting": "hello from lifespan"}
    worker = s.wait_workers(1)[0]
    s.stop()
    assert s.proc.returncode == 0
    assert (tmp_path / f"shutdown-{worker}").read_text() == "bye"


@pytest.mark.parametrize("mercy", ["6", "2"])
def test_a_stream_open_through_a_stop_still_lets_the_lifespan_shutdown_run(serve, tmp_path, mercy):
    """An event stream open to the end of the stop: it is cut before the
    master's kill, at --worker-reload-mercy less what the worker keeps for
    the app's shutdown, and the lifespan shutdown runs. (With the mercy and
    --reload-mercy equal, as by default, the kill came while the worker
    still waited for the stream's coroutine; with a short one, uvicorn's
    --timeout-graceful-shutdown 2, the WebSockets' close moment took the
    rest.)"""
    s = asgi(serve, "asgi_fastapi:app", "--worker-reload-mercy", mercy, "--reload-mercy", mercy,
             env={"ASGI_MARKERS": str(tmp_path)})
    worker = s.wait_workers(1)[0]
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(f"GET /sse?gate={tmp_path / 'never'} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while b"data: first" not in got:
            more = c.recv(4096)
            assert more, got
            got += more
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(20) == 0, s.log()
    assert (tmp_path / f"shutdown-{worker}").read_text() == "bye", s.log()
    assert "killing" not in s.log()


def recv_until(c, got, done):
    """Reads from socket `c` onto `got` until done(got); fails at a close."""
    while not done(got):
        more = c.recv(4096)
        assert more, got
        got += more
    return got


def test_a_request_body_reaches_the_app_as_it_comes_and_the_answer_streams_meanwhile(serve):
    """As uvicorn: each piece of a body is the app's as it arrives, not
    once --post-buffering's worth has come, so an app can answer as it
    reads (a duplex stream: /echo sends back each piece it receives)."""
    s = asgi(serve, "asgi_raw:app")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        got = b""
        for piece in (b"ping-1", b"ping-2", b"ping-3"):
            c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            # Its echo comes back before the next piece is sent.
            got = recv_until(c, got, lambda g: piece in g)
        c.sendall(b"0\r\n\r\n")
        got = recv_until(c, got, lambda g: g.endswith(b"0\r\n\r\n"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got


def test_the_apps_time_before_it_reads_the_body_is_not_the_clients(serve):
    """--min-body-rate counts only the time oxgate waits for the client:
    the 5.5 s the app takes before its first receive() are not that, so a
    client that sends the rest a second after the app asked is in time.
    (A first look at the body, before the app ran, used to start the
    clock: 408.)"""
    s = asgi(serve, "asgi_raw:app")
    with socket.create_connection(("127.0.0.1", s.port), timeout=20) as c:
        c.sendall(b"POST /late-reader?5.5 HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
        time.sleep(0.3)
        c.sendall(b"x" * 1000)
        time.sleep(6.5)
        c.sendall(b"y" * 1000)
        got = b""
        got = recv_until(c, got, lambda g: g.endswith(b"2000"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got


def test_expect_100_continue_is_answered_only_when_the_app_reads(serve):
    """An app that answers without reading the body: the client that
    asked `Expect: 100-continue` gets that answer, not a 100 and then an
    upload for nothing (the body used to be read ahead before the app
    ran). One that reads gets its 100 first."""
    s = asgi(serve, "asgi_raw:app")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
        first = c.recv(4096)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"hello PUT"), first
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        # (/impatient reads the body before it answers.)
        c.sendall(b"PUT /impatient HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert c.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.sendall(b"body")
        got = b""
        got = recv_until(c, got, lambda g: g.endswith(b"\r\n\r\nbody"))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got


@pytest.mark.parametrize("app", ["asgi", "wsgi"])
def test_a_sigterm_to_the_whole_process_group_is_still_a_graceful_stop(tmp_path, app):
    """systemd's default KillMode=control-group (and `kill -TERM -PGID`)
    sends SIGTERM to the master and its workers at once; the master's own
    SIGTERM follows. A worker took that second one as "stop now" and cut
    an ASGI request in flight (a WSGI call held the loop until it ended)."""
    port = free_port()
    args = (["--home", str(VENV), "--chdir", str(APPS), "--module", "asgi_raw:app"] if app == "asgi"
            else ["--wsgi-file", str(APPS / "procs.py")])
    with open(tmp_path / "log", "wb") as log:
        p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", *args],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: listens(port), what="the server")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            slow = ex.submit(requests.get, f"http://127.0.0.1:{port}/sleep?2", timeout=30)
            time.sleep(0.5)
            os.killpg(p.pid, signal.SIGTERM)
            r = slow.result()
        # (procs.py answers with its pid, where it was loaded and its version.)
        assert r.status_code == 200 and (r.text == "slept" if app == "asgi" else len(r.text.split()) == 3), r.text
        assert p.wait(20) == 0
        assert "stopping now" not in (tmp_path / "log").read_text()
    finally:
        p.kill()
        p.wait()


def test_a_process_group_sigterm_keeps_to_reload_mercy(tmp_path):
    """--reload-mercy alone, and SIGTERM to the whole process group: the
    worker's copy came before the master said it was stopping, so the
    worker planned a reload's stop (--worker-reload-mercy, 60 s), and the
    master killed it at 3 s, before the app's shutdown ran. The worker now
    keeps to the master's time: it cuts the request itself, then runs the
    shutdown, and is not killed."""
    port = free_port()
    with open(tmp_path / "log", "wb") as log:
        p = subprocess.Popen([BIN, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", "--home", str(VENV),
                              "--chdir", str(APPS), "--module", "asgi_raw:app", "--reload-mercy", "3"],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: listens(port), what="the server")
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            stuck = ex.submit(requests.get, f"http://127.0.0.1:{port}/sleep?60", timeout=30)
            time.sleep(0.5)
            os.killpg(p.pid, signal.SIGTERM)
            assert p.wait(30) == 0
            with pytest.raises(requests.RequestException):
                stuck.result()
        text = (tmp_path / "log").read_text()
        assert "requests still running after" in text and "killing them" not in text, text
    finally:
        p.kill()
        p.wait()


def test_a_failed_startup_stops_the_server(serve, tmp_path):
    for module, env, says in [
        ("asgi_fastapi:app", {"ASGI_FAIL_STARTUP": "1"}, "the database is not there"),
        ("asgi_raw:app", {"ASGI_STARTUP_FAILED": "1"}, "application startup failed: no config"),
    ]:
        code, err = run_fail("--http-socket", f"127.0.0.1:{free_port()}", "--home", str(VENV),
                             "--chdir", str(APPS), "--module", module, "--processes", "2", "--lifespan", "on",
                             env={**env, "ASGI_MARKERS": str(tmp_path)}, timeout=60)
        assert code != 0
        assert says in err


def test_a_failed_startup_with_lazy_apps_stops_until_a_worker_was_ready(serve, tmp_path):
    """With --lazy-apps, and so under uvicorn's command line, a startup that
    fails before any worker was ready stops the server, as uvicorn (exit 3)
    and Gunicorn stop: it was retried forever, the port bound with nothing
    behind it. Once one was ready, a worker whose startup fails is tried
    again, with back-off, while the others serve."""
    env = {"ASGI_STARTUP_FAILED": "1"}
    code, err = run_fail("--http-socket", f"127.0.0.1:{free_port()}", "--home", str(VENV), "--chdir", str(APPS),
                         "--module", "asgi_raw:app", "--lazy-apps", "--processes", "2", env=env, timeout=60)
    assert code != 0 and "application startup failed: no config" in err and "startup failed" in err, err
    code, err = run_fail("uvicorn", "asgi_raw:app", "--app-dir", str(APPS), "--port", str(free_port()),
                         env=env, timeout=60)
    assert code != 0 and "no config" in err, err
    peer = subprocess.run([str(VENV / "bin" / "uvicorn"), "asgi_raw:app", "--app-dir", str(APPS),
                           "--port", str(free_port())], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert peer.returncode == 3, peer.stderr
    flag = tmp_path / "fail-from-now"
    s = asgi(serve, "asgi_raw:app", "--lazy-apps", "--processes", "2", env={"ASGI_STARTUP_FAILED_IF": str(flag)})
    pids = s.wait_workers(2)
    # Both have served, so both started: from now on, back-off (and the
    # one left serves; one still starting would fail too).
    seen = set()
    wait_for(lambda: seen.add(int(requests.get(s.url + "/pid", headers={"Connection": "close"}, timeout=10).text))
             or seen == set(pids), what="both workers serving")
    flag.touch()
    os.kill(pids[0], signal.SIGKILL)
    s.wait_log("no worker starts for")
    assert s.proc.poll() is None, s.log()
    assert requests.get(s.url + "/scope", timeout=10).status_code == 200, s.log()


def test_a_startup_that_fails_after_a_reload_leaves_the_old_workers_serving(serve, tmp_path):
    """Preloaded too, the lifespan startup runs in each worker and can
    fail in one alone (a database down for a moment): once a worker has
    been ready, a reload whose new workers cannot start leaves the old
    ones serving, and a replaced worker that cannot start is retried with
    back-off. Both stopped the whole server, old workers and all."""
    flag = tmp_path / "fail-from-now"
    sp = free_port()
    s = asgi(serve, "asgi_raw:app", "--processes", "2", "--stats", f"127.0.0.1:{sp}", "--stats-http",
             env={"ASGI_STARTUP_FAILED_IF": str(flag)})
    pids = s.wait_workers(2)
    # Both have started (their lifespan startup ran) before it fails.
    wait_for(lambda: all(w["accepting"] for w in requests.get(f"http://127.0.0.1:{sp}/").json()["workers"]),
             what="ready workers")
    assert requests.get(s.url + "/scope", timeout=10).status_code == 200
    flag.touch()
    os.kill(s.proc.pid, signal.SIGHUP)
    s.wait_log("application startup failed")
    s.wait_log("no worker starts for")
    assert s.proc.poll() is None, s.log()
    assert all(requests.get(s.url + "/scope", timeout=10).status_code == 200 for _ in range(4)), s.log()
    assert set(pids) <= set(s.worker_pids()), s.log()
    # Once the cause is gone, the reload goes through.
    flag.unlink()
    s.wait_log("graceful reload done", timeout=30)
    assert requests.get(s.url + "/scope", timeout=10).status_code == 200


def test_lifespan_auto_serves_an_app_without_it(serve, tmp_path):
    app = tmp_path / "nolifespan.py"
    app.write_text(
        "async def app(scope, receive, send):\n"
        "    assert scope['type'] == 'http', 'no lifespan here'\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n")
    s = serve("--wsgi-file", str(app), "--callable", "app")
    assert requests.get(s.url).text == "ok"
    s.wait_log("lifespan' protocol appears unsupported")
    code, _ = run_fail("--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", str(app), "--callable", "app",
                       "--lifespan", "on", timeout=60)
    assert code != 0


def test_interface_choice(serve, tmp_path):
    app = tmp_path / "both.py"
    app.write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'wsgi']\n")
    s = serve("--wsgi-file", str(app), "--callable", "app")
    assert requests.get(s.url).text == "wsgi"
    # A plain function forced to ASGI: each request fails, cleanly.
    s = serve("--wsgi-file", str(app), "--callable", "app", "--asgi", "--lifespan", "off")
    assert requests.get(s.url).status_code == 500
    s = asgi(serve, "asgi_raw:app", "--interface", "asgi")
    assert requests.get(s.url).text == "hello GET"
    assert "asgi_raw:app is ASGI (--interface asgi)" in s.log()


def test_positional_module_and_mounts(serve):
    s = serve("--home", str(VENV), "--chdir", str(APPS), "asgi_raw:app", "--mount", "/api=asgi_starlette:app",
              "--manage-script-name")
    assert requests.get(s.url + "/").text == "hello GET"
    assert requests.get(s.url + "/api/").text == "Hello from Starlette"
    scope = requests.get(s.url + "/scope").json()
    assert scope["root_path"] == ""


def test_concurrent_requests_share_one_worker(serve):
    s = asgi(serve, "asgi_raw:app", "--processes", "1")
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: requests.get(s.url + "/barrier?20").text, range(20)))
    assert results == ["all in"] * 20


def test_request_log_and_stats_see_asgi_requests(serve):
    stats = free_port()
    s = asgi(serve, "asgi_raw:app", "--stats", f"127.0.0.1:{stats}", "--stats-http")
    requests.get(s.url + "/scope?logged=1")
    s.wait_log("GET /scope?logged=1 => generated")
    data = requests.get(f"http://127.0.0.1:{stats}/").json()
    assert sum(w["requests"] for w in data["workers"]) >= 1


def test_requests_past_the_scoreboards_cores_are_logged_and_counted(serve):
    """Over 1,024 requests in flight in one ASGI worker (open WebSockets,
    long polls): the ones past the scoreboard's places were served but
    neither logged nor counted, in the stats, metrics or --max-requests."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    n = 1030
    stats = free_port()
    s = asgi(serve, "asgi_raw:app", "--listen", "2048", "--stats", f"127.0.0.1:{stats}", "--stats-http")
    clients = []
    try:
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            c.sendall(f"GET /barrier?{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            clients.append(c)
        for c in clients:
            answer = b""
            while chunk := c.recv(65536):
                answer += chunk
            assert answer.endswith(b"all in"), answer
    finally:
        for c in clients:
            c.close()
    wait_for(lambda: s.log().count(f"GET /barrier?{n} => generated") == n, what=f"{n} request lines",
             show=lambda: s.log().count(f"GET /barrier?{n} => generated"))
    data = requests.get(f"http://127.0.0.1:{stats}/").json()
    assert sum(w["requests"] for w in data["workers"]) == n


def test_a_busy_asgi_worker_shows_its_requests_and_harakiri_applies(serve):
    """ASGI requests are counted after the worker's threads: the stats
    show them running, and --harakiri ends a request that blocks the loop,
    as it ends a WSGI one."""
    stats = free_port()
    s = asgi(serve, "asgi_raw:app", "--stats", f"127.0.0.1:{stats}", "--stats-http", "--harakiri", "2")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(requests.get, s.url + "/sleep?1.5", timeout=10)
        def running():
            return any(w["status"] == "busy" and any(c.get("request", {}).get("uri") == "/sleep?1.5" for c in w["cores"])
                       for w in requests.get(f"http://127.0.0.1:{stats}/").json()["workers"])
        wait_for(running, what="the running ASGI request in the stats")
        assert slow.result().text == "slept"
        blocked = pool.submit(requests.get, s.url + "/block?30", timeout=25)
        with pytest.raises(requests.ConnectionError):
            blocked.result()
    s.wait_log("HARAKIRI")
    assert requests.get(s.url + "/sleep?0", timeout=10).text == "slept"


@pytest.mark.parametrize("proto", ["uwsgi", "fastcgi", "scgi"])
def test_a_body_streams_to_the_app_over_the_gateway_protocols_as_over_http(serve, tmp_path, proto):
    """An ASGI app gets its body as it arrives over uwsgi, FastCGI and
    SCGI too (nginx's *_request_buffering off): the first 10 kB reach it
    while the rest is still to come. Bodies up to 64 KiB were read whole
    before the app was called."""
    from helpers import packet, pairs, rec, scgi_packet
    port = free_port()
    option = {"uwsgi": "--socket", "fastcgi": "--fastcgi-socket", "scgi": "--scgi-socket"}[proto]
    s = asgi(serve, "asgi_raw:app", option, f"127.0.0.1:{port}", env={"ASGI_MARKERS": str(tmp_path)})
    first, rest = b"a" * 10_000, b"b" * 40_000
    params = [("REQUEST_METHOD", "POST"), ("PATH_INFO", "/received"), ("QUERY_STRING", ""),
              ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_URI", "/received"), ("REMOTE_ADDR", "127.0.0.1"),
              ("SERVER_PORT", "80"), ("SERVER_NAME", "x"), ("CONTENT_LENGTH", "50000")]
    if proto == "uwsgi":
        head = packet(params) + first
    elif proto == "scgi":
        head = scgi_packet([("CONTENT_LENGTH", "50000"), ("SCGI", "1")] + params[:-1]) + first
    else:
        head = rec(1, 1, struct.pack(">HB5x", 1, 0)) + rec(4, 1, pairs(params)) + rec(4, 1) + rec(5, 1, first)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head)
        received = tmp_path / "received"
        wait_for(lambda: received.exists() and "10000 True" in received.read_text(),
                 what="the first 10 kB at the app before the rest was sent")
        if proto == "fastcgi":
            c.sendall(rec(5, 1, rest) + rec(5, 1))
        else:
            c.sendall(rest)
        c.settimeout(10)
        out = b""
        while True:
            more = c.recv(65536)
            if not more:
                break
            out += more
            if proto == "fastcgi" and b"\x01\x03\x00\x01" in out:
                break
    assert b"200" in out, out[:200]
    sizes = [int(l.split()[0]) for l in received.read_text().splitlines()]
    assert sum(sizes) == 50_000, sizes


def test_behind_nginx_over_uwsgi_fastcgi_and_http(serve, tmp_path):
    up, fc = free_port(), free_port()
    s = asgi(serve, "asgi_raw:app", "--uwsgi-socket", f"127.0.0.1:{up}", "--fastcgi-socket", f"127.0.0.1:{fc}")
    port = free_port()
    conf = f"""
worker_processes 1;
user root;
pid {tmp_path}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/nginx/tmp; proxy_temp_path {tmp_path}/nginx/tmp;
  fastcgi_temp_path {tmp_path}/nginx/tmp; uwsgi_temp_path {tmp_path}/nginx/tmp; scgi_temp_path {tmp_path}/nginx/tmp;
  server {{
    listen 127.0.0.1:{port};
    location /u/ {{ include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{up}; }}
    location /f/ {{ include /etc/nginx/fastcgi_params; fastcgi_pass 127.0.0.1:{fc}; }}
    location /h/ {{ proxy_pass http://127.0.0.1:{s.port}; proxy_http_version 1.1; }}
  }}
}}
"""
    nginx = start_nginx(tmp_path / "nginx", port, conf)
    try:
        for prefix in ("/u", "/f", "/h"):
            base = f"http://127.0.0.1:{port}{prefix}"
            r = requests.get(base + "/scope?q=1")
            assert r.status_code == 200, (prefix, r.status_code, r.text, s.log())
            scope = r.json()
            assert scope["path"] == f"{prefix}/scope", prefix
            assert scope["query_string"] == "q=1", prefix
            assert scope["method"] == "GET"
            assert repeated_headers_seen("127.0.0.1", port, f"{prefix}/scope") == REPEATED_SEEN, prefix
            data = os.urandom(300_000)
            assert requests.post(base + "/count", data=data).text == str(len(data)), prefix
            # Files the server sends itself, between body chunks.
            (tmp_path / "file.bin").write_bytes(data)
            assert requests.get(base + f"/zerocopy?{tmp_path / 'file.bin'}").content == \
                zerocopy_expected(tmp_path / "file.bin"), prefix
            assert requests.get(base + f"/pathsend?{tmp_path / 'file.bin'}").content == data, prefix
            # No trailers over the gateway protocols, even asked for (over
            # proxy_pass, whether nginx passes TE on is nginx's affair).
            r = requests.get(base + "/trailers", headers={"TE": "trailers"})
            assert r.content == b"offered=0;end" or prefix == "/h" and r.content == b"offered=1;end", prefix
    finally:
        nginx.terminate()
        nginx.wait(10)


def file_calls_while(s, tmp_path, fetch):
    """The worker's sendfile and read calls (strace, a file per thread so
    that no call is split across lines) while fetch() runs; skips the test
    where strace cannot attach."""
    assert requests.get(s.url + "/scope", timeout=10).status_code == 200
    with traced_calls(s.worker_pids(), "sendfile,pread64,read,recvfrom", tmp_path) as traced:
        deadline = time.monotonic() + 10
        while "recvfrom(" not in traced() and time.monotonic() < deadline:
            requests.get(s.url + "/scope", timeout=10)
        fetch()
    # Read once strace is done (traced_calls waits for it to catch up).
    return traced()


def sendfile_bytes(calls):
    return sum(int(n) for n in re.findall(r"sendfile\(.*\)\s+= (\d+)", calls))


# A read of the file into the process: a pread of 10,000 bytes or more, or
# a read of 100,000 (the requests' own reads are smaller).
FILE_READ = re.compile(r"pread64\(.*\)\s+= \d{5,}|read\(.*\)\s+= \d{6,}")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it)")
def test_pathsend_goes_out_with_sendfile(serve, tmp_path):
    """http.response.pathsend: the file's bytes go from the page cache to
    the socket with sendfile(2), and nothing reads them into the process."""
    s = asgi(serve, "asgi_raw:app")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))

    def fetch():
        assert requests.get(s.url + f"/pathsend?{big}", timeout=10).content == big.read_bytes()
    calls = file_calls_while(s, tmp_path, fetch)
    assert sendfile_bytes(calls) == 3 << 20, calls[-2000:]
    assert not FILE_READ.search(calls), calls[-2000:]
    # A missing file: send() raises FileNotFoundError in the app, and the
    # response, whose head has not gone out, is a 500.
    assert requests.get(s.url + f"/pathsend?{tmp_path}/missing", timeout=10).status_code == 500
    assert "FileNotFoundError" in s.log()
    # A directory opens, but is no file to send: the same, where sendfile
    # failed after a head with the directory's size had gone out.
    assert requests.get(s.url + f"/pathsend?{tmp_path}", timeout=10).status_code == 500
    s.wait_log("must name a regular file")


def chunked_with_trailers(port, te, query=b""):
    """A GET of /trailers over HTTP/1.1 (with `TE: trailers` or not): the
    body and the trailer section, read off the wire (None for a body cut
    before its last chunk)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /trailers" + query + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + te + b"\r\n")
        raw = b""
        while chunk := c.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return head, rest, b""
    body, trailers = b"", None
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            trailers = rest
            break
        body, rest = body + rest[:n], rest[n + 2:]
    return head, body, trailers


@pytest.mark.parametrize("limit", [[], ["--limit-concurrency", "10"]], ids=["plain", "limit-concurrency"])
def test_trailers_go_out_where_the_client_takes_them(serve, limit):
    """http.response.trailers: offered over HTTP/1.1 to a client that says
    TE: trailers, and sent after the last chunk, both messages' fields;
    not offered to one that does not, nor over HTTP/1.0 (nor over the
    gateway protocols, see the nginx test). An app that fails before its
    trailers cuts the body, rather than end it as whole."""
    s = asgi(serve, "asgi_raw:app", *limit)
    head, body, trailers = chunked_with_trailers(s.port, b"TE: trailers\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert body == b"offered=1;end"
    assert b"x-checksum: abc123\r\n" in trailers and b"x-count: 2\r\n" in trailers, trailers
    head, body, trailers = chunked_with_trailers(s.port, b"")
    assert body == b"offered=0;end", body
    head, body, trailers = chunked_with_trailers(s.port, b"TE: trailers\r\n", b"?fail")
    assert body == b"offered=1;end" and trailers is None, (body, trailers)
    assert "failed before the trailers" in s.log()
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /trailers HTTP/1.0\r\nTE: trailers\r\n\r\n")
        out = b""
        while chunk := c.recv(65536):  # HTTP/1.0: the body ends at the close
            out += chunk
        assert out.endswith(b"offered=0;end"), out


def zerocopy_expected(path):
    """What /zerocopy of asgi_raw.py sends of the file at path."""
    data = path.read_bytes()
    return b"head:" + data[3:100_003] + b"|mid|" + data[5:] + b"|end"


def many_expected(path):
    """What /zerocopy-many of asgi_raw.py sends of the file at path."""
    data = path.read_bytes()
    return b"".join(data[n * 20_000:(n + 1) * 20_000] for n in reversed(range(50)))


def test_zerocopysend_bounded_by_content_length_and_refusing_a_pipe(serve, tmp_path):
    s = asgi(serve, "asgi_raw:app")
    data = os.urandom(100_000)
    (tmp_path / "f.bin").write_bytes(data)
    with requests.Session() as keep_alive:
        r = keep_alive.get(s.url + f"/zerocopy-short?{tmp_path / 'f.bin'}", timeout=10)
        assert r.content == data[:30_000]
        # The same connection: the next response is its own file's alone.
        r = keep_alive.get(s.url + f"/pathsend?{tmp_path / 'f.bin'}", timeout=10)
        assert r.content == data
    assert requests.get(s.url + "/zerocopy-pipe", timeout=10).status_code == 500
    assert "must be a regular file" in s.log()
    assert requests.get(s.url + "/scope", timeout=10).status_code == 200


def test_zerocopysend_from_the_files_position_moves_it_on(serve, tmp_path):
    """Sends with no offset go on from where the last left off, as
    sendfile(2) with no offset does; the second sent the first's bytes
    again."""
    s = asgi(serve, "asgi_raw:app")
    data = os.urandom(3000)
    (tmp_path / "f.bin").write_bytes(data)
    r = requests.get(s.url + f"/zerocopy-consecutive?{tmp_path / 'f.bin'}", timeout=10)
    assert r.content == data[:1000] + b"|" + data[1000:], (len(r.content), r.content[:20])


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/test.sh installs it)")
def test_zerocopysend_goes_out_with_sendfile_between_chunks(serve, tmp_path):
    """http.response.zerocopysend: parts of the app's open file (from an
    offset for a count, or from its position to its end) go out with
    sendfile, in order with the body chunks around them, after the app has
    closed its file; so do 50 pieces sent one right after another."""
    s = asgi(serve, "asgi_raw:app")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))

    def fetch():
        assert requests.get(s.url + f"/zerocopy?{big}", timeout=10).content == zerocopy_expected(big)
        assert requests.get(s.url + f"/zerocopy-many?{big}", timeout=10).content == many_expected(big)
    calls = file_calls_while(s, tmp_path, fetch)
    assert sendfile_bytes(calls) == 100_000 + (3 << 20) - 5 + 50 * 20_000, calls[-2000:]
    assert not FILE_READ.search(calls), calls[-2000:]


def test_quart_answers_as_uvicorn_does(serve, uvicorn):
    s = asgi(serve, "asgi_quart:app")
    theirs = uvicorn("asgi_quart:app")
    same_answers(s.url, theirs, [
        ("GET", "/", {}),
        ("POST", "/json", {"json": {"a": [1, 2]}}),
        ("POST", "/form", {"data": {"x": "1", "y": "2"}}),
        ("GET", "/missing", {}),  # 404
        ("GET", "/teapot", {}),
        ("GET", "/stream", {}),
    ])
    # 405: the Allow header lists a set's methods, in each process's order.
    assert requests.delete(s.url + "/").status_code == requests.delete(theirs + "/").status_code == 405


def read_until(c, buf, end):
    """Reads from c until buf holds `end`; returns what it holds."""
    while end not in buf:
        chunk = c.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf


EARLY_HINTS = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
               b"Link: </app.js>; rel=preload; as=script\r\n\r\n")


@pytest.mark.parametrize("route", ["/early-hints", "/early-hints/after"])
def test_early_hints_reach_an_http11_client_before_the_response_is_made(serve, tmp_path, route):
    """http.response.early_hint with --http-early-hints: offered over
    HTTP/1.1, where its 103 goes out at once, while the app still waits to
    make the response (sent before or after http.response.start); a
    keep-alive connection goes on after it, and curl takes it as a 103
    before the 200."""
    s = asgi(serve, "asgi_raw:app", "--http-early-hints")
    marker = tmp_path / "go"
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(f"GET {route}?{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = read_until(c, b"", b"\r\n\r\n")
        # The app waits for the marker: nothing but the 103 can have come.
        assert got == EARLY_HINTS, got
        marker.touch()
        got = read_until(c, b"", b"offered=1")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"Link" not in got, got
        # The next request on the connection has its own 103.
        c.sendall(f"GET {route}?{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = read_until(c, b"", b"offered=1")
        assert got.startswith(EARLY_HINTS + b"HTTP/1.1 200 OK\r\n"), got
    out = subprocess.run(["curl", "-si", s.url + route], capture_output=True, timeout=10).stdout
    assert out.startswith(EARLY_HINTS.replace(b"\r\n\r\n", b"\r\n\r\nHTTP/1.1 200 OK\r\n")), out
    assert out.endswith(b"offered=1"), out


def test_an_early_hint_after_the_body_began_or_behind_a_response_still_going_out_is_dropped(serve, tmp_path):
    """A 103 goes only where it cannot land inside another response: none
    once the response's first body bytes are out, and none inside an
    8 MiB response pipelined ahead of the hinting request and not read
    yet: the 8 MiB arrive whole, then the next response. (hyper 1.12
    reads the next request once the last response is flushed, but for a
    body that ends after its response; `hyper_holds` in batch.rs guards
    that case, which this test does not reach.)"""
    s = asgi(serve, "asgi_raw:app", "--http-early-hints")
    late = tmp_path / "late"
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(f"GET /early-hints/late?{late} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = read_until(c, b"", b"late;")
        late.touch()
        got = read_until(c, got, b"offered=1")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b" 103 " not in got, got
    marker = tmp_path / "go"
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /bigone HTTP/1.1\r\nHost: x\r\n\r\n" +
                  f"GET /early-hints?{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(1)  # for anything the server would send early
        got = read_until(c, b"", b"\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        while len(body) < 8 << 20:
            body += c.recv(1 << 20)
        assert body[:8 << 20] == b"y" * (8 << 20)
        marker.touch()
        rest = read_until(c, body[8 << 20:], b"offered=1")
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n") or rest.startswith(EARLY_HINTS + b"HTTP/1.1 200"), rest


def test_early_hints_are_not_offered_where_they_cannot_go(serve, tmp_path):
    """No 103 for an HTTP/1.0 client (RFC 9110 §15.2) or over uwsgi: the
    extension is not in the scope, and the message, sent anyway, is
    ignored. A link that would end its field is refused: the app's send()
    raises, and the response is a 500 with no 103 before it. (HTTP/2 and
    TLS: test_tls_and_http2.py.)"""
    from helpers import packet, uwsgi_request
    up = free_port()
    s = asgi(serve, "asgi_raw:app", "--http-early-hints", "--uwsgi-socket", f"127.0.0.1:{up}")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /early-hints HTTP/1.0\r\n\r\n")
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.0 200 OK\r\n") and out.endswith(b"offered=0"), out
    vars = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/early-hints"), ("QUERY_STRING", ""),
            ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "x"), ("SERVER_PORT", "80")]
    out = uwsgi_request(up, packet(vars))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"offered=0"), out
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"GET /early-hints?bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 500 "), out
    wait_for(lambda: "invalid http.response.early_hint" in s.log())


def test_early_hints_are_off_unless_asked_for_since_old_proxies_break_on_them(serve, tmp_path):
    """Without --http-early-hints no 103 goes out: real nginx 1.22 behind
    proxy_pass would hand an upstream's 103 to the client as the final
    response, with the real one after it as its body. With the option on,
    that is what happens (so the docs' warning holds); without it, the
    answer through nginx is clean. Apache 2.4's mod_proxy_http passes the
    103 on, as the docs say."""
    plain = asgi(serve, "asgi_raw:app")
    hinting = asgi(serve, "asgi_raw:app", "--http-early-hints")
    locations = (f"location /plain/ {{ proxy_pass http://127.0.0.1:{plain.port}/; proxy_http_version 1.1; }}"
                 f"location /hinting/ {{ proxy_pass http://127.0.0.1:{hinting.port}/; proxy_http_version 1.1; }}")
    with nginx_serving(tmp_path, locations) as port:
        r = requests.get(f"http://127.0.0.1:{port}/plain/early-hints", timeout=10)
        assert (r.status_code, r.text) == (200, "offered=0")
        r = requests.get(f"http://127.0.0.1:{plain.port}/early-hints", timeout=10)
        assert (r.status_code, r.text) == (200, "offered=0")
        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        if re.search(r"nginx/1\.(1?\d|2[0-8])\.", version):
            out = subprocess.run(["curl", "-si", f"http://127.0.0.1:{port}/hinting/early-hints"],
                                 capture_output=True, timeout=10).stdout
            assert out.startswith(b"HTTP/1.1 103 "), out
            assert b"\r\n\r\nHTTP/1.1 200 OK" in out, out
    if not os.path.exists(f"{APACHE_MODULES}/mod_proxy_http.so"):
        return
    with apache_serving(tmp_path, ["proxy", "proxy_http"], f"ProxyPass / http://127.0.0.1:{hinting.port}/") as url:
        out = subprocess.run(["curl", "-si", url + "/early-hints"], capture_output=True, timeout=10).stdout
        assert out.startswith(EARLY_HINTS + b"HTTP/1.1 200 OK\r\n"), out
        assert out.endswith(b"offered=1"), out


def test_work_after_the_response_has_the_stop_as_under_uvicorn(tmp_path):
    """A BackgroundTask (work the app does after its response is sent) has
    the stop's time, less the lifespan shutdown's share, as uvicorn gives it
    --timeout-graceful-shutdown: a 6.5 s task under 8 s finishes. It got
    half the time left, and was cancelled at 5.5 s."""
    done = tmp_path / "job-done"
    (tmp_path / "bgjob.py").write_text(
        "import asyncio\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'queued'})\n"
        "    await asyncio.sleep(6.5)\n"
        f"    open({str(done)!r}, 'w').write('done')\n")
    port = free_port()
    log = open(tmp_path / "ox.log", "wb")
    p = subprocess.Popen([BIN, "uvicorn", "bgjob:app", "--port", str(port), "--timeout-graceful-shutdown", "8"],
                         cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listens(port), what="oxgate uvicorn")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "queued"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        p.kill()
        p.wait()
    assert done.exists(), (tmp_path / "ox.log").read_text()
