"""The master's signals: handlers that do nothing, a wake-up socket, and a dispatch table.

Python writes the number of each signal the master handles to the wake-up socket; the master's
loop selects on that socket, reads the numbers, and calls the master's method for each through
the table. Nothing runs inside a signal handler, so a signal never interrupts the master halfway
through its own work.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket


class Signals:
    """Owns the table (signal number -> the master's method), the wake-up socket pair, and the
    handlers and wake-up fd it replaced, to put back when the master returns."""

    def __init__(self, table):
        self.table = table
        self.wake_r = self.wake_w = None
        self.saved_wakeup = -1
        self.saved_handlers = {}

    def install(self, selector):
        """Route every signal in the table to the wake-up socket, which `selector` watches."""
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.saved_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        self.saved_handlers = {sig: signal.signal(sig, _no_op) for sig in self.table}

    def restore(self):
        for sig, old in self.saved_handlers.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self.saved_wakeup)
        self.wake_r.close()
        self.wake_w.close()

    def fds(self):
        """The descriptors a forked worker must close."""
        return (self.wake_r.fileno(), self.wake_w.fileno())

    def read(self):
        """Dispatch every signal the wake-up socket holds."""
        try:
            data = self.wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            self.dispatch(signum)

    def dispatch(self, signum):
        """Act on one signal (the loop's entry, and the tests')."""
        handler = self.table.get(signum)
        if handler is not None:
            handler()

    def block(self):
        """Block every signal in the table (across a fork: a signal sent to the new worker before
        its own handlers are in place waits for them); the mask as it was before."""
        return signal.pthread_sigmask(signal.SIG_BLOCK, self.table)

    def reset(self):
        """In a child about to exec another program: the default handlers, nothing blocked."""
        signal.set_wakeup_fd(-1)
        for sig in self.table:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _no_op(signum, frame):
    pass


def kill(pid, sig):
    """os.kill, for a process that may have exited already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum


def how_it_exited(code):
    """A child's exit, as a log line says it (`code` negative: killed by that signal)."""
    return "exited with code %d" % code if code >= 0 else "was killed by %s" % name(-code)
