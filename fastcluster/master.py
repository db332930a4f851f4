"""The master: binds once, forks the workers, supervises them.

Plain Python, one thread, one loop.  Signal handlers do nothing: Python writes
each signal's number to a wake-up socket, and the loop reads those numbers and
dispatches them through an explicit table (`Signals`, signals.py).  The loop waits on
that socket and on every worker's status pipe, with a timeout set by the next deadline.

Its parts: `Signals` (signals.py: the wake-up socket and the dispatch table), `WorkerRecord` and
`Slots` (slots.py: one forked worker; each slot's backoff and history), `Rollout` (rollout.py:
replacing workers one at a time), `Upgrade` (upgrade.py: upgrade in place), the board (board.py:
every worker's counters, in shared memory), and the `Snapshot` it builds from them for `status`
and `/metrics`, with the `PidFile` it writes it to (status.py).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import sys
import time

from . import __version__, board, hooks, logs, loop, metrics, privileges, signals
from .errors import BOOT_EXIT_CODES, EXIT_OK, AppImportError, ConfigError
from .config import reloaded
from .importer import load_app
from .proctitle import set_title
from .rollout import Rollout
from .signals import Signals
from .slots import MAX_BACKOFF, Slots, WorkerRecord
from .sockets import create_listener, describe
from .status import PidFile, Snapshot, snapshot
from .upgrade import Upgrade

log = logging.getLogger("fastcluster")

QUICK_STOP_GRACE = 1.0       # seconds a quick stop waits before SIGKILL
RECYCLE_RETRY = 1.0          # a recycle whose replacement failed is asked for again after 1, 2, 4... s (to MAX_BACKOFF)
KILL_AFTER_STACK_DUMP = 0.5  # a stuck worker gets this long to write its stack before SIGKILL
HEARTBEAT_PERIOD = 1.0       # a worker's loop beats once a second


class Master:
    """Owns the running settings, the listening sockets and the workers (by pid), and decides what
    happens to them: starts, stops, exits, deadlines, and each signal. Hooks are given the Master
    itself: `pid` and `config` are what they may use."""

    def __init__(self, config, reload=None):
        self.config = config
        self.reload = reload              # gives a fresh Config (SIGHUP re-reads the config file)
        self.app = None                   # the app, when --preload imported it here
        self.board = board.Board()
        self.generation = 1               # +1 for each rolling restart begun
        self.started = time.time()
        self.metrics = None               # metrics.Endpoint, with --metrics-bind
        self.loop_name = loop.resolve(config.loop)
        _check_event_loop(config)
        self.target = config.workers
        self.workers = {}                 # pid -> WorkerRecord
        self.slots = Slots()              # slot -> when its next start is due, its exited processes' counts
        self.rollout = Rollout(self.workers, self._spawn, self._stop_worker)
        self.listeners = []               # the sockets every worker serves, one per --bind
        self.urls = []                    # and what they are called (the "listening on" lines, status)
        self.bells = []
        self.selector = None
        self.stopping = False
        self.quick = False
        self.exit_code = EXIT_OK
        self.booted = False               # a first worker loaded the app
        self.announced = False            # the listening line was printed
        self.stop_at = 0.0                # --shutdown-delay: when the graceful stop begins
        self.upgrade = Upgrade()          # SIGURG: the new master this one started, or the old one it replaces
        self.interface = ""               # what the first ready worker said of the app ("a WSGI app", ...)
        self.signals = Signals({
            signal.SIGCHLD: self.on_sigchld,
            signal.SIGTERM: self.on_sigterm,
            signal.SIGINT: self.on_sigint,
            signal.SIGQUIT: self.on_sigquit,
            signal.SIGUSR2: self.on_sigusr2,
            signal.SIGHUP: self.on_sighup,
            signal.SIGTTIN: self.on_sigttin,
            signal.SIGTTOU: self.on_sigttou,
            signal.SIGUSR1: self.on_sigusr1,
            signal.SIGURG: self.on_sigurg,
        })
        self.pidfile = PidFile(config.pid)   # --pid: the pid and the status JSON beside it
        self.master_pid = None            # (set in a forked worker's copy: the master's pid)
        self.tls = None                   # --certfile: the ssl.SSLContext the workers serve with
        self.reloader = None              # --reload: reloader.Poller or Notifier

    # --- start-up ---

    @property
    def pid(self) -> int:            # (hooks: gunicorn's arbiter.pid)
        return os.getpid() if self.master_pid is None else self.master_pid

    def _hook(self, name, *args):
        return hooks.call(self.config.hooks, name, self, *args)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self._hook("on_exit")

    def _run(self) -> int:
        config = self.config
        self._hook("on_starting")
        if config.umask is not None:
            os.umask(config.umask)
        uid, gid, _name = privileges.resolve(config.user, config.group)   # (checked before anything binds)
        self.tls = _tls_context(config)           # (a bad certificate or key: an error before anything binds)
        if config.log_file:
            logs.reopen_log(config.log_file)
        try:
            logs.check_access_target(config.access_log)
        except OSError as exc:
            raise ConfigError("cannot open the access log %s: %s" % (config.access_log, exc.strerror)) from None
        for path in (config.log_file, config.access_log):
            privileges.give(path, uid, gid)      # the workers reopen them on SIGUSR1
        if config.preload:
            self.app = load_app(config)
            if isinstance(self.app, int):
                return self.app
        try:
            for address in config.bind:
                self.listeners.append(create_listener(address, config.backlog, config.defer_accept))
        except ConfigError:
            self._close_listeners()     # (a later one failed: none is half-served)
            raise
        if os.environ.get("LISTEN_PID") == str(os.getpid()) and any(b.kind == "fd" for b in config.bind):
            for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)   # systemd's sockets are ours now; the app's children do not inherit them
        self.urls = [describe(sock)[0] for sock in self.listeners]
        if self.tls is not None:
            self.urls = ["https:" + url[5:] if url.startswith("http:") else url for url in self.urls]
        # the workers' bells, one per board index a worker may use (twice the workers, for a rolling
        # restart): a worker rings a lighter one's to hand it the connections queued (_server.py)
        self._more_bells(2 * self.target + 2)
        self.selector = selectors.DefaultSelector()
        self.upgrade.drop_stray_metrics(config)
        if config.metrics_bind is not None:
            try:
                self._start_metrics(config.metrics_bind)
            except ConfigError:
                self._close_listeners()
                self.selector.close()
                raise
        app = config.app or "the built-in demo app (fastcluster.demo)"
        kind = "compiled Cython loop" if self.loop_name == "cython" else "pure-Python loop"
        logs.say("fastcluster %s: serving %s with the %s (--loop %s)" % (__version__, app, kind, self.loop_name))
        logs.say("Forking for %d" % self.target)
        logs.say("Master PID: %d" % os.getpid())
        if config.http != "1":
            from . import h2codes      # (here: the master never speaks HTTP/2 itself)
            logs.say("fastcluster: HTTP/2 (%s) by %s" % (
                "only" if config.http == "2" else "h2 by ALPN over TLS, h2c by its preface",
                h2codes.engine_name(self.loop_name == "cython")))
        if self.metrics is not None:
            logs.say("fastcluster: metrics on %s/metrics" % describe(self.metrics.sock)[0])
        self.signals.install(self.selector)
        if config.reload:
            self._start_reloader()
        if not self.upgrade.replaces:   # (a new master's, once it takes over)
            self.pidfile.claim()
        self._retitle()
        try:
            self._loop()
        finally:
            self.signals.restore()
            self._close_listeners()
            for fd in self.bells:
                os.close(fd)
            if self.metrics is not None:
                self.metrics.close()
            if self.reloader is not None:
                self.reloader.close()
            self.selector.close()
            self.pidfile.remove()
        return self.exit_code

    def _start_reloader(self):
        from . import reloader

        extra = [self.config.config] if self.config.config else []
        self.reloader = reloader.start(self.config, time.monotonic(), extra)
        for fd in self.reloader.fds()[:1]:
            self.selector.register(fd, selectors.EVENT_READ, lambda _events: self._check_reload())
        logs.say("fastcluster: reloading on changes to %s in %s (%s)" % (
            ", ".join(self.config.reload_include or reloader.DEFAULT_INCLUDES),
            ", ".join(reloader.watched_dirs(self.config)), self.reloader.kind))

    def _check_reload(self):
        changed = self.reloader.check(time.monotonic())
        if not changed or self.stopping:
            return
        shown = ", ".join(os.path.relpath(p) for p in changed[:3]) + (" and %d more" % (len(changed) - 3)
                                                                     if len(changed) > 3 else "")
        if self.slots.held:
            log.info("reload: %s changed; starting the workers again", shown)
            self.slots.release()
            return
        if not self.booted:
            return
        log.info("reload: %s changed; restarting the workers", shown)
        if self.config.config and os.path.abspath(self.config.config) in changed:
            self.on_sighup()            # the config file itself: read it again, then restart
            return
        self._hook("on_reload")
        self.on_sigusr2()

    def _close_listeners(self):
        for sock in self.listeners:
            sock.close()

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

    # --- the loop ---

    def _loop(self):
        while True:
            self._maintain()
            if self.stopping and not self.workers:
                return
            timeout = max(0.0, min(self._next_deadline(), time.monotonic() + 1.0) - time.monotonic())
            ready = self.selector.select(timeout)
            self.signals.read()    # first: a stop must be known before exits are judged
            for key, events in ready:
                if type(key.data) is WorkerRecord:
                    self._read_status(key.data)
                elif key.data is not None:
                    key.data(events)     # the metrics endpoint
            self._reap()
            self._check_deadlines()
            if self.metrics is not None:
                self.metrics.expire(time.monotonic())
            if self.reloader is not None and time.monotonic() >= self.reloader.deadline():
                self._check_reload()
            self.pidfile.refresh(self.collect, time.monotonic())

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
        self.on_status(rec, data)

    def on_status(self, rec, data):
        """Bytes from a worker's status pipe: READY, heartbeats, requests to be replaced."""
        rec.last_beat = time.monotonic()
        lines = (rec.inbox + data).split(b"\n")
        rec.inbox = lines.pop()
        for line in lines:
            kind, _, arg = line.partition(b" ")
            if kind == b"R" and rec.state == "spawning" and not rec.kill_at:   # (not once killed as late)
                log.debug("worker %d (pid %d) is ready", rec.slot, rec.pid)
                rec.state = "online"
                self.interface = arg.decode("ascii", "replace") or self.interface
                self.pidfile.changed()
                self._on_online(rec)
            elif kind == b"S" and rec.state == "online" and not rec.expected_exit and not rec.kill_at:
                self._stuck(rec, "an app call has run for over %g s (--timeout)" % self.config.timeout)
            elif kind == b"X" and not rec.limit and not rec.expected_exit:
                self._recycle(rec, arg.decode("ascii", "replace"))

    def _recycle(self, rec, limit):
        """`rec` reached a recycling limit: it is replaced, and should that replacement fail (not
        ready in time, dead, not forked; or a rollout it waited in is aborted), asked for again with
        backoff by _check_deadlines, since the worker asks only once."""
        rec.limit = limit
        if rec.recycling:      # already queued by a rolling restart
            return
        log.info("worker %d (pid %d) reached its %s limit; replacing it", rec.slot, rec.pid, limit)
        self.rollout.replace(rec, "recycle")

    def _stuck(self, rec, why):
        """A worker stuck in one request: every thread's stack goes to the log (faulthandler), then
        it is killed and, as an unexpected exit, replaced."""
        log.error("worker %d (pid %d) %s; its stack follows, then it is killed", rec.slot, rec.pid, why)
        signals.kill(rec.pid, signal.SIGUSR2)
        rec.kill_at = time.monotonic() + KILL_AFTER_STACK_DUMP
        rec.cause = "timeout"

    def _next_deadline(self):
        times = [self.slots.deadline()]
        ready_timeout = self.config.ready_timeout
        for w in self.workers.values():
            if w.kill_at:
                times.append(w.kill_at)
            elif w.state == "spawning" and ready_timeout and not w.expected_exit:
                times.append(w.born_at + ready_timeout)
            elif w.recycle_at:
                times.append(w.recycle_at)
        if self.metrics is not None:
            times.append(self.metrics.deadline())
        if self.stop_at:
            times.append(self.stop_at)
        times.append(self.upgrade.deadline())
        if self.reloader is not None:
            times.append(self.reloader.deadline())
        return min(times, default=float("inf"))

    def _check_deadlines(self):
        now = time.monotonic()
        self.upgrade.check(now, self.config)
        if self.stop_at and now >= self.stop_at:
            self._stop(quick=False)          # the --shutdown-delay is over
        timeout = self.config.timeout
        ready_timeout = self.config.ready_timeout
        for rec in list(self.workers.values()):
            if rec.kill_at and now >= rec.kill_at:
                if rec.expected_exit:
                    log.warning("worker %d (pid %d) did not stop in time; killing it", rec.slot, rec.pid)
                rec.kill_at = float("inf")     # killed: nothing more to do until it is reaped
                signals.kill(rec.pid, signal.SIGKILL)
            elif rec.kill_at or rec.expected_exit:
                continue
            elif rec.state == "spawning":
                if ready_timeout and now - rec.born_at >= ready_timeout:
                    # its app import, a hook or the ASGI lifespan startup hangs (a database that
                    # is down): its stack shows where; it is killed and started again with backoff
                    # (on_exit), or, as a rollout's replacement, the rollout is aborted
                    self._stuck(rec, "was not ready after %g s (--ready-timeout)" % ready_timeout)
                    if self.rollout.replacing is rec:
                        self.rollout.abort("worker %d (pid %d) was not ready after %g s"
                                           % (rec.slot, rec.pid, ready_timeout))
            elif timeout and now - rec.last_beat > timeout + HEARTBEAT_PERIOD:
                # no heartbeat (the loop itself is stuck, as a --threads 1 call stops it); one
                # period of slack, since beats come once a second
                self._stuck(rec, "has been stuck for over %g s (--timeout)" % timeout)
            elif rec.lifetime and now - rec.born_at > rec.lifetime and not rec.limit:
                self._recycle(rec, "max-worker-lifetime")
            elif rec.limit and not rec.recycling:
                # past a limit and no longer queued: its replacement failed, or a rollout was aborted
                if not rec.recycle_at:
                    rec.recycle_tries += 1
                    delay = min(RECYCLE_RETRY * 2 ** (rec.recycle_tries - 1), MAX_BACKOFF)
                    rec.recycle_at = now + delay
                    log.warning("worker %d (pid %d) is still past its %s limit; asking for its replacement "
                                "again in %.1f s", rec.slot, rec.pid, rec.limit, delay)
                elif now >= rec.recycle_at:
                    rec.recycle_at = 0.0
                    self.rollout.replace(rec, "recycle")

    # --- workers ---

    def _maintain(self):
        """Start a worker for every empty slot that is due; stop workers above the target."""
        if self.stopping or self.slots.held:
            return
        now = time.monotonic()
        live = {w.slot for w in self.workers.values() if not w.expected_exit}
        slots = range(1, self.target + 1) if self.booted else (1,)
        for slot in slots:
            if slot not in live and self.slots.due(slot, now):
                self._spawn(slot)
        for rec in list(self.workers.values()):
            if rec.slot > self.target and not rec.expected_exit:
                self._stop_worker(rec)
        self.slots.cancel(above=self.target)

    def _spawn(self, slot, replaces=0):
        """Fork a worker for `slot`; its WorkerRecord, or None when the fork failed (then the slot
        is tried again later, with backoff)."""
        board_index = self.board.take()
        self._more_bells(board_index + 1)
        self._hook("pre_fork", hooks.WorkerInfo(slot, None, self.generation))
        sys.stdout.flush()
        sys.stderr.flush()
        mask = self.signals.block()     # (worker.py lifts the block once its handlers are in place)
        try:
            read_fd, write_fd = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
                raise
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.board.release(board_index)
            self._fork_failed(slot, exc, replaces)
            return None
        if pid == 0:  # the child: never returns
            from . import worker

            os.close(read_fd)
            inherited = [*self.signals.fds(), self.selector.fileno()]
            inherited.extend(w.status_fd for w in self.workers.values() if w.status_fd >= 0)
            if self.metrics is not None:
                inherited.extend(self.metrics.fds())
            if self.reloader is not None:
                inherited.extend(self.reloader.fds())
            self.master_pid = os.getppid()
            worker.run(worker.WorkerSpec(
                config=self.config, listeners=tuple(self.listeners), status_fd=write_fd, master_pid=self.master_pid,
                loop_name=self.loop_name, slot=slot, generation=self.generation,
                board=self.board.mem if board_index >= 0 else None, board_index=board_index, app=self.app,
                close_fds=tuple(inherited), sigmask=mask, bells=tuple(self.bells), master=self, tls=self.tls))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        lifetime = self.config.max_worker_lifetime
        if lifetime:
            # 1.0 to 1.1 times, so that workers started together do not all go at once (from os.urandom:
            # the random module would be one more import every forked worker carries)
            lifetime *= 1.0 + int.from_bytes(os.urandom(2), "little") / 655360
        rec = WorkerRecord(slot, pid, read_fd, replaces, lifetime, board_index, self.generation)
        self.workers[pid] = rec
        log.debug("worker %d (pid %d) started, generation %d%s", slot, pid, self.generation,
                  ", replacing pid %d" % replaces if replaces else "")
        self.selector.register(read_fd, selectors.EVENT_READ, rec)
        return rec

    def _more_bells(self, count):
        """Bells up to `count` board indexes (workers forked earlier lack the new ones, and ring
        those workers no more)."""
        while len(self.bells) < count:
            self.bells.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))

    def _fork_failed(self, slot, exc, replaces):
        if replaces:   # a replacement in a rollout: the rollout is aborted, the old worker serves on
            log.error("cannot start a replacement for worker %d: %s", slot, exc.strerror or exc)
            return
        delay = self.slots.fork_failed(slot, time.monotonic())
        log.error("cannot start worker %d: %s; trying again in %.1f s, serving with the workers running",
                  slot, exc.strerror or exc, delay)

    def _unwatch(self, rec):
        if rec.status_fd >= 0:
            self.selector.unregister(rec.status_fd)
            os.close(rec.status_fd)
            rec.status_fd = -1

    def _stop_worker(self, rec, sig=signal.SIGTERM):
        rec.expected_exit = True
        grace = QUICK_STOP_GRACE if sig != signal.SIGTERM else self.config.graceful_timeout
        rec.kill_at = time.monotonic() + grace
        signals.kill(rec.pid, sig)

    def _on_online(self, rec):
        self.booted = True
        self.rollout.online(rec)
        if not self.announced:
            online = sum(1 for w in self.workers.values() if w.state == "online" and not w.expected_exit)
            if online >= self.target:
                self.announced = True
                if self.interface:
                    logs.say("fastcluster: the app is %s" % self.interface)
                self._hook("when_ready")
                for url in self.urls:
                    logs.say("fastcluster: listening on %s" % url)
                if self.upgrade.replaces:
                    self.upgrade.take_over(self.pidfile)

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.on_exit(pid, os.waitstatus_to_exitcode(status))

    def on_exit(self, pid, code):
        """A child exited with `code` (negative: killed by that signal)."""
        if self.upgrade.exited(pid, code):
            return
        rec = self.workers.pop(pid, None)
        if rec is None:
            return
        self.pidfile.changed()
        if rec.board_index >= 0:   # its final counters stay with its slot
            self.slots.retire(rec.slot, self.board.read(rec.board_index)[0])
        self.board.release(rec.board_index)
        self._unwatch(rec)
        self._hook("child_exit", hooks.WorkerInfo(rec.slot, pid, rec.generation, code,
                                                  time.monotonic() - rec.born_at))
        how = signals.how_it_exited(code)
        # Why it went, for the restart counters: asked to (rollout, recycle; a scale-down counts
        # as nothing), killed past --timeout, or any other death (crash), also while it waited
        # for its turn in a rollout.
        cause = rec.cause if rec.expected_exit else ("timeout" if rec.cause == "timeout" else "crash")
        if cause is not None and not self.stopping:
            self.slots.count_restart(rec.slot, cause)
        if rec.expected_exit:
            log.info("worker %d (pid %d) stopped: %s", rec.slot, rec.pid, how)
            return
        if self.rollout.exited(rec, how):
            return
        if rec.state == "spawning" and rec.cause == "timeout" and not self.stopping:
            # killed past --ready-timeout: never a reason to stop the master (the first worker
            # included: what it waited for may come back), a reason to back off
            if rec.replaces:
                log.error("worker %d (pid %d) %s; the worker it was to replace serves on", rec.slot, rec.pid, how)
                return
            log.error("worker %d (pid %d) %s before it was ready; starting a new one", rec.slot, rec.pid, how)
            self.slots.died(rec, time.monotonic())
            return
        if rec.state == "spawning" and not self.booted and self.reloader is not None:
            # --reload: the app does not load yet; the next edit starts a worker again
            log.error("worker %d (pid %d) %s before it was ready; waiting for a change to the app's files "
                      "(--reload)", rec.slot, rec.pid, how)
            self.slots.hold()
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
        self.slots.died(rec, time.monotonic())

    def collect(self) -> Snapshot:
        """Everything `fastcluster status` and /metrics show (status.snapshot)."""
        return snapshot(self)

    # --- signal handlers (called from the loop, never from the signal itself) ---

    def on_sigchld(self):
        self._reap()

    def on_sigurg(self):
        """Upgrade in place (upgrade.py): the new master's workers come up beside ours, then it
        tells this one to go."""
        if self.stopping or self.upgrade.pid or not self.announced:
            log.warning("upgrade not started: %s", "stopping" if self.stopping else
                        "an upgrade is under way" if self.upgrade.pid else "the workers are not all ready yet")
            return
        self.upgrade.start(self.config, self.listeners, self.metrics, self.signals)

    def on_sigterm(self):
        if self.upgrade.pid and not self.stopping:
            # the new master is ready and takes over: a plain graceful stop, with no shutdown
            # delay and the health path left at 200 (this host stays in service)
            self.upgrade.took_over()
            if self.metrics is not None:   # the new master answers the scrapes from now on
                self.metrics.close()
                self.metrics = None
            self._stop(quick=False, leaving=False)
            return
        delay = self.config.shutdown_delay
        if delay and not self.stopping and not self.stop_at:
            # --shutdown-delay: the health path says 503 at once, everything else serves on
            self.board.set_stopping()
            self.stop_at = time.monotonic() + delay
            log.info("draining: the health path says 503; stopping in %g s (--shutdown-delay)", delay)
            return
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
        self.pidfile.changed()
        self._retitle()
        self.rollout.restart_all()

    def on_sighup(self):
        if self.stopping or not self.booted:
            return
        if self.config.config and self.reload is not None:
            try:
                self._apply(self.reload())
            except (ConfigError, AppImportError) as exc:
                log.error("config reload failed: %s; keeping the running settings and workers", exc)
                return
        self._hook("on_reload")
        self.on_sigusr2()

    def _apply(self, new):
        """Take the settings of a re-read config; the socket and files stay as they are."""
        _check_event_loop(new)
        if new.access_log != self.config.access_log:
            try:
                logs.check_access_target(new.access_log)
            except OSError as exc:
                raise ConfigError("cannot open the access log %s: %s" % (new.access_log, exc.strerror)) from None
        context = _tls_context(new)           # (renewed certificates: the restarted workers take them)
        self.config, warnings = reloaded(self.config, new)
        self.tls = context
        for warning in warnings:
            log.warning("config reload: %s", warning)
        self.loop_name = loop.resolve(self.config.loop)
        self.target = self.config.workers
        logs.setup(self.config.log_level, self.config.log_format)
        log.info("config reloaded from %s", new.config)

    def on_sigusr1(self):
        if self.config.log_file:
            logs.reopen_log(self.config.log_file)
            log.info("log file reopened")
        for rec in self.workers.values():
            signals.kill(rec.pid, signal.SIGUSR1)

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

    def _stop(self, quick, leaving=True):
        """`leaving`: the host leaves service (the health path says 503); not when a new master
        took over the socket."""
        self.stop_at = 0.0
        announce = False
        if not self.stopping:
            self.stopping = True
            if leaving:
                self.board.set_stopping()
            self._close_listeners()
            self.rollout.clear()
            self.slots.cancel()
            announce = bool(self.workers)
        if quick and not self.quick:
            self.quick = True
            for rec in self.workers.values():
                self._stop_worker(rec, signal.SIGQUIT)
        elif not quick:
            for rec in self.workers.values():
                if not rec.expected_exit:
                    # one still starting has no request to finish (and may hang in its import)
                    self._stop_worker(rec, signal.SIGQUIT if rec.state == "spawning" else signal.SIGTERM)
        if announce:   # (after the signals: once this line is out, every worker has been told)
            log.info("%s stop of %d workers", "quick" if quick else "graceful", len(self.workers))


def _tls_context(config):
    """The SSLContext for --certfile, or None (ssl is imported only when TLS is asked for: every
    worker's memory would carry it)."""
    if not config.certfile:
        return None
    from . import tls

    return tls.make_context(config)


def _check_event_loop(config):
    if config.event_loop == "uvloop":
        from .asgi import has_uvloop

        if not has_uvloop():
            raise ConfigError("--event-loop uvloop: uvloop is not installed (pip install 'fastcluster[uvloop]')")
