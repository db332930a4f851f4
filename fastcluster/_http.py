"""One HTTP/1.1 client connection, the same for both request loops.

Written once, run two ways: as plain Python by the pure-Python loop (`_parser_py.py`), and compiled
by Cython as `fastcluster._http_c` for the compiled loop (`_parser.pyx`), with its C types in
`_http_c.pxd` (Cython's pure-Python mode). Each loop's `Connection` subclasses `HttpConnection`
with its I/O (`_on_event`, `_queue`, `_flush`, ...); nothing in this file touches a socket itself.

httptools calls the `on_*` methods, which build each request as an `Exchange` (`_exchange.py`);
`_pump()` answers the requests strictly in order; how the connection ends is one `state`, which
only moves forward (OPEN -> ... -> CLOSED), and what its deadline is for is one `wait`.
"""

import sys as _sys
import threading

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build reads CLOCK_MONOTONIC itself (_clock.pxd)
    from time import monotonic

from . import board as _board
from . import wsgi as _wsgi
from .errors import Demoted

if not cython.compiled:   # the compiled build reads a dict's version and a refcount itself (_inline.pxd)
    ENV_REUSE = False     # (so the plain-Python loop never keeps an environ: on_message_begin)

    def _dict_version(d):
        return 0

    def _refs(obj):
        return 0

    def _del_first(items):   # (the compiled build's keeps the list's item array: _inline.pxd)
        del items[0]

if not cython.compiled:   # the compiled build cimports these (_http_c.pxd)
    from ._exchange import (CLOSED, HIGH_WATER, LAST_IN, LINGERING, OPEN, PEER_CLOSED, UNREAD, AsgiRequest,
                           Channel, EarlyBody, new_exchange)
    # what the read-side deadline is for (HttpConnection.wait)
    W_NONE = 0        # a request is complete and being answered: no read deadline
    W_HEADERS = 1     # a request's headers, from the accept or the request's first byte
    W_BODY = 2        # the next piece of a request body
    W_IDLE = 3        # the next request on a kept-alive connection
    W_LINGER = 4      # the client's close after our FIN

# The ASGI and WebSocket modules (fastcluster._asgi and ._websocket, or their compiled builds):
# loaded with an ASGI worker's first connection, never by a WSGI worker (two extension modules,
# binascii and zlib: about 0.7 MiB of RSS it has no use for).
BodyQueue = asgi_start = handshake_problem = is_upgrade = ws_upgrade = None


def load_asgi():
    global BodyQueue, asgi_start, handshake_problem, is_upgrade, ws_upgrade
    if cython.compiled:
        from . import _asgi_c as asgi, _websocket_c as websocket
    else:
        from . import _asgi as asgi, _websocket as websocket
    BodyQueue, asgi_start = asgi.BodyQueue, asgi.start
    handshake_problem, is_upgrade, ws_upgrade = websocket.handshake_problem, websocket.is_upgrade, websocket.upgrade
    return 0


AWAIT_BODY, AWAIT_DRAINED = 1, 2   # what an app call waits for (HttpServer._await)
HEAD_SLACK = 4096           # request line, CRLFs and colons around the counted header bytes
LINGER = 2.0                # a connection we end keeps reading (and dropping) input this long after our FIN
MAX_PIPELINED = 32          # requests read ahead of the one being answered, before reading stops (_holds_input)

# the board's cells (board.py), offsets in a worker's slot
B_REQUESTS, B_IN_FLIGHT, B_STATUS = _board.REQUESTS, _board.IN_FLIGHT, _board.STATUS

# Python objects used per request, bound once (C globals in the compiled build)
BodyBuffer = _wsgi.BodyBuffer
LazyInput = _wsgi.LazyInput
HEADER_KEYS = _wsgi.HEADER_KEYS
header_key = _wsgi.header_key
split_target = _wsgi.split_target
split_asgi_target = _wsgi.split_asgi_target
forwarded_client = _wsgi.forwarded_client
parse_proxy_header = _wsgi.parse_proxy_header
check_head = _wsgi.check_head
error_response = _wsgi.error_response
Reject = _wsgi.Reject
log = _wsgi.log
refusal_cell = _board.refusal_cell
CONTINUE_LINE = _wsgi.CONTINUE_LINE
METHODS = {}
LOWER_NAMES = {}     # a request header name as sent -> lower-cased, for an ASGI scope
HEALTH_HEADERS = [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
FORBIDDEN_TRAILERS = frozenset((b"host", b"content-length", b"transfer-encoding"))
# the environ keys on_header notes in `seen` (header_key interns every key it makes)
K_CONTENT_LENGTH = _sys.intern("CONTENT_LENGTH")
K_TRANSFER_ENCODING = _sys.intern("HTTP_TRANSFER_ENCODING")
K_FORWARDED_FOR = _sys.intern("HTTP_X_FORWARDED_FOR")
K_FORWARDED_PROTO = _sys.intern("HTTP_X_FORWARDED_PROTO")
K_FORWARDED = _sys.intern("HTTP_FORWARDED")
K_HOST = _sys.intern("HTTP_HOST")
SEEN_BODY, SEEN_FORWARDED = 1, 2          # HttpConnection.seen: a body is announced; proxy headers came
HEALTH_OK = b"ok\n"
HEALTH_STOPPING = b"stopping\n"
V11, V10 = _sys.intern("1.1"), _sys.intern("1.0")   # (the compiled loop's _version() gives these)
PROTOCOLS = {V11: "HTTP/1.1", V10: "HTTP/1.0"}
HTTP11 = PROTOCOLS[V11]
HTTP10 = PROTOCOLS[V10]
LAST_PLAIN_HOST = None       # _known_plain_host's
M_HEAD = _sys.intern("HEAD")   # (every _method() gives its name interned: identity tells a HEAD)
LINE_KEYS = ("REQUEST_METHOD", "SERVER_PROTOCOL", "RAW_URI", "PATH_INFO", "QUERY_STRING")   # _request_line's
CHECK_THREADS = _wsgi.CHECK_THREADS     # who may run which code: _server.py, above HttpServer._check_thread


def plain_host(host):
    """True for a Host made only of letters, digits, '.', '-' and an optional :port, which needs
    no further check; anything else goes through wsgi.check_head's full rule."""
    if not cython.compiled:
        return _wsgi.PLAIN_HOST.fullmatch(host) is not None
    port = False
    for c in host:
        if port:
            if not (c >= "0" and c <= "9"):
                return False
        elif c == ":":
            port = True
        elif not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "." or c == "-"):
            return False
    return True


def _known_plain_host(host):
    """plain_host(host), the last plain one remembered: a client's repeated Host field is the same
    text object each time (the compiled loop's header memo), so identity tells it."""
    global LAST_PLAIN_HOST
    if host is LAST_PLAIN_HOST:
        return True
    if plain_host(host):
        LAST_PLAIN_HOST = host
        return True
    return False


def lower_name(name):
    lowered = LOWER_NAMES.get(name)
    if lowered is None:
        lowered = name.lower()
        if len(LOWER_NAMES) < 512:
            LOWER_NAMES[name] = lowered
    return lowered


def _query_at(uri):
    """Where the '?' of an origin-form target is (-1: none), or -2 when the target needs
    wsgi.split_target (not origin-form, or with '%' or '#')."""
    if not cython.compiled:
        if uri[:1] != "/" or "%" in uri or "#" in uri:
            return -2
        return uri.find("?")
    n = len(uri)
    if n == 0 or uri[0] != "/":
        return -2
    query = -1
    for i in range(n):
        c = uri[i]
        if c == "%" or c == "#":
            return -2
        if c == "?" and query < 0:
            query = i
    return query


@cython.cclass
class HttpConnection(Channel):
    """One client connection: parsing, answering in order, and how it ends (fields: _http_c.pxd).

    The loop's subclass provides the I/O: _on_event, _queue, _flush, _sendfile_step, _want_read,
    _shutdown_write, _close_fd, _drop_output.
    """

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        cur = resp = None
        url = b""
        wait = W_HEADERS
        deadline = write_deadline = 0.0
        served = inflight = head_bytes = nheaders = header_bytes = 0
        body_bytes = 0
        in_head = head_done = waiting = asgi = read_paused = False
        trusted = -1
        seen = 0
        cond = scope_base = hlist = ws = proxy_buf = None
        hkey = htext = host = None
        line_env = line_url = line_method = line_protocol = None
        fields = kept_env = kept_fields = None
        reusing = False
        kept_version = 0
        pumping = 0

    def _setup(self, server, fd, env):
        self.server = server
        self.app = server.app
        self.fd = fd
        self.base_environ = env
        self._new_parser()
        self.url = b""
        self.pending = []
        self.state = OPEN
        self._arm(W_HEADERS, server.settings.header_timeout)
        self.start_response = self._start_response
        self.write = self._write
        # a proxy's headers may set the client's address and scheme (--forwarded-allow-ips):
        # whether this peer may is found out when a request first carries such a header
        self.trusted = -1
        self.proxy_buf = b"" if server.settings.proxy_protocol else None
        self.asgi = server.driver is not None
        self.line_env = None          # (no request line kept yet: _request_line)
        if self.asgi:
            if asgi_start is None:
                load_asgi()
            # an ASGI request's environ holds only what the server itself reads (its checks, the
            # access log): the client's address, then the request line and the headers
            self.scope_base = server._scope_base(env)
            self.base_environ = {"REMOTE_ADDR": env["REMOTE_ADDR"]}
            if "REMOTE_PORT" in env:
                self.base_environ["REMOTE_PORT"] = env["REMOTE_PORT"]
        return 0

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

    # --- httptools callbacks ---

    def on_message_begin(self):
        server = self.server
        # The environ of the connection's last request, when it came back unchanged and nobody
        # else holds it: this request starts with it, while its fields turn out to be that
        # request's (_flush_header, _field_kept; else _unreuse gives it a _new_environ()).
        env = self.kept_env
        self.reusing = False
        if env is not None:
            self.kept_env = None
            if _refs(env) == 1 and _dict_version(env) == self.kept_version:   # (1: this local)
                self.reusing = True
                self.fields = self.kept_fields
            else:
                env = None
        if env is None:
            # the compiled loop's own parser keeps each field's memo entry (_llhttp.pxi)
            self.fields = [] if ENV_REUSE and self.parser is None and not self.asgi else None
            env = self._new_environ()
        ex = new_exchange(self, env)
        ex.start = server.now
        self.cur = ex
        self.url = b""
        self.in_head = True
        self.nheaders = 0
        self.seen = 0
        self.host = None
        self.header_bytes = 0
        if self.asgi:
            scope = self.scope_base.copy()
            if server.driver.state is not None:
                scope["state"] = server.driver.state.copy()
            self.hlist = []
            scope["headers"] = self.hlist
            ex.asgi = AsgiRequest(scope)
        if self.served or self.wait == W_NONE:
            # a kept-alive connection, or one behind a request being answered: the header
            # deadline runs from the request's first byte (the first one's from the accept)
            self._arm(W_HEADERS, server.settings.header_timeout)

    def on_url(self, url):
        if self.url:
            self.url += url
        else:
            self.url = url
        if len(self.url) > self.server.settings.max_request_line:
            raise Reject(414)

    def _count_field(self, name, value):
        """A header (or trailer) field counts toward --max-headers and --max-header-bytes."""
        server = self.server
        self.nheaders += 1
        self.header_bytes += len(name) + len(value) + 4
        if self.nheaders > server.settings.max_headers or self.header_bytes > server.settings.max_header_bytes:
            raise Reject(431)
        return 0

    def on_header(self, name, value):
        self._count_field(name, value)
        start = 0
        end = len(value)
        while start < end and (value[start] == 32 or value[start] == 9):
            start += 1
        while end > start and (value[end - 1] == 32 or value[end - 1] == 9):
            end -= 1
        if not self.in_head:
            # a chunked body's trailer field: never in the environ (or the scope); the fields that
            # frame or route a request may not be there at all (RFC 9110 6.5.1)
            if lower_name(name) in FORBIDDEN_TRAILERS:
                raise Reject(400)
            return
        if self.asgi:
            self.hlist.append((lower_name(name), value[start:end]))
        key = HEADER_KEYS.get(name)
        if key is None:
            key = header_key(name)
        self.hkey = key                # (what the compiled loop's memo keeps of this field: _llhttp.pxi)
        if key is None:
            self.htext = None
            return
        text = value[start:end].decode("latin-1")
        self.htext = text
        self._store_header(key, text)

    def _header_again(self, name, value, key, text):
        """on_header for a field the same as one the compiled loop saw before at its position in
        a head (_llhttp.pxi's memo): `key` and `text` are what on_header made of it then."""
        self._count_field(name, value)
        if key is not None:
            self._store_header(key, text)
        return 0

    def _store_header(self, key, text):
        # the few fields on_headers_complete looks for, noted here (the keys are interned, so
        # identity tells them) instead of looked up in the environ there
        if key is K_CONTENT_LENGTH or key is K_TRANSFER_ENCODING:
            self.seen |= SEEN_BODY
        elif key is K_FORWARDED_FOR or key is K_FORWARDED_PROTO or key is K_FORWARDED:
            self.seen |= SEEN_FORWARDED
        elif key is K_HOST:
            self.host = text
        env = self.cur.environ
        size = len(env)
        old = env.setdefault(key, text)
        if len(env) == size:           # a repeated field (told by the size: "" and one-character
                                       # texts are shared objects, so identity cannot tell)
            self.fields = None         # (its environ is never kept: _field_kept does not combine)
            if key == "CONTENT_TYPE":
                raise Reject(400)      # two Content-Type fields: which one the app reads is a guess
            combined = old + "," + text
            env[key] = combined
            if key is K_HOST:
                self.host = combined
        return 0

    def _new_environ(self):
        """The environ a request starts from: a copy of the kept request line's (line_env) when the
        connection repeats its line, else of the server's and this client's keys (base_environ)."""
        line = self.line_env
        return (line if line is not None else self.base_environ).copy()

    def _field_kept(self, name, value, key, text):
        """_header_again for the field at the same position in the kept environ's request: counted,
        and noted, but already in the environ (such a request had no body or proxy fields)."""
        self._count_field(name, value)
        if key is K_HOST:
            self.host = text
        return 0

    def _unreuse(self, count):
        """The request's fields or line are not the kept environ's after all: the environ
        on_message_begin would have made, with the first `count` fields (those matched) in it."""
        ex = self.cur
        ex.environ = self._new_environ()
        self.reusing = False
        self.fields = self.fields[:count]
        for entry in self.fields:
            if entry[2] is not None:
                self._store_header(entry[2], entry[3])
        return 0

    def on_headers_complete(self):
        ex = self.cur
        server = self.server
        method = self._method()
        version = self._version()
        # (the compiled loop's versions are V11 and V10 themselves: no dict lookup for them)
        protocol = HTTP11 if version is V11 else HTTP10 if version is V10 else PROTOCOLS.get(version)
        url = self.url
        same_line = url == self.line_url and method is self.line_method and protocol is self.line_protocol
        if self.reusing and self.nheaders != len(self.fields):
            # (a changed request line needs nothing more: _request_line below sets all its keys)
            self._unreuse(self.nheaders)
        env = ex.environ
        if not (same_line and self.line_env is not None):
            self._request_line(ex, env, method, version, protocol, url, same_line)
        # (else the environ, copied from line_env, has this request line's keys already)
        if self.seen & SEEN_FORWARDED and self._trusts_peer():
            self._forwarded(ex, env)
        settings = server.settings
        ex.keep_alive = self._keeps_alive() and settings.keep_alive > 0
        ex.head = method is M_HEAD
        if settings.health is not None and (url == settings.health or url.startswith(settings.health_query)) and (
                ex.head or method == "GET"):
            ex.health = True                 # --health-path: answered by the server (_answer_health)
        ex.http10 = protocol is not HTTP11
        self._head_complete(ex, env, protocol)
        if self.fields is not None and not self.seen and self.line_env is not None and not ex.health:
            # built from the kept request line and fields alone: may serve the next such request
            ex.env_fields = self.fields
            ex.env_version = _dict_version(env)
        self.reusing = False

    def _request_line(self, ex, env, method, version, protocol, url, same_line):
        """The request line's keys in the environ (and the ASGI scope). A connection that sends
        the same request line twice in a row keeps an environ with them (`line_env`, the server's
        and this client's keys plus these five), which its next requests start from: a client that
        repeats itself (a poller, a load generator, a health check) saves five insertions and the
        parsing of the target; one whose every target differs pays three comparisons."""
        server = self.server
        env["REQUEST_METHOD"] = method
        env["SERVER_PROTOCOL"] = protocol if protocol is not None else "HTTP/" + version
        uri = url.decode("latin-1")
        env["RAW_URI"] = uri
        query = _query_at(uri)
        if query == -2:
            if uri == "*" and method != "OPTIONS":
                raise Reject(400)      # asterisk-form is for OPTIONS only (RFC 9112 3.2.4)
            env["PATH_INFO"], env["QUERY_STRING"] = split_target(url)
        elif query < 0:
            env["PATH_INFO"] = uri
            env["QUERY_STRING"] = ""
        else:
            env["PATH_INFO"] = uri[:query]
            env["QUERY_STRING"] = uri[query + 1:]
        if server.settings.root_path:
            self._strip_root(env, server.settings.root_path)
        if self.asgi:
            scope = ex.asgi.scope
            scope["method"] = method
            scope["http_version"] = version
            if query == -2:
                scope["path"], scope["raw_path"], scope["query_string"] = split_asgi_target(url)
            elif query < 0:
                scope["path"] = uri
                scope["raw_path"] = url
                scope["query_string"] = b""
            else:
                scope["path"] = uri[:query]
                scope["raw_path"] = url[:query]
                scope["query_string"] = url[query + 1:]
        elif protocol is not None:
            if same_line:
                line = self.base_environ.copy()      # (the second time in a row: worth keeping)
                for key in LINE_KEYS:
                    line[key] = env[key]
                self.line_env = line
            else:
                self.line_env = None
                self.line_url = url
                self.line_method = method
                self.line_protocol = protocol
        return 0

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

    def _strip_root(self, env, root):
        """--root-path: PATH_INFO without the prefix, when the path starts with it (on a segment
        boundary); a proxy that already stripped it leaves the path as it is. (SCRIPT_NAME is the
        prefix either way: it is in the base environ.)"""
        path = env["PATH_INFO"]
        if path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
            env["PATH_INFO"] = path[len(root):]
        return 0

    def _trusts_peer(self):
        """Whether the peer is a proxy whose Forwarded / X-Forwarded-* headers count (unix-socket
        peers are); asked once per connection, when a request first carries one."""
        if self.trusted < 0:
            server = self.server
            settings = server.settings
            self.trusted = 1 if not settings.tcp or settings.trust(self.base_environ["REMOTE_ADDR"]) else 0
        return self.trusted == 1

    def _forwarded(self, ex, env):
        """A trusted proxy's Forwarded or X-Forwarded-* headers: the client's address and scheme."""
        addr, port, scheme = forwarded_client(env, self.server.settings.trust)
        if addr is not None:
            env["REMOTE_ADDR"] = addr
            env["REMOTE_PORT"] = port
        if scheme is not None:
            env["wsgi.url_scheme"] = scheme
        if self.asgi:
            scope = ex.asgi.scope
            if addr is not None:
                scope["client"] = (addr, int(port))
            if scheme is not None:
                scope["scheme"] = scheme
        return 0

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
                            return 0
                        self._unreceive()
                        self.pending.append(problem)
                    else:
                        last.keep_alive = False
            # (bytes after the upgrade request are input left unread: the close lingers for them)
            self._stop_reading(UNREAD if n > exc.args[0] else LAST_IN)
            return 0
        except HttpParserError as exc:
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

    def _proxy_header(self, data):
        """--proxy-protocol: gather the connection's PROXY header (it may come in pieces) and take
        the client's address from it; what follows it, or None while it is incomplete or after a
        connection without a valid one was closed (and counted as refused)."""
        buf = self.proxy_buf + bytes(data)
        try:
            found = parse_proxy_header(buf)
        except ValueError as exc:
            self.proxy_buf = None
            server = self.server
            server.cells[refusal_cell(400)] += 1
            log.info("closed a connection from %s without a valid PROXY protocol header: %s",
                     self.base_environ.get("REMOTE_ADDR", "?"), exc)
            self.close()
            return None
        if found is None:
            self.proxy_buf = buf
            return None
        self.proxy_buf = None
        size, addr, port = found
        if addr is not None:
            env = self.base_environ
            env["REMOTE_ADDR"] = addr
            env["REMOTE_PORT"] = port
            self.trusted = -1                # (the proxy's peer now: found out again when needed)
            if self.asgi:
                self.scope_base["client"] = (addr, int(port))
        return buf[size:]

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
            if self.ws is not None:
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
            env = ex.environ
            if _refs(env) == 2 and _dict_version(env) == ex.env_version:    # (2: ex's and this local)
                # unchanged by the app, and held by nothing else: the next request may start from it
                self.kept_env = env
                self.kept_fields = ex.env_fields
                self.kept_version = ex.env_version
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

    def _arm(self, wait, seconds):
        """The read-side deadline: `seconds` from now, for `wait`."""
        self.wait = wait
        self.deadline = self.server.now + seconds
        return 0

    def tick(self, now):
        """Once a second, from the server: act on a deadline that passed; when the worker is
        stopping, end the connection cleanly once it stays idle. All of its timeouts are here
        (a WebSocket's keep-alive ping too)."""
        if CHECK_THREADS:
            self.server._check_thread("HttpConnection.tick")
        if self.ws is not None:
            self.ws.tick(now)
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
                elif not self._sendfile_step():
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
        began = pool._enter()
        ex.called = server.now      # (for --timeout: this read's time, not this call's, is near enough)
        if first:
            ex.run(self.app)
        if ex.iter is not None:
            ex.stream()
        if pool._leave(began):
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
            self.server._check_thread("HttpConnection._handed_back")
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

    def _body_taken(self):
        """An ASGI app took what was read of its body: read more, if reading was paused for it
        (and nothing else holds it: _holds_input)."""
        if self.read_paused and not self._holds_input():
            self._resume_reading()
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

    # --- state ---

    def idle(self):
        return self.cur is None and not self.pending and not self.out_size and self.resp is None

    def _end(self):
        """Close after the last response: at once if nothing more can come from the client (it
        closed, or its last request ended the connection and nothing followed it), else a
        lingering close."""
        if self.state == PEER_CLOSED or self.state == LAST_IN:
            self.close()
            return 0
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # response still on its way to the client. So: FIN first, then drop whatever the
        # client still sends until it closes too, or LINGER runs out (the tick closes then).
        self._release()
        if not self._shutdown_write():
            self.close()
            return 0
        self.state = LINGERING
        self._arm(W_LINGER, LINGER)
        self.read_paused = False             # (what comes now is read and dropped)
        self._want_read()
        return 0

    def close(self):
        if CHECK_THREADS:
            self.server._check_thread("HttpConnection.close")
        if self.state == CLOSED:
            return
        self.state = CLOSED
        ex = self.resp
        if ex is not None and ex.asgi is not None and ex.asgi.cycle is not None:
            ex.asgi.cycle.disconnect()       # an ASGI app: http.disconnect
        server = self.server
        server.conns.pop(self.fd, None)
        if ex is not None and ex.in_app and server.pool is not None:
            server.orphans.append(self)      # its app call runs on: --timeout still watches it (_tick)
        self._release()
        self._close_fd()
        server._publish_count()
        self._notify()
        if not server.accepting:
            server.resume_accepting()

    def _release(self):
        """Let go of everything the connection holds for requests and responses."""
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

    def _input(self):
        """What `_feed(None, n)` parsed, as a bytes-like object (the compiled loop's; never None here)."""
        raise NotImplementedError

    def _keeps_alive(self):
        return self.parser.should_keep_alive()

    # --- the loop's I/O: each loop's Connection provides these ---

    def _on_event(self):
        """Read what the client sent and answer what can be answered."""
        raise NotImplementedError

    def _flush(self):
        """Send queued output; False when the socket is full (write interest armed) or the peer
        is gone."""
        raise NotImplementedError

    def _send_later(self):
        """True when the loop takes this connection's output (and the rest of its pump) to send
        after the batch of events it is handling (the compiled loop: Connection._send_later)."""
        return False

    def _sendfile_step(self):
        """Send more of the exchange's file; False while the socket is full."""
        raise NotImplementedError

    def _want_read(self):
        """Wait for input (and no longer for room to write); while reading is paused, for neither."""
        raise NotImplementedError

    def _shutdown_write(self):
        """Send our FIN; False if the socket is already gone."""
        raise NotImplementedError

    def _close_fd(self):
        raise NotImplementedError

    def _drop_output(self):
        """Forget the queued output (the connection is ending)."""
        raise NotImplementedError
