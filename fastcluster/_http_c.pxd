# The C side of _http.py: Cython compiles that plain-Python file as fastcluster._http_c with these
# declarations (pure-Python mode with an augmenting .pxd). _parser.pyx subclasses HttpConnection
# with the compiled loop's I/O.

cimport cython
from fastcluster._clock cimport monotonic
from fastcluster._server_c cimport HttpServer, AppPool, Settings
from fastcluster._inline cimport ENV_REUSE, _dict_version, _refs, _del_first
from fastcluster._exchange_c cimport (Channel, Exchange, AsgiRequest, EarlyBody, new_exchange,
                                      OPEN, LAST_IN, UNREAD, PEER_CLOSED, LINGERING, CLOSED, HIGH_WATER)

# what the read-side deadline is for (HttpConnection.wait)
cdef enum:
    W_NONE = 0        # a request is complete and being answered: no read deadline
    W_HEADERS = 1     # a request's headers, from the accept or the request's first byte
    W_BODY = 2        # the next piece of a request body
    W_IDLE = 3        # the next request on a kept-alive connection
    W_LINGER = 4      # the client's close after our FIN

cdef int AWAIT_BODY, AWAIT_DRAINED
cdef Py_ssize_t HEAD_SLACK, B_REQUESTS, B_IN_FLIGHT, B_STATUS
cdef double LINGER
cdef Py_ssize_t MAX_PIPELINED
cdef bytes CONTINUE_LINE
cdef object BodyBuffer, LazyInput, header_key, split_target, split_asgi_target, check_head
cdef object forwarded_client, parse_proxy_header
cdef object BodyQueue, asgi_start, handshake_problem, is_upgrade, ws_upgrade   # load_asgi()
cdef object error_response
cdef object Reject, log, refusal_cell, Demoted
cdef dict HEADER_KEYS, METHODS, PROTOCOLS, LOWER_NAMES
cdef list HEALTH_HEADERS
cdef frozenset FORBIDDEN_TRAILERS
cdef str K_CONTENT_LENGTH, K_TRANSFER_ENCODING, K_FORWARDED_FOR, K_FORWARDED_PROTO, K_FORWARDED, K_HOST
cdef int SEEN_BODY, SEEN_FORWARDED
cdef bytes HEALTH_OK, HEALTH_STOPPING
cdef str HTTP11, HTTP10, M_HEAD, V11, V10, LAST_PLAIN_HOST
cdef tuple LINE_KEYS
cdef bint CHECK_THREADS

@cython.locals(port=bint, c=Py_UCS4)
cpdef bint plain_host(str host)
cdef bint _known_plain_host(str host) except -1
@cython.locals(lowered=bytes)
cpdef bytes lower_name(bytes name)
@cython.locals(n=Py_ssize_t, i=Py_ssize_t, query=Py_ssize_t, c=Py_UCS4)
cdef Py_ssize_t _query_at(str uri) except -3


cdef class HttpConnection(Channel):
    cdef:
        object app
        public int fd
        dict base_environ       # the server's environ plus this client's address
        object parser           # httptools.HttpRequestParser driving our on_* methods
        public Exchange cur     # the request being parsed
        bytes url
        public list pending     # Exchange (or the int status of a refused request), in order
        public Exchange resp    # the request being answered
        public int wait         # W_NONE ... W_LINGER: what `deadline` is for
        public double deadline
        public double write_deadline   # 0, or when a client that stopped reading is dropped
        public Py_ssize_t served       # requests answered on this connection
        Py_ssize_t inflight     # its requests read in full and not answered yet (on the board too)
        bint in_head            # between a request's first byte and the end of its headers
        bint head_done          # a header section ended during the current feed
        Py_ssize_t head_bytes   # bytes read while in_head (bounds what httptools buffers)
        Py_ssize_t nheaders
        int seen                # SEEN_BODY, SEEN_FORWARDED: what on_header noted of this request
        Py_ssize_t header_bytes
        long long body_bytes
        public object write            # the write() start_response returns (bound once)
        public bint waiting            # an app thread waits on `cond` for this connection
        object cond                    # threading.Condition, made the first time one waits
        public int trusted             # 1: the peer is a proxy whose Forwarded headers count (--forwarded-allow-ips);
                                       # 0: it is not; -1: not asked yet
        bytes proxy_buf                # --proxy-protocol: the header so far (None once it is read)
        public bint asgi               # the app is an ASGI app
        public bint read_paused        # not reading now (_holds_input; a WebSocket's app is behind)
        dict scope_base                # ASGI: what every request's scope on this connection starts from
        list hlist                     # ASGI: the headers of the request being parsed, as the scope has them
        int pumping                    # _pump() calls on the stack
        public object ws               # after a WebSocket handshake: the session, which takes the input
        object hkey, htext             # the environ key and text on_header made of its last field (or None)
        str host                       # the request's Host field as the environ has it (None: none yet)
        dict line_env                  # base_environ plus the keys of a request line sent twice in a row
        bytes line_url                 # the last request line: its target, method and protocol
        str line_method, line_protocol
        list fields                    # the HEADER_MEMO entries of this request's fields, in order (None: not kept)
        bint reusing                   # its environ is kept_env, while its fields are kept_fields
        dict kept_env                  # the environ of the last request, handed back unchanged and unshared
        list kept_fields               # that request's `fields`
        unsigned long long kept_version   # kept_env's dict version when it was built

    cdef int _setup(self, HttpServer server, int fd, dict env) except -1
    @cython.locals(server=HttpServer, ex=Exchange, scope=dict, env=dict)
    cpdef on_message_begin(self)
    cpdef on_url(self, bytes url)
    @cython.locals(server=HttpServer)
    cdef int _count_field(self, bytes name, bytes value) except -1
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t)
    cpdef on_header(self, bytes name, bytes value)
    cdef int _header_again(self, bytes name, bytes value, str key, str text) except -1
    @cython.locals(env=dict, size=Py_ssize_t, combined=str)
    cdef int _store_header(self, str key, str text) except -1
    cdef int _field_kept(self, bytes name, bytes value, str key, str text) except -1
    @cython.locals(line=dict)
    cdef dict _new_environ(self)
    @cython.locals(ex=Exchange, entry=tuple)
    cdef int _unreuse(self, Py_ssize_t count) except -1
    @cython.locals(ex=Exchange, env=dict, server=HttpServer, settings=Settings, url=bytes, protocol=str, method=str,
                   version=str, same_line=bint)
    cpdef on_headers_complete(self)
    @cython.locals(server=HttpServer, uri=str, query=Py_ssize_t, scope=dict, line=dict, key=str)
    cdef int _request_line(self, Exchange ex, dict env, str method, str version, str protocol, bytes url,
                           bint same_line) except -1
    @cython.locals(server=HttpServer, host=str)
    cdef int _head_complete(self, Exchange ex, dict env, str protocol) except -1
    @cython.locals(path=str)
    cdef int _strip_root(self, dict env, str root) except -1
    @cython.locals(server=HttpServer, settings=Settings)
    cdef bint _trusts_peer(self) except -1
    @cython.locals(scope=dict)
    cdef int _forwarded(self, Exchange ex, dict env) except -1
    @cython.locals(server=HttpServer)
    cpdef on_body(self, bytes data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
    @cython.locals(server=HttpServer, last=Exchange, problem=int)
    cdef int _feed(self, object data, Py_ssize_t n) except -1
    @cython.locals(buf=bytes, env=dict, size=Py_ssize_t)
    cdef object _proxy_header(self, object data)
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
    cdef bint _writes_again(self) except -1
    cdef int _received(self, Exchange ex) except -1
    cdef int _unreceive(self) except -1
    @cython.locals(server=HttpServer, code=int, env=dict)
    cdef int _complete(self, Exchange ex) except -1
    cdef int _close_after(self) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cdef int _drop_pending(self) except -1
    cdef int _arm(self, int wait, double seconds) except -1
    cpdef int tick(self, double now) except -1
    cdef int _pump(self) except -1
    @cython.locals(ex=Exchange, server=HttpServer)
    cdef int _pump_all(self) except -1
    @cython.locals(server=HttpServer)
    cdef int _pump_end(self) except -1
    cpdef _pump_now(self)
    @cython.locals(ex=Exchange)
    cpdef double _call_age(self, double now) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cdef int _respond(self, object first) except -1
    @cython.locals(server=HttpServer, pool=AppPool, began='long long')
    cdef int _produce(self, Exchange ex, bint first) except -1
    @cython.locals(body=bytes)
    cdef int _answer_health(self, Exchange ex) except -1
    @cython.locals(ex=Exchange)
    cpdef _handed_back(self)
    cdef bint _wait_writable(self) except -1
    cdef int _produced(self) except -1
    cdef int _body_taken(self) except -1
    @cython.locals(ex=Exchange)
    cpdef long long _mark(self, int what) except? -1
    @cython.locals(ex=Exchange)
    cpdef int _ready(self, int what, long long mark) except? -2
    cpdef bint _wait_in_thread(self, int what) except -1
    cdef int _notify(self) except -1
    cpdef bint idle(self)
    cdef int _end(self) except -1
    @cython.locals(server=HttpServer)
    cpdef close(self)
    @cython.locals(ex=Exchange, cur=Exchange)
    cdef int _release(self) except -1

    # the parser (the compiled loop's Connection overrides these: _llhttp.pxi)
    cdef int _new_parser(self) except -1
    cdef int _parse(self, object data) except -1
    @cython.locals(raw=bytes, method=str)
    cdef str _method(self)
    cdef str _version(self)
    cdef object _input(self)
    cdef bint _keeps_alive(self) except -1

    # the loop's I/O (_parser.pyx)
    cdef int _on_event(self) except -1
    cdef bint _flush(self) except -1
    cdef bint _send_later(self) except -1
    cdef bint _sendfile_step(self) except -1
    cdef int _want_read(self) except -1
    cdef bint _shutdown_write(self) except -1
    cdef int _close_fd(self) except -1
    cdef int _drop_output(self) except -1
