"""A bare ASGI 3 WebSocket app: echo, subprotocols, close codes both
ways, refusal and denial, errors, and what the app saw (marker files)."""
import asyncio
import json
import os
import time

MARKERS = os.environ.get("ASGI_MARKERS", "/tmp")


def mark(name, value):
    # Written whole, then renamed: the test waits for the name to appear
    # and must never read a file still being written.
    path = os.path.join(MARKERS, name)
    with open(path + ".part", "w") as f:
        f.write(json.dumps(value))
    os.replace(path + ".part", path)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "lifespan.") + ".complete"
            await send({"type": kind})
            if message["type"] == "lifespan.shutdown":
                mark("lifespan-shutdown", True)
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"plain ", "more_body": True})
        await send({"type": "http.response.body", "body": memoryview(b"http\n")})
        return
    assert scope["type"] == "websocket"
    path = scope["path"][len(scope.get("root_path", "")):]
    if path[:3] in ("/u/", "/f/", "/h/"):
        path = path[2:]
    first = await receive()
    assert first["type"] == "websocket.connect", first
    if path == "/refuse":
        await send({"type": "websocket.close"})
        return
    if path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"no ticket")]})
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        return
    if path == "/boom":
        raise RuntimeError("boom before accept")
    if path == "/silent":
        return
    if path == "/unoffered-subprotocol":
        # A subprotocol the client did not offer would make it fail the
        # handshake: send() refuses it, and the app can accept without.
        try:
            await send({"type": "websocket.accept", "subprotocol": "not.offered"})
        except ValueError as e:
            mark("ws-unoffered-subprotocol", str(e))
    accept = {"type": "websocket.accept", "headers": [(b"x-ws", b"yes")]}
    offered = scope.get("subprotocols", [])
    if "chat.v2" in offered:
        accept["subprotocol"] = "chat.v2"
    await send(accept)
    if path == "/scope":
        s = {k: (v.decode("latin-1") if isinstance(v, bytes) else v)
             for k, v in scope.items() if k not in ("headers", "state")}
        s["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        await send({"type": "websocket.send", "text": json.dumps(s)})
    elif path.startswith("/close/"):
        await send({"type": "websocket.close", "code": int(path[7:]), "reason": "bye"})
        mark("ws-after-close", (await receive()))
        return
    elif path == "/close-then-receive":
        # What the client sends after the app closed never reaches it: the
        # disconnect is the last event, however often receive() is called.
        await send({"type": "websocket.close", "code": 4001})
        first = await receive()
        await asyncio.sleep(0.5)
        mark("ws-after-close-twice", [first, await receive()])
        return
    elif path == "/bug-in-cleanup":
        while (await receive())["type"] != "websocket.disconnect":
            pass
        {}["BUG_IN_CLEANUP"]
    elif path == "/slow-cleanup":
        while (await receive())["type"] != "websocket.disconnect":
            pass
        await asyncio.sleep(0.5)
        mark("ws-cleanup-done", True)
        return
    elif path == "/memoryview":
        # A slice of a buffer, as uvicorn takes it.
        await send({"type": "websocket.send", "bytes": memoryview(b"xxmv")[2:]})
    elif path == "/boom-after":
        raise RuntimeError("boom after accept")
    elif path == "/return":
        return
    elif path == "/bye":
        # The last words go out before the close that the return makes.
        for i in range(50):
            await send({"type": "websocket.send", "text": f"bye {i}"})
        return
    elif path == "/timeout":
        # A receive() the app gives up on must not swallow the next message.
        try:
            await asyncio.wait_for(receive(), 0.2)
        except asyncio.TimeoutError:
            await send({"type": "websocket.send", "text": "timed out"})
    elif path == "/given-up":
        # A receive() given up on while its message and the next were on
        # their way (the loop blocked): the messages keep their order.
        pending = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        await send({"type": "websocket.send", "text": "send two"})
        time.sleep(0.6)
        pending.cancel()
        first = await receive()
        second = await receive()
        await send({"type": "websocket.send", "text": first["text"] + " " + second["text"]})
    elif path == "/flood":
        # 8 MiB to a client that reads late: send() waits, then goes on.
        for i in range(128):
            await send({"type": "websocket.send", "bytes": bytes([i % 256]) * 65536})
        await send({"type": "websocket.close", "code": 1000})
        return
    elif path == "/burst":
        # On "burst": 8 MB in small messages, then the app waits for the
        # client, sending nothing more (a request/reply protocol).
        while (await receive()).get("text") == "burst":
            for i in range(2000):
                await send({"type": "websocket.send", "bytes": i.to_bytes(4, "big") * 1000})
        return
    elif path == "/stream":
        # Sends until the client closes; then send() raises OSError.
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"s" * 1000})
                await asyncio.sleep(0)
        except OSError as e:
            mark("ws-stream-error", type(e).__name__)
        return
    elif path == "/push":
        for i in range(3):
            await send({"type": "websocket.send", "text": f"push {i}"})
    # Echo until the client leaves; the disconnect is recorded.
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            mark("ws-disconnect" + path.replace("/", "-"), message)
            return
        if message.get("text") == "close-me":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
            continue
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
