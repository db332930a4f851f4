"""What the master knows of itself and its workers, as one typed snapshot.

The master builds a `Snapshot` (Master.collect()) from the board and its worker records, without
asking any worker. `/metrics` renders it (metrics.py), `fastcluster status` prints it (control.py),
and the `--pid FILE` master writes it to FILE.json, so every reader works from these fields.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional, Tuple

from . import board
from .board import Counts
from .record import Record, field

CAUSES = ("crash", "recycle", "rollout", "timeout")   # why a worker was replaced (restart counters)


def no_restarts() -> dict:
    return dict.fromkeys(CAUSES, 0)


class WorkerRow(Counts):
    """One live worker process."""

    slot: int = 0
    pid: int = 0
    generation: int = 1
    state: str = "spawning"       # spawning, online or draining
    age: float = 0.0              # seconds since it was forked
    last_heartbeat: float = 0.0   # seconds since its last tick


class SlotTotals(Counts):
    """One slot, 1..N: the counters of every process it ever had, the gauges of its live ones."""

    heartbeat: float = 0.0        # Unix time of the newest tick of its processes (0: none yet)
    restarts: dict = field(no_restarts)   # by cause


class Replacing(Record):
    slot: int
    pid: int                      # the new worker, not ready yet
    replaces: int                 # the pid it takes over from


class RolloutState(Record):
    in_progress: bool = False     # a rolling restart or a recycling is replacing workers
    waiting: int = 0              # workers still to be replaced after the current one
    replacing: Optional[Replacing] = None


class Snapshot(Record):
    master_pid: int
    started: float                # Unix time the master started
    generation: int               # 1, plus one per rolling restart begun
    workers_wanted: int
    loop: str
    listening: list = field(list)            # the URLs every worker serves, one per --bind
    stopping: bool = False
    rollout: RolloutState = field(RolloutState)
    restarts: dict = field(no_restarts)      # summed over the slots
    workers: List[WorkerRow] = field(list)
    slots: List[Tuple[int, SlotTotals]] = field(list)

    def to_json(self) -> str:
        import json   # here: only the master's --pid status file and `fastcluster status` need it

        return json.dumps(self.as_dict())

    @classmethod
    def from_json(cls, text: str) -> "Snapshot":
        import json

        data = json.loads(text)
        rollout = data.pop("rollout")
        replacing = rollout.pop("replacing")
        return cls(rollout=RolloutState(replacing=Replacing(**replacing) if replacing else None, **rollout),
                   workers=[WorkerRow(**row) for row in data.pop("workers")],
                   slots=[(slot, SlotTotals(**totals)) for slot, totals in data.pop("slots")], **data)


def snapshot(master) -> Snapshot:
    """What a Master knows, read from the board without asking any worker: each live process, and
    per slot the counters of all its processes ever (its retired ones' and its live ones')."""
    now, wall = time.monotonic(), time.time()
    rows, slots = [], {}

    def slot_total(slot):
        total = SlotTotals(restarts=dict(master.slots.restarts.get(slot) or no_restarts()))
        retired = master.slots.retired.get(slot)
        if retired is not None:
            total.add(retired)
        return total

    for rec in sorted(master.workers.values(), key=lambda w: (w.slot, w.born_at)):
        counts, beat_us = master.board.read(rec.board_index)
        beat = beat_us / 1e6 or rec.last_beat
        rows.append(WorkerRow(**counts.as_dict(), slot=rec.slot, pid=rec.pid, generation=rec.generation,
                              state="draining" if rec.expected_exit else rec.state,
                              age=round(wall - rec.started, 1), last_heartbeat=round(max(0.0, now - beat), 1)))
        total = slots.setdefault(rec.slot, slot_total(rec.slot))
        total.add(counts, board.COUNTERS + board.GAUGES)
        total.heartbeat = max(total.heartbeat, wall - (now - beat))
    for slot in master.slots.retired:
        slots.setdefault(slot, slot_total(slot))
    return Snapshot(
        master_pid=os.getpid(), started=master.started, generation=master.generation,
        workers_wanted=master.target, loop=master.loop_name, listening=list(master.urls), stopping=master.stopping,
        rollout=master.rollout.state(),
        restarts={cause: sum(counts[cause] for counts in master.slots.restarts.values()) for cause in CAUSES},
        workers=rows, slots=sorted(slots.items()))


class PidFile:
    """--pid FILE: the master's pid in FILE, and its Snapshot in FILE.json, rewritten once a second
    and at once after a change (a worker ready or gone, a rolling restart begun); both removed as
    the master returns, unless a new master (an upgrade in place) has taken FILE over."""

    def __init__(self, path):
        self.path = path              # None: no --pid
        self.next_write = 0.0         # when FILE.json is rewritten

    def claim(self) -> None:
        if self.path:
            write_atomically(self.path, "%d\n" % os.getpid())

    def changed(self) -> None:
        """Rewrite FILE.json at the next refresh(), not a second later."""
        self.next_write = 0.0

    def refresh(self, collect, now) -> None:
        """Write `collect()`'s Snapshot to FILE.json, when due."""
        if self.path and now >= self.next_write:
            self.next_write = now + 1.0
            write_atomically(self.path + ".json", collect().to_json())

    def remove(self) -> None:
        if not self.path:
            return
        try:
            with open(self.path) as f:
                if f.read().strip() != str(os.getpid()):
                    return
        except (OSError, ValueError):
            return
        for name in (self.path, self.path + ".json"):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def write_atomically(path: str, text: str) -> None:
    """Replace `path` with `text` in one rename, so a reader never sees half a file."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
