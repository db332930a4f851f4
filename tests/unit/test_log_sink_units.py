"""An access log whose pipe or socket is not read: the writer never waits, holds at most
logs.ACCESS_HOLD bytes of whole lines, then drops whole lines and counts them on the board."""

import fcntl
import os
import select
import socket
import sys
import threading
import time

import pytest

from fastcluster import board, logs, metrics
from fastcluster.status import SlotTotals, Snapshot

ENV = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
       "HTTP_USER_AGENT": "t", "RAW_URI": "/"}
LINES = 20000           # about 2 MiB of lines: more than a pipe and ACCESS_HOLD together


def _log_many(log, count, deadline=20.0):
    """log() `count` lines in a thread; whether that ended within `deadline` seconds."""
    def run():
        for i in range(count):
            log.log(dict(ENV, RAW_URI="/%06d" % i), 200, 5, 0.001)
        log.flush()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline)
    return not thread.is_alive()


def _read_all(fd):
    out = bytearray()
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


def _check_whole(data):
    """The lines read, each whole, in order; their numbers."""
    numbers = []
    for line in data.split(b"\n")[:-1]:
        assert line.startswith(b"127.0.0.1 - - [") and line.endswith(b" 1000"), line
        numbers.append(int(line.split(b'"GET /')[1][:6]))
    assert data.endswith(b"\n") and numbers == sorted(numbers)
    return numbers


@pytest.fixture
def pipe():
    """A pipe whose read end (non-blocking) the test holds."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    os.close(r)          # (a writer still blocked in write() gets EPIPE and ends)
    os.close(w)


def test_stdout_pipe_nobody_reads_drops_lines_then_lines_go_on(pipe, monkeypatch):
    r, w = pipe
    monkeypatch.setattr(sys, "stdout", open(w, "w", closefd=False))   # (here: pytest sets it per phase)
    cells = board.private_cells()
    log = logs.AccessLog("-", cells=cells)
    try:
        assert log.pipe and log.own_fd not in (-1, w)
        assert _log_many(log, LINES), "the access log blocked on a pipe nobody reads"
        # stdout itself stays blocking: the master, the other workers and the app's print() share it
        assert not fcntl.fcntl(w, fcntl.F_GETFL) & os.O_NONBLOCK
        assert 0 < len(log.held) <= logs.ACCESS_HOLD and log.held.endswith(b"\n")
        assert log.dropped > 0 and cells[board.LOG_DROPPED] == log.dropped
        # the reader is back: the drainer writes what was held as it is read, then new lines
        out = bytearray(_read_all(r))
        deadline = time.monotonic() + 10
        while log.held and time.monotonic() < deadline:
            select.select([r], [], [], 0.1)
            out += _read_all(r)
        assert not log.held
        out += _read_all(r)
        kept = _check_whole(bytes(out))
        # nobody read while they came: the oldest were kept, the newest dropped, none lost unseen
        assert kept == list(range(len(kept))) and len(kept) + log.dropped == LINES
        log.log(dict(ENV, RAW_URI="/%06d" % LINES), 200, 5, 0.001)
        log.flush()
        assert _check_whole(_read_all(r)) == [LINES]
    finally:
        log.close()


def test_socket_sink_nobody_reads_drops_lines(monkeypatch):
    """stdout a stream socket (journald's): sent to with MSG_DONTWAIT."""
    ours, theirs = socket.socketpair()
    out = open(ours.fileno(), "w", closefd=False)
    monkeypatch.setattr(sys, "stdout", out)
    log = logs.AccessLog("-", cells=board.private_cells())
    try:
        assert log.sock is not None
        assert _log_many(log, LINES), "the access log blocked on a socket nobody reads"
        assert log.dropped > 0 and 0 < len(log.held) <= logs.ACCESS_HOLD
        assert ours.getblocking()       # the shared descriptor is left as it was
    finally:
        log.close()      # held lines get logs.CLOSE_WAIT seconds, then count as dropped
        assert not log.held
        ours.close()
        theirs.close()


def test_a_regular_file_gets_every_line(tmp_path):
    log = logs.AccessLog(str(tmp_path / "access.log"))
    assert log.own_fd == -1 and log.sock is None
    assert _log_many(log, 1000)
    log.close()
    with open(tmp_path / "access.log", "rb") as f:
        assert _check_whole(f.read()) == list(range(1000))
    assert log.dropped == 0


def test_dropped_lines_reach_metrics():
    b = board.Board(slots=2)
    index = b.take()
    cells = board.slot_cells(b.mem, index)
    cells[board.LOG_DROPPED] = 42
    counts, _beat = b.read(index)
    assert counts.log_dropped == 42
    assert board.slot_cells(None, index) is None and board.slot_cells(b.mem, -1) is None
    total = SlotTotals()
    total.add(counts)
    snap = Snapshot(master_pid=1, started=0.0, generation=1, workers_wanted=1, loop="python",
                    slots=[(1, total)])
    assert 'fastcluster_access_log_dropped_lines_total{worker="1"} 42' in metrics.render(snap).splitlines()
