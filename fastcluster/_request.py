"""The request builder: what the app is given for one request, the same for both request loops.

Owns: a request's environ (WSGI) or scope (ASGI) as its head arrives: the connection's base
(`base_environ`, `scope_base`, the client's address, --proxy-protocol's header), the request line
(method, target, protocol, --root-path), each header field (--max-headers, --max-header-bytes,
repeated fields, trailers that may not be), a trusted proxy's Forwarded / X-Forwarded-* fields
(--forwarded-allow-ips), the health path; and the memos that make the common case cheap: the
request line kept when a client repeats it (`line_env`), the environ handed back unchanged
(`kept_env`, whose fields the compiled loop's llhttp callbacks compare in place: `_llhttp.pxi`).

Does not own: how a head is read off the wire, framing, bodies and keep-alive (the protocol,
`_http.py`), the app call (`_dispatch.py`), or bytes (`_transport.py`).

For a protocol with many requests on one connection (HTTP/2, each stream an `Exchange`): the head
being built is state of the connection, not of a stream, because heads are built one at a time
on any connection (HTTP/1.1 reads them in order; HTTP/2's header blocks cannot interleave, as
HPACK decodes them in order). A protocol calls `_begin_head()` for the new request's `Exchange`,
`on_header()` for each field (or `url` for the target), and `_build_head(ex, method, version)`
when the head ends; what the protocol decides itself (keep-alive, framing, the body) is not
here. RequestBuilder is a base class of the connection rather than an object it holds: see
`_transport.py` for why.
"""

import sys as _sys

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

from . import board as _board
from . import wsgi as _wsgi

if not cython.compiled:   # the compiled build reads a dict's version and a refcount itself (_inline.pxd)
    ENV_REUSE = False     # (so the plain-Python loop never keeps an environ: _begin_head)

    def _dict_version(d):
        return 0

    def _refs(obj):
        return 0

if not cython.compiled:   # the compiled build cimports these (_request_c.pxd)
    from ._exchange import AsgiRequest, new_exchange
    from ._transport import Transport

# Python objects used per request, bound once (C globals in the compiled build)
HEADER_KEYS = _wsgi.HEADER_KEYS
header_key = _wsgi.header_key
split_target = _wsgi.split_target
split_asgi_target = _wsgi.split_asgi_target
forwarded_client = _wsgi.forwarded_client
parse_proxy_header = _wsgi.parse_proxy_header
Reject = _wsgi.Reject
log = _wsgi.log
refusal_cell = _board.refusal_cell
LOWER_NAMES = {}     # a request header name as sent -> lower-cased, for an ASGI scope
FORBIDDEN_TRAILERS = frozenset((b"host", b"content-length", b"transfer-encoding"))
# the environ keys on_header notes in `seen` (header_key interns every key it makes)
K_CONTENT_LENGTH = _sys.intern("CONTENT_LENGTH")
K_TRANSFER_ENCODING = _sys.intern("HTTP_TRANSFER_ENCODING")
K_FORWARDED_FOR = _sys.intern("HTTP_X_FORWARDED_FOR")
K_FORWARDED_PROTO = _sys.intern("HTTP_X_FORWARDED_PROTO")
K_FORWARDED = _sys.intern("HTTP_FORWARDED")
K_HOST = _sys.intern("HTTP_HOST")
SEEN_BODY, SEEN_FORWARDED = 1, 2          # RequestBuilder.seen: a body is announced; proxy headers came
V11, V10 = _sys.intern("1.1"), _sys.intern("1.0")   # (the compiled loop's _version() gives these)
V2 = _sys.intern("2")                                  # (an HTTP/2 stream's: _h2.Stream._head)
PROTOCOLS = {V11: "HTTP/1.1", V10: "HTTP/1.0", V2: "HTTP/2"}
HTTP11 = PROTOCOLS[V11]
HTTP10 = PROTOCOLS[V10]
LAST_PLAIN_HOST = None       # _known_plain_host's
M_HEAD = _sys.intern("HEAD")   # (every _method() gives its name interned: identity tells a HEAD)
LINE_KEYS = ("REQUEST_METHOD", "SERVER_PROTOCOL", "RAW_URI", "PATH_INFO", "QUERY_STRING")   # _request_line's


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
class RequestBuilder(Transport):
    """The environ (or scope) of each request on one connection, as its head arrives (fields:
    _request_c.pxd)."""

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        cur = None
        url = b""
        nheaders = header_bytes = 0
        in_head = asgi = reusing = False
        trusted = -1
        seen = 0
        scope_base = hlist = hkey = htext = host = None
        line_env = line_url = line_method = line_protocol = None
        fields = kept_env = kept_fields = None
        kept_version = 0

    def _client(self, server, env):
        """The connection's part of every request: the server's environ plus this client's address
        (`env`); for an ASGI app, the scope every request starts from too."""
        self.base_environ = env
        # a proxy's headers may set the client's address and scheme (--forwarded-allow-ips):
        # whether this peer may is found out when a request first carries such a header
        self.trusted = -1
        self.asgi = server.driver is not None
        self.line_env = None          # (no request line kept yet: _request_line)
        if self.asgi:
            # an ASGI request's environ holds only what the server itself reads (its checks, the
            # access log): the client's address, then the request line and the headers
            self.scope_base = server._scope_base(env)
            self.base_environ = {"REMOTE_ADDR": env["REMOTE_ADDR"]}
            if "REMOTE_PORT" in env:
                self.base_environ["REMOTE_PORT"] = env["REMOTE_PORT"]
        return 0

    def _client_environ(self):
        return self.base_environ

    def _begin_head(self, memo):
        """A request's head begins: its Exchange (`cur`), with the environ (and scope) it starts
        from. `memo`: the caller's parser keeps each field's memo entry (the compiled loop's
        llhttp callbacks), so that the environ may serve the next request with the same fields."""
        server = self.server
        # The environ of the connection's last request, when it came back unchanged and nobody
        # else holds it: this request starts with it, while its fields turn out to be that
        # request's (_header_again, _field_kept; else _unreuse gives it a _new_environ()).
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
            self.fields = [] if ENV_REUSE and memo and not self.asgi else None
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
        return ex

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

    def _build_head(self, ex, method, version):
        """The head of `ex` ended (its fields are in): the request line's keys, a trusted proxy's
        fields, whether it is the health path's, and whether its environ may serve the next
        request. Returns the environ's SERVER_PROTOCOL when it is one of the two known (the
        identical object: HTTP11 or HTTP10), else None."""
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
        settings = self.server.settings
        ex.head = method is M_HEAD
        if settings.health is not None and (url == settings.health or url.startswith(settings.health_query)) and (
                ex.head or method == "GET"):
            ex.health = True                 # --health-path: answered by the server (_answer_health)
        elif self.fields is not None and not self.seen and self.line_env is not None:
            # built from the kept request line and fields alone: may serve the next such request
            # (_keep_environ), unless what follows changes it (a body is announced: not `seen`)
            ex.env_fields = self.fields
            ex.env_version = _dict_version(env)
        self.reusing = False
        return protocol

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
            addr = self.base_environ["REMOTE_ADDR"]        # ("" on a unix socket: Server._add)
            self.trusted = 1 if not addr or self.server.settings.trust(addr) else 0
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

    def _keep_environ(self, ex):
        """The response to `ex` is done: its environ, if the app left it unchanged and nothing else
        holds it, is what the connection's next request starts from (_begin_head)."""
        env = ex.environ
        if _refs(env) == 2 and _dict_version(env) == ex.env_version:    # (2: ex's and this local)
            self.kept_env = env
            self.kept_fields = ex.env_fields
            self.kept_version = ex.env_version
        return 0
