# The contract of the compiled loop: fields and C-level methods of its classes.
# The pure-Python twin (_parser_py.py) has the same classes, attributes and behaviour.

cimport cython
from ._syscalls cimport epoll_event

include "_consts.pxi"

cdef class Connection


@cython.final
cdef class Request:
    cdef:
        dict environ
        bint keep_alive         # the client allows another request after this one
        bint head
        bint http10             # HTTP/1.0 (or older): no chunked, no 100-continue
        bint complete           # the parser has seen the end of the message
        bint early              # dispatched at headers-complete (Expect: 100-continue)
        bint sent_continue
        object body             # BodyBuffer, LazyInput or None
        double start            # monotonic time of the read that brought its first byte

    @staticmethod
    cdef Request new(dict environ)


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


@cython.final
cdef class Server:
    cdef:
        object listener         # the shared listening socket object (kept open by us)
        int lfd
        int epfd
        public object app
        object tick             # called once a second with the number of requests served and the RSS
        public double keep_alive
        public double graceful_timeout
        double header_timeout
        double body_timeout
        double write_timeout
        Py_ssize_t max_connections
        Py_ssize_t max_request_line
        Py_ssize_t max_headers
        Py_ssize_t max_header_bytes
        long long max_body      # 0: no limit
        int wakeup_fd
        int master_pid
        public bint stop_requested   # set from a signal handler; the loop acts on it
        public bint stopping
        double deadline
        public dict conns            # fd -> Connection
        public unsigned long long requests
        bint tcp
        dict base_environ
        object date
        bytes date_line
        char* rbuf
        double now
        public bint accepting    # the listening socket is in our epoll set
        double accept_paused_until
        bint accept_error_logged
        bint balanced           # reads its peers' cells on the master's Board (accept balancing)
        long long[::1] board
        Py_ssize_t board_index
        long long* cells        # this worker's cells (board.py layout): on the Board, or private ones
        object cells_mem        # keeps the memory behind `cells` alive
        public object access    # logs.AccessLog, or None (--access-log off)
        AccessWriter writer     # the C renderer, when the access log has the default format

    cdef int _set_accepting(self, bint on) except -1
    cdef void _publish_count(self)
    cdef bint _lighter_worker_available(self)
    cpdef resume_accepting(self)
    cdef int _accept(self) except -1
    cdef Connection _add(self, int fd, dict env)
    cdef int _log_access(self, dict env, int status, long long size, double secs) except -1
    cdef int _drain_wakeup(self) except -1
    cdef int _tick(self) except -1
    cdef int _begin_stop(self) except -1
    cdef int _watch(self, int fd, unsigned int events) except -1


@cython.final
cdef class Connection:
    cdef:
        Server server
        object app
        int fd
        dict base_environ       # the server's environ plus this client's address
        object parser           # httptools.HttpRequestParser driving our callbacks
        Request cur             # the request being parsed
        bytes url
        object pending          # deque of Request (or the int status of a refused one), in order
        list out                # bytes waiting to be sent, in order; out[0] from out_off
        Py_ssize_t out_off
        Py_ssize_t out_size
        unsigned int mask       # the epoll events we are registered for
        bint reading            # False after EOF, a parse error, or a request that ends the connection
        bint eof                # the client closed its side
        bint refused            # we refused a request (parse error, limit, timeout)
        bint extra_input        # bytes arrived after a request that ended the connection
        bint lingering          # we sent FIN and only drain the input until the client closes too
        double linger_until
        bint closed
        bint close_after        # close once the queued output is sent
        double deadline         # header, body, write or keep-alive deadline (see on_timeout)
        Py_ssize_t served       # requests answered on this connection
        Py_ssize_t inflight     # its requests read in full and not answered yet (on the board too)
        bint in_head            # between a request's first byte and the end of its headers
        bint head_done          # a header section ended during the current feed
        Py_ssize_t head_bytes   # bytes read while in_head (bounds what httptools buffers)
        Py_ssize_t nheaders
        Py_ssize_t header_bytes
        long long body_bytes
        # the response being produced
        Request resp
        object result
        object iter
        bint sending_file
        int file_fd
        long long file_off
        long long file_left
        bytes status
        bytes headers
        int hflags
        int code
        long long clen          # -1: the app gave no Content-Length
        long long sent
        bint headers_sent
        bint chunked
        bint no_body
        bint keep
        public object start_response

    cdef setup(self, Server server, int fd, dict env)
    cdef int on_event(self) except -1
    cdef int _feed(self, Py_ssize_t n) except -1
    cdef int _reject(self, int status) except -1
    cdef int _received(self, Request req) except -1
    cdef int _answered(self, Request req, int code) except -1
    cdef int on_timeout(self) except -1
    cdef int _pump(self) except -1
    cdef int _respond(self, object req) except -1
    cdef int _respond_sequence(self, object items) except -1
    cdef bint _start_sendfile(self, object wrapper) except -1
    cdef bint _sendfile_step(self) except -1
    cdef int _next_chunk(self) except -1
    cdef int _send_headers(self, long long known_length) except -1
    cdef int _body(self, bytes data) except -1
    cdef int _finish(self) except -1
    cdef int _app_failed(self) except -1
    cdef int _close_result(self) except -1
    cdef int _queue(self, bytes data) except -1
    cdef bint _flush(self) except -1
    cdef int _blocking_flush(self) except -1
    cdef int _want(self, unsigned int mask) except -1
    cdef int _end(self) except -1
    cdef int _drop_input(self) except -1
    cdef int _release(self) except -1
    cpdef bint idle(self)
    cpdef close(self)
