# cython: language_level=3
"""HTTP/2 for the compiled loop: one libnghttp2 server session per client connection.

`Engine` implements the engine API of the HTTP/2 protocol layer (the same API as
`fastcluster.h2engine.H2Engine`, which uses the pure-Python `h2` package): bytes in with
`receive()`, bytes out with `pending()`, the request events as calls on a handler object
(h2_request, h2_refused, h2_data, h2_end, h2_reset, h2_closed), the response through `respond()`,
`send_data()`, `send_trailers()`. No I/O here: the loop reads and writes the socket.

What the engine adds to nghttp2:
  - flow control is the protocol layer's: windows reopen only by `consumed()` (nghttp2's
    no_auto_window_update + nghttp2_session_consume; nghttp2 sends the WINDOW_UPDATE once half a
    window is consumed). The connection window is max_concurrent_streams streams' windows, so a
    stream whose app does not read cannot starve the others. Bytes the handler never saw (a refused
    or reset stream's) are consumed here, for the connection.
  - the request header list is counted as nghttp2 decodes it (len(name) + len(value) + 32 a field)
    and no longer kept past max_header_list_size: the handler gets h2_refused(stream, 431) instead.
  - a response body is a queue of the bytes objects send_data() was given, copied into DATA
    frames by the data provider as the windows allow (NGHTTP2_ERR_DEFERRED while it is empty).
  - a handler method that raises is logged (logger "fastcluster") and its stream is reset with
    INTERNAL_ERROR; nothing propagates through nghttp2. A BaseException that is not an Exception
    (KeyboardInterrupt, SystemExit) stops the session and is raised again by receive()/pending().

Re-entrance: the handler may call respond(), send_data(), consumed(), reset(), goaway() and close()
from its callbacks. pending() called from a callback returns b"" (nghttp2 is mid-way through the
input or the output then), and receive() raises RuntimeError.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memcmp
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc

import logging

from fastcluster._libnghttp2 cimport *


# error codes (RFC 9113 section 7) and the preface: one source for both engines
from fastcluster.h2codes import (  # noqa: F401  (re-exported: the engine API's names)
    NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM,
    INADEQUATE_SECURITY, HTTP_1_1_REQUIRED, PREFACE)
cdef const char* PING_DATA = b"fc-drain"     # the opaque data of our own PING (ping())

cdef enum:
    E_PROTOCOL = 1
    E_INTERNAL = 2
    E_REFUSED = 7
    E_CALM = 11
    FIELD_OVERHEAD = 32        # RFC 9113 6.5.2: a field's size is len(name) + len(value) + 32
    MAX_OUTBOUND_ACK = 1000    # SETTINGS/PING acks queued for a peer that does not read: then GOAWAY
    NV_ON_STACK = 32           # response fields submitted without a malloc
    MEMO_SIZE = 32             # request fields remembered by position (_field)
    # what Engine.submit sends
    TRAILERS = 0
    INFORMATIONAL = 1          # a 1xx response: HEADERS without END_STREAM, the final response follows
    FINAL = 2                  # the response's HEADERS with END_STREAM: no body
    FINAL_WITH_BODY = 3        # ... and a data provider for the body

log = logging.getLogger("fastcluster")

# bytes objects shared by every engine of the process
cdef dict STATUS = {}          # 200 -> b"200"
# (name, value) tuples by their position in the last header blocks decoded: clients send the same
# fields in the same order, so a field equal to the one seen at its position reuses that tuple
# (immutable, shared by every request that has it): no bytes objects made for it
cdef list MEMO = [None] * MEMO_SIZE
# connection-specific fields HTTP/2 forbids (RFC 9113 8.2.2): respond() and send_trailers() drop them
cdef frozenset CONNECTION_FIELDS = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                                              b"transfer-encoding", b"upgrade"))


cdef inline bint _same(bytes known, const uint8_t* at, size_t length) noexcept:
    return <size_t>PyBytes_GET_SIZE(known) == length and memcmp(PyBytes_AS_STRING(known), at, length) == 0


cdef tuple _field(Py_ssize_t index, const uint8_t* name, size_t namelen, const uint8_t* value, size_t valuelen):
    """The (name, value) tuple of a received field: MEMO's at `index` when it holds the same bytes."""
    cdef object known = MEMO[index] if index < MEMO_SIZE else None
    cdef bytes name_obj
    if known is not None and _same(<bytes>(<tuple>known)[0], name, namelen):
        if _same(<bytes>(<tuple>known)[1], value, valuelen):
            return <tuple>known
        name_obj = <bytes>(<tuple>known)[0]
    else:
        name_obj = PyBytes_FromStringAndSize(<const char*>name, namelen)
    field = (name_obj, PyBytes_FromStringAndSize(<const char*>value, valuelen))
    if index < MEMO_SIZE:
        MEMO[index] = field
    return field


cdef bytes _lower(bytes name):
    cdef const char* p = PyBytes_AS_STRING(name)
    cdef Py_ssize_t i
    for i in range(PyBytes_GET_SIZE(name)):
        if b"A" <= p[i] <= b"Z":
            return name.lower()
    return name


# _outgoing's last answer: the fields it was given (a tuple of them) and the list it made of them;
# an app answers alike, so the next response's fields are most often the same ones
cdef tuple LAST_GIVEN = ()
cdef list LAST_MADE = []


cdef bint _given_again(list headers) except -1:
    cdef Py_ssize_t i, n = len(headers)
    if n != len(LAST_GIVEN):
        return False
    for i in range(n):
        a = headers[i]
        b = LAST_GIVEN[i]
        if a is not b and not (type(a) is tuple and a == b):
            return False
    return True


cdef list _outgoing(object headers):
    """`headers` as HTTP/2 sends them: names lowercased, connection-specific fields dropped.
    ValueError for a field HTTP/2 cannot carry (an empty or invalid name, CR, LF or NUL in a value).
    The same fields as the last call's: its list again (submit() only reads it), unchecked."""
    global LAST_GIVEN, LAST_MADE
    cdef list fields = []
    cdef bytes name, lowered, value
    if type(headers) is list and _given_again(<list>headers):
        return LAST_MADE
    for field in headers:
        name, value = field
        lowered = _lower(name)
        if lowered in CONNECTION_FIELDS:
            continue
        if not nghttp2_check_header_name(<const uint8_t*>PyBytes_AS_STRING(lowered), PyBytes_GET_SIZE(lowered)):
            raise ValueError("invalid HTTP/2 header name %r" % (name,))
        if not nghttp2_check_header_value(<const uint8_t*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)):
            raise ValueError("invalid HTTP/2 header value for %r" % (name,))
        fields.append(field if lowered is name and type(field) is tuple else (lowered, value))
    if type(headers) is list:
        LAST_GIVEN = tuple(headers)
        LAST_MADE = fields
    return fields


cdef inline void _nv(nghttp2_nv* nv, bytes name, bytes value) noexcept:
    nv.name = <uint8_t*>PyBytes_AS_STRING(name)
    nv.namelen = PyBytes_GET_SIZE(name)
    nv.value = <uint8_t*>PyBytes_AS_STRING(value)
    nv.valuelen = PyBytes_GET_SIZE(value)
    nv.flags = NGHTTP2_NV_FLAG_NONE       # nghttp2 copies names and values


@cython.final
@cython.freelist(32)
@cython.no_gc       # it holds lists of bytes (and of tuples of bytes) only: never part of a cycle
cdef class _Stream:
    """One client stream, from its HEADERS until nghttp2 closes it."""
    cdef int32_t sid
    cdef list headers          # the request's fields while its header block is decoded, then None
    cdef Py_ssize_t hsize      # their decoded size so far
    cdef bint announced        # the handler knows it: h2_request or h2_refused was called
    cdef bint refused          # over max_header_list_size: h2_refused, and its body is dropped
    cdef bint dead             # reset by the engine or the layer: its input and output are dropped
    cdef bint layer_reset      # ... by Engine.reset(): no h2_reset for it
    cdef int64_t peer_code     # the error code of the peer's RST_STREAM, -1 without one
    cdef bint responded        # the final response HEADERS are submitted
    cdef bint providing        # ... with a data provider (respond(end_stream=False))
    cdef bint deferred         # the provider said NGHTTP2_ERR_DEFERRED: resume it on new data
    cdef bint end              # the body's last bytes are in `out`
    cdef bint remote_ended     # the request's END_STREAM arrived
    cdef list out              # body bytes not framed yet: out[head][offset:], out[head + 1], ...
    cdef Py_ssize_t head, offset, queued
    cdef list trailers         # send_trailers()'s fields, submitted once the body is framed

    cdef size_t take(self, uint8_t* buf, size_t length) noexcept:
        """Copy up to `length` queued body bytes into `buf`."""
        cdef size_t done = 0, n, size
        cdef Py_ssize_t count = PyList_GET_SIZE(self.out)
        cdef bytes chunk
        while done < length and self.head < count:
            chunk = <bytes>PyList_GET_ITEM(self.out, self.head)
            size = PyBytes_GET_SIZE(chunk)
            n = min(size - self.offset, length - done)
            memcpy(buf + done, PyBytes_AS_STRING(chunk) + self.offset, n)
            done += n
            self.offset += n
            if <size_t>self.offset == size:
                self.head += 1
                self.offset = 0
        self.queued -= done
        if self.head == count:
            del self.out[:]
            self.head = 0
        elif self.head >= 64:
            del self.out[:self.head]
            self.head = 0
        return done

    cdef void drop(self) noexcept:
        self.out = []
        self.head = self.offset = self.queued = 0
        self.trailers = None


# --- nghttp2's callbacks: user_data is the Engine (nghttp2's session never outlives it) ----------

cdef int _on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Engine engine = <Engine>user_data
    cdef int32_t sid = frame.hd.stream_id
    cdef _Stream st
    if engine.closed:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    try:
        if frame.headers.cat != NGHTTP2_HCAT_REQUEST:      # trailers: decoded and dropped
            engine.current = None
            return 0
        if engine.goaway_last >= 0 and sid > engine.goaway_last:
            # after goaway() and before nghttp2 has sent it: refused here, safe for the client to retry
            engine.current = None
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, sid, E_REFUSED)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE      # (nghttp2 then skips the block)
        st = _Stream.__new__(_Stream)
        st.sid = sid
        st.headers = []
        st.peer_code = -1
        st.out = []
        engine.streams[sid] = st
        engine.current = st
        return 0
    except BaseException as exc:
        return engine.failed(0, exc, "starting a request") or NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef int _on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                    const uint8_t* value, size_t valuelen, uint8_t flags, void* user_data) noexcept:
    cdef Engine engine = <Engine>user_data
    cdef _Stream st = engine.current
    if st is None or st.headers is None or st.dead or st.sid != frame.hd.stream_id:
        return 0
    st.hsize += namelen + valuelen + FIELD_OVERHEAD
    if st.hsize > engine.max_header_list_size:
        st.headers = None         # nghttp2 goes on decoding (the HPACK table stays right); nothing kept
        st.refused = True
        return 0
    try:
        st.headers.append(_field(PyList_GET_SIZE(st.headers), name, namelen, value, valuelen))
        return 0
    except BaseException as exc:
        return engine.failed(st.sid, exc, "decoding a request's headers")


cdef int _on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    cdef Engine engine = <Engine>user_data
    cdef int32_t sid = frame.hd.stream_id
    cdef bint end = frame.hd.flags & NGHTTP2_FLAG_END_STREAM
    cdef _Stream st
    cdef list headers
    if engine.closed:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    if frame.hd.type == NGHTTP2_PING:
        if frame.hd.flags & NGHTTP2_FLAG_ACK and memcmp(frame.ping.opaque_data, PING_DATA, 8) == 0:
            try:
                engine.handler.h2_ping_ack()      # (our own PING's: ping())
            except BaseException as exc:
                return engine.failed(0, exc, "handling a PING's ACK")
        return 0
    if frame.hd.type != NGHTTP2_DATA and frame.hd.type != NGHTTP2_HEADERS and frame.hd.type != NGHTTP2_RST_STREAM:
        return 0
    st = engine.streams.get(sid)
    if st is None:
        return 0
    if end:
        st.remote_ended = True
    try:
        if frame.hd.type == NGHTTP2_RST_STREAM:
            st.peer_code = frame.rst_stream.error_code     # h2_reset comes with the stream's close
        elif frame.hd.type == NGHTTP2_HEADERS and frame.headers.cat == NGHTTP2_HCAT_REQUEST:
            engine.current = None
            headers, st.headers = st.headers, None
            if st.dead:
                return 0
            st.announced = True
            if st.refused:
                engine.refusing += 1
                engine.on_refused(sid, 431)
            else:
                engine.on_request(sid, headers, end)
        elif end and st.announced and not (st.refused or st.dead):   # after DATA, or trailers
            engine.on_end(sid)
    except BaseException as exc:
        return engine.failed(sid, exc, "handling a request")
    return NGHTTP2_ERR_CALLBACK_FAILURE if engine.closed else 0


cdef int _on_data_chunk_recv(nghttp2_session* session, uint8_t flags, int32_t stream_id, const uint8_t* data,
                             size_t length, void* user_data) noexcept:
    cdef Engine engine = <Engine>user_data
    cdef _Stream st
    if engine.closed:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    st = engine.streams.get(stream_id)
    if st is None or not st.announced or st.refused or st.dead:
        # nobody will consume these bytes: the connection window gets them back now (the stream's
        # window stays shut, the layer resets or answers that stream)
        return 0 if nghttp2_session_consume_connection(session, length) == 0 else NGHTTP2_ERR_CALLBACK_FAILURE
    try:
        engine.on_data(stream_id, PyBytes_FromStringAndSize(<const char*>data, length))
    except BaseException as exc:
        nghttp2_session_consume_connection(session, length)
        return engine.failed(stream_id, exc, "receiving a request body")
    return NGHTTP2_ERR_CALLBACK_FAILURE if engine.closed else 0


cdef int _on_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                          void* user_data) noexcept:
    cdef Engine engine = <Engine>user_data
    cdef _Stream st
    cdef int64_t code
    if engine.closed:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    st = engine.streams.pop(stream_id, None)
    if st is None:
        return 0
    if engine.current is st:
        engine.current = None
    if not st.announced:
        return 0
    if st.refused:
        engine.refusing -= 1
    code = st.peer_code if st.peer_code >= 0 else error_code
    try:
        if not st.layer_reset and (st.peer_code >= 0 or code != 0):
            engine.on_reset(stream_id, code)
    except BaseException as exc:
        if engine.failed(0, exc, "h2_reset") != 0:
            return NGHTTP2_ERR_CALLBACK_FAILURE
    if engine.closed:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    try:
        engine.on_closed(stream_id)
    except BaseException as exc:
        return engine.failed(0, exc, "h2_closed")
    return NGHTTP2_ERR_CALLBACK_FAILURE if engine.closed else 0


cdef int _on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept:
    """After a refused request's complete response: RST_STREAM NO_ERROR if its body is still coming
    (RFC 9113 8.1; the engine drops that body). Not sooner: a queued RST_STREAM drops what precedes it."""
    cdef Engine engine = <Engine>user_data
    cdef _Stream st
    if engine.refusing == 0 or not frame.hd.flags & NGHTTP2_FLAG_END_STREAM or engine.closed:
        return 0
    st = engine.streams.get(frame.hd.stream_id)
    if st is None or not st.refused:
        return 0
    if st.remote_ended or st.dead:
        return 0
    st.dead = st.layer_reset = True
    return 0 if nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st.sid, 0) == 0 else NGHTTP2_ERR_CALLBACK_FAILURE


cdef ssize_t _read_body(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                        uint32_t* data_flags, nghttp2_data_source* source, void* user_data) noexcept:
    cdef Engine engine = <Engine>user_data
    cdef _Stream st
    cdef size_t n
    if engine.closed:
        return NGHTTP2_ERR_CALLBACK_FAILURE
    st = engine.streams.get(stream_id)
    if st is None or st.dead:
        return NGHTTP2_ERR_DEFERRED          # its RST_STREAM is queued and closes it
    n = st.take(buf, length)
    if st.queued:
        return n
    if not st.end:
        if n:
            return n
        st.deferred = True
        return NGHTTP2_ERR_DEFERRED
    data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
    if st.trailers is not None:
        data_flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
        try:
            engine.submit(stream_id, TRAILERS, None, st.trailers)
        except BaseException as exc:
            engine.failed(0, exc, "sending trailers")
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE      # nghttp2 resets the stream
        st.trailers = None
    return n


cdef int _error_code(ssize_t lib_error) noexcept:
    """The GOAWAY code for a fatal nghttp2 error."""
    if lib_error == NGHTTP2_ERR_FLOODED:
        return E_CALM
    if lib_error == NGHTTP2_ERR_BAD_CLIENT_MAGIC:
        return E_PROTOCOL
    return E_INTERNAL


@cython.final
cdef class Engine:
    """One server-side HTTP/2 session (see the module's docstring and the engine API)."""
    cdef nghttp2_session* session
    cdef object handler
    cdef object on_request, on_refused, on_data, on_end, on_reset, on_closed    # the handler's methods
    cdef dict streams                  # stream id -> _Stream, for the streams nghttp2 has open
    cdef _Stream current               # the stream whose header block is being decoded
    cdef Py_ssize_t max_header_list_size
    cdef int32_t ack_starved           # consumed() with starved: a window update once this much is unacknowledged
    cdef int32_t goaway_last           # the last stream id of goaway(), -1 before
    cdef int32_t last_seen             # the last stream id, kept past close()
    cdef Py_ssize_t refusing           # open streams that got h2_refused (for _on_frame_send)
    cdef bint fatal                    # a GOAWAY for a connection error is queued
    cdef bint goaway_called
    cdef bint busy                     # inside nghttp2_session_mem_recv or _mem_send
    cdef bint closed                   # close(): no callbacks any more
    cdef object error                  # a BaseException (not Exception) from a callback, to raise again

    def __init__(self, handler, int max_concurrent_streams=100, int initial_window_size=65535,
                 int max_frame_size=16384, int max_header_list_size=65536):
        cdef nghttp2_session_callbacks* callbacks = NULL
        cdef nghttp2_option* option = NULL
        cdef nghttp2_settings_entry settings[5]
        cdef int64_t window = <int64_t>max_concurrent_streams * initial_window_size
        cdef int rv
        if self.session != NULL or self.closed:
            raise RuntimeError("Engine.__init__ called twice")
        if max_concurrent_streams < 0 or not 0 <= initial_window_size <= NGHTTP2_MAX_WINDOW_SIZE:
            raise ValueError("max_concurrent_streams and initial_window_size must be >= 0 (and a window <= 2**31-1)")
        if not 16384 <= max_frame_size <= 16777215 or max_header_list_size < 0:
            raise ValueError("max_frame_size must be in 16384..16777215, max_header_list_size >= 0")
        self.handler = handler
        self.on_request, self.on_refused = handler.h2_request, handler.h2_refused
        self.on_data, self.on_end = handler.h2_data, handler.h2_end
        self.on_reset, self.on_closed = handler.h2_reset, handler.h2_closed
        self.streams = {}
        self.max_header_list_size = max_header_list_size
        self.ack_starved = max(1, initial_window_size // 4)
        self.goaway_last = -1
        if nghttp2_session_callbacks_new(&callbacks) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, _on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, _on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, _on_frame_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, _on_data_chunk_recv)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, _on_stream_close)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, _on_frame_send)
        if nghttp2_option_new(&option) != 0:
            nghttp2_session_callbacks_del(callbacks)
            raise MemoryError()
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_outbound_ack(option, MAX_OUTBOUND_ACK)
        nghttp2_option_set_no_closed_streams(option, 1)
        rv = nghttp2_session_server_new2(&self.session, callbacks, <void*>self, option)
        nghttp2_option_del(option)
        nghttp2_session_callbacks_del(callbacks)
        if rv != 0:
            self.session = NULL
            raise MemoryError()
        settings[0].settings_id, settings[0].value = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams
        settings[1].settings_id, settings[1].value = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, initial_window_size
        settings[2].settings_id, settings[2].value = NGHTTP2_SETTINGS_MAX_FRAME_SIZE, max_frame_size
        settings[3].settings_id, settings[3].value = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list_size
        settings[4].settings_id, settings[4].value = NGHTTP2_SETTINGS_ENABLE_PUSH, 0
        # not SETTINGS_NO_RFC7540_PRIORITIES: with it nghttp2 schedules by RFC 9218, whose default
        # (urgency 3, not incremental) sends concurrent responses one after the other; without it, streams
        # no client priority orders share the connection round robin (as the h2 engine does)
        self.check(nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, settings, 5))
        # the connection window: every stream's, so one stream whose app does not read starves no other
        window = min(window, NGHTTP2_MAX_WINDOW_SIZE)
        if window > NGHTTP2_INITIAL_WINDOW_SIZE:
            self.check(nghttp2_session_set_local_window_size(self.session, NGHTTP2_FLAG_NONE, 0, <int32_t>window))

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    # --- for the callbacks ------------------------------------------------------------------------

    cdef int failed(self, int32_t sid, BaseException exc, str doing) noexcept:
        """A callback raised `exc`: log it and reset stream `sid` (0: none); a BaseException that is
        not an Exception stops the session (NGHTTP2_ERR_CALLBACK_FAILURE) and is raised again later."""
        cdef _Stream st
        if not isinstance(exc, Exception):
            if self.error is None:
                self.error = exc
            return NGHTTP2_ERR_CALLBACK_FAILURE
        try:
            log.error("HTTP/2: the handler failed %s (stream %d); the stream is reset", doing, sid, exc_info=exc)
        except BaseException:
            pass
        st = self.streams.get(sid) if sid > 0 else None
        if st is not None and not st.dead:
            st.dead = True
            st.drop()
            if nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, sid, E_INTERNAL) < 0:
                return NGHTTP2_ERR_CALLBACK_FAILURE
        return NGHTTP2_ERR_CALLBACK_FAILURE if self.closed else 0

    cdef int check(self, int rv) except -1:
        if rv < 0:
            if rv == NGHTTP2_ERR_NOMEM:
                raise MemoryError()
            raise RuntimeError("nghttp2: %s" % nghttp2_strerror(rv).decode())
        return 0

    cdef int submit(self, int32_t sid, int kind, bytes status, list fields) except -1:
        """A HEADERS block on `sid`: `kind` says which (TRAILERS, INFORMATIONAL, FINAL...)."""
        cdef nghttp2_nv stack[NV_ON_STACK]
        cdef nghttp2_nv* nva = stack
        cdef Py_ssize_t i = 0, count = len(fields) + (kind != TRAILERS)
        cdef nghttp2_data_provider provider
        cdef int rv
        if count > NV_ON_STACK:
            nva = <nghttp2_nv*>PyMem_Malloc(count * sizeof(nghttp2_nv))
            if nva == NULL:
                raise MemoryError()
        try:
            if kind != TRAILERS:
                _nv(nva, b":status", status)
                i = 1
            for name, value in fields:
                _nv(nva + i, name, value)
                i += 1
            if kind == TRAILERS:
                rv = nghttp2_submit_trailer(self.session, sid, nva, count)
            elif kind == INFORMATIONAL:
                rv = nghttp2_submit_headers(self.session, NGHTTP2_FLAG_NONE, sid, NULL, nva, count, NULL)
            elif kind == FINAL:
                rv = nghttp2_submit_response(self.session, sid, nva, count, NULL)
            else:
                provider.source.ptr = NULL
                provider.read_callback = _read_body      # nghttp2 keeps a copy of `provider`
                rv = nghttp2_submit_response(self.session, sid, nva, count, &provider)
        finally:
            if nva != stack:
                PyMem_Free(nva)
        return self.check(rv)

    cdef _Stream live(self, int32_t sid):
        """The stream the layer may still send on: known, not closed, not reset."""
        if self.session == NULL:
            return None
        st = self.streams.get(sid)
        return None if st is None or (<_Stream>st).dead else st

    cdef void resume(self, _Stream st) noexcept:
        if st.deferred and st.providing:
            st.deferred = False
            nghttp2_session_resume_data(self.session, st.sid)

    cdef bint terminating(self) noexcept:
        """A connection error's GOAWAY is queued or sent (by nghttp2 itself or by us)."""
        if self.fatal:
            return True
        # nghttp2 says "terminate on send" to no public getter: nghttp2_submit_goaway() returns 0
        # without queuing anything then; otherwise a server's own (even) stream id as last id is
        # refused (NGHTTP2_ERR_INVALID_ARGUMENT) before anything is queued, so this asks without a side effect
        if nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, 2, 0, NULL, 0) == 0:
            self.fatal = True
        return self.fatal

    cdef void free(self) noexcept:
        if self.session != NULL and not self.busy:
            self.last_seen = nghttp2_session_get_last_proc_stream_id(self.session)
            nghttp2_session_del(self.session)
            self.session = NULL

    cdef int raise_error(self) except -1:
        err, self.error = self.error, None
        if err is not None:
            raise err
        return 0

    # --- the engine API -----------------------------------------------------------------------------

    def receive(self, data):
        """Process `data`, all of it; the handler's methods run from here, in frame order."""
        cdef Py_buffer view
        cdef const uint8_t* at
        cdef Py_ssize_t size
        cdef ssize_t rv
        cdef bint exact = PyBytes_CheckExact(data)
        if self.busy:
            raise RuntimeError("Engine.receive() called from one of the engine's own callbacks")
        if self.session == NULL or self.terminating():
            return
        if exact:
            at, size = <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            at, size = <const uint8_t*>view.buf, view.len
        self.busy = True
        try:
            rv = nghttp2_session_mem_recv(self.session, at, size)
        finally:
            self.busy = False
            if not exact:
                PyBuffer_Release(&view)
        if self.closed:
            self.free()
        elif rv < 0:
            self.fatal = True
            nghttp2_session_terminate_session(self.session, _error_code(rv))
        self.raise_error()

    def pending(self, Py_ssize_t limit=65536):
        """What the engine wants to send now, up to about `limit` bytes (b"" when nothing)."""
        cdef const uint8_t* data
        cdef ssize_t n
        cdef size_t used = 0, size = 0
        cdef char* buf = NULL
        cdef char* grown
        cdef bint failed = False
        if self.session == NULL or self.busy:
            return b""
        self.busy = True
        try:
            while <Py_ssize_t>used < limit:
                n = nghttp2_session_mem_send(self.session, &data)      # one frame (valid until the next call)
                if n <= 0:
                    if n == 0 or self.closed or failed:
                        break
                    failed = self.fatal = True      # once: then what is queued, with that GOAWAY
                    nghttp2_session_terminate_session(self.session, _error_code(n))
                    continue
                if used + <size_t>n > size:
                    size = max(size * 2, used + <size_t>n, <size_t>16384)
                    grown = <char*>PyMem_Realloc(buf, size)
                    if grown == NULL:
                        raise MemoryError()
                    buf = grown
                memcpy(buf + used, data, n)
                used += n
            out = PyBytes_FromStringAndSize(buf, used) if used else b""
        finally:
            PyMem_Free(buf)
            self.busy = False
        if self.closed:
            self.free()
            out = b""
        self.raise_error()
        return out

    def respond(self, int32_t stream_id, int status, headers, bint end_stream):
        """The response's HEADERS: `:status`, then `headers` lowercased, connection-specific ones
        dropped. A 1xx status is an informational response (a final one follows)."""
        cdef _Stream st = self.live(stream_id)
        if not 100 <= status <= 999:
            raise ValueError("HTTP status %d" % status)
        if st is None:
            return            # closed or reset meanwhile: the handler hears (or heard) of it
        if st.responded:
            raise RuntimeError("stream %d already has its response" % stream_id)
        status_bytes = STATUS.get(status)
        if status_bytes is None:
            status_bytes = STATUS[status] = b"%d" % status
        if status < 200:
            self.submit(stream_id, INFORMATIONAL, status_bytes, _outgoing(headers))
            return
        self.submit(stream_id, FINAL if end_stream else FINAL_WITH_BODY, status_bytes, _outgoing(headers))
        st.responded = True
        st.providing = not end_stream
        if end_stream:
            st.drop()
            st.end = True

    def send_data(self, int32_t stream_id, data, bint end_stream):
        """Queue body bytes (framed as the windows allow, by pending()); end_stream: the last ones."""
        cdef _Stream st = self.live(stream_id)
        if st is None or st.end:
            return
        if not PyBytes_CheckExact(data):
            data = bytes(data)        # a bytearray or memoryview may change before it is framed
        if PyBytes_GET_SIZE(data):
            st.out.append(data)
            st.queued += PyBytes_GET_SIZE(data)
        if end_stream:
            st.end = True
        self.resume(st)

    def send_trailers(self, int32_t stream_id, headers):
        """End the stream with a trailers HEADERS block, after the queued body."""
        cdef _Stream st = self.live(stream_id)
        if st is None or st.end:
            return
        st.trailers = _outgoing(headers)
        st.end = True
        self.resume(st)

    def reset(self, int32_t stream_id, uint32_t error_code):
        """RST_STREAM; the stream's queued body is dropped. No h2_reset follows, h2_closed does."""
        cdef _Stream st = self.live(stream_id)
        if st is None:
            return
        st.dead = st.layer_reset = True
        st.drop()
        self.check(nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, stream_id, error_code))

    def queued(self, int32_t stream_id):
        """Body bytes given to send_data() and not framed yet."""
        st = self.streams.get(stream_id) if self.streams is not None else None
        return 0 if st is None else (<_Stream>st).queued

    def consumed(self, int32_t stream_id, Py_ssize_t n, bint starved=False):
        """The app took `n` body bytes: reopen the stream's window and the connection's by `n`.
        libnghttp2 tells the peer once half a window is consumed; `starved` (the app waits for more
        than it has been sent: all it was sent is consumed) tells it as soon as a quarter window is
        unacknowledged, for all of it: else an upload moves about half a window per round trip."""
        cdef int32_t unacked
        if self.session == NULL or n <= 0:
            return
        if stream_id > 0 and stream_id in self.streams:
            self.check(nghttp2_session_consume(self.session, stream_id, n))
            if starved:
                unacked = nghttp2_session_get_stream_effective_recv_data_length(self.session, stream_id)
                if unacked >= self.ack_starved:
                    self.check(nghttp2_submit_window_update(self.session, NGHTTP2_FLAG_NONE, stream_id, unacked))
        else:
            self.check(nghttp2_session_consume_connection(self.session, n))

    def goaway(self, int32_t last_stream_id=-1, uint32_t error_code=0):
        """GOAWAY; last_stream_id -1: the last stream processed. Streams above it get no h2_request.
        An error code other than NO_ERROR ends the connection (closing)."""
        if self.session == NULL:
            return
        if last_stream_id < 0:
            last_stream_id = nghttp2_session_get_last_proc_stream_id(self.session)
        if error_code:
            self.fatal = True
            self.check(nghttp2_session_terminate_session2(self.session, last_stream_id, error_code))
        else:
            self.check(nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, last_stream_id, 0, NULL, 0))
        if self.goaway_last < 0 or last_stream_id < self.goaway_last:
            self.goaway_last = last_stream_id
        self.goaway_called = True

    def goaway_notice(self):
        """GOAWAY with the last stream id 2**31-1: the first half of a graceful shutdown."""
        if self.session != NULL:
            self.check(nghttp2_submit_shutdown_notice(self.session))

    def ping(self):
        """A PING; its ACK calls handler.h2_ping_ack() (after a GOAWAY notice: every stream the client
        opened before it saw the notice has arrived by then)."""
        if self.session != NULL:
            self.check(nghttp2_submit_ping(self.session, NGHTTP2_FLAG_NONE, <const uint8_t*>PING_DATA))

    @staticmethod
    def library_version():
        """The libnghttp2 this module runs with (its version string)."""
        return nghttp2_version(0).version_str.decode("ascii")

    @property
    def last_stream_id(self):
        """The highest client stream id processed so far."""
        if self.session == NULL:
            return self.last_seen
        return nghttp2_session_get_last_proc_stream_id(self.session)

    @property
    def want_write(self):
        return self.session != NULL and not self.closed and nghttp2_session_want_write(self.session) != 0

    @property
    def closing(self):
        """Once pending() is empty, close the socket: a connection error's GOAWAY is queued, or goaway()
        was called and no stream is open, or nghttp2 has nothing left to read (GOAWAY both ways)."""
        if self.session == NULL:
            return True
        return (self.terminating() or (self.goaway_called and not self.streams)
                or nghttp2_session_want_read(self.session) == 0)

    @property
    def open_streams(self):
        return len(self.streams) if self.streams is not None else 0

    def close(self):
        """Drop the session and everything queued; no callbacks after this. Idempotent."""
        self.closed = True
        self.handler = self.on_request = self.on_refused = self.on_data = None
        self.on_end = self.on_reset = self.on_closed = None
        self.current = None
        self.streams = {}
        self.free()            # inside a callback: when nghttp2 has returned
