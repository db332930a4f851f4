"""The worker side: what a forked child does until it exits.

It never returns into the master's code: `run()` always ends in `os._exit()`.
Failures before the loop runs are reported through the exit code (errors.py),
so the master can tell a broken APP from a crash.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import random
import signal
import socket
import sys
import traceback

from . import demo, loop
from .errors import EXIT_APP_LOAD_ERROR, EXIT_BOOT_ERROR, EXIT_OK, EXIT_USAGE, AppImportError
from .importer import import_app
from .logs import AccessLog
from .proctitle import set_title
from .sockets import describe

PR_SET_PDEATHSIG = 1

# Status pipe messages, one line each, worker -> master:
READY = b"R\n"            # the app is loaded and the loop accepts
HEARTBEAT = b"H\n"        # once a second from the loop (the counters themselves are on the board)
RECYCLE = b"X %s\n"       # please replace me (max-requests, max-worker-memory)

# In a worker: SIGUSR1 reopens the log file, SIGUSR2 dumps every thread's stack (faulthandler;
# the master sends it to a worker stuck past --timeout). These the master alone acts on:
_MASTER_ONLY = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGINT)


def say(line):
    """One line on stdout in one write(), so lines from several processes never interleave."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (line + "\n").encode())


class _Stop:
    """Holds the stop request until the server exists, then forwards it."""

    server = None
    requested = False

    def __call__(self, signum, frame):
        self.requested = True
        if self.server is not None:
            self.server.stop_requested = True


def _die_with_parent(master_pid: int) -> None:
    try:
        # dlopen(NULL): libc is already loaded; find_library would run ldconfig in a subprocess
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux; the loop also watches getppid()
        pass
    if os.getppid() != master_pid:  # the master died before prctl took effect
        os._exit(EXIT_OK)


def _quick_exit(signum, frame):
    raise SystemExit(EXIT_OK)


def reopen_log(path):
    """Point fd 2 (stderr, and so every log line and traceback) at `path`, opened anew."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 2)
    finally:
        os.close(fd)


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
            self.max_requests += random.randint(0, config.max_requests_jitter)
        self.max_rss = config.max_worker_memory * 1024 * 1024
        self.asked = False
        self.reopen = False
        self.titled = 0         # the request count in the process title

    def on_sigusr1(self, signum, frame):
        self.reopen = True

    def __call__(self, requests, rss):
        message = HEARTBEAT
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


def load_app(config):
    """The WSGI callable, or an exit code: EXIT_USAGE for a bad APP (one line printed),
    EXIT_APP_LOAD_ERROR for an app that raised while imported (traceback printed)."""
    try:
        return demo.make_app(config.demo_work_ms) if config.app is None else import_app(config.app)
    except AppImportError as exc:
        print("fastcluster: error: %s" % exc, file=sys.stderr, flush=True)
        return EXIT_USAGE
    except BaseException:
        print("fastcluster: error: the app %s raised while it was imported:" % config.app, file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        return EXIT_APP_LOAD_ERROR


def run(config, listener, status_fd: int, close_fds, loop_name: str, master_pid: int, app=None, board=None,
        board_index=-1, slot=0, generation=1):
    code = EXIT_BOOT_ERROR
    try:
        code = _run(config, listener, status_fd, close_fds, loop_name, master_pid, app, board, board_index,
                    (slot, generation))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_OK
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run(config, listener, status_fd, close_fds, loop_name, master_pid, app, board, board_index, where):
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    stop = _Stop()
    wake_r, wake_w = socket.socketpair()
    try:
        return _serve(config, listener, status_fd, loop_name, master_pid, app, board, board_index, where, stop,
                      wake_r, wake_w)
    finally:
        wake_r.close()
        wake_w.close()


def _serve(config, listener, status_fd, loop_name, master_pid, app, board, board_index, where, stop, wake_r,
           wake_w):
    slot, generation = where
    set_title("fastcluster worker %d gen=%d req=0" % (slot, generation), "fc worker %d" % slot)
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGQUIT, _quick_exit)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for signum in _MASTER_ONLY:
        signal.signal(signum, signal.SIG_IGN)
    os.set_blocking(status_fd, False)   # a heartbeat never waits for a busy master
    access_log = AccessLog(config.access_log, config.access_log_format) if config.access_log else None
    heartbeat = _Heartbeat(status_fd, config, slot, generation, access_log)
    signal.signal(signal.SIGUSR1, heartbeat.on_sigusr1)
    faulthandler.enable()                                    # a crash shows its Python stack
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # so does a worker stuck past --timeout
    _die_with_parent(master_pid)

    if app is None:       # not preloaded by the master
        app = load_app(config)
        if isinstance(app, int):
            return app

    impl = loop.load(loop_name)
    server = impl.Server(listener, app, config, wakeup_fd=wake_r.fileno(), master_pid=master_pid, tick=heartbeat,
                         board=board, board_index=board_index, access_log=access_log)
    stop.server = server
    server.stop_requested = stop.requested
    _url, _name, _port, short = describe(listener)

    def ready():   # the app is loaded and the loop watches the socket: the master may count on us
        say("Process %d listening on %s" % (os.getpid(), short))
        os.write(status_fd, READY)

    server.serve(ready)
    if access_log is not None:
        access_log.close()
    return EXIT_OK
