"""Replacing workers one at a time without ever running fewer than asked for.

A rolling restart (SIGUSR2, SIGHUP) queues every worker; a recycling (--max-requests, memory,
lifetime) queues one. For each, a replacement is forked into the same slot and must report ready
before the worker it replaces is told to drain. A replacement that dies, cannot be forked, or is
not ready within --ready-timeout (the master watches that, as for every worker start) aborts the
whole rollout, and the old workers keep serving; the master asks again for the recycles among them.
"""

from __future__ import annotations

import logging
from collections import deque

from .status import Replacing, RolloutState

log = logging.getLogger("fastcluster")


class Rollout:
    def __init__(self, workers, spawn, stop):
        self.workers = workers      # the master's pid -> WorkerRecord (the same dict)
        self.spawn = spawn          # (slot, replaces=pid) -> the new WorkerRecord, or None if fork failed
        self.stop = stop            # (record) -> tell it to drain
        self.queue = deque()        # pids still to be replaced, in order
        self.replacing = None       # the replacement being waited for
        self.rolling = False        # a rolling restart (not just a recycling) is in progress

    @property
    def active(self) -> bool:
        return self.replacing is not None or bool(self.queue)

    def restart_all(self):
        """A rolling restart of every worker that is not already being replaced or stopping."""
        busy = self.replacing.pid if self.replacing is not None else 0
        for pid, rec in self.workers.items():
            if not rec.expected_exit and pid != busy and not rec.recycling:
                self._enqueue(rec, "rollout")
        self.rolling = True
        self.step()

    def replace(self, rec, cause):
        """Replace one worker (recycling), after those already queued."""
        self._enqueue(rec, cause)
        self.step()

    def _enqueue(self, rec, cause):
        rec.recycling = True
        rec.cause = cause
        self.queue.append(rec.pid)

    def step(self):
        """Start the next replacement unless one is already starting."""
        while self.replacing is None and self.queue:
            old = self.workers.get(self.queue.popleft())
            if old is not None and not old.expected_exit:
                rep = self.spawn(old.slot, replaces=old.pid)
                if rep is None:
                    self._keep(old)
                    self.abort("a replacement for worker %d (pid %d) could not be forked" % (old.slot, old.pid))
                    return
                self.replacing = rep
                return
        if self.replacing is None and self.rolling:
            self.rolling = False
            log.info("rolling restart complete")

    def online(self, rec):
        """`rec` reported ready: the worker it replaces may drain, and the next one may start."""
        if not rec.replaces:
            return
        old = self.workers.get(rec.replaces)
        if old is not None and not old.expected_exit:
            self.stop(old)
        if self.replacing is rec:
            self.replacing = None
            self.step()

    def exited(self, rec, how) -> bool:
        """`rec` died unasked; True when it was the replacement being waited for (rollout aborted)."""
        if self.replacing is not rec:
            return False
        self.abort("its replacement worker %d (pid %d) %s" % (rec.slot, rec.pid, how))
        return True

    def abort(self, why):
        log.error("rolling restart aborted: %s; the old workers keep serving", why)
        self.clear()

    def clear(self):
        """Forget the rollout: the workers still queued, and the one whose replacement was being
        started, keep serving as they are (and may be queued again later)."""
        if self.replacing is not None:
            self._keep(self.workers.get(self.replacing.replaces))
        for pid in self.queue:
            self._keep(self.workers.get(pid))
        self.queue.clear()
        self.replacing = None
        self.rolling = False

    @staticmethod
    def _keep(rec):
        if rec is not None and not rec.expected_exit:
            rec.recycling = False
            rec.cause = None

    def state(self) -> RolloutState:
        rep = self.replacing
        return RolloutState(in_progress=self.active, waiting=len(self.queue),
                            replacing=None if rep is None else Replacing(rep.slot, rep.pid, rep.replaces))
