"""App dispatch: running the app's code for a request, the same for both request loops.

Owns: the call of a WSGI app (`start_response` and `write` bound once per connection) or the start
of an ASGI app's cycle, for one `Exchange` (`_produce`); --threads: the call with the loop let go,
the hand-back of a connection whose app thread lost the loop (`_post`, then `Demoted` unwinds that
thread out of the loop's code: the rule is `HttpServer._check_thread`'s, in `_server.py`), and the
waits of an app call inside the loop (`_wait_writable`, `_ready`, `_wait_in_thread`, `_notify`);
--health-path, answered here and never by the app; and `close()`, which tells an app that its
client is gone (ASGI's http.disconnect) and leaves a call still running to --timeout.

Does not own: which request is answered when (the protocol: HTTP/1.1's pipeline is `_http.py`'s
`_pump`, and its deferral of a call that may not start now), what the request is (`_request.py`),
or bytes (`_transport.py`).

For a protocol with many requests on one connection (HTTP/2, each stream an `Exchange`):
`_produce(ex, first)` and `_answer_health(ex)` take the exchange; `resp` is the one whose app code
runs now (HTTP/1.1 answers one at a time; a protocol with streams sets it around each call, as the
waits of an app call ask about `resp`). What the layer below a call needs from the protocol is
`_complete(ex)` and `_pump()`. AppDispatch is a base class of the connection
rather than an object it holds: see `_transport.py` for why.
"""

import threading

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

from . import wsgi as _wsgi
from .errors import Demoted

if not cython.compiled:   # the compiled build cimports these (_dispatch_c.pxd)
    from ._exchange import CLOSED, HIGH_WATER, OPEN, PEER_CLOSED
    from ._request import RequestBuilder

asgi_start = None    # fastcluster._asgi's start (or its compiled build's): load_asgi()


def load_asgi():
    global asgi_start
    if cython.compiled:
        from . import _asgi_c as asgi
    else:
        from . import _asgi as asgi
    asgi_start = asgi.start
    return 0


AWAIT_BODY, AWAIT_DRAINED = 1, 2   # what an app call waits for (HttpServer._await)
LazyInput = _wsgi.LazyInput
HEALTH_HEADERS = [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
HEALTH_OK = b"ok\n"
HEALTH_STOPPING = b"stopping\n"
CHECK_THREADS = _wsgi.CHECK_THREADS     # who may run which code: _server.py, above HttpServer._check_thread


@cython.cclass
class AppDispatch(RequestBuilder):
    """The app's calls for the requests of one connection (fields: _dispatch_c.pxd)."""

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        resp = cond = None
        waiting = passed_over = False
        pumping = 0

    def _start_response(self, status, headers, exc_info=None):
        ex = self.resp
        if ex is None:
            raise RuntimeError("start_response() called outside of a request")
        ex.set_status(status, headers, exc_info)
        return self.write

    def _write(self, data):
        """The legacy write() callable that start_response returns."""
        ex = self.resp
        if ex is None:
            raise RuntimeError("write() called outside of a request")
        ex.write(data)

    def _produce(self, ex, first):
        """Run the app's code for `ex`: its call (`first`), or with --threads 1 the next piece of
        its body. With app threads, the whole body is produced on this thread, with the loop let
        go (AppPool.enter); if another thread took the loop over meanwhile, this one hands the
        connection back (_post) and leaves the loop's code (Demoted) to become a spare thread."""
        server = self.server
        pool = server.pool
        if ex.health:
            self._answer_health(ex)
            return 0
        if self.asgi:
            if ex.asgi.cycle is not None:
                ex.asgi.cycle.start(self.app)     # a WebSocket session (upgrade())
            else:
                asgi_start(ex, self.app, server.driver.loop)
            return 0
        ex.in_app = True
        if pool is None:
            if first:
                ex.run(self.app)
            else:
                ex.next_chunk()
            ex.in_app = False
            return 0
        eager = pool._enter()
        ex.called = server.now      # (for --timeout: this read's time, not this call's, is near enough)
        if first:
            ex.run(self.app)
        if ex.iter is not None:
            ex.stream()
        if pool._leave(eager):
            ex.in_app = False
            pool._returned()
            if self.state == CLOSED and ex.done:
                self._complete(ex)           # the client left during the call: its access log line
            return 0
        ex.returned = True
        server._post(self)
        raise Demoted()

    def _answer_health(self, ex):
        """--health-path, answered here and never by the app: 200 while serving, 503 once the
        master stops or drains (--shutdown-delay), so a balancer sends no more."""
        if self.server.master_stopping():
            ex.set_status("503 Service Unavailable", HEALTH_HEADERS, None)
            body = HEALTH_STOPPING
        else:
            ex.set_status("200 OK", HEALTH_HEADERS, None)
            body = HEALTH_OK
        ex.send_headers(len(body))
        ex.send_body(body)
        ex.finish()
        return 0

    def _handed_back(self):
        """From the server: an app thread handed this connection back (or asked for a flush)."""
        if CHECK_THREADS:
            self.server._check_thread("AppDispatch._handed_back")
        ex = self.resp
        if ex is not None and ex.returned:
            ex.returned = False
            ex.in_app = False
            self.server.pool._returned()
            if self.state == CLOSED and ex.done:
                self._complete(ex)           # its access log line; nothing more can be sent
        elif ex is not None and ex.asgi is not None and ex.asgi.cycle is not None and self.state == CLOSED and ex.done:
            self._complete(ex)               # an ASGI exchange the client left: its access log line
        if self.state != CLOSED:
            self._pump()
        return 0

    def _call_age(self, now):
        """How long the app call of the request being answered has been running (0: none)."""
        ex = self.resp
        if ex is not None and ex.in_app and ex.called:
            return now - ex.called
        return 0.0

    def _pump_now(self):
        """_pump() for the server: a deferred request may start now."""
        self._pump()
        return 0

    def _client_left(self):
        """Its turn in the server's queue of deferred requests has come, others wait behind it, and
        its client closed its side meanwhile (the loop read its end of input, or it waits unread
        behind the request: a look with MSG_PEEK): True the first time (the server passes it over
        once, to the back of the queue), then False. A client that closed while its request
        waited has most likely given up on it (a load generator's end, a proxy's timeout), and the
        requests of clients that still wait should not queue behind the work for it; but one that
        half-closes wants its answer, so it is served still, after one round of the others."""
        if self.passed_over or (self.state != PEER_CLOSED and not self._eof_waits()):
            return False
        self.passed_over = True
        return True

    # --- app calls that wait ---

    def _wait_writable(self):
        """write() (or a streamed body) ran 1 MiB ahead of the client: wait until the loop has
        sent it below that; False when the client is gone or stopped reading (--write-timeout)."""
        if self.server.pool is None and self._flush():
            return True
        return self.server._await(self, AWAIT_DRAINED)

    def _produced(self):
        """Output was queued inside an app call: with app threads, the loop (whichever thread runs
        it) sends it; for an ASGI app, the event loop's next turn does, unless this connection's
        _pump() is on the stack (it sends it then)."""
        if self.server.pool is not None or (self.asgi and not self.pumping):
            self.server._post(self)
        return 0

    def _mark(self, what):
        """Where the connection stands now, for _ready()."""
        ex = self.resp
        if what == AWAIT_BODY and ex is not None and type(ex.body) is LazyInput:
            return ex.body.received
        return 0

    def _ready(self, what, mark):
        """1: what an app call waits for is here; 0: it cannot come any more; -1: not yet."""
        if self.state == CLOSED:
            return 0
        if what == AWAIT_DRAINED:
            return 1 if self.out_size < HIGH_WATER else -1
        ex = self.resp
        if ex is None or type(ex.body) is not LazyInput:
            return 0
        body = ex.body
        if body.received != mark or body.done:
            return 1
        if self.state != OPEN or ex.complete:
            return 0
        return -1

    def _wait_in_thread(self, what):
        """--threads > 1: wait on this connection's condition until the loop has what an app call
        waits for (the loop calls _notify when anything changes)."""
        if self.cond is None:
            self.cond = threading.Condition()
        mark = self._mark(what)
        self.server._post(self)      # the loop sends what is queued (a 100 Continue, body pieces)
        with self.cond:
            self.waiting = True
            try:
                while True:
                    ready = self._ready(what, mark)
                    if ready >= 0:
                        return ready == 1
                    self.cond.wait(1.0)
            finally:
                self.waiting = False

    def _notify(self):
        """Wake an app thread waiting on this connection, if one is."""
        if self.waiting:
            with self.cond:
                self.cond.notify_all()
        return 0

    # --- the end ---

    def close(self):
        if CHECK_THREADS:
            self.server._check_thread("AppDispatch.close")
        if self.state == CLOSED:
            return
        self.state = CLOSED
        ex = self.resp
        if ex is not None and ex.asgi is not None and ex.asgi.cycle is not None:
            ex.asgi.cycle.disconnect()       # an ASGI app: http.disconnect
        server = self.server
        if ex is not None and ex.in_app and server.pool is not None:
            server.orphans.append(self)      # its app call runs on: --timeout still watches it (_tick)
        self._release()
        self._forget()
        self._notify()

    def _forget(self):
        """The end of close() for a connection: out of the worker's table, its descriptor closed, the
        count on the board, accepting again if it had stopped at --max-connections. (An HTTP/2
        stream has none of these: _h2.py's Stream.)"""
        server = self.server
        server.conns.pop(self.fd, None)
        self._close_fd()
        server._publish_count()
        if not server.accepting:
            server.resume_accepting()
        return 0

    # --- what the protocol provides (_http.py) ---

    def _complete(self, ex):
        raise NotImplementedError

