"""The worker side: what a forked child does until it exits.

It never returns into the master's code: `run()` always ends in `os._exit()`.
Failures before the loop runs are reported through the exit code (errors.py),
so the master can tell a broken APP from a crash.

The master forks with every signal it handles blocked (WorkerSpec.sigmask holds the mask to go
back to), so a signal sent before the worker's own handlers are in place waits for them instead
of reaching the master's do-nothing handlers.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any, Optional

from . import hooks, loop, privileges
from .board import slot_cells
from .errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, EXIT_OK
from .importer import interface_of, load_app
from .logs import AccessLog, reopen_log, say, worker_log
from .proctitle import set_title
from .record import Record
from .sockets import describe


def random_below(n: int) -> int:
    """A random int in [0, n) from os.urandom (the random module is not worth its memory here)."""
    return int.from_bytes(os.urandom(8), "little") % n if n > 0 else 0


# Status pipe messages, one line each, worker -> master:
READY = b"R %s\n"         # the app is loaded and the loop accepts; what the app is ("an ASGI app on uvloop")
HEARTBEAT = b"H\n"        # once a second from the loop (the counters themselves are on the board)
RECYCLE = b"X %s\n"       # please replace me (max-requests, max-worker-memory)
STUCK = b"S\n"            # an app call has run past --timeout (with app threads the loop goes on ticking)

# In a worker: SIGUSR1 reopens the log file, SIGUSR2 dumps every thread's stack (faulthandler;
# the master sends it to a worker stuck past --timeout). These the master alone acts on:
_MASTER_ONLY = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGINT)

# What the loops import when they first need it, not at start (each would be memory in every
# worker): tempfile for a body that spills to disk, http for an uncommon ASGI status, ipaddress for
# --forwarded-allow-ips and PROXY headers. A worker that changes user imports them before it does:
# the new user may not be able to read the interpreter's files (a Python under /root).
LATE_IMPORTS = ("tempfile", "http", "ipaddress")


class WorkerSpec(Record):
    """Everything a new worker process is given by the master that forked it."""

    config: Any                   # config.Config
    listeners: tuple              # the shared listening sockets (socket.socket), one per --bind
    status_fd: int                # write end of its status pipe (READY, heartbeats, recycle requests)
    master_pid: int
    loop_name: str                # "cython" or "python"
    slot: int = 0                 # 1..N, what status and /metrics call it
    generation: int = 1           # the master's generation when it was started
    board: Any = None             # the master's shared Board memory, or None
    board_index: int = -1         # its cells there (-1: none)
    app: Any = None               # the app, when the master preloaded it
    close_fds: tuple = ()         # the master's descriptors the worker must not keep
    bells: tuple = ()             # the workers' bells (eventfds), by board index (accept balancing)
    sigmask: Optional[set] = None  # the signal mask to restore once the handlers are set
    master: Any = None            # the master (the fork's copy), for the config file's hooks
    tls: Any = None               # --certfile: the master's ssl.SSLContext

    def info(self) -> hooks.WorkerInfo:
        return hooks.WorkerInfo(self.slot, os.getpid(), self.generation)


class _Stop:
    """Holds the stop request until the server exists, then forwards it."""

    server = None
    requested = False

    def __call__(self, signum, frame):
        self.requested = True
        if self.server is not None:
            self.server.request_stop()


def _die_with_parent(master_pid: int, impl) -> None:
    try:
        impl.set_parent_death_signal(signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux; the loop also watches getppid()
        pass
    if os.getppid() != master_pid:  # the master died before prctl took effect
        os._exit(EXIT_OK)


def _quick_exit(signum, frame):
    raise SystemExit(EXIT_OK)


class _Heartbeat:
    """The loop's once-a-second tick: heartbeat to the master, recycling limits, log reopening,
    the process title."""

    def __init__(self, status_fd, config, slot=0, generation=1, access_log=None):
        self.status_fd = status_fd
        self.log_file = config.log_file
        self.access_log = access_log
        self.title = "fastcluster worker %d gen=%d req=%%d" % (slot, generation)
        self.name = "fc worker %d" % slot
        self.max_requests = config.max_requests
        if self.max_requests and config.max_requests_jitter:
            self.max_requests += random_below(config.max_requests_jitter + 1)
        self.max_rss = config.max_worker_memory * 1024 * 1024
        self.asked = False
        self.reopen = False
        self.titled = 0         # the request count in the process title

    def on_sigusr1(self, signum, frame):
        self.reopen = True

    def __call__(self, requests, rss, stuck=False):
        message = STUCK if stuck else HEARTBEAT
        if not self.asked:
            reason = None
            if self.max_requests and requests >= self.max_requests:
                reason = b"max-requests"
            elif self.max_rss and rss > self.max_rss:
                reason = b"max-worker-memory"
            if reason is not None:
                self.asked = True
                message += RECYCLE % reason
        try:
            os.write(self.status_fd, message)
        except (BlockingIOError, BrokenPipeError):
            pass   # a busy master reads the next one; a gone master is noticed by the loop
        if requests != self.titled:
            self.titled = requests
            set_title(self.title % requests, self.name)
        if self.reopen:
            self.reopen = False
            if self.log_file:
                reopen_log(self.log_file)
                logging.getLogger("fastcluster").info("log file reopened")
            if self.access_log is not None:
                self.access_log.reopen()


_OWN_LOG = None     # logs.WorkerLogHandler, when the worker's stderr is a pipe


def run(spec: WorkerSpec):
    """The child's whole life; ends the process with an exit code (errors.py)."""
    code = EXIT_BOOT_ERROR
    try:
        code = _run(spec)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_OK
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            if _OWN_LOG is not None:
                _OWN_LOG.close()         # what a slow stderr still holds gets its second to go out
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run(spec):
    for fd in spec.close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    stop = _Stop()
    wake_r, wake_w = socket.socketpair()
    try:
        return _serve(spec, stop, wake_r, wake_w)
    finally:
        wake_r.close()
        wake_w.close()


def _install_signals(spec, stop, wake_w, heartbeat):
    """The worker's handlers; then the signals blocked across the fork are let through."""
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGQUIT, _quick_exit)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for signum in _MASTER_ONLY:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, heartbeat.on_sigusr1)
    faulthandler.enable()                                    # a crash shows its Python stack
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # so does a worker stuck past --timeout
    if spec.sigmask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, spec.sigmask)


def _serve(spec, stop, wake_r, wake_w):
    config = spec.config
    set_title("fastcluster worker %d gen=%d req=0" % (spec.slot, spec.generation), "fc worker %d" % spec.slot)
    wake_r.setblocking(False)
    os.set_blocking(spec.status_fd, False)   # a heartbeat never waits for a busy master
    access_log = AccessLog(config.access_log, config.access_log_format, slot_cells(spec.board, spec.board_index)) \
        if config.access_log else None
    global _OWN_LOG
    _OWN_LOG = worker_log(slot_cells(spec.board, spec.board_index))   # (stderr a pipe: never waited for)
    heartbeat = _Heartbeat(spec.status_fd, config, spec.slot, spec.generation, access_log)
    _install_signals(spec, stop, wake_w, heartbeat)
    impl = loop.load(spec.loop_name)
    # --user/--group: after fastcluster's own modules are loaded, before the app is imported (and
    # before the parent-death signal is set: a change of credentials clears it)
    credentials = privileges.resolve(config.user, config.group)
    if credentials != (None, None, None):
        for name in LATE_IMPORTS:   # the new user may not be able to read the interpreter's files
            __import__(name)
        # and the loop's ASGI and WebSocket modules, which an ASGI worker loads with its first connection
        shared = "fastcluster._http_c" if impl.IMPLEMENTATION == "cython" else "fastcluster._http"
        __import__(shared)
        sys.modules[shared].load_asgi()
    privileges.drop(*credentials)
    _die_with_parent(spec.master_pid, impl)
    info = spec.info()
    # the config file's worker hooks: a failure before the worker is ready is a boot failure
    if not hooks.call(config.hooks, "post_fork", spec.master, info):
        return EXIT_APP_LOAD_ERROR
    try:
        return _serve_app(spec, stop, wake_r, impl, heartbeat, access_log, info)
    finally:
        hooks.call(config.hooks, "worker_exit", spec.master, info)


def _serve_app(spec, stop, wake_r, impl, heartbeat, access_log, info):
    config = spec.config
    app = spec.app
    if app is None:       # not preloaded by the master
        app = load_app(config)
        if isinstance(app, int):
            return app
    if not hooks.call(config.hooks, "post_worker_init", info):
        return EXIT_APP_LOAD_ERROR

    server = impl.Server(spec.listeners, app, config, wakeup_fd=wake_r.fileno(), master_pid=spec.master_pid,
                         tick=heartbeat, board=spec.board, board_index=spec.board_index, access_log=access_log,
                         bells=spec.bells)
    if spec.tls is not None:
        server.use_tls(spec.tls)
    short = ", ".join(describe(sock)[3] for sock in spec.listeners)
    if interface_of(app, config.interface) == "asgi":
        return _serve_asgi(spec, server, app, stop, access_log, short)
    what = "a WSGI app, %d app thread%s per worker" % (config.threads, "" if config.threads == 1 else "s")

    def ready():   # the app is loaded and the loop watches the socket: the master may count on us
        say("Process %d listening on %s" % (os.getpid(), short))
        os.write(spec.status_fd, READY % what.encode())

    stop.server = server
    server.stop_requested = stop.requested
    server.serve(ready)
    if access_log is not None:
        access_log.close()
    return EXIT_OK


def _print_awaits(aloop):
    """Each task of `aloop` with the chain of coroutines it waits in, innermost last, on stderr."""
    import asyncio

    for task in asyncio.all_tasks(aloop):
        frames = []
        coro = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                frames.append((frame, frame.f_lineno))
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        lines = traceback.StackSummary.extract(frames).format()
        sys.stderr.write("ASGI task %s waits in (most recent call last):\n%s" % (task.get_name(), "".join(lines)))
    sys.stderr.flush()


def _serve_asgi(spec, server, app, stop, access_log, short):
    """An ASGI app: its event loop, the lifespan startup before the worker says it is ready (a
    failed one is a boot failure, as an import error is), then serving on that loop; on stop, the
    app's tasks that outlive their responses, then the lifespan shutdown."""
    from . import asgi      # (asyncio and the event loop: only an ASGI worker loads them)

    config = spec.config
    name = asgi.event_loop_name(config.event_loop)
    aloop = asgi.new_event_loop(name)
    lifespan = asgi.Lifespan(app, config.lifespan)
    # past --ready-timeout the master asks for our stack (SIGUSR2): the thread's, from faulthandler,
    # ends in the event loop's wait, so the app's coroutines that wait are printed after it
    faulthandler.unregister(signal.SIGUSR2)
    signal.signal(signal.SIGUSR2, lambda signum, frame: _print_awaits(aloop))
    faulthandler.register(signal.SIGUSR2, all_threads=True, chain=True)
    try:
        aloop.run_until_complete(lifespan.startup())
    except asgi.LifespanFailed as exc:
        print("fastcluster: error: %s" % exc, file=sys.stderr, flush=True)
        aloop.close()
        return EXIT_APP_LOAD_ERROR
    finally:
        faulthandler.unregister(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        faulthandler.register(signal.SIGUSR2, all_threads=True)
    what = "an ASGI app, on the %s event loop" % name

    def ready():
        say("Process %d listening on %s" % (os.getpid(), short))
        os.write(spec.status_fd, READY % what.encode())

    server.use_asyncio(aloop, lifespan.state if lifespan.supported else None)
    stop.server = server
    server.stop_requested = stop.requested
    try:
        server.serve(ready)
    finally:
        # what is left of --graceful-timeout (the master kills the worker when it runs out)
        left = server.deadline - time.monotonic() if server.stopping else config.graceful_timeout
        asgi.run_shutdown(aloop, lifespan, tasks_timeout=max(left - 1.0, 0.0), shutdown_timeout=max(left, 1.0))
        if access_log is not None:
            access_log.close()
    return EXIT_OK
