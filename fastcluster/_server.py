"""One worker's share of HTTP serving, the same for both request loops.

Written once, run two ways: as plain Python by the pure-Python loop (`_parser_py.py`), and compiled
by Cython as `fastcluster._server_c` for the compiled loop (`_parser.pyx`), with its C types in
`_server_c.pxd` (Cython's pure-Python mode). `HttpServer` holds a worker's settings, its counters
(its cells on the master's board), accept balancing, the once-a-second tick over its connections and
the start of a graceful stop. Each loop's `Server` subclass adds the I/O: the wait, accept, adopt.

The connection classes build on this one (`_exchange.py`, `_http.py`); this module knows them only
through their Python-visible methods (`tick`, `close`), so that nothing here depends on them.
"""

import os
import socket as _socket

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build reads CLOCK_MONOTONIC itself (_clock.pxd)
    from time import monotonic

from . import board as _board
from . import wsgi as _wsgi
from .config import Config as _Config
from .sockets import describe as _describe

DRAIN_LINGER = 1.0          # on stop, idle connections get this long for a request already on its way
BALANCE_SLACK = 1           # a worker this many connections above an accepting peer leaves the next ones to it
BALANCE_PAUSE = 0.01        # by not accepting for this long (the kernel hands them to the peer instead)

# the board's cells (board.py), offsets in a worker's slot
B_HEADER, B_STRIDE = _board.HEADER, _board.STRIDE
B_CONNS, B_NOT_ACCEPTING, B_RSS, B_BEAT = _board.CONNS, _board.NOT_ACCEPTING, _board.RSS, _board.BEAT
rss_bytes = _board.rss_bytes
log = _wsgi.log


@cython.cclass
class HttpServer:
    """One worker's settings, counters and connection timers (fields: _http_c.pxd).

    The loop's subclass provides serve(), accepting (_set_accepting, _accept) and adopt().
    """

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        stop_requested = stopping = accepting = balanced = accept_error_logged = False
        deadline = accept_paused_until = now = 0.0
        requests = 0
        board_index = -1
        board = None

    def _configure(self, listener, app, config, wakeup_fd, master_pid, tick, board, board_index, access_log):
        config = config or _Config()
        self.listener = listener
        self.app = app
        self.tick = tick
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
        self.spill = _wsgi.SpillBudget(config.max_spill)
        self.wakeup_fd = wakeup_fd
        self.master_pid = master_pid
        self.conns = {}
        self.tcp = listener.family in (_socket.AF_INET, _socket.AF_INET6)
        _url, name, port, _short = _describe(listener)
        self.base_environ = _wsgi.base_environ(name, port, config.workers > 1)
        self.date = _wsgi.DateHeader()
        self.date_line = self.date.get()
        self.now = monotonic()
        # The master's board (board.py): this worker's counters, and every worker's connection
        # count and whether it accepts, so that a worker can leave new connections to a lighter one.
        self.balanced = board is not None and board_index >= 0
        if self.balanced:
            self.board = memoryview(board).cast("q")
            self.board_index = board_index
            base = B_HEADER + B_STRIDE * board_index
            self.cells = self.board[base:base + B_STRIDE]
        else:
            self.cells = _board.private_cells()
        self.access = access_log
        return 0

    def resume_accepting(self):
        if (not self.accepting and not self.stopping and self.now >= self.accept_paused_until
                and len(self.conns) < self.max_connections):
            self.accept_paused_until = 0.0
            self._set_accepting(True)

    def _publish_count(self):
        self.cells[B_CONNS] = len(self.conns)
        return 0

    def _lighter_worker_available(self):
        """True when a worker whose listening socket is registered (so the kernel hands it new
        connections while this one pauses) holds more than BALANCE_SLACK fewer connections."""
        mine = len(self.conns) - BALANCE_SLACK
        for i in range(self.board[0]):
            if i != self.board_index:
                base = B_HEADER + B_STRIDE * i
                count = self.board[base + B_CONNS]
                if 0 <= count < mine and self.board[base + B_NOT_ACCEPTING] == 0:
                    return True
        return False

    def _accepted(self):
        """After each accept: leave the next connections to a lighter worker? (Keep-alive
        connections stay where they land. This one accepted the connection that woke it, and a
        worker only pauses while another is registered, so some worker always takes new ones.)"""
        if self.balanced and self._lighter_worker_available():
            self._set_accepting(False)
            self.accept_paused_until = self.now + BALANCE_PAUSE
            return True
        return False

    def _accept_failed(self, err):
        """accept() ran out of descriptors or memory: pause accepting for half a second."""
        if not self.accept_error_logged:
            self.accept_error_logged = True
            log.error("accept failed: %s; pausing accepts for 0.5 s at a time", os.strerror(err))
        self._set_accepting(False)
        self.accept_paused_until = self.now + 0.5
        return 0

    def _next_wake(self, next_tick):
        """When the loop must wake at the latest: the tick, or the end of an accept pause."""
        if not self.accepting and self.accept_paused_until and self.accept_paused_until < next_tick:
            return self.accept_paused_until
        return next_tick

    def _woke(self, now):
        """Right after the wait: the clock, and accepts paused for balancing or errors."""
        self.now = now
        if not self.accepting and self.accept_paused_until and self.now >= self.accept_paused_until:
            self.resume_accepting()
        return 0

    def _tick(self):
        """Once a second: heartbeat and counters, logs, the master's health, the timers."""
        now = self.now
        self.date_line = self.date.get()
        rss = rss_bytes()
        self.cells[B_BEAT] = int(now * 1e6)
        self.cells[B_RSS] = rss
        self._flush_access()
        if self.tick is not None:
            self.tick(self.requests, rss)
        if self.master_pid and os.getppid() != self.master_pid:
            self.stop_requested = True          # the master is gone: do not outlive it
        self.resume_accepting()
        for conn in list(self.conns.values()):
            conn.tick(now)      # its deadlines; when stopping, a clean close of what stayed idle
        return 0

    def _begin_stop(self):
        master_gone = self.master_pid and os.getppid() != self.master_pid
        self.stopping = True
        self.deadline = self.now + (min(self.graceful_timeout, 1.0) if master_gone else self.graceful_timeout)
        self._set_accepting(False)
        self.listener.close()
        # Connections stay open for DRAIN_LINGER: a client may have sent a request that is
        # not read yet (or just connected). Each response from now on says Connection: close;
        # the first tick after the linger closes the connections that stayed idle.
        return 0

    def _done(self):
        """The loop may end: stopping, and every connection closed or the grace time up."""
        return self.stopping and (not self.conns or self.now >= self.deadline)

    def _log_access(self, env, status, size, secs):
        self.access.log(env, status, size, secs)
        return 0

    def _flush_access(self):
        if self.access is not None:
            self.access.flush()
        return 0

    def _serve_start(self, ready):
        """What serve() does before its first wait: counters, and `ready()` once watched."""
        self.cells[B_BEAT] = int(self.now * 1e6)
        self.cells[B_RSS] = rss_bytes()
        if ready is not None:
            ready()
        return 0

    def _serve_end(self):
        for conn in list(self.conns.values()):
            conn.close()
        self._flush_access()
        return 0

    # --- the loop's I/O: each loop's Server provides this ---

    def _set_accepting(self, on):
        raise NotImplementedError
