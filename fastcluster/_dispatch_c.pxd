# The C side of _dispatch.py: Cython compiles that plain-Python file as fastcluster._dispatch_c with
# these declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._server_c cimport HttpServer, AppPool
from fastcluster._exchange_c cimport Exchange, CLOSED, HIGH_WATER, OPEN, PEER_CLOSED
from fastcluster._request_c cimport RequestBuilder

cdef object asgi_start    # load_asgi()
cdef int AWAIT_BODY, AWAIT_DRAINED
cdef object LazyInput, Demoted
cdef list HEALTH_HEADERS
cdef bytes HEALTH_OK, HEALTH_STOPPING
cdef bint CHECK_THREADS


cdef class AppDispatch(RequestBuilder):
    cdef:
        object app
        public Exchange resp           # the request whose response is being produced (its app code runs)
        public object write            # the write() start_response returns (bound once)
        public bint waiting            # an app thread waits on `cond` for this connection
        object cond                    # threading.Condition, made the first time one waits
        int pumping                    # _pump() calls on the stack
        bint passed_over               # its client closed while its request was deferred: it went to the back once (_client_left)

    @cython.locals(server=HttpServer, pool=AppPool, eager=bint)
    cdef int _produce(self, Exchange ex, bint first) except -1
    @cython.locals(body=bytes)
    cdef int _answer_health(self, Exchange ex) except -1
    @cython.locals(ex=Exchange)
    cpdef _handed_back(self)
    @cython.locals(ex=Exchange)
    cpdef double _call_age(self, double now) except -1
    cpdef _pump_now(self)
    cpdef bint _client_left(self) except -1
    cdef bint _wait_writable(self) except -1
    cdef int _produced(self) except -1
    @cython.locals(ex=Exchange)
    cpdef long long _mark(self, int what) except? -1
    @cython.locals(ex=Exchange)
    cpdef int _ready(self, int what, long long mark) except? -2
    cpdef bint _wait_in_thread(self, int what) except -1
    cdef int _notify(self) except -1
    @cython.locals(server=HttpServer, ex=Exchange)
    cpdef close(self)
    @cython.locals(server=HttpServer)
    cdef int _forget(self) except -1

    # the protocol's (_http.py)
    cdef int _complete(self, Exchange ex) except -1
