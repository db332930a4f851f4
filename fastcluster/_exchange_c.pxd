# The C side of _exchange.py: Cython compiles that plain-Python file as fastcluster._exchange_c
# with these declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._server_c cimport HttpServer
from fastcluster._inline cimport _join_head, _same_text, _with_tail

# how a connection ends (Channel.state); a state only ever moves to a later one
cdef enum:
    OPEN = 0          # reading and answering requests
    LAST_IN = 1       # the client's last request is in (it asked to close); nothing unexpected followed
    UNREAD = 2        # reading stopped with input left (refusal, bytes after the last request, ...)
    PEER_CLOSED = 3   # the client closed its side; what it sent before is still answered
    LINGERING = 4     # our FIN is out; input is dropped until the client closes or LINGER passes
    CLOSED = 5

cdef Py_ssize_t HIGH_WATER, SMALL_CHUNK, SMALL_BODY
cdef bytes FAILED_BODY, SERVER_HEADER
cdef object BodyBuffer, LazyInput, FileWrapper, status_line, simple_response, error_response, log_app_error
cdef dict STATUSES, HEADER_NAMES, HEADER_LINES, ASGI_HEADER_NAMES, ASGI_STATUS_LINES
cdef list LINE_MEMO
cdef tuple HEADERS_MEMO, STATUS_MEMO, HEAD_MEMO, FRAMING_MEMO
cdef int HAS_DATE, HAS_SERVER, WANTS_CLOSE, H_CONTENT_LENGTH, H_DATE, H_SERVER, H_CONNECTION

@cython.locals(c=cython.uchar)
cpdef bint splits_header(bytes value) except -1
@cython.locals(start=Py_ssize_t, end=Py_ssize_t, i=Py_ssize_t, c=Py_UCS4, number=cython.longlong)
cpdef long long content_length_of(str value) except -2
@cython.locals(parts=list, clen=cython.longlong, flags=int, kind=int, data=bytes, entry=tuple, length=cython.longlong,
               known=tuple, line=bytes, index=Py_ssize_t, memo=tuple, all_known=bint, pairs=tuple,
               encoded=tuple)
cpdef tuple encode_headers(object headers)
cdef int _last_status(object status, tuple known) except -1
@cython.locals(memo=tuple, joined=bytes)
cdef bytes _head(bytes status, list lines, bytes date, bytes ours, bytes framing, bytes end, bytes tail)
@cython.locals(memo=tuple, line=bytes)
cdef bytes _framing(long long length)
cdef bint _same_pair(object item, tuple pair) except -1
@cython.locals(parts=list, clen=cython.longlong, flags=int, kind=int, entry=tuple)
cpdef tuple encode_asgi_headers(object headers)
cpdef bytes asgi_status_line(object status)


cdef class Exchange


cdef class Channel:
    cdef:
        public HttpServer server
        public int state        # OPEN ... CLOSED: how the connection ends
        public Py_ssize_t out_size     # bytes queued and not sent yet
        public object start_response   # bound once: the app's start_response
        public bint framed             # an HTTP/2 stream: its head goes to _frame_head

    cdef int _queue(self, bytes data) except -1
    cdef bint _frame_head(self, Exchange ex, long long known_length, bytes tail) except -1
    cdef bint _wait_writable(self) except -1
    cdef int _produced(self) except -1
    cdef int _body_taken(self) except -1
    cdef int _pause_reading(self) except -1
    cdef int _resume_reading(self) except -1


@cython.final
cdef class SendFile:
    cdef:
        public int fd
        public long long offset
        public long long left


@cython.final
cdef class EarlyBody:
    cdef:
        public bint sent_continue   # (ASGI: the body is on its way, no 100 Continue needed or it is sent)
        public int refusal          # its body was refused while the app read it: this status answers an app failure


@cython.final
cdef class AsgiRequest:
    cdef:
        public dict scope
        public object cycle         # its _asgi.Cycle or WebSocket, once the app is called


@cython.final
cdef class Exchange:
    cdef:
        public Channel conn
        public dict environ
        # the request
        public bint keep_alive      # the client allows another request after this one
        public bint head
        public bint http10          # HTTP/1.0 (or older): no chunked, no 100-continue
        public bint complete        # the parser has seen the end of the message
        public EarlyBody early      # dispatched at headers-complete (Expect: 100-continue, an ASGI body), or None
        public object body          # BodyBuffer, LazyInput, an ASGI BodyQueue, or None
        public double start         # monotonic time of the read that brought its first byte
        public double called        # monotonic time its app call began on an app thread (--timeout)
        # the response
        public object status        # the status line (bytes), None until start_response
        public list headers         # the app's header lines, encoded: name, value, CRLF, ... (until sent)
        public int hflags
        public int code
        public long long clen       # -1: no Content-Length
        public long long sent       # body bytes queued
        public bint headers_sent
        public bint chunked
        public bint no_body
        public bint keep            # the connection stays open after this response
        public object result        # what the app returned
        public object iter          # its iterator, while a streamed body is pulled
        public SendFile file        # its body as a file the connection sends, while it does (else None)
        public bint in_app          # an app call (the call, or --threads 1's next piece) is producing it
        public bint done            # its body is complete: the loop accounts for it (HttpConnection._complete)
        public bint returned        # --threads > 1: its app thread lost the loop and handed it back (_post)
        public bint health          # a --health-path request: the server answers it, not the app
        list env_fields             # its head's fields (HttpConnection.fields), when its environ may be kept
        unsigned long long env_version   # and the environ's dict version when it was built
        public AsgiRequest asgi     # ASGI: its scope and call

    @cython.locals(conn=Channel)
    cpdef int run(self, object app) except -1
    @cython.locals(total=Py_ssize_t)
    cpdef int respond_sequence(self, object items) except -1
    @cython.locals(offset=cython.longlong)
    cpdef bint start_sendfile(self, object wrapper) except -1
    cpdef bint start_file(self, int fd, long long offset, long long size) except -1
    @cython.locals(conn=Channel)
    cpdef int stream(self) except -1
    cpdef int next_chunk(self) except -1
    @cython.locals(known=tuple)
    cpdef int set_status(self, object status, object headers, object exc_info) except -1
    cpdef int set_asgi_status(self, object status, object headers) except -1
    @cython.locals(conn=Channel)
    cpdef int write(self, object data) except -1
    cpdef int send_headers(self, long long known_length) except -1
    @cython.locals(conn=Channel, server=HttpServer, code=int, flags=int, bodiless_status=bint, lines=list, date=bytes,
                   ours=bytes, framing=bytes, end=bytes)
    cdef bint _send_head(self, long long known_length, bytes tail) except -1
    @cython.locals(size=cython.longlong, room=cython.longlong, conn=Channel)
    cpdef int send_body(self, bytes data) except -1
    @cython.locals(conn=Channel)
    cpdef int finish(self) except -1
    cpdef int failed(self) except -1
    @cython.locals(conn=Channel)
    cpdef int abort(self) except -1
    cpdef bint body_unsure(self) except -1
    cpdef int close_result(self) except -1
    cpdef int discard_body(self) except -1


@cython.locals(ex=Exchange)
cpdef Exchange new_exchange(Channel conn, dict environ)
