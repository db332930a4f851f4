# The C side of _settings.py: Cython compiles that plain-Python file as fastcluster._settings_c with
# these declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._clock cimport cpu_tick_rate as _cpu_tick_rate

cdef double LONG_CALL
cdef Py_ssize_t B_HEADER, B_STRIDE, B_CONNS, B_NOT_ACCEPTING, B_BUSY, B_STOPPING
cpdef bint _kernel_uses_cpu_counter() except -1


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
        public dict http2              # HTTP/2's settings (None: --http 1)
        public bint http2_only         # --http 2: an HTTP/1.x request is refused (505)
        public object tls              # --certfile: the ssl.SSLContext each connection's session comes from
        public str scheme              # "https" with tls, else "http"
        public int wakeup_fd           # Python's signal wake-up fd (-1: none)
        public int master_pid          # the master (0: none): a worker does not outlive it
        public bint cpu_ticks          # _ticks() reads the CPU's counter
        public long long long_ticks    # LONG_CALL in ticks


cdef class Listener:
    cdef:
        public object sock             # the socket (its master's; closed when the worker stops)
        public int fd
        public bint tcp                # TCP (client addresses, TCP_NODELAY), else a unix socket
        public bint read_first         # TCP_DEFER_ACCEPT is on: a new connection is read before it is watched
        public dict base_environ       # what every request on it starts from (SERVER_NAME, SERVER_PORT)


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
