# The C side of _asgi.py: Cython compiles that plain-Python file as fastcluster._asgi_c with these
# declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._clock cimport monotonic
from fastcluster._exchange_c cimport Channel, Exchange, PEER_CLOSED, HIGH_WATER, encode_asgi_headers
from fastcluster._server_c cimport HttpServer

cdef object log, Task, _capture, ClientDisconnected
cdef str TASK_NAME, CALL_FAILED
cdef bytes CONTINUE_LINE
cdef dict DISCONNECT, EMPTY_BODY
cdef frozenset NOT_TRAILERS
cdef bint EAGER_START
cdef Py_ssize_t COPY_PIECE


cpdef int resolve(object future) except -1


@cython.final
cdef class Ready:
    cdef public object value


cpdef Ready ready(object value)
cdef Ready READY_NONE


@cython.final
cdef class BodyQueue:
    cdef:
        public list parts
        public Py_ssize_t size      # bytes waiting in parts
        public bint done            # the parser saw the end of the body
        public bint closed          # the exchange is over: more of the body is dropped
        public object waiter        # a future receive() waits on

    cpdef Py_ssize_t add(self, object data) except -1
    cpdef int finish(self) except -1
    cpdef int wake(self) except -1
    @cython.locals(parts=list)
    cpdef bytes take(self)
    cpdef int discard(self) except -1


@cython.final
cdef class Cycle:
    cdef:
        public Exchange ex
        public object loop
        public bint started         # http.response.start went through
        public bint completed       # the last body piece went through
        public bint disconnected
        public bint delivered       # the whole body went to the app
        public bint over            # the exchange is back with the connection
        public object task
        public object waiter        # a future _disconnect_later waits on
        public object drain         # a future send() returned: resolved once the client catches up
        public list trailers        # "trailers": True in http.response.start: their encoded lines, until sent

    @cython.locals(ex=Exchange, body=BodyQueue, conn=Channel)
    cpdef receive(self)
    @cython.locals(ex=Exchange, body=BodyQueue)
    cdef dict _message(self)
    @cython.locals(ex=Exchange, conn=Channel)
    cpdef send(self, dict message)
    @cython.locals(ex=Exchange, lines=list, conn=Channel, stream=object)
    cdef object _send_trailers(self, dict message)
    cpdef int drained(self) except -1
    @cython.locals(ex=Exchange)
    cdef int _complete(self) except -1
    @cython.locals(body=BodyQueue)
    cdef int _wake(self) except -1
    cpdef int input_ended(self) except -1
    @cython.locals(ex=Exchange, silent=bint)
    cpdef int refused(self) except -1
    @cython.locals(ex=Exchange)
    cpdef int disconnect(self) except -1
    @cython.locals(ex=Exchange)
    cpdef int task_done(self, object task) except -1


cpdef object start_task(object loop, object coro, bint eager=*)
@cython.locals(cycle=Cycle)
cpdef int start(Exchange ex, object app, object loop) except -1


cdef class EventLoopDriver:
    cdef:
        HttpServer server
        public object loop             # the asyncio (or uvloop) event loop
        public object state            # the lifespan's state (a dict), or None
        bint soon                      # a call_soon of turn is pending
        object failure                 # an exception raised in an event loop callback
        object timer                   # the event loop's TimerHandle for _on_timer
        double timer_at
        object over                    # the future that ends the serving task (_end)

    cpdef post(self)
    cpdef wake(self)
    cpdef run(self)
    cdef int _callback_turn(self) except -1
    cdef int _after_turn(self) except -1
    cdef int _arm_timer(self, double delay) except -1
    cdef int _crashed(self) except -1
    cdef int _end(self) except -1
