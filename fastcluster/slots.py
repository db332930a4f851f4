"""The master's books on its workers: a `WorkerRecord` for each forked process, and `Slots`, what
each slot (1..N, the place a worker runs in) keeps across the processes it has had.
"""

from __future__ import annotations

import logging
import time

from . import board
from .status import no_restarts

log = logging.getLogger("fastcluster")

STABLE_AFTER = 5.0           # a worker that lived this long resets its slot's failure count
MAX_BACKOFF = 10.0


class WorkerRecord:
    """One forked worker, in Node's vocabulary: spawning -> online -> dead."""

    __slots__ = ("slot", "pid", "state", "born_at", "started", "expected_exit", "status_fd", "replaces",
                 "kill_at", "last_beat", "inbox", "recycling", "lifetime", "board_index", "generation", "cause",
                 "limit", "recycle_tries", "recycle_at")

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
        self.limit = ""                  # the recycling limit it reached ("max-requests", ...), if any
        self.recycle_tries = 0           # replacements for that limit that failed
        self.recycle_at = 0.0            # when its replacement is asked for again (0: not scheduled)


class Slots:
    """Each slot's history across its processes. When its next worker may start: at once, after a
    backoff (deaths soon after starting, or failed forks, counted in a row), or, with --reload
    while the app does not load, not before the app's files change (`held`). And for `status` and
    /metrics, the final counters of its processes that exited and its restarts by cause."""

    def __init__(self):
        self.respawn_at = {}     # slot -> monotonic time of the next start
        self.failures = {}       # slot -> consecutive early deaths (or failed forks)
        self.held = False        # --reload: the app failed to load; no start until the next edit
        self.retired = {}        # slot -> board.Counts of its processes that exited
        self.restarts = {}       # slot -> {cause: count}

    def due(self, slot, now) -> bool:
        """True when `slot` may start a worker now (its scheduled start, if any, is then used up)."""
        if self.respawn_at.get(slot, 0.0) > now:
            return False
        self.respawn_at.pop(slot, None)
        return True

    def deadline(self) -> float:
        return min(self.respawn_at.values(), default=float("inf"))

    def fork_failed(self, slot, now) -> float:
        """A fork for `slot` failed: it is tried again after 0.1 s, doubling (the delay returned)."""
        failures = self.failures[slot] = self.failures.get(slot, 0) + 1
        delay = min(0.1 * 2 ** (failures - 1), MAX_BACKOFF)
        self.respawn_at[slot] = now + delay
        return delay

    def died(self, rec, now):
        """`rec` died unasked: a worker that was stable clears its slot's count; the second early
        death in a row, and each one after, puts off the next start (0.1 s, doubling)."""
        if rec.state == "online" and now - rec.born_at >= STABLE_AFTER:   # (one never ready is not stable)
            self.failures.pop(rec.slot, None)
            return
        failures = self.failures[rec.slot] = self.failures.get(rec.slot, 0) + 1
        if failures > 1:
            delay = min(0.1 * 2 ** (failures - 2), MAX_BACKOFF)
            log.error("worker %d died %d times within %g s of starting; next start in %.1f s",
                      rec.slot, failures, STABLE_AFTER, delay)
            self.respawn_at[rec.slot] = now + delay

    def hold(self):
        """--reload: the first worker could not load the app; no worker starts until release()."""
        self.held = True

    def release(self):
        """The app's files changed: workers start again, the failures before forgotten."""
        self.held = False
        self.failures.clear()

    def cancel(self, above=0):
        """Forget the starts scheduled for the slots above `above` (0: all of them)."""
        for slot in [s for s in self.respawn_at if s > above]:
            del self.respawn_at[slot]

    def retire(self, slot, counts):
        """A process of `slot` exited: its final counters (a board.Counts) stay with the slot."""
        self.retired.setdefault(slot, board.Counts()).add(counts)

    def count_restart(self, slot, cause):
        """A process of `slot` went, for `cause` (one of status.CAUSES)."""
        self.restarts.setdefault(slot, no_restarts())[cause] += 1
