"""WSGI (PEP 3333) pieces shared by both request loops, in plain Python.

Request body streams (with the disk budget of spilled bodies), `wsgi.file_wrapper`, the cached
status line and Date header, the request-head checks llhttp leaves to the server, header name
rules, and the request-target split. The per-request work that gains from being compiled lives in
the shared sources `_exchange.py` and `_http.py`, which use these.
"""

from __future__ import annotations

import io
import os
import logging
import re
import socket
import sys
import threading
import time

log = logging.getLogger("fastcluster")

SERVER_HEADER = b"Server: fastcluster\r\n"
# FASTCLUSTER_CHECK_THREADS=1: the loop asserts, where its code begins, that it runs on the thread
# that holds the loop (the rule: _server.py, above HttpServer._check_thread)
CHECK_THREADS = os.environ.get("FASTCLUSTER_CHECK_THREADS", "") not in ("", "0")
SPILL_BYTES = 1 << 20          # a buffered request body above this goes to a temporary file
CONTINUE_LINE = b"HTTP/1.1 100 Continue\r\n\r\n"

# --- request side ----------------------------------------------------------------------------

HEADER_KEYS: dict = {}   # raw header name (bytes) -> environ key, or None when the name is dropped
_MAX_LEARNED = 512


def header_key(name: bytes):
    """Environ key for a request header name; None for names with '_' (they would
    collide with the '-' spelling of another header once turned into HTTP_*)."""
    key = HEADER_KEYS.get(name)
    if key is not None or name in HEADER_KEYS:
        return key
    text = name.decode("latin-1")
    if "_" in text:
        key = None
    else:
        key = text.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        key = sys.intern(key)     # (so that _http.py can tell a few keys by identity)
    if len(HEADER_KEYS) < _MAX_LEARNED:
        HEADER_KEYS[name] = key
    return key


def _split(target: bytes):
    """Request-target -> (path as sent, query as sent), both bytes: absolute-form reduced to its
    path, a fragment dropped."""
    if target[:1] != b"/" and b"://" in target[:10]:    # absolute-form: http://host/path?q
        rest = target.split(b"://", 1)[1]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        target = rest[cut:]
        if target[:1] != b"/":
            target = b"/" + target
    path, _, query = target.partition(b"?")
    if b"#" in path:
        path = path.partition(b"#")[0]
    return path, query.partition(b"#")[0]


_HEX = "0123456789abcdefABCDEF"
_ESCAPES = {(a + b).encode(): bytes((int(a + b, 16),)) for a in _HEX for b in _HEX}


def unquote_to_bytes(data: bytes) -> bytes:
    """Percent-decoding by urllib.parse.unquote_to_bytes's rules (%XX to its byte, a malformed
    escape kept as it is), without importing urllib.parse, which with ipaddress is 0.3 MiB in
    every worker."""
    parts = data.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        byte = _ESCAPES.get(part[:2])
        if byte is None:
            out.append(b"%")
            out.append(part)
        else:
            out.append(byte)
            out.append(part[2:])
    return b"".join(out)


def split_target(target: bytes):
    """Request-target -> (PATH_INFO, QUERY_STRING) as latin-1 str; the path is percent-decoded."""
    path, query = _split(target)
    if b"%" in path:
        path = unquote_to_bytes(path)
    return path.decode("latin-1"), query.decode("latin-1")


def split_asgi_target(target: bytes):
    """Request-target -> (path, raw_path, query_string) as an ASGI scope has them: the path
    percent-decoded as UTF-8 (str), raw_path and query_string as sent (bytes)."""
    raw_path, query = _split(target)
    path = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    return path.decode("utf-8", "replace"), raw_path, query


class Reject(Exception):
    """Raised from a parser callback: answer this status and close the connection."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


PLAIN_HOST = re.compile(r"[A-Za-z0-9.\-]*(?::[0-9]*)?")   # needs no further check (see _http.plain_host)
_HOST_RE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")


def check_head(env, http10: bool, max_body: int) -> int:
    """RFC 9112 checks llhttp leaves to the server; returns 0 or the status to reject with."""
    protocol = env["SERVER_PROTOCOL"]
    if protocol != "HTTP/1.1" and protocol != "HTTP/1.0":
        return 505
    host = env.get("HTTP_HOST")
    if host is None:
        if not http10:
            return 400          # HTTP/1.1 requires Host
    elif not _HOST_RE.fullmatch(host):
        return 400              # also two Host fields, which arrive joined with ","
    te = env.get("HTTP_TRANSFER_ENCODING")
    if te is not None:
        if http10:
            return 400          # chunked is not HTTP/1.0; the body length would be guesswork
        if te.lower() != "chunked":
            return 501          # llhttp refused codings not ending in chunked; the rest we do not decode
    if max_body:
        length = env.get("CONTENT_LENGTH")
        if length is not None and int(length) > max_body:
            return 413          # refused before a byte of the body is read
    return 0


ERROR_STATUS = {
    400: "400 Bad Request", 408: "408 Request Timeout", 413: "413 Content Too Large",
    414: "414 URI Too Long", 431: "431 Request Header Fields Too Large", 501: "501 Not Implemented",
    505: "505 HTTP Version Not Supported", 503: "503 Service Unavailable", 426: "426 Upgrade Required",
}
# a refused WebSocket handshake of another version says which one this server speaks (RFC 6455 4.4)
ERROR_EXTRA = {426: b"Sec-WebSocket-Version: 13\r\n"}


def error_response(code: int, date: bytes) -> bytes:
    status = ERROR_STATUS[code]
    return simple_response(status, status[4:].encode() + b"\n", True, date + ERROR_EXTRA.get(code, b""))


class EmptyInput:
    """wsgi.input of a request without a body.  Stateless, so one instance serves all."""

    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def __iter__(self):
        return iter(())


EMPTY_INPUT = EmptyInput()


class SpillBudget:
    """The disk one worker's request bodies may take in temporary files (--max-spill). The loop
    takes from it as bodies arrive; an app thread may give back (a request it answered)."""

    __slots__ = ("left", "lock")

    def __init__(self, limit: int):
        self.left = limit if limit else -1     # -1: no limit
        self.lock = threading.Lock()

    def take(self, size: int) -> bool:
        if self.left < 0:
            return True
        with self.lock:
            if size > self.left:
                return False
            self.left -= size
            return True

    def give(self, size: int) -> None:
        if self.left >= 0:
            with self.lock:
                self.left += size


_NO_BUDGET = SpillBudget(0)


class BodyBuffer:
    """Collects a request body that arrives before the app runs; spills to disk when large,
    within the worker's SpillBudget (past it the request is refused with 503)."""

    __slots__ = ("parts", "size", "file", "budget", "taken")

    def __init__(self, budget: SpillBudget = _NO_BUDGET):
        self.parts = []
        self.size = 0
        self.file = None
        self.budget = budget
        self.taken = 0          # bytes of the budget this body holds

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self._take(len(data))
            self.file.write(data)
            return
        self.parts.append(data)
        if self.size > SPILL_BYTES:
            self._take(self.size)
            import tempfile   # here: with shutil, bz2 and lzma it is 1 MiB a worker that never spills
            self.file = tempfile.TemporaryFile(prefix="fastcluster-body-")
            self.file.writelines(self.parts)
            self.parts = None

    def _take(self, size: int) -> None:
        if not self.budget.take(size):
            raise Reject(503)   # the worker's disk budget for bodies is spent: try again later
        self.taken += size

    def stream(self):
        if self.file is not None:
            self.file.seek(0)
            return self.file
        return io.BytesIO(b"".join(self.parts))

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.taken:
            self.budget.give(self.taken)
            self.taken = 0


class LazyInput:
    """wsgi.input that pulls the body from the client while the app reads it.

    Used for `Expect: 100-continue`: `fill()` (given by the loop) sends the interim
    `100 Continue` the first time, then blocks until body bytes arrive, which the
    parser hands to `add()`.  `fill()` returns False when no more can come.
    """

    def __init__(self, fill):
        self._fill = fill
        self._buf = bytearray()
        self.done = False
        self.received = 0       # body bytes added so far (what a waiting fill() watches)
        self.wanted = 0         # bytes the read waiting in fill() needs buffered (-1: all of the body; 0: none
                                # waits): the connection reads on past its bound until they are here

    def add(self, data: bytes) -> None:
        self._buf += data
        self.received += len(data)

    def finish(self) -> None:
        self.done = True

    @property
    def size(self) -> int:
        """Body bytes read from the client that the app has not taken yet (the connection stops
        reading at HIGH_WATER of them)."""
        return len(self._buf)

    def _more(self, need: int) -> bool:
        """Wait for more of the body; `need`: how much of it the read wants buffered (-1: all)."""
        if self.done:
            return False
        self.wanted = need
        try:
            more = self._fill()
        finally:
            self.wanted = 0
        if not more:
            if not self.done:
                raise OSError("client disconnected before the request body was complete")
            return False
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            while self._more(-1):
                pass
            size = len(self._buf)
        while len(self._buf) < size and self._more(size):
            pass
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def readline(self, size=-1):
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                take = end + 1
                break
            if (size is not None and 0 <= size <= len(self._buf)) or not self._more(len(self._buf) + 1):
                take = len(self._buf)
                break
        if size is not None and size >= 0:
            take = min(take, size)
        data = bytes(self._buf[:take])
        del self._buf[:take]
        return data

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class FileWrapper:
    """wsgi.file_wrapper: the loops send a wrapped regular file with os.sendfile."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, size = self.filelike.read, self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data


# --- response side ---------------------------------------------------------------------------

_STATUS_RE = re.compile(r"^[1-9]\d\d(?: [^\x00-\x08\x0a-\x1f\x7f]*)?$")
_STATUS_LINES: dict = {}    # status str -> status line bytes


def status_line(status) -> bytes:
    """b'HTTP/1.1 200 OK\\r\\n' for '200 OK'; ValueError for a malformed status."""
    line = _STATUS_LINES.get(status)
    if line is not None:
        return line
    if type(status) is not str or not _STATUS_RE.match(status):
        raise ValueError("invalid status %r: expected a str like '200 OK'" % (status,))
    line = ("HTTP/1.1 %s\r\n" % status).encode("latin-1")
    if len(_STATUS_LINES) < 256:
        _STATUS_LINES[status] = line
    return line


# header kinds the loops act on; everything else is passed through
H_PLAIN, H_CONTENT_LENGTH, H_DATE, H_SERVER, H_CONNECTION, H_HOP = range(6)
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SPECIAL = {"content-length": H_CONTENT_LENGTH, "date": H_DATE, "server": H_SERVER,
            "connection": H_CONNECTION, "transfer-encoding": H_HOP, "keep-alive": H_HOP}

# the flags _exchange.encode_headers returns
HAS_DATE, HAS_SERVER, WANTS_CLOSE = 1, 2, 4


def learn_name(name):
    """("Name: ", kind) for a response header name; ValueError when it is not a token."""
    if type(name) is not str or not _TOKEN_RE.match(name):
        raise ValueError("invalid header name %r" % (name,))
    return name + ": ", _SPECIAL.get(name.lower(), H_PLAIN)


def has_token(value: str, token: str) -> bool:
    """Whether a comma-separated header value (Connection: keep-alive, close) holds `token`,
    compared without case: "close" is a token of "Close" but not of "closed"."""
    return any(part.strip().lower() == token for part in value.split(","))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(second: float) -> str:
    """RFC 9110's IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (the names are English in every locale).
    email.utils.formatdate does the same, but importing the email package costs every worker 2 MiB."""
    t = time.gmtime(second)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (_DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
                                                  t.tm_hour, t.tm_min, t.tm_sec)


class DateHeader:
    """The `Date:` line, formatted at most once a second."""

    __slots__ = ("second", "line")

    def __init__(self):
        self.second = -1
        self.line = b""

    def get(self, now=None) -> bytes:
        second = int(time.time() if now is None else now)
        if second != self.second:
            self.second = second
            self.line = ("Date: %s\r\n" % http_date(second)).encode("ascii")
        return self.line


def simple_response(status: str, body: bytes, close: bool, date: bytes) -> bytes:
    """A complete plain-text response the server writes itself (400, 500, ...)."""
    return b"".join((
        status_line(status), date, SERVER_HEADER,
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Connection: close\r\n" if close else b"",
        b"\r\n", body,
    ))


def log_app_error(environ, message="error handling request") -> None:
    """Log the current exception with the request it broke, control characters escaped."""
    line = "%s %s" % (environ.get("REQUEST_METHOD", "?"), environ.get("RAW_URI", "?"))
    log.error("%s %s", message, line.encode("unicode_escape").decode("ascii"), exc_info=True)


def base_environ(server_name: str, server_port: str, multiprocess: bool, multithread: bool = False,
                 script_name: str = "") -> dict:
    """The keys every request of this worker shares; each request starts from a copy."""
    return {
        "SCRIPT_NAME": script_name,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_SOFTWARE": "fastcluster",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input": EMPTY_INPUT,          # (a request with a body gets its own)
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }


# --- proxy headers (--forwarded-allow-ips, --forwarded-headers) -----------------------------------

# The header families a proxy may speak; the server trusts one of them (--forwarded-headers), never
# both: a family the proxy does not set passes through it untouched, so the client would choose it.
X_FORWARDED, FORWARDED, NO_FORWARDED = "x-forwarded", "forwarded", "none"
FORWARDED_FAMILIES = (X_FORWARDED, FORWARDED, NO_FORWARDED)


class Trust:
    """Which peers may set the client's address and scheme through proxy headers: addresses and
    networks (CIDR), or everyone (`*`), and which header family they set (`family`, one of
    FORWARDED_FAMILIES). Answers are cached per address string. Plain addresses (the default,
    127.0.0.1 and ::1) are compared in their canonical text, through the socket module;
    ipaddress (0.3 MiB in every forked worker) is imported only for networks."""

    def __init__(self, spec: str, family: str = X_FORWARDED):
        if family not in FORWARDED_FAMILIES:
            raise ValueError("%r is not one of %s" % (family, ", ".join(FORWARDED_FAMILIES)))
        self.family = family
        self.everyone = False
        self.addresses = set()
        self.networks = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            if item == "*":
                self.everyone = True
            elif "/" in item:
                import ipaddress

                self.networks.append(ipaddress.ip_network(item, strict=False))   # ValueError if bad
            else:
                self.addresses.add(canonical_address(item))                       # ValueError if bad
        self.cache = {}

    def __call__(self, address: str) -> bool:
        if self.everyone:
            return True
        known = self.cache.get(address)
        if known is None:
            try:
                text = canonical_address(address.split("%", 1)[0])
            except ValueError:
                known = False
            else:
                known = text in self.addresses
                if not known and self.networks:
                    import ipaddress

                    ip = ipaddress.ip_address(text)
                    known = any(ip in net for net in self.networks)
            if len(self.cache) < 4096:
                self.cache[address] = known
        return known


def canonical_address(text: str) -> str:
    """An IPv4 or IPv6 address in its canonical text (an IPv4-mapped IPv6 address as the IPv4
    one); ValueError when `text` is neither."""
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ValueError("%r does not appear to be an IPv4 or IPv6 address" % text) from None
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed)


def _forwarded_node(value: str):
    """A `for=` value of RFC 7239 (or an X-Forwarded-For item) -> (address, port); None when it is
    not an address ("unknown", an obfuscated name)."""
    value = value.strip().strip('"').strip()
    if value.startswith("["):                    # [v6] or [v6]:port
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:                  # v4:port
        host, port = value.split(":")
    else:                                        # v4, or a bare v6 (X-Forwarded-For)
        host, port = value, ""
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, port if port.isdigit() else "0"


def _client_hop(nodes, trust):
    """The index of the hop that is the client: walking from the right (the nearest proxy), the
    first address that is not itself a trusted proxy (the leftmost when all are); None when the
    walk meets a hop it cannot account for ("unknown", a name, an element without `for=`)."""
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        if node is None:
            return None
        if not trust(node[0]):
            return index
    return 0 if nodes else None


def forwarded_client(env: dict, trust):
    """From a trusted peer: (address, port, scheme) that its proxy headers give, each None where
    they give nothing. Only the family `trust.family` names is read: X-Forwarded-For with the last
    X-Forwarded-Proto (what the nearest proxy set), or RFC 7239 Forwarded, whose `proto=` is taken
    from the same element as the client's `for=` (the hop that proxy saw)."""
    node = scheme = None
    family = trust.family
    if family == X_FORWARDED:
        xff = env.get("HTTP_X_FORWARDED_FOR")
        if xff is not None:
            nodes = [_forwarded_node(item) for item in xff.split(",") if item.strip()]
            index = _client_hop(nodes, trust)
            if index is not None:
                node = nodes[index]
        proto = env.get("HTTP_X_FORWARDED_PROTO")
        if proto is not None:
            scheme = proto.rsplit(",", 1)[-1].strip().lower()
    elif family == FORWARDED:
        forwarded = env.get("HTTP_FORWARDED")
        if forwarded is not None:
            nodes, protos = [], []
            for element in forwarded.split(","):
                found = proto = None
                for pair in element.split(";"):
                    name, _, value = pair.partition("=")
                    name = name.strip().lower()
                    if name == "for":
                        found = _forwarded_node(value)
                    elif name == "proto":
                        proto = value.strip().strip('"').lower()
                nodes.append(found)
                protos.append(proto)
            index = _client_hop(nodes, trust)
            if index is not None:
                node, scheme = nodes[index], protos[index]
            elif nodes:
                # the walk stopped at a hop it cannot account for (for=unknown): no address, but
                # the trusted proxy that wrote that element still says how the hop arrived
                scheme = protos[max(i for i, n in enumerate(nodes) if n is None)]
    if scheme not in ("http", "https"):
        scheme = None
    if node is None:
        return None, None, scheme
    return node[0], node[1], scheme


# --- PROXY protocol (--proxy-protocol) ----------------------------------------------------------

PROXY_V1_MAX = 107                       # the longest v1 line, CRLF included (the spec's bound)
PROXY_V2_MAX = 16 + 2048                 # a v2 header with room for TLVs; longer ones are refused
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def parse_proxy_header(buf: bytes):
    """A PROXY protocol header (v1 text or v2 binary) at the start of `buf`: (its length, the
    client's address or None, its port or None); None while it is still incomplete; ValueError
    when `buf` does not start with a valid one. UNKNOWN (v1), LOCAL and AF_UNSPEC (v2) carry no
    address: the connection's own stays."""
    if buf[:1] == b"P":
        end = buf.find(b"\r\n", 0, PROXY_V1_MAX)
        if end < 0:
            if len(buf) >= PROXY_V1_MAX or not b"PROXY ".startswith(buf[:6]):
                raise ValueError("not a PROXY v1 header (or longer than %d bytes)" % PROXY_V1_MAX)
            return None
        try:
            parts = buf[:end].decode("ascii").split(" ")
        except UnicodeDecodeError:
            raise ValueError("a PROXY v1 header that is not ASCII") from None
        if parts[0] != "PROXY" or len(parts) < 2:
            raise ValueError("not a PROXY v1 header")
        if parts[1] == "UNKNOWN":
            return end + 2, None, None
        if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
            raise ValueError("a PROXY v1 header of an unknown kind or shape")
        import ipaddress

        family = 4 if parts[1] == "TCP4" else 6
        for address in parts[2:4]:
            if ipaddress.ip_address(address).version != family:      # ValueError if not an address
                raise ValueError("a %s PROXY header with the address %r" % (parts[1], address))
        for port in parts[4:6]:
            if not port.isdigit() or int(port) > 65535 or (len(port) > 1 and port[0] == "0"):
                raise ValueError("a PROXY v1 header with the port %r" % port)
        return end + 2, parts[2], parts[4]
    if buf[:1] == b"\r":
        if len(buf) < 16:
            if not PROXY_V2_SIGNATURE.startswith(buf[:12]):
                raise ValueError("not a PROXY v2 header")
            return None
        if buf[:12] != PROXY_V2_SIGNATURE or buf[12] >> 4 != 2:
            raise ValueError("not a PROXY v2 header")
        command, family = buf[12] & 0x0F, buf[13] >> 4
        total = 16 + int.from_bytes(buf[14:16], "big")
        if total > PROXY_V2_MAX:
            raise ValueError("a PROXY v2 header of %d bytes (at most %d)" % (total, PROXY_V2_MAX))
        if len(buf) < total:
            return None
        if command == 0 or family == 0 or family == 3:          # LOCAL, AF_UNSPEC, AF_UNIX
            return total, None, None
        if command != 1:
            raise ValueError("a PROXY v2 header with the command %d" % command)
        if family == 1 and total >= 16 + 12:
            return total, socket.inet_ntop(socket.AF_INET, buf[16:20]), str(int.from_bytes(buf[24:26], "big"))
        if family == 2 and total >= 16 + 36:
            return total, socket.inet_ntop(socket.AF_INET6, buf[16:32]), str(int.from_bytes(buf[48:50], "big"))
        raise ValueError("a PROXY v2 header with the address family %d or too short for it" % family)
    raise ValueError("no PROXY protocol header")
