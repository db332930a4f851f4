# The C side of _websocket.py: Cython compiles that plain-Python file as fastcluster._websocket_c
# with these declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._server_c cimport HttpServer
from fastcluster._exchange_c cimport (Channel, Exchange, HIGH_WATER, SERVER_HEADER,
                                      encode_asgi_headers)
from fastcluster._asgi_c cimport Ready, ready, READY_NONE, start_task, CALL_FAILED, resolve

cdef object log, QUIET, has_token, ClientDisconnected, Protocol, SERVER, PROTOCOL_OPEN, TEXT, BINARY, CONT, PONG
cdef bytes GUID, SWITCHING
cdef dict CONNECT, EXTENSIONS
cdef enum:
    HANDSHAKE = 0
    ACCEPTED = 1
    DENYING = 2
    ENDED = 3
cdef int GOING_AWAY, ABNORMAL, INTERNAL_ERROR

cdef int _codec() except -1
cpdef bint is_upgrade(dict env) except -1
@cython.locals(env=dict)
cpdef int handshake_problem(Exchange ex) except -1
@cython.locals(ws=WebSocket, scope=dict)
cpdef WebSocket upgrade(Channel conn, Exchange ex, bytes tail)


@cython.final
cdef class WebSocket:
    cdef:
        public Channel conn
        public Exchange ex
        public HttpServer server
        public object loop
        public object proto          # websockets' Protocol, once accepted
        public int stage             # HANDSHAKE ... ENDED
        public bint connected        # websocket.connect went to the app
        list inbox                   # messages the app has not received yet
        Py_ssize_t inbox_size
        list frags                   # a fragmented message's pieces so far
        bint frag_text
        list early                   # what came before the accept
        public int close_code
        public str close_reason
        public object task
        object waiter                # a future receive() waits on
        object drain                 # a future send() returned: resolved once the client catches up
        double last_in
        double ping_sent

    cpdef int start(self, object app) except -1
    cpdef int feed(self, object data) except -1
    cpdef int eof(self) except -1
    cdef int _events(self) except -1
    cdef int _deliver(self, bint text, bytes data) except -1
    cpdef receive(self)
    @cython.locals(message=dict)
    cdef dict _take(self)
    cdef dict _disconnect_message(self)
    @cython.locals(stage=int, ex=Exchange)
    cpdef send(self, dict message)
    @cython.locals(ex=Exchange, server=HttpServer, parts=list)
    cdef int _accept(self, object subprotocol, object headers) except -1
    @cython.locals(ex=Exchange)
    cdef int _refuse(self, int status) except -1
    @cython.locals(conn=Channel)
    cdef int _send_out(self, bint post) except -1
    cpdef int drained(self) except -1
    cdef int _end(self) except -1
    @cython.locals(ex=Exchange)
    cdef int _over(self) except -1
    cdef int _wake(self) except -1
    cpdef int disconnect(self) except -1
    @cython.locals(server=HttpServer)
    cpdef int tick(self, double now) except -1
    cpdef int task_done(self, object task) except -1
