"""A FastAPI app for the ASGI tests: served by oxgate and by uvicorn, whose
answers must be the same."""
import asyncio
import hashlib
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Form, HTTPException, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

MARKERS = os.environ.get("ASGI_MARKERS", "/tmp")


@asynccontextmanager
async def lifespan(app):
    if os.environ.get("ASGI_FAIL_STARTUP"):
        raise RuntimeError("the database is not there")
    yield {"greeting": "hello from lifespan"}
    # Renamed into place so the waiting test never reads it half-written.
    path = os.path.join(MARKERS, f"shutdown-{os.getpid()}")
    with open(path + ".part", "w") as f:
        f.write("bye")
    os.replace(path + ".part", path)


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/")
async def root():
    return {"hello": "world"}


@app.post("/items", status_code=201)
async def create(item: Item):
    return {"name": item.name, "double": item.price * 2}


@app.get("/items/{item_id}")
async def read(item_id: int, q: str | None = None):
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "q": q}


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting}


@app.get("/scope")
async def scope(request: Request):
    s = request.scope
    return {k: s[k] if not isinstance(s[k], bytes) else s[k].decode("latin-1")
            for k in ("type", "http_version", "method", "scheme", "path", "raw_path",
                      "query_string", "root_path")} | {"asgi": s["asgi"]["version"]}


@app.post("/form")
async def form(name: str = Form(), n: int = Form()):
    return {"name": name, "n": n}


@app.post("/upload")
async def upload(file: UploadFile, note: str = Form()):
    data = await file.read()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "note": note,
            "filename": file.filename}


@app.get("/sse")
async def sse(gate: str = ""):
    async def events():
        yield "data: first\n\n"
        # The rest waits for the client to have read the first: a server
        # that buffers the stream never sends it.
        if gate:
            while not os.path.exists(gate):
                await asyncio.sleep(0.01)
        for i in range(3):
            yield f"data: {i}\n\n"
    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/sync")
def sync_view():
    return {"sync": True}


@app.get("/text", response_class=PlainTextResponse)
async def text():
    return "plain"


@app.get("/fail")
async def fail():
    raise ValueError("fastapi view failed")


@app.websocket("/ws/{room}")
async def ws_room(websocket: WebSocket, room: int, token: str | None = None):
    if token is None:
        await websocket.close(code=1008)
        return
    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(f"{room}:{message['text']}")
            else:
                await websocket.send_json({"room": room, "bytes": len(message["bytes"])})
    except WebSocketDisconnect:
        pass
