"""HTTP/1.1 on one client connection, the same for both request loops.

Owns: the protocol: llhttp's callbacks (`on_*`; httptools' parser here, the compiled loop's own
drive of llhttp in `_llhttp.pxi`), pipelining (`pending`: requests read ahead, answered strictly
in order by `_pump()`, with reading held back by `_holds_input`'s one rule), framing of request
bodies (Content-Length, chunked, 100-continue, --max-body), keep-alive and how the connection
ends (one `state`, which only moves forward: OPEN -> ... -> CLOSED), its deadlines (`tick`), the
in-flight accounting and access log line of each response (`_complete`), and the hand-off to a
WebSocket session after an upgrade (`ws`, which takes the input from then on).

Does not own: the environ or scope (`_request.py`: RequestBuilder), the app's call (`_dispatch.py`:
AppDispatch), bytes and the events waited for (`_transport.py`: Transport), or the response's
encoding (`_exchange.py`). Each loop's `Connection` subclasses HttpConnection with its system
calls (`_connection.pxi` compiled, `_parser_py.py` pure).

Written once, run two ways: as plain Python by the pure-Python loop, and compiled by Cython as
`fastcluster._http_c` for the compiled loop, with its C types in `_http_c.pxd`. A second protocol
(HTTP/2) is a sibling of this class over the same AppDispatch, or, like the WebSocket, a session
that takes the connection's input after it began as HTTP/1.1; either way it gets the request
builder and the dispatch by inheritance, at no cost per call (`_transport.py` says why).
"""

import sys as _sys

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build reads CLOCK_MONOTONIC itself (_clock.pxd)
    from time import monotonic

from . import board as _board
from . import wsgi as _wsgi

if not cython.compiled:   # the compiled build keeps the list's item array (_inline.pxd)
    def _del_first(items):
        del items[0]

if not cython.compiled:   # the compiled build cimports these (_http_c.pxd)
    from ._dispatch import AWAIT_BODY, CHECK_THREADS, AppDispatch
    from ._exchange import CLOSED, HIGH_WATER, LAST_IN, LINGERING, OPEN, PEER_CLOSED, UNREAD, EarlyBody
    from ._request import HTTP10, HTTP11, SEEN_BODY, _known_plain_host
    from ._transport import W_BODY, W_HEADERS, W_IDLE, W_NONE

# The ASGI and WebSocket modules (fastcluster._asgi and ._websocket, or their compiled builds):
# loaded with an ASGI worker's first connection, never by a WSGI worker (two extension modules,
# binascii and zlib: about 0.7 MiB of RSS it has no use for).
BodyQueue = handshake_problem = is_upgrade = ws_upgrade = None
H2Session = None     # _h2.py's (or its compiled build's), with the worker's first HTTP/2 connection
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"    # an h2c client's first bytes (RFC 9113 3.4)


def load_asgi():
    global BodyQueue, handshake_problem, is_upgrade, ws_upgrade
    if cython.compiled:
        from . import _asgi_c as asgi, _dispatch_c as dispatch, _websocket_c as websocket
    else:
        from . import _asgi as asgi, _dispatch as dispatch, _websocket as websocket
    BodyQueue = asgi.BodyQueue
    handshake_problem, is_upgrade, ws_upgrade = websocket.handshake_problem, websocket.is_upgrade, websocket.upgrade
    dispatch.load_asgi()
    return 0


HEAD_SLACK = 4096           # request line, CRLFs and colons around the counted header bytes
MAX_PIPELINED = 32          # requests read ahead of the one being answered, before reading stops (_holds_input)

# the board's cells (board.py), offsets in a worker's slot
B_REQUESTS, B_IN_FLIGHT, B_STATUS = _board.REQUESTS, _board.IN_FLIGHT, _board.STATUS

# Python objects used per request, bound once (C globals in the compiled build)
BodyBuffer = _wsgi.BodyBuffer
LazyInput = _wsgi.LazyInput
check_head = _wsgi.check_head
error_response = _wsgi.error_response
Reject = _wsgi.Reject
log = _wsgi.log
refusal_cell = _board.refusal_cell
CONTINUE_LINE = _wsgi.CONTINUE_LINE
METHODS = {}


@cython.cclass
class HttpConnection(AppDispatch):
    """One HTTP/1.1 client connection: parsing, answering in order, and how it ends (fields:
    _http_c.pxd; the layers it builds on: _transport.py's docstring)."""

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        served = inflight = head_bytes = body_bytes = 0
        head_done = False
        ws = h2 = h2_head = None

    def _setup(self, server, fd, env):
        self.server = server
        self.app = server.app
        self.fd = fd
        self._client(server, env)
        self._new_parser()
        self.url = b""
        self.pending = []
        self.state = OPEN
        self._arm(W_HEADERS, server.settings.header_timeout)
        self.start_response = self._start_response
        self.write = self._write
        self.proxy_buf = b"" if server.settings.proxy_protocol else None
        if self.asgi and BodyQueue is None:
            load_asgi()
        return 0

    # --- httptools callbacks (on_url and on_header build the head: RequestBuilder) ---

    def on_message_begin(self):
        self._begin_head(self.parser is None)   # (the compiled loop's own parser keeps memo entries)
        if not self.served and self.server.settings.http2_only:
            raise Reject(505)                   # --http 2 (an h2c preface is taken before this counts: _feed)
        if self.served or self.wait == W_NONE:
            # a kept-alive connection, or one behind a request being answered: the header
            # deadline runs from the request's first byte (the first one's from the accept)
            self._arm(W_HEADERS, self.server.settings.header_timeout)

    def on_headers_complete(self):
        ex = self.cur
        protocol = self._build_head(ex, self._method(), self._version())
        ex.keep_alive = self._keeps_alive() and self.server.settings.keep_alive > 0
        ex.http10 = protocol is not HTTP11
        self._head_complete(ex, ex.environ, protocol)

    def _head_complete(self, ex, env, protocol):
        """The rest of on_headers_complete: the checks of the head, and what the body needs."""
        server = self.server
        self.in_head = False
        self.head_done = True
        self.head_bytes = 0
        host = self.host
        if not ((protocol is HTTP11 and host is not None and _known_plain_host(host)
                 or protocol is HTTP10 and (host is None or _known_plain_host(host))) and not self.seen & SEEN_BODY):
            status = check_head(env, ex.http10, server.settings.max_body)   # the general case
            if status:
                raise Reject(status)
        if self.seen & SEEN_BODY:
            self.body_bytes = 0
            self._arm(W_BODY, server.settings.body_timeout)
            expect = env.get("HTTP_EXPECT")
            if self.asgi:
                # an ASGI app is called now and takes its body as it comes (Cycle.receive)
                ex.body = BodyQueue()
                ex.early = EarlyBody(expect is None or expect.lower() != "100-continue" or ex.http10)
                self.pending.append(ex)
                self._received(ex)
            elif expect is not None and expect.lower() == "100-continue" and not ex.http10:
                ex.body = LazyInput(self._fill_body)
                env["wsgi.input"] = ex.body
                ex.early = EarlyBody(False)
                self.pending.append(ex)
                self._received(ex)
            else:
                ex.body = BodyBuffer(server.settings.spill)
        else:
            self.wait = W_NONE           # (wsgi.input is the base environ's EMPTY_INPUT)

    def on_body(self, data):
        server = self.server
        self.body_bytes += len(data)
        if server.settings.max_body and self.body_bytes > server.settings.max_body:
            raise Reject(413)
        self._arm(W_BODY, server.settings.body_timeout)
        self.cur.body.add(data)
        if self.cur.early is not None and self._holds_input():
            self._pause_reading()            # an app 1 MiB behind the body it takes as it comes
        self._notify()

    def on_message_complete(self):
        ex = self.cur
        self.cur = None
        self.wait = W_NONE
        ex.complete = True
        if ex.early is not None:
            ex.body.finish()
            self._notify()
        else:
            if ex.body is not None:
                ex.environ["wsgi.input"] = ex.body.stream()
            self.pending.append(ex)
            self._received(ex)
        if not ex.keep_alive:
            self._stop_reading(LAST_IN)

    # --- reading ---

    def parse_only(self, data):
        """Run `data` through the parser and the request callbacks, answering nothing
        (the `parse` benchmark); returns how many requests it completed."""
        self._parse(data)
        count = len(self.pending)
        self.pending.clear()
        self.server.cells[B_IN_FLIGHT] -= self.inflight
        self.inflight = 0
        return count

    def on_readable(self):
        """Handle one readiness event now (what the loop does when epoll reports this fd)."""
        self.server.now = monotonic()
        self._on_event()

    def _feed(self, data, n):
        """Give `n` bytes just read to the parser (or, after a WebSocket handshake, to the
        session); a bad request is refused here. (`data` None: the compiled loop's parser reads
        them where recv() put them; `_input()` gives them as an object.)"""
        if self.ws is not None:
            self.ws.feed(data)
            return 0
        if self.h2 is not None:
            self.h2.feed(data if data is not None else self._input())
            return 0
        if self.h2_head is not None:
            data = self.h2_head + bytes(data if data is not None else self._input())   # (a preface in pieces)
            self.h2_head = None
            n = len(data)
            if self._h2c_preface(data, 0):
                return 0
        if self.tls is not None and not self.served and self.cur is None and self.server.settings.http2 is not None:
            if self._alpn_h2():
                self._start_h2(data if data is not None else self._input())
                return 0
        if self.proxy_buf is not None:
            data = self._proxy_header(data)
            if data is None:
                return 0
            n = len(data)
            if not n:
                return 0
        self.head_done = False
        try:
            self._parse(data)
        except HttpParserUpgrade as exc:
            # Upgrade/CONNECT: answered as a plain request, then the connection ends; for an
            # ASGI app, a WebSocket handshake becomes a session, which takes the rest of the input.
            if self.pending:
                last = self.pending[-1]
                if type(last) is not int:
                    if self.asgi and is_upgrade(last.environ):
                        problem = handshake_problem(last)
                        if not problem:
                            if data is None:
                                data = self._input()
                            self.ws = ws_upgrade(self, last, bytes(data[exc.args[0]:]))
                            self.duplex = True       # (it reads while it waits to write)
                            return 0
                        self._unreceive()
                        self.pending.append(problem)
                    else:
                        last.keep_alive = False
            # (bytes after the upgrade request are input left unread: the close lingers for them)
            self._stop_reading(UNREAD if n > exc.args[0] else LAST_IN)
            return 0
        except HttpParserError as exc:
            if not self.served and self.server.settings.http2 is not None and self._h2c_preface(
                    data, self.head_bytes if self.in_head else 0):
                return 0
            if self.state != OPEN:
                self._stop_reading(UNREAD)   # bytes after a request that ends the connection: ignored
                return 0
            cause = exc.__context__
            if cause is not None and not isinstance(cause, Reject):
                log.error("request callback failed", exc_info=cause)
            self._reject(cause.status if isinstance(cause, Reject) else 400)
            return 0
        if self.in_head:
            # A header section still open: count its bytes so that a header which never ends
            # cannot grow httptools' buffer without bound. (A feed that also finished another
            # head is not counted; the next one is.)
            self.head_bytes = 0 if self.head_done else self.head_bytes + n
            server = self.server
            if self.head_bytes > server.settings.max_header_bytes + server.settings.max_request_line + HEAD_SLACK:
                self._reject(431)
        return 0

    def _h2c_preface(self, data, before):
        """llhttp stopped at a request line `PRI * HTTP/2.0`: the h2c preface (HTTP/2 with prior
        knowledge, on a plain port) when the connection's first bytes are it (`before`: how many of
        them earlier reads gave, which llhttp took: the preface's first ones). True when the
        connection is HTTP/2 from now on, or waits for the rest of the preface."""
        if self.tls is not None or self.pending or before > len(PREFACE):
            return False
        if data is None:
            data = self._input()
        head = PREFACE[:before] + bytes(data[:len(PREFACE) - before])
        if len(head) < len(PREFACE):
            if not PREFACE.startswith(head):
                return False
            self.h2_head = head                  # (the rest of it in the next read)
            self._new_parser()
            self.cur = None
            self.in_head = False
            self.head_bytes = 0
            return True
        if head != PREFACE:
            return False
        self._start_h2(PREFACE + bytes(data[len(PREFACE) - before:]))
        return True

    def _alpn_h2(self):
        """TLS: the client chose h2 by ALPN (the handshake is done: this is its first plaintext)."""
        return self.tls.obj.selected_alpn_protocol() == "h2"

    def _start_h2(self, data):
        """The connection speaks HTTP/2 from here on: its session (_h2.py) takes the input."""
        global H2Session
        if H2Session is None:
            if cython.compiled:
                from ._h2_c import H2Session
            else:
                from ._h2 import H2Session
        self.cur = None                          # (llhttp's request line `PRI * HTTP/2.0`)
        self.in_head = False
        self.parser = None
        self.duplex = True                       # (it reads while it waits to write)
        self.wait = W_NONE
        self.h2 = H2Session(self)
        self.h2.feed(data)
        return 0

    def _fill_body(self):
        """LazyInput's fill (Expect: 100-continue): the interim 100 Continue the first time, then
        more of the body; False when no more can come."""
        ex = self.resp
        if not ex.early.sent_continue and not ex.headers_sent:
            ex.early.sent_continue = True
            self._queue(CONTINUE_LINE)
            if self.server.pool is None:
                self._flush()
        if self.state != OPEN:
            return False
        if self.read_paused and self.server.pool is None and not self._holds_input():
            self._resume_reading()           # (with app threads, the loop does: _pump_end)
        return self.server._await(self, AWAIT_BODY)

    def _stop_reading(self, state):
        """Move the connection on to `state` (never back)."""
        if state > self.state:
            self.state = state
            if self.h2 is not None:
                if state == PEER_CLOSED:
                    self.h2.eof()
            elif self.ws is not None:
                if state == PEER_CLOSED:
                    self.ws.eof()
            elif self.asgi and self.resp is not None and self.resp.asgi.cycle is not None:
                self.resp.asgi.cycle.input_ended()    # an ASGI app waiting on receive(): nothing more comes
        return 0

    def _reject(self, status):
        """Stop parsing; after the responses already queued, answer `status` and close."""
        self._stop_reading(UNREAD)
        self.in_head = False
        cur = self.cur
        if cur is not None:
            if cur.asgi is not None and cur.asgi.cycle is not None:
                cur.asgi.cycle.refused()     # an ASGI app reading this body: it is over for the app
            elif cur.early is not None and self.pending and self.pending[-1] is cur:
                self._unreceive()            # dispatched early but not called yet: the refusal replaces it
            elif cur.early is not None and cur is self.resp:
                # a WSGI app reading this body (100-continue): its next read fails; if the app
                # fails on that, `status` is its answer (Exchange.abort), else its own answer is
                cur.early.refusal = status
                self.cur = None
                self.server.cells[refusal_cell(status)] += 1
                self._notify()
                return 0
            cur.discard_body()
            self.cur = None
        self.pending.append(status)
        return 0

    def _refusable(self):
        """The request being read is an app's, called already (ASGI, or WSGI with 100-continue),
        and nothing of its response is out: a refusal of its body (408) can still be the answer."""
        ex = self.cur
        return ex is not None and ex is self.resp and (
            (ex.asgi is not None and ex.asgi.cycle is not None) or ex.early is not None) and not ex.headers_sent

    def _holds_input(self):
        """The one rule for what a connection reads: only what it can use, so that what it holds is
        bounded whatever the client sends. It stops reading
        - once the client closed its side (PEER_CLOSED): the end of file would be reported again
          and again while a response is in progress; a reset still wakes the loop (as an error),
        - while MAX_PIPELINED requests wait behind the one being answered,
        - while HIGH_WATER of a body that the app takes as it comes (ASGI, or WSGI with
          100-continue) waits for the app to take it, unless a read waits for more than that.
        Each resumes by itself: _pump_end asks again after every response and every hand-back,
        and the app's taking of its body (_body_taken, _fill_body) asks too. (A WebSocket, once
        upgraded, keeps its own rule: _websocket.py.)"""
        if self.ws is not None:
            return False                     # (the session pauses, and _body_taken resumes)
        if self.state == PEER_CLOSED or len(self.pending) >= MAX_PIPELINED:
            return True
        cur = self.cur
        if cur is None or cur.early is None or cur.body is None or cur.body.size < HIGH_WATER:
            return False
        # (a WSGI read that waits for more than is buffered, as read() of the whole body does, is
        # given what it asked for, and no more: the app asked, and --max-body bounds it)
        if type(cur.body) is not LazyInput:
            return True
        wanted = cur.body.wanted
        return not (wanted < 0 or wanted > cur.body.size)

    def _body_taken(self):
        """An ASGI app took what was read of its body: read more, if reading was paused for it
        (and nothing else holds it: _holds_input)."""
        if self.read_paused and not self._holds_input():
            self._resume_reading()
        return 0

    def _writes_again(self):
        """More output may follow what is queued now: the connection stays open, or a response is
        in progress or pending. Each loop's _flush sets TCP_NODELAY on a TCP connection before the
        first write for which this holds: Nagle's algorithm holds a small segment back while earlier
        data is unacknowledged, a stall for a second response, a streamed one or a WebSocket's frames,
        and nothing for the one write before a close (the FIN pushes it out). So a connection per
        request (ab, HTTP/1.0 through a proxy) saves the setsockopt, as nginx, which sets it on
        keep-alive connections only. (TLS connections set it at the accept.)"""
        return self.state == OPEN or self.resp is not None or len(self.pending) > 0

    def _received(self, ex):
        self.inflight += 1
        self.server.cells[B_IN_FLIGHT] += 1
        return 0

    def _unreceive(self):
        """The last request read is refused after all (a bad WebSocket handshake): out of the
        pipeline and the in-flight count; the caller queues its refusal in its place."""
        self.pending.pop()
        self.inflight -= 1
        self.server.cells[B_IN_FLIGHT] -= 1
        return 0

    def _complete(self, ex):
        """The response to `ex` is produced (or failed): the loop's accounting (responses by class,
        in flight, the access log), and the end of the connection if the response asked for it."""
        server = self.server
        code = ex.code
        if ex.headers_sent and 100 <= code < 600:
            server.cells[B_STATUS + code // 100 - 1] += 1
        if self.inflight:
            self.inflight -= 1
            server.cells[B_IN_FLIGHT] -= 1
        if server.access is not None:
            server._log_access(ex.environ, code, ex.sent, monotonic() - ex.start)
        if ex.env_fields is not None:
            self._keep_environ(ex)           # (the request builder's memo: _request.py)
        self.resp = None
        if not ex.keep and not (self.state == LAST_IN and not self.pending):
            # (the client's own last request, with nothing after it: LAST_IN stays, and _end
            # closes at once instead of lingering, as nginx does when no input is pending)
            self._close_after()
        return 0

    def _close_after(self):
        """Answer nothing after the current response: drop what is queued behind it; the
        connection ends once its output is out."""
        self._drop_pending()
        self._stop_reading(UNREAD)
        return 0

    def _drop_pending(self):
        server = self.server
        pending = self.pending
        while pending:
            first = pending[0]
            _del_first(pending)
            if type(first) is not int:
                first.discard_body()
                if self.inflight:
                    self.inflight -= 1
                    server.cells[B_IN_FLIGHT] -= 1
        return 0

    def tick(self, now):
        """Once a second, from the server: act on a deadline that passed; when the worker is
        stopping, end the connection cleanly once it stays idle. All of its timeouts are here
        (a WebSocket's keep-alive ping too)."""
        if CHECK_THREADS:
            self.server._check_thread("HttpConnection.tick")
        if self.ws is not None:
            self.ws.tick(now)
        if self.h2 is not None and self.state != LINGERING:
            if self.write_deadline and now >= self.write_deadline:
                self.close()                 # the client stopped reading
            else:
                self.h2.tick(now)            # its streams' deadlines, idleness, a stopping worker's GOAWAY
            return 0
        if self.state == LINGERING:
            if now >= self.deadline:
                self.close()                 # the client did not close after our FIN
        elif self.write_deadline and now >= self.write_deadline:
            self.close()                     # the client stopped reading our response
        elif self.wait != W_NONE and now >= self.deadline:
            if (self.wait == W_HEADERS or self.wait == W_BODY) and not self.pending and (
                    self.resp is None or self._refusable()):
                self._reject(408)            # headers (or a body) too slow to arrive
                self._pump()
            else:
                self.close()     # an idle keep-alive connection, or a body an app call waits for
        elif self.server.stopping and self.idle():
            self._end()     # after DRAIN_LINGER: a clean (lingering) close of what stayed idle
        return 0

    # --- answering ---

    def _pump(self):
        """Produce and send responses until done, or until the socket is full."""
        if CHECK_THREADS:
            self.server._check_thread("HttpConnection._pump")
        self.pumping += 1
        if self.h2 is not None:
            self.h2.pump()
        else:
            self._pump_all()
        self.pumping -= 1
        return 0

    def _pump_all(self):
        server = self.server
        pending = self.pending
        while self.state != CLOSED:
            ex = self.resp
            if ex is not None and ex.in_app:
                if self.out_size and not self._flush():
                    return 0
                if ex.asgi is not None and ex.asgi.cycle is not None:
                    ex.asgi.cycle.drained()       # an ASGI app waiting for its client to catch up
                break                        # an app call produces this one: send what it queued
            if ex is not None and ex.done:
                self._complete(ex)
            elif self.out_size >= HIGH_WATER:
                if not self._flush():
                    return 0
            elif ex is not None and ex.file is not None:
                if self.out_size:
                    if not self._flush():
                        return 0
                elif not self._sendfile_step(ex):
                    return 0
            elif ex is not None and ex.iter is not None:
                self._produce(ex, False)     # (--threads 1: the next piece of a streamed body)
                if self.out_size and not self._flush():
                    return 0                 # each piece goes out as it comes (an event stream
                                             # is read live), and a client that left is found
            elif pending:
                first = pending[0]
                if type(first) is not int:
                    ex = first
                    if not (ex.complete or ex.early is not None):
                        break
                    if not ex.health and (server.nested or (server.pool is not None and (
                            not server.pool._can_call() or (server.waiting and server.turn is not self)))):
                        server._defer(self)  # an app call may not start now, or others wait: later, in turn
                        break
                _del_first(pending)          # (Cython's pop(0) is a Python method call)
                self._respond(first)
            else:
                break
        self._notify()
        if self.state == CLOSED:
            return 0
        if self.out_size and self.state == OPEN and self._send_later():
            return 0                         # (_pump_end comes after the loop's batch of events)
        return self._pump_end()

    def _pump_end(self):
        """The end of a pump: send what it queued (or wait for room to), then read on or end."""
        server = self.server
        if self.out_size and not self._flush():
            return 0
        if self.ws is None:
            self.read_paused = self._holds_input()
        if self.resp is not None or self.pending:
            # a response in progress (more of its body, or the next request, may come), or a
            # request that waits for an app call to start (HttpServer._defer): never ended here,
            # and no keep-alive deadline runs for it
            self._want_read()
            return 0
        if self.state != OPEN:
            self._end()
            return 0
        # (when the worker is stopping, a connection left open by a response that went out before
        # the stop is ended by the tick once it stays idle, DRAIN_LINGER after the stop began)
        self._want_read()
        if self.cur is None and self.wait != W_HEADERS:
            # between requests: the keep-alive timeout runs (not before the first request has
            # begun: input that was no request yet, a PROXY header or a TLS handshake, leaves
            # the header deadline from the accept as it was)
            self._arm(W_IDLE, server.settings.keep_alive)
        return 0

    def _respond(self, first):
        server = self.server
        if type(first) is int:     # a request we refused: its status
            self._queue(error_response(first, server.date_line))
            self._close_after()
            server.cells[B_STATUS + 3] += 1
            server.cells[refusal_cell(first)] += 1
            if server.access is not None:
                server._log_access(self.base_environ, first, 0, 0.0)
            return 0
        ex = first
        self.served += 1
        server.requests += 1
        server.cells[B_REQUESTS] += 1
        self.resp = ex
        ex.keep = ex.keep_alive and not server.stop_requested   # (set before `stopping`, which implies it)
        self._produce(ex, True)
        return 0

    def _call_age(self, now):
        if self.h2 is not None:
            return self.h2.call_age(now)     # (its streams' calls: the longest)
        return AppDispatch._call_age(self, now)

    def idle(self):
        return self.cur is None and not self.pending and not self.out_size and self.resp is None

    def _release(self):
        """Let go of everything the connection holds for requests and responses."""
        if self.h2 is not None:
            self.h2.close()                  # its streams (an app call still running is left to --timeout)
        ex = self.resp
        if ex is not None and not ex.in_app:   # (an app thread's exchange is ended by that thread)
            ex.close_result()
            ex.discard_body()
            ex.file = None
        self._drop_pending()
        cur = self.cur
        if cur is not None:
            cur.discard_body()
            self.cur = None
        self.server.cells[B_IN_FLIGHT] -= self.inflight
        self.inflight = 0
        self._drop_output()
        if ex is None or not ex.in_app:
            self.start_response = None  # break the cycles self -> bound method -> self
            self.write = None
        return 0

    # --- the parser: httptools' HttpRequestParser, calling the on_* methods above. (The compiled
    # loop's Connection drives llhttp itself where it can: _llhttp.pxi.) ---

    def _new_parser(self):
        self.parser = HttpRequestParser(self)
        return 0

    def _parse(self, data):
        """Parse `data`: the on_* callbacks run; HttpParserError or HttpParserUpgrade as httptools
        raises them."""
        self.parser.feed_data(data)
        return 0

    def _method(self):
        """The method of the request whose headers just ended, as the environ has it."""
        raw = self.parser.get_method()
        method = METHODS.get(raw)
        if method is None:
            method = _sys.intern(raw.decode("ascii"))
            METHODS[raw] = method
        return method

    def _version(self):
        return self.parser.get_http_version()

    def _keeps_alive(self):
        return self.parser.should_keep_alive()
