"""ASGI 2 apps: called with the scope alone, they return what is awaited
with receive and send. `App` is a class (found by --interface auto, as
uvicorn finds it); `factory` is a plain function, which only
--interface asgi2 can tell from a WSGI app. Each answers with the ASGI
version its scope names, the request's method, path and body, and whether
lifespan's startup ran; a WebSocket is echoed once."""
import json

started = []


class App:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        scope = self.scope
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    started.append(True)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo:" + message.get("text", "")})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = json.dumps({"asgi": scope["asgi"]["version"], "method": scope["method"], "path": scope["path"],
                             "body": body.decode("latin-1"), "started": bool(started)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def factory(scope):
    return App(scope)
