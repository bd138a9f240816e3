"""A Starlette app for the comparison with uvicorn."""
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route


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


app = Starlette(routes=[
    Route("/", home),
    Route("/echo", echo, methods=["POST", "PUT"]),
    Route("/cookie", cookie),
    Route("/go", go),
])
