"""A Starlette stream idle between its events (SSE fed by a queue): its
client leaving must end it at once and run its background task."""
import asyncio
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.routing import Route


def note(what):
    with open(os.environ["IDLE_STREAM_EVENTS"], "a") as f:
        f.write(what + "\n")


async def events():
    try:
        yield b"data: first\n\n"
        await asyncio.sleep(60)
        yield b"data: late\n\n"
    except BaseException as e:
        note(f"stream ended by {type(e).__name__}")
        raise


async def stream(request):
    return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(note, "background"))


app = Starlette(routes=[Route("/stream", stream)])
