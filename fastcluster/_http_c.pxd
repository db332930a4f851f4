# The C side of _http.py: Cython compiles that plain-Python file as fastcluster._http_c with these
# declarations (pure-Python mode with an augmenting .pxd). _parser.pyx subclasses HttpConnection
# with the compiled loop's I/O.

cimport cython
from fastcluster._clock cimport monotonic
from fastcluster._server_c cimport HttpServer, AppPool
from fastcluster._settings_c cimport Settings
from fastcluster._inline cimport _del_first
from fastcluster._exchange_c cimport Exchange, EarlyBody, OPEN, LAST_IN, UNREAD, PEER_CLOSED, LINGERING, CLOSED, HIGH_WATER
from fastcluster._transport_c cimport W_NONE, W_HEADERS, W_BODY, W_IDLE
from fastcluster._request_c cimport HTTP11, HTTP10, SEEN_BODY, _known_plain_host
from fastcluster._dispatch_c cimport AppDispatch, AWAIT_BODY, CHECK_THREADS

cdef Py_ssize_t HEAD_SLACK, B_REQUESTS, B_IN_FLIGHT, B_STATUS
cdef Py_ssize_t MAX_PIPELINED
cdef bytes CONTINUE_LINE
cdef object BodyBuffer, LazyInput, check_head
cdef object BodyQueue, handshake_problem, is_upgrade, ws_upgrade   # load_asgi()
cdef object error_response
cdef object Reject, log, refusal_cell, H2Session
cdef bytes PREFACE
cdef dict METHODS


cdef class HttpConnection(AppDispatch):
    cdef:
        object parser           # httptools.HttpRequestParser driving our on_* methods
        public list pending     # Exchange (or the int status of a refused request), in order
        public Py_ssize_t served       # requests answered on this connection
        Py_ssize_t inflight     # its requests read in full and not answered yet (on the board too)
        bint head_done          # a header section ended during the current feed
        Py_ssize_t head_bytes   # bytes read while in_head (bounds what httptools buffers)
        long long body_bytes
        public object ws               # after a WebSocket handshake: the session, which takes the input
        public object h2               # HTTP/2 (ALPN h2, or the h2c preface): the session (_h2.py), which takes it
        bytes h2_head                  # the first bytes of an h2c preface that came in pieces

    cdef int _setup(self, HttpServer server, int fd, dict env) except -1
    cpdef on_message_begin(self)
    @cython.locals(ex=Exchange, protocol=str)
    cpdef on_headers_complete(self)
    @cython.locals(server=HttpServer, host=str)
    cdef int _head_complete(self, Exchange ex, dict env, str protocol) except -1
    @cython.locals(server=HttpServer)
    cpdef on_body(self, bytes data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
    @cython.locals(server=HttpServer, last=Exchange, problem=int)
    cdef int _feed(self, object data, Py_ssize_t n) except -1
    @cython.locals(head=bytes)
    cdef bint _h2c_preface(self, object data, Py_ssize_t before) except -1
    cdef bint _alpn_h2(self) except -1
    cdef int _start_h2(self, object data) except -1
    @cython.locals(ex=Exchange)
    cpdef bint _fill_body(self) except -1
    cdef int _stop_reading(self, int state) except -1
    @cython.locals(cur=Exchange)
    cdef int _reject(self, int status) except -1
    @cython.locals(ex=Exchange)
    cdef bint _refusable(self) except -1
    @cython.final
    @cython.locals(cur=Exchange)
    cdef bint _holds_input(self) except -1
    cdef int _body_taken(self) except -1
    cdef bint _writes_again(self) except -1
    cdef int _received(self, Exchange ex) except -1
    cdef int _unreceive(self) except -1
    @cython.locals(server=HttpServer, code=int)
    cdef int _complete(self, Exchange ex) except -1
    cdef int _close_after(self) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cdef int _drop_pending(self) except -1
    cpdef int tick(self, double now) except -1
    cdef int _pump(self) except -1
    @cython.locals(ex=Exchange, server=HttpServer)
    cdef int _pump_all(self) except -1
    @cython.locals(server=HttpServer)
    cdef int _pump_end(self) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cdef int _respond(self, object first) except -1
    cpdef double _call_age(self, double now) except -1
    cpdef bint idle(self)
    @cython.locals(ex=Exchange, cur=Exchange)
    cdef int _release(self) except -1

    # the parser (the compiled loop's Connection overrides these: _llhttp.pxi)
    cdef int _new_parser(self) except -1
    cdef int _parse(self, object data) except -1
    @cython.locals(raw=bytes, method=str)
    cdef str _method(self)
    cdef str _version(self)
    cdef bint _keeps_alive(self) except -1
