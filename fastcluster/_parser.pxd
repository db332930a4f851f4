# The contract of the compiled loop: its classes' fields and C-level methods. The shared logic
# is cimported from the compiled builds of _server.py, _exchange.py, _transport.py, _request.py,
# _dispatch.py and _http.py; what is here is the I/O under it. The pure-Python twin (_parser_py.py) has the same classes and behaviour.

cimport cython
from ._syscalls cimport epoll_event
from fastcluster._server_c cimport HttpServer, AppPool
from fastcluster._settings_c cimport Listener
from fastcluster._threads cimport fc_pool_t, pthread_t
from fastcluster._exchange_c cimport Exchange, SendFile
from fastcluster._http_c cimport HttpConnection

include "_consts.pxi"


@cython.final
cdef class AccessWriter:
    # The default access log format, rendered in C into a buffer that goes to the AccessLog
    # (logs.py) in blocks; same bytes as logs.compile_access_format(DEFAULT_ACCESS_FORMAT).
    cdef:
        object log              # logs.AccessLog: stamps, writing, other formats
        char* buf
        Py_ssize_t used
        long second             # the second `stamp` is for
        bytes stamp
        bytes pid

    cdef int line(self, dict env, int status, long long size, long long usecs) except -1
    cdef int flush(self) except -1


cdef class Pool(AppPool):
    cdef:
        fc_pool_t* st           # the token, the spare threads' semaphore, the monitor's state
        pthread_t monitor
        bint monitoring

    cdef int _start(self) except -1
    cdef int _stop_monitor(self) noexcept
    cdef int _release(self) except -1
    cdef bint _reclaim(self) except -1
    cdef bint _left(self) except -1
    cdef double _load(self) except -1.0
    cdef double _pressure(self) except -1.0
    cdef int _restless(self) except -1
    cdef bint _held(self) except -1
    cpdef block(self)
    cpdef bint follow(self) except -1
    cpdef finish(self)
    cpdef _spawn(self)


cdef class Server(HttpServer):
    cdef:
        int epfd
        int efd                 # an eventfd: app threads wake the loop's wait with it (_signal)
        int bell_fd             # this worker's own bell, or -1
        char* rbuf              # every connection's recv() lands here, then goes to httptools
        AccessWriter writer     # the C renderer, when the access log has the default format
        bint batching           # in _iterate's batch of events: answers are sent after it
        list later              # the connections whose answers wait for the batch's end
        long long batch_began   # when the batch began (or answers waiting last went out), in ticks
        long long later_ticks   # how long answers may wait for the batch's end, in ticks
        public int batch_events # events the next wait takes at most: MAX_EVENTS, or 1 after a long batch

    cdef int _open(self, object access_log, Py_ssize_t board_index) except -1
    cdef int _watch_wakers(self) except -1
    cdef int _close_poll(self) except -1
    cdef int _watch_listener(self, int fd, bint on) except -1
    cdef int _send_waiting(self) except -1
    cdef int _ring_fd(self, int fd) except -1
    cpdef _iterate(self, double limit)
    cpdef _signal(self)
    cpdef int _poll_fd(self) except -1
    cdef int _watch(self, int fd, unsigned int events) except -1
    cdef bint _accept_from(self, Listener listener) except -1
    cdef Connection _add(self, int fd, dict env, Listener listener)
    cdef int _read_fresh(self) except -1
    cdef int _watch_fresh(self) except -1
    cdef int _log_access(self, dict env, int status, long long size, double secs) except -1
    cdef int _flush_access(self) except -1
    cdef int _drain_wakeup(self) except -1
    cdef int _drain_eventfd(self) except -1
    cdef int _drain_bell(self) except -1


cdef enum:
    LL_STATE_SIZE = 256        # bytes kept for an llhttp_t (llhttp 9's is under 100)

cdef struct CParser:
    char state[LL_STATE_SIZE]  # the llhttp_t, first, so that its address is the struct's
    void* owner                # the Connection that embeds this (borrowed: it owns the struct)


cdef class Connection(HttpConnection):
    cdef:
        list out                # bytes waiting to be sent, in order; out[0] from out_off
        Py_ssize_t out_off
        bint watched            # registered with the epoll (a fresh connection is not, yet)
        bint nodelay            # TCP_NODELAY is set (or is nothing to set: a unix socket)
        CParser cp              # llhttp's state, driven directly (_llhttp.pxi), unless it is off
        bytes hname, hvalue     # the header field being read, in pieces
        Py_ssize_t hindex       # its position in the head (HEADER_MEMO, _llhttp.pxi)
        object parse_failure    # what a callback raised, for the HttpParserError that follows
        Py_ssize_t rlen         # _feed(None, n): the server's read buffer holds the input, rlen bytes
        bint later              # in the server's `later`: its output goes out after the batch

    cdef setup(self, Server server, int fd, dict env)
    cdef Py_ssize_t _read(self) except -3
    cdef int _feed_read(self, Py_ssize_t n) except -1
    cdef int _queue(self, bytes data) except -1
    cdef bint _flush(self) except -1
    cdef bint _send_later(self) except -1
    cdef long long _send_file_part(self, SendFile file) except -2
    cdef int _set_mask(self, unsigned int mask) except -1
    cdef bint _shutdown_write(self) except -1
    cdef int _drop_input(self) except -1
    cdef int _close_fd(self) except -1
    cdef int _drop_output(self) except -1
