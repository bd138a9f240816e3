"""oxgate's Python side of ASGI: the worker's event loop, the lifespan
protocol, and the coroutine each request runs in.

The per-request work that can be done without Python (the scope's values,
receive() and send()) is in Rust (asgi/); this file holds what asyncio must
do itself, and runs once per worker or once per request, never per message.
"""
import asyncio
import sys
import traceback


def new_loop(kind):
    """(loop, name) for --loop auto|asyncio|uvloop."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError("--loop uvloop: uvloop cannot be imported (pip install uvloop)")
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.new_event_loop(), "asyncio"


def loop_name(kind):
    """The loop --loop KIND will pick, without importing it (for the banner)."""
    if kind == "asyncio":
        return "asyncio"
    import importlib.util
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    return "asyncio" if kind == "auto" else "uvloop (not installed)"


def _say(text):
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


# The name of each request's task (bridge.rs names them).
REQUEST_TASK_NAME = "oxgate-request"
# Kept from the requests' share of a stop for the clean-up of those it
# cancels.
CANCEL_GRACE = 0.5


async def run_http(app, scope, receive, send):
    """One request: the app's coroutine, and what became of it told to the
    Rust side (which answers 500 or cuts the connection on an error)."""
    try:
        await app(scope, receive, send)
    except BaseException as e:
        send._failed(e)
    else:
        send._returned()


class Lifespan:
    """The lifespan protocol for one app, as uvicorn runs it: startup before
    the first request, shutdown after the last."""

    def __init__(self, app, state, mode, name):
        self.app = app
        self.state = state
        self.mode = mode
        self.name = name
        self.queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.startup_failed = None
        self.shutdown_failed = None
        self.error = None
        self.unsupported = False
        self.task = None

    async def _main(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as e:
            if self.startup_failed is not None or self.shutdown_failed is not None:
                pass
            elif self.mode == "auto" and not self.started.is_set():
                self.unsupported = True
                _say(f"oxgate: {self.name}: the ASGI 'lifespan' protocol appears unsupported "
                     f"({type(e).__name__}: {e}); serving without it")
            else:
                self.error = "".join(traceback.format_exception(e)).rstrip()
                _say(f"oxgate: {self.name}: exception in the 'lifespan' protocol:\n{self.error}")
        finally:
            self.started.set()
            self.stopped.set()

    async def _receive(self):
        return await self.queue.get()

    async def _send(self, message):
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._expect(not self.started.is_set(), kind)
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self._expect(not self.started.is_set(), kind)
            self.startup_failed = message.get("message", "") or "(no message)"
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self._expect(self.started.is_set() and not self.stopped.is_set(), kind)
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._expect(self.started.is_set() and not self.stopped.is_set(), kind)
            self.shutdown_failed = message.get("message", "") or "(no message)"
            self.stopped.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan protocol")

    @staticmethod
    def _expect(ok, kind):
        if not ok:
            raise RuntimeError(f"ASGI message {kind!r} sent out of order")

    async def startup(self):
        """None when the app may serve, else why it may not."""
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.started.wait()
        if self.startup_failed is not None:
            return f"{self.name}: application startup failed: {self.startup_failed}"
        if self.error is not None and self.mode == "on":
            return f"{self.name}: application startup failed (exception above)"
        if self.unsupported and self.mode == "on":
            return f"{self.name}: --lifespan on, but the app does not support the lifespan protocol"
        return None

    async def shutdown(self):
        if self.unsupported or self.error is not None or self.task is None or self.task.done():
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.stopped.wait()
        if self.shutdown_failed is not None:
            _say(f"oxgate: {self.name}: application shutdown failed: {self.shutdown_failed}")


def serve(bridge, apps, lifespan_mode, loop_kind, wake_fd):
    """The body of the worker's ASGI thread: makes the loop, runs the apps'
    startup, tells `bridge` how it went, serves until the bridge stops the
    loop, then runs shutdown. `apps` is [(name, app, state)]."""
    try:
        loop, name = new_loop(loop_kind)
    except BaseException as e:
        bridge._started(f"cannot start the event loop: {e}", "")
        return
    asyncio.set_event_loop(loop)
    lifespans = []
    try:
        if lifespan_mode != "off":
            lifespans = [Lifespan(app, state, lifespan_mode, n) for (n, app, state) in apps]
            for ls in lifespans:
                failed = loop.run_until_complete(ls.startup())
                if failed is not None:
                    bridge._started(failed, name)
                    return
        loop.add_reader(wake_fd, bridge._drain)
        bridge._started(None, name, loop)
        loop.run_forever()
        # The time left before the master's kill: the requests' coroutines
        # (a WebSocket's, told 1001, cleaning up; BackgroundTasks, which
        # run after the response, as uvicorn lets them) get it all but the
        # lifespan shutdown's share (a quarter, 5 s at most, as the mercy
        # reserved it: `asgi_shutdown_reserve`) and a moment for their
        # clean-up; then those still running are cancelled (their
        # clean-up runs on the CancelledError), and the lifespan shutdown
        # gets the rest. (Half of it went to them: a 9 s task under
        # uvicorn's --timeout-graceful-shutdown 12 was cut at 8 s.)
        left = bridge._shutdown_left()
        deadline = loop.time() + left
        running = [t for t in asyncio.all_tasks(loop)
                   if not t.done() and t.get_name() == REQUEST_TASK_NAME]
        if running:
            reserve = min(5.0, left / 4) if lifespans else 0.0
            loop.run_until_complete(asyncio.wait(running, timeout=max(0.0, left - reserve - CANCEL_GRACE)))
            late = [t for t in running if not t.done()]
            if late:
                _say(f"oxgate: {len(late)} request(s) of the ASGI app still running as the worker stops: cancelled")
                for t in late:
                    t.cancel()
                loop.run_until_complete(asyncio.wait(late, timeout=min(1.0, max(0.0, (deadline - loop.time()) / 2))))
        loop.remove_reader(wake_fd)
        if lifespans:
            async def shutdown_all():
                for ls in lifespans:
                    await ls.shutdown()
            timeout = max(0.5, deadline - loop.time())
            try:
                loop.run_until_complete(asyncio.wait_for(shutdown_all(), timeout))
            except asyncio.TimeoutError:
                _say(f"oxgate: the app's lifespan shutdown took more than {timeout:.1f}s; stopping anyway")
    except BaseException as e:
        _say("oxgate: the ASGI event loop failed:\n" + "".join(traceback.format_exception(e)).rstrip())
        bridge._started(f"the ASGI event loop failed: {e}", name)
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=1))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException:
            pass
        loop.close()
