"""The master: binds once, forks the workers, supervises them.

Plain Python, one thread, one loop.  Signal handlers do nothing: Python writes
each signal's number to a wake-up socket, and the loop reads those numbers and
dispatches them through an explicit table.  The loop waits on that socket and on
every worker's status pipe, with a timeout set by the next deadline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import selectors
import signal
import socket
import sys
import time
from collections import deque

from . import __version__, board, logs, loop, metrics, worker
from .errors import BOOT_EXIT_CODES, EXIT_OK, AppImportError, ConfigError
from .importer import check_app_string
from .proctitle import set_title
from .sockets import create_listener, describe

log = logging.getLogger("fastcluster")

QUICK_STOP_GRACE = 1.0       # seconds a quick stop waits before SIGKILL
STABLE_AFTER = 5.0           # a worker that lived this long resets its slot's failure count
MAX_BACKOFF = 10.0
KILL_AFTER_STACK_DUMP = 0.5  # a stuck worker gets this long to write its stack before SIGKILL
CAUSES = ("crash", "recycle", "rollout", "timeout")   # why a worker was replaced (restart counters)


class WorkerRecord:
    """One forked worker, in Node's vocabulary: spawning -> online -> dead."""

    __slots__ = ("slot", "pid", "state", "born_at", "started", "expected_exit", "status_fd", "replaces",
                 "kill_at", "last_beat", "inbox", "recycling", "lifetime", "board_index", "generation", "cause")

    def __init__(self, slot, pid, status_fd, replaces=0, lifetime=0.0, board_index=-1, generation=1):
        self.slot = slot
        self.pid = pid
        self.state = "spawning"
        self.born_at = self.last_beat = time.monotonic()
        self.started = time.time()
        self.expected_exit = False   # Node's exitedAfterDisconnect: we asked it to stop
        self.status_fd = status_fd
        self.replaces = replaces     # pid of the worker this one takes over from in a rollout
        self.kill_at = 0.0           # SIGKILL deadline once asked to stop
        self.inbox = b""             # a partial status line
        self.recycling = False       # queued for replacement (recycling or rollout)
        self.lifetime = lifetime     # replace after this many seconds (0: never)
        self.board_index = board_index   # its cells on the shared Board
        self.generation = generation     # the master's generation when it was started
        self.cause = None                # why it is being replaced (one of CAUSES), if it is


class Master:
    def __init__(self, config, reload=None):
        self.config = config
        self.reload = reload              # gives a fresh Config (SIGHUP re-reads the config file)
        self.app = None                   # the app, when --preload imported it here
        self.board = board.Board()
        self.generation = 1               # +1 for each rolling restart begun
        self.started = time.time()
        self.retired = {}                 # slot -> counters of its processes that exited (board.read form)
        self.restarts = {}                # slot -> {cause: count}
        self.metrics = None               # metrics.Endpoint, with --metrics-bind
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
        self.rolling = False              # a SIGUSR2/SIGHUP rollout is in progress
        self.handlers = {
            signal.SIGCHLD: self.on_sigchld,
            signal.SIGTERM: self.on_sigterm,
            signal.SIGINT: self.on_sigint,
            signal.SIGQUIT: self.on_sigquit,
            signal.SIGUSR2: self.on_sigusr2,
            signal.SIGHUP: self.on_sighup,
            signal.SIGTTIN: self.on_sigttin,
            signal.SIGTTOU: self.on_sigttou,
            signal.SIGUSR1: self.on_sigusr1,
        }
        self.next_status = 0.0

    # --- start-up ---

    def run(self) -> int:
        config = self.config
        if config.log_file:
            worker.reopen_log(config.log_file)
        try:
            logs.check_access_target(config.access_log)
        except OSError as exc:
            raise ConfigError("cannot open the access log %s: %s" % (config.access_log, exc.strerror)) from None
        if config.preload:
            self.app = worker.load_app(config)
            if isinstance(self.app, int):
                return self.app
        self.listener = create_listener(config.bind, config.backlog)
        self.url, _name, _port, _short = describe(self.listener)
        self.selector = selectors.DefaultSelector()
        if config.metrics_bind is not None:
            try:
                self._start_metrics(config.metrics_bind)
            except ConfigError:
                self.listener.close()
                self.selector.close()
                raise
        app = config.app or "the built-in demo app (fastcluster.demo)"
        kind = "compiled Cython loop" if self.loop_name == "cython" else "pure-Python loop"
        self._say("fastcluster %s: serving %s with the %s (--loop %s)" % (__version__, app, kind, self.loop_name))
        self._say("Forking for %d" % self.target)
        self._say("Master PID: %d" % os.getpid())
        if self.metrics is not None:
            self._say("fastcluster: metrics on %s/metrics" % describe(self.metrics.sock)[0])
        self._install_signals()
        if config.pid:
            _write_atomically(config.pid, "%d\n" % os.getpid())
        self._retitle()
        try:
            self._loop()
        finally:
            self._restore_signals()
            self.listener.close()
            if self.metrics is not None:
                self.metrics.close()
            self.selector.close()
            if config.pid:
                for name in (config.pid, config.pid + ".json"):
                    try:
                        os.unlink(name)
                    except FileNotFoundError:
                        pass
        return self.exit_code

    def _say(self, line):
        worker.say(line)

    def _start_metrics(self, address):
        try:
            sock = create_listener(address, 64)
        except ConfigError as exc:
            raise ConfigError("--metrics-bind: %s" % exc) from None
        self.metrics = metrics.Endpoint(sock, self.selector, self.collect)

    def _retitle(self):
        set_title("fastcluster master [%s] workers=%d gen=%d" % (self.config.app or "demo", self.target,
                                                                  self.generation),
                  "fc master")

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
            for key, events in ready:
                if type(key.data) is WorkerRecord:
                    self._read_status(key.data)
                elif key.data is not None:
                    key.data(events)     # the metrics endpoint
            self._reap()
            self._check_deadlines()
            if self.metrics is not None:
                self.metrics.expire(time.monotonic())
            if self.config.pid and time.monotonic() >= self.next_status:
                self.next_status = time.monotonic() + 1.0
                _write_atomically(self.config.pid + ".json", json.dumps(self.collect()))

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
        rec.last_beat = time.monotonic()
        lines = (rec.inbox + data).split(b"\n")
        rec.inbox = lines.pop()
        for line in lines:
            kind, _, arg = line.partition(b" ")
            if kind == b"R" and rec.state == "spawning":
                log.debug("worker %d (pid %d) is ready", rec.slot, rec.pid)
                rec.state = "online"
                self.next_status = 0.0
                self._on_online(rec)
            elif kind == b"X" and not rec.recycling and not rec.expected_exit:
                log.info("worker %d (pid %d) reached its %s limit; replacing it",
                         rec.slot, rec.pid, arg.decode("ascii", "replace"))
                self._replace(rec, "recycle")

    def _next_deadline(self):
        times = [t for t in self.respawn_at.values()]
        times.extend(w.kill_at for w in self.workers.values() if w.kill_at)
        if self.replacing is not None:
            times.append(self.replacing.born_at + self.config.ready_timeout)
        return min(times, default=float("inf"))

    def _check_deadlines(self):
        now = time.monotonic()
        timeout = self.config.timeout
        for rec in list(self.workers.values()):
            if rec.kill_at and now >= rec.kill_at:
                if rec.expected_exit:
                    log.warning("worker %d (pid %d) did not stop in time; killing it", rec.slot, rec.pid)
                rec.kill_at = 0.0
                _kill(rec.pid, signal.SIGKILL)
            elif rec.expected_exit or rec.state != "online":
                continue
            elif timeout and now - rec.last_beat > timeout:
                # Stuck in one request: its stack goes to the log (faulthandler), then it is killed
                # and, as an unexpected exit, replaced.
                log.error("worker %d (pid %d) has been stuck for over %g s (--timeout); its stack follows, "
                          "then it is killed", rec.slot, rec.pid, timeout)
                _kill(rec.pid, signal.SIGUSR2)
                rec.kill_at = now + KILL_AFTER_STACK_DUMP
                rec.cause = "timeout"
            elif rec.lifetime and now - rec.born_at > rec.lifetime and not rec.recycling:
                log.info("worker %d (pid %d) reached its max-worker-lifetime; replacing it", rec.slot, rec.pid)
                self._replace(rec, "recycle")
        rep = self.replacing
        if rep is not None and rep.state == "spawning" and now >= rep.born_at + self.config.ready_timeout:
            self._abort_rollout("worker %d (pid %d) was not ready after %g s"
                                % (rep.slot, rep.pid, self.config.ready_timeout))
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
        board_index = self.board.take()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            inherited = [self.wake_r.fileno(), self.wake_w.fileno(), self.selector.fileno()]
            inherited.extend(w.status_fd for w in self.workers.values() if w.status_fd >= 0)
            if self.metrics is not None:
                inherited.extend(self.metrics.fds())
            worker.run(self.config, self.listener, write_fd, inherited, self.loop_name, os.getppid(), self.app,
                       self.board.mem if board_index >= 0 else None, board_index, slot, self.generation)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        lifetime = self.config.max_worker_lifetime
        if lifetime:
            lifetime *= random.uniform(1.0, 1.1)   # so that workers started together do not all go at once
        rec = WorkerRecord(slot, pid, read_fd, replaces, lifetime, board_index, self.generation)
        self.workers[pid] = rec
        log.debug("worker %d (pid %d) started, generation %d%s", slot, pid, self.generation,
                  ", replacing pid %d" % replaces if replaces else "")
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
                self.next_status = 0.0
                if rec.board_index >= 0:   # its final counters stay with its slot
                    board.add(self.retired.setdefault(rec.slot, board.empty()), self.board.read(rec.board_index))
                self.board.release(rec.board_index)
                self._unwatch(rec)
                self._on_exit(rec, os.waitstatus_to_exitcode(status))

    def _on_exit(self, rec, code):
        how = "exited with code %d" % code if code >= 0 else "was killed by %s" % _signame(-code)
        # Why it went, for the restart counters: asked to (rollout, recycle; a scale-down counts
        # as nothing), killed past --timeout, or any other death (crash), also while it waited
        # for its turn in a rollout.
        cause = rec.cause if rec.expected_exit else ("timeout" if rec.cause == "timeout" else "crash")
        if cause is not None and not self.stopping:
            self.restarts.setdefault(rec.slot, dict.fromkeys(CAUSES, 0))[cause] += 1
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

    # --- rolling restart and recycling: one worker at a time, the new one ready before the old drains ---

    def _replace(self, rec, cause):
        rec.recycling = True
        rec.cause = cause
        self.rollout.append(rec.pid)
        self._rollout_step()

    def _rollout_step(self):
        while self.replacing is None and self.rollout:
            old = self.workers.get(self.rollout.popleft())
            if old is not None and not old.expected_exit:
                self.replacing = self._spawn(old.slot, replaces=old.pid)
                return
        if self.replacing is None and self.rolling:
            self.rolling = False
            log.info("rolling restart complete")

    def _abort_rollout(self, why):
        log.error("rolling restart aborted: %s; the old workers keep serving", why)
        for pid in self.rollout:
            if pid in self.workers:
                self.workers[pid].recycling = False
                self.workers[pid].cause = None
        self.rollout.clear()
        self.replacing = None
        self.rolling = False

    def collect(self):
        """Everything `fastcluster status` and /metrics show, read from the board without asking
        any worker: each live process, and per slot the counters of all its processes ever."""
        now, wall = time.monotonic(), time.time()
        rows, slots = [], {}
        for rec in sorted(self.workers.values(), key=lambda w: (w.slot, w.born_at)):
            numbers = self.board.read(rec.board_index)
            beat = numbers.pop("beat_us") / 1e6 or rec.last_beat
            rows.append(dict(numbers, slot=rec.slot, pid=rec.pid, generation=rec.generation,
                             state="draining" if rec.expected_exit else rec.state,
                             age=round(wall - rec.started, 1), last_heartbeat=round(max(0.0, now - beat), 1)))
            total = slots.setdefault(rec.slot, _slot_total(self.retired.get(rec.slot)))
            board.add(total, numbers, board.COUNTERS + board.GAUGES)
            total["heartbeat"] = max(total["heartbeat"], wall - (now - beat))
        for slot, retired in self.retired.items():
            slots.setdefault(slot, _slot_total(retired))
        for slot, total in slots.items():
            total["restarts"] = dict(self.restarts.get(slot) or dict.fromkeys(CAUSES, 0))
        replacing = self.replacing
        return {
            "master_pid": os.getpid(),
            "started": self.started,
            "generation": self.generation,
            "workers_wanted": self.target,
            "loop": self.loop_name,
            "stopping": self.stopping,
            "rollout": {"in_progress": replacing is not None or bool(self.rollout),
                        "waiting": len(self.rollout),
                        "replacing": None if replacing is None else
                        {"slot": replacing.slot, "pid": replacing.pid, "replaces": replacing.replaces}},
            "restarts": {cause: sum(counts[cause] for counts in self.restarts.values()) for cause in CAUSES},
            "workers": rows,
            "slots": sorted(slots.items()),
        }

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
        self.generation += 1
        log.info("rolling restart of %d workers (generation %d)", len(self.workers), self.generation)
        busy = self.replacing.pid if self.replacing is not None else 0
        self.rollout = deque(pid for pid, w in self.workers.items() if not w.expected_exit and pid != busy)
        for pid in self.rollout:
            self.workers[pid].recycling = True
            self.workers[pid].cause = "rollout"
        self.rolling = True
        self.next_status = 0.0
        self._retitle()
        self._rollout_step()

    def on_sighup(self):
        if self.stopping or not self.booted:
            return
        if self.config.config and self.reload is not None:
            try:
                self._apply(self.reload())
            except (ConfigError, AppImportError) as exc:
                log.error("config reload failed: %s; keeping the running settings and workers", exc)
                return
        self.on_sigusr2()

    def _apply(self, new):
        """Take the settings of a re-read config; the socket and files stay as they are."""
        old = self.config
        if new.app is not None:
            check_app_string(new.app)
        if new.access_log != old.access_log:
            try:
                logs.check_access_target(new.access_log)
            except OSError as exc:
                raise ConfigError("cannot open the access log %s: %s" % (new.access_log, exc.strerror)) from None
        fixed = {name: getattr(old, name) for name in ("bind", "backlog", "pid", "log_file", "preload",
                                                       "metrics_bind")}
        changed = [name for name, value in fixed.items() if getattr(new, name) != value]
        if changed:
            log.warning("config reload: %s only change with a full restart; keeping the running values",
                        ", ".join(changed))
        if new.app != old.app and old.preload:
            log.warning("config reload: the app was preloaded; a new APP needs a full restart")
            fixed["app"] = old.app
        self.loop_name = loop.resolve(new.loop)
        self.config = dataclasses.replace(new, **fixed)
        self.target = self.config.workers
        logs.setup(self.config.log_level, self.config.log_format)
        log.info("config reloaded from %s", new.config)

    def on_sigusr1(self):
        if self.config.log_file:
            worker.reopen_log(self.config.log_file)
            log.info("log file reopened")
        for rec in self.workers.values():
            _kill(rec.pid, signal.SIGUSR1)

    def on_sigttin(self):
        if not self.stopping:
            self.target += 1
            self._retitle()
            log.info("workers: %d", self.target)

    def on_sigttou(self):
        if not self.stopping and self.target > 1:
            self.target -= 1
            self._retitle()
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


def _slot_total(retired):
    total = board.empty()
    if retired is not None:
        board.add(total, retired)
    total["heartbeat"] = 0.0
    return total


def _write_atomically(path, text):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
