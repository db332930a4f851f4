# The C side of _server.py: Cython compiles that plain-Python file as fastcluster._server_c with
# these declarations (pure-Python mode with an augmenting .pxd). _parser.pyx subclasses HttpServer.

cimport cython
from fastcluster._clock cimport monotonic, ticks as _ticks, cpu_tick_rate as _cpu_tick_rate

cdef double DRAIN_LINGER, BALANCE_PAUSE, NESTED_WAIT, LONG_CALL, WAITS_FLOOR
cdef Py_ssize_t BALANCE_SLACK
cdef Py_ssize_t B_ACCEPTED
cdef Py_ssize_t B_HEADER, B_STRIDE, B_CONNS, B_NOT_ACCEPTING, B_RSS, B_BEAT, B_BUSY
cdef object rss_bytes, log
cdef dict ASGI_VERSION, FILE_EXTENSIONS
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
        public double waits     # moving share of recent calls that took more than LONG_CALL
        public unsigned long owner   # FASTCLUSTER_CHECK_THREADS: the thread that holds the loop (0: none)
        bint cpu_ticks          # ticks() reads the CPU's counter
        long long long_ticks    # LONG_CALL in ticks

    cdef int _setup(self, HttpServer server, int limit) except -1
    cdef bint _can_call(self)
    cdef long long _enter(self) except? -1
    @cython.locals(waits=double)
    cdef bint _leave(self, long long began) except -1
    cdef int _returned(self) except -1
    # the loop's primitives (_pool.pxi)
    cdef int _start(self) except -1
    cdef int _release(self) except -1
    cdef bint _reclaim(self) except -1
    cpdef block(self)
    cpdef bint follow(self) except -1
    cpdef finish(self)
    cpdef _spawn(self)


cdef class Settings:
    cdef:
        public double keep_alive
        public double graceful_timeout
        public double header_timeout
        public double body_timeout
        public double write_timeout
        public Py_ssize_t max_connections
        public Py_ssize_t max_request_line
        public Py_ssize_t max_headers
        public Py_ssize_t max_header_bytes
        public long long max_body      # 0: no limit
        public double timeout          # --timeout: an app call longer than this means a stuck worker
        public int threads             # --threads
        public object spill            # wsgi.SpillBudget: the disk request bodies may take
        public object trust            # wsgi.Trust: --forwarded-allow-ips, --forwarded-headers
        public str root_path           # --root-path ("" : none)
        public bint proxy_protocol     # --proxy-protocol: each connection starts with a PROXY header
        public bytes health            # --health-path as sent (None: off), and with a "?" after it
        public bytes health_query
        public long long ws_max_size   # WebSockets: --ws-max-size (0: no limit)
        public double ws_ping_interval
        public double ws_ping_timeout
        public bint tcp                # a TCP listener (client addresses, TCP_NODELAY)
        public tuple asgi_server       # the scope's "server"
        public object tls              # --certfile: the ssl.SSLContext each connection's session comes from
        public str scheme              # "https" with tls, else "http"
        public int wakeup_fd           # Python's signal wake-up fd (-1: none)
        public int master_pid          # the master (0: none): a worker does not outlive it
        public bint cpu_ticks          # _ticks() reads the CPU's counter
        public long long long_ticks    # LONG_CALL in ticks
        public bint read_first         # TCP_DEFER_ACCEPT is on: a new connection is read before it is watched


cdef class Admission:
    cdef:
        public bint balanced           # reads its peers' cells on the master's Board
        long long[::1] board
        public Py_ssize_t index        # this worker's slot on the board
        public double paused_until     # accepting is paused (balancing, or accept errors) until then (0: not)
        public bint error_logged       # an accept error was logged, and none succeeded since

    @cython.locals(i=Py_ssize_t, base=Py_ssize_t, count=cython.longlong, fewest=cython.longlong, best=Py_ssize_t)
    cpdef Py_ssize_t lighter_worker(self, Py_ssize_t mine, bint saturated, int threads) except -2
    cpdef bint master_stopping(self) except -1


cdef class HttpServer:
    cdef:
        public object listener  # the shared listening socket (kept open by us)
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
        public dict base_environ
        object date
        public bytes date_line
        public double now
        public bint accepting          # the listening socket is in our epoll set
        public long long[::1] cells    # this worker's cells (board.py layout): on the Board, or private
        public object access           # logs.AccessLog, or None (--access-log off)
        public unsigned long loop_thread   # FASTCLUSTER_CHECK_THREADS: the thread that took the loop last (0: none)
        public object fresh            # the connection being read right after its accept, not yet watched
        public tuple bells             # the workers' bells (eventfds from the master), by board index

    cdef int _configure(self, object listener, object app, object config, int wakeup_fd, int master_pid,
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
    cdef int _adopted(self, object conn, int fd) except -1
    cdef int _open(self, object listener, object access_log, Py_ssize_t board_index) except -1
    cdef int _read_fresh(self) except -1
    cdef int _watch_fresh(self) except -1
    cdef int _watch_listener(self, bint on) except -1
    cdef int _ring(self, Py_ssize_t index) except -1
    cdef int _ring_fd(self, int fd) except -1
    cdef int _accept(self) except -1
    cpdef _iterate(self, double limit)
    cpdef _signal(self)
    cpdef int _poll_fd(self) except -1
