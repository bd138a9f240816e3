"""A Quart app (Flask's API on ASGI) for the comparison with uvicorn:
JSON, forms, errors, lifespan hooks, streaming and a WebSocket."""
from quart import Quart, abort, jsonify, request, websocket

app = Quart(__name__)
STARTED = []


@app.before_serving
async def startup():
    STARTED.append(True)


@app.route("/")
async def home():
    return "Hello from Quart"


@app.route("/json", methods=["POST"])
async def echo_json():
    data = await request.get_json()
    return jsonify(got=data, started=bool(STARTED))


@app.route("/form", methods=["POST"])
async def form():
    f = await request.form
    return jsonify(sorted(f.items()))


@app.route("/missing")
async def missing():
    abort(404)


@app.route("/teapot")
async def teapot():
    return "short and stout", 418, {"X-Kind": "teapot"}


@app.route("/stream")
async def stream():
    async def gen():
        for i in range(3):
            yield f"part {i}\n"
    return gen(), 200, {"Content-Type": "text/plain"}


@app.websocket("/ws")
async def ws():
    while True:
        message = await websocket.receive()
        await websocket.send(f"quart: {message}")
