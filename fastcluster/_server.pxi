# The compiled loop's Server (included by _parser.pyx): the epoll wait, accept4 and adopt, under
# the shared HttpServer (_server.py), which holds the settings, counters, timers and balancing.


cdef class Server(HttpServer):
    def __cinit__(self):
        self.epfd = -1
        self.efd = -1
        self.bells = ()
        self.bell_fd = -1
        self.rbuf = NULL
        self.later = []

    cdef int _open(self, object access_log, Py_ssize_t board_index) except -1:
        self.bell_fd = self.bells[board_index] if 0 <= board_index < len(self.bells) else -1
        self.rbuf = <char*>PyMem_Malloc(RECV_SIZE)
        if self.rbuf is NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            PyErr_SetFromErrno(OSError)
        self.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.efd < 0:
            PyErr_SetFromErrno(OSError)
        self.now = monotonic()
        if access_log is not None and access_log.default_format:
            self.writer = AccessWriter(access_log)
        if self.settings.threads > 1:
            self.pool = Pool(self, self.settings.threads)
        self.later_ticks = <long long>(self.settings.long_ticks * LATER_SHARE)
        self.batch_events = MAX_EVENTS
        return 0

    def __dealloc__(self):
        if self.epfd >= 0:
            c_close(self.epfd)
        if self.efd >= 0:
            c_close(self.efd)
        PyMem_Free(self.rbuf)

    cdef int _watch_wakers(self) except -1:
        if self.settings.wakeup_fd >= 0:
            self._watch(self.settings.wakeup_fd, EPOLLIN)
        self._watch(self.efd, EPOLLIN)
        if self.bell_fd >= 0:
            self._watch(self.bell_fd, EPOLLIN)
        return 0

    cdef int _close_poll(self) except -1:
        return 0                 # (the epoll set and the eventfd close with the object: __dealloc__)

    cpdef _iterate(self, double limit):
        cdef epoll_event events[MAX_EVENTS]
        cdef int n, i, fd
        cdef long long began
        cdef bint incoming = False
        cdef int timeout = 0 if self.later else self._wait_ms(limit)
        cdef dict conns = self.conns
        if self.fresh is not None:
            self._watch_fresh()     # a wait inside its request's app call, or another thread's turn
        if timeout:
            with nogil:
                n = epoll_wait(self.epfd, events, self.batch_events, timeout)
        else:
            n = epoll_wait(self.epfd, events, self.batch_events, 0)
        if n < 0:
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
            n = 0
            PyErr_CheckSignals()
        self._woke(monotonic())
        # (answers wait for the batch's end: Connection._send_later. A connection left in `later`
        # by another thread's batch, one that lost the loop in an app call, is sent now: the wait
        # above did not wait)
        self.batching = True
        self.batch_began = began = ticks(self.settings.cpu_ticks)
        for i in range(n):
            fd = events[i].data.fd
            obj = conns.get(fd)
            if obj is not None:
                (<Connection>obj)._on_event()
            elif fd == self.efd:
                self._drain_eventfd()
            elif fd == self.bell_fd:
                self._drain_bell()
            elif fd == self.settings.wakeup_fd:
                self._drain_wakeup()
            elif self._is_listener(fd):
                incoming = True
            # else: a connection closed earlier in this batch
        self.batching = False
        # A batch that ran over LONG_CALL (app calls of milliseconds, inline): the next wait takes
        # one event, so that connections are served in the order their requests came. (A level-
        # triggered connection that a wait returns goes back to the kernel's ready list at once,
        # ahead of those that become ready while the batch runs: with a whole batch at a time, the
        # last clients answered in one batch came last in the next but one, and waited two rounds.
        # One event a wait costs a system call a request, next to a call of a millisecond or more.)
        self.batch_events = 1 if ticks(self.settings.cpu_ticks) - began > self.settings.long_ticks else MAX_EVENTS
        if self.later:
            self._send_waiting()
        # After such a batch the listening sockets are looked at too, event or not: their event
        # (given to one worker: EPOLLEXCLUSIVE) and a peer's bell would wait behind every ready
        # connection, a round of long calls, and with the balancing handing new connections from
        # worker to worker, 64 connections wrk opened at once waited up to 1.15 s for a first
        # answer (2 workers, Django, calls of 7 ms, a round 0.22 s; now 0.66 s). An accept that
        # finds none is one system call.
        self._batch_done(incoming or (self.batch_events == 1 and self.accepting))

    cdef int _send_waiting(self) except -1:
        """Send the answers that wait for the batch's end (Connection._send_later), and do the
        rest of their pumps."""
        cdef list later = self.later
        self.later = []
        for obj in later:
            (<Connection>obj).later = False
            if (<Connection>obj).state != CLOSED:
                (<Connection>obj)._pump_end()
        return 0

    cpdef _signal(self):
        cdef unsigned long long one = 1
        c_write(self.efd, &one, sizeof(one))

    cpdef int _poll_fd(self) except -1:
        return self.epfd

    cdef int _watch_listener(self, int fd, bint on) except -1:
        cdef epoll_event ev
        if on:
            self._watch(fd, EPOLLIN | EPOLLEXCLUSIVE)
        else:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)
        return 0

    cdef int _ring_fd(self, int fd) except -1:
        cdef unsigned long long one = 1
        c_write(fd, &one, sizeof(one))
        return 0

    cdef int _watch(self, int fd, unsigned int events) except -1:
        cdef epoll_event ev
        ev.events = events
        ev.data.u64 = 0
        ev.data.fd = fd
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        return 0

    cdef bint _accept_from(self, Listener listener) except -1:
        cdef sockaddr_storage addr
        cdef socklen_t addrlen
        cdef int fd, i
        cdef char host[INET6_ADDRSTRLEN + 1]
        cdef unsigned int port
        for i in range(ACCEPT_BATCH):
            if self._full():
                return True
            addrlen = sizeof(addr)
            fd = fc_accept4(listener.fd, <sockaddr*>&addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EAGAIN or errno == EINTR:
                    return False
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    self._accept_failed(errno)
                    return True
                continue  # ECONNABORTED and friends: that client is gone, take the next
            env = PyDict_Copy(listener.base_environ)
            if listener.tcp:
                if addr.ss_family == AF_INET6:
                    inet_ntop(AF_INET6, &(<sockaddr_in6*>&addr).sin6_addr, host, sizeof(host))
                    port = ntohs((<sockaddr_in6*>&addr).sin6_port)
                else:
                    ipv4_text(<const unsigned char*>&(<sockaddr_in*>&addr).sin_addr, host)
                    port = ntohs((<sockaddr_in*>&addr).sin_port)
                env["REMOTE_ADDR"] = host.decode("ascii")
                env["REMOTE_PORT"] = str(port)
            else:
                env["REMOTE_ADDR"] = ""
            self._add(fd, env, listener)
            if self._accepted():
                return True
        return False

    def adopt(self, sock):
        """Serve an already-connected socket (fd passing, tests, benchmarks) as if accepted by the first
        listener; takes ownership."""
        cdef Listener listener = self.listeners[0]
        env = PyDict_Copy(listener.base_environ)
        if listener.tcp:
            host, port = sock.getpeername()[:2]
            env["REMOTE_ADDR"] = host
            env["REMOTE_PORT"] = str(port)
        else:
            env["REMOTE_ADDR"] = ""
        fd = sock.detach()
        os.set_blocking(fd, False)
        return self._add(fd, env, listener)

    cdef Connection _add(self, int fd, dict env, Listener listener):
        """Serve a new connection: its object, its epoll registration, the board's counts."""
        cdef Connection conn
        if self.settings.tls is None:
            conn = Connection.__new__(Connection)
            conn.nodelay = not listener.tcp     # else set by the first write that is not the last (_flush)
        else:
            conn = TlsConnection.__new__(TlsConnection)
            conn.nodelay = True             # a handshake is writes both ways: at once
            if listener.tcp:
                set_nodelay(fd)
        conn.setup(self, fd, env)
        self._adopted(conn, fd, listener.read_first)
        return conn

    cdef int _read_fresh(self) except -1:
        return (<Connection>self.fresh)._on_event()

    cdef int _watch_fresh(self) except -1:
        cdef Connection conn = <Connection>self.fresh
        if conn is not None:
            self.fresh = None
            if conn.state != CLOSED and not conn.watched:
                self._watch(conn.fd, conn.mask)
                conn.watched = True
        return 0

    cdef int _log_access(self, dict env, int status, long long size, double secs) except -1:
        """One access log line: rendered in C for the default format, by the AccessLog otherwise."""
        if self.writer is not None:
            self.writer.line(env, status, size, <long long>(secs * 1e6))
        else:
            self.access.log(env, status, size, secs)
        return 0

    cdef int _flush_access(self) except -1:
        if self.writer is not None:
            self.writer.flush()
        if self.access is not None:
            self.access.flush()
        return 0

    cdef int _drain_wakeup(self) except -1:
        """The signals that arrived (their numbers, from Python's wake-up fd). A SIGTERM is acted on
        here as well as in its Python handler, which only the main thread runs, and that thread may
        be inside an app call or waiting as a spare."""
        cdef unsigned char buf[512]
        cdef ssize_t n, i
        while True:
            n = c_read(self.settings.wakeup_fd, buf, sizeof(buf))
            if n <= 0:
                return 0
            for i in range(n):
                if buf[i] == SIGTERM_NUMBER:
                    self.stop_requested = True

    cdef int _drain_bell(self) except -1:
        cdef unsigned long long count
        c_read(self.bell_fd, &count, sizeof(count))
        self._rung()
        return 0

    cdef int _drain_eventfd(self) except -1:
        cdef unsigned long long count
        c_read(self.efd, &count, sizeof(count))
        return 0
