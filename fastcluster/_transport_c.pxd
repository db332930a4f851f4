# The C side of _transport.py: Cython compiles that plain-Python file as fastcluster._transport_c
# with these declarations (pure-Python mode with an augmenting .pxd).

cimport cython
from fastcluster._server_c cimport HttpServer
from fastcluster._exchange_c cimport Channel, Exchange, SendFile, LAST_IN, LINGERING, PEER_CLOSED

cdef enum:
    READ = 1          # EPOLLIN
    WRITE = 4         # EPOLLOUT

# what the read-side deadline is for (Transport.wait)
cdef enum:
    W_NONE = 0        # a request is complete and being answered: no read deadline
    W_HEADERS = 1     # a request's headers, from the accept or the request's first byte
    W_BODY = 2        # the next piece of a request body
    W_IDLE = 3        # the next request on a kept-alive connection
    W_LINGER = 4      # the client's close after our FIN

cdef double LINGER
cdef object _tls


cdef class Transport(Channel):
    cdef:
        public int fd
        public unsigned int mask       # the events we wait for (or will, once watched): READ, WRITE
        public bint duplex             # reads while it waits to write (a WebSocket); else one or the other
        public bint read_paused        # not reading now (the protocol's rule; a WebSocket's app is behind)
        public int wait                # W_NONE ... W_LINGER: what `deadline` is for
        public double deadline
        public double write_deadline   # 0, or when a client that stopped reading is dropped
        bytes proxy_buf                # --proxy-protocol: the header so far (None once it is read)
        object tls                     # a TLS connection's tls.Session (None: plain)

    @cython.locals(mask='unsigned int')
    cdef int _want_write(self) except -1
    @cython.locals(mask='unsigned int')
    cdef int _want_read(self) except -1
    cdef int _pause_reading(self) except -1
    cdef int _resume_reading(self) except -1
    cdef int _arm(self, int wait, double seconds) except -1
    cdef int _end(self) except -1
    cdef int _on_event(self) except -1
    cdef int _start_tls(self, object tls, object settings) except -1
    @cython.locals(handshake=bytes)
    cdef int _tls_feed(self, object data) except -1
    @cython.locals(n='long long', file=SendFile)
    cdef bint _sendfile_step(self, Exchange ex) except -1

    # the loop's I/O (_connection.pxi)
    cdef Py_ssize_t _read(self) except -3
    cdef int _feed_read(self, Py_ssize_t n) except -1
    cdef int _drop_input(self) except -1
    cdef bint _flush(self) except -1
    cdef bint _send_later(self) except -1
    cdef long long _send_file_part(self, SendFile file) except -2
    cdef int _add_sealed(self, bytes data) except -1
    cdef int _set_mask(self, unsigned int mask) except -1
    cdef bint _shutdown_write(self) except -1
    cdef bint _eof_waits(self) except -1
    cdef int _close_fd(self) except -1
    cdef int _drop_output(self) except -1
    cdef object _input(self)

    # the layers above (_request.py, _http.py)
    cdef int _feed(self, object data, Py_ssize_t n) except -1
    cdef int _stop_reading(self, int state) except -1
    cdef int _pump(self) except -1
    cdef object _proxy_header(self, object data)
    cdef dict _client_environ(self)
    cdef int _release(self) except -1
    cpdef close(self)
