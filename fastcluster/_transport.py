"""The transport of a client connection: bytes in and out, the same for both request loops.

Owns: which readiness events the connection waits for (`mask`: read, write, both or neither) and
the rules that choose them (`_want_read`, `_want_write`, `_pause_reading`, `_resume_reading`);
back-pressure's deadline on the write side (`write_deadline`, --write-timeout); the read-side
deadline and what it is for (`wait`, `deadline`, `_arm`); the lingering close (`_end`'s FIN, then
input dropped until the client closes or LINGER runs out); the control flow of TLS over the raw
bytes (`_tls_feed`: the handshake, decryption, a refused handshake) and of sending a file
(`_sendfile_step`: the bookkeeping around each loop's `_send_file_part`).

Does not own: what the bytes mean (the protocol: `_http.py` for HTTP/1.1, `_websocket.py` after
an upgrade), requests (`_request.py`) or app calls (`_dispatch.py`). Nor the system calls: each
loop's `Connection` (`_connection.pxi` compiled, `_parser_py.py` pure) subclasses the chain that
ends here with the I/O primitives below that raise NotImplementedError (`_set_mask`, `_flush`,
`_send_file_part`, ...); `tests/test_extension.py` holds both loops to that list.

The classes of a connection are one chain of cdef classes, one per concern, each a file:
Channel (`_exchange.py`) <- Transport (here) <- RequestBuilder (`_request.py`) <- AppDispatch
(`_dispatch.py`) <- HttpConnection (`_http.py`, HTTP/1.1) <- Connection (the loop's I/O). A chain
rather than objects that hold each other because it costs nothing on the request path: a field of
any layer is at a fixed offset in the one object, and a call between layers is the same C call
through the vtable it was before the split (composition would add a pointer chase to every field
and an object to every connection). What a later protocol needs per stream is written to be
called per request, with the request (`Exchange`) as its argument: see `_request.py` and
`_dispatch.py`.
"""

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build cimports these (_transport_c.pxd)
    from ._exchange import LAST_IN, LINGERING, PEER_CLOSED, Channel
    READ, WRITE = 1, 4    # the epoll events (EPOLLIN, EPOLLOUT: the same numbers on every Linux)
    # what the read-side deadline is for (Transport.wait)
    W_NONE = 0        # a request is complete and being answered: no read deadline
    W_HEADERS = 1     # a request's headers, from the accept or the request's first byte
    W_BODY = 2        # the next piece of a request body
    W_IDLE = 3        # the next request on a kept-alive connection
    W_LINGER = 4      # the client's close after our FIN

LINGER = 2.0     # a connection we end keeps reading (and dropping) input this long after our FIN
_tls = None      # fastcluster.tls, with the first TLS connection (ssl is loaded only by a worker that serves TLS)


def load_tls():
    global _tls
    from . import tls

    _tls = tls
    return tls


@cython.cclass
class Transport(Channel):
    """Bytes in and out of one connection (fields: _transport_c.pxd)."""

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        mask = READ
        wait = W_HEADERS
        deadline = write_deadline = 0.0
        duplex = read_paused = False
        proxy_buf = tls = None

    # --- which events the connection waits for, over the one primitive _set_mask ---

    def _want_write(self):
        """Wait for room to write: a connection whose output is ahead of its client. A half-duplex
        one (HTTP/1.1) reads nothing more until its output is out; a full-duplex one (a WebSocket)
        goes on reading unless its app is behind. The client has --write-timeout to make room."""
        mask = WRITE | READ if self.duplex and not self.read_paused else WRITE
        self.write_deadline = self.server.now + self.server.settings.write_timeout
        if self.mask != mask:
            self._set_mask(mask)
        return 0

    def _want_read(self):
        """Wait for input (and no longer for room to write); while reading is paused, for neither."""
        mask = 0 if self.read_paused else READ
        self.write_deadline = 0.0
        if self.mask != mask:
            self._set_mask(mask)
        return 0

    def _pause_reading(self):
        self.read_paused = True
        if self.mask & READ:
            self._set_mask(self.mask & ~READ)    # (a hang-up is still reported; reading then finds it)
        return 0

    def _resume_reading(self):
        self.read_paused = False
        if self.mask == 0 or (self.mask == WRITE and self.duplex):
            self._set_mask(self.mask | READ)
        return 0

    def _arm(self, wait, seconds):
        """The read-side deadline: `seconds` from now, for `wait`."""
        self.wait = wait
        self.deadline = self.server.now + seconds
        return 0

    def _end(self):
        """Close after the last response: at once if nothing more can come from the client (it
        closed, or its last request ended the connection and nothing followed it), else a
        lingering close."""
        if self.state == PEER_CLOSED or self.state == LAST_IN:
            self.close()
            return 0
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # response still on its way to the client. So: FIN first, then drop whatever the
        # client still sends until it closes too, or LINGER runs out (the tick closes then).
        self._release()
        if not self._shutdown_write():
            self.close()
            return 0
        self.state = LINGERING
        self._arm(W_LINGER, LINGER)
        self.read_paused = False             # (what comes now is read and dropped)
        self._want_read()
        return 0

    # --- reading, TLS and files: the control flow over each loop's primitives ---

    def _on_event(self):
        """Readiness reported: read what the client sent and answer what can be answered; a
        connection that only waits to write sends; a lingering one drops what comes."""
        if self.state == LINGERING:
            self._drop_input()
            return 0
        if self.mask == WRITE:
            self._pump()
            return 0
        n = self._read()
        if n > 0:
            self._feed_read(n)
        elif n == 0:
            self._stop_reading(PEER_CLOSED)
        elif n == -2 or not self.mask & WRITE:
            return 0
        # (else nothing to read, and a full-duplex connection also waits to write: this was the write)
        self._pump()
        return 0

    def _start_tls(self, tls, settings):
        """This connection's TLS session, from the worker's context (tls.py)."""
        self.tls = tls.Session(settings.tls)
        return 0

    def _tls_feed(self, data):
        """What a TLS connection read (a --proxy-protocol header first, before the handshake):
        decrypted and given to the protocol; handshake records and session tickets queued to go
        out; a failed handshake logged and closed."""
        if self.proxy_buf is not None:
            data = self._proxy_header(data)
            if not data:
                return 0
        try:
            plain, closed = self.tls.receive(data)
        except (_tls if _tls is not None else load_tls()).SSLError as exc:
            _tls.refused(self.server, self._client_environ(), exc)
            self.close()
            return 0
        handshake = self.tls.pending()
        if handshake:
            self._add_sealed(handshake)
        if plain:
            self._feed(plain, len(plain))
        if closed:
            self._stop_reading(PEER_CLOSED)
        return 0

    def _sendfile_step(self, ex):
        """Send more of `ex`'s file (wsgi.file_wrapper); False while the socket is full
        (write interest armed) or once the connection closed. A file that shrank ends the body
        short: the exchange finishes anyway, and its framing ends the connection."""
        file = ex.file
        while file.left > 0:
            n = self._send_file_part(file)
            if n < 0:
                return False
            if n == 0:
                break
            file.offset += n
            file.left -= n
            ex.sent += n
        ex.file = None
        ex.finish()
        return True

    # --- the loop's I/O: each loop's Connection provides these ---

    def _read(self):
        """recv() into the server's buffer: how many bytes, 0 at the end of input, -1 when there
        is nothing to read now, -2 on an error (the connection is closed then)."""
        raise NotImplementedError

    def _feed_read(self, n):
        """The `n` bytes _read() put in the server's buffer, to the protocol (_feed; TLS: _tls_feed)."""
        raise NotImplementedError

    def _drop_input(self):
        """Lingering: read and drop what the client sends; close at its end (or on an error)."""
        raise NotImplementedError

    def _flush(self):
        """Send queued output; False when the socket is full (write interest armed) or the peer
        is gone."""
        raise NotImplementedError

    def _send_later(self):
        """True when the loop takes this connection's output (and the rest of its pump) to send
        after the batch of events it is handling (the compiled loop: Connection._send_later)."""
        return False

    def _send_file_part(self, file):
        """Send a part of `file` (a SendFile) from its offset: how many bytes (0: the file ended early),
        or -1 when the socket is full (write interest armed) or the connection closed."""
        raise NotImplementedError

    def _add_sealed(self, data):
        """TLS: queue ciphertext to send after what waits already."""
        raise NotImplementedError

    def _set_mask(self, mask):
        """Wait for these events (READ, WRITE) from now on: `mask` is stored, and the poller told."""
        raise NotImplementedError

    def _shutdown_write(self):
        """Send our FIN; False if the socket is already gone."""
        raise NotImplementedError

    def _eof_waits(self):
        """The client's end of input has come and waits unread in the kernel, nothing before it
        (a look that reads nothing: recv with MSG_PEEK). False where the loop cannot tell."""
        return False

    def _close_fd(self):
        raise NotImplementedError

    def _drop_output(self):
        """Forget the queued output (the connection is ending)."""
        raise NotImplementedError

    def _input(self):
        """What `_feed(None, n)` parsed, as a bytes-like object (the compiled loop's; never None here)."""
        raise NotImplementedError

    # --- what the layers above provide (the protocol, the request builder) ---

    def _feed(self, data, n):
        raise NotImplementedError

    def _stop_reading(self, state):
        raise NotImplementedError

    def _pump(self):
        raise NotImplementedError

    def _proxy_header(self, data):
        raise NotImplementedError

    def _client_environ(self):
        raise NotImplementedError

    def _release(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError
