"""WebSockets for ASGI apps: RFC 6455 under the ASGI websocket spec, the same for both request loops.

Written once, run two ways, as `_asgi.py` is: plain Python for the pure-Python loop, compiled by
Cython as `fastcluster._websocket_c` for the compiled one (its C types in `_websocket_c.pxd`).

The connection parses the opening handshake as it parses any request. When httptools reports the
upgrade, `upgrade()` checks the handshake and turns the exchange into a `WebSocket`: from then on
the connection's input goes to it (`feed`), and it is the exchange's `cycle`, as `_asgi.Cycle` is
for an HTTP request, so the connection's drain, close and tick reach it the same way. The app runs
as a task (`_asgi.start_task`) with the session's receive and send.

The framing is the sans-I/O protocol layer of the `websockets` package (`Protocol`): it parses,
unmasks, bounds the frame and message sizes (--ws-max-size, then close code 1009) and answers
pings and the closing handshake. Here: the handshake, the ASGI messages, whole messages out of
fragments, the keep-alive ping (--ws-ping-interval, --ws-ping-timeout), a close on drain, and
back-pressure both ways (reading pauses while the app is 1 MiB behind; send() waits while the
client is).
"""

import binascii
import logging
import os

try:   # CPython's own SHA-1: hashlib would load libcrypto (3 MiB of every worker's RSS) for one handshake hash
    from _sha1 import sha1
except ImportError:   # pragma: no cover - an interpreter without the builtin module
    from hashlib import sha1

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build cimports these (_websocket_c.pxd)
    from ._asgi import CALL_FAILED, READY_NONE, ready, resolve, start_task
    from ._exchange import HIGH_WATER, SERVER_HEADER, encode_asgi_headers

from . import wsgi as _wsgi
from .errors import ClientDisconnected

log = logging.getLogger("fastcluster")
# websockets' protocol layer, imported with the first handshake (_codec): a worker that never sees one
# does not load it
Protocol = SERVER = PROTOCOL_OPEN = TEXT = BINARY = CONT = PONG = None
# websockets' protocol logs each closed connection at info level: not ours to print
QUIET = logging.getLogger("fastcluster.websocket.protocol")
QUIET.setLevel(logging.WARNING)
has_token = _wsgi.has_token

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONNECT = {"type": "websocket.connect"}
EXTENSIONS = {"websocket.http.response": {}}
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
GOING_AWAY = 1001
ABNORMAL = 1006           # never sent: what the app is told when the connection is lost without a close
INTERNAL_ERROR = 1011

if not cython.compiled:   # a session's stages (C enum constants in the compiled build)
    HANDSHAKE = 0     # the request is in; the app has not answered it
    ACCEPTED = 1      # frames both ways
    DENYING = 2       # the app answers the handshake with an HTTP response (websocket.http.response.*)
    ENDED = 3         # closed, refused or lost; the exchange is back with the connection


def is_upgrade(env):
    """The request asks for a WebSocket (an Upgrade: websocket header)."""
    upgrade = env.get("HTTP_UPGRADE")
    return upgrade is not None and has_token(upgrade, "websocket")


def handshake_problem(ex):
    """None when `ex` is a valid opening handshake (RFC 6455 4.2.1), else the status to refuse it
    with: 426 for a version other than 13 (with the version we speak), 400 for the rest."""
    env = ex.environ
    if env.get("REQUEST_METHOD") != "GET" or ex.http10 or ex.body is not None:
        return 400
    if not has_token(env.get("HTTP_CONNECTION", ""), "upgrade"):
        return 400
    if env.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip() != "13":
        return 426
    key = env.get("HTTP_SEC_WEBSOCKET_KEY", "")
    # 16 bytes in base64: 22 characters of its alphabet and "==" (checked by hand: the base64 module
    # would be two more imports in every worker)
    if len(key) != 24 or not key.endswith("==") or not _BASE64.issuperset(key[:22]):
        return 400
    return 0


_BASE64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _codec():
    global Protocol, SERVER, PROTOCOL_OPEN, TEXT, BINARY, CONT, PONG
    if Protocol is None:
        import websockets.frames as frames
        import websockets.protocol as protocol

        TEXT, BINARY, CONT, PONG = frames.TEXT, frames.BINARY, frames.CONT, frames.PONG
        SERVER, PROTOCOL_OPEN = protocol.SERVER, protocol.OPEN
        Protocol = protocol.Protocol
    return 0


def upgrade(conn, ex, tail):
    """Make `ex` (a valid handshake) a WebSocket session; `tail` is what the read brought after
    the handshake (the client's first frames). Returns the session, the exchange's cycle."""
    _codec()
    ws = WebSocket.__new__(WebSocket)
    ws.conn = conn
    ws.ex = ex
    ws.server = conn.server
    ws.loop = conn.server.driver.loop
    ws.proto = None
    ws.inbox = []
    ws.frags = None
    ws.early = [tail] if tail else []
    ws.inbox_size = len(tail)
    ws.close_code = ABNORMAL
    ws.close_reason = ""
    scope = ex.asgi.scope
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    del scope["method"]
    protocols = ex.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL")
    scope["subprotocols"] = [p.strip() for p in protocols.split(",") if p.strip()] if protocols else []
    scope["extensions"] = EXTENSIONS
    ex.asgi.cycle = ws
    return ws


@cython.cclass
class WebSocket:
    """One WebSocket session (fields: _websocket_c.pxd)."""

    if not cython.compiled:
        stage = 0
        connected = frag_text = False
        task = waiter = drain = None
        last_in = ping_sent = 0.0

    def start(self, app):
        """Call the app on the session (from the connection, in the request's turn)."""
        ex = self.ex
        if self.stage == ENDED:
            return 0         # the client left while the requests before the handshake were answered
        ex.in_app = True
        self.last_in = self.server.now
        try:
            task = start_task(self.loop, app(ex.asgi.scope, self.receive, self.send))
        except Exception:
            log.exception(CALL_FAILED)
            self._refuse(500)
            return 0
        if task.done():
            self.task_done(task)
        else:
            self.task = task
            task.add_done_callback(self.task_done)
        return 0

    # --- from the client ---

    def feed(self, data):
        """Bytes the connection read after the handshake."""
        if self.stage == ACCEPTED:
            self.last_in = self.server.now
            self.proto.receive_data(data)
            self._events()
            self._send_out(False)
        elif self.stage == HANDSHAKE:
            self.early.append(bytes(data))      # frames sent before the app answered
            self.inbox_size += len(data)
            if self.inbox_size >= HIGH_WATER:
                self.conn._pause_reading()
        return 0

    def eof(self):
        """The client closed its side."""
        if self.stage == ACCEPTED:
            self.proto.receive_eof()
            self._events()
            self._send_out(False)
            self._end()
        elif self.stage == HANDSHAKE:
            self.stage = ENDED
            self._over()
        return 0

    def _events(self):
        proto = self.proto
        for frame in proto.events_received():
            op = frame.opcode
            if op is TEXT or op is BINARY:
                if frame.fin:
                    self._deliver(op is TEXT, frame.data)
                else:
                    self.frag_text = op is TEXT
                    self.frags = [frame.data]
            elif op is CONT:
                self.frags.append(frame.data)
                if frame.fin:
                    data = b"".join(self.frags)
                    self.frags = None
                    self._deliver(self.frag_text, data)
            elif op is PONG:
                self.ping_sent = 0.0
        if proto.state is not PROTOCOL_OPEN:
            self._end()       # the client's close (answered), or a protocol error (failed)
        return 0

    def _deliver(self, text, data):
        if text:
            try:
                message = {"type": "websocket.receive", "text": data.decode("utf-8")}
            except UnicodeDecodeError:
                self.proto.fail(1007, "invalid UTF-8 in a text message")
                return 0
        else:
            message = {"type": "websocket.receive", "bytes": data}
        self.inbox.append(message)
        self.inbox_size += len(data)
        if self.inbox_size >= HIGH_WATER:
            self.conn._pause_reading()       # the app is 1 MiB behind: let the client wait
        self._wake()
        return 0

    # --- receive ---

    def receive(self):
        """ASGI's receive(): websocket.connect, then the client's messages, then one
        websocket.disconnect (with its code) once the session is over."""
        if not self.connected:
            self.connected = True
            return ready(CONNECT)
        if self.inbox:
            return ready(self._take())
        if self.stage == ENDED:
            return ready(self._disconnect_message())
        return self._later()

    def _take(self):
        message = self.inbox.pop(0)
        self.inbox_size -= len(message["text"] if "text" in message else message["bytes"])
        if not self.inbox:
            self.inbox_size = 0
            self.conn._body_taken()          # reading goes on, if it was paused for the app
        return message

    async def _later(self):
        while not self.inbox and self.stage != ENDED:
            self.waiter = self.loop.create_future()
            await self.waiter
        if self.inbox:
            return self._take()
        return self._disconnect_message()

    def _disconnect_message(self):
        return {"type": "websocket.disconnect", "code": self.close_code, "reason": self.close_reason}

    # --- send ---

    def send(self, message):
        """ASGI's send(): websocket.accept, .send, .close, or an HTTP answer to the handshake
        (websocket.http.response.start and .body)."""
        kind = message["type"]
        stage = self.stage
        if stage == ACCEPTED:
            if kind == "websocket.send":
                text = message.get("text")
                if text is not None:
                    self.proto.send_text(text.encode("utf-8"))
                else:
                    data = message.get("bytes")
                    if data is None:
                        raise TypeError("websocket.send needs 'text' or 'bytes'")
                    self.proto.send_binary(data)
                self._send_out(True)
                if self.conn.out_size >= HIGH_WATER:
                    self.drain = self.loop.create_future()
                    return self.drain
                return READY_NONE
            if kind == "websocket.close":
                code = message.get("code") or 1000
                reason = message.get("reason") or ""
                self.proto.send_close(code, reason)
                self._send_out(True)
                self.close_code = code
                self.close_reason = reason
                self._end()
                return READY_NONE
            raise RuntimeError("expected ASGI message 'websocket.send' or 'websocket.close', got %r" % (kind,))
        if stage == HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message.get("subprotocol"), message.get("headers") or ())
            elif kind == "websocket.close":
                self._refuse(403)            # a close before the accept: the handshake is refused
            elif kind == "websocket.http.response.start":
                self.ex.set_asgi_status(message["status"], message.get("headers", ()))
                self.ex.keep = False
                self.stage = DENYING
            else:
                raise RuntimeError("expected ASGI message 'websocket.accept', 'websocket.close' or "
                                   "'websocket.http.response.start', got %r" % (kind,))
            return READY_NONE
        if stage == DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError("expected ASGI message 'websocket.http.response.body', got %r" % (kind,))
            ex = self.ex
            data = message.get("body", b"")
            more = message.get("more_body", False)
            if not ex.headers_sent:
                ex.send_headers(-1 if more else len(data))
            ex.send_body(bytes(data))
            if more:
                self.conn._produced()
            else:
                ex.finish()
                self.stage = ENDED
                self._over()
            return READY_NONE
        if kind == "websocket.send":
            raise ClientDisconnected("the WebSocket is closed (code %d)" % self.close_code)
        return READY_NONE                    # a close (or a late accept) after the end: nothing to do

    def _accept(self, subprotocol, headers):
        ex = self.ex
        server = self.server
        key = ex.environ["HTTP_SEC_WEBSOCKET_KEY"].strip().encode("ascii")
        accept = binascii.b2a_base64(sha1(key + GUID).digest(), newline=False)
        parts = [SWITCHING, b"Sec-WebSocket-Accept: ", accept, b"\r\n"]
        if subprotocol is not None:
            if type(subprotocol) is not str or not subprotocol.isprintable() or "," in subprotocol:
                raise ValueError("invalid subprotocol %r" % (subprotocol,))
            parts.append(b"Sec-WebSocket-Protocol: %s\r\n" % subprotocol.encode("ascii"))
        lines, _clen, _flags = encode_asgi_headers(headers)
        parts.extend(lines)
        parts.append(server.date_line)
        parts.append(SERVER_HEADER)
        parts.append(b"\r\n")
        self.conn._queue(b"".join(parts))
        ex.code = 101
        ex.headers_sent = True
        ex.keep = False
        max_size = server.settings.ws_max_size
        self.proto = Protocol(SERVER, max_size=max_size if max_size > 0 else None, logger=QUIET)
        self.stage = ACCEPTED
        early = self.early
        self.early = None
        if early:
            self.inbox_size = 0
            self.conn._body_taken()
            self.proto.receive_data(b"".join(early))
            self._events()
        self._send_out(True)
        return 0

    def _refuse(self, status):
        """An HTTP answer to the handshake: 403 for a close before the accept, 500 for a failure."""
        ex = self.ex
        ex.set_asgi_status(status, ())
        ex.keep = False
        ex.send_headers(0)
        ex.finish()
        self.stage = ENDED
        self._over()
        return 0

    def _send_out(self, post):
        """Queue what the protocol has to send; `post`: from the app, so the loop must be told."""
        conn = self.conn
        for data in self.proto.data_to_send():
            if data:                         # (b"": the protocol's end of stream; _end() does that)
                conn._queue(data)
                self.ex.sent += len(data)
        if post:
            conn._produced()
        return 0

    def drained(self):
        """From the connection: its output went below HIGH_WATER, or it closed."""
        drain = self.drain
        if drain is not None and (self.conn.out_size < HIGH_WATER or self.stage == ENDED):
            self.drain = None
            resolve(drain)
        return 0

    # --- the end ---

    def _end(self):
        """The closing handshake is done or under way (or the connection failed): the app is told
        websocket.disconnect, and the connection ends once the close frame is out."""
        if self.stage == ENDED:
            return 0
        proto = self.proto
        if self.close_code == ABNORMAL:
            close = proto.close_rcvd if proto.close_rcvd is not None else proto.close_sent
            if close is not None:
                self.close_code = close.code
                self.close_reason = close.reason
        self.stage = ENDED
        self._over()
        return 0

    def _over(self):
        ex = self.ex
        ex.keep = False
        ex.done = True
        ex.in_app = False
        self._wake()
        self.drained()
        self.conn._produced()
        return 0

    def _wake(self):
        waiter = self.waiter
        self.waiter = None
        resolve(waiter)
        return 0

    def disconnect(self):
        """From the connection: it closed (the client is gone, or stopped reading)."""
        if self.stage != ENDED:
            self.stage = ENDED
            self._over()
        return 0

    def tick(self, now):
        """Once a second: the keep-alive ping and its timeout, and a close when the worker stops."""
        if self.stage != ACCEPTED:
            return 0
        server = self.server
        if server.stopping:
            self.proto.send_close(GOING_AWAY, "the server is shutting down")
        elif self.ping_sent:
            if server.settings.ws_ping_timeout and now - self.ping_sent >= server.settings.ws_ping_timeout:
                self.proto.fail(INTERNAL_ERROR, "keepalive ping timeout")
        elif server.settings.ws_ping_interval and now - self.last_in >= server.settings.ws_ping_interval:
            self.proto.send_ping(os.urandom(4))
            self.ping_sent = now
        else:
            return 0
        self._send_out(True)
        if self.proto.state is not PROTOCOL_OPEN:
            self._end()
        return 0

    def task_done(self, task):
        """The app's call ended: before an answer to the handshake, a 500; while accepted, a
        close (1000 when it returned, 1011 when it raised); an exception is logged."""
        self.task = None
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, ClientDisconnected):
            log.error("Exception in ASGI app (websocket %s)", self.ex.environ.get("RAW_URI", "?"),
                      exc_info=(type(exc), exc, exc.__traceback__))
        stage = self.stage
        if stage == HANDSHAKE:
            if exc is None:
                log.error("the ASGI app returned without answering the WebSocket handshake")
            self._refuse(500)
        elif stage == ACCEPTED:
            self.proto.send_close(1000 if exc is None else INTERNAL_ERROR)
            self._send_out(True)
            self._end()
        elif stage == DENYING:
            log.error("the ASGI app returned without completing its WebSocket denial response")
            self.stage = ENDED
            if not self.ex.headers_sent:
                self.ex.abort()
            self._over()
        return 0
