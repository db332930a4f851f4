"""The master: binds once, forks the workers, supervises them.

Plain Python, one thread, one loop.  Signal handlers do nothing: Python writes
each signal's number to a wake-up socket, and the loop reads those numbers and
dispatches them through an explicit table.  The loop waits on that socket and on
every worker's status pipe, with a timeout set by the next deadline.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque

from . import __version__, loop, worker
from .errors import BOOT_EXIT_CODES, EXIT_OK
from .sockets import create_listener, describe

log = logging.getLogger("fastcluster")

QUICK_STOP_GRACE = 1.0       # seconds a quick stop waits before SIGKILL
STABLE_AFTER = 5.0           # a worker that lived this long resets its slot's failure count
MAX_BACKOFF = 10.0
READY_TIMEOUT = 60.0         # a rollout replacement must report READY within this


class WorkerRecord:
    """One forked worker, in Node's vocabulary: spawning -> online -> dead."""

    __slots__ = ("slot", "pid", "state", "born_at", "expected_exit", "status_fd", "replaces", "kill_at")

    def __init__(self, slot, pid, status_fd, replaces=0):
        self.slot = slot
        self.pid = pid
        self.state = "spawning"
        self.born_at = time.monotonic()
        self.expected_exit = False   # Node's exitedAfterDisconnect: we asked it to stop
        self.status_fd = status_fd
        self.replaces = replaces     # pid of the worker this one takes over from in a rollout
        self.kill_at = 0.0           # SIGKILL deadline once asked to stop


class Master:
    def __init__(self, config):
        self.config = config
        self.loop_name = loop.resolve(config.loop)
        self.target = config.workers
        self.workers = {}                 # pid -> WorkerRecord
        self.listener = None
        self.selector = None
        self.wake_r = self.wake_w = None
        self.stopping = False
        self.quick = False
        self.exit_code = EXIT_OK
        self.booted = False               # a first worker loaded the app
        self.announced = False            # the listening line was printed
        self.respawn_at = {}              # slot -> monotonic time of the next start
        self.failures = {}                # slot -> consecutive early deaths
        self.rollout = deque()            # pids still to be replaced by the rolling restart
        self.replacing = None             # the replacement WorkerRecord being waited for
        self.handlers = {
            signal.SIGCHLD: self.on_sigchld,
            signal.SIGTERM: self.on_sigterm,
            signal.SIGINT: self.on_sigint,
            signal.SIGQUIT: self.on_sigquit,
            signal.SIGUSR2: self.on_sigusr2,
            signal.SIGHUP: self.on_sigusr2,
            signal.SIGTTIN: self.on_sigttin,
            signal.SIGTTOU: self.on_sigttou,
        }

    # --- start-up ---

    def run(self) -> int:
        config = self.config
        self.listener = create_listener(config.bind, config.backlog)
        self.url, _name, _port, _short = describe(self.listener)
        app = config.app or "the built-in demo app (fastcluster.demo)"
        kind = "compiled Cython loop" if self.loop_name == "cython" else "pure-Python loop"
        self._say("fastcluster %s: serving %s with the %s (--loop %s)" % (__version__, app, kind, self.loop_name))
        self._say("Forking for %d" % self.target)
        self._say("Master PID: %d" % os.getpid())
        self.selector = selectors.DefaultSelector()
        self._install_signals()
        try:
            self._loop()
        finally:
            self._restore_signals()
            self.listener.close()
            self.selector.close()
        return self.exit_code

    def _say(self, line):
        worker.say(line)

    def _install_signals(self):
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.old_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        self.old_handlers = {sig: signal.signal(sig, _no_op) for sig in self.handlers}

    def _restore_signals(self):
        for sig, old in self.old_handlers.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self.old_wakeup)
        self.wake_r.close()
        self.wake_w.close()

    # --- the loop ---

    def _loop(self):
        while True:
            self._maintain()
            if self.stopping and not self.workers:
                return
            timeout = max(0.0, min(self._next_deadline(), time.monotonic() + 1.0) - time.monotonic())
            ready = self.selector.select(timeout)
            self._read_signals()   # first: a stop must be known before exits are judged
            for key, _ in ready:
                if key.data is not None:
                    self._read_status(key.data)
            self._reap()
            self._check_deadlines()

    def _read_signals(self):
        try:
            data = self.wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            handler = self.handlers.get(signum)
            if handler is not None:
                handler()

    def _read_status(self, rec):
        if rec.status_fd < 0:  # reaped (and its pipe closed) earlier in this round
            return
        try:
            data = os.read(rec.status_fd, 64)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._unwatch(rec)
            return
        if worker.READY in data and rec.state == "spawning":
            rec.state = "online"
            self._on_online(rec)

    def _next_deadline(self):
        times = [t for t in self.respawn_at.values()]
        times.extend(w.kill_at for w in self.workers.values() if w.kill_at)
        if self.replacing is not None:
            times.append(self.replacing.born_at + READY_TIMEOUT)
        return min(times, default=float("inf"))

    def _check_deadlines(self):
        now = time.monotonic()
        for rec in list(self.workers.values()):
            if rec.kill_at and now >= rec.kill_at:
                log.warning("worker %d (pid %d) did not stop in time; killing it", rec.slot, rec.pid)
                rec.kill_at = 0.0
                _kill(rec.pid, signal.SIGKILL)
        rep = self.replacing
        if rep is not None and rep.state == "spawning" and now >= rep.born_at + READY_TIMEOUT:
            self._abort_rollout("worker %d (pid %d) was not ready after %g s" % (rep.slot, rep.pid, READY_TIMEOUT))
            self._stop_worker(rep, signal.SIGKILL)

    # --- workers ---

    def _maintain(self):
        """Start a worker for every empty slot that is due; stop workers above the target."""
        if self.stopping:
            return
        now = time.monotonic()
        live = {w.slot for w in self.workers.values() if not w.expected_exit}
        slots = range(1, self.target + 1) if self.booted else (1,)
        for slot in slots:
            if slot not in live and self.respawn_at.get(slot, 0.0) <= now:
                self.respawn_at.pop(slot, None)
                self._spawn(slot)
        for rec in list(self.workers.values()):
            if rec.slot > self.target and not rec.expected_exit:
                self._stop_worker(rec)
        for slot in [s for s in self.respawn_at if s > self.target]:
            del self.respawn_at[slot]

    def _spawn(self, slot, replaces=0):
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            inherited = [self.wake_r.fileno(), self.wake_w.fileno(), self.selector.fileno()]
            inherited.extend(w.status_fd for w in self.workers.values() if w.status_fd >= 0)
            worker.run(self.config, self.listener, write_fd, inherited, self.loop_name, os.getppid())
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        rec = WorkerRecord(slot, pid, read_fd, replaces)
        self.workers[pid] = rec
        self.selector.register(read_fd, selectors.EVENT_READ, rec)
        return rec

    def _unwatch(self, rec):
        if rec.status_fd >= 0:
            self.selector.unregister(rec.status_fd)
            os.close(rec.status_fd)
            rec.status_fd = -1

    def _stop_worker(self, rec, sig=signal.SIGTERM):
        rec.expected_exit = True
        grace = QUICK_STOP_GRACE if sig != signal.SIGTERM else self.config.graceful_timeout
        rec.kill_at = time.monotonic() + grace
        _kill(rec.pid, sig)

    def _on_online(self, rec):
        self.booted = True
        if rec.replaces:
            old = self.workers.get(rec.replaces)
            if old is not None and not old.expected_exit:
                self._stop_worker(old)
            if self.replacing is rec:
                self.replacing = None
                self._rollout_step()
        if not self.announced:
            online = sum(1 for w in self.workers.values() if w.state == "online" and not w.expected_exit)
            if online >= self.target:
                self.announced = True
                self._say("fastcluster: listening on %s" % self.url)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rec = self.workers.pop(pid, None)
            if rec is not None:
                self._unwatch(rec)
                self._on_exit(rec, os.waitstatus_to_exitcode(status))

    def _on_exit(self, rec, code):
        how = "exited with code %d" % code if code >= 0 else "was killed by %s" % _signame(-code)
        if rec.expected_exit:
            log.info("worker %d (pid %d) stopped: %s", rec.slot, rec.pid, how)
            return
        if self.replacing is rec:
            self._abort_rollout("its replacement worker %d (pid %d) %s" % (rec.slot, rec.pid, how))
            return
        if rec.state == "spawning" and not self.booted:
            # The first worker could not load the app: every other would fail the same way.
            self.exit_code = code if code in BOOT_EXIT_CODES else (code if code > 0 else 1)
            if code not in BOOT_EXIT_CODES:
                log.error("worker %d (pid %d) %s before it was ready; stopping", rec.slot, rec.pid, how)
            self._stop(quick=True)
            return
        log.error("worker %d (pid %d) %s; starting a new one", rec.slot, rec.pid, how)
        if self.stopping:
            return
        self._schedule_respawn(rec)

    def _schedule_respawn(self, rec):
        now = time.monotonic()
        if now - rec.born_at >= STABLE_AFTER:
            self.failures.pop(rec.slot, None)
            return
        failures = self.failures[rec.slot] = self.failures.get(rec.slot, 0) + 1
        if failures > 1:
            delay = min(0.1 * 2 ** (failures - 2), MAX_BACKOFF)
            log.error("worker %d died %d times within %g s of starting; next start in %.1f s",
                      rec.slot, failures, STABLE_AFTER, delay)
            self.respawn_at[rec.slot] = now + delay

    # --- rolling restart ---

    def _rollout_step(self):
        while self.replacing is None and self.rollout:
            old = self.workers.get(self.rollout.popleft())
            if old is not None and not old.expected_exit:
                self.replacing = self._spawn(old.slot, replaces=old.pid)
                return
        if self.replacing is None:
            log.info("rolling restart complete")

    def _abort_rollout(self, why):
        log.error("rolling restart aborted: %s; the old workers keep serving", why)
        self.rollout.clear()
        self.replacing = None

    # --- signal handlers (called from the loop, never from the signal itself) ---

    def on_sigchld(self):
        self._reap()

    def on_sigterm(self):
        self._stop(quick=False)

    def on_sigint(self):
        self._stop(quick=self.stopping)  # a second Ctrl-C stops at once

    def on_sigquit(self):
        self._stop(quick=True)

    def on_sigusr2(self):
        if self.stopping or not self.booted:
            return
        log.info("rolling restart of %d workers", len(self.workers))
        busy = self.replacing.pid if self.replacing is not None else 0
        self.rollout = deque(pid for pid, w in self.workers.items() if not w.expected_exit and pid != busy)
        self._rollout_step()

    def on_sigttin(self):
        if not self.stopping:
            self.target += 1
            log.info("workers: %d", self.target)

    def on_sigttou(self):
        if not self.stopping and self.target > 1:
            self.target -= 1
            log.info("workers: %d", self.target)

    def _stop(self, quick):
        if not self.stopping:
            self.stopping = True
            self.listener.close()
            self.rollout.clear()
            self.respawn_at.clear()
            if self.workers:
                log.info("%s stop of %d workers", "quick" if quick else "graceful", len(self.workers))
        if quick and not self.quick:
            self.quick = True
            for rec in self.workers.values():
                self._stop_worker(rec, signal.SIGQUIT)
        elif not quick:
            for rec in self.workers.values():
                if not rec.expected_exit:
                    self._stop_worker(rec)


def _no_op(signum, frame):
    pass


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signame(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum
