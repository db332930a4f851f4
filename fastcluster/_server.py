"""One worker's share of HTTP serving, the same for both request loops.

Written once, run two ways: as plain Python by the pure-Python loop (`_parser_py.py`), and compiled
by Cython as `fastcluster._server_c` for the compiled loop (`_parser.pyx`), with its C types in
`_server_c.pxd` (Cython's pure-Python mode). Here (what the loop reads of the configuration, its
listening sockets and accept balancing are `_settings.py`'s Settings, Listener and Admission):
- `AppPool`: the policy of app threads (each loop subclasses it with the thread primitives);
- `HttpServer`: the loop's control flow (serve(), each loop thread's life, the rest of an
  iteration, the once-a-second tick, the start of a graceful stop), its counters (its cells on the
  master's board) and what lets app calls wait without stopping the loop. Each loop's `Server`
  subclass adds the I/O: the wait, accept, adopt. (An ASGI app's event loop drives it through
  `_asgi.EventLoopDriver`.)

App calls and the loop (--threads):
- `--threads 1`: the app runs on the loop's own thread. When it must wait inside the call (for more
  of a 100-continue body, or for a slow client to take its output), `_await()` runs the loop
  (`_iterate()`) nested, with no app call dispatched, until the wait is over: other connections are
  still read, written, accepted and timed out; their requests wait for the call to end.
- `--threads N`, N > 1: an `AppPool` (each loop has its own) runs the app on the loop's thread too,
  but releases the loop while it does; when a call blocks, another thread takes the loop over, and
  the thread whose call blocked finishes that response on its own, hands the connection back through
  `_post()`, and becomes a spare. A call that waits inside (body, output) hands the loop over at once.

The connection classes build on this one (`_exchange.py`, `_transport.py` ... `_http.py`); this module knows them only
through their Python-visible methods, so that nothing here depends on them.
"""

import os
import socket as _socket
import signal as _signal
import threading as _threading
from collections import deque

try:
    import cython
except ImportError:   # plain Python without Cython installed
    from . import _pure as cython

if not cython.compiled:   # the compiled build reads CLOCK_MONOTONIC and the CPU's counter itself (_clock.pxd)
    from time import monotonic, monotonic_ns

    def _ticks(cpu):
        return monotonic_ns()

    from ._settings import Admission, Listener, Settings   # (the compiled build cimports them: _server_c.pxd)

from . import board as _board
from . import wsgi as _wsgi
from .config import Config as _Config
from .errors import Demoted

DRAIN_LINGER = 1.0          # on stop, idle connections get this long for a request already on its way
BALANCE_PAUSE = 0.01        # a worker that leaves connections to a lighter one stops accepting this long
BALANCE_SLACK = 1           # a worker this many connections above an accepting peer leaves the next ones to it
ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
# an HTTP scope's extensions: a file as the response body, sent by the server (_asgi.Cycle._send_file),
# and trailers after the body (_asgi.Cycle._send_trailers)
HTTP_EXTENSIONS = {"http.response.pathsend": {}, "http.response.zerocopysend": {}, "http.response.trailers": {}}
# AppPool's rule for another app call beside those running (issue 31, _can_call): it starts when the
# calls running are asleep (under ASLEEP of a CPU each: the monitor's `load`), or when the machine has
# CPUs to spare (its `pressure` under PRESSURE_MAX) and the calls running, shared among them, leave
# room for one call more under SHARE_MAX of one CPU (the GIL's); a call handed over that has run
# LONG_HOLD_NS (0.1 s) holds no one back.
ASLEEP = 0.05
PRESSURE_MAX = 0.2
SHARE_MAX = 1.0
LONG_HOLD_NS = 100000000
SLEEPY_FLOOR = 1e-6         # AppPool.sleepy below this is 0 (decaying on its own it would stick at a
                            # subnormal double, where each step costs a microcode assist: benchmarks/README.md)
NESTED_WAIT = 0.05          # a nested iteration waits at most this long, then looks at its condition again

# Who may run the loop's code. One thread at a time holds the loop: the serve() caller when there
# are no app threads (--threads 1, or an ASGI app on its event loop's thread); with app threads,
# whichever thread holds the AppPool's token (it lets it go for each app call, a spare takes it
# when a call blocks). Everything of a connection's state and the server's tables is the holder's
# alone: an app thread touches only its own exchange's response (Exchange) and hands the
# connection back through _post(), the one entry made for other threads. A call that returns after
# another thread took the loop over unwinds the loop's code on its thread with Demoted, so it can
# touch nothing more. With FASTCLUSTER_CHECK_THREADS=1 in the environment, the loop's entry points
# (HttpServer._after_events and _tick, HttpConnection._pump, _handed_back, tick and close) assert
# that the calling thread is the holder (HttpServer._check_thread); CI runs the suite once so.
CHECK_THREADS = _wsgi.CHECK_THREADS
_get_ident = _threading.get_ident

# the board's cells (board.py), offsets in a worker's slot
B_CONNS, B_NOT_ACCEPTING, B_RSS, B_BEAT = _board.CONNS, _board.NOT_ACCEPTING, _board.RSS, _board.BEAT
B_BUSY = _board.BUSY
B_ACCEPTED = _board.ACCEPTED
rss_bytes = _board.rss_bytes
log = _wsgi.log


def _fail_worker():
    """The loop's code failed on an app thread: log it and end the worker (exit code 1, a crash
    to the master, which replaces it)."""
    import sys

    log.critical("the loop failed on an app thread; the worker stops", exc_info=True)
    sys.stderr.flush()
    os._exit(1)


@cython.cclass
class AppPool:
    """The threads that run one worker's app calls when --threads is above 1 (fields: _server_c.pxd).

    Each loop subclasses it with the primitives: a token (which thread runs the loop), a way to
    wake a spare thread, and a monitor that hands the loop over when an app call waits for the
    world (or has held it 20 ms). The policy is here: how many app calls run at once (at most
    `limit`; beyond the first, only while the GIL has room: _can_call), and always one spare thread
    while a call runs, so that the loop can be handed over at any moment.
    """

    if not cython.compiled:
        busy = total = owner = calls = 0
        sleepy = 0.0

    def __init__(self, server, limit):
        self._setup(server, limit)

    def _setup(self, server, limit):
        self.server = server
        self.limit = limit          # app calls at once (--threads)
        self.total = 1              # threads in the pool, the one that called serve() included
        self.busy = 0               # app calls begun and not handed back to the loop yet
        self.sleepy = 0.0
        self.calls = 0
        return 0

    def _can_call(self):
        """May an app call start now? The first always may (the monitor hands the loop over if it
        waits). Another, beside calls that run (they waited, so the loop went on to this request),
        when they sleep (a sleep, a slow query, an API: they leave the GIL free, and as many run as
        --threads allows; while the calls handed over lately did wait after it, `_proven`: a call
        judged asleep by a pause that then computed, a query of a few ms on a busy machine, would
        only queue for the GIL behind the new one), or when the GIL and the machine have room for it: the CPU the calls
        running used lately (the monitor's `load`), shared among them, leaves room for one more
        under SHARE_MAX, and the machine's CPUs are not all busy (its `pressure`). Calls that
        compute, or wait only briefly, use the GIL most of the time: starting more of them at once
        makes each queue for it, every short wait of theirs hand it off, and where the CPUs are
        busy anyway (the database on the same host) nothing runs sooner for it (issue 31: Flask
        and Django at 32 calls at once, and the database's CPU a request doubled). A call that
        has run LONG_HOLD_NS holds no one back when it is the only one that computes: a request
        behind a long computation is served beside it (the GIL switches every 5 ms), not after
        it. (Calls handed over up front are sleepers by `sleepy`; those that lost the loop waiting
        inside the server, _await, wait for the loop: neither is among the calls the monitor
        counts.)"""
        busy = self.busy
        if busy == 0:
            return True
        if busy >= self.limit:
            return False
        load = self._load()
        restless = self._restless()
        if (restless == 0 and load < ASLEEP * busy and self._proven()) or (
                self._pressure() < PRESSURE_MAX and load * (busy + 1) < SHARE_MAX * busy):
            return True
        # (beside one long call only: where calls are long because they queue for the GIL, letting
        # more in would make them longer still, and the rule would never close again)
        return restless <= 1 and self._held()

    def _enter(self):
        """An app call begins on this thread, which runs the loop: account for it, keep a spare
        thread, then let the loop go (`_release`), so that the monitor may hand it over. When most
        recent calls were sleepers (`sleepy`: the monitor handed them over as such), hand it over
        now: the next request need not wait for the monitor to see this call wait (0.5 ms at least,
        which for an app that waits 20 ms a request held the loop a quarter of the time). One call
        in 8 is left to the monitor still, so that `sleepy` follows the app when it changes; and
        none is handed over up front while the calls handed over lately did not wait after all
        (`_proven`: calls judged sleepers by a pause, a query that took a few ms on a busy machine,
        which then computed). Returns whether it was handed over up front, for _leave()."""
        self.busy += 1
        self.server.cells[B_BUSY] = self.busy
        if self.total - self.busy < 1:
            self.total += 1
            self._spawn()
        self.calls += 1
        eager = self.sleepy > 0.5 and (self.calls & 7) != 0 and self._proven()
        if CHECK_THREADS:
            self.owner = 0                   # (before the token goes: a spare may take it at once)
        self._release()
        if eager:
            self.block()
        return eager

    def _leave(self, eager):
        """The app call returned (`eager`: _enter handed it over up front): True when this thread
        takes the loop back, False when another thread has been running it meanwhile. A call the
        monitor judged moves `sleepy` (here, without the loop: a double that only this rule reads)."""
        took = self._reclaim()
        # (a call the monitor handed over lets its slot go, whether another thread runs the loop
        # now or this one took it back, the loop's thread being in a call of its own: the monitor
        # counts its CPU no more, and judges whether it waited indeed: fc_pool_left)
        sleeper = self._left()
        if took and CHECK_THREADS:
            self.owner = _get_ident()
        if not eager:
            sleepy = self.sleepy + ((1.0 if sleeper else 0.0) - self.sleepy) * 0.125
            self.sleepy = sleepy if sleepy > SLEEPY_FLOOR else 0.0
        return took

    def _returned(self):
        """The loop is done with an app call that `_enter()` counted."""
        self.busy -= 1
        self.server.cells[B_BUSY] = self.busy
        return 0

    # the loop's primitives

    def _start(self):
        """Start the monitor (serve(), before the loop's first turn)."""
        raise NotImplementedError

    def _release(self):
        raise NotImplementedError

    def _reclaim(self):
        raise NotImplementedError

    def _left(self):
        """This thread's call returned: True when the monitor had handed it over as a sleeper."""
        raise NotImplementedError

    def _load(self):
        """The CPU the calls handed over used lately, in CPUs (the monitor's)."""
        raise NotImplementedError

    def _pressure(self):
        """The share of the time lately in which some task on this machine waited for a CPU."""
        raise NotImplementedError

    def _restless(self):
        """How many of the calls handed over and running were no sleepers when handed over."""
        raise NotImplementedError

    def _held(self):
        """True when a call handed over and running has run LONG_HOLD_NS."""
        raise NotImplementedError

    def _proven(self):
        """True while most of the calls the monitor handed over lately waited indeed after it:
        computed under half of their time from the handover to their return (fc_pool_left)."""
        raise NotImplementedError

    def block(self):
        """This thread, inside an app call, is about to wait: if no thread runs the loop, one
        must, now (not at the monitor's next look)."""
        raise NotImplementedError

    def follow(self):
        """Wait, as a spare thread, until this thread is given the loop; False when the loop is over."""
        raise NotImplementedError

    def finish(self):
        """The loop is over: every spare thread and the monitor are let go."""
        raise NotImplementedError

    def _spawn(self):
        raise NotImplementedError


@cython.cclass
class HttpServer:
    """One worker's state, counters and connection timers (fields: _server_c.pxd), and its loop's
    control flow: serve() and each loop thread's life (_member), the rest of each iteration
    (_after_events), the tick, the start of a stop, balancing.

    The loop's subclass provides the I/O: one iteration's wait and events (_iterate), accepting
    (_set_accepting, _accept), adopt(), and the signal of _post (_signal).
    """

    def __init__(self, listeners, app, config=None, wakeup_fd=-1, master_pid=0, tick=None, board=None,
                 board_index=-1, access_log=None, bells=None):
        """`listeners`: the listening sockets to serve (one socket alone will do)."""
        self._configure(listeners, app, config, wakeup_fd, master_pid, tick, board, board_index, access_log)
        self.bells = tuple(bells) if bells is not None and self.admission.balanced else ()
        self._open(access_log, board_index)

    if not cython.compiled:   # plain Python: the values a compiled object starts with
        stop_requested = stopping = accepting = finished = False
        deadline = now = next_tick = 0.0
        requests = nested = loop_thread = waiting = 0
        pool = driver = None

    def _configure(self, listeners, app, config, wakeup_fd, master_pid, tick, board, board_index, access_log):
        config = config or _Config()
        if isinstance(listeners, _socket.socket):
            listeners = [listeners]
        self.listeners = [Listener(sock, config) for sock in listeners]
        self.app = app
        self.fresh = None
        self.tick = tick
        self.settings = Settings(config, wakeup_fd, master_pid)
        self.conns = {}
        self.posted = deque()       # connections an app thread hands back (or wants flushed)
        self.deferred = deque()     # connections with a request to dispatch once an app call may start
        self.turn = None            # the one of them being dispatched now (_after_events)
        self.orphans = []           # closed connections whose app call still runs (--timeout watches them)
        self.date = _wsgi.DateHeader()
        self.date_line = self.date.get()
        self.now = monotonic()
        # The master's board (board.py): this worker's counters, and every worker's connection
        # count and whether it accepts, so that a worker can leave new connections to a lighter one.
        self.admission = Admission(board, board_index)
        self.cells = self.admission.cells() if self.admission.balanced else _board.private_cells()
        self.access = access_log
        return 0

    def serve(self, ready=None):
        """Run until stopped; `ready()` is called once the listening sockets are watched."""
        for listener in self.listeners:
            listener.sock.setblocking(False)
        self._set_accepting(True)
        self._watch_wakers()
        self._serve_start(ready)
        try:
            if self.driver is not None:
                self.driver.run()            # an ASGI app: the event loop drives this one
            else:
                if self.pool is not None:
                    self.pool._start()
                self._member(True)
        finally:
            if self.pool is not None:
                self.pool.finish()
            self._serve_end()
            self._close_poll()

    def _member(self, leading):
        """A loop thread's life (the serve() caller's, and each app thread's): run the loop while
        it holds it; when an app call of its own lost it (Demoted), wait as a spare to get it back."""
        while True:
            if not leading:
                if not self.pool.follow():
                    return 0
                self._holding()          # (promoted: this thread runs the loop now)
            leading = False
            try:
                while not self.finished:
                    if self._done():
                        self.finished = True
                        break
                    self._iterate(1.0)
                if self.pool is not None:
                    self.pool.finish()       # the other threads stop waiting
                return 0
            except Demoted:
                if self.posted:
                    self._signal()           # the thread that runs the loop now has them to do

    def _follower(self):
        """An app thread: signals stay the main thread's; it waits as a spare until needed. If the
        loop's code fails on it (a bug), the worker ends, as it would on the main thread, and the
        master replaces it: a thread dying with the loop in hand would leave nobody to run it."""
        _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        try:
            self._member(False)
        except BaseException:
            _fail_worker()

    def use_tls(self, context):
        """Serve HTTPS: each connection's bytes go through an `ssl.SSLContext`'s session (tls.py)."""
        self.settings.tls = context
        self.settings.scheme = "https"
        for listener in self.listeners:
            listener.base_environ["wsgi.url_scheme"] = "https"
        return 0

    def use_asyncio(self, loop, state=None):
        """Serve an ASGI app on `loop` (asyncio's or uvloop's, not running yet): serve() then
        runs that loop, with this loop's epoll set as one of its readers. `state` is the
        lifespan's state, copied into each request's scope."""
        if cython.compiled:
            from . import _asgi_c as asgi
        else:
            from . import _asgi as asgi
        self.driver = asgi.EventLoopDriver(self, loop, state)
        self.pool = None      # (never started: an ASGI app's waits are tasks on the loop, not app threads)
        return 0

    def _scope_base(self, env):
        """What every ASGI scope of a connection starts from (`env`: the connection's environ)."""
        settings = self.settings
        tcp = env["REMOTE_ADDR"] != ""           # (a unix socket's client has no address: Server._add)
        client = (env["REMOTE_ADDR"], int(env["REMOTE_PORT"])) if tcp else None
        server = (env["SERVER_NAME"], int(env["SERVER_PORT"]) if tcp else None)
        return {"type": "http", "asgi": ASGI_VERSION, "http_version": "1.1", "scheme": settings.scheme,
                "server": server, "client": client, "root_path": settings.root_path,
                "extensions": HTTP_EXTENSIONS}

    def resume_accepting(self):
        if (not self.accepting and not self.stopping and self.now >= self.admission.paused_until
                and len(self.conns) < self.settings.max_connections):
            self.admission.paused_until = 0.0
            self._set_accepting(True)

    def _publish_count(self):
        self.cells[B_CONNS] = len(self.conns)
        return 0

    def _holding(self):
        """This thread runs the loop from now on (each loop's _member says so when a thread starts
        or resumes it): with FASTCLUSTER_CHECK_THREADS, the holder _check_thread expects."""
        if CHECK_THREADS:
            self.loop_thread = _get_ident()
            if self.pool is not None:
                self.pool.owner = self.loop_thread
        return 0

    def _check_thread(self, what):
        """FASTCLUSTER_CHECK_THREADS: `what`, the loop's code, runs on the thread that holds the
        loop (the rule above CHECK_THREADS), or the worker stops here, loudly."""
        if not self.loop_thread:
            return 0             # (not serving: a test driving a Server in-process, say)
        holder = self.pool.owner if self.pool is not None else self.loop_thread
        if holder != _get_ident():
            raise AssertionError("%s ran on thread %d, but thread %d holds the loop" % (what, _get_ident(), holder))
        return 0

    def _lighter_worker(self):
        """A worker to leave the next connections to (Admission.lighter_worker), or -1: one with
        more than BALANCE_SLACK fewer connections, or a free app thread while all of ours are busy."""
        threads = self.settings.threads
        saturated = self.pool is not None and self.pool.busy >= threads
        return self.admission.lighter_worker(len(self.conns) - BALANCE_SLACK, saturated, threads)

    def _accepted(self):
        """After each accept: leave the next connections to a lighter worker? (Keep-alive
        connections stay where they land.) This one stops accepting for BALANCE_PAUSE and rings
        the lighter worker's bell: that one takes the connections already queued, which no new
        event would announce to it (with EPOLLEXCLUSIVE the kernel gave the listening socket's
        event to this worker), and a ring ends a pause of its own. True ends this batch."""
        self.admission.error_logged = False    # (an accept worked: the next failure is logged)
        if not self.admission.balanced:
            return False
        lighter = self._lighter_worker()
        if lighter < 0:
            return False
        self._set_accepting(False)
        self.cells[B_NOT_ACCEPTING] = 2
        self.admission.paused_until = self.now + BALANCE_PAUSE
        self._ring(lighter)
        return True

    def _rung(self):
        """Another worker rang this one's bell: it left connections to this one. A pause of its
        own ends, and it accepts now (its epoll does not know the listening socket is ready)."""
        if not self.accepting and not self.stopping and self.admission.paused_until:
            self.admission.paused_until = 0.0
            self.resume_accepting()
        if self.accepting:
            self._accept()
        return 0

    def _accept_failed(self, err):
        """accept() ran out of descriptors or memory: pause accepting for half a second."""
        if not self.admission.error_logged:
            self.admission.error_logged = True
            log.error("accept failed: %s; pausing accepts for 0.5 s at a time", os.strerror(err))
        self._set_accepting(False)
        self.admission.paused_until = self.now + 0.5
        return 0

    def _wait_ms(self, limit):
        """How long the next wait may last, in ms: to the tick or the end of an accept pause,
        at most `limit` seconds; 0 when handed-back connections are waiting; 2 ms while requests
        wait for the GIL to have room (AppPool._can_call)."""
        if self.posted:
            return 0
        wake = self._wake_at()
        wait = min(wake - self.now, limit)
        if self.waiting and self.pool is not None and 0 < self.pool.busy < self.pool.limit and wait > 0.002:
            return 2                     # (the monitor measures its load every 1 ms or more)
        return int(wait * 1000) + 1 if wait > 0 else 0

    def _woke(self, now):
        """Right after the wait: the clock, and accepts paused for balancing or errors."""
        self.now = now
        if not self.accepting and self.admission.paused_until and self.now >= self.admission.paused_until:
            self.resume_accepting()
        return 0

    def _after_events(self):
        """The rest of one loop iteration, after its events: connections handed back by app
        threads, requests that waited for an app thread, a stop, the tick."""
        # (an app call started from here may lose the loop to another thread and get it back
        # later: these loops look at the queues afresh each time round)
        if CHECK_THREADS:
            self._check_thread("the loop's turn")
        while self.posted:
            self.posted.popleft()._handed_back()
        turns = len(self.deferred)
        while turns > 0 and self.deferred and not self.nested:
            if self.pool is not None and not self.pool._can_call():
                break
            turns -= 1
            conn = self.deferred.popleft()
            if self.deferred and conn._client_left():
                self.deferred.append(conn)    # (its client gave up, most likely: the others first)
                continue
            self.waiting -= 1
            self.turn = conn             # (its request goes before those of connections not waiting)
            try:
                conn._pump_now()
            finally:
                self.turn = None
        if self.stop_requested and not self.stopping:
            self._begin_stop()
            self.next_tick = self.now + DRAIN_LINGER
        if self.now >= self.next_tick:
            self.next_tick = self.now + 1.0
            self._tick()
        return 0

    def _post(self, conn):
        """From an app thread: hand `conn` back to the loop (its call returned), or ask the loop to
        look at it (output to flush, a 100 Continue to send). For an ASGI app, from the event
        loop's thread: the loop's next turn looks at it."""
        self.posted.append(conn)
        if self.driver is None:
            self._signal()
        else:
            self.driver.post()
        return 0

    def _wake_at(self):
        """When the loop must look again without an event: the tick, or the end of an accept pause."""
        wake = self.next_tick
        paused_until = self.admission.paused_until
        if not self.accepting and paused_until and paused_until < wake:
            wake = paused_until
        return wake

    def request_stop(self):
        """SIGTERM's handler: a graceful stop, acted on at the loop's next turn (which, for an ASGI
        app, is made to come now: uvloop does not pass the signal to this loop's wake-up fd)."""
        self.stop_requested = True
        if self.driver is not None and not self.finished:
            self.driver.wake()

    def _defer(self, conn):
        """`conn` has a request to dispatch once an app call may start (after a nested wait, or
        when an app thread is free). They go in the order they came: while any waits, a request on
        another connection waits behind it, even when a thread is free at the moment it is read
        (else the requests read in each batch of events took every thread that came free, and one
        that waited could wait for seconds: wrk's 2 s timeouts, 5 ms CPU calls, 50 clients)."""
        self.deferred.append(conn)
        self.waiting += 1
        return 0

    def _await(self, conn, what):
        """Inside an app call: wait until `conn` has what the call waits for (conn._ready); False
        when it cannot come any more. The loop goes on serving everything else meanwhile."""
        if self.pool is not None:
            self.pool.block()
            return conn._wait_in_thread(what)
        mark = conn._mark(what)
        self.nested += 1
        try:
            while True:
                ready = conn._ready(what, mark)
                if ready >= 0:
                    return ready == 1
                self._iterate(NESTED_WAIT)
        finally:
            self.nested -= 1

    def _tick(self):
        """Once a second: heartbeat and counters, logs, the master's health, the timers. With app
        threads the loop goes on ticking while a call hangs, so the heartbeat says `stuck` once a
        call has run past --timeout (the master then dumps every thread's stack and replaces the
        worker)."""
        if CHECK_THREADS:
            self._check_thread("the tick")
        now = self.now
        timeout = self.settings.timeout
        self.date_line = self.date.get()
        rss = rss_bytes()
        self.cells[B_BEAT] = int(now * 1e6)
        self.cells[B_RSS] = rss
        self._flush_access()
        stuck = False
        for conn in list(self.conns.values()):
            conn.tick(now)      # its deadlines; when stopping, a clean close of what stayed idle
            if timeout and self.pool is not None and conn._call_age(now) > timeout:
                stuck = True
        if self.orphans:
            # app calls whose client left: one that never returns holds an app thread as surely
            # as any other, so it counts for --timeout too
            self.orphans = [conn for conn in self.orphans if conn._call_age(now) > 0.0]
            for conn in self.orphans:
                if timeout and conn._call_age(now) > timeout:
                    stuck = True
        if self.tick is not None:
            self.tick(self.requests, rss, stuck)
        if self.settings.master_pid and os.getppid() != self.settings.master_pid:
            self.stop_requested = True          # the master is gone: do not outlive it
        self.resume_accepting()
        return 0

    def master_stopping(self):
        """What the health path says: the master stops (or drains, --shutdown-delay) and the
        balancer should send no more; without a master, this worker stops. (A worker replaced in a
        rolling restart stops while its master serves on: it says 200.)"""
        if self.admission.balanced:
            return self.admission.master_stopping()
        return self.stopping

    def _begin_stop(self):
        settings = self.settings
        master_gone = settings.master_pid and os.getppid() != settings.master_pid
        self.stopping = True
        self.deadline = self.now + (min(settings.graceful_timeout, 1.0) if master_gone else settings.graceful_timeout)
        if self.accepting and self.master_stopping():
            # the final stop: connections waiting in the backlog are taken and answered (with
            # Connection: close), not reset when the last descriptor of the socket closes
            count = -1
            while count != len(self.conns) and len(self.conns) < settings.max_connections:
                count = len(self.conns)
                self._accept()
        self._set_accepting(False)
        for listener in self.listeners:
            listener.sock.close()
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
        self.next_tick = self.now + 1.0
        self._holding()          # (the serve() caller runs the loop first)
        if ready is not None:
            ready()
        return 0

    def _serve_end(self):
        self._holding()          # (the loop is over: the serve() caller closes what is left)
        for conn in list(self.conns.values()):
            conn.close()
        self._flush_access()
        return 0

    # --- the loop's I/O: each loop's Server provides these ---

    def _watch_wakers(self):
        """Watch what wakes the loop besides the listener and connections: the signal wake-up fd,
        the eventfd of _signal, this worker's bell."""
        raise NotImplementedError

    def _close_poll(self):
        """serve() is over: what the loop's I/O holds is let go."""
        raise NotImplementedError

    def _set_accepting(self, on):
        """Watch the listening sockets or not: off when stopping, full, or out of descriptors."""
        if on != self.accepting:
            self.accepting = on
            for listener in self.listeners:
                self._watch_listener(listener.fd, on)
            self.cells[B_NOT_ACCEPTING] = 0 if on else 1
        return 0

    def _is_listener(self, fd):
        """Whether `fd`, a descriptor the wait reported, is one of the listening sockets."""
        for listener in self.listeners:
            if listener.fd == fd:
                return True
        return False

    def _accept(self):
        """Accept what the listening sockets have queued: a batch from each, with the balancing
        rule (a full worker, an accept error or a pause for balance ends it)."""
        for listener in self.listeners:
            if self._accept_from(listener) or not self.accepting:
                break
        return 0

    def _batch_done(self, incoming):
        """The end of one wait's batch of events: accept what came (`incoming`), then the rest of
        the iteration (_after_events)."""
        if incoming:
            # after the batch, so that a SIGTERM in it is known and these are answered with
            # Connection: close. (Always taken, even then: with EPOLLEXCLUSIVE no other worker was
            # woken for them, and a worker replaced in a rolling restart leaves nothing stranded.)
            self._accept()
        self._after_events()
        return 0

    def _full(self):
        """--max-connections reached: accepting pauses (the kernel's backlog holds the rest
        meanwhile; the first close resumes it)."""
        if len(self.conns) >= self.settings.max_connections:
            self._set_accepting(False)
            return True
        return False

    def _adopted(self, conn, fd, read_first):
        """A new connection (the loop's _add made it): in the table and the board's counts. When the
        kernel woke us for it only once its first bytes came (TCP_DEFER_ACCEPT, `read_first`),
        they are read now, and the connection is watched only if it is still open after that: a
        request answered at once and closed never costs an epoll_ctl and an epoll_wait."""
        self.conns[fd] = conn
        self.cells[B_ACCEPTED] += 1
        self._publish_count()
        if self.fresh is not None:
            self._watch_fresh()     # (one whose _add lost the loop in its app call: see _watch_fresh)
        self.fresh = conn
        if read_first:
            self._read_fresh()
        if self.fresh is conn:
            self._watch_fresh()
        return 0

    def _open(self, access_log, board_index):
        """The loop's own resources (its poller, its read buffer, ...), after _configure."""
        raise NotImplementedError

    def _read_fresh(self):
        """Read the `fresh` connection's first bytes and answer them (its _on_event)."""
        raise NotImplementedError

    def _watch_fresh(self):
        """Register the connection read right after its accept (if still open), with the events it
        wants by now. Also done by the loop's next wait, and by the next _add: its request's app
        call may wait (--threads 1) or lose the loop to another thread before its _add is over, and
        a thread that takes the loop back from a call of its own may accept the next connection
        before any wait (a connection left unwatched then was never read again)."""
        raise NotImplementedError

    def _watch_listener(self, fd, on):
        """Add a listening socket to the poller's set (EPOLLEXCLUSIVE: one worker woken per
        connection), or take it out."""
        raise NotImplementedError

    def _ring(self, index):
        """Ring the bell of the worker at board index `index`, if this one has it."""
        if 0 <= index < len(self.bells):
            self._ring_fd(self.bells[index])
        return 0

    def _ring_fd(self, fd):
        """Write 1 to that eventfd."""
        raise NotImplementedError

    def _accept_from(self, listener):
        """Accept a batch of what `listener` has queued; True when accepting stops for now (full,
        out of descriptors, or paused for balance), False when its queue is empty."""
        raise NotImplementedError

    def _iterate(self, limit):
        """One turn of the loop: wait (at most `limit` seconds) for events, handle them, then
        _after_events()."""
        raise NotImplementedError

    def _signal(self):
        """Wake the loop's wait (from another thread)."""
        raise NotImplementedError

    def _poll_fd(self):
        """The descriptor of this loop's epoll set (for an event loop to watch)."""
        raise NotImplementedError
