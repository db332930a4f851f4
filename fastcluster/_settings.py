"""What one worker's loop reads and does not change while it serves, the same for both loops.

Written once, run two ways: as plain Python by the pure-Python loop, and compiled by Cython as
`fastcluster._settings_c` for the compiled loop, with its C types in `_settings_c.pxd`. Here:
- `Settings`: the limits, timeouts and flags of the configuration, built once (HttpServer._configure);
- `Listener`: one listening socket of those the master bound (one per --bind) and what its
  connections start from;
- `Admission`: whether the worker takes new connections now, besides its epoll registration: its
  accept pauses and the master's board of the other workers (accept balancing).
"""

import socket as _socket

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build reads the CPU's counter itself (_clock.pxd)
    def _cpu_tick_rate():
        return 0.0

from . import board as _board
from . import wsgi as _wsgi
from .sockets import describe as _describe

# an app call this long probably waits: most of them so, and the loop is handed over up front
# (AppPool, _server.py; the compiled loop's batches, _connection.pxi)
LONG_CALL = 0.001

# the board's cells (board.py), offsets in a worker's slot
B_HEADER, B_STRIDE = _board.HEADER, _board.STRIDE
B_CONNS, B_NOT_ACCEPTING, B_BUSY, B_STOPPING = _board.CONNS, _board.NOT_ACCEPTING, _board.BUSY, _board.STOPPING


def _kernel_uses_cpu_counter():
    """Whether the kernel keeps time by the CPU's own counter (x86's TSC, ARM's arch timer): then
    it runs at one rate on every CPU, and app calls and batches are timed by it (_clock.pxd)."""
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            return f.read().strip() in ("tsc", "arch_sys_counter")
    except OSError:
        return False


@cython.cclass
class Settings:
    """What the loop reads of the configuration (fields: _server_c.pxd): limits, timeouts, flags and
    the facts of its master, built from Config once (HttpServer._configure) and fixed before serving
    (use_tls adds the TLS context)."""

    if not cython.compiled:
        tls = None

    def __init__(self, config, wakeup_fd, master_pid):
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
        self.timeout = config.timeout
        self.threads = config.threads
        self.spill = _wsgi.SpillBudget(config.max_spill)
        self.trust = _wsgi.Trust(config.forwarded_allow_ips, config.forwarded_headers)   # --forwarded-*
        self.root_path = config.root_path
        self.proxy_protocol = config.proxy_protocol
        # --health-path: its target as sent, and with a query after it
        self.health = config.health_path.encode("ascii") if config.health_path else None
        self.health_query = self.health + b"?" if self.health else None
        self.ws_max_size = config.ws_max_size
        self.ws_ping_interval = config.ws_ping_interval
        self.ws_ping_timeout = config.ws_ping_timeout
        # HTTP/2 (_h2.py): its settings, None with --http 1; http2_only with --http 2
        self.http2 = None if config.http == "1" else {
            "max_concurrent_streams": config.h2_max_concurrent_streams,
            "initial_window_size": config.h2_initial_window_size, "max_frame_size": config.h2_max_frame_size}
        self.http2_only = config.http == "2"
        self.scheme = "http"
        self.wakeup_fd = wakeup_fd
        self.master_pid = master_pid
        # app calls (AppPool) and the compiled loop's batches are timed in _ticks(): the CPU's
        # counter where the kernel keeps time by it
        rate = _cpu_tick_rate() if _kernel_uses_cpu_counter() else 0.0
        self.cpu_ticks = rate > 0.0
        self.long_ticks = int((rate if self.cpu_ticks else 1e9) * LONG_CALL)   # LONG_CALL in ticks


@cython.cclass
class Listener:
    """One listening socket the worker serves, of those the master bound (one per --bind; fields:
    _server_c.pxd): its descriptor, whether it is TCP (client addresses, TCP_NODELAY), whether a new
    connection is read before it is watched (TCP_DEFER_ACCEPT: the kernel woke us for its first
    bytes), and the environ its connections start from (SERVER_NAME, SERVER_PORT)."""

    def __init__(self, sock, config):
        self.sock = sock
        self.fd = sock.fileno()
        self.tcp = sock.family in (_socket.AF_INET, _socket.AF_INET6)
        self.read_first = self.tcp and sock.getsockopt(_socket.IPPROTO_TCP, _socket.TCP_DEFER_ACCEPT) > 0
        _url, name, port, _short = _describe(sock)
        self.base_environ = _wsgi.base_environ(name, port, config.workers > 1, config.threads > 1, config.root_path)


@cython.cclass
class Admission:
    """Whether this worker takes new connections now, besides its epoll registration (fields:
    _server_c.pxd): a pause after accept errors or after leaving connections to a lighter worker,
    and the master's board, where each worker's connection count and accepting state are read."""

    if not cython.compiled:
        board = None

    def __init__(self, board, index):
        self.balanced = board is not None and index >= 0
        self.index = index
        self.paused_until = 0.0
        self.error_logged = False
        if self.balanced:
            self.board = memoryview(board).cast("q")

    def cells(self):
        """This worker's own cells on the board."""
        base = B_HEADER + B_STRIDE * self.index
        return self.board[base:base + B_STRIDE]

    def lighter_worker(self, mine, saturated, threads):
        """The board index of another worker that takes connections (its listening socket
        registered, or paused for balance: a ring brings it back) and is lighter than this one:
        holds fewer than `mine` connections, or has an app thread free while all of this one's
        are busy (`saturated`); the lightest, when several are; -1 when there is none."""
        best = -1
        fewest = mine
        for i in range(self.board[0]):
            if i != self.index:
                base = B_HEADER + B_STRIDE * i
                count = self.board[base + B_CONNS]
                if count < 0 or self.board[base + B_NOT_ACCEPTING] == 1:
                    continue        # (gone, full or stopping)
                if count < fewest:
                    best = i
                    fewest = count
                elif best < 0 and saturated and self.board[base + B_BUSY] < threads:
                    best = i
        return best

    def master_stopping(self):
        """The master said on the board that it stops (or drains)."""
        return self.board[B_STOPPING] != 0
