"""ASGI 3.0 HTTP over the same connections, the same for both request loops: one request's cycle.

Written once, run two ways: as plain Python by the pure-Python loop, and compiled by Cython as
`fastcluster._asgi_c` for the compiled loop (its C types in `_asgi_c.pxd`). The connection
(HttpConnection, `_http.py`) parses a request as it does for WSGI; for an ASGI app it also builds
the scope, and `start()` calls the app with a `Cycle`'s receive and send. The Exchange frames what
send() gives it, as it frames a WSGI app's response.

- The app's coroutine runs as a real asyncio.Task: anyio, and with it Starlette and FastAPI, needs
  one (a cancel scope belongs to a task). While no other app task of the worker is running, its
  first step runs at once, inside the read that brought the request (`start_task`), so a handler
  that waits for nothing is answered in that read, its response in the same write as the others of
  that read, with no turn of the event loop between. While others run (they wait for a database,
  say), it is scheduled as theirs are, behind the steps already due: started at once, each new
  request went ahead of every request already in progress, and FastAPI's 20-query requests on
  asyncpg had a p99 of 1.5-2x their peers' (`start`).
- `receive()` returns an awaitable that is done already when the body is there (`Ready`), and
  `send()` frames at once and returns one too, unless the client is 1 MiB behind.
- A request body is a `BodyQueue`: the connection adds to it as it arrives, and stops reading the
  socket while the app is 1 MiB behind.
"""

import logging
import os
import stat as _stat
import sys

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build cimports these (_asgi_c.pxd)
    from time import monotonic

    from ._exchange import HIGH_WATER, PEER_CLOSED, encode_asgi_headers

from . import wsgi as _wsgi
from .errors import ClientDisconnected

log = logging.getLogger("fastcluster")
CONTINUE_LINE = _wsgi.CONTINUE_LINE
DISCONNECT = {"type": "http.disconnect"}
EMPTY_BODY = {"type": "http.request", "body": b"", "more_body": False}
# fields a trailer section may not carry (RFC 9110 6.5.1: framing, routing, the connection's own)
NOT_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host", b"connection", b"keep-alive", b"te",
                          b"trailer", b"upgrade", b"proxy-connection"))
EAGER_START = sys.version_info >= (3, 12)     # asyncio.Task(..., eager_start=True)
running = 0          # requests' app tasks running past their first step (start, Cycle.task_done)
Task = None          # asyncio.Task, imported with the first task: a WSGI worker never loads asyncio (~9 MiB)
CALL_FAILED = "the ASGI app failed when called (not an ASGI app? --interface says which it is)"
COPY_PIECE = 1 << 18        # a file piece the server copies (zerocopysend with more to come, or chunked)
TASK_NAME = "fastcluster-asgi"   # (a Task without a name formats one, which costs more than the rest of its making)


def resolve(future):
    """Let the receive() or send() that awaits `future` go on (None: nobody waits)."""
    if future is not None and not future.done():
        future.set_result(None)
    return 0


@cython.freelist(64)
@cython.cclass
class Ready:
    """An awaitable that is done already: `await` gives `value` without suspending the task."""

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self.value is None:
            raise StopIteration      # (compiled: no exception object, the cheapest way to say None)
        raise StopIteration(self.value)

    def send(self, value):
        if self.value is None:
            raise StopIteration
        raise StopIteration(self.value)

    def throw(self, typ, val=None, tb=None):
        if val is None:
            val = typ() if isinstance(typ, type) else typ
        raise val

    def close(self):
        return None


def ready(value):
    r = Ready.__new__(Ready)
    r.value = value
    return r


READY_NONE = ready(None)       # send()'s usual answer (it holds nothing, so one serves all)


@cython.cclass
class BodyQueue:
    """An ASGI request's body: the connection adds to it as it arrives, receive() takes it."""

    if not cython.compiled:
        size = 0
        done = closed = False
        waiter = None

    def __init__(self):
        self.parts = []
        self.size = 0
        self.done = False
        self.closed = False
        self.waiter = None

    def add(self, data):
        """More of the body (the parser's buffer, copied); returns how much is waiting."""
        if self.closed:
            return 0
        self.parts.append(bytes(data))
        self.size += len(data)
        self.wake()
        return self.size

    def finish(self):
        self.done = True
        self.wake()
        return 0

    def wake(self):
        waiter = self.waiter
        self.waiter = None
        resolve(waiter)
        return 0

    def take(self):
        parts = self.parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.parts = []
        self.size = 0
        return data

    def discard(self):
        """The exchange is over: what is left of the body is dropped as it comes."""
        self.closed = True
        self.parts = []
        self.size = 0
        self.wake()
        return 0


@cython.cclass
class Cycle:
    """One ASGI HTTP request and its response (fields: _asgi_c.pxd).

    `over` is when the exchange goes back to the connection: its response complete (`completed`),
    or the client gone (`disconnected`), or the app's call ended without completing it. The app's
    task may run on after that (Starlette's background tasks do); what it sends then goes nowhere.
    """

    if not cython.compiled:
        started = completed = disconnected = delivered = over = False
        task = waiter = drain = trailers = None

    # --- receive ---

    def receive(self):
        """ASGI's receive(): the body as it comes (http.request), then http.disconnect once the
        response is complete or the client is gone."""
        ex = self.ex
        if self.over:
            return ready(DISCONNECT)
        body = ex.body
        if body is None:
            if not self.delivered:
                self.delivered = True
                return ready(EMPTY_BODY)
            return self._disconnect_later()
        if body.size or (body.done and not self.delivered):
            return ready(self._message())
        if self.delivered:
            return self._disconnect_later()
        if not ex.early.sent_continue and not ex.headers_sent:
            ex.early.sent_continue = True      # the 100 Continue goes out when the app first waits for the body
            conn = ex.conn
            conn._queue(CONTINUE_LINE)
            conn._produced()
        return self._body_later()

    def _message(self):
        ex = self.ex
        body = ex.body
        data = body.take()
        more = not body.done
        if not more:
            self.delivered = True
        ex.conn._body_taken()
        return {"type": "http.request", "body": data, "more_body": more}

    async def _body_later(self):
        body = self.ex.body
        while not (body.size or body.done or self.over):
            if self.ex.conn.state >= PEER_CLOSED or body.closed:
                self.disconnect()        # the rest of the body cannot come any more
                break
            body.waiter = self.loop.create_future()
            await body.waiter
        if self.over:
            return DISCONNECT
        return self._message()

    async def _disconnect_later(self):
        # (a client that closed its side is gone for the app, as in uvicorn, though what the app
        # still sends goes out: the connection ends once its response is complete)
        while not self.disconnected and self.ex.conn.state < PEER_CLOSED:
            self.waiter = self.loop.create_future()
            await self.waiter
        return DISCONNECT

    # --- send ---

    def send(self, message):
        """ASGI's send(): http.response.start, then http.response.body pieces."""
        ex = self.ex
        kind = message["type"]
        if self.disconnected:
            # the client is gone: spec 2.4 (the scope's spec_version) asks for an OSError, which
            # Starlette turns into its ClientDisconnect and a streaming app stops on
            raise ClientDisconnected("the client is gone")
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError("expected ASGI message 'http.response.start', got %r" % (kind,))
            if self.over:
                return READY_NONE
            ex.set_asgi_status(message["status"], message.get("headers", ()))
            self.started = True
            if message.get("trailers"):
                self.trailers = []       # (the body's last piece does not end the response: _send_trailers does)
            return READY_NONE
        if self.completed:
            hint = " (trailers need 'trailers': True in its start)" if kind == "http.response.trailers" else ""
            raise RuntimeError("ASGI message %r sent after the response was complete%s" % (kind, hint))
        if kind != "http.response.body":
            if kind == "http.response.pathsend" or kind == "http.response.zerocopysend":
                return self._send_file(message, kind)
            if kind == "http.response.trailers":
                return self._send_trailers(message)
            raise RuntimeError("expected ASGI message 'http.response.body', got %r" % (kind,))
        if self.over:
            return READY_NONE
        data = message.get("body", b"")
        more = message.get("more_body", False)
        if type(data) is not bytes:
            data = bytes(data)
        if not ex.headers_sent:
            ex.send_headers(-1 if more or self.trailers is not None else len(data))
        ex.send_body(data)
        if not more and self.trailers is None:
            self._complete()
            return READY_NONE
        conn = ex.conn
        conn._produced()
        if conn.out_size >= HIGH_WATER:
            self.drain = self.loop.create_future()
            return self.drain
        return READY_NONE

    def _send_file(self, message, kind):
        """The file extensions (both in the scope's "extensions"): http.response.pathsend, the file
        at `path` as the rest of the response, and http.response.zerocopysend, `count` bytes (or
        to the end) of the app's open `file` from `offset` (or its position), more to come or not.
        A last piece framed by a length goes out by the connection itself (sendfile; under TLS,
        read and sealed), so the app is done at once; a piece with more after it, or under chunked
        framing, is copied here in pieces, with back-pressure. The file pathsend opens is the
        server's, closed when the response ends; zerocopysend's stays the app's (a last piece is
        sent from a duplicate of its descriptor, which the server closes)."""
        ex = self.ex
        owned = None
        if kind == "http.response.pathsend":
            owned = open(message["path"], "rb", buffering=0)       # (a missing file fails the app's send)
            fd, offset, count, more = owned.fileno(), 0, -1, False
        else:
            source = message["file"]
            fd = source if type(source) is int else source.fileno()
            offset = message.get("offset")
            if offset is None:
                offset = os.lseek(fd, 0, os.SEEK_CUR)
            count = message.get("count")
            count = -1 if count is None else count
            more = message.get("more_body", False)
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode):
                raise RuntimeError("ASGI %s: not a regular file" % (kind,))
        except BaseException:
            if owned is not None:
                owned.close()
            raise
        size = max(0, st.st_size - offset)
        if 0 <= count < size:
            size = count
        if self.over:
            if owned is not None:
                owned.close()
            return READY_NONE
        if not more and owned is None:
            # the app may close its file as soon as send() returns (the spec asks it to): the
            # connection sends from a descriptor of its own
            owned = os.fdopen(os.dup(fd), "rb", buffering=0)
            fd = owned.fileno()
        if not more:
            ex.result = owned            # (closed with the exchange's end: Exchange.close_result)
            if ex.start_file(fd, offset, size):
                # the connection sends the file, then finishes the exchange (start_file finished it
                # already when there is no body to send: a HEAD request, a 204 or a 304)
                self.completed = True
                self.over = True
                ex.in_app = False
                ex.conn._produced()
                return READY_NONE
            ex.result = None             # (copied here instead, and closed by _copy_file)
        return self._copy_file(fd, offset, size, more, owned)

    def _send_trailers(self, message):
        """The trailers extension ("http.response.trailers" in the scope's extensions): fields
        after the body, for an app that said "trailers": True in http.response.start; the message
        without more_trailers completes the response. They go out when the client asked for them
        (TE: trailers, as the spec has it) and the framing carries them (HTTP/2; HTTP/1.1 chunked:
        after the last chunk); else they are dropped, as a recipient may. Fields that frame or
        route a message (NOT_TRAILERS) are never sent as trailers."""
        if self.trailers is None:
            raise RuntimeError("ASGI message 'http.response.trailers' without 'trailers': True in "
                               "http.response.start")
        fields = [pair for pair in message.get("headers", ())
                  if type(pair[0]) is not bytes or pair[0].lower() not in NOT_TRAILERS]
        self.trailers.extend(encode_asgi_headers(fields)[0])     # (the same checks as response headers)
        if message.get("more_trailers", False) or self.over:
            return READY_NONE
        ex = self.ex
        lines = self.trailers
        self.trailers = None
        if not ex.headers_sent:
            ex.send_headers(-1)
        te = ex.environ.get("HTTP_TE")
        if lines and not ex.no_body and te is not None and _wsgi.has_token(te, "trailers"):
            conn = ex.conn
            if conn.framed:
                stream = conn
                stream.send_trailers(lines)      # (_h2.Stream: a HEADERS block ends the stream)
            elif ex.chunked:
                conn._queue(b"0\r\n" + b"".join(lines) + b"\r\n")
                ex.chunked = False               # (the last chunk is out: finish() adds none)
        self._complete()
        return READY_NONE

    async def _copy_file(self, fd, offset, size, more, owned):
        ex = self.ex
        try:
            if not ex.headers_sent:
                ex.send_headers(-1 if more else size)
            while size > 0 and not self.over:
                data = os.pread(fd, min(size, COPY_PIECE), offset)
                if not data:
                    break                # the file shrank: the body is short (Exchange.finish ends the connection)
                offset += len(data)
                size -= len(data)
                ex.send_body(data)
                conn = ex.conn
                conn._produced()
                if conn.out_size >= HIGH_WATER:
                    self.drain = self.loop.create_future()
                    await self.drain
                if self.disconnected:
                    raise ClientDisconnected("the client is gone")
        finally:
            if owned is not None:
                owned.close()
        if not more and not self.over:
            self._complete()
        return None

    def drained(self):
        """From the connection: its output went below HIGH_WATER, or it closed."""
        drain = self.drain
        if drain is not None and (self.ex.conn.out_size < HIGH_WATER or self.disconnected):
            self.drain = None
            resolve(drain)
        return 0

    # --- the end ---

    def _complete(self):
        """The response is complete: the connection accounts for it and goes on with its next
        request."""
        ex = self.ex
        self.completed = True
        self.over = True
        ex.finish()
        ex.in_app = False
        ex.conn._produced()
        return 0

    def _wake(self):
        waiter = self.waiter
        self.waiter = None
        resolve(waiter)
        body = self.ex.body
        if body is not None:
            body.wake()
        self.drained()
        return 0

    def input_ended(self):
        """From the connection: it stopped reading (the client closed its side, or nothing more of
        the request may come): a receive() in wait looks again."""
        self._wake()
        return 0

    def refused(self):
        """The connection refused the request mid-body (a bad chunk, a body too large or too
        slow): for the app, the client is gone; when nothing of its response is out, the refusal
        is the answer, and this exchange gives none."""
        ex = self.ex
        silent = not ex.headers_sent
        self.disconnect()
        if silent:
            ex.keep = True       # (its refusal, queued after it, ends the connection)
        return 0

    def disconnect(self):
        """The client is gone (or its request was refused mid-body): receive() says
        http.disconnect, what is sent goes nowhere, and the exchange is over for the connection."""
        if self.disconnected:
            return 0
        self.disconnected = True
        self._wake()
        if not self.over:
            self.over = True
            ex = self.ex
            ex.keep = False
            ex.in_app = False
            ex.done = True
            ex.conn._produced()
        return 0

    def task_done(self, task):
        """The app's call ended: a response it did not start is a 500, one it started and did not
        complete ends the connection; an exception is logged with its traceback."""
        global running
        ex = self.ex
        if self.task is not None:
            running -= 1
        self.task = None
        if task.cancelled():
            exc = None
            if not self.over:
                log.error("the ASGI app's task was cancelled before it completed its response")
        else:
            exc = task.exception()
        if exc is not None and self.disconnected:
            # (most often what send() raised once the client left, as Starlette re-raises it:
            # the client's doing, not the app's fault; no traceback)
            env = ex.environ
            log.info("the ASGI app ended with %s after its client left (%s %s)", type(exc).__name__,
                     env.get("REQUEST_METHOD", "?"), env.get("RAW_URI", "?"))
        elif exc is not None:
            env = ex.environ
            log.error("Exception in ASGI app (%s %s)", env.get("REQUEST_METHOD", "?"), env.get("RAW_URI", "?"),
                      exc_info=(type(exc), exc, exc.__traceback__))
        elif not self.over and not self.started:
            log.error("the ASGI app returned without starting a response")
        elif not self.over:
            log.error("the ASGI app returned without completing its response")
        if self.over:
            return 0
        self.over = True
        if not self.started or not ex.headers_sent:
            ex.abort()                       # a 500: nothing of the response is out
        else:
            ex.keep = False                  # part of it is out: the connection is cut
            ex.done = True
        ex.in_app = False
        self._wake()
        ex.conn._produced()
        return 0


class _Capture:
    """Stands in for loop.call_soon while a Task is made, and keeps the step it schedules."""

    __slots__ = ("step", "context")

    def __call__(self, callback, *args, context=None):
        self.step = callback
        self.context = context


_capture = _Capture()


def start_task(loop, coro, eager=True):
    """A real asyncio.Task for `coro` whose first step runs now, not at the loop's next turn
    (or, not `eager`, a plain one, its first step scheduled with the loop's other callbacks).
    Python 3.12 has eager_start for that; before it, the Task's constructor schedules its first
    step with loop.call_soon, which is taken (`_Capture`) for the length of the constructor and
    run at once. Only called where no task runs (the loop's own callbacks), as asyncio requires."""
    global Task
    if Task is None:
        import asyncio

        Task = asyncio.Task
    if not eager:
        return Task(coro, loop=loop, name=TASK_NAME)
    if EAGER_START:
        return Task(coro, loop=loop, name=TASK_NAME, eager_start=True)
    loop.call_soon = _capture
    try:
        task = Task(coro, loop=loop, name=TASK_NAME)
    finally:
        del loop.call_soon
    _capture.context.run(_capture.step)
    return task


def start(ex, app, loop):
    """Call the app on an ASGI request (`ex.asgi.scope`); the task may be done already. Its first
    step runs now only while no other request's task is running (`running`: the module's docstring
    says why)."""
    global running
    cycle = Cycle.__new__(Cycle)
    cycle.ex = ex
    cycle.loop = loop
    ex.asgi.cycle = cycle
    ex.in_app = True
    try:
        task = start_task(loop, app(ex.asgi.scope, cycle.receive, cycle.send), running == 0)
    except Exception:
        log.exception(CALL_FAILED)
        cycle.over = True
        ex.abort()
        ex.in_app = False
        return 0
    if task.done():
        cycle.task_done(task)
    else:
        running += 1
        cycle.task = task
        task.add_done_callback(cycle.task_done)
    return 0


@cython.cclass
class EventLoopDriver:
    """An ASGI app's worker: its asyncio (or uvloop) event loop drives the request loop (an
    HttpServer, _server.py; fields: _asgi_c.pxd). The event loop watches the loop's epoll
    descriptor; when it is ready, one _iterate() without waiting handles what it has. Posted
    connections, the ticks and accept pauses are the event loop's callbacks and timers. `state` is
    the lifespan's, copied into each scope."""

    def __init__(self, server, loop, state):
        self.server = server
        self.loop = loop
        self.state = state
        self.soon = False
        self.failure = None
        self.timer = None
        self.timer_at = 0.0

    def run(self):
        """serve() for an ASGI app: run the event loop until the stop is over.

        The event loop runs one task for as long as the worker serves (`_serving`, ended by `_end`),
        not run_forever: anyio takes the task that run_until_complete runs for the root of the
        loop's tasks and keeps its worker threads (to_thread.run_sync: Starlette's sync endpoints,
        FileResponse's stat) until that task ends. Without it each request's task was the root and
        every such call started a thread and ended it with the request."""
        loop = self.loop
        fd = self.server._poll_fd()
        loop.add_reader(fd, self._on_poll)
        self._arm_timer(self.server._wait_ms(1.0) / 1000.0)
        self.over = loop.create_future()
        try:
            loop.run_until_complete(self._serving())
        finally:
            loop.remove_reader(fd)
            if self.timer is not None:
                self.timer.cancel()
        if self.failure is not None:
            failure = self.failure
            self.failure = None
            raise failure

    async def _serving(self):
        import asyncio
        while not self.over.done():
            try:
                await asyncio.shield(self.over)
            except asyncio.CancelledError:     # an app cancelled every task: the worker serves on
                pass

    def _end(self):
        """The stop is over (or the loop's code failed): the serving task ends, and with it the
        event loop's run, after this turn."""
        if not self.over.done():
            self.over.set_result(None)
        return 0

    def post(self):
        """A connection was posted (HttpServer._post): the loop's next turn looks at it."""
        if not self.soon:
            self.soon = True
            self.loop.call_soon(self._turn)

    def wake(self):
        """From a signal handler: a turn now (uvloop does not pass signals to the loop's wake-up fd)."""
        try:
            self.loop.call_soon_threadsafe(self._turn)
        except RuntimeError:     # the event loop is closed
            pass

    def _on_poll(self):
        if self.server.finished:
            return               # (serve() is over: the worker's lifespan shutdown runs on this loop)
        try:
            self.server._iterate(0.0)
            self._after_turn()
        except BaseException:
            self._crashed()

    def _turn(self):
        """call_soon's callback: connections posted during the event loop's turn."""
        self.soon = False
        self._callback_turn()

    def _on_timer(self):
        self.timer = None
        self.timer_at = 0.0
        self._callback_turn()

    def _callback_turn(self):
        """What a posted turn or a timer runs: the rest of an iteration (posted connections, the
        stop, the tick), without waiting for events."""
        server = self.server
        if server.finished:
            return 0
        try:
            server._woke(monotonic())
            server._after_events()
            self._after_turn()
        except BaseException:
            self._crashed()
        return 0

    def _after_turn(self):
        """After each of the event loop's calls into the loop: stop it once the stop is over;
        a timer for the next tick, or for an accept pause that ends sooner."""
        server = self.server
        if server._done():
            server.finished = True
            self._end()
            return 0
        wake = server._wake_at()
        if self.timer is None or wake < self.timer_at - 0.0005:
            self._arm_timer(wake - server.now)
        return 0

    def _arm_timer(self, delay):
        if self.timer is not None:
            self.timer.cancel()
        if delay < 0.0005:
            delay = 0.0005
        self.timer_at = self.server.now + delay
        self.timer = self.loop.call_later(delay, self._on_timer)
        return 0

    def _crashed(self):
        """The loop's code failed inside an event loop callback (a bug): the event loop stops and
        serve() raises it, as the WSGI loop would (the worker exits 1 and is replaced)."""
        self.failure = sys.exc_info()[1]
        self.server.finished = True
        self._end()
        return 0
