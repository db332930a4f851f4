"""The board: shared memory on which every worker publishes its counters.

The master maps it before the first fork, so every worker shares it. Each worker
writes its own slot, and only its own: plain int64 stores, which the master (for
`status` and `/metrics`) and the sibling workers (for accept balancing) read
whenever they like, without asking anyone. Plain Python: the master imports it,
and the two loops take the cell numbers from here.
"""

from __future__ import annotations

import heapq
import mmap

from .record import Record, field

HEADER = 8       # cells before slot 0; [0] = slots ever handed out (the readers' scan bound)
STOPPING = 1     # header cell: 1 once the master stops (or drains for --shutdown-delay): health says 503
STRIDE = 32      # cells per slot: 256 bytes, so no two workers write the same cache line
SLOTS = 512

# The cells of a slot. CONNS is -1 while the slot is free.
CONNS = 0        # connections open (gauge)
NOT_ACCEPTING = 1  # 0 while the listening sockets are in the worker's epoll set; 2 paused for balance
                 # (back at the next ring of the bell); 1 otherwise (full, stopping, out of descriptors)
REQUESTS = 2     # requests handed to the app
IN_FLIGHT = 3    # requests read in full and not yet answered (gauge)
BYTES_IN = 4     # bytes read from clients
BYTES_OUT = 5    # bytes written to clients, sendfile included
ACCEPTED = 6     # connections accepted
RSS = 7          # resident set size in bytes, as of the last tick (gauge)
BEAT = 8         # CLOCK_MONOTONIC of the last tick, in microseconds
STATUS = 9       # 9..13: responses by class, 1xx..5xx (refusals included)
REFUSED = 14     # 14..21: requests refused by the server itself, by status (REFUSALS order)
REFUSALS = (400, 408, 413, 414, 431, 501, 505, 0)   # 0: any other status
BUSY = REFUSED + len(REFUSALS)   # app calls in progress (gauge); with --threads N, N means all are busy
LOG_DROPPED = BUSY + 1   # access log lines dropped: a pipe or socket that did not read (logs.AccessLog)
OWN_LOG_DROPPED = LOG_DROPPED + 1   # the worker's own log lines dropped: stderr a pipe that did not read
USED = OWN_LOG_DROPPED + 1

# summed over a slot's processes, ever
COUNTERS = ("requests", "bytes_in", "bytes_out", "accepted", "log_dropped", "own_log_dropped")
GAUGES = ("conns", "in_flight", "rss", "busy")                  # summed over a slot's live processes
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_NAMED = {"conns": CONNS, "requests": REQUESTS, "in_flight": IN_FLIGHT, "bytes_in": BYTES_IN,
          "bytes_out": BYTES_OUT, "accepted": ACCEPTED, "rss": RSS, "busy": BUSY, "log_dropped": LOG_DROPPED,
          "own_log_dropped": OWN_LOG_DROPPED}


def refusal_cell(status: int) -> int:
    """The cell (offset in a slot) counting refusals with `status`."""
    try:
        return REFUSED + REFUSALS.index(status)
    except ValueError:
        return REFUSED + len(REFUSALS) - 1


def slot_cells(mem, index):
    """A worker's own cells on the master's board memory (`mem`), or None without a slot."""
    if mem is None or index < 0:
        return None
    base = HEADER + STRIDE * index
    return memoryview(mem).cast("q")[base:base + STRIDE]


def private_cells():
    """Cells for a Server with no master (tests, benchmarks): the same layout, shared with nobody."""
    return memoryview(bytearray(8 * STRIDE)).cast("q")


class Board:
    def __init__(self, slots=SLOTS):
        self.slots = slots
        self.mem = mmap.mmap(-1, 8 * (HEADER + STRIDE * slots))   # MAP_SHARED | MAP_ANONYMOUS
        self.cells = memoryview(self.mem).cast("q")
        for index in range(slots):
            self.cells[HEADER + STRIDE * index + CONNS] = -1
        self.free = list(range(slots))

    def take(self) -> int:
        """A free slot for a new worker, zeroed; -1 when all are taken (that worker then
        accepts without balancing and publishes nothing)."""
        if not self.free:
            return -1
        index = heapq.heappop(self.free)
        base = HEADER + STRIDE * index
        for cell in range(STRIDE):
            self.cells[base + cell] = 0
        self.cells[base + NOT_ACCEPTING] = 1
        self.cells[0] = max(self.cells[0], index + 1)
        return index

    def set_stopping(self) -> None:
        """The master stops, or drains before it stops: every worker's health path says 503."""
        self.cells[STOPPING] = 1

    def release(self, index: int) -> None:
        if index >= 0:
            self.cells[HEADER + STRIDE * index + CONNS] = -1
            heapq.heappush(self.free, index)

    def read(self, index: int):
        """One slot's numbers and its last tick (CLOCK_MONOTONIC microseconds); all zero for -1,
        a worker without a slot."""
        if index < 0:
            return Counts(), 0
        base = HEADER + STRIDE * index
        cells = self.cells[base:base + STRIDE].tolist()
        counts = Counts(**{name: cells[cell] for name, cell in _NAMED.items()})
        counts.conns = max(counts.conns, 0)
        counts.responses = dict(zip(CLASSES, cells[STATUS:STATUS + 5]))
        counts.refused = {reason(status): cells[REFUSED + i] for i, status in enumerate(REFUSALS)}
        return counts, cells[BEAT]


class Counts(Record):
    """A worker process's numbers on the board, or a slot's summed over its processes."""

    conns: int = 0
    requests: int = 0
    in_flight: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    accepted: int = 0
    rss: int = 0
    busy: int = 0       # app calls in progress
    log_dropped: int = 0    # access log lines dropped (a sink that did not read)
    own_log_dropped: int = 0    # the worker's own log lines dropped (stderr a pipe that did not read)
    responses: dict = field(lambda: dict.fromkeys(CLASSES, 0))    # by class
    refused: dict = field(lambda: {reason(status): 0 for status in REFUSALS})

    def add(self, other: "Counts", names=COUNTERS) -> None:
        """Add `other`'s counters (and, given their names, gauges) into these."""
        for name in names:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for group in ("responses", "refused"):
            mine = getattr(self, group)
            for key, value in getattr(other, group).items():
                mine[key] += value


def reason(status: int) -> str:
    """The `reason` label of a refusal status."""
    return str(status) if status else "other"


_PAGE = mmap.PAGESIZE


def rss_bytes(pid="self") -> int:
    """Resident set size of a process, from /proc (0 if it is gone)."""
    try:
        with open("/proc/%s/statm" % pid, "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0
