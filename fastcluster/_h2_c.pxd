# The C side of _h2.py: Cython compiles that plain-Python file as fastcluster._h2_c with these
# declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._clock cimport monotonic
from fastcluster._inline cimport _del_first
from fastcluster._server_c cimport HttpServer
from fastcluster._exchange_c cimport Exchange, EarlyBody, SendFile, CLOSED, HIGH_WATER, LAST_IN, OPEN, PEER_CLOSED, UNREAD
from fastcluster._transport_c cimport W_BODY, W_IDLE, W_NONE
from fastcluster._dispatch_c cimport AppDispatch, AWAIT_BODY, CHECK_THREADS
from fastcluster._http_c cimport HttpConnection
from fastcluster._request_c cimport V2

cdef Py_ssize_t B_REQUESTS, B_IN_FLIGHT, B_STATUS, PUSH_LIMIT, SEND_LIMIT
cdef int RESET_BUDGET, HAS_DATE, HAS_SERVER
cdef double RESET_SPAN, DRAIN_PING_WAIT, DRAIN_BUSY
cdef bytes SERVER_LINE
cdef dict REFUSALS
cdef tuple PAIRS_MEMO
cdef object LazyInput, log, refusal_cell, BodyQueue

cdef dict METHOD_NAMES
@cython.locals(name=str)
cdef str _method_name(bytes method)
@cython.locals(pairs=list, text=bytes, line=bytes, colon=Py_ssize_t, memo=tuple)
cdef list _header_pairs(list lines, bytes date, bytes ours)


cdef class Stream(AppDispatch):
    cdef:
        public H2Session session
        public int sid
        public list out                # the response's bytes not in the engine yet (any thread adds)
        public tuple head_out          # (status, header pairs, ends the stream) until the loop sends it
        public Exchange nxt            # the request, until its app call starts
        public list trailers_out       # an ASGI app's trailers (header pairs), sent at the stream's end
        long long body_in              # request body bytes received
        long long acked                # ...and handed back to the peer's window (taken by the app)
        public bint ended              # our END_STREAM is in the engine
        bint counted                   # in the board's in-flight count
        long long backlog              # response bytes not sent at the last tick...
        double stalled                 # ...and since when that number has not moved (--write-timeout)

    cdef int _open(self, H2Session session, int sid) except -1
    @cython.locals(server=HttpServer, ex=Exchange, env=dict, name=bytes, value=bytes, method=bytes, path=bytes,
                   authority=bytes, conn=HttpConnection)
    cdef int _head(self, list headers, bint end_stream) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cdef int _body(self, bytes data) except -1
    @cython.locals(ex=Exchange)
    cdef int _body_end(self) except -1
    @cython.locals(ex=Exchange)
    cdef int _refuse_body(self, int status) except -1
    cpdef bint _fill_body(self) except -1
    @cython.locals(ex=Exchange, taken='long long', starved=bint)
    cdef int _open_window(self) except -1
    @cython.locals(server=HttpServer, code=int, bodiless=bint, lines=list, pairs=list)
    cdef bint _frame_head(self, Exchange ex, long long known_length, bytes tail) except -1
    @cython.locals(out=list, data=bytes, empty=bint, code=int, pairs=list, end=bint)
    cdef int _push(self) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cdef int _pump_stream(self) except -1
    @cython.locals(file=SendFile, chunk=bytes)
    cdef int _file_piece(self, Exchange ex) except -1
    @cython.locals(server=HttpServer)
    cdef int _respond(self, Exchange ex) except -1
    @cython.locals(backlog='long long')
    cdef int _timed_out(self, double now) except -1
    cdef int _give_back(self) except -1
    cpdef int send_trailers(self, list lines) except -1
    # the chain's methods, for a stream (no socket: its bytes go to the session's engine)
    cdef int _queue(self, bytes data) except -1
    cdef bint _flush(self) except -1
    cdef int _pump(self) except -1
    cdef int _complete(self, Exchange ex) except -1
    @cython.locals(ex=Exchange)
    cdef int _release(self) except -1
    @cython.locals(ex=Exchange)
    cdef int _stop_reading(self, int state) except -1
    cdef int _body_taken(self) except -1
    cdef int _pause_reading(self) except -1
    cdef int _resume_reading(self) except -1
    cdef int _forget(self) except -1


cdef class H2Session:
    cdef:
        public HttpConnection conn
        public HttpServer server
        public dict streams            # stream id -> Stream, until the engine closes it
        public object engine           # h2engine's API: libnghttp2's Engine, or the h2 package's
        int resets                     # streams reset or refused since reset_began
        double reset_began
        double notice_at               # when the GOAWAY notice went (a stopping worker), or 0
        double stop_seen               # when the session first saw its worker stopping, or 0
        public bint final              # the last GOAWAY is queued: no new streams

    cpdef int feed(self, object data) except -1
    @cython.locals(stream=Stream, status=int)
    cpdef h2_request(self, int sid, list headers, bint end_stream)
    @cython.locals(server=HttpServer, body=bytes)
    cpdef h2_refused(self, int sid, int status)
    cpdef h2_ping_ack(self)
    @cython.locals(stream=Stream)
    cpdef h2_data(self, int sid, object data)
    @cython.locals(stream=Stream)
    cpdef h2_end(self, int sid)
    @cython.locals(stream=Stream)
    cpdef h2_reset(self, int sid, int code)
    @cython.locals(stream=Stream)
    cpdef h2_closed(self, int sid)
    @cython.locals(now=double)
    cdef int _count_reset(self) except -1
    @cython.locals(stream=Stream)
    cpdef int pump(self) except -1
    @cython.locals(conn=HttpConnection, taken=Py_ssize_t, data=bytes)
    cpdef int send(self) except -1
    @cython.locals(stream=Stream, conn=HttpConnection)
    cpdef int tick(self, double now) except -1
    cdef int _drain(self, double now) except -1
    @cython.locals(stream=Stream, age=double)
    cpdef double call_age(self, double now) except -1
    @cython.locals(stream=Stream)
    cpdef int eof(self) except -1
    @cython.locals(stream=Stream, streams=list)
    cpdef int close(self) except -1
