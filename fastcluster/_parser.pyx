# cython: language_level=3
"""The compiled request loop of a fastcluster worker.

One worker runs one `Server`: a level-triggered epoll over the shared listening
socket, a signal wake-up fd and its connections, driven with direct system calls
(epoll_wait, accept4, recv, writev, sendfile) instead of socket objects.  Each
`Connection` feeds what it reads to httptools; the callbacks queue complete
requests, and `_pump()` answers them strictly in order, writing the responses of
one read with one writev and pausing a streamed body whenever the socket is full.

The pure-Python twin, `_parser_py.py`, has the same classes and behaviour; the
shared WSGI pieces live in `wsgi.py`.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Copy
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport (PyUnicode_DATA, PyUnicode_DecodeLatin1, PyUnicode_GET_LENGTH, PyUnicode_KIND,
                              PyUnicode_READ)
from libc.errno cimport EAGAIN, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, errno
from libc.stdio cimport snprintf
from libc.string cimport memchr, memcpy
from libc.time cimport time as c_time
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.uio cimport iovec, writev
from posix.unistd cimport close as c_close, getppid, read as c_read
from posix.types cimport off_t

from ._syscalls cimport *

import logging
import os
import stat as _stat
from collections import deque as _deque

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from . import board as _board
from . import wsgi as _wsgi
from .config import Config as _Config
from .sockets import describe as _describe

IMPLEMENTATION = "cython"

# Python objects used per request, bound once to C globals
cdef object BodyBuffer = _wsgi.BodyBuffer
cdef object LazyInput = _wsgi.LazyInput
cdef object FileWrapper = _wsgi.FileWrapper
cdef object EMPTY_INPUT = _wsgi.EMPTY_INPUT
cdef dict HEADER_KEYS = _wsgi.HEADER_KEYS
cdef object header_key = _wsgi.header_key
cdef object split_target = _wsgi.split_target
cdef object status_line = _wsgi.status_line
cdef object simple_response = _wsgi.simple_response
cdef object log_app_error = _wsgi.log_app_error
cdef object Reject = _wsgi.Reject
cdef object check_head = _wsgi.check_head
cdef object error_response = _wsgi.error_response
cdef object log = _wsgi.log
cdef object deque = _deque
cdef bytes CONTINUE_LINE = _wsgi.CONTINUE_LINE
cdef bytes SERVER_HEADER = _wsgi.SERVER_HEADER
cdef int HAS_DATE = _wsgi.HAS_DATE
cdef int HAS_SERVER = _wsgi.HAS_SERVER
cdef int WANTS_CLOSE = _wsgi.WANTS_CLOSE

cdef double DRAIN_LINGER = 1.0    # on stop, idle connections get this long to send a request on its way
cdef double LINGER = 2.0          # a connection we end keeps reading (and dropping) input this long after our FIN

# This worker's cells on the board (board.py): offsets in its slot
cdef Py_ssize_t B_HEADER = _board.HEADER, B_STRIDE = _board.STRIDE
cdef Py_ssize_t B_CONNS = _board.CONNS, B_NOT_ACCEPTING = _board.NOT_ACCEPTING
cdef Py_ssize_t B_REQUESTS = _board.REQUESTS, B_IN_FLIGHT = _board.IN_FLIGHT
cdef Py_ssize_t B_BYTES_IN = _board.BYTES_IN, B_BYTES_OUT = _board.BYTES_OUT
cdef Py_ssize_t B_ACCEPTED = _board.ACCEPTED, B_RSS = _board.RSS, B_BEAT = _board.BEAT
cdef Py_ssize_t B_STATUS = _board.STATUS
cdef object refusal_cell = _board.refusal_cell
cdef object rss_bytes = _board.rss_bytes

cdef bytes FAILED_BODY = b"Internal Server Error\n"
cdef dict METHODS = {}
cdef dict PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
cdef str HTTP11 = PROTOCOLS["1.1"]
cdef dict STATUS_LINES = _wsgi._STATUS_LINES      # shared with wsgi.status_line, which fills it
cdef object learn_name = _wsgi._learn_name
cdef dict HEADER_NAMES = {}                       # app header name -> (b"Name: ", kind)
cdef int H_CONTENT_LENGTH = _wsgi.H_CONTENT_LENGTH
cdef int H_DATE = _wsgi.H_DATE
cdef int H_SERVER = _wsgi.H_SERVER
cdef int H_CONNECTION = _wsgi.H_CONNECTION


cdef tuple encode_app_headers(object headers):
    """The compiled twin of wsgi.encode_headers: the same rules and errors, checked in C."""
    cdef list parts = []
    cdef long long clen = -1
    cdef int flags = 0, kind
    cdef bytes data
    cdef const char* p
    cdef Py_ssize_t n
    for name, value in headers:
        entry = HEADER_NAMES.get(name)
        if entry is None:
            prefix, kind = learn_name(name)        # validates the name; ValueError otherwise
            entry = ((<str>prefix).encode("latin-1"), kind)
            if len(HEADER_NAMES) < 512:
                HEADER_NAMES[name] = entry
        kind = (<tuple>entry)[1]
        if type(value) is not str:
            raise TypeError("header %s value must be str, not %s" % (name, type(value).__name__))
        if kind:
            if kind == H_CONTENT_LENGTH:
                text = value.strip()
                if not (text.isascii() and text.isdigit()) or (clen >= 0 and int(text) != clen):
                    raise ValueError("invalid Content-Length %r" % value)
                if clen >= 0:
                    continue
                clen = int(text)
            elif kind == H_DATE:
                flags |= HAS_DATE
            elif kind == H_SERVER:
                flags |= HAS_SERVER
            elif kind == H_CONNECTION:
                if "close" in value.lower():
                    flags |= WANTS_CLOSE
                continue
            else:
                continue
        data = (<str>value).encode("latin-1")      # UnicodeEncodeError (a ValueError) if not latin-1
        p = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        if memchr(p, 13, n) != NULL or memchr(p, 10, n) != NULL or memchr(p, 0, n) != NULL:
            raise ValueError("header value contains CR, LF or NUL")
        parts.append((<tuple>entry)[0])
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts), clen, flags


cdef inline bint plain_host(str host):
    """A Host made only of letters, digits, '.', '-' and an optional :port; anything else
    goes through wsgi.check_head's full rule."""
    cdef Py_UCS4 c
    cdef bint port = False
    for c in host:
        if port:
            if not (c >= u'0' and c <= u'9'):
                return False
        elif c == u':':
            port = True
        elif not ((c >= u'a' and c <= u'z') or (c >= u'A' and c <= u'Z') or (c >= u'0' and c <= u'9')
                  or c == u'.' or c == u'-'):
            return False
    return True
cdef Py_ssize_t HEAD_SLACK = 4096   # request line, CRLFs and colons around the counted header bytes
cdef Py_ssize_t BALANCE_SLACK = 1   # a worker this many connections above an accepting peer leaves the next ones to it
cdef double BALANCE_PAUSE = 0.01    # by not accepting for this long (the kernel hands them to the peer instead)


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline str latin1(const char* data, Py_ssize_t size):
    return PyUnicode_DecodeLatin1(data, size, NULL)


cdef bint wait_fd(int fd, short events, double timeout) except -1:
    """Block until fd is ready (poll), running signal handlers on EINTR."""
    cdef pollfd p
    cdef int rc
    cdef double end = monotonic() + timeout
    p.fd = fd
    p.events = events
    while True:
        with nogil:
            rc = poll(&p, 1, <int>((end - monotonic()) * 1000))
        if rc >= 0:
            return rc > 0
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
        PyErr_CheckSignals()
        if monotonic() >= end:
            return False


@cython.freelist(64)
@cython.final
cdef class Request:
    @staticmethod
    cdef Request new(dict environ):
        cdef Request req = Request.__new__(Request)
        req.environ = environ
        req.keep_alive = True
        return req


cdef Py_ssize_t ACCESS_BUF = 65536
cdef char* HEX = b"0123456789abcdef"


cdef Py_ssize_t escaped_size(object text):
    """Room `text` may take once escaped (\\U0010ffff is the longest escape)."""
    return 10 * PyUnicode_GET_LENGTH(text)


cdef Py_ssize_t put_escaped(char* out, object text):
    """Copy `text` as logs.escape() writes it: printable ASCII as is, \\" and \\\\, the rest as
    \\xHH, \\uHHHH or \\UHHHHHHHH; returns the bytes written."""
    cdef unsigned int kind = PyUnicode_KIND(text)
    cdef void* data = PyUnicode_DATA(text)
    cdef Py_ssize_t i, j = 0, n = PyUnicode_GET_LENGTH(text)
    cdef unsigned int c
    for i in range(n):
        c = <unsigned int>PyUnicode_READ(kind, data, i)
        if 0x20 <= c <= 0x7e and c != 34 and c != 92:
            out[j] = <char>c
            j += 1
        elif c == 34 or c == 92:
            out[j] = 92
            out[j + 1] = <char>c
            j += 2
        elif c < 256:
            out[j] = 92
            out[j + 1] = 120        # x
            out[j + 2] = HEX[c >> 4]
            out[j + 3] = HEX[c & 15]
            j += 4
        else:
            j += snprintf(out + j, 11, b"\\u%04x" if c < 0x10000 else b"\\U%08x", c)
    return j


cdef inline char* put_chars(char* out, const char* data, Py_ssize_t size) noexcept:
    memcpy(out, data, size)
    return out + size


cdef inline char* put_number(char* out, long long value):
    """Write a non-negative integer in decimal; returns the end (snprintf costs 2,000 instructions)."""
    cdef char digits[24]
    cdef int n = 0
    if value < 0:
        value = 0
    while True:
        digits[n] = 48 + <char>(value % 10)
        n += 1
        value //= 10
        if not value:
            break
    while n:
        n -= 1
        out[0] = digits[n]
        out += 1
    return out


cdef inline object env_text(dict env, str key, object missing):
    value = env.get(key, missing)
    return value if type(value) is str else str(value)


@cython.final
cdef class AccessWriter:
    def __cinit__(self, log):
        self.log = log
        self.buf = <char*>PyMem_Malloc(ACCESS_BUF)
        if self.buf is NULL:
            raise MemoryError()
        self.pid = str(log.pid).encode()
        self.second = -1

    def __dealloc__(self):
        PyMem_Free(self.buf)

    def add(self, env, status, size, usecs):
        """line() for tests."""
        self.line(env, status, size, usecs)

    def flush_now(self):
        self.flush()

    cdef int line(self, dict env, int status, long long size, long long usecs) except -1:
        cdef long now = c_time(NULL)
        cdef char* p
        cdef Py_ssize_t need
        addr = env_text(env, "REMOTE_ADDR", "")
        if not addr:
            addr = "-"
        method = env.get("REQUEST_METHOD")
        if method is not None:
            method = env_text(env, "REQUEST_METHOD", "")
            uri = env_text(env, "RAW_URI", "")
            protocol = env_text(env, "SERVER_PROTOCOL", "")
        referer = env_text(env, "HTTP_REFERER", "-")
        agent = env_text(env, "HTTP_USER_AGENT", "-")
        if now != self.second:
            self.second = now
            self.stamp = self.log.stamp_for(now).encode()
        need = escaped_size(addr) + escaped_size(referer) + escaped_size(agent) + 160 + PyBytes_GET_SIZE(self.stamp)
        if method is not None:
            need += escaped_size(method) + escaped_size(uri) + escaped_size(protocol)
        if need > ACCESS_BUF - self.used:
            self.flush()
            if need > ACCESS_BUF:     # a giant line: rendered in Python instead, in order
                self.log.log(env, status, size, usecs / 1e6)
                return 0
        p = self.buf + self.used
        p += put_escaped(p, addr)
        p = put_chars(p, b" - - ", 5)
        p = put_chars(p, PyBytes_AS_STRING(self.stamp), PyBytes_GET_SIZE(self.stamp))
        p = put_chars(p, b' "', 2)
        if method is None:
            p = put_chars(p, b"-", 1)
        else:
            p += put_escaped(p, method)
            p = put_chars(p, b" ", 1)
            p += put_escaped(p, uri)
            p = put_chars(p, b" ", 1)
            p += put_escaped(p, protocol)
        p = put_number(put_chars(p, b'" ', 2), status)
        p = put_number(put_chars(p, b" ", 1), size) if size else put_chars(p, b" -", 2)
        p = put_chars(p, b' "', 2)
        p += put_escaped(p, referer)
        p = put_chars(p, b'" "', 3)
        p += put_escaped(p, agent)
        p = put_chars(p, b'" ', 2)
        p = put_chars(p, PyBytes_AS_STRING(self.pid), PyBytes_GET_SIZE(self.pid))
        p = put_number(put_chars(p, b" ", 1), usecs)
        p[0] = 10
        self.used = p + 1 - self.buf
        return 0

    cdef int flush(self) except -1:
        if self.used:
            block = PyBytes_FromStringAndSize(self.buf, self.used)
            self.used = 0
            self.log.write_block(block)
        return 0


@cython.final
cdef class Server:
    def __cinit__(self):
        self.epfd = -1
        self.rbuf = NULL

    def __init__(self, listener, app, config=None, wakeup_fd=-1, master_pid=0, tick=None, board=None,
                 board_index=-1, access_log=None):
        cdef long long[::1] mine
        config = config or _Config()
        self.listener = listener
        self.tick = tick
        self.lfd = listener.fileno()
        self.app = app
        self.keep_alive = config.keep_alive
        self.graceful_timeout = config.graceful_timeout
        self.header_timeout = config.header_timeout
        self.body_timeout = config.body_timeout
        self.write_timeout = config.write_timeout
        self.max_connections = config.max_connections
        self.max_request_line = config.max_request_line
        self.max_headers = config.max_headers
        self.max_header_bytes = config.max_header_bytes
        self.max_body = config.max_body
        self.wakeup_fd = wakeup_fd
        self.master_pid = master_pid
        self.conns = {}
        self.tcp = listener.family in (AF_INET, AF_INET6)
        _url, name, port, _short = _describe(listener)
        self.base_environ = _wsgi.base_environ(name, port, config.workers > 1)
        self.date = _wsgi.DateHeader()
        self.date_line = self.date.get()
        self.rbuf = <char*>PyMem_Malloc(RECV_SIZE)
        if self.rbuf is NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)
        self.now = monotonic()
        # The master's shared board (see master.Board): every worker's connection count and
        # whether it waits in epoll, so a worker can leave new connections to a lighter one.
        self.balanced = board is not None and board_index >= 0
        if self.balanced:
            self.board = memoryview(board).cast("q")
            self.board_index = board_index
            mine = self.board[B_HEADER + B_STRIDE * board_index:B_HEADER + B_STRIDE * (board_index + 1)]
        else:
            mine = _board.private_cells()
        self.cells_mem = mine
        self.cells = &mine[0]
        self.access = access_log
        if access_log is not None and access_log.default_format:
            self.writer = AccessWriter(access_log)

    def __dealloc__(self):
        if self.epfd >= 0:
            c_close(self.epfd)
        PyMem_Free(self.rbuf)

    cdef int _set_accepting(self, bint on) except -1:
        """Watch the listening socket or not: off when stopping, full, or out of descriptors."""
        cdef epoll_event ev
        if on != self.accepting:
            self.accepting = on
            if on:
                self._watch(self.lfd, EPOLLIN | EPOLLEXCLUSIVE)
            else:
                epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.lfd, &ev)
            self.cells[B_NOT_ACCEPTING] = 0 if on else 1
        return 0

    cpdef resume_accepting(self):
        if (not self.accepting and not self.stopping and self.now >= self.accept_paused_until
                and len(self.conns) < self.max_connections):
            self.accept_paused_until = 0.0
            self._set_accepting(True)

    cdef inline void _publish_count(self):
        self.cells[B_CONNS] = len(self.conns)

    cdef bint _lighter_worker_available(self):
        """True when a worker whose listening socket is registered (so the kernel hands it new
        connections while this one pauses) holds more than BALANCE_SLACK fewer connections."""
        cdef Py_ssize_t i, top = self.board[0], me = self.board_index, base
        cdef long long count, mine = len(self.conns) - BALANCE_SLACK
        for i in range(top):
            if i != me:
                base = B_HEADER + B_STRIDE * i
                count = self.board[base + B_CONNS]
                if 0 <= count < mine and self.board[base + B_NOT_ACCEPTING] == 0:
                    return True
        return False

    cdef int _watch(self, int fd, unsigned int events) except -1:
        cdef epoll_event ev
        ev.events = events
        ev.data.u64 = 0
        ev.data.fd = fd
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        return 0

    def serve(self, ready=None):
        """Run until stopped; `ready()` is called once the listening socket is watched."""
        cdef epoll_event events[MAX_EVENTS]
        cdef int n, i, fd, timeout
        cdef double next_tick, wake_at
        cdef dict conns = self.conns
        cdef Connection conn
        self.listener.setblocking(False)
        self._set_accepting(True)
        if self.wakeup_fd >= 0:
            self._watch(self.wakeup_fd, EPOLLIN)
        self.cells[B_BEAT] = <long long>(self.now * 1e6)
        self.cells[B_RSS] = rss_bytes()
        if ready is not None:
            ready()
        next_tick = self.now + 1.0
        try:
            while True:
                wake_at = next_tick
                if not self.accepting and self.accept_paused_until and self.accept_paused_until < wake_at:
                    wake_at = self.accept_paused_until
                timeout = <int>((wake_at - self.now) * 1000) + 1
                if timeout < 0:
                    timeout = 0
                with nogil:
                    n = epoll_wait(self.epfd, events, MAX_EVENTS, timeout)
                if n < 0:
                    if errno != EINTR:
                        PyErr_SetFromErrno(OSError)
                    n = 0
                    PyErr_CheckSignals()
                self.now = monotonic()
                if not self.accepting and self.accept_paused_until and self.now >= self.accept_paused_until:
                    self.resume_accepting()
                for i in range(n):
                    fd = events[i].data.fd
                    obj = conns.get(fd)
                    if obj is not None:
                        conn = <Connection>obj
                        conn.on_event()
                    elif fd == self.lfd:
                        self._accept()
                    else:
                        self._drain_wakeup()
                if self.stop_requested and not self.stopping:
                    self._begin_stop()
                    next_tick = self.now + DRAIN_LINGER
                if self.now >= next_tick:
                    next_tick = self.now + 1.0
                    self._tick()
                if self.stopping and (not conns or self.now >= self.deadline):
                    break
        finally:
            for obj in list(conns.values()):
                (<Connection>obj).close()
            if self.writer is not None:
                self.writer.flush()
            if self.access is not None:
                self.access.flush()

    cdef int _accept(self) except -1:
        cdef sockaddr_storage addr
        cdef socklen_t addrlen
        cdef int fd, i, one = 1
        cdef char host[INET6_ADDRSTRLEN + 1]
        cdef unsigned int port
        cdef epoll_event ev
        for i in range(ACCEPT_BATCH):
            if len(self.conns) >= self.max_connections:
                self._set_accepting(False)    # the kernel's backlog holds the rest meanwhile
                return 0
            addrlen = sizeof(addr)
            fd = accept4(self.lfd, <sockaddr*>&addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EAGAIN or errno == EINTR:
                    return 0
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    if not self.accept_error_logged:
                        self.accept_error_logged = True
                        log.error("accept failed: %s; pausing accepts for 0.5 s at a time", os.strerror(errno))
                    self._set_accepting(False)
                    self.accept_paused_until = self.now + 0.5
                    return 0
                continue  # ECONNABORTED and friends: that client is gone, take the next
            self.accept_error_logged = False
            env = PyDict_Copy(self.base_environ)
            if self.tcp:
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
                if addr.ss_family == AF_INET6:
                    inet_ntop(AF_INET6, &(<sockaddr_in6*>&addr).sin6_addr, host, sizeof(host))
                    port = ntohs((<sockaddr_in6*>&addr).sin6_port)
                else:
                    inet_ntop(AF_INET, &(<sockaddr_in*>&addr).sin_addr, host, sizeof(host))
                    port = ntohs((<sockaddr_in*>&addr).sin_port)
                env["REMOTE_ADDR"] = host.decode("ascii")
                env["REMOTE_PORT"] = str(port)
            else:
                env["REMOTE_ADDR"] = ""
            self._add(fd, env)
            if self.balanced and self._lighter_worker_available():
                # Keep-alive connections stay where they land: leave the next ones to a lighter
                # worker. (This one accepted the connection that woke it, and a worker only pauses
                # while another is registered, so some worker always takes new connections.)
                self._set_accepting(False)
                self.accept_paused_until = self.now + BALANCE_PAUSE
                return 0
        return 0

    def adopt(self, sock):
        """Serve an already-connected socket (fd passing, tests, benchmarks); takes ownership."""
        env = PyDict_Copy(self.base_environ)
        if self.tcp:
            host, port = sock.getpeername()[:2]
            env["REMOTE_ADDR"] = host
            env["REMOTE_PORT"] = str(port)
        else:
            env["REMOTE_ADDR"] = ""
        fd = sock.detach()
        os.set_blocking(fd, False)
        return self._add(fd, env)

    cdef Connection _add(self, int fd, dict env):
        """Serve a new connection: its object, its epoll registration, the board's counts."""
        cdef Connection conn = Connection.__new__(Connection)
        conn.setup(self, fd, env)
        self.conns[fd] = conn
        self._watch(fd, EPOLLIN)
        self.cells[B_ACCEPTED] += 1
        self._publish_count()
        return conn

    cdef int _log_access(self, dict env, int status, long long size, double secs) except -1:
        """One access log line: rendered in C for the default format, by the AccessLog otherwise."""
        if self.writer is not None:
            self.writer.line(env, status, size, <long long>(secs * 1e6))
        else:
            self.access.log(env, status, size, secs)
        return 0

    cdef int _drain_wakeup(self) except -1:
        cdef char buf[512]
        while c_read(self.wakeup_fd, buf, sizeof(buf)) > 0:
            pass
        return 0

    cdef int _tick(self) except -1:
        cdef double limit
        cdef Connection conn
        self.date_line = self.date.get()
        rss = rss_bytes()
        self.cells[B_BEAT] = <long long>(self.now * 1e6)
        self.cells[B_RSS] = rss
        if self.writer is not None:
            self.writer.flush()
        if self.access is not None:
            self.access.flush()
        if self.tick is not None:
            self.tick(self.requests, rss)
        if self.master_pid and getppid() != self.master_pid:
            self.stop_requested = True          # the master is gone: do not outlive it
        self.resume_accepting()
        for obj in list(self.conns.values()):
            conn = <Connection>obj
            if conn.lingering:
                if self.now >= conn.linger_until:
                    conn.close()
            elif self.now >= conn.deadline:
                conn.on_timeout()
            elif self.stopping and conn.idle():
                conn._end()     # after DRAIN_LINGER: a clean (lingering) close of what stayed idle
        return 0

    cdef int _begin_stop(self) except -1:
        cdef bint master_gone = self.master_pid and getppid() != self.master_pid
        self.stopping = True
        self.deadline = self.now + (min(self.graceful_timeout, 1.0) if master_gone else self.graceful_timeout)
        self._set_accepting(False)
        self.listener.close()
        # Connections stay open for DRAIN_LINGER: a client may have sent a request that is
        # not read yet (or just connected). Each response from now on says Connection: close;
        # the first tick after the linger closes the connections that stayed idle.
        return 0


@cython.final
cdef class Connection:
    cdef setup(self, Server server, int fd, dict env):
        self.server = server
        self.app = server.app
        self.fd = fd
        self.base_environ = env
        self.parser = HttpRequestParser(self)
        self.url = b""
        self.pending = deque()
        self.out = []
        self.mask = EPOLLIN
        self.reading = True
        self.deadline = server.now + server.header_timeout   # see on_timeout()
        self.clen = -1
        self.keep = True
        self.start_response = self._start_response

    # --- httptools callbacks ---

    def on_message_begin(self):
        self.cur = Request.new(PyDict_Copy(self.base_environ))
        self.cur.start = self.server.now
        self.url = b""
        self.in_head = True
        self.nheaders = 0
        self.header_bytes = 0
        if self.served:   # a kept-alive connection: the header deadline runs from the first byte
            self.deadline = self.server.now + self.server.header_timeout

    def on_url(self, bytes url):
        if self.url:
            self.url += url
        else:
            self.url = url
        if PyBytes_GET_SIZE(self.url) > self.server.max_request_line:
            raise Reject(414)

    def on_header(self, bytes name, bytes value):
        cdef const char* p
        cdef Py_ssize_t start, end
        self.nheaders += 1
        self.header_bytes += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
        if self.nheaders > self.server.max_headers or self.header_bytes > self.server.max_header_bytes:
            raise Reject(431)
        key = HEADER_KEYS.get(name)
        if key is None:
            key = header_key(name)
            if key is None:
                return
        p = PyBytes_AS_STRING(value)
        start = 0
        end = PyBytes_GET_SIZE(value)
        while start < end and (p[start] == 32 or p[start] == 9):
            start += 1
        while end > start and (p[end - 1] == 32 or p[end - 1] == 9):
            end -= 1
        text = latin1(p + start, end - start)
        env = self.cur.environ
        old = env.get(key)
        if old is None:
            env[key] = text
        else:
            env[key] = old + "," + text

    def on_headers_complete(self):
        cdef Request req = self.cur
        cdef dict env = req.environ
        cdef const char* u
        cdef Py_ssize_t ulen
        cdef const char* q
        parser = self.parser
        raw = parser.get_method()
        method = METHODS.get(raw)
        if method is None:
            method = METHODS[raw] = raw.decode("ascii")
        env["REQUEST_METHOD"] = method
        version = parser.get_http_version()
        protocol = PROTOCOLS.get(version)
        env["SERVER_PROTOCOL"] = protocol if protocol is not None else "HTTP/" + version
        u = PyBytes_AS_STRING(self.url)
        ulen = PyBytes_GET_SIZE(self.url)
        env["RAW_URI"] = latin1(u, ulen)
        if ulen and u[0] == 47 and memchr(u, 37, ulen) == NULL and memchr(u, 35, ulen) == NULL:
            # origin-form without '%' or '#': split at '?' without a Python call
            q = <const char*>memchr(u, 63, ulen)
            if q == NULL:
                env["PATH_INFO"] = env["RAW_URI"]
                env["QUERY_STRING"] = ""
            else:
                env["PATH_INFO"] = latin1(u, q - u)
                env["QUERY_STRING"] = latin1(q + 1, ulen - (q - u) - 1)
        else:
            env["PATH_INFO"], env["QUERY_STRING"] = split_target(self.url)
        req.keep_alive = parser.should_keep_alive() and self.server.keep_alive > 0
        req.head = method == "HEAD"
        req.http10 = version != "1.1"
        self.in_head = False
        self.head_done = True
        self.head_bytes = 0
        host = env.get("HTTP_HOST")
        if not (protocol is HTTP11 and host is not None and plain_host(host)
                and "HTTP_TRANSFER_ENCODING" not in env and "CONTENT_LENGTH" not in env):
            status = check_head(env, req.http10, self.server.max_body)   # the general case
            if status:
                raise Reject(status)
        if "CONTENT_LENGTH" in env or "HTTP_TRANSFER_ENCODING" in env:
            self.body_bytes = 0
            self.deadline = self.server.now + self.server.body_timeout
            expect = env.get("HTTP_EXPECT")
            if expect is not None and expect.lower() == "100-continue" and not req.http10:
                req.body = LazyInput(self._fill_body)
                env["wsgi.input"] = req.body
                req.early = True
                self.pending.append(req)
                self._received(req)
            else:
                req.body = BodyBuffer()
        else:
            env["wsgi.input"] = EMPTY_INPUT

    def on_body(self, bytes data):
        self.body_bytes += PyBytes_GET_SIZE(data)
        if self.server.max_body and self.body_bytes > self.server.max_body:
            raise Reject(413)
        self.deadline = self.server.now + self.server.body_timeout
        self.cur.body.add(data)

    def on_message_complete(self):
        cdef Request req = self.cur
        self.cur = None
        req.complete = True
        if req.early:
            req.body.finish()
        else:
            if req.body is not None:
                req.environ["wsgi.input"] = req.body.stream()
            self.pending.append(req)
            self._received(req)
        if not req.keep_alive:
            self.reading = False

    # --- reading ---

    def parse_only(self, data):
        """Run `data` through the parser and the request callbacks, answering nothing
        (the `parse` benchmark); returns how many requests it completed."""
        self.parser.feed_data(data)
        count = len(self.pending)
        self.pending.clear()
        self.server.cells[B_IN_FLIGHT] -= self.inflight
        self.inflight = 0
        return count

    def on_readable(self):
        """Handle one readiness event now (what the loop does when epoll reports this fd)."""
        self.server.now = monotonic()
        self.on_event()

    cdef int on_event(self) except -1:
        cdef ssize_t n
        if self.lingering:
            self._drop_input()
            return 0
        if self.mask == EPOLLOUT:
            self._pump()
            return 0
        n = recv(self.fd, self.server.rbuf, RECV_SIZE, 0)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                return 0
            self.close()
            return 0
        if n:
            self.server.cells[B_BYTES_IN] += n
            self._feed(n)
        else:
            self.reading = False
            self.eof = True
        self._pump()
        return 0

    cdef int _feed(self, Py_ssize_t n) except -1:
        data = PyMemoryView_FromMemory(self.server.rbuf, n, PyBUF_READ)
        self.head_done = False
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            # Upgrade/CONNECT: answered as a plain request, then the connection ends.
            if self.pending:
                (<Request>self.pending[-1]).keep_alive = False
            self.reading = False
            return 0
        except HttpParserError as exc:
            if not self.reading:
                self.extra_input = True   # bytes after a request that ends the connection: ignored
                return 0
            cause = exc.__context__
            if cause is not None and not isinstance(cause, Reject):
                log.error("request callback failed", exc_info=cause)
            self._reject(cause.status if isinstance(cause, Reject) else 400)
            return 0
        if self.in_head:
            # A header section still open: count its bytes so that a header which never ends
            # cannot grow httptools' buffer without bound. (A feed that also finished another
            # head is not counted; the next one is.)
            self.head_bytes = 0 if self.head_done else self.head_bytes + n
            if self.head_bytes > self.server.max_header_bytes + self.server.max_request_line + HEAD_SLACK:
                self._reject(431)
        return 0

    cdef int _reject(self, int status) except -1:
        """Stop parsing; after the responses already queued, answer `status` and close."""
        self.reading = False
        self.refused = True
        self.in_head = False
        self.cur = None
        self.pending.append(status)
        return 0

    cdef int _received(self, Request req) except -1:
        self.inflight += 1
        self.server.cells[B_IN_FLIGHT] += 1
        return 0

    cdef int _answered(self, Request req, int code) except -1:
        """The response to `req` is complete (or failed): the in-flight count and the access log."""
        if self.inflight:
            self.inflight -= 1
            self.server.cells[B_IN_FLIGHT] -= 1
        if self.server.access is not None:
            self.server._log_access(req.environ, code, self.sent, monotonic() - req.start)
        return 0

    cdef int on_timeout(self) except -1:
        """The connection's deadline passed: what it means depends on what it waits for."""
        if self.mask == EPOLLOUT or self.resp is not None:
            self.close()                     # the client stopped reading our response
        elif (self.cur is not None or not self.served) and not self.pending:
            self._reject(408)                # headers (or a body) too slow to arrive
            self._pump()
        else:
            self.close()                     # an idle keep-alive connection
        return 0

    def _fill_body(self):
        """Pull more of an Expect: 100-continue body while the app waits in wsgi.input.read()."""
        cdef Request req = self.resp
        cdef ssize_t n
        if not req.sent_continue and not self.headers_sent:
            req.sent_continue = True
            self._queue(CONTINUE_LINE)
            self._blocking_flush()
        if not self.reading or self.closed:
            return False
        if not wait_fd(self.fd, POLLIN, self.server.body_timeout):
            return False
        n = recv(self.fd, self.server.rbuf, RECV_SIZE, 0)
        if n < 0 and (errno == EAGAIN or errno == EINTR):
            return True
        if n <= 0:
            self.reading = False
            self.eof = n == 0
            return False
        self.server.cells[B_BYTES_IN] += n
        self._feed(n)
        return True

    # --- answering ---

    cdef int _pump(self) except -1:
        """Produce and send responses until done, or until the socket is full."""
        pending = self.pending
        cdef Request req
        while not self.closed:
            if self.out_size >= HIGH_WATER:
                if not self._flush():
                    return 0
            elif self.sending_file:
                if self.out:
                    if not self._flush():
                        return 0
                elif not self._sendfile_step():
                    return 0
            elif self.iter is not None:
                self._next_chunk()
            elif pending and not self.close_after:
                first = pending[0]
                if type(first) is not int:
                    req = <Request>first
                    if not (req.complete or req.early):
                        break
                pending.popleft()
                self._respond(first)
            else:
                break
        if self.closed:
            return 0
        if self.out and not self._flush():
            return 0
        if self.close_after or not self.reading or (
                self.server.stopping and self.cur is None and not pending):
            self._end()
            return 0
        if self.mask != EPOLLIN:
            self._want(EPOLLIN)
        if self.cur is None:      # between requests: the keep-alive timeout runs
            self.deadline = self.server.now + self.server.keep_alive
        return 0

    cdef int _respond(self, object first) except -1:
        cdef Request req
        cdef long long* cells = self.server.cells
        if type(first) is int:     # a request we refused: its status
            data = error_response(first, self.server.date_line)
            self._queue(data)
            self.close_after = True
            cells[B_STATUS + 3] += 1
            cells[<Py_ssize_t>refusal_cell(first)] += 1
            if self.server.access is not None:
                self.server._log_access(self.base_environ, first, 0, 0.0)
            return 0
        req = <Request>first
        self.served += 1
        self.server.requests += 1
        cells[B_REQUESTS] += 1
        self.resp = req
        self.keep = req.keep_alive and not self.server.stopping
        self.status = None
        self.headers_sent = False
        self.sent = 0
        self.chunked = False
        try:
            result = self.app(req.environ, self.start_response)
        except Exception:
            self._app_failed()
            return 0
        self.result = result
        if self.closed:
            self._close_result()
            return 0
        try:
            if type(result) is list or type(result) is tuple:
                self._respond_sequence(result)
                return 0
            if type(result) is FileWrapper and self._start_sendfile(result):
                return 0
            self.iter = iter(result)
        except Exception:
            self._app_failed()
        return 0

    cdef int _respond_sequence(self, object items) except -1:
        cdef Py_ssize_t total = 0
        if self.status is None:
            raise RuntimeError("the application returned without calling start_response()")
        for item in items:
            if type(item) is not bytes:
                raise TypeError("response body items must be bytes, not %s" % type(item).__name__)
            total += PyBytes_GET_SIZE(item)
        if not self.headers_sent:
            self._send_headers(total)
        for item in items:
            self._body(<bytes>item)
        self._finish()
        return 0

    cdef bint _start_sendfile(self, object wrapper) except -1:
        cdef long long size, offset
        try:
            fd = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return False
        if not _stat.S_ISREG(st.st_mode) or self.status is None:
            return False
        size = st.st_size - offset
        if self.headers_sent:
            if self.clen < 0:
                return False
        else:
            self._send_headers(size)
        if self.no_body:
            self._finish()
            return True
        self.sending_file = True
        self.file_fd = fd
        self.file_off = offset
        self.file_left = max(0, min(size, self.clen - self.sent))
        return True

    cdef bint _sendfile_step(self) except -1:
        cdef ssize_t n
        cdef off_t off = self.file_off
        while self.file_left > 0:
            n = sendfile(self.fd, self.file_fd, &off, min(self.file_left, SENDFILE_CHUNK))
            if n < 0:
                if errno == EAGAIN or errno == EINTR:
                    self.file_off = off
                    if errno == EAGAIN:
                        self._want(EPOLLOUT)
                        return False
                    continue
                self.close()
                return False
            if n == 0:
                break  # the file shrank: the body is short, so the connection must end
            self.file_left -= n
            self.sent += n
            self.server.cells[B_BYTES_OUT] += n
            self.deadline = self.server.now + self.server.write_timeout
        self.file_off = off
        self.sending_file = False
        self._finish()
        return True

    cdef int _next_chunk(self) except -1:
        try:
            data = next(self.iter)
        except StopIteration:
            self._finish()
            return 0
        except Exception:
            self._app_failed()
            return 0
        try:
            if type(data) is not bytes:
                raise TypeError("response body items must be bytes, not %s" % type(data).__name__)
            if not self.headers_sent:
                if not data:
                    return 0
                if self.status is None:
                    raise RuntimeError("the application yielded a body before calling start_response()")
                self._send_headers(-1)
                if self.no_body:
                    self._finish()
                    return 0
            self._body(<bytes>data)
        except Exception:
            self._app_failed()
        return 0

    def _start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        line = STATUS_LINES.get(status)
        if line is None:
            line = status_line(status)      # validates, then caches in STATUS_LINES
        block, clen, flags = encode_app_headers(headers)
        self.status = line
        self.headers = block
        self.clen = clen
        self.hflags = flags
        self.code = int((<str>status)[:3])
        return self.write

    def write(self, data):
        """The legacy write() callable that start_response returns."""
        if self.status is None or self.resp is None:
            raise RuntimeError("write() called before start_response()")
        if type(data) is not bytes:
            raise TypeError("write() takes bytes, not %s" % type(data).__name__)
        if not self.headers_sent:
            self._send_headers(-1)
        self._body(data)
        if self.out_size >= HIGH_WATER:
            self._blocking_flush()

    cdef int _send_headers(self, long long known_length) except -1:
        cdef Request req = self.resp
        cdef int code = self.code, flags = self.hflags
        cdef bint bodiless_status = code < 200 or code == 204 or code == 304
        parts = [self.status, self.headers]
        if not flags & HAS_DATE:
            parts.append(self.server.date_line)
        if not flags & HAS_SERVER:
            parts.append(SERVER_HEADER)
        if flags & WANTS_CLOSE or (req.early and not req.complete):
            self.keep = False   # (an unread 100-continue body cannot be skipped)
        if 100 <= code < 600:
            self.server.cells[B_STATUS + code // 100 - 1] += 1
        self.no_body = req.head or bodiless_status
        if self.clen < 0 and not bodiless_status:
            if known_length >= 0:
                self.clen = known_length
                parts.append(b"Content-Length: %d\r\n" % known_length)
            elif req.head:
                pass
            elif not req.http10:
                self.chunked = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep = False  # HTTP/1.0 without a length: the close ends the body
        if not self.keep:
            parts.append(b"Connection: close\r\n\r\n")
        elif req.http10:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self._queue(b"".join(parts))
        self.headers_sent = True
        return 0

    cdef int _body(self, bytes data) except -1:
        cdef long long size = PyBytes_GET_SIZE(data), room
        if not size or self.no_body:
            return 0
        if self.clen >= 0:
            room = self.clen - self.sent
            if size > room:
                size = room   # never more than the announced length
                if not size:
                    return 0
                data = data[:size]
            self.sent += size
            self._queue(data)
        elif self.chunked:
            self.sent += size
            if size < SMALL_CHUNK:
                self._queue(b"%x\r\n%b\r\n" % (size, data))
            else:
                self._queue(b"%x\r\n" % size)
                self._queue(data)
                self._queue(b"\r\n")
        else:
            self.sent += size
            self._queue(data)
        return 0

    cdef int _finish(self) except -1:
        """The app's body is complete: end the framing, close the iterable, reset."""
        cdef Request req
        if not self.headers_sent:
            self._send_headers(0)
        if self.chunked:
            self._queue(b"0\r\n\r\n")
        elif self.clen >= 0 and self.sent < self.clen and not self.no_body:
            self.keep = False   # short body: closing is the only way not to desync the client
        req = self.resp
        if req.early and not req.complete:
            self.keep = False   # the rest of the body was never read
        elif type(req.body) is BodyBuffer:
            req.body.discard()
        self._answered(req, self.code)
        self._close_result()
        self.resp = None
        self.status = None
        if not self.keep:
            self.close_after = True
        return 0

    cdef int _app_failed(self) except -1:
        cdef Request req = self.resp
        cdef bint keep
        log_app_error(req.environ)
        self._close_result()
        self.sending_file = False
        if self.headers_sent:
            # Part of the response is out: end the connection without a clean end of body,
            # so the client sees that it failed.
            self.keep = False
            self.close_after = True
        else:
            keep = self.keep and (req.complete or not req.early)
            self._queue(simple_response("500 Internal Server Error", FAILED_BODY, not keep, self.server.date_line))
            self.server.cells[B_STATUS + 4] += 1
            self.code = 500
            self.sent = PyBytes_GET_SIZE(FAILED_BODY)
            if not keep:
                self.close_after = True
        self._answered(req, self.code)
        self.resp = None
        self.status = None
        return 0

    cdef int _close_result(self) except -1:
        result = self.result
        self.result = None
        self.iter = None
        if result is not None and hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                log_app_error(self.resp.environ if self.resp is not None else {},
                              "error closing the response iterable")
        return 0

    # --- writing ---

    cdef int _queue(self, bytes data) except -1:
        if not self.closed:
            self.out.append(data)
            self.out_size += PyBytes_GET_SIZE(data)
        return 0

    cdef bint _flush(self) except -1:
        """Send queued output; False when the socket is full (EPOLLOUT armed) or the peer is gone."""
        cdef iovec iov[MAX_IOV]
        cdef list out = self.out
        cdef Py_ssize_t count, i, size
        cdef ssize_t n
        cdef bytes item
        while out:
            count = min(len(out), MAX_IOV)
            item = <bytes>out[0]
            if count == 1:
                n = send(self.fd, PyBytes_AS_STRING(item) + self.out_off,
                         PyBytes_GET_SIZE(item) - self.out_off, MSG_NOSIGNAL)
            else:
                iov[0].iov_base = PyBytes_AS_STRING(item) + self.out_off
                iov[0].iov_len = PyBytes_GET_SIZE(item) - self.out_off
                for i in range(1, count):
                    item = <bytes>out[i]
                    iov[i].iov_base = PyBytes_AS_STRING(item)
                    iov[i].iov_len = PyBytes_GET_SIZE(item)
                n = writev(self.fd, iov, <int>count)
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                if errno == EAGAIN:
                    self._want(EPOLLOUT)
                    return False
                self.close()
                return False
            self.out_size -= n
            self.server.cells[B_BYTES_OUT] += n
            self.deadline = self.server.now + self.server.write_timeout
            i = 0
            while n:
                size = PyBytes_GET_SIZE(<bytes>out[i]) - self.out_off
                if size <= n:
                    n -= size
                    self.out_off = 0
                    i += 1
                else:
                    self.out_off += n
                    n = 0
            del out[:i]
        return True

    cdef int _blocking_flush(self) except -1:
        while not self._flush():
            if self.closed:
                raise OSError(32, "client disconnected")
            if not wait_fd(self.fd, POLLOUT, self.server.write_timeout):
                self.close()
                raise OSError(110, "client stopped reading")
        return 0

    cdef int _want(self, unsigned int mask) except -1:
        cdef epoll_event ev
        if mask == EPOLLOUT:
            self.deadline = self.server.now + self.server.write_timeout
        if self.mask != mask:
            self.mask = mask
            ev.events = mask
            ev.data.u64 = 0
            ev.data.fd = self.fd
            if epoll_ctl(self.server.epfd, EPOLL_CTL_MOD, self.fd, &ev) < 0:
                PyErr_SetFromErrno(OSError)
        return 0

    # --- state ---

    cpdef bint idle(self):
        return self.cur is None and not self.pending and not self.out and self.resp is None

    cdef int _end(self) except -1:
        """Close after the last response: at once if nothing more can come from the client (it
        closed, or its last request ended the connection and nothing followed it), else a
        lingering close."""
        if self.eof or (not self.reading and not self.refused and not self.extra_input):
            self.close()
            return 0
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # response still on its way to the client. So: FIN first, then drop whatever the
        # client still sends until it closes too, or LINGER runs out (the tick closes then).
        self._release()
        if shutdown(self.fd, SHUT_WR) < 0:
            self.close()
            return 0
        self.lingering = True
        self.linger_until = self.server.now + LINGER
        self._want(EPOLLIN)
        return 0

    cdef int _drop_input(self) except -1:
        cdef ssize_t n
        while True:
            n = recv(self.fd, self.server.rbuf, RECV_SIZE, 0)
            if n < 0 and (errno == EAGAIN or errno == EINTR):
                return 0
            if n <= 0:
                break
            self.server.cells[B_BYTES_IN] += n
        self.close()
        return 0

    cpdef close(self):
        if self.closed:
            return
        self.closed = True
        self.server.conns.pop(self.fd, None)
        self._release()
        c_close(self.fd)
        self.server._publish_count()
        if not self.server.accepting:
            self.server.resume_accepting()

    cdef int _release(self) except -1:
        """Drop everything the connection holds for requests and responses."""
        cdef Request req
        self._close_result()
        for first in self.pending:
            if type(first) is not int:
                req = <Request>first
                if type(req.body) is BodyBuffer:
                    req.body.discard()
        if self.cur is not None and type(self.cur.body) is BodyBuffer:
            self.cur.body.discard()
        self.pending.clear()
        self.server.cells[B_IN_FLIGHT] -= self.inflight
        self.inflight = 0
        self.out.clear()
        self.out_off = 0
        self.sending_file = False
        self.cur = None
        self.start_response = None  # break the cycle self -> bound method -> self
        return 0


def encode_headers(headers):
    """wsgi.encode_headers as the compiled loop does it (exposed so the tests hold both to one spec)."""
    return encode_app_headers(headers)
