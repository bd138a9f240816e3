"""A Starlette app for the comparison with uvicorn."""
import os
import tempfile

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

# A file FileResponse serves: with http.response.pathsend where the server
# offers it (oxgate), read by Starlette where it does not (uvicorn).
FILE = os.path.join(tempfile.gettempdir(), "oxgate-starlette-file.bin")
if not os.path.exists(FILE):
    with open(FILE + ".tmp", "wb") as f:
        f.write(bytes(range(256)) * 4096 + b"tail")
    os.replace(FILE + ".tmp", FILE)


async def home(request):
    return PlainTextResponse("Hello from Starlette")


async def echo(request):
    body = await request.body()
    return JSONResponse({"method": request.method, "len": len(body), "q": dict(request.query_params),
                         "ct": request.headers.get("content-type")})


async def cookie(request):
    r = PlainTextResponse("cookie set")
    r.set_cookie("k", "v")
    r.set_cookie("k2", "v2")
    return r


async def go(request):
    return RedirectResponse("/")


async def file(request):
    return FileResponse(FILE, media_type="application/octet-stream")


app = Starlette(routes=[
    Route("/file", file),
    Route("/", home),
    Route("/echo", echo, methods=["POST", "PUT"]),
    Route("/cookie", cookie),
    Route("/go", go),
])
