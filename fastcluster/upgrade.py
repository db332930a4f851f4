"""Upgrade in place (SIGURG, `fastcluster upgrade --pid FILE`): a new master, the same sockets.

The old master re-executes its own command line with its listening sockets inherited (their
descriptors named in the environment, which config.py reads). The new master binds nothing, forks
its workers beside the old ones, and once every one of them is ready it writes the pid file and
sends the old master SIGTERM: the old one drains its workers and exits. A new master that exits,
or is not ready within --ready-timeout (and START_SLACK more), is given up on, and the old one
serves on.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from . import signals

log = logging.getLogger("fastcluster")

# what the new master inherits
UPGRADE_FD_ENV = "FASTCLUSTER_UPGRADE_FD"
UPGRADE_FROM_ENV = "FASTCLUSTER_UPGRADE_FROM"
UPGRADE_METRICS_FD_ENV = "FASTCLUSTER_UPGRADE_METRICS_FD"   # and the --metrics-bind socket (config.py reads both)
START_SLACK = 10.0   # seconds past --ready-timeout (or --graceful-timeout, once told to stop) a new master may take


class Upgrade:
    """An upgrade in place, seen from either master. The old one: the new master it started
    (`pid`, 0 when none is under way) and when that one must be ready by. The new one: the old
    master it replaces (`replaces`, 0 once it took over, or when it was not started by one)."""

    def __init__(self):
        self.pid = 0
        self.ready_by = 0.0
        self.replaces = int(os.environ.pop(UPGRADE_FROM_ENV, "0") or 0)

    # --- the new master ---

    def drop_stray_metrics(self, config):
        """A metrics socket handed over by the old master, which this one's config no longer asks
        for (--metrics-bind gone): closed."""
        stray = os.environ.get(UPGRADE_METRICS_FD_ENV)
        if stray and self.replaces and config.metrics_bind is None:
            try:
                os.close(int(stray))
            except OSError:
                pass

    def take_over(self, pidfile):
        """Every worker of this (new) master is ready: the pid file (a status.PidFile) is ours, and
        the old master drains and exits."""
        pidfile.claim()
        log.info("upgrade: the new master is ready; the old one (pid %d) drains and exits", self.replaces)
        signals.kill(self.replaces, signal.SIGTERM)
        self.replaces = 0

    # --- the old master ---

    def start(self, config, listeners, metrics, master_signals):
        """Fork, and in the child exec this master's command line with every listener this master
        owns inherited: the metrics socket too (the new one could not bind a fixed --metrics-bind
        port this one holds). `master_signals`: the master's Signals, reset in the child."""
        argv = list(sys.orig_argv)
        env = dict(os.environ)
        env[UPGRADE_FD_ENV] = ",".join(str(sock.fileno()) for sock in listeners)
        env[UPGRADE_FROM_ENV] = str(os.getpid())
        inherited = list(listeners)
        env.pop(UPGRADE_METRICS_FD_ENV, None)
        if metrics is not None:
            env[UPGRADE_METRICS_FD_ENV] = str(metrics.sock.fileno())
            inherited.append(metrics.sock)
        for sock in inherited:
            sock.set_inheritable(True)
        try:
            pid = os.fork()
        except OSError as exc:
            for sock in inherited:
                sock.set_inheritable(False)
            log.error("upgrade not started: cannot fork: %s", exc.strerror or exc)
            return
        if pid == 0:      # the child becomes the new master
            try:
                master_signals.reset()
                os.execvpe(argv[0], argv, env)
            except BaseException as exc:
                os.write(2, ("fastcluster: error: upgrade: cannot run %s: %s\n" % (argv[0], exc)).encode())
            os._exit(127)
        for sock in inherited:
            sock.set_inheritable(False)
        self.pid = pid
        self.ready_by = (time.monotonic() + config.ready_timeout + START_SLACK
                         if config.ready_timeout else float("inf"))
        log.info("upgrade: started a new master (pid %d): %s", pid, " ".join(argv))

    def deadline(self) -> float:
        return self.ready_by if self.pid else float("inf")

    def check(self, now, config):
        """A new master not ready in time is told to stop (and again, should it not exit either)."""
        if self.pid and now >= self.ready_by:
            log.error("upgrade failed: the new master (pid %d) was not ready within %g s (--ready-timeout); "
                      "stopping it", self.pid, config.ready_timeout)
            signals.kill(self.pid, signal.SIGTERM)
            self.ready_by = now + config.graceful_timeout + START_SLACK

    def exited(self, pid, code) -> bool:
        """A child exited: True when it was the new master (it failed: this master serves on)."""
        if pid != self.pid:
            return False
        self.pid = 0
        log.error("upgrade failed: the new master (pid %d) %s before its workers were ready; this one "
                  "serves on (its error is above)", pid, signals.how_it_exited(code))
        return True

    def took_over(self):
        """The new master sent this one SIGTERM: it serves now, and this one stops."""
        log.info("upgrade: the new master (pid %d) took over; stopping", self.pid)
        self.pid = 0
