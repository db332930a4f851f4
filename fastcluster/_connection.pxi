# The compiled loop's Connection (included by _parser.pyx): recv into the server's buffer, one
# writev for the queued output, sendfile, epoll_ctl, shutdown and close, under the shared chain
# that ends in HttpConnection (_http.py: HTTP/1.1; _dispatch.py, _request.py, _transport.py under
# it), which decides everything else: which events to wait for (_transport.py's over _set_mask),
# how TLS and a file's sending go (_tls_feed, _sendfile_step over _send_file_part), what to answer.


cdef class Connection(HttpConnection):
    cdef setup(self, Server server, int fd, dict env):
        self._setup(server, fd, env)
        self.out = []
        self.mask = EPOLLIN

    cdef Py_ssize_t _read(self) except -3:
        cdef Server server = <Server>self.server
        cdef ssize_t n = fc_recv(self.fd, server.rbuf, RECV_SIZE, 0)
        if n >= 0:
            server.cells[B_BYTES_IN] += n
            return n
        if errno == EAGAIN or errno == EINTR:
            return -1
        self.close()
        return -2

    cdef int _feed_read(self, Py_ssize_t n) except -1:
        """The `n` bytes recv() just put in the server's buffer, to the parser: llhttp reads them
        there (no memoryview made) unless a PROXY header, a WebSocket or httptools takes them."""
        self.rlen = n
        if self.parser is None and self.ws is None and self.proxy_buf is None:
            return self._feed(None, n)
        return self._feed(self._input(), n)

    cdef object _input(self):
        return PyMemoryView_FromMemory((<Server>self.server).rbuf, self.rlen, PyBUF_READ)

    # --- the parser: llhttp itself where it passed its checks, else httptools (_llhttp.pxi) ---

    cdef int _new_parser(self) except -1:
        if not DIRECT:
            return HttpConnection._new_parser(self)
        self.parser = None
        ll.init(&self.cp, LL_REQUEST, ll_settings)
        self.cp.owner = <void*>self
        self.hname = self.hvalue = None
        return 0

    cdef int _parse(self, object data) except -1:
        cdef const char* buf
        cdef Py_ssize_t length
        cdef Py_buffer* view
        cdef int err
        if self.parser is not None:
            return HttpConnection._parse(self, data)
        if data is None:
            buf = (<Server>self.server).rbuf
            length = self.rlen
        elif PyMemoryView_Check(data):
            view = PyMemoryView_GET_BUFFER(data)
            buf = <const char*>view.buf
            length = view.len
        else:
            if not PyBytes_Check(data):
                data = bytes(data)
            buf = PyBytes_AS_STRING(data)
            length = PyBytes_GET_SIZE(data)
        err = ll.execute(&self.cp, buf, length)
        if err == 0:
            return 0
        if err == LL_PAUSED_UPGRADE and ll.get_upgrade(&self.cp):
            offset = ll.get_error_pos(&self.cp) - buf
            ll.resume_after_upgrade(&self.cp)
            raise _Upgrade(offset)
        raise _parse_error(self, err)

    cdef str _method(self):
        cdef int number
        if self.parser is not None:
            return HttpConnection._method(self)
        number = ll.get_method(&self.cp)
        name = METHOD_NAMES[number]
        if name is None:
            name = METHOD_NAMES[number] = _sys.intern(ll.method_name(number).decode("ascii"))   # (see M_HEAD)
        return name

    cdef str _version(self):
        cdef int major, minor
        if self.parser is not None:
            return HttpConnection._version(self)
        major = ll.get_http_major(&self.cp)
        minor = ll.get_http_minor(&self.cp)
        if major == 1:
            return V11 if minor == 1 else V10 if minor == 0 else "1.%d" % minor     # (interned: PROTOCOLS)
        return "%d.%d" % (major, minor)

    cdef bint _keeps_alive(self) except -1:
        if self.parser is not None:
            return HttpConnection._keeps_alive(self)
        return ll.should_keep_alive(&self.cp) != 0

    # --- writing ---

    cdef int _queue(self, bytes data) except -1:
        if self.state != CLOSED:
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
        if not self.nodelay and self._writes_again():   # (TCP_NODELAY: see _writes_again)
            self.nodelay = True
            set_nodelay(self.fd)
        while out:
            count = min(len(out), MAX_IOV)
            item = <bytes>out[0]
            if count == 1:
                n = fc_send(self.fd, PyBytes_AS_STRING(item) + self.out_off,
                         PyBytes_GET_SIZE(item) - self.out_off, MSG_NOSIGNAL)
            else:
                iov[0].iov_base = PyBytes_AS_STRING(item) + self.out_off
                iov[0].iov_len = PyBytes_GET_SIZE(item) - self.out_off
                for i in range(1, count):
                    item = <bytes>out[i]
                    iov[i].iov_base = PyBytes_AS_STRING(item)
                    iov[i].iov_len = PyBytes_GET_SIZE(item)
                n = fc_writev(self.fd, iov, <int>count)
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                if errno == EAGAIN:
                    self._want_write()
                    return False
                self.close()
                return False
            self.out_size -= n
            self.server.cells[B_BYTES_OUT] += n
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
            drop_front(out, i)                  # del out[:i], the list's array kept
        return True

    cdef bint _send_later(self) except -1:
        """Inside the loop's batch of events (Server._iterate), a pump's output waits for the
        batch's end, when every connection of the batch has been read and answered: the loop's
        code then runs back to back rather than between send() calls, which evict it from the
        CPU's caches, and a client's thread is woken once for its answers rather than once per
        send (benchmarks/README.md, Speed II: "A batch's answers go out at its end"). Not
        for long, though: once the batch has run LATER_SHARE of LONG_CALL (0.5 ms), what waits
        goes out at once, and so does this, so that slow app calls do not hold their answers."""
        cdef Server server = <Server>self.server
        cdef long long now
        if not server.batching:
            return False
        now = ticks(server.settings.cpu_ticks)
        if now - server.batch_began > server.later_ticks:
            server.batch_began = now
            if server.later:
                server._send_waiting()
            return False
        if not self.later:
            self.later = True
            server.later.append(self)
        return True

    cdef long long _send_file_part(self, SendFile file) except -2:
        cdef ssize_t n
        cdef off_t off = file.offset
        while True:
            n = sendfile(self.fd, file.fd, &off, min(file.left, SENDFILE_CHUNK))
            if n >= 0:
                self.server.cells[B_BYTES_OUT] += n
                return n
            if errno == EINTR:
                continue
            if errno == EAGAIN:
                self._want_write()
            else:
                self.close()
            return -1

    cdef int _set_mask(self, unsigned int mask) except -1:
        cdef epoll_event ev
        self.mask = mask
        if not self.watched:
            return 0                 # a fresh connection: registered with this mask when watched
        ev.events = mask
        ev.data.u64 = 0
        ev.data.fd = self.fd
        if epoll_ctl((<Server>self.server).epfd, EPOLL_CTL_MOD, self.fd, &ev) < 0:
            PyErr_SetFromErrno(OSError)
        return 0

    # --- ending ---

    cdef bint _shutdown_write(self) except -1:
        return shutdown(self.fd, SHUT_WR) == 0

    cdef bint _eof_waits(self) except -1:
        cdef char byte
        return fc_recv(self.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0

    cdef int _drop_input(self) except -1:
        cdef Server server = <Server>self.server
        cdef ssize_t n
        while True:
            n = fc_recv(self.fd, server.rbuf, RECV_SIZE, 0)
            if n < 0 and (errno == EAGAIN or errno == EINTR):
                return 0
            if n <= 0:
                break
            server.cells[B_BYTES_IN] += n
        self.close()
        return 0

    cdef int _close_fd(self) except -1:
        fc_close(self.fd)
        return 0

    cdef int _drop_output(self) except -1:
        self.out.clear()
        self.out_off = 0
        self.out_size = 0
        return 0


cdef class TlsConnection(Connection):
    """HTTPS: a Connection whose bytes go through a tls.Session (the twin of _parser_py.py's). What
    is read is decrypted before the parser sees it; what is queued is encrypted SEAL_SIZE bytes at a
    time as the socket takes it (the ciphertext waiting, `sealed`, counts in out_size); a file is
    read and encrypted in pieces (no sendfile through TLS); the FIN follows our close_notify."""
    cdef bytes sealed
    cdef Py_ssize_t sealed_off

    cdef setup(self, Server server, int fd, dict env):
        self._start_tls(_tls if _tls is not None else _load_tls(), server.settings)
        self.sealed = b""
        self.sealed_off = 0
        Connection.setup(self, server, fd, env)

    cdef int _feed_read(self, Py_ssize_t n) except -1:
        self.rlen = n
        return self._tls_feed(self._input())

    cdef int _add_sealed(self, bytes data) except -1:
        """More ciphertext to send after what `sealed` still holds (the part already sent left
        out_size when it was sent)."""
        if self.sealed_off:
            self.sealed = self.sealed[self.sealed_off:]
            self.sealed_off = 0
        self.sealed += data
        self.out_size += PyBytes_GET_SIZE(data)
        return 0

    cdef bint _flush(self) except -1:
        cdef list out = self.out
        cdef Py_ssize_t size, i, left
        cdef ssize_t n
        cdef bytes item
        tls = self.tls
        while True:
            left = PyBytes_GET_SIZE(self.sealed) - self.sealed_off
            if not left:
                if not out:
                    return True
                if not tls.ready:             # (a timed-out handshake: nothing can be sent)
                    self.close()
                    return False
                size = i = 0
                while i < len(out) and size < SEAL_SIZE:
                    item = <bytes>out[i]
                    tls.seal(item)
                    size += PyBytes_GET_SIZE(item)
                    i += 1
                del out[:i]
                self.out_size -= size
                self._add_sealed(tls.pending())     # (`sealed` is empty here: all of it was sent)
                continue
            n = fc_send(self.fd, PyBytes_AS_STRING(self.sealed) + self.sealed_off, left, MSG_NOSIGNAL)
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                if errno == EAGAIN:
                    self._want_write()
                    return False
                self.close()
                return False
            self.sealed_off += n
            self.out_size -= n
            self.server.cells[B_BYTES_OUT] += n
            if self.sealed_off == PyBytes_GET_SIZE(self.sealed):
                self.sealed = b""
                self.sealed_off = 0

    cdef long long _send_file_part(self, SendFile file) except -2:
        cdef bytes chunk
        if PyBytes_GET_SIZE(self.sealed) > self.sealed_off and not self._flush():
            return -1
        try:
            chunk = os.pread(file.fd, min(file.left, SEAL_SIZE), file.offset)
        except OSError:
            self.close()
            return -1
        if chunk:
            self.tls.seal(chunk)
            self._add_sealed(self.tls.pending())
        return PyBytes_GET_SIZE(chunk)

    cdef bint _shutdown_write(self) except -1:
        cdef bytes alert = self.tls.close_notify()
        if alert:
            fc_send(self.fd, PyBytes_AS_STRING(alert), PyBytes_GET_SIZE(alert), MSG_NOSIGNAL)
        return Connection._shutdown_write(self)

    cdef int _drop_output(self) except -1:
        Connection._drop_output(self)
        self.sealed = b""
        self.sealed_off = 0
        return 0
