"""ASGI WebSockets (issue #13), driven by the real `websockets` client:
echo of text and binary from 1 byte to 1 MiB, subprotocols and accept
headers, close codes both ways, refusal and denial, errors, pings,
over-size messages, 1,000 sockets on one worker, a stop's 1001, a FastAPI
endpoint next to uvicorn, and nginx's proxy_pass with Upgrade."""
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import zlib

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from helpers import APPS, BIN, ROOT, VENV, free_port, raw_request, start_nginx, wait_for


def ws_app(serve, tmp_path, *args, module="asgi_ws:app"):
    return serve("--home", str(VENV), "--chdir", str(APPS), "--module", module,
                 "--processes", "1", *args, env={"ASGI_MARKERS": str(tmp_path)})


def url(s, path):
    return f"ws://127.0.0.1:{s.port}{path}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def marker(tmp_path, name):
    wait_for(lambda: (tmp_path / name).exists(), what=name)
    return json.loads((tmp_path / name).read_text())


def test_echo_text_and_binary_from_1_byte_to_1_mib(serve, tmp_path):
    s = ws_app(serve, tmp_path)

    async def go():
        async with connect(url(s, "/echo"), max_size=None) as ws:
            for size in (1, 125, 126, 65535, 65536, 1 << 20):
                text = "é" * (size // 2) or "a"
                await ws.send(text)
                assert await ws.recv() == text
                data = os.urandom(size)
                await ws.send(data)
                assert await ws.recv() == data
    run(go())
    assert marker(tmp_path, "ws-disconnect-echo") == {
        "type": "websocket.disconnect", "code": 1000, "reason": ""}

    async def a_memoryview():
        async with connect(url(s, "/memoryview")) as ws:
            return await ws.recv()
    assert run(a_memoryview()) == b"mv"
    # The request line is written once the app's call has returned.
    s.wait_log("GET /echo => generated 0 bytes")
    assert "HTTP/1.1 101" in s.log()


def test_subprotocol_and_accept_headers(serve, tmp_path):
    s = ws_app(serve, tmp_path)

    async def go():
        async with connect(url(s, "/echo"), subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["x-ws"] == "yes"
        async with connect(url(s, "/scope?x=1"), subprotocols=["a", "b"],
                           additional_headers={"X-Custom": "v"}) as ws:
            return json.loads(await ws.recv())
    scope = run(go())

    async def unoffered():
        async with connect(url(s, "/unoffered-subprotocol"), subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol is None
            await ws.send("still")
            assert await ws.recv() == "still"
    run(unoffered())
    assert "'not.offered' is not one the client offered" in marker(tmp_path, "ws-unoffered-subprotocol")
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope" and scope["query_string"] == "x=1"
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert "method" not in scope
    assert ["x-custom", "v"] in scope["headers"]
    assert scope["asgi"]["version"] == "3.0"


def test_close_codes_both_ways(serve, tmp_path):
    s = ws_app(serve, tmp_path)

    async def go():
        # The app closes: the client sees its code and reason.
        async with connect(url(s, "/close/4123")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert (e.value.rcvd.code, e.value.rcvd.reason) == (4123, "bye")
        # The client closes: the app sees its code and reason.
        ws = await connect(url(s, "/echo-client-close"))
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(4007, "client says bye")
        # Closing on the app's request, mid-conversation.
        async with connect(url(s, "/echo")) as ws:
            await ws.send("close-me")
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 4001
        # A code that may not be sent (RFC 6455 §7.4): the app's send()
        # raises, and the socket closes as on any error of the app's.
        async with connect(url(s, "/close/1005")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1011
        # Nor one past 16 bits, which is still an int (it was a TypeError,
        # "'code' must be an int").
        async with connect(url(s, "/close/70000")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1011
    run(go())
    s.wait_log("WebSocket close code 1005 may not be sent")
    s.wait_log("WebSocket close code 70000 may not be sent")
    assert marker(tmp_path, "ws-disconnect-echo-client-close") == {
        "type": "websocket.disconnect", "code": 4007, "reason": "client says bye"}
    # After its own close, the app's receive() says disconnect at once.
    assert marker(tmp_path, "ws-after-close") == {
        "type": "websocket.disconnect", "code": 4123, "reason": "bye"}


def test_refusal_denial_and_errors(serve, tmp_path):
    s = ws_app(serve, tmp_path)

    async def status_of(path):
        with pytest.raises(InvalidStatus) as e:
            async with connect(url(s, path)):
                pass
        return e.value.response

    async def go():
        refused = await status_of("/refuse")
        assert refused.status_code == 403
        denied = await status_of("/deny")
        assert denied.status_code == 401
        assert denied.headers["x-why"] == "no ticket"
        assert denied.body == b"no entry"
        assert (await status_of("/boom")).status_code == 500
        assert (await status_of("/silent")).status_code == 500
        # An error after accepting closes with 1011; returning, with 1000.
        async with connect(url(s, "/boom-after")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1011
        async with connect(url(s, "/return")) as ws:
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1000
    run(go())
    log = s.log()
    assert "boom before accept" in log and "boom after accept" in log
    assert "returned without answering the WebSocket handshake" in log
    # A refusal (close before accept) is a whole answer, not an error.
    assert "completing its answer" not in log
    # The worker serves on.
    assert requests.get(s.url + "/").text == "plain http\n"


def test_bad_handshakes_get_http_errors(serve, tmp_path):
    s = ws_app(serve, tmp_path)
    base = {"Connection": "Upgrade", "Upgrade": "websocket"}
    r = requests.get(s.url + "/echo", headers={**base, "Sec-WebSocket-Version": "13"})
    assert r.status_code == 400  # no key
    r = requests.get(s.url + "/echo", headers={
        **base, "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "8"})
    assert r.status_code == 426 and r.headers["Sec-WebSocket-Version"] == "13"
    # A plain request on the same app is HTTP.
    assert requests.get(s.url + "/echo").text == "plain http\n"
    # Without `Connection: upgrade` (RFC 6455 §4.2.1), plain HTTP too, as
    # uvicorn serves it.
    r = requests.get(s.url + "/echo", headers={
        "Upgrade": "websocket", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
    assert (r.status_code, r.text) == (200, "plain http\n")
    # A key that is not base64 for 16 bytes (RFC 6455 §4.2.1), as uvicorn.
    for key in ("notbase64!!", "dGVzdA=="):
        r = requests.get(s.url + "/echo", headers={**base, "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
        assert r.status_code == 400, key
    # A refused handshake ends the connection: what the client sent behind
    # it is not read as a next request.
    got = raw_request(s.port, b"GET /refuse HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                      b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", expect_close=True)
    assert got.startswith(b"HTTP/1.1 403") and got.count(b"HTTP/1.1") == 1, got


def test_ws_none_serves_handshakes_as_http_and_wsgi_apps_ignore_upgrades(serve, tmp_path):
    handshake = {"Connection": "Upgrade", "Upgrade": "websocket",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    s = ws_app(serve, tmp_path, "--ws", "none")
    r = requests.get(s.url + "/echo", headers=handshake)
    assert (r.status_code, r.text) == (200, "plain http\n")
    # A WSGI app answers an upgrade request as any other, and the
    # connection goes on with HTTP.
    w = serve("--wsgi-file", str(ROOT / "examples" / "hello.py"), "--processes", "1")
    with requests.Session() as session:
        for _ in range(2):
            r = session.get(w.url + "/", headers=handshake)
            assert r.status_code == 200


def test_over_size_message_closes_with_1009(serve, tmp_path):
    s = ws_app(serve, tmp_path, "--ws-max-size", "65536")

    async def go():
        async with connect(url(s, "/echo"), max_size=None) as ws:
            await ws.send(b"a" * 65536)
            assert len(await ws.recv()) == 65536
            await ws.send(b"a" * 65537)
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1009
    run(go())
    assert marker(tmp_path, "ws-disconnect-echo")["code"] == 1009


DEFLATE_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def raw_ws(port, path, offer):
    """A WebSocket opened by hand, offering `offer` as its extensions;
    returns the socket and the 101's head."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              f"Sec-WebSocket-Extensions: {offer}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = c.recv(1)
        assert byte, f"closed before the end of the handshake's answer: {head!r}"
        head += byte
    return c, head.decode()


def deflated(data):
    """One message compressed as RFC 7692 sends it."""
    z = zlib.compressobj(wbits=-15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def client_frame(opcode, payload, rsv1=False, fin=True):
    key = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 \
        else bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def server_frame(c):
    """The next frame the server sends: (fin, rsv1, opcode, payload)."""
    def exactly(n):
        buf = b""
        while len(buf) < n:
            got = c.recv(n - len(buf))
            assert got, "the server closed the connection"
            buf += got
        return buf
    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exactly(8))[0]
    return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, exactly(n)


def test_per_message_deflate_on_the_wire(serve, tmp_path):
    """The client's permessage-deflate offer is taken (each message on its
    own); a compressed message split over frames with a ping between comes
    to the app whole; the echo comes back compressed, a short one not; a
    message that inflates past --ws-max-size closes with 1009."""
    s = ws_app(serve, tmp_path, "--ws-max-size", "1000000")
    c, head = raw_ws(s.port, "/echo", "permessage-deflate; client_max_window_bits")
    assert head.startswith("HTTP/1.1 101") and f"sec-websocket-extensions: {DEFLATE_ANSWER}" in head.lower(), head
    text = ("hello, deflate! " * 500).encode()
    packed = deflated(text)
    assert len(packed) < 200
    half = len(packed) // 2
    c.sendall(client_frame(0x1, packed[:half], rsv1=True, fin=False) + client_frame(0x9, b"ping")
              + client_frame(0x0, packed[half:]))
    fin, rsv1, opcode, payload = server_frame(c)
    assert (fin, rsv1, opcode, payload) == (True, False, 0xA, b"ping")
    fin, rsv1, opcode, payload = server_frame(c)
    assert fin and rsv1 and opcode == 0x1 and len(payload) < 200
    assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff") == text
    c.sendall(client_frame(0x2, b"short"))
    assert server_frame(c) == (True, False, 0x2, b"short")
    # 2 MB of zeros in a few KB: refused once past the limit.
    c.sendall(client_frame(0x2, deflated(bytes(2_000_000)), rsv1=True))
    fin, rsv1, opcode, payload = server_frame(c)
    assert opcode == 0x8 and struct.unpack(">H", payload[:2])[0] == 1009, payload
    c.close()
    assert marker(tmp_path, "ws-disconnect-echo")["code"] == 1009
    # A compressed message that does not inflate: 1002, as uvicorn closes.
    (tmp_path / "ws-disconnect-echo").unlink()
    c, head = raw_ws(s.port, "/echo", "permessage-deflate; server_max_window_bits=15")
    assert "server_max_window_bits=15" in head, head
    c.sendall(client_frame(0x2, b"\xff\xff\xff\xff not deflate", rsv1=True))
    fin, rsv1, opcode, payload = server_frame(c)
    assert opcode == 0x8 and struct.unpack(">H", payload[:2])[0] == 1002, payload
    c.close()


def test_per_message_deflate_with_the_websockets_client_and_turned_off(serve, tmp_path):
    """Python's websockets offers permessage-deflate by default, and takes
    oxgate's answer; --ws-per-message-deflate=false (uvicorn's flag) leaves
    messages uncompressed, as does a client that offers nothing."""
    on = ws_app(serve, tmp_path)
    off = ws_app(serve, tmp_path, "--ws-per-message-deflate=false")

    async def go():
        # A client that names the server's window must hear it named back.
        windowed = ClientPerMessageDeflateFactory(server_max_window_bits=15)
        async with connect(url(on, "/echo"), extensions=[windowed], compression=None) as ws:
            assert "server_max_window_bits=15" in ws.response.headers["Sec-WebSocket-Extensions"]
            await ws.send("y" * 1000)
            assert await ws.recv() == "y" * 1000
        for s, want in ((on, DEFLATE_ANSWER), (off, None)):
            for compression in ("deflate", None):
                async with connect(url(s, "/echo"), max_size=None, compression=compression) as ws:
                    said = ws.response.headers.get("Sec-WebSocket-Extensions")
                    assert said == (want if compression else None), (s.args, compression, said)
                    for message in ("x" * 100_000, os.urandom(70_000), "tiny"):
                        await ws.send(message)
                        assert await ws.recv() == message
    run(go())


def test_server_pings_and_closes_a_silent_client(serve, tmp_path):
    s = ws_app(serve, tmp_path, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5")

    async def go():
        # A client that answers pings stays open past many intervals.
        async with connect(url(s, "/echo"), ping_interval=None) as ws:
            await asyncio.sleep(1.5)
            await ws.send("still here")
            assert await ws.recv() == "still here"
        # A client that stops reading (so never answers) is closed.
        raw = socket.create_connection(("127.0.0.1", s.port))
        raw.sendall(b"GET /echo-silent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        return raw
    raw = run(go())
    assert raw.recv(4096).startswith(b"HTTP/1.1 101")
    # The app hears of the timeout once the ping goes unanswered.
    got = marker(tmp_path, "ws-disconnect-echo-silent")
    assert got["code"] == 1011
    # Then dropped, as uvicorn drops it: not held for the close handshake
    # of a peer judged gone (5 s).
    raw.settimeout(3)
    while raw.recv(4096):
        pass
    raw.close()


def test_a_thousand_sockets_on_one_worker(serve, tmp_path):
    s = ws_app(serve, tmp_path, "--listen", "1024")
    n = 1000

    async def go():
        sockets = []
        for i in range(0, n, 100):
            sockets += await asyncio.gather(*[
                connect(url(s, "/echo"), ping_interval=None) for _ in range(100)])
        assert len(sockets) == n
        await asyncio.gather(*[ws.send(f"m{i}") for i, ws in enumerate(sockets)])
        got = await asyncio.gather(*[ws.recv() for ws in sockets])
        assert got == [f"m{i}" for i in range(n)]
        await asyncio.gather(*[ws.close() for ws in sockets])
    run(go())
    assert len(s.worker_pids()) == 1


# A stop's deadline is --reload-mercy, a reload's --worker-reload-mercy;
# the other is left at its 60 s default, so the worker must know which.
@pytest.mark.parametrize("how", ["stop", "reload"])
def test_a_stop_or_reload_closes_open_sockets_with_1001_before_the_masters_kill(serve, tmp_path, how):
    """Inside the deadline of that kind of stop: the 1001, then the app's
    disconnect and the lifespan shutdown. (The worker took the larger of the
    two mercies as its own: a stop at --reload-mercy 4 killed it before the
    1001, a reload at --worker-reload-mercy 4 killed it at the 1001, before
    the lifespan shutdown.) How long the app's clean-up may take is
    test_asgi.py's."""
    mercy, sig = {"stop": ("--reload-mercy", signal.SIGTERM), "reload": ("--worker-reload-mercy", signal.SIGHUP)}[how]
    s = ws_app(serve, tmp_path, mercy, "4")
    s.wait_workers(1)

    async def go():
        async with connect(url(s, "/slow-cleanup")) as ws:
            os.kill(s.proc.pid, sig)
            # The socket stays open while the stop waits its mercy time.
            await asyncio.sleep(0.5)
            await ws.send("during the stop")
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd and e.value.rcvd.code
    assert run(go()) == 1001
    assert marker(tmp_path, "lifespan-shutdown") is True
    if how == "stop":
        s.proc.wait(20)


@pytest.mark.parametrize("peer", ["uvicorn", "gunicorn"])
def test_uvicorns_command_line_closes_open_sockets_with_1012_as_its_stop_begins(tmp_path, peer):
    """Under `oxgate uvicorn`, a stop closes open WebSockets at once with
    1012, as uvicorn does: a container stop's 10 s was spent waiting for an
    idle socket (the mercy time), and the lifespan shutdown never ran. So
    does Gunicorn with uvicorn's worker class (it waited out the mercy time,
    then closed with 1001)."""
    codes = {}
    if peer == "uvicorn":
        programs = (("oxgate", [BIN, "uvicorn"]), ("uvicorn", [str(VENV / "bin" / "uvicorn")]))
        args = ["asgi_ws:app", "--app-dir", str(APPS), "--port"]
    else:
        programs = (("oxgate", [BIN, "gunicorn"]), ("uvicorn", [str(VENV / "bin" / "gunicorn")]))
        args = ["-k", "uvicorn.workers.UvicornWorker", "--chdir", str(APPS), "asgi_ws:app", "-b"]
    for name, program in programs:
        port = free_port()
        where = str(port) if peer == "uvicorn" else f"127.0.0.1:{port}"
        p = subprocess.Popen([*program, *args, where],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "VIRTUAL_ENV": str(VENV)})
        try:
            wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, what=f"{name} listening")

            async def go():
                async with connect(f"ws://127.0.0.1:{port}/echo") as ws:
                    await ws.send("x")
                    await ws.recv()
                    p.send_signal(signal.SIGTERM)
                    with pytest.raises(ConnectionClosed) as e:
                        await asyncio.wait_for(ws.recv(), 5)
                    return e.value.rcvd and e.value.rcvd.code
            codes[name] = run(go())
            p.wait(10)
        finally:
            p.kill()
            p.wait()
    assert codes == {"oxgate": 1012, "uvicorn": 1012}


def test_a_client_that_never_answers_the_stops_close_does_not_hold_the_stop(tmp_path):
    """A client that reads but never answers a close (a dead mobile client
    whose connection still looks open): the stop's close frame goes out,
    and the connection is dropped about a second later, as uvicorn drops it
    at once; it waited the close handshake's 5 s, and so did the stop."""
    import time
    port = free_port()
    p = subprocess.Popen([BIN, "uvicorn", "asgi_ws:app", "--app-dir", str(APPS), "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "VIRTUAL_ENV": str(VENV)})
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, what="oxgate listening")
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
        p.send_signal(signal.SIGTERM)
        frame = sock.recv(2)
        assert frame[0] == 0x88, frame  # the close frame, 1012
        sent_at = time.monotonic()
        while sock.recv(4096):
            pass
        closed_at = time.monotonic()
        # Not a timing measure: dropped by the stop's own deadline (1 s),
        # not the close handshake's (5 s).
        assert closed_at - sent_at < 4, closed_at - sent_at
        p.wait(20)
    finally:
        p.kill()
        p.wait()


def test_fastapi_websocket_same_as_uvicorn(serve, tmp_path, uvicorn):
    s = ws_app(serve, tmp_path, module="asgi_fastapi:app")
    theirs = uvicorn("asgi_fastapi:app").replace("http://", "ws://")

    async def talk(base):
        out = []
        async with connect(base + "/ws/7?token=t", subprotocols=["p1"]) as ws:
            out.append(ws.subprotocol)
            for m in ("a", "bb", "ccc"):
                await ws.send(m)
                out.append(await ws.recv())
            await ws.send(b"json")
            out.append(await ws.recv())
        for path in ("/ws/7", "/ws/x?token=t"):
            with pytest.raises(InvalidStatus) as e:
                async with connect(base + path):
                    pass
            out.append((e.value.response.status_code, e.value.response.body))
        return out
    ours = run(talk(url(s, "")))
    assert ours == run(talk(theirs))
    assert ours[:4] == ["p1", "7:a", "7:bb", "7:ccc"]


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_proxy_pass_with_upgrade_behind_nginx(serve, tmp_path, version):
    """Also without `proxy_http_version 1.1`, which sites forget: nginx then
    sends the handshake as HTTP/1.0, which uvicorn upgrades; it was served
    as a plain request (a 404 from FastAPI)."""
    s = ws_app(serve, tmp_path, "--proxy-headers")
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
    location / {{
      proxy_pass http://127.0.0.1:{s.port};
      {"proxy_http_version 1.1;" if version == "1.1" else ""}
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}
}}
"""
    nginx = start_nginx(tmp_path / "nginx", port, conf)
    try:
        async def go():
            async with connect(f"ws://127.0.0.1:{port}/echo") as ws:
                for m in ("through nginx", b"\x00" * 100_000):
                    await ws.send(m)
                    assert await ws.recv() == m
            async with connect(f"ws://127.0.0.1:{port}/scope") as ws:
                return json.loads(await ws.recv())
        scope = run(go())
        assert scope["type"] == "websocket"
        # nginx said the client came over TLS: the scheme says so.
        assert scope["scheme"] == "wss"
    finally:
        nginx.terminate()
        nginx.wait(10)


def test_quart_websocket_same_as_uvicorn(serve, tmp_path, uvicorn):
    s = ws_app(serve, tmp_path, module="asgi_quart:app")
    theirs = uvicorn("asgi_quart:app").replace("http://", "ws://")

    async def talk(base):
        async with connect(base + "/ws") as ws:
            out = []
            for m in ("one", "two"):
                await ws.send(m)
                out.append(await ws.recv())
            return out
    assert run(talk(url(s, ""))) == run(talk(theirs)) == ["quart: one", "quart: two"]


def test_last_messages_backpressure_cancelled_receives_and_closing_mid_stream(serve, tmp_path):
    s = ws_app(serve, tmp_path, "--ws-ping-interval", "0")

    async def go():
        # An app that sends and returns: every message, then a 1000 close.
        async with connect(url(s, "/bye")) as ws:
            got = [await ws.recv() for _ in range(50)]
            assert got == [f"bye {i}" for i in range(50)]
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            assert e.value.rcvd.code == 1000
        # A receive() cancelled by a timeout leaves the next message be.
        async with connect(url(s, "/timeout")) as ws:
            assert await ws.recv() == "timed out"
            await ws.send("after the timeout")
            assert await ws.recv() == "after the timeout"
        # One given up on while its message and the next were on their way
        # to the (blocked) loop: the two reach the app in the order sent.
        async with connect(url(s, "/given-up")) as ws:
            assert await ws.recv() == "send two"
            await ws.send("first")
            await ws.send("second")
            assert await ws.recv() == "first second"
        # A client that reads late: the app's send() waits on the full
        # queue and goes on once the client reads (no ping to wake it).
        async with connect(url(s, "/flood"), max_size=None, ping_interval=None,
                           max_queue=1) as ws:
            await asyncio.sleep(1)
            for i in range(128):
                assert await ws.recv() == bytes([i % 256]) * 65536
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        # A client that reads a burst of small messages late, after which
        # the app waits for it: the end of the burst is not left behind in
        # the worker's batched writes (nothing else would send it).
        async with connect(url(s, "/burst"), ping_interval=None, max_queue=1) as ws:
            await ws.send("burst")
            await asyncio.sleep(1)
            for i in range(2000):
                got = await asyncio.wait_for(ws.recv(), 10)
                assert got == i.to_bytes(4, "big") * 1000, f"message {i}"
        # The client closes while the app streams: its close is answered.
        ws = await connect(url(s, "/stream"))
        for _ in range(5):
            await ws.recv()

        async def drain():
            # The client reads on while closing: the messages sent before
            # the close reply must not fill its queue and stop its reading.
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        reader = asyncio.create_task(drain())
        await ws.close(4000, "enough")
        await reader
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4000
    run(go())
    assert marker(tmp_path, "ws-stream-error") == "OSError"


def test_the_disconnect_is_the_last_event_the_app_receives(serve, tmp_path):
    """Frames a client sends after the app's close are dropped: receive()
    keeps saying websocket.disconnect (they came after it)."""
    s = ws_app(serve, tmp_path)
    c, head = raw_ws(s.port, "/close-then-receive", "x-none")
    with c:
        assert head.startswith("HTTP/1.1 101"), head
        fin, _, opcode, payload = server_frame(c)
        assert (opcode, struct.unpack(">H", payload[:2])[0]) == (8, 4001)
        c.sendall(client_frame(1, b"late 1") + client_frame(1, b"late 2"))
        after = marker(tmp_path, "ws-after-close-twice")
    assert [m["type"] for m in after] == ["websocket.disconnect"] * 2, after


def test_an_error_in_the_apps_clean_up_after_the_client_left_is_logged(serve, tmp_path):
    """Only the OSError a send() raises once the client left is no news."""
    s = ws_app(serve, tmp_path)

    async def go():
        async with connect(url(s, "/bug-in-cleanup")) as ws:
            await ws.send("hi")
    run(go())
    s.wait_log("BUG_IN_CLEANUP")
    # Said as it is: the client closed it (1000), nothing closed it again.
    assert "after it closed with 1000" in s.log() and "closed with 1011" not in s.log()


def test_a_stop_lets_the_apps_websocket_clean_up_finish_before_lifespan_shutdown(serve, tmp_path):
    s = ws_app(serve, tmp_path, "--worker-reload-mercy", "1", "--reload-mercy", "5")

    async def go():
        async with connect(url(s, "/slow-cleanup")) as ws:
            await ws.send("hi")
            os.kill(s.proc.pid, signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as e:
                await ws.recv()
            return e.value.rcvd.code
    assert run(go()) == 1001
    s.proc.wait(20)
    assert (tmp_path / "ws-cleanup-done").exists(), s.log()
