# The C side of _server.py: Cython compiles that plain-Python file as fastcluster._server_c with
# these declarations (pure-Python mode with an augmenting .pxd). _parser.pyx subclasses HttpServer.

cimport cython
from fastcluster._clock cimport monotonic, ticks as _ticks
from fastcluster._settings_c cimport Settings, Listener, Admission

cdef double DRAIN_LINGER, BALANCE_PAUSE, NESTED_WAIT, SHARE_MAX, ASLEEP, PRESSURE_MAX, SLEEPY_FLOOR
cdef Py_ssize_t BALANCE_SLACK
cdef Py_ssize_t B_ACCEPTED
cdef Py_ssize_t B_CONNS, B_NOT_ACCEPTING, B_RSS, B_BEAT, B_BUSY
cdef object rss_bytes, log
cdef dict ASGI_VERSION, HTTP_EXTENSIONS
cdef bint CHECK_THREADS
cdef object _get_ident
cpdef _fail_worker()

cdef class HttpServer


cdef class AppPool:
    cdef:
        public HttpServer server
        public int limit        # app calls at once (--threads)
        public int total        # threads in the pool, the serve() caller's included
        public int busy         # app calls begun and not handed back to the loop yet
        public unsigned long owner   # FASTCLUSTER_CHECK_THREADS: the thread that holds the loop (0: none)
        public double sleepy    # moving share of recent calls the monitor handed over as sleepers
        unsigned long calls     # app calls begun

    cdef int _setup(self, HttpServer server, int limit) except -1
    @cython.locals(busy=int, load=double, restless=int)
    cdef bint _can_call(self) except -1
    @cython.locals(eager=bint)
    cdef bint _enter(self) except -1
    @cython.locals(took=bint, sleeper=bint, sleepy=double)
    cdef bint _leave(self, bint eager) except -1
    cdef int _returned(self) except -1
    # the loop's primitives (_pool.pxi)
    cdef int _start(self) except -1
    cdef int _release(self) except -1
    cdef bint _reclaim(self) except -1
    cdef bint _left(self) except -1
    cdef double _load(self) except -1.0
    cdef double _pressure(self) except -1.0
    cdef int _restless(self) except -1
    cdef bint _held(self) except -1
    cdef bint _proven(self) except -1
    cpdef block(self)
    cpdef bint follow(self) except -1
    cpdef finish(self)
    cpdef _spawn(self)


cdef class HttpServer:
    cdef:
        public list listeners   # Listener: the shared listening sockets (kept open by us), one per --bind
        public object app
        public Settings settings       # limits, timeouts, flags: fixed before serving
        object tick             # called once a second with the number of requests served and the RSS
        public AppPool pool            # None with --threads 1
        public object driver           # an ASGI app's event loop runs this loop (_asgi.EventLoopDriver), or None
        public Admission admission     # accept pauses and balancing against the other workers
        public object posted           # deque of connections app threads hand back (or want flushed)
        public object deferred         # deque of connections with a request waiting for an app call
        public list orphans            # closed connections whose app call still runs (--timeout)
        public int nested              # depth of nested loop runs (an app call waiting, --threads 1)
        public object turn             # the deferred connection being dispatched (_after_events), or None
        public Py_ssize_t waiting      # len(deferred)
        public double next_tick
        public bint finished           # the loop is over (--threads > 1: the last thread ended it)
        public bint stop_requested     # set from a signal handler; the loop acts on it
        public bint stopping
        public double deadline         # stopping: when the grace time is up
        public dict conns              # fd -> Connection
        public unsigned long long requests
        object date
        public bytes date_line
        public double now
        public bint accepting          # the listening sockets are in our epoll set
        public long long[::1] cells    # this worker's cells (board.py layout): on the Board, or private
        public object access           # logs.AccessLog, or None (--access-log off)
        public unsigned long loop_thread   # FASTCLUSTER_CHECK_THREADS: the thread that took the loop last (0: none)
        public object fresh            # the connection being read right after its accept, not yet watched
        public tuple bells             # the workers' bells (eventfds from the master), by board index

    cdef int _configure(self, object listeners, object app, object config, int wakeup_fd, int master_pid,
                        object tick, object board, Py_ssize_t board_index, object access_log) except -1
    cdef int _member(self, bint leading) except -1
    cpdef resume_accepting(self)
    cdef int _publish_count(self) except -1
    cpdef int _holding(self) except -1
    cpdef int _check_thread(self, str what) except -1
    @cython.locals(threads=int, saturated=bint)
    cpdef Py_ssize_t _lighter_worker(self) except -2
    cdef bint _accepted(self) except -1
    cdef int _rung(self) except -1
    cdef int _accept_failed(self, int err) except -1
    cdef int _wait_ms(self, double limit) except? -1
    cdef double _wake_at(self) except? -1
    cdef int _woke(self, double now) except -1
    cdef int _after_events(self) except -1
    cpdef _post(self, object conn)
    cdef int _defer(self, object conn) except -1
    cpdef bint _await(self, object conn, int what) except -1

    @cython.locals(now=double, stuck=bint)
    cdef int _tick(self) except -1
    cpdef bint master_stopping(self) except -1
    @cython.locals(count=Py_ssize_t)
    cdef int _begin_stop(self) except -1
    cdef bint _done(self)
    cdef int _log_access(self, dict env, int status, long long size, double secs) except -1
    cdef int _flush_access(self) except -1
    cdef int _serve_start(self, object ready) except -1
    cdef int _serve_end(self) except -1
    cpdef int use_asyncio(self, object loop, object state=*) except -1
    cpdef int use_tls(self, object context) except -1
    @cython.locals(client=tuple)
    cpdef dict _scope_base(self, dict env)
    cpdef request_stop(self)

    # the loop's I/O (_parser.pyx)
    cdef int _watch_wakers(self) except -1
    cdef int _close_poll(self) except -1
    cdef int _set_accepting(self, bint on) except -1
    cdef int _batch_done(self, bint incoming) except -1
    cdef bint _full(self) except -1
    cdef int _adopted(self, object conn, int fd, bint read_first) except -1
    @cython.locals(listener=Listener)
    cdef bint _is_listener(self, int fd) except -1
    @cython.locals(listener=Listener)
    cdef int _accept(self) except -1
    cdef bint _accept_from(self, Listener listener) except -1
    cdef int _open(self, object access_log, Py_ssize_t board_index) except -1
    cdef int _read_fresh(self) except -1
    cdef int _watch_fresh(self) except -1
    cdef int _watch_listener(self, int fd, bint on) except -1
    cdef int _ring(self, Py_ssize_t index) except -1
    cdef int _ring_fd(self, int fd) except -1
    cpdef _iterate(self, double limit)
    cpdef _signal(self)
    cpdef int _poll_fd(self) except -1
