"""HTTP/2 on one client connection, the same for both request loops.

Owns: the HTTP/2 session of a connection that negotiated it (ALPN `h2` over TLS, or the client
preface on a plain port: h2c with prior knowledge), as `H2Session`, which the connection's
`HttpConnection` holds in its `h2` field and hands its input, its pumps and its ticks to; and
each request stream as a `Stream`, which is to its one Exchange what a connection is to an
HTTP/1.1 request: the request builder (the environ and scope, from the stream's header list), the
app's call (AppDispatch: --threads, the hand-back, waits inside a call) and the channel its
response goes through. A stream's output (`out`) is filled by whichever thread produces it and
moved into the engine by the loop only (`_push`), as much as the peer's windows let the engine
frame soon, so that `out_size` is the app's back-pressure exactly as on HTTP/1.1.

The framing, HPACK and flow control are the engine's (`h2engine.py`: libnghttp2 compiled, or the
`h2` package), driven by the API in that module's docstring. The engine's callbacks only record:
app calls start after the engine returns, from the server's queue of deferred work (`_defer`), so
that an app thread that loses the loop never leaves the engine in the middle of a call.

Does not own: the socket, TLS and the events waited for (`_transport.py` and each loop's
`Connection`), HTTP/1.1 (`_http.py`), the environ's rules (`_request.py`), the app's call
(`_dispatch.py`) or the response's encoding (`_exchange.py`, which hands a stream's head to
`_frame_head` instead of writing HTTP/1.1's).
"""

import os
from sys import intern as _intern

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build reads CLOCK_MONOTONIC itself (_clock.pxd)
    from time import monotonic

from . import board as _board
from . import wsgi as _wsgi
from .h2codes import CANCEL, ENHANCE_YOUR_CALM, NO_ERROR, engine_class

if not cython.compiled:   # the compiled build keeps the list's item array (_inline.pxd)
    def _del_first(items):
        del items[0]

if not cython.compiled:   # the compiled build cimports these (_h2_c.pxd)
    from ._dispatch import AWAIT_BODY, CHECK_THREADS, AppDispatch
    from ._exchange import CLOSED, HIGH_WATER, LAST_IN, OPEN, PEER_CLOSED, UNREAD, EarlyBody
    from ._transport import W_BODY, W_IDLE, W_NONE
    from ._request import V2

B_REQUESTS, B_IN_FLIGHT, B_STATUS = _board.REQUESTS, _board.IN_FLIGHT, _board.STATUS
LazyInput = _wsgi.LazyInput
log = _wsgi.log
refusal_cell = _board.refusal_cell
SERVER_LINE = b"server: fastcluster\r\n"
HAS_DATE, HAS_SERVER = _wsgi.HAS_DATE, _wsgi.HAS_SERVER
PUSH_LIMIT = 65536          # a stream's bytes inside the engine, framed as the windows allow
SEND_LIMIT = 262144         # the engine's frames taken per turn while the socket takes them
RESET_BUDGET = 200          # streams a client may reset (or have refused) within RESET_SPAN...
RESET_SPAN = 10.0           # ...seconds before the connection ends with ENHANCE_YOUR_CALM
DRAIN_BUSY = 5.0            # a stopping worker's GOAWAY waits this long at most for a connection to go quiet
DRAIN_PING_WAIT = 5.0       # a stopping worker's final GOAWAY: at the PING's ACK, or this long after the notice
REFUSALS = {405: "405 Method Not Allowed"}   # (those wsgi.ERROR_STATUS does not have)
PAIRS_MEMO = (None, None, None, ())   # _header_pairs' last (lines, date, ours, pairs)
METHOD_NAMES = {}           # a :method's bytes -> its name, interned (`is M_HEAD`); at most 64 (_method_name)
BodyQueue = None            # _asgi.BodyQueue (or its compiled build's), with the first ASGI stream


def _load_asgi():
    global BodyQueue
    if cython.compiled:
        from . import _asgi_c as asgi
    else:
        from . import _asgi as asgi
    BodyQueue = asgi.BodyQueue
    return 0


def _method_name(method):
    name = METHOD_NAMES.get(method)
    if name is None:
        name = _intern(method.decode("latin-1"))
        if len(METHOD_NAMES) < 64:
            METHOD_NAMES[method] = name
    return name


def _header_pairs(lines, date, ours):
    """HTTP/1.1 header lines (as encode_headers gives them: pieces that join to `Name: value\\r\\n`
    lines) as the (lowercase name, value) pairs HTTP/2 sends. The same lines as the last call's (the
    very list encode_headers remembers for an app that answers alike), the same date line: a copy of
    the last answer."""
    global PAIRS_MEMO
    memo = PAIRS_MEMO
    if lines is memo[0] and date is memo[1] and ours is memo[2]:
        return list(memo[3])
    pairs = []
    text = b"".join(lines)
    if date is not None:
        text += date
    if ours is not None:
        text += ours
    for line in text.split(b"\r\n"):
        if line:
            colon = line.index(b":")
            pairs.append((line[:colon].lower(), line[colon + 1:].strip()))
    PAIRS_MEMO = (lines, date, ours, tuple(pairs))
    return pairs


@cython.cclass
class Stream(AppDispatch):
    """One HTTP/2 request stream: its environ, its app call and its response (fields: _h2_c.pxd)."""

    if not cython.compiled:
        framed = True
        head_out = nxt = trailers_out = None
        body_in = acked = backlog = 0
        stalled = 0.0
        ended = counted = False

    def _open(self, session, sid):
        conn = session.conn
        server = conn.server
        self.session = session
        self.sid = sid
        self.server = server
        self.app = server.app
        self.fd = -1
        self.framed = True
        self.state = OPEN
        self.out = []
        self.out_size = 0
        self.wait = W_NONE
        # the connection's part of every request (RequestBuilder._client, made once per connection)
        self.base_environ = conn.base_environ
        self.asgi = conn.asgi
        self.scope_base = conn.scope_base
        self.trusted = conn.trusted
        # the request line the connection's last streams repeated, kept as HTTP/1.1 keeps one
        # (RequestBuilder._request_line): a client that asks for the same thing again (a poller, a
        # load generator) saves the target's parsing and five insertions a stream
        self.line_env = conn.line_env
        self.line_url = conn.line_url
        self.line_method = conn.line_method
        self.line_protocol = conn.line_protocol
        self.start_response = self._start_response
        self.write = self._write
        return 0

    # --- the request ---

    def _head(self, headers, end_stream):
        """The stream's header list: its Exchange, dispatched once the engine returns. Returns a
        status to refuse it with, or 0."""
        server = self.server
        ex = self._begin_head(False)
        method = None
        path = None
        authority = None
        for name, value in headers:
            if name and name[0] == 58:       # b":" (the engines give no empty name)
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            self.on_header(name, value)
        if method is None or (path is None and method != b"CONNECT"):
            return 400
        if method == b"CONNECT":
            return 405          # (no tunnels, no RFC 8441 WebSockets over HTTP/2)
        if authority is not None and self.host is None:
            self.on_header(b"host", authority)
        self.on_url(path)
        self._build_head(ex, _method_name(method), V2)
        conn = self.session.conn     # (the request line it kept, for the connection's next streams)
        conn.line_env = self.line_env
        conn.line_url = self.line_url
        conn.line_method = self.line_method
        conn.line_protocol = self.line_protocol
        ex.keep_alive = True
        ex.keep = True
        self.in_head = False
        env = ex.environ
        clen = env.get("CONTENT_LENGTH")
        if clen is not None:
            if not clen.isdigit():
                return 400
            if server.settings.max_body and int(clen) > server.settings.max_body:
                return 413
        if end_stream:
            ex.complete = True
            self.cur = None
            self.state = LAST_IN
        elif self.asgi:
            if BodyQueue is None:
                _load_asgi()
            ex.body = BodyQueue()
            ex.early = EarlyBody(True)       # (HTTP/2 has no 100 Continue to send: the body comes)
            self.cur = ex
            self._arm(W_BODY, server.settings.body_timeout)
        else:
            ex.body = LazyInput(self._fill_body)
            env["wsgi.input"] = ex.body
            ex.early = EarlyBody(True)
            self.cur = ex
            self._arm(W_BODY, server.settings.body_timeout)
        self.nxt = ex
        server.cells[B_IN_FLIGHT] += 1
        self.counted = True
        return 0

    def _body(self, data):
        """A DATA frame's payload for this stream's request body."""
        server = self.server
        ex = self.cur
        if ex is None or ex.body is None or self.state == CLOSED:
            self.session.engine.consumed(self.sid, len(data))      # (dropped: the window reopens)
            return 0
        self.body_in += len(data)
        if server.settings.max_body and self.body_in > server.settings.max_body:
            self._refuse_body(413)
            self.session.engine.consumed(self.sid, len(data))
            return 0
        self._arm(W_BODY, server.settings.body_timeout)
        ex.body.add(data)
        self._notify()
        return 0

    def _body_end(self):
        ex = self.cur
        self.cur = None
        self.wait = W_NONE
        if self.state == OPEN:
            self.state = LAST_IN
        if ex is not None:
            ex.complete = True
            if ex.body is not None:
                ex.body.finish()
            self._notify()
        return 0

    def _refuse_body(self, status):
        """The request's body is refused (too large, too slow): an app reading it fails, and
        `status` answers it (Exchange.abort), unless its own response is under way."""
        ex = self.cur
        if ex is None:
            return 0
        self.cur = None
        self.wait = W_NONE
        if self.state < UNREAD:
            self.state = UNREAD
        if ex.asgi is not None and ex.asgi.cycle is not None:
            ex.asgi.cycle.refused()
        elif ex.early is not None:
            ex.early.refusal = status
        self.server.cells[refusal_cell(status)] += 1
        self._notify()
        return 0

    def _fill_body(self):
        """LazyInput's fill: wait for more of the body (the window reopens by what was taken)."""
        if self.state != OPEN:
            return False
        if self.server.pool is None:
            self._open_window()
            self.session.send()
        return self.server._await(self, AWAIT_BODY)

    def _open_window(self):
        """The app took body bytes: the peer may send as many more (loop thread only)."""
        ex = self.resp if self.resp is not None else self.nxt
        if ex is None or ex.body is None:
            return 0
        starved = type(ex.body) is LazyInput and ex.body.wanted
        if starved:
            taken = self.body_in - self.acked       # a read waits for more than is here: all of it
        else:
            taken = self.body_in - ex.body.size - self.acked
            starved = ex.body.size == 0 and not ex.complete   # (ASGI: receive() waits, or will)
        if taken > 0:
            self.acked += taken
            self.session.engine.consumed(self.sid, taken, starved)
        return 0

    def _body_taken(self):
        self._open_window()
        self._produced()
        return 0

    def _pause_reading(self):
        return 0            # (the stream's window bounds what comes)

    def _resume_reading(self):
        return 0

    def _stop_reading(self, state):
        if state > self.state:
            self.state = state
            ex = self.resp
            if self.asgi and ex is not None and ex.asgi is not None and ex.asgi.cycle is not None:
                ex.asgi.cycle.input_ended()
        return 0

    # --- the response ---

    def _frame_head(self, ex, known_length, tail):
        """Exchange._send_head for a stream: the head as HTTP/2 sends it (no framing headers: the
        stream's end ends the body). Any thread: the loop hands it to the engine (_push)."""
        server = self.server
        code = ex.code
        bodiless = code < 200 or code == 204 or code == 304
        lines = ex.headers
        ex.headers = None
        ex.no_body = ex.head or bodiless
        pairs = _header_pairs(lines, None if ex.hflags & HAS_DATE else server.date_line,
                              None if ex.hflags & HAS_SERVER else SERVER_LINE)
        if ex.clen < 0 and not bodiless and known_length >= 0:
            ex.clen = known_length           # (the app gave none: the server's, as on HTTP/1.1)
            pairs.append((b"content-length", b"%d" % known_length))
        if tail is not None:
            if ex.no_body or ex.clen < len(tail):
                tail = None
            else:
                ex.sent += len(tail)
        self.head_out = (code, pairs, ex.no_body or ex.clen == 0)    # (True: the HEADERS end the stream)
        if tail is not None and tail:
            self._queue(tail)
        ex.headers_sent = True
        return tail is not None

    def _queue(self, data):
        if self.state != CLOSED:
            self.out.append(data)
            self.out_size += len(data)
        return 0

    def _flush(self):
        """From an app call on the loop's thread (no app threads): push what the windows allow."""
        self._push()
        self.session.send()
        return self.out_size < HIGH_WATER

    def _push(self):
        """Move the stream's head and output into the engine, up to PUSH_LIMIT inside it (loop
        thread only)."""
        session = self.session
        engine = session.engine
        if self.head_out is not None:
            code, pairs, empty = self.head_out
            self.head_out = None
            engine.respond(self.sid, code, pairs, empty)
            if empty:
                self.ended = True
        out = self.out
        while out and engine.queued(self.sid) < PUSH_LIMIT:
            data = out[0]
            _del_first(out)                  # (Cython's pop(0) is a Python method call)
            self.out_size -= len(data)
            if not self.ended:
                # (the last piece of a response the loop holds complete ends the stream with it;
                # else _complete sends the end, or the trailers)
                end = (not out and self.resp is not None and self.resp.done and not self.resp.in_app
                       and self.trailers_out is None)
                engine.send_data(self.sid, data, end)
                self.ended = end
        return 0

    def _pump(self):
        """Produce and push this stream's response as far as it can go now."""
        if CHECK_THREADS:
            self.server._check_thread("Stream._pump")
        self.pumping += 1
        self._pump_stream()
        self.pumping -= 1
        self.session.send()
        return 0

    def _pump_stream(self):
        server = self.server
        self._open_window()
        while self.state != CLOSED:
            ex = self.resp
            if ex is not None and ex.in_app:
                self._push()
                if ex.asgi is not None and ex.asgi.cycle is not None and self.out_size < HIGH_WATER:
                    ex.asgi.cycle.drained()
                break
            if ex is not None and ex.done:
                self._push()
                if self.out or self.head_out is not None:
                    break                    # (the windows are shut: more once they open)
                self._complete(ex)
            elif self.out_size >= HIGH_WATER:
                self._push()
                if self.out_size >= HIGH_WATER:
                    break
            elif ex is not None and ex.file is not None:
                self._push()
                if self.out:
                    break
                self._file_piece(ex)
            elif ex is not None and ex.iter is not None:
                self._produce(ex, False)     # (--threads 1: the next piece of a streamed body)
                self._push()
            elif self.nxt is not None:
                ex = self.nxt
                if not ex.health and (server.nested or (server.pool is not None and (
                        not server.pool._can_call() or (server.waiting and server.turn is not self)))):
                    server._defer(self)      # an app call may not start now, or others wait: later, in turn
                    break
                self.nxt = None
                self._respond(ex)
            else:
                break
        self._notify()
        return 0

    def _file_piece(self, ex):
        """A file the exchange sends (wsgi.file_wrapper, ASGI pathsend): the next piece, read
        and queued (the engine frames it; no sendfile under HTTP/2's framing)."""
        file = ex.file
        if file.left > 0:
            try:
                chunk = os.pread(file.fd, min(file.left, PUSH_LIMIT), file.offset)
            except OSError:
                chunk = b""
            if chunk:
                file.offset += len(chunk)
                file.left -= len(chunk)
                ex.sent += len(chunk)
                self._queue(chunk)
                self._push()
                return 0
        ex.file = None
        ex.finish()
        return 0

    def _respond(self, ex):
        server = self.server
        server.requests += 1
        server.cells[B_REQUESTS] += 1
        self.session.conn.served += 1
        self.resp = ex
        self._produce(ex, True)
        return 0

    def _complete(self, ex):
        """The response to `ex` is produced and handed to the engine: its end of stream, and the
        accounting (as HttpConnection._complete)."""
        server = self.server
        code = ex.code
        if not self.ended and self.state != CLOSED:      # (closed: the client reset it, or left)
            self.ended = True
            if self.trailers_out is None:
                self.session.engine.send_data(self.sid, b"", True)
            else:
                self.session.engine.send_trailers(self.sid, self.trailers_out)
                self.trailers_out = None
        if ex.headers_sent and 100 <= code < 600:
            server.cells[B_STATUS + code // 100 - 1] += 1
        if self.counted:
            self.counted = False
            server.cells[B_IN_FLIGHT] -= 1
        if server.access is not None:
            server._log_access(ex.environ, code, ex.sent, monotonic() - ex.start)
        self.resp = None
        if not ex.complete:
            self.cur = None                  # (the rest of the body is dropped as it comes)
        self._give_back()
        return 0

    def send_trailers(self, lines):
        """An ASGI app's trailers (_asgi.Cycle._send_trailers: encoded header lines), sent as the
        HEADERS block that ends the stream once its body is in the engine (_complete)."""
        if not self.ended and self.state != CLOSED:
            self.trailers_out = _header_pairs(lines, None, None)
        return 0

    def _give_back(self):
        """The body bytes received and not handed back yet (the app left them unread): back to the
        peer's windows, or the connection's window would shrink by them for good."""
        if self.body_in > self.acked:
            self.session.engine.consumed(self.sid, self.body_in - self.acked)
            self.acked = self.body_in
        return 0

    # --- the end ---

    def _timed_out(self, now):
        """The session's tick: the body deadline of this stream, and --write-timeout for a response
        that made no progress (a client that keeps the stream's window shut: HTTP/2's slowloris)."""
        if self.wait == W_BODY and now >= self.deadline:
            self._refuse_body(408)
            if self.resp is None and self.nxt is None:
                self.session.engine.reset(self.sid, CANCEL)
        backlog = self.out_size + self.session.engine.queued(self.sid)
        if not backlog or backlog != self.backlog:
            self.backlog = backlog
            self.stalled = now
        elif now - self.stalled >= self.server.settings.write_timeout:
            self.session.engine.reset(self.sid, CANCEL)
            self.close()                     # (an app waiting to write is told the client is gone)
        return 0

    def _release(self):
        ex = self.resp
        if ex is not None and not ex.in_app:
            ex.close_result()
            ex.discard_body()
            ex.file = None
        ex = self.nxt
        if ex is not None:
            self.nxt = None
            ex.discard_body()
        if self.cur is not None:
            self.cur.discard_body()
            self.cur = None
        if self.counted:
            self.counted = False
            self.server.cells[B_IN_FLIGHT] -= 1
        self._give_back()
        self.out.clear()
        self.out_size = 0
        self.head_out = None
        if self.resp is None or not self.resp.in_app:
            self.start_response = None
            self.write = None
        return 0

    def _forget(self):
        return 0            # (AppDispatch.close's end for a connection: a stream has no descriptor)


@cython.cclass
class H2Session:
    """The HTTP/2 session of one connection: its engine, its streams, its GOAWAY (fields: _h2_c.pxd)."""

    def __init__(self, conn):
        settings = conn.server.settings
        opts = settings.http2
        self.conn = conn
        self.server = conn.server
        self.streams = {}
        self.resets = 0
        self.reset_began = conn.server.now
        self.notice_at = 0.0
        self.stop_seen = 0.0
        self.final = False
        self.engine = engine_class(cython.compiled)(     # (the pure-Python loop: the h2 package, always)
            self, max_concurrent_streams=opts["max_concurrent_streams"],
            initial_window_size=opts["initial_window_size"], max_frame_size=opts["max_frame_size"],
            max_header_list_size=settings.max_header_bytes + 32 * settings.max_headers)

    def feed(self, data):
        """Input from the client (decrypted): to the engine, whose callbacks record what it means."""
        if self.conn.state == CLOSED:
            return 0
        self.engine.receive(bytes(data))
        return 0

    # --- the engine's callbacks ---

    def h2_request(self, sid, headers, end_stream):
        stream = Stream()
        stream._open(self, sid)
        self.streams[sid] = stream
        try:
            status = stream._head(headers, end_stream)
        except _wsgi.Reject as exc:
            status = exc.status
        if status:
            stream._release()
            stream.state = CLOSED
            self.h2_refused(sid, status)
            return
        self.server._defer(stream)

    def h2_refused(self, sid, status):
        """A request refused before any app saw it: `status` with a short body, and the stream ends."""
        server = self.server
        body = (_wsgi.ERROR_STATUS.get(status) or REFUSALS[status])[4:].encode() + b"\n"
        self.engine.respond(sid, status, [(b"content-type", b"text/plain; charset=utf-8"),
                                          (b"content-length", b"%d" % len(body))], False)
        self.engine.send_data(sid, body, True)
        server.cells[B_STATUS + 3] += 1
        server.cells[refusal_cell(status)] += 1
        if server.access is not None:
            server._log_access(self.conn._client_environ(), status, 0, 0.0)
        self._count_reset()

    def h2_ping_ack(self):
        """The ACK of the PING sent after a GOAWAY notice: the final GOAWAY, with the last stream the
        client opened before it saw the notice (so no stream it sent is refused)."""
        if self.notice_at and not self.final:
            self.final = True
            self.engine.goaway(-1, NO_ERROR)

    def h2_data(self, sid, data):
        stream = self.streams.get(sid)
        if stream is None:
            self.engine.consumed(sid, len(data))
            return
        stream._body(bytes(data))

    def h2_end(self, sid):
        stream = self.streams.get(sid)
        if stream is not None:
            stream._body_end()

    def h2_reset(self, sid, code):
        stream = self.streams.get(sid)
        if stream is not None and stream.state != CLOSED:
            stream.close()                   # the app's http.disconnect; an app call runs on to --timeout
        self._count_reset()

    def h2_closed(self, sid):
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.state != CLOSED:
            stream.close()

    def _count_reset(self):
        """Rapid reset (CVE-2023-44487): a client that makes the server start and drop streams
        faster than RESET_BUDGET in RESET_SPAN seconds loses the connection."""
        now = self.server.now
        if now - self.reset_began > RESET_SPAN:
            self.reset_began = now
            self.resets = 0
        self.resets += 1
        if self.resets > RESET_BUDGET and not self.final:
            log.info("closed an HTTP/2 connection from %s: %d streams reset in %.0f s",
                     self.conn._client_environ().get("REMOTE_ADDR") or "a unix socket", self.resets, RESET_SPAN)
            self.final = True
            self.engine.goaway(-1, ENHANCE_YOUR_CALM)
        return 0

    # --- output ---

    def pump(self):
        """The connection's pump: each stream's output as the windows allow, then the frames."""
        for stream in list(self.streams.values()):
            if stream.state != CLOSED and (stream.out or stream.head_out is not None or (
                    stream.resp is not None and (stream.resp.done or stream.resp.file is not None))):
                stream._pump()
        self.send()
        return 0

    def send(self):
        """The engine's frames to the socket; the connection's end once the session is over."""
        conn = self.conn
        if conn.state == CLOSED:
            return 0
        engine = self.engine
        taken = 0
        while conn.out_size < HIGH_WATER and taken < SEND_LIMIT:
            data = engine.pending()
            if not data:
                break
            taken += len(data)
            conn._queue(data)
        if conn.out_size and not conn._flush():
            return 0
        if conn.state == CLOSED:
            return 0
        if engine.closing or (self.final and not self.streams):
            if not engine.want_write:
                conn._end()
            return 0
        if self.streams:
            conn.wait = W_NONE
        elif self.server.stopping and not self.notice_at:
            self._drain(self.server.now)     # (quiet now: see _drain)
            self.send()
            return 0
        elif conn.wait == W_NONE:
            conn._arm(W_IDLE, self.server.settings.keep_alive)
        conn._want_read()
        return 0

    # --- time, and the end ---

    def tick(self, now):
        """Once a second: the streams' deadlines; an idle connection's end; a stopping worker's
        GOAWAY notice (_drain) once the connection is quiet or DRAIN_BUSY on, and the final GOAWAY
        DRAIN_PING_WAIT after it if the client never answered its PING (h2_ping_ack)."""
        conn = self.conn
        for stream in list(self.streams.values()):
            stream._timed_out(now)
        if self.server.stopping or self.server.stop_requested:
            if not self.stop_seen:
                self.stop_seen = now
            if not self.notice_at:
                if not self.streams or now - self.stop_seen >= DRAIN_BUSY:
                    self._drain(now)
            elif not self.final and now - self.notice_at > DRAIN_PING_WAIT:
                self.final = True            # (a client that does not answer PINGs)
                self.engine.goaway(-1, NO_ERROR)
        elif conn.wait == W_IDLE and now >= conn.deadline and not self.final:
            self.final = True                # idle past --keep-alive: a clean GOAWAY, then the close
            self.engine.goaway(-1, NO_ERROR)
        self.send()
        return 0

    def _drain(self, now):
        """A stopping worker's GOAWAY notice (last stream 2^31-1: nothing the client sent is refused),
        and a PING behind it: its ACK says the client has seen the notice, so every stream it opened
        is here (h2_ping_ack sends the final GOAWAY then, with the last of them). Sent once the
        connection has no stream in flight, or DRAIN_BUSY after the stop: a client that reads a
        GOAWAY together with responses drops the requests it queued on reading them (nghttp2 does:
        they never leave it), so a busy connection is given the time to go quiet first."""
        self.notice_at = now
        self.engine.goaway_notice()
        self.engine.ping()
        return 0

    def call_age(self, now):
        age = 0.0
        for stream in self.streams.values():
            age = max(age, stream._call_age(now))
        return age

    def eof(self):
        """The client closed its side: nothing more comes for any stream."""
        for stream in list(self.streams.values()):
            if stream.state != CLOSED:
                stream._stop_reading(PEER_CLOSED)
                stream._notify()
        self.final = True
        return 0

    def close(self):
        """The connection is closing: every stream with it (an app call still running is left to
        --timeout, as on HTTP/1.1)."""
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            if stream.state != CLOSED:
                stream.close()
        self.engine.close()
        return 0
