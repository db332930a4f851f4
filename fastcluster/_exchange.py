"""One request and its response, the same for both request loops (and, later, both interfaces).

Written once, run two ways: as plain Python by the pure-Python loop, and compiled by Cython as
`fastcluster._exchange_c` for the compiled loop, with its C types in `_exchange_c.pxd` (Cython's
pure-Python mode; where the compiled build wants a C loop and plain Python a builtin, a function
says `if not cython.compiled:` and gives the builtin first, a branch Cython drops).

- `Exchange`: one request and the response to it: the WSGI call, start_response and write, the
  framing of the body (status line, headers, Content-Length or chunked, HEAD, 204 and 304). A new
  one for every request (from a free list), so nothing of one response leaks into the next.
  What only some exchanges need is in objects of its own, there only when needed: `SendFile`
  (a body sent from a file), `EarlyBody` (a body the app takes as it comes), `AsgiRequest`
  (the ASGI scope and call).
- `Channel`: what an exchange needs of its connection: where its bytes go, whom it tells that the
  response is complete. `HttpConnection` (`_http.py`) is the one implementation.
- `encode_headers`: a WSGI app's response headers, checked and encoded.
"""

import os
import stat as _stat

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

from . import wsgi as _wsgi

if not cython.compiled:   # the compiled build has these as a C enum (_exchange_c.pxd)
    # how a connection ends (Channel.state); a state only ever moves to a later one
    OPEN = 0          # reading and answering requests
    LAST_IN = 1       # the client's last request is in (it asked to close); nothing unexpected followed
    UNREAD = 2        # reading stopped with input left: a refused request, bytes after the last one,
                      # or a response that ends the connection while the client may still be sending
    PEER_CLOSED = 3   # the client closed its side; what it sent before is still answered
    LINGERING = 4     # our FIN is out; input is read and dropped until the client closes or LINGER passes
    CLOSED = 5

    def _join_head(status, lines, a, b, c, end, tail):   # (the compiled build's is a C loop: _inline.pxd)
        return b"".join([status, *lines, *[line for line in (a, b, c, end, tail) if line is not None]])

    def _same_text(a, b):                           # (and this a memcmp)
        return a == b

    def _with_tail(joined, size, tail):             # (and this one copy)
        return joined[:size] if tail is None else joined[:size] + tail

HIGH_WATER = 1 << 20        # output queued before a streamed body is paused
SMALL_CHUNK = 8192          # chunked body pieces below this are framed with one copy
SMALL_BODY = 4096           # a one-piece body up to this goes out in the head's buffer: one send
FAILED_BODY = b"Internal Server Error\n"

# Python objects used per request, bound once (C globals in the compiled build)
BodyBuffer = _wsgi.BodyBuffer
LazyInput = _wsgi.LazyInput
FileWrapper = _wsgi.FileWrapper
status_line = _wsgi.status_line
simple_response = _wsgi.simple_response
error_response = _wsgi.error_response
log_app_error = _wsgi.log_app_error
SERVER_HEADER = _wsgi.SERVER_HEADER
HAS_DATE, HAS_SERVER, WANTS_CLOSE = _wsgi.HAS_DATE, _wsgi.HAS_SERVER, _wsgi.WANTS_CLOSE
H_CONTENT_LENGTH, H_DATE = _wsgi.H_CONTENT_LENGTH, _wsgi.H_DATE
H_SERVER, H_CONNECTION = _wsgi.H_SERVER, _wsgi.H_CONNECTION
HEADER_NAMES = {}   # an app's header name -> (b"Name: ", kind)
HEADER_LINES = {}   # an app's (name, value) -> (b"Name: value\r\n", its Content-Length or -1): see encode_headers
LINE_MEMO = []      # by position in a response's headers: the last pair found in HEADER_LINES there, and its entry
STATUSES = {}       # an app's status -> (its status line, its code)
# The memos below are each one tuple, read once and replaced whole, so that app threads (which
# the plain-Python loop may switch between at any bytecode) never see half of one.
HEADERS_MEMO = ((), ([], -1, 0))   # the pairs of the last header list that encode_headers knew
                                   # every pair of, and its answer (no pairs: no lines, length, flags)
STATUS_MEMO = ("", None)           # set_status's last status and its STATUSES entry (None: none yet)
HEAD_MEMO = (None,) * 9            # the last response head _head() joined: see there
FRAMING_MEMO = (-1, b"")           # the last Content-Length the server framed a body with, and its line
ASGI_HEADER_NAMES = {}   # an ASGI app's header name (bytes) -> (b"name: ", kind)
ASGI_STATUS_LINES = {}   # an ASGI status (int) -> its status line


# --- response headers --------------------------------------------------------------------

def splits_header(value):
    """Whether a header value holds CR, LF or NUL (which could split the response)."""
    if not cython.compiled:
        return b"\r" in value or b"\n" in value or b"\0" in value
    for c in value:
        if c == 13 or c == 10 or c == 0:
            return True
    return False


def content_length_of(value):
    """A Content-Length value as a number: ASCII digits (at most 18), with spaces or tabs around
    them; -1 for anything else."""
    if not cython.compiled:
        text = value.strip(" \t")
        return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1
    start = 0
    end = len(value)
    while start < end and (value[start] == " " or value[start] == "\t"):
        start += 1
    while end > start and (value[end - 1] == " " or value[end - 1] == "\t"):
        end -= 1
    if start == end or end - start > 18:
        return -1
    number = 0
    for i in range(start, end):
        c = value[i]
        if c < "0" or c > "9":
            return -1
        number = number * 10 + (cython.cast(cython.int, c) - 48)
    return number


@cython.boundscheck(False)   # (its memo tuples' items read in place)
@cython.wraparound(False)
def encode_headers(headers):
    """Validate a WSGI app's response headers and encode them.

    Returns (lines, content_length, flags): `lines` is a list of the latin-1 pieces of the header
    lines passed on (name and colon, value, CRLF, for each; send_headers joins them with the rest
    of the head), `content_length` is -1 when the app gave none, `flags` holds HAS_DATE, HAS_SERVER
    and WANTS_CLOSE. Hop-by-hop headers are the server's business: Connection: close is honoured
    (as WANTS_CLOSE) and the others are dropped. Raises ValueError or TypeError for anything that
    could split the response or is not latin-1.
    """
    global HEADERS_MEMO
    # the same pairs as the last list whose every pair was known (below): its whole answer again
    memo = HEADERS_MEMO
    pairs = memo[0]
    if type(headers) is list and len(headers) == len(pairs):
        index = 0
        for item in headers:
            if not _same_pair(item, pairs[index]):
                break
            index += 1
        else:
            return memo[1]
    parts = []
    clen = -1
    flags = 0
    index = -1
    all_known = True
    for item in headers:
        index += 1
        # an ordinary header or a Content-Length seen before, as the same (name, value) pair: its
        # line as it was encoded then (most apps send the same few pairs on every response, in the
        # same order: the pair last found at this position is compared first, without hashing)
        known = None
        if type(item) is tuple:
            if index < len(LINE_MEMO):
                memo = LINE_MEMO[index]
                if _same_pair(item, memo[0]):
                    known = memo[1]
            if known is None:
                try:
                    known = HEADER_LINES.get(item)
                except TypeError:   # an unhashable value: the checks below say what is wrong with it
                    pass
                if known is not None and index < 32:
                    if index < len(LINE_MEMO):
                        LINE_MEMO[index] = (item, known)
                    elif index == len(LINE_MEMO):
                        LINE_MEMO.append((item, known))
        if known is not None:
            length = known[1]
            if length >= 0:
                if clen >= 0:
                    if length != clen:
                        raise ValueError("invalid Content-Length %r" % (item[1],))
                    continue
                clen = length
            parts.append(known[0])
            continue
        all_known = False
        name, value = item
        entry = HEADER_NAMES.get(name)
        if entry is None:
            prefix, kind = _wsgi.learn_name(name)       # validates the name; ValueError otherwise
            entry = (prefix.encode("latin-1"), kind)
            if len(HEADER_NAMES) < 512:
                HEADER_NAMES[name] = entry
        kind = entry[1]
        if type(value) is not str:
            raise TypeError("header %s value must be str, not %s" % (name, type(value).__name__))
        if kind:
            if kind == H_CONTENT_LENGTH:
                length = content_length_of(value)
                if length < 0 or (clen >= 0 and length != clen):
                    raise ValueError("invalid Content-Length %r" % value)
                if clen >= 0:
                    continue
                clen = length
            elif kind == H_DATE:
                flags |= HAS_DATE
            elif kind == H_SERVER:
                flags |= HAS_SERVER
            elif kind == H_CONNECTION:
                if _wsgi.has_token(value, "close"):
                    flags |= WANTS_CLOSE
                continue
            else:
                continue
        data = cython.cast(str, value).encode("latin-1")      # UnicodeEncodeError (a ValueError) if not latin-1
        if splits_header(data):
            raise ValueError("header value contains CR, LF or NUL")
        line = entry[0] + data + b"\r\n"
        parts.append(line)
        if (kind == 0 or kind == H_CONTENT_LENGTH) and type(item) is tuple and len(HEADER_LINES) < 1024:
            HEADER_LINES[item] = (line, clen if kind == H_CONTENT_LENGTH else -1)
    if all_known and type(headers) is list and index < 32:
        encoded = (parts, clen, flags)      # (parts is only read, never changed: _head() joins it)
        HEADERS_MEMO = (tuple(headers), encoded)
        return encoded
    return parts, clen, flags


def _last_status(status, known):
    global STATUS_MEMO
    if type(status) is str:
        STATUS_MEMO = (status, known)
    return 0


@cython.boundscheck(False)   # (its memo tuples' items read in place)
@cython.wraparound(False)
def _head(status, lines, date, ours, framing, end, tail):
    """A response head joined (`_join_head`), with `tail` (a small body, or None) after it.

    An app that answers with the same status and the same header list (the one encode_headers
    remembers) gets, within the second its date line lasts, a head made of the very same pieces:
    then the last head is used again, the same object, when `tail` is the same object as then
    too, or copied from the last one with this tail after it. HEAD_MEMO holds the pieces (which
    it keeps alive, so that none of them can be another object at the same address later), the
    joined bytes, the head's length in them and the tail."""
    global HEAD_MEMO
    memo = HEAD_MEMO
    # (`ours` is not compared: whether it is there follows from the header lines, as the flags
    # encode_headers gave with that very list)
    if (lines is memo[1] and status is memo[0] and date is memo[2] and framing is memo[4]
            and end is memo[5]):
        if tail is memo[8]:
            return memo[6]
        return _with_tail(memo[6], memo[7], tail)
    joined = _join_head(status, lines, date, ours, framing, end, tail)
    if lines is HEADERS_MEMO[1][0]:
        HEAD_MEMO = (status, lines, date, ours, framing, end, joined,
                     len(joined) - (0 if tail is None else len(tail)), tail)
    return joined


@cython.boundscheck(False)   # (its memo tuples' items read in place)
@cython.wraparound(False)
def _framing(length):
    """The Content-Length line the server adds to a whole body the app gave no length for (for
    the same length as last time, the same line)."""
    global FRAMING_MEMO
    memo = FRAMING_MEMO
    if memo[0] == length:
        return memo[1]
    line = b"Content-Length: %d\r\n" % length
    FRAMING_MEMO = (length, line)
    return line


def _same_pair(item, pair):
    """`item` (from an app's headers) is `pair`, or a 2-tuple of str with the same texts."""
    return item is pair or (type(item) is tuple and len(item) == 2 and type(item[0]) is str
                            and type(item[1]) is str and _same_text(item[0], pair[0])
                            and _same_text(item[1], pair[1]))


def encode_asgi_headers(headers):
    """The same for an ASGI app's headers: an iterable of (name, value) byte strings. Returns
    (lines, content_length, flags) as encode_headers does; ValueError or TypeError otherwise."""
    parts = []
    clen = -1
    flags = 0
    for name, value in headers:
        entry = ASGI_HEADER_NAMES.get(name)
        if entry is None:
            if type(name) is not bytes:
                raise TypeError("header names must be bytes, not %s" % type(name).__name__)
            prefix, kind = _wsgi.learn_name(name.decode("latin-1"))   # validates the name
            entry = (prefix.encode("latin-1"), kind)
            if len(ASGI_HEADER_NAMES) < 512:
                ASGI_HEADER_NAMES[name] = entry
        kind = entry[1]
        if type(value) is not bytes:
            raise TypeError("header %r value must be bytes, not %s" % (name, type(value).__name__))
        if kind:
            if kind == H_CONTENT_LENGTH:
                text = value.strip()
                if not text.isdigit() or (clen >= 0 and int(text) != clen):
                    raise ValueError("invalid content-length %r" % value)
                if clen >= 0:
                    continue
                clen = int(text)
            elif kind == H_DATE:
                flags |= HAS_DATE
            elif kind == H_SERVER:
                flags |= HAS_SERVER
            elif kind == H_CONNECTION:
                if _wsgi.has_token(value.decode("latin-1"), "close"):
                    flags |= WANTS_CLOSE
                continue
            else:
                continue
        if splits_header(value):
            raise ValueError("header value contains CR, LF or NUL")
        parts.append(entry[0])
        parts.append(value)
        parts.append(b"\r\n")
    return parts, clen, flags


def asgi_status_line(status):
    """b"HTTP/1.1 404 Not Found\\r\\n" for 404 (the reason phrase from http.HTTPStatus)."""
    line = ASGI_STATUS_LINES.get(status)
    if line is not None:
        return line
    if type(status) is not int or not 100 <= status <= 999:
        raise ValueError("invalid status %r: expected an int from 100 to 999" % (status,))
    import http   # here, not at the top: the enum costs every worker memory, and only ASGI uses it
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    line = ("HTTP/1.1 %d %s\r\n" % (status, phrase)).encode("latin-1")
    if len(ASGI_STATUS_LINES) < 256:
        ASGI_STATUS_LINES[status] = line
    return line


# --- what an exchange needs of its connection ---------------------------------------------

@cython.cclass
class Channel:
    """The connection as an Exchange sees it (fields: _exchange_c.pxd): where its bytes go.
    HttpConnection is the implementation; each loop's Connection adds `_queue`.

    An exchange's response is produced by one thread at a time: the loop's, or (--threads > 1)
    the app thread its call runs on. That thread queues the bytes and, when the body is done, sets
    `done`; the loop sends them and does the accounting (HttpConnection._complete)."""

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        state = OPEN
        out_size = 0
        framed = False

    def _queue(self, data):
        """Send `data` after everything queued before it."""
        raise NotImplementedError

    def _frame_head(self, ex, known_length, tail):
        """`framed` (an HTTP/2 stream, _h2.py): Exchange._send_head as the stream frames it."""
        raise NotImplementedError

    def _wait_writable(self):
        """Wait until the queued output is below HIGH_WATER (a producer faster than its client);
        False when the client is gone or stopped reading."""
        raise NotImplementedError

    def _produced(self):
        """Output was queued from inside an app call: have the loop send it soon."""
        raise NotImplementedError

    def _body_taken(self):
        """An ASGI app took what was read of its body (reading may go on)."""
        raise NotImplementedError

    def _pause_reading(self):
        """Stop reading until _resume_reading() (an ASGI app 1 MiB behind its request body, or
        behind a WebSocket's messages)."""
        raise NotImplementedError

    def _resume_reading(self):
        raise NotImplementedError


# --- one request and its response --------------------------------------------------------

@cython.freelist(64)
@cython.cclass
class Exchange:
    """One request and the response to it (fields: _exchange_c.pxd)."""

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        head = http10 = complete = health = False
        body = status = result = iter = None
        early = file = asgi = env_fields = None
        headers = b""
        start = called = 0.0
        hflags = code = 0
        sent = 0
        headers_sent = chunked = no_body = False
        in_app = done = returned = False
        env_version = 0

    # --- WSGI ---

    def run(self, app):
        """Call the app and start on its response; what is left of the body is pulled by
        `next_chunk` (by the loop; with app threads, `stream`) or sent by the connection's sendfile."""
        conn = self.conn
        try:
            result = app(self.environ, conn.start_response)
        except Exception:
            self.failed()
            return 0
        self.result = result
        if conn.state == CLOSED:
            self.close_result()
            return 0
        try:
            if type(result) is list or type(result) is tuple:
                self.respond_sequence(result)
                return 0
            if type(result) is FileWrapper and self.start_sendfile(result):
                return 0
            self.iter = iter(result)
        except Exception:
            self.failed()
        return 0

    def respond_sequence(self, items):
        total = 0
        if self.status is None:
            raise RuntimeError("the application returned without calling start_response()")
        for item in items:
            if type(item) is not bytes:
                raise TypeError("response body items must be bytes, not %s" % type(item).__name__)
            total += len(item)
        if not self.headers_sent:
            if len(items) != 1 or total > SMALL_BODY:
                self._send_head(total, None)
            elif self._send_head(total, items[0]):
                self.finish()                # (the body went out in the head's buffer)
                return 0
        for item in items:
            self.send_body(item)
        self.finish()
        return 0

    def start_sendfile(self, wrapper):
        """Answer with a regular file through sendfile: True when the connection takes it over."""
        try:
            fd = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return False
        if not _stat.S_ISREG(st.st_mode) or self.status is None:
            return False
        return self.start_file(fd, offset, st.st_size - offset)

    def start_file(self, fd, offset, size):
        """The rest of the response is `size` bytes of the regular file `fd` from `offset`, sent by
        the connection itself (sendfile; pread and seal under TLS) once the head is out; the
        exchange is finished when they are out. False when the framing cannot carry a file (a
        chunked head already sent): then the caller copies it. (`result` is closed at the end: the
        WSGI FileWrapper, or the file the server opened for an ASGI pathsend.)"""
        if self.headers_sent:
            if self.clen < 0:
                return False
        else:
            self.send_headers(size)
        if self.no_body:
            self.finish()
            return True
        self.file = SendFile(fd, offset, max(0, min(size, self.clen - self.sent)))
        return True

    def stream(self):
        """--threads > 1: pull the whole streamed body on the app thread, each piece sent as it
        comes, and wait whenever the client is 1 MiB behind."""
        conn = self.conn
        while self.iter is not None:
            if conn.state == CLOSED:
                self.close_result()          # the client is gone: not pulled again, and closed
                self.done = True
                break
            self.next_chunk()
            if conn.out_size:
                conn._produced()
                if conn.out_size >= HIGH_WATER and not conn._wait_writable():
                    self.close_result()      # the client is gone or stopped reading
                    self.done = True
        return 0

    def next_chunk(self):
        """Take one piece of a streamed body from the app's iterable."""
        try:
            data = next(self.iter)
        except StopIteration:
            if self.status is None:    # an empty body, and start_response() never called: a 500
                try:
                    raise RuntimeError("the application returned without calling start_response()")
                except RuntimeError:
                    self.failed()
                return 0
            self.finish()
            return 0
        except Exception:
            self.failed()
            return 0
        try:
            if type(data) is not bytes:
                raise TypeError("response body items must be bytes, not %s" % type(data).__name__)
            if not self.headers_sent:
                if not data:
                    return 0
                if self.status is None:
                    raise RuntimeError("the application yielded a body before calling start_response()")
                self.send_headers(-1)
                if self.no_body:
                    self.finish()
                    return 0
            self.send_body(data)
        except Exception:
            self.failed()
        return 0

    @cython.boundscheck(False)   # (its memo tuples' items read in place)
    @cython.wraparound(False)
    def set_status(self, status, headers, exc_info):
        """WSGI's start_response (through HttpConnection.start_response)."""
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        memo = STATUS_MEMO
        if memo[1] is not None and (status is memo[0] or (type(status) is str and _same_text(status, memo[0]))):
            known = memo[1]
        else:
            known = STATUSES.get(status)
            if known is None:
                known = (status_line(status), int(status[:3]))     # status_line validates
                if len(STATUSES) < 256:
                    STATUSES[status] = known
            _last_status(status, known)
        lines, clen, flags = encode_headers(headers)
        self.status = known[0]
        self.code = known[1]
        self.headers = lines
        self.clen = clen
        self.hflags = flags
        return 0

    def set_asgi_status(self, status, headers):
        """ASGI's http.response.start: the status (an int) and the headers (byte pairs)."""
        lines, clen, flags = encode_asgi_headers(headers)
        self.status = asgi_status_line(status)
        self.code = status
        self.headers = lines
        self.clen = clen
        self.hflags = flags
        return 0

    def write(self, data):
        """WSGI's legacy write() (through HttpConnection.write)."""
        if self.status is None:
            raise RuntimeError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() takes bytes, not %s" % type(data).__name__)
        if self.conn.state == CLOSED:
            raise OSError("the client is gone")
        if not self.headers_sent:
            self.send_headers(-1)
        self.send_body(data)
        conn = self.conn
        if conn.out_size:
            conn._produced()
            if conn.out_size >= HIGH_WATER and not conn._wait_writable():
                raise OSError("the client is gone or stopped reading")
        return 0

    # --- framing ---

    def send_headers(self, known_length):
        """The status line and headers, with the framing the body needs: Content-Length when it
        is known, chunked on HTTP/1.1 otherwise, and a close on HTTP/1.0."""
        self._send_head(known_length, None)
        return 0

    def _send_head(self, known_length, tail):
        """send_headers(), and a small whole body (`tail`) in the same buffer when the response
        has a body and a Content-Length that allows all of it: True when `tail` went out."""
        conn = self.conn
        if conn.framed:
            return conn._frame_head(self, known_length, tail)     # (HTTP/2: _h2.py)
        server = conn.server
        code = self.code
        flags = self.hflags
        bodiless_status = code < 200 or code == 204 or code == 304
        lines = self.headers         # (the app's header lines, after the status line)
        self.headers = None
        date = None if flags & HAS_DATE else server.date_line
        ours = None if flags & HAS_SERVER else SERVER_HEADER
        framing = None
        if flags & WANTS_CLOSE or self.body_unsure() or server.stop_requested:   # (stopping implies it)
            self.keep = False   # (an unread 100-continue body cannot be skipped; a draining worker closes)
        self.no_body = self.head or bodiless_status
        if self.clen < 0 and not bodiless_status:
            if known_length >= 0:
                self.clen = known_length
                framing = _framing(known_length)
            elif self.head:
                pass
            elif not self.http10:
                self.chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep = False  # HTTP/1.0 without a length: the close ends the body
        if not self.keep:
            end = b"Connection: close\r\n\r\n"
        elif self.http10:
            end = b"Connection: keep-alive\r\n\r\n"
        else:
            end = b"\r\n"
        if tail is not None:
            if self.no_body or self.clen < len(tail):   # (a short Content-Length: send_body cuts it)
                tail = None
            else:
                self.sent += len(tail)
        conn._queue(_head(self.status, lines, date, ours, framing, end, tail))
        self.headers_sent = True
        return tail is not None

    def send_body(self, data):
        size = len(data)
        if not size or self.no_body:
            return 0
        conn = self.conn
        if self.clen >= 0:
            room = self.clen - self.sent
            if size > room:
                size = room   # never more than the announced length
                if not size:
                    return 0
                data = data[:size]
            self.sent += size
            conn._queue(data)
        elif self.chunked:
            self.sent += size
            if size < SMALL_CHUNK:
                conn._queue(b"%x\r\n%b\r\n" % (size, data))
            else:
                conn._queue(b"%x\r\n" % size)
                conn._queue(data)
                conn._queue(b"\r\n")
        else:
            self.sent += size
            conn._queue(data)
        return 0

    def finish(self):
        """The app's body is complete: end the framing, close the iterable; then the loop accounts
        for it (`done`)."""
        conn = self.conn
        if not self.headers_sent:
            self.send_headers(0)
        if self.chunked:
            conn._queue(b"0\r\n\r\n")
        elif self.clen >= 0 and self.sent < self.clen and not self.no_body:
            self.keep = False   # short body: closing is the only way not to desync the client
        if self.body_unsure():
            self.keep = False   # the rest of the body was never read
        self.discard_body()
        self.close_result()
        self.done = True
        return 0

    def failed(self):
        """The app raised: logged with its traceback, then `abort()`. (Not when its request's body
        was refused while it read it: that refusal is the answer, and the client's doing.)"""
        if self.early is None or not self.early.refusal:
            log_app_error(self.environ)
        self.abort()
        return 0

    def abort(self):
        """The app failed: a 500 if nothing went out yet, otherwise a cut connection."""
        conn = self.conn
        self.close_result()
        self.file = None
        self.discard_body()
        if self.headers_sent:
            # Part of the response is out: end the connection without a clean end of body,
            # so the client sees that it failed.
            self.keep = False
        elif conn.framed:     # an HTTP/2 stream: the refusal of its body, or a 500, as its own response
            code = self.early.refusal if self.early is not None and self.early.refusal else 500
            body = FAILED_BODY if code == 500 else b""
            self.code = code
            self.headers = [b"content-type: text/plain; charset=utf-8\r\n"]
            self.hflags, self.clen, self.sent = 0, -1, 0
            conn._frame_head(self, len(body), body)
        elif self.early is not None and self.early.refusal:
            # its body was refused while the app read it (too slow, too large, malformed): that
            # status, and the connection ends
            self.keep = False
            conn._queue(error_response(self.early.refusal, conn.server.date_line))
            self.headers_sent = True
            self.code = self.early.refusal
        else:
            self.keep = self.keep and not self.body_unsure()
            conn._queue(simple_response("500 Internal Server Error", FAILED_BODY, not self.keep,
                                        conn.server.date_line))
            self.headers_sent = True
            self.code = 500
            self.sent = len(FAILED_BODY)
        self.done = True
        return 0

    def body_unsure(self):
        """The request's body is not all read, and the client may not send the rest: a WSGI
        100-continue body (the app may never read it), or an ASGI one whose 100 Continue was not
        sent. (The rest of an ASGI body that is on its way is read and dropped instead.)"""
        if self.early is None or self.complete:
            return False
        return self.asgi is None or self.asgi.cycle is None or not self.early.sent_continue

    def close_result(self):
        """Call the iterable's close(), as PEP 3333 asks, whatever happened to the response."""
        result = self.result
        self.result = None
        self.iter = None
        # (a plain list or tuple has no close(): the common answer, asked for it without a lookup)
        if result is not None and type(result) is not list and type(result) is not tuple and hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                log_app_error(self.environ, "error closing the response iterable")
        return 0

    def discard_body(self):
        """Let go of the request body (a spilled one's temporary file is closed; the rest of an
        ASGI body is dropped as it comes)."""
        body = self.body
        if body is not None and type(body) is not LazyInput:
            body.discard()
        return 0


@cython.final
@cython.cclass
class SendFile:
    """A response body sent from a regular file by the connection itself, once the head is out
    (sendfile, or pread and seal under TLS; Exchange.start_sendfile makes one): it owns the file's
    descriptor (open while the app's FileWrapper is, until close_result), the offset the rest
    starts at and how many bytes are left."""

    def __init__(self, fd, offset, left):
        self.fd = fd
        self.offset = offset
        self.left = left


@cython.final
@cython.cclass
class EarlyBody:
    """A request whose app is called at its head, before its body is in (WSGI with Expect:
    100-continue, or ASGI with a body): the app takes the body as it comes. It owns what that
    brings: whether the client needs no 100 Continue or has it (`sent_continue`), and the status
    its body was refused with while the app read it (`refusal`: then that status answers an app
    failure, Exchange.abort)."""

    def __init__(self, sent_continue):
        self.sent_continue = sent_continue
        self.refusal = 0


@cython.final
@cython.cclass
class AsgiRequest:
    """The ASGI side of an exchange: its scope, built with the head (HttpConnection), and its call,
    once the app is called: an _asgi.Cycle, or a _websocket.WebSocket session (None before)."""

    def __init__(self, scope):
        self.scope = scope
        self.cycle = None


def new_exchange(conn, environ):
    ex = Exchange.__new__(Exchange)
    ex.conn = conn
    ex.environ = environ
    ex.keep_alive = True
    ex.keep = True
    ex.clen = -1
    return ex


