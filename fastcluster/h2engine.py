"""The HTTP/2 engine over the pure-Python `h2` package: one server-side session per client connection, bytes
in and out, to the engine API that the native engine (`_nghttp2.pyx`, over libnghttp2) implements too.

Owns: `H2Engine` (which engine runs: h2codes.engine_class); the framing rules h2 leaves to its user
or gets wrong for a server: the input cut at frame boundaries so that each frame's callbacks run before the
next frame is read, and a connection error does not lose the events of the frames before it; the checks on
a frame's header that h2 makes too late or not at all (a frame over our SETTINGS_MAX_FRAME_SIZE is refused
from its header, not after buffering it; a header block over max_header_list_size across CONTINUATIONs;
PING and SETTINGS floods); the GOAWAY frames, both ways (h2 closes its whole state machine on either, which
would leave the streams in flight unanswered); the request header checks of RFC 9113 8.2 and 8.3 as stream
errors, and the header list size counted while decoding (`_Decoder`: an HPACK bomb is refused with a 431
and the dynamic table stays in step); the response headers as HTTP/2 sends them (`_fields`); the outgoing
body buffers, framed by `pending()` as the client's windows allow, round robin across streams; the
bookkeeping of which streams the handler knows and the callbacks that tell it (at most one h2_reset, exactly
one h2_closed).

Does not own: the frames, HPACK, the stream and connection state machines and the flow-control windows
(h2, hpack and hyperframe do); what a request means or how it is answered (the protocol layer, `_h2.py`,
calls the methods below from the handler's callbacks); sockets, deadlines and the limits on what the
protocol layer queues (the loop and `_h2.py`).
"""

import logging
import re

try:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived, PingAckReceived, RequestReceived, StreamReset, TrailersReceived
    from h2.exceptions import DenialOfServiceError, ProtocolError
    from h2.settings import SettingCodes, Settings
    from hpack import Decoder
    from hpack.exceptions import HPACKDecodingError, HPACKError, OversizedHeaderListError
    from hyperframe.frame import GoAwayFrame, SettingsFrame
except ImportError as exc:   # the h2 package is optional: the compiled loop may have libnghttp2 instead
    _MISSING = exc
    Decoder = ProtocolError = object
else:
    _MISSING = None

# error codes (RFC 9113 section 7) and the preface: one source for both engines
from .h2codes import (  # noqa: F401  (re-exported: the engine API's names)
    NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM,
    INADEQUATE_SECURITY, HTTP_1_1_REQUIRED, PREFACE)

log = logging.getLogger("fastcluster")

# {code: name}, for messages
ENGINE_ERRORS = dict(enumerate((
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
    "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")))

PING_DATA = b"fc-drain"     # the opaque data of our own PING (ping())
MAX_OUTBOUND_ACKS = 1000   # PING and SETTINGS acks queued while the client does not read: then ENHANCE_YOUR_CALM
LAST_ID = 2**31 - 1        # the highest stream id: goaway_notice's last id, and "no goaway() yet"
DEFAULT_WINDOW = 65535     # every window's size before SETTINGS (RFC 9113 6.9.2)
WINDOW = 512               # bytes of the header block handed to hpack for one literal field (see _Decoder._literal)

# frame types and flags (RFC 9113 6)
DATA, HEADERS, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 4, 6, 7, 9
ACK = 0x1
END_HEADERS = 0x4

PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                 b"upgrade"))
BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")         # a field name is a lowercase token
BAD_VALUE = re.compile(rb"[\0\r\n]|\A[ \t]|[ \t]\Z")           # RFC 9113 8.2.1
BAD_CHARS = re.compile(rb"[\0\r\n]")
_names = set()             # field names already found to be lowercase tokens (bounded: see _good_name)


def _good_name(name):
    if name in _names:
        return True
    if not name or BAD_NAME.search(name):
        return False
    if len(_names) < 4096:
        _names.add(name)
    return True


def _malformed(headers):
    """True when a request's header list is malformed (RFC 9113 8.2 and 8.3): an uppercase or empty name, a
    value with NUL, CR, LF or surrounding whitespace, a connection-specific field, TE other than "trailers",
    a pseudo-header unknown, repeated or after a regular field, a missing :method (or :scheme and :path, or
    :authority for CONNECT), a :path not "/..." (or "*" for OPTIONS), a Content-Length that is not one
    decimal number. h2 makes most of these checks too, but as connection errors: a malformed request is a
    stream error."""
    pseudo = {}
    regular = False
    length = None
    for name, value in headers:
        if BAD_VALUE.search(value):
            return True
        if name[:1] == b":":
            if regular or name in pseudo or name not in PSEUDO:
                return True
            pseudo[name] = value
            continue
        regular = True
        if not _good_name(name) or name in CONNECTION_SPECIFIC:
            return True
        if name == b"te":
            if value != b"trailers":
                return True
        elif name == b"content-length":
            if not value.isdigit() or len(value) > 18 or length not in (None, int(value)):
                return True
            length = int(value)
    method = pseudo.get(b":method")
    if not method:
        return True
    if method == b"CONNECT":
        return b":scheme" in pseudo or b":path" in pseudo or b":authority" not in pseudo
    path = pseudo.get(b":path", b"")
    return b":scheme" not in pseudo or not (path[:1] == b"/" or path == b"*" and method == b"OPTIONS")


def _fields(headers, fields):
    """`fields` with the response's (name, value) pairs appended as HTTP/2 sends them: names lowercased, the
    connection-specific ones dropped, values without surrounding whitespace. ValueError for a pair that no
    client would accept, raised before anything is encoded: h2's own checks run while its HPACK encoder
    works, and a failure halfway would leave the encoder's table ahead of the client's."""
    for name, value in headers:
        name = name.lower()
        if name in CONNECTION_SPECIFIC:
            continue
        if not _good_name(name):
            raise ValueError("HTTP/2 response header name %r is not a token" % (name,))
        value = value.strip(b" \t")
        if BAD_CHARS.search(value):
            raise ValueError("HTTP/2 response header %r has NUL, CR or LF in its value" % (name,))
        fields.append((name, value))
    return fields


if _MISSING is None:
    class _CompressionError(ProtocolError):
        """An HPACK decoding error: h2 would report it as PROTOCOL_ERROR, RFC 9113 4.3 says COMPRESSION_ERROR."""

        error_code = COMPRESSION_ERROR

    class _Connection(H2Connection):
        """h2's connection, its count of open client streams made cheap. h2 counts them for each new stream,
        walking every stream it holds (and sweeping the closed ones out as it goes), against a limit it is
        not given here (the engine refuses the streams over max_concurrent_streams itself): a cost that grows
        with the streams open. The walk now runs when the streams held have doubled since the last one, so
        the sweep still keeps them bounded; the count h2 sees is 0."""

        _sweep_at = 64

        @property
        def open_inbound_streams(self):
            if len(self.streams) >= self._sweep_at:
                H2Connection.open_inbound_streams.fget(self)
                self._sweep_at = max(64, 2 * len(self.streams))
            return 0

    _CONFIG = H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=False,
                              normalize_inbound_headers=False, validate_outbound_headers=False,
                              normalize_outbound_headers=False)


class _Decoder(Decoder):
    """h2's HPACK decoder, with the engine's checks on what it returns to h2.

    A header list over max_header_list_size is decoded to its end all the same, keeping nothing past the
    limit (the dynamic table must see every entry it adds, or the next block would decode wrong), and comes
    out as an empty list with `verdict` 431; a malformed request's list comes out empty with `verdict`
    PROTOCOL_ERROR (h2 would otherwise end the connection over its Content-Length or its :status); trailers
    come out empty (the engine drops them). The engine reads `verdict` when h2 reports the request: it cuts
    the input so that one call to h2 decodes at most one block.

    The counting walks the block with hpack's own per-field methods; an hpack without them falls back to its
    plain decode, whose size limit raises (a connection error, ENHANCE_YOUR_CALM, instead of the 431)."""

    def __init__(self, max_header_list_size):
        super().__init__(max_header_list_size)
        self.trailers = False   # set by the engine before each block: it ends a stream that has its request
        self.verdict = 0

    def decode(self, data, raw=False):
        try:
            headers = self._inflate(data)
        except OversizedHeaderListError as exc:   # hpack's plain decode (the fallback) stopped halfway
            raise DenialOfServiceError("HPACK: %s" % (exc,)) from exc
        except (HPACKError, IndexError, TypeError, ValueError) as exc:
            raise _CompressionError("HPACK: %s" % (exc,)) from exc
        self.verdict = 431 if headers is None else 0
        if headers is None or self.trailers:
            return []
        if _malformed(headers):
            self.verdict = PROTOCOL_ERROR
            return []
        return headers

    def _inflate(self, data):
        """The block's header list, or None when it is over max_header_list_size."""
        view = memoryview(data)
        end = len(view)
        pos = size = 0
        limit = self.max_header_list_size
        headers = []
        while pos < end:
            first = view[pos]
            if first & 0x80:
                header, used = self._decode_indexed(view[pos:])
            elif first & 0x40:
                header, used = self._literal(view, pos, self._decode_literal_index)
            elif first & 0x20:
                if size:
                    raise HPACKDecodingError("a table size update after a field")
                header, used = None, self._update_encoding_context(view[pos:])
            else:
                header, used = self._literal(view, pos, self._decode_literal_no_index)
            pos += used
            if header is not None:
                size += len(header[0]) + len(header[1]) + 32
                if size <= limit:
                    headers.append(header)
                elif headers:
                    headers = []
        self._assert_valid_table_size()
        return headers if size <= limit else None

    @staticmethod
    def _literal(view, pos, decode):
        # hpack copies the rest of the block for each literal field: a window keeps a block of many small
        # fields linear. A field longer than the window is decoded again from the whole rest.
        if pos + WINDOW < len(view):
            try:
                return decode(view[pos:pos + WINDOW])
            except (HPACKDecodingError, IndexError):
                pass
        return decode(view[pos:])

    if not all(hasattr(Decoder, name) for name in ("_decode_indexed", "_decode_literal_index",
                                                   "_decode_literal_no_index", "_update_encoding_context",
                                                   "_assert_valid_table_size")):
        def _inflate(self, data):
            return Decoder.decode(self, data, raw=True)


class _Stream:
    """A stream the handler was told of (h2_request or h2_refused), until it is closed."""

    __slots__ = ("chunks", "offset", "queued", "end", "trailers", "responded", "remote_done", "local_done",
                 "refused")

    def __init__(self, remote_done, refused):
        self.chunks = []            # body bytes from send_data not framed yet; chunks[0] from `offset`
        self.offset = 0
        self.queued = 0
        self.end = False            # the stream ends once the chunks are framed (send_data end, send_trailers)
        self.trailers = None        # the trailers' fields, sent after the chunks
        self.responded = False      # the final response headers went to h2: the body may follow
        self.remote_done = remote_done   # the client's END_STREAM came
        self.local_done = False          # ours went out
        self.refused = refused           # h2_refused: its body is dropped, no h2_data or h2_end


class H2Engine:
    """One server-side HTTP/2 session over h2, the engine API shared with `_nghttp2.Engine`:

    receive(data) reads the client's bytes and calls the handler: h2_request(sid, headers, end_stream),
    h2_refused(sid, 431) for a header list over max_header_list_size, h2_data(sid, data), h2_end(sid) (not
    for END_STREAM on the request's HEADERS: end_stream says it), h2_reset(sid, code), h2_closed(sid).
    respond / send_data / send_trailers / reset / consumed / goaway / goaway_notice queue the answer;
    pending(limit) hands out the bytes to send. queued(sid), want_write, closing, open_streams and
    last_stream_id tell the protocol layer where the session is; close() ends it without callbacks.
    A stream told with h2_refused gets h2_reset and h2_closed as any other, but no h2_data or h2_end."""

    def __init__(self, handler, max_concurrent_streams=100, initial_window_size=DEFAULT_WINDOW,
                 max_frame_size=16384, max_header_list_size=65536):
        if _MISSING is not None:
            raise ImportError("the HTTP/2 engine needs the h2 package (pip install h2)") from _MISSING
        self.handler = handler
        self._max_streams = max_concurrent_streams
        self._max_frame = max_frame_size
        self._max_list = max_header_list_size
        conn = self._conn = _Connection(config=_CONFIG)
        conn.decoder = self._decoder = _Decoder(max_header_list_size)
        # h2 enforces its local settings from the start, but would refuse a stream over the limit with a
        # connection error: it is told no limit, the engine refuses the extra streams itself (REFUSED_STREAM).
        # The window applies once the client acknowledges (h2's pending settings), as the client may have
        # sent body bytes against the default window before it read ours.
        local = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: LAST_ID, SettingCodes.MAX_FRAME_SIZE: max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size})
        if initial_window_size != DEFAULT_WINDOW:
            local[SettingCodes.INITIAL_WINDOW_SIZE] = initial_window_size
        conn.local_settings = local
        conn.max_inbound_frame_size = max_frame_size
        self._out = [SettingsFrame(0, settings={
            SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            SettingCodes.INITIAL_WINDOW_SIZE: initial_window_size, SettingCodes.MAX_FRAME_SIZE: max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size, SettingCodes.ENABLE_PUSH: 0}).serialize()]
        window = min(max_concurrent_streams * initial_window_size, LAST_ID)
        if window > DEFAULT_WINDOW:   # each stream is bounded by its own window, not by the others' bodies
            conn.increment_flow_control_window(window - DEFAULT_WINDOW)
        self._streams = {}       # stream id -> _Stream, for the streams the handler knows
        self._ready = {}         # stream id -> _Stream with body, trailers or its end still to send
        self._later = []         # (stream id, reset code or None): h2_reset / h2_closed for pending() to call
        # the input, cut at frame boundaries (receive)
        self._preface = len(PREFACE)   # bytes of the client's preface still to check
        self._left = len(PREFACE)      # bytes of the current frame (at first the preface) still to come
        self._skip = False             # the current frame is the engine's (a GOAWAY): not for h2
        self._carry = b""              # the start of a frame header cut by the end of a chunk
        self._block = 0                # the stream of a header block still in CONTINUATIONs, 0 for none
        self._block_size = 0
        self._acks = 0                 # PINGs and SETTINGS received since pending() was last called
        self._goaway_last = LAST_ID    # goaway()'s last stream id: streams above it are refused
        self._peer_gone = False        # the client sent GOAWAY
        self._dead = False             # a connection error: GOAWAY queued, input ignored
        self._closed = False           # close(): nothing at all any more

    # --- properties ---

    @property
    def last_stream_id(self):
        return self._conn.highest_inbound_stream_id

    @property
    def open_streams(self):
        return len(self._streams)

    @property
    def closing(self):
        return self._dead or (not self._streams and (self._goaway_last < LAST_ID or self._peer_gone))

    @property
    def want_write(self):
        if self._closed:
            return False
        self._drain()
        if self._out or self._later:
            return True
        if self._dead:
            return False
        conn = self._conn
        for sid, st in self._ready.items():
            if not st.queued:
                return True
            try:
                if conn.local_flow_control_window(sid) > 0:
                    return True
            except ProtocolError:
                return True    # pending() drops it
        return False

    # --- input ---

    def receive(self, data):
        if self._dead or self.closing:
            return
        if self._carry:
            data = self._carry + data
            self._carry = b""
        view = memoryview(data)
        end = len(view)
        if self._preface:
            take = min(self._preface, end)
            done = len(PREFACE) - self._preface
            if view[:take] != PREFACE[done:done + take]:
                self._fail(PROTOCOL_ERROR)
                return
            self._preface -= take
        pos = start = 0
        while pos < end:
            left = self._left
            if left:
                if left > end - pos:   # the chunk ends inside this frame: h2 keeps its first part
                    self._left = left - (end - pos)
                    pos = end
                    break
                pos += left
                self._left = 0
                if self._skip:
                    self._skip = False
                elif not self._feed(view[start:pos]):
                    return
                start = pos
            elif end - pos < 9:
                self._carry = bytes(view[pos:])
                end = pos
            elif not self._frame_header(view, pos):
                return
        if start < end and not self._skip:
            self._feed(view[start:end])

    def _frame_header(self, view, pos):
        """Checks a frame's header before h2 sees the frame; False after a connection error."""
        length = view[pos] << 16 | view[pos + 1] << 8 | view[pos + 2]
        kind, flags = view[pos + 3], view[pos + 4]
        sid = int.from_bytes(view[pos + 5:pos + 9], "big") & LAST_ID
        self._left = 9 + length
        if length > self._max_frame:
            return self._fail(FRAME_SIZE_ERROR)
        if self._block:                      # only the block's CONTINUATIONs may come (else h2 says so)
            if kind == CONTINUATION and sid == self._block:
                self._block_size += length
                if self._block_size > self._max_list:
                    return self._fail(ENHANCE_YOUR_CALM)
                if flags & END_HEADERS:
                    self._block = 0
            elif kind == GOAWAY:
                return self._fail(PROTOCOL_ERROR)
        elif kind == HEADERS:
            self._decoder.trailers = sid in self._conn.streams
            if not flags & END_HEADERS:
                self._block, self._block_size = sid, length
        elif kind == GOAWAY:   # h2 would close its state machine: the streams in flight go on
            if sid:
                return self._fail(PROTOCOL_ERROR)
            if length < 8:
                return self._fail(FRAME_SIZE_ERROR)
            self._skip = self._peer_gone = True
        elif kind in (SETTINGS, PING) and not flags & ACK:
            self._acks += 1
            if self._acks > MAX_OUTBOUND_ACKS:
                return self._fail(ENHANCE_YOUR_CALM)
        return True

    def _feed(self, view):
        """h2 reads `view` (at most one whole frame); its events call the handler. False once dead."""
        try:
            events = self._conn.receive_data(view)
        except ProtocolError:   # h2 queued the GOAWAY with the error's code
            self._die()
            return False
        except Exception:
            log.exception("HTTP/2: the h2 package failed on a client's frame")
            return self._fail(INTERNAL_ERROR)
        for event in events:
            on = self._ON.get(type(event))
            if on is not None:
                on(self, event)
                if self._dead:
                    return False
        return True

    def _on_request(self, event):
        sid = event.stream_id
        verdict = self._decoder.verdict
        if verdict == PROTOCOL_ERROR or sid > self._goaway_last or len(self._streams) >= self._max_streams:
            self._conn.reset_stream(sid, PROTOCOL_ERROR if verdict == PROTOCOL_ERROR else REFUSED_STREAM)
            return
        ended = event.stream_ended is not None
        self._streams[sid] = st = _Stream(ended, verdict == 431)
        if st.refused:
            self._call("h2_refused", sid, 431)
        else:
            self._call("h2_request", sid, event.headers, ended)

    def _on_data(self, event):
        sid, data, size = event.stream_id, event.data, event.flow_controlled_length
        st = self._streams.get(sid)
        if st is None or st.refused:    # nobody reads it: the windows reopen now
            if size:
                self._conn.acknowledge_received_data(size, sid)
        else:
            if size > len(data):        # the padding: the app consumes what it reads
                self._conn.acknowledge_received_data(size - len(data), sid)
            if data and not self._call("h2_data", sid, data):
                return
        if event.stream_ended is not None and st is not None and self._streams.get(sid) is st:
            self._remote_end(sid, st)

    def _on_trailers(self, event):
        st = self._streams.get(event.stream_id)
        if st is not None:
            self._remote_end(event.stream_id, st)

    def _remote_end(self, sid, st):
        st.remote_done = True
        if not st.refused and not self._call("h2_end", sid):
            return
        if st.local_done and self._streams.get(sid) is st:
            del self._streams[sid]
            self._notify("h2_closed", sid)

    def _on_reset(self, event):
        sid = event.stream_id
        self._ready.pop(sid, None)
        if self._streams.pop(sid, None) is not None:
            self._notify("h2_reset", sid, int(event.error_code))
            self._notify("h2_closed", sid)

    def _call(self, name, sid, *args):
        """handler.<name>(sid, *args); if it raises: logged, the stream reset (INTERNAL_ERROR). False then."""
        if self._closed:
            return False
        try:
            getattr(self.handler, name)(sid, *args)
            return True
        except Exception:
            log.exception("HTTP/2 stream %d: %s failed", sid, name)
        st = self._streams.pop(sid, None)
        self._ready.pop(sid, None)
        if st is not None and not self._dead:
            self._reset_h2(sid, INTERNAL_ERROR)
            self._notify("h2_reset", sid, INTERNAL_ERROR)
            self._notify("h2_closed", sid)
        return False

    def _notify(self, name, sid, *args):
        """handler.<name>(sid, *args) for a stream already gone: an exception is logged, nothing more."""
        if self._closed:
            return
        try:
            getattr(self.handler, name)(sid, *args)
        except Exception:
            log.exception("HTTP/2 stream %d: %s failed", sid, name)

    # --- output ---

    def respond(self, stream_id, status, headers, end_stream):
        st = self._streams.get(stream_id)
        if st is None or st.local_done or self._dead:
            return
        if st.responded:   # h2 would take them for trailers, and fail once its encoder has them
            raise ValueError("HTTP/2 stream %d: a second response" % stream_id)
        fields = _fields(headers, [(b":status", b"%d" % status)])
        try:
            self._conn.send_headers(stream_id, fields, end_stream=end_stream)
        except ProtocolError:   # refused before encoding: e.g. END_STREAM on a 1xx
            log.exception("HTTP/2 stream %d: response headers refused", stream_id)
            return
        if status >= 200:
            st.responded = True
            if end_stream:
                self._local_end(stream_id, st)
            elif st.queued or st.end:      # the body given before the headers
                self._ready[stream_id] = st

    def send_data(self, stream_id, data, end_stream):
        st = self._streams.get(stream_id)
        if st is None or st.end or st.local_done or self._dead:
            return
        if data:
            st.chunks.append(data if type(data) is bytes else bytes(data))
            st.queued += len(data)
        if end_stream:
            st.end = True
        if st.responded and (data or end_stream):
            self._ready[stream_id] = st

    def send_trailers(self, stream_id, headers):
        st = self._streams.get(stream_id)
        if st is None or st.end or st.local_done or self._dead:
            return
        st.trailers = _fields(headers, [])
        st.end = True
        if st.responded:
            self._ready[stream_id] = st

    def reset(self, stream_id, error_code):
        st = self._streams.pop(stream_id, None)
        self._ready.pop(stream_id, None)
        if st is not None and not self._dead:
            self._reset_h2(stream_id, error_code)
            self._later.append((stream_id, None))

    def _reset_h2(self, sid, code):
        try:
            self._conn.reset_stream(sid, code)
        except ProtocolError:   # closed in h2 already
            pass

    def queued(self, stream_id):
        st = self._streams.get(stream_id)
        return st.queued if st is not None else 0

    def consumed(self, stream_id, n, starved=False):
        """The app took `n` body bytes of `stream_id`: its window and the connection's reopen by `n`.
        `starved` (the app has read all it was sent) lets an engine tell the peer sooner than its
        usual rule; the h2 package keeps its own rule (an update at half a window, or sooner once
        the peer has used the whole window)."""
        if n <= 0 or self._dead:
            return
        conn = self._conn
        if stream_id in conn.streams or 0 < stream_id <= conn.highest_inbound_stream_id:
            conn.acknowledge_received_data(n, stream_id)   # a closed stream's: the connection window only

    def goaway(self, last_stream_id=-1, error_code=0):
        if self._dead:
            return
        if last_stream_id < 0:
            last_stream_id = self._conn.highest_inbound_stream_id
        self._goaway_last = min(self._goaway_last, last_stream_id)
        self._queue_goaway(last_stream_id, error_code)
        if error_code:      # a connection error the protocol layer found: the session ends here
            self._die()
            return
        for sid in [sid for sid in self._streams if sid > last_stream_id]:   # not processed: the client retries
            self._streams.pop(sid)
            self._ready.pop(sid, None)
            self._reset_h2(sid, REFUSED_STREAM)
            self._later.append((sid, REFUSED_STREAM))

    def goaway_notice(self):
        if not self._dead:
            self._queue_goaway(LAST_ID, NO_ERROR)

    def ping(self):
        """A PING; its ACK calls handler.h2_ping_ack() (after a GOAWAY notice: every stream the client
        opened before it saw the notice has arrived by then)."""
        if not self._dead:
            self._conn.ping(PING_DATA)

    def _on_ping_ack(self, event):
        if event.ping_data == PING_DATA and not self._closed:
            try:
                self.handler.h2_ping_ack()
            except Exception:
                log.exception("HTTP/2: h2_ping_ack failed")

    def pending(self, limit=65536):
        if self._closed:
            return b""
        self._drain()
        if self._ready and not self._dead:
            self._frame(limit)
            self._drain()
        out = self._out
        data = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        out.clear()
        self._acks = 0
        if self._later:
            later, self._later = self._later, []
            for sid, code in later:
                if code is not None:
                    self._notify("h2_reset", sid, code)
                self._notify("h2_closed", sid)
        return data

    def _frame(self, limit):
        """DATA frames (and ends, trailers) into the output, round robin a frame per stream, as the windows
        allow, until the output holds `limit` bytes."""
        conn, ready, out = self._conn, self._ready, self._out
        size = sum(map(len, out))
        moved = True
        while moved and ready and size < limit:
            moved = False
            for sid in list(ready):
                st = ready[sid]
                try:
                    made = self._frame_one(conn, sid, st)
                except ProtocolError:   # h2 refused the stream's frame: not expected, the stream stops here
                    log.exception("HTTP/2 stream %d: h2 refused its frame", sid)
                    self.reset(sid, INTERNAL_ERROR)
                    self._later[-1:] = [(sid, INTERNAL_ERROR)]   # h2_reset too: the stream failed here
                    continue
                if made:
                    moved = True
                    if ready.pop(sid, None) is not None:   # to the back of the queue, for the next call too
                        ready[sid] = st
                    data = conn.data_to_send()
                    out.append(data)
                    size += len(data)
                    if size >= limit:
                        break

    def _frame_one(self, conn, sid, st):
        """One frame of `st` to h2: True if one was made."""
        if st.queued:
            try:
                n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, st.queued)
            except ProtocolError:   # the stream is gone in h2
                del self._ready[sid]
                return False
            if n <= 0:
                return False
            last = st.end and n == st.queued and st.trailers is None
            conn.send_data(sid, self._take(st, n), end_stream=last)
            if last:
                self._local_end(sid, st)
            elif not st.queued and not st.end:
                del self._ready[sid]
        elif st.trailers is not None:
            conn.send_headers(sid, st.trailers, end_stream=True)
            self._local_end(sid, st)
        elif st.end:
            conn.end_stream(sid)
            self._local_end(sid, st)
        else:
            del self._ready[sid]
            return False
        return True

    @staticmethod
    def _take(st, n):
        """The next n body bytes of `st`."""
        chunks, parts = st.chunks, []
        st.queued -= n
        while n:
            first, offset = chunks[0], st.offset
            rest = len(first) - offset
            if rest <= n:
                parts.append(first[offset:] if offset else first)
                del chunks[0]
                st.offset = 0
                n -= rest
            else:
                parts.append(first[offset:offset + n])
                st.offset = offset + n
                n = 0
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _local_end(self, sid, st):
        """Our END_STREAM is queued: the stream closes if the client's came too (h2_closed from pending()).
        A refused request's body still coming is stopped: RST_STREAM NO_ERROR after the response (RFC 9113
        8.1), the body it would have been is dropped anyway."""
        st.local_done = True
        self._ready.pop(sid, None)
        if (st.remote_done or st.refused) and self._streams.get(sid) is st:
            del self._streams[sid]
            if not st.remote_done:
                self._reset_h2(sid, NO_ERROR)
            self._later.append((sid, None))

    def _drain(self):
        data = self._conn.data_to_send()
        if data:
            self._out.append(data)

    def _queue_goaway(self, last_stream_id, error_code):
        self._drain()
        self._out.append(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=error_code).serialize())

    def _fail(self, error_code):
        """A connection error the engine found: GOAWAY, dead. Returns False (for receive's helpers)."""
        self._queue_goaway(self._conn.highest_inbound_stream_id, error_code)
        self._die()
        return False

    def _die(self):
        self._drain()
        self._dead = True
        self._streams.clear()
        self._ready.clear()
        self._later.clear()

    def close(self):
        self._closed = self._dead = True
        self.handler = None
        self._streams.clear()
        self._ready.clear()
        self._later.clear()
        self._out.clear()

    if _MISSING is None:
        _ON = {RequestReceived: _on_request, DataReceived: _on_data, TrailersReceived: _on_trailers,
               StreamReset: _on_reset, PingAckReceived: _on_ping_ack}


def check_available():
    """H2Engine's h2 package is there (h2codes.engine_class asks before it picks this engine)."""
    if _MISSING is not None:
        raise ImportError("HTTP/2 needs the compiled build's libnghttp2 or the h2 package (pip install h2)")
