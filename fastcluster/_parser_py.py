"""The pure-Python twin of the compiled request loop (`_parser.pyx`).

Same names, same behaviour, same httptools parser: it is the baseline that
shows what compiling buys, and the loop that runs where no compiler was found.

One worker runs one `Server`: a level-triggered epoll over the shared listening
socket, a signal wake-up fd and its connections.  Each `Connection` feeds what
it reads to httptools; the callbacks queue complete requests, and `_pump()`
answers them strictly in order, writing the responses of one read together and
pausing a streamed body whenever the socket is full.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
from collections import deque
from time import monotonic as _monotonic

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from . import board as _board
from . import wsgi
from .board import (ACCEPTED, BEAT, BYTES_IN, BYTES_OUT, CONNS, HEADER, IN_FLIGHT, NOT_ACCEPTING, REQUESTS, RSS,
                    STATUS, STRIDE, refusal_cell, rss_bytes)
from .config import Config
from .sockets import describe
from .wsgi import (CONTINUE_LINE, EMPTY_INPUT, HAS_DATE, HAS_SERVER, HEADER_KEYS, SERVER_HEADER,
                   WANTS_CLOSE, BodyBuffer, FileWrapper, LazyInput, Reject, check_head, encode_headers,
                   error_response, header_key, log, log_app_error, simple_response, split_target,
                   status_line)

IMPLEMENTATION = "python"

RECV_SIZE = 65536
HIGH_WATER = 1 << 20        # output queued before a streamed body is paused
MAX_IOV = 64                # buffers per sendmsg
ACCEPT_BATCH = 16           # accepts per wake-up, so that busy workers leave some to idle ones
SENDFILE_CHUNK = 1 << 20
DRAIN_LINGER = 1.0          # on stop, idle connections get this long to send a request already on its way
LINGER = 2.0                # a connection we end keeps reading (and dropping) input this long after our FIN

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)

FAILED_BODY = b"Internal Server Error\n"
METHODS = {}
PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
HEAD_SLACK = 4096           # request line, CRLFs and colons around the counted header bytes
BALANCE_SLACK = 1           # a worker this many connections above an accepting peer leaves the next ones to it
BALANCE_PAUSE = 0.01        # by not accepting for this long (the kernel hands them to the peer instead)


class Request:
    __slots__ = ("environ", "keep_alive", "head", "http10", "complete", "early", "body", "sent_continue", "start")

    def __init__(self, environ):
        self.environ = environ
        self.keep_alive = True
        self.head = False
        self.http10 = False
        self.complete = False
        self.early = False          # dispatched at headers-complete (Expect: 100-continue)
        self.body = None            # BodyBuffer, LazyInput or None
        self.sent_continue = False
        self.start = 0.0            # monotonic time of the read that brought its first byte


class Server:
    def __init__(self, listener, app, config=None, wakeup_fd=-1, master_pid=0, tick=None, board=None,
                 board_index=-1, access_log=None):
        config = config or Config()
        self.listener = listener
        self.tick = tick            # called once a second with the number of requests served and the RSS
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
        self.stop_requested = False   # set from a signal handler; the loop acts on it
        self.stopping = False
        self.deadline = 0.0
        self.conns = {}
        self.requests = 0
        self.tcp = listener.family in (socket.AF_INET, socket.AF_INET6)
        _url, name, port, _short = describe(listener)
        self.base_environ = wsgi.base_environ(name, port, config.workers > 1)
        self.date = wsgi.DateHeader()
        self.date_line = self.date.get()
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        self.ep = select.epoll()
        self.now = _monotonic()
        self.accepting = False
        self.accept_paused_until = 0.0
        self.accept_error_logged = False
        # The master's shared board (board.py): this worker's counters, and every worker's connection
        # count and whether it accepts, so that a worker can leave new connections to a lighter one.
        self.board = memoryview(board).cast("q") if board is not None and board_index >= 0 else None
        self.board_index = board_index
        if self.board is not None:
            base = HEADER + STRIDE * board_index
            self.cells = self.board[base:base + STRIDE]
        else:
            self.cells = _board.private_cells()
        self.access = access_log    # logs.AccessLog, or None (--access-log off)

    # --- the loop ---

    def serve(self, ready=None):
        """Run until stopped; `ready()` is called once the listening socket is watched."""
        listener, ep, conns = self.listener, self.ep, self.conns
        listener.setblocking(False)
        lfd = listener.fileno()
        self._set_accepting(True)
        if self.wakeup_fd >= 0:
            ep.register(self.wakeup_fd, EPOLLIN)
        self.cells[BEAT] = int(self.now * 1e6)
        self.cells[RSS] = rss_bytes()
        if ready is not None:
            ready()
        next_tick = self.now + 1.0
        try:
            while True:
                wake_at = next_tick
                if not self.accepting and self.accept_paused_until and self.accept_paused_until < wake_at:
                    wake_at = self.accept_paused_until
                events = ep.poll(max(0.0, wake_at - self.now))
                self.now = now = _monotonic()
                if not self.accepting and self.accept_paused_until and now >= self.accept_paused_until:
                    self.resume_accepting()
                for fd, _ev in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        conn.on_event()
                    elif fd == lfd:
                        self._accept()
                    else:
                        self._drain_wakeup()
                if self.stop_requested and not self.stopping:
                    self._begin_stop()
                    next_tick = now + DRAIN_LINGER
                if now >= next_tick:
                    next_tick = now + 1.0
                    self._tick()
                if self.stopping and (not conns or now >= self.deadline):
                    break
        finally:
            for conn in list(conns.values()):
                conn.close()
            ep.close()
            if self.access is not None:
                self.access.flush()

    def _set_accepting(self, on):
        """Watch the listening socket or not: off when stopping, full, or out of descriptors."""
        if on != self.accepting:
            self.accepting = on
            if on:
                self.ep.register(self.listener.fileno(), EPOLLIN | EPOLLEXCLUSIVE)
            else:
                self.ep.unregister(self.listener.fileno())
            self.cells[NOT_ACCEPTING] = 0 if on else 1

    def resume_accepting(self):
        if (not self.accepting and not self.stopping and self.now >= self.accept_paused_until
                and len(self.conns) < self.max_connections):
            self.accept_paused_until = 0.0
            self._set_accepting(True)

    def _publish_count(self):
        self.cells[CONNS] = len(self.conns)

    def _lighter_worker_available(self):
        """True when a worker whose listening socket is registered (so the kernel hands it new
        connections while this one pauses) holds more than BALANCE_SLACK fewer connections."""
        board, me = self.board, self.board_index
        mine = len(self.conns) - BALANCE_SLACK
        for i in range(board[0]):
            base = HEADER + STRIDE * i
            if i != me and 0 <= board[base + CONNS] < mine and board[base + NOT_ACCEPTING] == 0:
                return True
        return False

    def _accept(self):
        listener, conns = self.listener, self.conns
        for _ in range(ACCEPT_BATCH):
            if len(conns) >= self.max_connections:
                self._set_accepting(False)    # the kernel's backlog holds the rest meanwhile
                return
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if not self.accept_error_logged:
                        self.accept_error_logged = True
                        log.error("accept failed: %s; pausing accepts for 0.5 s at a time", exc.strerror)
                    self._set_accepting(False)
                    self.accept_paused_until = self.now + 0.5
                    return
                continue  # ECONNABORTED and friends: that client is gone, take the next
            self.accept_error_logged = False
            sock.setblocking(False)
            if self.tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._add(sock, addr)
            if self.board is not None and self._lighter_worker_available():
                # Keep-alive connections stay where they land: leave the next ones to a lighter
                # worker. (This one accepted the connection that woke it, and a worker only pauses
                # while another is registered, so some worker always takes new connections.)
                self._set_accepting(False)
                self.accept_paused_until = self.now + BALANCE_PAUSE
                return

    def adopt(self, sock):
        """Serve an already-connected socket (fd passing, tests, benchmarks); takes ownership."""
        sock.setblocking(False)
        return self._add(sock, sock.getpeername() if self.tcp else "")

    def _add(self, sock, addr):
        """Serve a new connection: its object, its epoll registration, the board's counts."""
        conn = Connection(self, sock, addr)
        self.conns[conn.fd] = conn
        self.ep.register(conn.fd, EPOLLIN)
        self.cells[ACCEPTED] += 1
        self._publish_count()
        return conn

    def _drain_wakeup(self):
        try:
            while os.read(self.wakeup_fd, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _tick(self):
        self.date_line = self.date.get()
        now = self.now
        rss = rss_bytes()
        self.cells[BEAT] = int(now * 1e6)
        self.cells[RSS] = rss
        if self.access is not None:
            self.access.flush()
        if self.tick is not None:
            self.tick(self.requests, rss)
        if self.master_pid and os.getppid() != self.master_pid:
            self.stop_requested = True          # the master is gone: do not outlive it
        self.resume_accepting()
        for conn in list(self.conns.values()):
            if conn.lingering:
                if now >= conn.linger_until:
                    conn.close()
            elif now >= conn.deadline:
                conn.on_timeout()
            elif self.stopping and conn.idle():
                conn._end()     # after DRAIN_LINGER: a clean (lingering) close of what stayed idle

    def _begin_stop(self):
        self.stopping = True
        master_gone = self.master_pid and os.getppid() != self.master_pid
        grace = min(self.graceful_timeout, 1.0) if master_gone else self.graceful_timeout
        self.deadline = self.now + grace
        self._set_accepting(False)
        self.listener.close()
        # Connections stay open for DRAIN_LINGER: a client may have sent a request that is
        # not read yet (or just connected). Each response from now on says Connection: close;
        # the first tick after the linger closes the connections that stayed idle.


class Connection:
    def __init__(self, server, sock, addr):
        self.server = server
        self.app = server.app
        self.sock = sock
        self.fd = sock.fileno()
        env = server.base_environ.copy()
        if server.tcp:
            env["REMOTE_ADDR"] = addr[0]
            env["REMOTE_PORT"] = str(addr[1])
        else:
            env["REMOTE_ADDR"] = ""
        self.base_environ = env
        self.parser = HttpRequestParser(self)
        self.cur = None             # the Request being parsed
        self.url = b""
        self.pending = deque()      # parsed requests (or the int status of a refused one), in order
        self.out = []               # bytes-like objects waiting to be sent, in order
        self.out_size = 0
        self.mask = EPOLLIN
        self.reading = True         # False after EOF, a parse error, or a request that ends the connection
        self.eof = False            # the client closed its side
        self.refused = False        # we refused a request (parse error, limit, timeout)
        self.extra_input = False    # bytes arrived after a request that ended the connection
        self.lingering = False      # we sent FIN and only drain the input until the client closes too
        self.linger_until = 0.0
        self.closed = False
        self.close_after = False    # close once the queued output is sent
        self.deadline = server.now + server.header_timeout   # see on_timeout()
        self.served = 0             # requests answered on this connection
        self.inflight = 0           # its requests read in full and not answered yet (on the board too)
        self.in_head = False        # between a request's first byte and the end of its headers
        self.head_bytes = 0         # bytes read while in_head (bounds what httptools buffers)
        self.head_done = False      # a header section ended during the current feed
        self.nheaders = 0
        self.header_bytes = 0
        self.body_bytes = 0
        # the response being produced
        self.resp = None
        self.result = None
        self.iter = None
        self.sendfile = None
        self.status = None
        self.headers = None
        self.hflags = 0
        self.code = 0
        self.clen = -1
        self.sent = 0
        self.headers_sent = False
        self.chunked = False
        self.no_body = False
        self.keep = True
        self.start_response = self._start_response

    # --- httptools callbacks ---

    def on_message_begin(self):
        self.cur = Request(self.base_environ.copy())
        self.cur.start = self.server.now
        self.url = b""
        self.in_head = True
        self.nheaders = self.header_bytes = 0
        if self.served:   # a kept-alive connection: the header deadline runs from the first byte
            self.deadline = self.server.now + self.server.header_timeout

    def on_url(self, url):
        self.url += url
        if len(self.url) > self.server.max_request_line:
            raise Reject(414)

    def on_header(self, name, value):
        self.nheaders += 1
        self.header_bytes += len(name) + len(value) + 4
        if self.nheaders > self.server.max_headers or self.header_bytes > self.server.max_header_bytes:
            raise Reject(431)
        key = HEADER_KEYS.get(name)
        if key is None:
            key = header_key(name)
            if key is None:
                return
        env = self.cur.environ
        value = value.decode("latin-1").strip(" \t")
        if key in env:
            env[key] += "," + value
        else:
            env[key] = value

    def on_headers_complete(self):
        parser, req = self.parser, self.cur
        env = req.environ
        method = METHODS.get(parser.get_method())
        if method is None:
            raw = parser.get_method()
            method = METHODS[raw] = raw.decode("ascii")
        env["REQUEST_METHOD"] = method
        version = parser.get_http_version()
        env["SERVER_PROTOCOL"] = PROTOCOLS.get(version) or "HTTP/" + version
        url = self.url
        env["RAW_URI"] = url.decode("latin-1")
        env["PATH_INFO"], env["QUERY_STRING"] = split_target(url)
        req.keep_alive = parser.should_keep_alive() and self.server.keep_alive > 0
        req.head = method == "HEAD"
        req.http10 = version != "1.1"
        self.in_head = False
        self.head_done = True
        self.head_bytes = 0
        status = check_head(env, req.http10, self.server.max_body)
        if status:
            raise Reject(status)
        if "CONTENT_LENGTH" in env or "HTTP_TRANSFER_ENCODING" in env:
            self.body_bytes = 0
            self.deadline = self.server.now + self.server.body_timeout
            if env.get("HTTP_EXPECT", "").lower() == "100-continue" and not req.http10:
                req.body = LazyInput(self._fill_body)
                env["wsgi.input"] = req.body
                req.early = True
                self.pending.append(req)
                self._received()
            else:
                req.body = BodyBuffer()
        else:
            env["wsgi.input"] = EMPTY_INPUT

    def on_body(self, data):
        self.body_bytes += len(data)
        if self.server.max_body and self.body_bytes > self.server.max_body:
            raise Reject(413)
        self.deadline = self.server.now + self.server.body_timeout
        self.cur.body.add(data)

    def on_message_complete(self):
        req = self.cur
        self.cur = None
        req.complete = True
        if req.early:
            req.body.finish()
        else:
            if req.body is not None:
                req.environ["wsgi.input"] = req.body.stream()
            self.pending.append(req)
            self._received()
        if not req.keep_alive:
            self.reading = False

    # --- reading ---

    def parse_only(self, data):
        """Run `data` through the parser and the request callbacks, answering nothing
        (the `parse` benchmark); returns how many requests it completed."""
        self.parser.feed_data(data)
        count = len(self.pending)
        self.pending.clear()
        self.server.cells[IN_FLIGHT] -= self.inflight
        self.inflight = 0
        return count

    def on_readable(self):
        """Handle one readiness event now (what the loop does when epoll reports this fd)."""
        self.server.now = _monotonic()
        self.on_event()

    def on_event(self):
        if self.lingering:
            self._drop_input()
            return
        if self.mask == EPOLLOUT:
            self._pump()
            return
        try:
            n = self.sock.recv_into(self.server.rbuf)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if n:
            self.server.cells[BYTES_IN] += n
            self._feed(self.server.rview[:n], n)
        else:
            self.reading = False
            self.eof = True
        self._pump()

    def _feed(self, data, n):
        self.head_done = False
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            # Upgrade/CONNECT: answered as a plain request, then the connection ends.
            if self.pending:
                self.pending[-1].keep_alive = False
            self.reading = False
            return
        except HttpParserError as exc:
            if not self.reading:
                self.extra_input = True   # bytes after a request that ends the connection: ignored
                return
            cause = exc.__context__
            if cause is not None and not isinstance(cause, Reject):
                log.error("request callback failed", exc_info=cause)
            self._reject(cause.status if isinstance(cause, Reject) else 400)
            return
        if self.in_head:
            # A header section still open: count its bytes so that a header which never ends
            # cannot grow httptools' buffer without bound. (A feed that also finished another
            # head is not counted; the next one is.)
            self.head_bytes = 0 if self.head_done else self.head_bytes + n
            if self.head_bytes > self.server.max_header_bytes + self.server.max_request_line + HEAD_SLACK:
                self._reject(431)

    def _reject(self, status):
        """Stop parsing; after the responses already queued, answer `status` and close."""
        self.reading = False
        self.refused = True
        self.in_head = False
        self.cur = None
        self.pending.append(status)

    def _received(self):
        self.inflight += 1
        self.server.cells[IN_FLIGHT] += 1

    def _answered(self, req):
        """The response to `req` is complete (or failed): the in-flight count and the access log."""
        server = self.server
        if self.inflight:
            self.inflight -= 1
            server.cells[IN_FLIGHT] -= 1
        if server.access is not None:
            server.access.log(req.environ, self.code, self.sent, _monotonic() - req.start)

    def on_timeout(self):
        """The connection's deadline passed: what it means depends on what it waits for."""
        if self.mask == EPOLLOUT or self.resp is not None:
            self.close()                     # the client stopped reading our response
        elif (self.cur is not None or not self.served) and not self.pending:
            self._reject(408)                # headers (or a body) too slow to arrive
            self._pump()
        else:
            self.close()                     # an idle keep-alive connection

    def _fill_body(self):
        """Pull more of an Expect: 100-continue body while the app waits in wsgi.input.read()."""
        req = self.resp
        if not req.sent_continue and not self.headers_sent:
            req.sent_continue = True
            self.out.append(CONTINUE_LINE)
            self.out_size += len(CONTINUE_LINE)
            self._blocking_flush()
        if not self.reading or self.closed:
            return False
        if not _wait(self.fd, select.POLLIN, self.server.body_timeout):
            return False
        try:
            n = self.sock.recv_into(self.server.rbuf)
        except BlockingIOError:
            return True
        except OSError:
            n = 0
        if not n:
            self.reading = False
            self.eof = True
            return False
        self.server.cells[BYTES_IN] += n
        self._feed(self.server.rview[:n], n)
        return True

    # --- answering ---

    def _pump(self):
        """Produce and send responses until done, or until the socket is full."""
        pending = self.pending
        while not self.closed:
            if self.out_size >= HIGH_WATER:
                if not self._flush():
                    return
            elif self.sendfile is not None:
                if self.out:
                    if not self._flush():
                        return
                elif not self._sendfile_step():
                    return
            elif self.iter is not None:
                self._next_chunk()
            elif pending and not self.close_after:
                req = pending[0]
                if type(req) is not int and not (req.complete or req.early):
                    break
                pending.popleft()
                self._respond(req)
            else:
                break
        if self.closed:
            return
        if self.out and not self._flush():
            return
        if self.close_after or not self.reading or (
                self.server.stopping and self.cur is None and not pending):
            self._end()
            return
        if self.mask != EPOLLIN:
            self.mask = EPOLLIN
            self.server.ep.modify(self.fd, EPOLLIN)
        if self.cur is None:      # between requests: the keep-alive timeout runs
            self.deadline = self.server.now + self.server.keep_alive

    def _respond(self, req):
        server = self.server
        if type(req) is int:     # a request we refused: its status
            self._queue(error_response(req, server.date_line))
            self.close_after = True
            server.cells[STATUS + 3] += 1
            server.cells[refusal_cell(req)] += 1
            if server.access is not None:
                server.access.log(self.base_environ, req, 0, 0.0)
            return
        self.served += 1
        server.requests += 1
        server.cells[REQUESTS] += 1
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
            return
        self.result = result
        if self.closed:
            self._close_result()
            return
        try:
            if type(result) is list or type(result) is tuple:
                self._respond_sequence(result)
                return
            if type(result) is FileWrapper and self._start_sendfile(result):
                return
            self.iter = iter(result)
        except Exception:
            self._app_failed()

    def _respond_sequence(self, items):
        if self.status is None:
            raise RuntimeError("the application returned without calling start_response()")
        total = 0
        for item in items:
            if type(item) is not bytes:
                raise TypeError("response body items must be bytes, not %s" % type(item).__name__)
            total += len(item)
        if not self.headers_sent:
            self._send_headers(total)
        for item in items:
            self._body(item)
        self._finish()

    def _start_sendfile(self, wrapper):
        try:
            fd = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
            size = os.fstat(fd).st_size - offset
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode) or self.status is None:
            return False
        if self.headers_sent:
            if self.clen < 0:
                return False
        else:
            self._send_headers(size)
        if self.no_body:
            self._finish()
            return True
        self.sendfile = [fd, offset, max(0, min(size, self.clen - self.sent))]
        return True

    def _sendfile_step(self):
        state = self.sendfile
        fd, offset, remaining = state
        while remaining > 0:
            try:
                n = os.sendfile(self.fd, fd, offset, min(remaining, SENDFILE_CHUNK))
            except BlockingIOError:
                state[1], state[2] = offset, remaining
                self._want_write()
                return False
            except OSError:
                self.close()
                return False
            if n == 0:
                break  # the file shrank: the body is short, so the connection must end
            offset += n
            remaining -= n
            self.sent += n
            self.server.cells[BYTES_OUT] += n
            self.deadline = self.server.now + self.server.write_timeout
        self.sendfile = None
        self._finish()
        return True

    def _next_chunk(self):
        try:
            data = next(self.iter)
        except StopIteration:
            self._finish()
            return
        except Exception:
            self._app_failed()
            return
        try:
            if type(data) is not bytes:
                raise TypeError("response body items must be bytes, not %s" % type(data).__name__)
            if not self.headers_sent:
                if not data:
                    return
                if self.status is None:
                    raise RuntimeError("the application yielded a body before calling start_response()")
                self._send_headers(-1)
                if self.no_body:
                    self._finish()
                    return
            self._body(data)
        except Exception:
            self._app_failed()

    def _start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        line = status_line(status)
        block, clen, flags = encode_headers(headers)
        self.status, self.headers, self.clen, self.hflags = line, block, clen, flags
        self.code = int(status[:3])
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

    def _send_headers(self, known_length):
        req, code, flags = self.resp, self.code, self.hflags
        parts = [self.status, self.headers]
        if not flags & HAS_DATE:
            parts.append(self.server.date_line)
        if not flags & HAS_SERVER:
            parts.append(SERVER_HEADER)
        if flags & WANTS_CLOSE or (req.early and not req.complete):
            self.keep = False   # (an unread 100-continue body cannot be skipped)
        if 100 <= code < 600:
            self.server.cells[STATUS + code // 100 - 1] += 1
        bodiless_status = code < 200 or code == 204 or code == 304
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

    def _body(self, data):
        size = len(data)
        if not size or self.no_body:
            return
        if self.clen >= 0:
            room = self.clen - self.sent
            if size > room:
                data, size = data[:room], room   # never more than the announced length
                if not size:
                    return
            self.sent += size
            self._queue(data)
        elif self.chunked:
            self.sent += size
            if size < 8192:
                self._queue(b"%x\r\n%b\r\n" % (size, data))
            else:
                self._queue(b"%x\r\n" % size)
                self._queue(data)
                self._queue(b"\r\n")
        else:
            self.sent += size
            self._queue(data)

    def _finish(self):
        """The app's body is complete: end the framing, close the iterable, reset."""
        if not self.headers_sent:
            self._send_headers(0)
        if self.chunked:
            self._queue(b"0\r\n\r\n")
        elif self.clen >= 0 and self.sent < self.clen and not self.no_body:
            self.keep = False   # short body: closing is the only way not to desync the client
        req = self.resp
        if req.early and not req.complete:
            self.keep = False   # the rest of the body was never read
        elif isinstance(req.body, BodyBuffer):
            req.body.discard()
        self._answered(req)
        self._close_result()
        self.resp = None
        self.status = None
        if not self.keep:
            self.close_after = True

    def _app_failed(self):
        req = self.resp
        log_app_error(req.environ)
        self._close_result()
        self.sendfile = None
        if self.headers_sent:
            # Part of the response is out: end the connection without a clean end of body,
            # so the client sees that it failed.
            self.keep = False
            self.close_after = True
        else:
            keep = self.keep and (req.complete or not req.early)
            self._queue(simple_response("500 Internal Server Error", FAILED_BODY, not keep, self.server.date_line))
            self.server.cells[STATUS + 4] += 1
            self.code = 500
            self.sent = len(FAILED_BODY)
            if not keep:
                self.close_after = True
        self._answered(req)
        self.resp = None
        self.status = None

    def _close_result(self):
        result = self.result
        self.result = self.iter = None
        if result is not None and hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                log_app_error(self.resp.environ if self.resp else {}, "error closing the response iterable")

    # --- writing ---

    def _queue(self, data):
        if not self.closed:
            self.out.append(data)
            self.out_size += len(data)

    def _flush(self):
        """Send queued output; False when the socket is full (EPOLLOUT armed) or the peer is gone."""
        out, sock = self.out, self.sock
        while out:
            try:
                n = sock.send(out[0]) if len(out) == 1 else sock.sendmsg(out[:MAX_IOV])
            except BlockingIOError:
                self._want_write()
                return False
            except OSError:
                self.close()
                return False
            self.out_size -= n
            self.server.cells[BYTES_OUT] += n
            self.deadline = self.server.now + self.server.write_timeout
            i = 0
            while n:
                size = len(out[i])
                if size <= n:
                    n -= size
                    i += 1
                else:
                    out[i] = memoryview(out[i])[n:]
                    n = 0
            del out[:i]
        return True

    def _blocking_flush(self):
        while not self._flush():
            if self.closed:
                raise OSError(errno.EPIPE, "client disconnected")
            if not _wait(self.fd, select.POLLOUT, self.server.write_timeout):
                self.close()
                raise OSError(errno.ETIMEDOUT, "client stopped reading")

    def _want_write(self):
        self.deadline = self.server.now + self.server.write_timeout
        if self.mask != EPOLLOUT:
            self.mask = EPOLLOUT
            self.server.ep.modify(self.fd, EPOLLOUT)

    # --- state ---

    def idle(self):
        return (self.cur is None and not self.pending and not self.out and self.resp is None)

    def _end(self):
        """Close after the last response: at once if nothing more can come from the client (it
        closed, or its last request ended the connection and nothing followed it), else a
        lingering close."""
        if self.eof or (not self.reading and not self.refused and not self.extra_input):
            self.close()
            return
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # response still on its way to the client. So: FIN first, then drop whatever the
        # client still sends until it closes too, or LINGER runs out (the tick closes then).
        self._release()
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.lingering = True
        self.linger_until = self.server.now + LINGER
        if self.mask != EPOLLIN:
            self.mask = EPOLLIN
            self.server.ep.modify(self.fd, EPOLLIN)

    def _drop_input(self):
        while True:
            try:
                n = self.sock.recv_into(self.server.rbuf)
                if not n:
                    break
                self.server.cells[BYTES_IN] += n
            except BlockingIOError:
                return
            except OSError:
                break
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        server = self.server
        server.conns.pop(self.fd, None)
        self._release()
        try:
            self.sock.close()
        except OSError:
            pass
        server._publish_count()
        if not server.accepting:
            server.resume_accepting()

    def _release(self):
        """Drop everything the connection holds for requests and responses."""
        self._close_result()
        for req in self.pending:
            if type(req) is not int and isinstance(req.body, BodyBuffer):
                req.body.discard()
        if self.cur is not None and isinstance(self.cur.body, BodyBuffer):
            self.cur.body.discard()
        self.pending.clear()
        self.server.cells[IN_FLIGHT] -= self.inflight
        self.inflight = 0
        self.out.clear()
        self.sendfile = None
        self.cur = None
        self.start_response = None  # break the cycle self -> bound method -> self


def _wait(fd, event, timeout):
    poller = select.poll()
    poller.register(fd, event)
    return bool(poller.poll(timeout * 1000))

