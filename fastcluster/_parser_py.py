"""The pure-Python twin of the compiled request loop (`_parser.pyx`).

Same classes, same behaviour: it subclasses the same shared sources (`_server.py`, `_exchange.py`,
`_http.py`, which the compiled loop uses compiled) with the same I/O, over `select.epoll` and
socket objects instead of direct system calls. It is the baseline that shows what compiling buys,
and the loop that runs where no compiler was found. Each method here has its twin, by the same
name, in `_server.pxi` or `_connection.pxi`.
"""

from __future__ import annotations

import ctypes   # for prctl (the compiled loop calls it itself, without ctypes in its memory)
import errno
import os
import select
import signal
import socket
import threading
import time
from time import monotonic

from . import board as _board
from ._exchange import CLOSED
from ._http import HttpConnection
from ._server import LONG_HOLD_NS, AppPool, HttpServer
from ._settings import LONG_CALL
from ._transport import load_tls

IMPLEMENTATION = "python"

RECV_SIZE = 65536
MAX_IOV = 64                # buffers per sendmsg
ACCEPT_BATCH = 16           # accepts per wake-up, so that busy workers leave some to idle ones
MAX_EVENTS = 256            # epoll events per wait
SENDFILE_CHUNK = 1 << 20
SIZES = {"RECV_SIZE": RECV_SIZE, "MAX_IOV": MAX_IOV, "ACCEPT_BATCH": ACCEPT_BATCH, "MAX_EVENTS": MAX_EVENTS,
         "SENDFILE_CHUNK": SENDFILE_CHUNK}

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
B_BYTES_IN, B_BYTES_OUT = _board.BYTES_IN, _board.BYTES_OUT


OFF_MIN = 500000             # ns: FC_OFF_MIN in _threads.pxd
OFF_UNPROVEN = 5000000       # ns: FC_OFF_UNPROVEN
HOLD_MAX = 20000000          # ns: FC_HOLD_MAX
LOAD_SPAN = 1000000          # ns: FC_LOAD_SPAN
PRESSURE_SPAN = 50000000     # ns: FC_PRESSURE_SPAN
SLEEPER = 20                 # FC_SLEEPER
PRESSURE_MAX = 0.2           # FC_PRESSURE_MAX (_server.py's)
HOT_BRIEF = 100              # FC_HOT_BRIEF
HOT_LONG = 10000             # FC_HOT_LONG


def _thread_cpu_ns(ident):
    """The CPU time of the thread `ident` (threading.get_ident()), in ns; -1 when it cannot be read."""
    try:
        return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
    except (OSError, OverflowError):
        return -1


def _thread_sleeps(tid):
    """True when the thread `tid` (its id in the kernel) sleeps in the kernel: fc_thread_sleeps."""
    try:
        with open("/proc/self/task/%d/stat" % tid, "rb") as f:
            line = f.read(256)
    except OSError:
        return True
    end = line.rfind(b")")
    return end < 0 or line[end + 2:end + 3] != b"R"


class Pool(AppPool):
    """The app threads' primitives (the twin of _pool.pxi and _threads.pxd): the token is a Lock
    held by the thread that runs the loop, a spare thread waits on a Semaphore, and the monitor is
    a Python thread that looks every 0.1 ms after a handover (for a second while most calls handed
    over lately waited indeed, 10 ms otherwise: `proven`, fc_pool_left), and otherwise at times
    that double from 1 ms to 10 ms; in an idle worker it sleeps until the next call begins. It hands
    the loop over by the rule of fc_call_waits (_threads.pxd)."""

    def __init__(self, server, limit):
        super().__init__(server, limit)
        self.token = threading.Lock()
        self.token.acquire()            # the thread that calls serve() runs the loop
        self.promote = threading.Semaphore(0)
        self.seq = 0                    # app calls begun
        self.hot = 0                    # looks left at the short interval
        self.proven = 1.0               # the share of recent handed-over calls that waited indeed (fc_pool_left)
        self.finished = False
        self.parked = False             # the monitor sleeps on `wake` until the next call begins
        self.wake = threading.Semaphore(0)
        self.caller = (0, 0)            # the thread whose call began last: (get_ident(), its kernel id)
        self.handovers = 0              # calls the monitor handed over (tests, diagnostics)
        self.tracked = {}               # handed-over calls running: thread ident -> [CPU (ns) at the last
        #                                 measure, restless, since, when handed over (ns), CPU (ns) then]
        self.spent = 0                  # CPU (ns) of tracked calls that returned since the last measure
        self.load = 0.0                 # their CPU, in CPUs (fc_pool_measure)
        self.load_at = time.monotonic_ns()
        self.pressure = 0.0             # fc_pool_pressure
        self.psi_last = self.psi_at = 0

    def _left(self):
        ident = threading.get_ident()
        slot = self.tracked.pop(ident, None)
        if slot is None:
            return False
        cpu = _thread_cpu_ns(ident)
        self.spent += max(0, cpu - slot[0])
        waited = 2 * (cpu - slot[4]) < time.monotonic_ns() - slot[3]     # (fc_pool_left)
        self.proven += ((1.0 if waited else 0.0) - self.proven) / 8
        if waited:
            self.hot = HOT_LONG
        return not slot[1]

    def _load(self):
        return self.load

    def _pressure(self):
        return self.pressure

    def _restless(self):
        return sum(1 for slot in list(self.tracked.values()) if slot[1])

    def _proven(self):
        return self.proven >= 0.5

    def _held(self):
        now = time.monotonic_ns()
        return any(now - slot[2] >= LONG_HOLD_NS for slot in list(self.tracked.values()))

    def _measure(self, now):
        """fc_pool_measure and fc_pool_pressure."""
        span = now - self.load_at
        if span < LOAD_SPAN:
            return
        used, self.spent = self.spent, 0
        for ident, slot in list(self.tracked.items()):
            cpu = _thread_cpu_ns(ident)
            if cpu > slot[0]:
                used += cpu - slot[0]
            slot[0] = cpu
        self.load = used / span
        self.load_at = now
        if now - self.psi_at < PRESSURE_SPAN:
            return
        try:
            with open("/proc/pressure/cpu", "rb") as f:
                stalled = int(f.read(128).split(b"total=", 1)[1].split()[0])
        except (OSError, IndexError, ValueError):
            return
        if 0 < self.psi_last <= stalled:
            self.pressure = (stalled - self.psi_last) * 1000.0 / (now - self.psi_at)
        self.psi_last, self.psi_at = stalled, now

    def _start(self):
        threading.Thread(target=self._watch, name="fastcluster-monitor", daemon=True).start()

    def _release(self):
        self.caller = (threading.get_ident(), threading.get_native_id())
        self.seq += 1
        self.token.release()
        if self.parked:
            self._unpark()

    def _unpark(self):
        # (the monitor may clear `parked` at the same time and take no post: it then wakes once
        # early at its next park, which costs a look and loses nothing)
        self.parked = False
        self.wake.release()

    def _reclaim(self):
        return self.token.acquire(False)

    def block(self):
        if self.token.acquire(False):
            self._hand_over(HOT_LONG if self._proven() else HOT_BRIEF)

    def _hand_over(self, hot):     # with the token just taken
        self.hot = hot
        self.promote.release()

    def follow(self):
        self.promote.acquire()
        return not self.finished

    def finish(self):
        if not self.finished:
            self.finished = True
            self._unpark()
            for _ in range(self.total + 1):
                self.promote.release()

    def _spawn(self):
        threading.Thread(target=self.server._follower, name="fastcluster-app", daemon=True).start()

    def _call_waits(self, watch, seq):
        """fc_call_waits: does the call on the loop's thread wait (1: a sleeper, 2: another) or not
        (0)? `watch` is the monitor's view of it, [seq, ident, tid, first, cpu, all]."""
        now = time.monotonic_ns()
        if seq != watch[0]:
            ident, tid = self.caller
            watch[:] = [seq, ident, tid, now, _thread_cpu_ns(ident), time.process_time_ns()]
            return 0
        if now - watch[3] >= HOLD_MAX:
            return 2
        wall = now - watch[3]
        off_min = OFF_MIN if self._proven() else OFF_UNPROVEN
        if wall < off_min:
            return 0
        cpu, whole = _thread_cpu_ns(watch[1]), time.process_time_ns()
        if cpu < 0 or watch[4] < 0:
            return 2
        used = cpu - watch[4]
        others = (whole - watch[5]) - used
        if wall - used >= off_min and 2 * used <= wall and 2 * others < wall and _thread_sleeps(watch[2]):
            if used * SLEEPER < wall:
                return 1
            return 2 if self.pressure < PRESSURE_MAX else 0
        return 0

    def _watch(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        _set_thread_name(b"fc-monitor")
        last = -1
        watch = [-1, 0, 0, 0, 0, 0]
        idle = 0
        period = 0.001        # doubles up to 10 ms while no call blocks
        while not self.finished:
            if self.hot > 0:
                self.hot -= 1
                period = 0.001
                time.sleep(0.0001)
            else:
                time.sleep(period)
                period = min(period * 2, 0.01)
            seq = self.seq
            waits = 0 if self.token.locked() else self._call_waits(watch, seq)
            if waits and self.token.acquire(False):
                self.handovers += 1
                cpu = _thread_cpu_ns(watch[1])
                self.tracked[watch[1]] = [cpu, waits == 2, watch[3], time.monotonic_ns(), cpu]
                self._hand_over(HOT_LONG if self._proven() else HOT_BRIEF)
            self._measure(time.monotonic_ns())
            # ten looks at 10 ms with no call begun while the loop's thread holds the token: an
            # idle worker, whose monitor sleeps until the next call (_release wakes it)
            idle = idle + 1 if seq == last and self.hot <= 0 and period >= 0.01 and self.token.locked() else 0
            if idle >= 10:
                self.parked = True
                if self.seq == seq and not self.finished:
                    self.wake.acquire()
                self.parked = False
                idle = 0
                period = 0.001
                seq = self.seq
            last = seq


class Server(HttpServer):
    def _open(self, access_log, board_index):
        self.bell = self.bells[board_index] if 0 <= board_index < len(self.bells) else -1   # this worker's
        self.batch_events = MAX_EVENTS   # events the next wait takes at most (_iterate)
        self.rbuf = bytearray(RECV_SIZE)
        self.rview = memoryview(self.rbuf)
        self.ep = select.epoll()
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)   # app threads wake the wait (_signal)
        settings = self.settings
        if settings.threads > 1:
            self.pool = Pool(self, settings.threads)

    def _watch_wakers(self):
        if self.settings.wakeup_fd >= 0:
            self.ep.register(self.settings.wakeup_fd, select.EPOLLIN)
        self.ep.register(self.efd, select.EPOLLIN)
        if self.bell >= 0:
            self.ep.register(self.bell, select.EPOLLIN)

    def _close_poll(self):
        self.ep.close()
        os.close(self.efd)

    def _iterate(self, limit):
        conns = self.conns
        if self.fresh is not None:
            self._watch_fresh()     # a wait inside its request's app call, or another thread's turn
        events = self.ep.poll(self._wait_ms(limit) / 1000.0, self.batch_events)
        self._woke(monotonic())
        began = time.perf_counter()
        incoming = False
        for fd, _ev in events:
            conn = conns.get(fd)
            if conn is not None:
                conn._on_event()
            elif fd == self.efd:
                try:
                    os.eventfd_read(self.efd)
                except BlockingIOError:
                    pass
            elif fd == self.bell:
                try:
                    os.eventfd_read(self.bell)
                except BlockingIOError:
                    pass
                self._rung()
            elif fd == self.settings.wakeup_fd:
                self._drain_wakeup()
            elif self._is_listener(fd):
                incoming = True
            # else: a connection closed earlier in this batch
        # (one event at a time after a batch over LONG_CALL, and the listening sockets looked at
        # then, event or not: _server.pxi's _iterate says why)
        self.batch_events = 1 if time.perf_counter() - began > LONG_CALL else MAX_EVENTS
        self._batch_done(incoming or (self.batch_events == 1 and self.accepting))

    def _signal(self):
        os.eventfd_write(self.efd, 1)

    def _poll_fd(self):
        return self.ep.fileno()

    def _watch_listener(self, fd, on):
        if on:
            self.ep.register(fd, EPOLLIN | EPOLLEXCLUSIVE)
        else:
            self.ep.unregister(fd)

    def _ring_fd(self, fd):
        os.eventfd_write(fd, 1)

    def _accept_from(self, listener):
        for _ in range(ACCEPT_BATCH):
            if self._full():
                return True
            try:
                sock, addr = listener.sock.accept()
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._accept_failed(exc.errno)
                    return True
                continue  # ECONNABORTED and friends: that client is gone, take the next
            sock.setblocking(False)
            self._add(sock, addr, listener)
            if self._accepted():
                return True
        return False

    def adopt(self, sock):
        """(_server.pxi's Server.adopt)"""
        sock.setblocking(False)
        listener = self.listeners[0]
        return self._add(sock, sock.getpeername() if listener.tcp else "", listener)

    def _add(self, sock, addr, listener):
        """(_server.pxi's Server._add)"""
        env = listener.base_environ.copy()
        if listener.tcp:
            env["REMOTE_ADDR"] = addr[0]
            env["REMOTE_PORT"] = str(addr[1])
        else:
            env["REMOTE_ADDR"] = ""
        conn = (Connection if self.settings.tls is None else TlsConnection)(self, sock, env)
        self._adopted(conn, conn.fd, listener.read_first)
        return conn

    def _read_fresh(self):
        self.fresh._on_event()

    def _watch_fresh(self):
        """(_server.pxi's Server._watch_fresh)"""
        conn = self.fresh
        if conn is not None:
            self.fresh = None
            if conn.state != CLOSED and not conn.watched:
                self.ep.register(conn.fd, conn.mask)
                conn.watched = True

    def _drain_wakeup(self):
        """(_server.pxi's Server._drain_wakeup)"""
        try:
            while True:
                data = os.read(self.settings.wakeup_fd, 512)
                if not data:
                    return
                if signal.SIGTERM in data:
                    self.stop_requested = True
        except (BlockingIOError, InterruptedError):
            pass


class Connection(HttpConnection):
    # out_size is two counters here, each written by one thread: what the producer queued (the
    # loop, or an app thread) and what the loop sent. (In the compiled loop both sides are C code
    # under the GIL, so one field is enough.)
    out_size = property(lambda self: self.queued - self.sent_bytes)

    def __init__(self, server, sock, env):
        self.sock = sock
        self.queued = self.sent_bytes = 0
        self._setup(server, sock.fileno(), env)
        self.out = []               # bytes-like objects waiting to be sent, in order
        self.mask = EPOLLIN         # the epoll events we are registered for (or will be, once watched)
        self.watched = False        # registered with the epoll (a fresh connection is not, yet)
        # TCP_NODELAY: set by the first write that is not the last (_flush); nothing to set on a
        # unix socket; a TLS handshake is writes both ways, so at once
        tcp = sock.family != socket.AF_UNIX
        self.nodelay = not tcp or server.settings.tls is not None
        if tcp and server.settings.tls is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read(self):
        try:
            n = self.sock.recv_into(self.server.rbuf)
        except (BlockingIOError, InterruptedError):
            return -1
        except OSError:
            self.close()
            return -2
        self.server.cells[B_BYTES_IN] += n
        return n

    def _feed_read(self, n):
        return self._feed(self.server.rview[:n], n)

    # --- writing ---

    def _queue(self, data):
        if self.state != CLOSED:
            self.out.append(data)
            self.queued += len(data)

    def _flush(self):
        """(_connection.pxi's Connection._flush)"""
        out, sock = self.out, self.sock
        if not self.nodelay and self._writes_again():   # (TCP_NODELAY: see _writes_again)
            self.nodelay = True
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while out:
            try:
                n = sock.send(out[0]) if len(out) == 1 else sock.sendmsg(out[:MAX_IOV])
            except BlockingIOError:
                self._want_write()
                return False
            except OSError:
                self.close()
                return False
            self.sent_bytes += n
            self.server.cells[B_BYTES_OUT] += n
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

    def _send_file_part(self, file):
        while True:
            try:
                n = os.sendfile(self.fd, file.fd, file.offset, min(file.left, SENDFILE_CHUNK))
            except BlockingIOError:
                self._want_write()
                return -1
            except InterruptedError:
                continue
            except OSError:
                self.close()
                return -1
            self.server.cells[B_BYTES_OUT] += n
            return n

    def _set_mask(self, mask):
        self.mask = mask
        if self.watched:             # (a fresh connection is registered with this mask when watched)
            self.server.ep.modify(self.fd, mask)

    # --- ending ---

    def _shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    def _eof_waits(self):
        try:
            peeked = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError as exc:     # (nothing to read now, or a reset: no end of input seen)
            peeked = exc
        return peeked == b""

    def _drop_input(self):
        server = self.server
        while True:
            try:
                n = self.sock.recv_into(server.rbuf)
                if not n:
                    break
                server.cells[B_BYTES_IN] += n
            except BlockingIOError:
                return
            except OSError:
                break
        self.close()

    def _close_fd(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _drop_output(self):
        self.out.clear()
        self.sent_bytes = self.queued



_tls = None     # fastcluster.tls, imported with the first TLS connection (ssl is loaded only by a
                # worker that serves TLS)


def _set_thread_name(name):
    """prctl(PR_SET_NAME): this thread's name in /proc (at most 15 bytes)."""
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)   # 15: PR_SET_NAME


def set_parent_death_signal(signum):
    """(_parser.pyx's set_parent_death_signal)"""
    # dlopen(NULL): libc is already loaded; find_library would run ldconfig in a subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signum, 0, 0, 0) != 0:   # 1: PR_SET_PDEATHSIG
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _load_tls():
    global _tls
    _tls = load_tls()
    return _tls


class TlsConnection(Connection):
    """HTTPS: a Connection whose bytes go through a tls.Session. What is read is decrypted before
    the parser sees it; what is queued is encrypted SEAL_SIZE bytes at a time as the socket takes
    it (the ciphertext waiting, `sealed`, counts in out_size); a file is read and encrypted in
    pieces (no sendfile through TLS); the FIN follows our close_notify."""

    out_size = property(lambda self: self.queued - self.sent_bytes + len(self.sealed))

    def __init__(self, server, sock, env):
        self._start_tls(_tls if _tls is not None else _load_tls(), server.settings)
        self.sealed = b""
        super().__init__(server, sock, env)

    def _feed_read(self, n):
        return self._tls_feed(self.server.rview[:n])

    def _add_sealed(self, data):
        self.sealed += data

    def _flush(self):
        out, tls = self.out, self.tls
        while True:
            if not self.sealed:
                if not out:
                    return True
                if not tls.ready:             # (a timed-out handshake: nothing can be sent)
                    self.close()
                    return False
                size = i = 0
                while i < len(out) and size < _tls.SEAL_SIZE:
                    tls.seal(out[i])
                    size += len(out[i])
                    i += 1
                del out[:i]
                self.sent_bytes += size
                self.sealed = tls.pending()
            try:
                n = self.sock.send(self.sealed)
            except BlockingIOError:
                self._want_write()
                return False
            except OSError:
                self.close()
                return False
            self.server.cells[B_BYTES_OUT] += n
            self.sealed = self.sealed[n:]

    def _send_file_part(self, file):
        if self.sealed and not self._flush():
            return -1
        try:
            chunk = os.pread(file.fd, min(file.left, _tls.SEAL_SIZE), file.offset)
        except OSError:
            self.close()
            return -1
        if chunk:
            self.tls.seal(chunk)
            self.sealed = self.tls.pending()
        return len(chunk)

    def _shutdown_write(self):
        try:
            self.sock.send(self.tls.close_notify())
        except OSError:
            pass
        return Connection._shutdown_write(self)

    def _drop_output(self):
        Connection._drop_output(self)
        self.sealed = b""
