"""A bare ASGI 3 app for what frameworks hide: the scope, the body as it
streams, disconnects, errors before and after the response starts."""
import asyncio
import contextvars
import gc
import json
import os
import time
import weakref

MARKERS = os.environ.get("ASGI_MARKERS", "/tmp")
ARRIVED = []
# Set by /task: a request's context is its own, as each asyncio task's is.
SEEN = contextvars.ContextVar("seen", default="unset")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                failed_if = os.environ.get("ASGI_STARTUP_FAILED_IF")
                if os.environ.get("ASGI_STARTUP_FAILED") or (failed_if and os.path.exists(failed_if)):
                    await send({"type": "lifespan.startup.failed", "message": "no config"})
                    return
                scope["state"]["started"] = os.getpid()
                if os.environ.get("ASGI_TASK_FACTORY"):
                    def factory(loop, coro, **kwargs):
                        task = asyncio.Task(coro, loop=loop, **kwargs)
                        task.made_by_the_app = True
                        return task
                    asyncio.get_running_loop().set_task_factory(factory)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    # Routes are relative to root_path, which the path starts with.
    path = scope["path"][len(scope.get("root_path", "")):]
    # Behind nginx the tests put a prefix (/u, /f, /h) in front.
    if path[:3] in ("/u/", "/f/", "/h/"):
        path = path[2:]
    # (/api/scope: a target that repeats --root-path /api.)
    if path.startswith(("/scope", "/api/scope")):
        s = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        s = {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in s.items()}
        s["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        s["state"] = sorted(scope.get("state", {}))
        await respond(send, 200, json.dumps(s).encode(), b"application/json")
    elif path == "/echo":
        # Streams the body back as it arrives, chunk for chunk.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/given-up":
        # A receive() the app gives up on after its chunk was read, while
        # the loop was blocked: the chunk goes to the next receive().
        first = await receive()
        body, more = first["body"], first["more_body"]
        pending = receive()
        time.sleep(0.6)
        pending.cancel()
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await respond(send, 200, body, b"application/octet-stream")
    elif path == "/impatient":
        # Reads the body with short timeouts, waiting between tries, as
        # an app with its own deadline does.
        body, tries = b"", 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), 0.05)
            except asyncio.TimeoutError:
                tries += 1
                await asyncio.sleep(0.3)
                continue
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await respond(send, 200, body, b"application/octet-stream")
    elif path == "/pathsend":
        # The file the query names, sent by the server (with sendfile).
        name = scope["query_string"].decode()
        assert "http.response.pathsend" in scope["extensions"]
        size = [(b"content-length", str(os.path.getsize(name)).encode())] if os.path.exists(name) else []
        await send({"type": "http.response.start", "status": 200, "headers": size})
        await send({"type": "http.response.pathsend", "path": name})
    elif path == "/zerocopy":
        # Parts of the file the query names, by http.response.zerocopysend
        # between body chunks: bytes 3 to 100,003, then from the file's
        # position (5, after a buffered read, which has read ahead of it) to
        # its end. The file is closed as soon as send() returns: the server
        # keeps a descriptor of its own.
        assert "http.response.zerocopysend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"head:", "more_body": True})
        with open(scope["query_string"].decode(), "rb") as f:
            await send({"type": "http.response.zerocopysend", "file": f, "offset": 3, "count": 100_000,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"|mid|", "more_body": True})
        with open(scope["query_string"].decode(), "rb") as f:
            f.read(5)
            await send({"type": "http.response.zerocopysend", "file": f, "more_body": True})
        await send({"type": "http.response.body", "body": b"|end"})
    elif path == "/trailers":
        # Trailers when the server offers them (in two messages); the body
        # says whether it did. ?fail raises after the body instead; ?bad
        # adds fields no trailer may carry.
        offered = "http.response.trailers" in scope["extensions"]
        how = scope["query_string"]
        await send({"type": "http.response.start", "status": 200, "trailers": offered,
                    "headers": [(b"trailer", b"x-checksum, x-count")] if offered else []})
        await send({"type": "http.response.body", "body": b"offered=%d;" % offered, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})
        if offered and how == b"fail":
            raise RuntimeError("failed before the trailers")
        if offered:
            bad = [(b"upgrade", b"h2c"), (b"content-length", b"5"), (b"te", b"gzip")] if how == b"bad" else []
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")] + bad,
                        "more_trailers": True})
            await asyncio.sleep(0.05)
            await send({"type": "http.response.trailers", "headers": [(b"x-count", b"2")]})
    elif path.startswith("/early-hints"):
        # Two links in a 103 (sent even where not offered: the server must
        # ignore it), then the response once the file the query names
        # exists; /early-hints/after sends the 103 after
        # http.response.start, which the spec allows too; ?bad sends a
        # link that would end its field; ?many sends ten.
        offered = "http.response.early_hint" in scope["extensions"]
        links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]
        if scope["query_string"] == b"bad":
            links = [b"</a.css>\r\nSet-Cookie: stolen=1"]
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        if path.endswith("/after"):
            await send(start)
        marker = scope["query_string"].decode()

        async def marked():
            for _ in range(1000):
                if not marker.startswith("/") or os.path.exists(marker):
                    break
                await asyncio.sleep(0.01)
        if path.endswith("/late"):
            # Once the head and the first body bytes are out (the client
            # makes the marker when it has them): too late for a 103.
            await send(start)
            await send({"type": "http.response.body", "body": b"late;", "more_body": True})
            await marked()
        # ?many: ten hints, more than a server need pass on.
        for _ in range(10 if scope["query_string"] == b"many" else 1):
            await send({"type": "http.response.early_hint", "links": links})
        if not path.endswith("/late"):
            await marked()
        if not path.endswith(("/after", "/late")):
            await send(start)
        await send({"type": "http.response.body", "body": b"offered=%d" % offered})
    elif path == "/zerocopy-many":
        # 50 pieces of 20,000 bytes (each large enough for sendfile), one
        # right after another, backwards through the file: send() waits
        # while many are queued, and they still go out in order.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with open(scope["query_string"].decode(), "rb") as f:
            for n in reversed(range(50)):
                await send({"type": "http.response.zerocopysend", "file": f.fileno(), "offset": n * 20_000,
                            "count": 20_000, "more_body": n > 0})
    elif path == "/zerocopy-consecutive":
        # Two sends from the file's position, by descriptor then by file
        # object, each 500 bytes, then the rest: the position moves past
        # what each sent, as sendfile(2)'s with no offset.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with open(scope["query_string"].decode(), "rb") as f:
            await send({"type": "http.response.zerocopysend", "file": f.fileno(), "count": 500, "more_body": True})
            await send({"type": "http.response.zerocopysend", "file": f.fileno(), "count": 500, "more_body": True})
            await send({"type": "http.response.body", "body": b"|", "more_body": True})
            await send({"type": "http.response.zerocopysend", "file": f, "count": 500, "more_body": True})
            await send({"type": "http.response.zerocopysend", "file": f})
    elif path == "/zerocopy-short":
        # A Content-Length shorter than the file: only that much goes out,
        # and nothing of the file is left for the next response.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"30000")]})
        with open(scope["query_string"].decode(), "rb") as f:
            await send({"type": "http.response.zerocopysend", "file": f})
    elif path == "/zerocopy-pipe":
        # Not a file sendfile can read: send() raises.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        r, w = os.pipe()
        try:
            await send({"type": "http.response.zerocopysend", "file": r})
        finally:
            os.close(r)
            os.close(w)
    elif path == "/count":
        await respond(send, 200, str(await body_size(receive)).encode())
    elif path == "/forever":
        # Streams until the client leaves, then says so in a marker file.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        assert (await receive())["type"] == "http.request"
        waiter = asyncio.ensure_future(receive())
        n = 0
        while not waiter.done():
            try:
                await send({"type": "http.response.body", "body": b"tick %d\n" % n, "more_body": True})
            except OSError:
                break
            n += 1
            await asyncio.sleep(0.01)
        message = await waiter
        # Renamed into place so the waiting test never reads it half-written.
        path = os.path.join(MARKERS, "disconnected")
        with open(path + ".part", "w") as f:
            f.write(message["type"])
        os.replace(path + ".part", path)
    elif path == "/pid":
        await respond(send, 200, str(os.getpid()).encode())
    elif path == "/close":
        # Sheds its keep-alive client, as an app draining before a deploy.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"Close"), (b"content-length", b"8")]})
        await send({"type": "http.response.body", "body": b"draining"})
    elif path == "/longpoll":
        # Waits for an event that never comes: only the client leaving ends
        # it. Notes what receive() said in MARKERS/longpoll-<query>.
        await receive()  # the (empty) body
        message = await receive()
        path = os.path.join(MARKERS, "longpoll-" + scope["query_string"].decode())
        with open(path + ".part", "w") as f:
            f.write(message["type"])
        os.replace(path + ".part", path)
    elif path == "/late-reader":
        # Busy for a while (a database call) before it reads the body.
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        await respond(send, 200, str(await body_size(receive)).encode())
    elif path == "/received":
        # Notes each message the body came in (its length and more_body)
        # in MARKERS/received, then answers with their count.
        count = 0
        with open(os.path.join(MARKERS, "received"), "a") as notes:
            while True:
                message = await receive()
                count += 1
                if message["type"] == "http.disconnect":
                    notes.write("disconnect\n")
                    return
                notes.write(f"{len(message['body'])} {message.get('more_body', False)}\n")
                notes.flush()
                if not message.get("more_body", False):
                    break
        await respond(send, 200, str(count).encode())
    elif path == "/raise-before":
        raise RuntimeError("raised before the response")
    elif path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("raised after the response started")
    elif path == "/raise-when-left":
        # Waits for the client to leave, then fails in code of its own.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        raise ValueError("a bug in the cleanup after the client left")
    elif path == "/no-response":
        return
    elif path.startswith("/length/"):
        # A Content-Length the body does not have (a middleware that
        # rewrote the body and kept the old headers), or two that differ.
        declared = path.removeprefix("/length/").split(",")
        headers = [(b"content-length", d.encode()) for d in declared]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello world"})
    elif path.startswith("/length-streamed/"):
        # The same, in pieces: the head goes before the body is all known.
        declared = path.removeprefix("/length-streamed/")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", declared.encode())]})
        try:
            for piece in (b"hello", b" world"):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                await asyncio.sleep(0.05)
            await send({"type": "http.response.body"})
        except RuntimeError as e:
            print(f"send raised: {e}", flush=True)
            raise
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"a\r\nb")]})
    elif path == "/bigone":
        # One message of 8 MiB: a whole body, which hyper takes at once.
        await respond(send, 200, b"y" * (8 << 20))
    elif path == "/big":
        chunk = b"x" * 65536
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/barrier":
        # Answers once N requests are in at once (or says it gave up): only
        # a server that runs them concurrently answers "all in".
        n = int(scope["query_string"] or b"2")
        ARRIVED.append(1)
        for _ in range(1000):
            if len(ARRIVED) >= n:
                return await respond(send, 200, b"all in")
            await asyncio.sleep(0.01)
        await respond(send, 200, b"gave up")
    elif path == "/weakly-held":
        # Waits on a future that nothing but this coroutine holds, as a
        # task waiting on a connection's reader does: only the server's
        # reference keeps the task from being collected meanwhile.
        loop = asyncio.get_running_loop()
        waited = loop.create_future()
        held = weakref.ref(waited)

        def later():
            gc.collect()
            if held() is not None:
                held().set_result(b"kept")
        loop.call_later(0.1, later)
        await respond(send, 200, await waited)
    elif path == "/task":
        task = asyncio.current_task()
        before = SEEN.get()
        SEEN.set("set by an earlier request")
        if scope["query_string"] == b"wait":
            await asyncio.sleep(0.01)
        answer = {"task": type(task).__name__, "done": task.done(),
                  "made_by_the_app": getattr(task, "made_by_the_app", False), "seen": before}
        await respond(send, 200, json.dumps(answer).encode(), b"application/json")
    elif path == "/header-forms":
        # Pairs as tuples, as lists, and as any other iterable of two.
        headers = [(b"x-tuple", b"1"), [b"x-list", b"2"], iter((b"x-iter", b"3")),
                   (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/header-triple":
        await send({"type": "http.response.start", "status": 200, "headers": [[b"x-a", b"1", b"2"]]})
    elif path == "/events":
        # An event stream whose first event comes 5 s after its head.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await asyncio.sleep(5)
        await send({"type": "http.response.body", "body": b"data: late\n\n"})
    elif path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"0.5"))
        await respond(send, 200, b"slept")
    elif path == "/block":
        # A blocking call in async code: the loop stops for its length.
        time.sleep(float(scope["query_string"] or b"0.5"))
        await respond(send, 200, b"blocked")
    else:
        await respond(send, 200, b"hello " + scope["method"].encode())


async def body_size(receive):
    """The length of the request body, read to its end."""
    total, more = 0, True
    while more:
        message = await receive()
        total += len(message.get("body", b""))
        more = message.get("more_body", False)
    return total


async def respond(send, status, body, ctype=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
