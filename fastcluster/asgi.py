"""ASGI in a worker: which interface an app speaks, its event loop, and the lifespan protocol.

The per-request work is not here: it is in the request loop (`_asgi.py` for HTTP, `_websocket.py`
for WebSockets), and which interface an app speaks is in importer.py (a WSGI worker never imports
this module, nor asyncio). This is what an ASGI worker does once, before it serves and after.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from typing import Any, Optional

log = logging.getLogger("fastcluster")

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
LIFESPAN_MODES = ("auto", "on", "off")


def has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def event_loop_name(choice: str) -> str:
    """--event-loop auto|asyncio|uvloop -> the one a worker runs (uvloop when it is installed)."""
    if choice == "auto":
        return "uvloop" if has_uvloop() else "asyncio"
    return choice


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of that kind, made the thread's current one. uvloop's is subclassed:
    before Python 3.12, _asgi.start_task sets an instance attribute on the loop, which uvloop's
    own class (a C type without a __dict__) cannot hold."""
    if name == "uvloop":
        import uvloop

        class Loop(uvloop.Loop):
            pass

        loop = Loop()
    else:
        loop = asyncio.SelectorEventLoop()
    asyncio.set_event_loop(loop)
    return loop


class LifespanFailed(Exception):
    """The app's lifespan startup failed; the message says why."""


class Lifespan:
    """The ASGI lifespan protocol for one worker: startup before it serves, shutdown after.

    --lifespan auto: an app that raises before it answers the startup, or returns without
    answering it, does not support lifespan, and the worker serves without it (said once, at
    info level). on: that is a boot failure. off: the app is never called with a lifespan scope.
    A `lifespan.startup.failed` is a boot failure in both auto and on.
    """

    def __init__(self, app: Any, mode: str):
        self.app = app
        self.mode = mode
        self.state: dict = {}
        self.supported = False
        self.task: Optional[asyncio.Task] = None
        self.inbox: Optional[asyncio.Queue] = None
        self.answer: Optional[asyncio.Future] = None   # what the app says to the event in progress
        self.error: Optional[BaseException] = None
        self.answered_startup = False

    async def startup(self) -> None:
        """Run the app's startup; raises LifespanFailed with the message a user should see."""
        if self.mode == "off":
            return
        loop = asyncio.get_running_loop()
        self.inbox = asyncio.Queue()
        self.answer = loop.create_future()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = loop.create_task(self._main(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        kind, message = await self.answer
        if kind == "complete":
            self.supported = True
            return
        if kind == "failed":
            raise LifespanFailed("the app's lifespan startup failed: %s" % (message or "(no message)"))
        # it raised, or returned without an answer
        if self.mode == "on":
            if self.error is not None:
                raise LifespanFailed("the app's lifespan startup raised %s" % _describe(self.error))
            raise LifespanFailed("the app returned from its lifespan call without answering the startup "
                                 "(--lifespan on)")
        log.info("the app does not support the ASGI lifespan protocol (%s); serving without it",
                 _describe(self.error) if self.error is not None else "it returned at once")
        self.state.clear()

    async def shutdown(self, timeout: float) -> None:
        """The app's shutdown, at most `timeout` seconds; failures are logged, not raised."""
        if not self.supported or self.task is None or self.task.done():
            return
        loop = asyncio.get_running_loop()
        self.answer = loop.create_future()
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            kind, message = await asyncio.wait_for(asyncio.shield(self.answer), timeout)
        except asyncio.TimeoutError:
            log.warning("the app's lifespan shutdown did not finish within %g s", timeout)
            self.task.cancel()
            return
        if kind == "failed":
            log.error("the app's lifespan shutdown failed: %s", message or "(no message)")
        elif kind == "error":
            log.error("the app's lifespan shutdown raised %s", _describe(self.error))
        if not self.task.done():
            try:
                await asyncio.wait_for(self.task, 1.0)
            except (asyncio.TimeoutError, Exception):
                pass

    async def _main(self, scope):
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self.error = exc
            if self.answered_startup and not isinstance(exc, asyncio.CancelledError):
                log.error("the app's lifespan task raised", exc_info=exc)
            self._say("error", None)
        else:
            self._say("returned", None)

    async def _receive(self):
        return await self.inbox.get()

    async def _send(self, message):
        kind = message.get("type")
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self.answered_startup = True
        if kind in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
            self._say("complete", None)
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
            self._say("failed", message.get("message", ""))
        else:
            raise RuntimeError("unexpected ASGI lifespan message %r" % (kind,))

    def _say(self, kind, message):
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((kind, message))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


async def finish_tasks(timeout: float, keep=()) -> None:
    """After the last connection: the app's tasks that outlive their responses (background
    tasks) get until `timeout` to end; then they are cancelled. (`keep`: the lifespan's task.)"""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and t not in keep and not t.done()]
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=max(timeout, 0.0))
    for task in pending:
        task.cancel()
    if pending:
        log.warning("cancelled %d task(s) still running at the end of the graceful stop", len(pending))
        await asyncio.wait(pending, timeout=1.0)


def run_shutdown(loop, lifespan: Lifespan, tasks_timeout: float, shutdown_timeout: float) -> None:
    """The end of an ASGI worker, on its event loop: background tasks, then lifespan shutdown."""
    try:
        loop.run_until_complete(finish_tasks(tasks_timeout, (lifespan.task,)))
        loop.run_until_complete(lifespan.shutdown(shutdown_timeout))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:       # pragma: no cover - best effort at the end
            pass
        loop.close()
        sys.stderr.flush()
