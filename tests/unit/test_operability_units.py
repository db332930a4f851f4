"""In-process tests of the operability pieces: the board, the access log renderers, /metrics text, status."""

import importlib
import json
import re
import logging
import os
import sys

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fastcluster import board, logs, metrics
from fastcluster.control import format_status
from fastcluster.status import Replacing, RolloutState, SlotTotals, Snapshot, WorkerRow
from helpers import IMPLS, NO_EXTENSIONS, HAS_EXTENSION


# --- the board ---

def test_board_slots_start_zeroed_and_keep_their_counters_apart():
    b = board.Board(slots=4)
    first, second = b.take(), b.take()
    assert (first, second) == (0, 1) and b.cells[0] == 2
    base = board.HEADER + board.STRIDE * first
    b.cells[base + board.REQUESTS] = 7
    b.cells[base + board.STATUS + 1] = 6
    b.cells[base + board.refusal_cell(431)] = 1
    b.cells[base + board.refusal_cell(418)] = 2       # not a status of ours: "other"
    numbers, _beat = b.read(first)
    assert numbers.requests == 7 and numbers.responses["2xx"] == 6
    assert numbers.refused["431"] == 1 and numbers.refused["other"] == 2
    assert b.read(second)[0].requests == 0
    b.release(first)
    assert b.read(first)[0].conns == 0 and b.cells[base + board.CONNS] == -1
    assert b.take() == first and b.read(first)[0].requests == 0     # handed out again, zeroed
    total = board.Counts()
    total.add(numbers)
    total.add(numbers)
    assert total.requests == 14 and total.refused["431"] == 2 and total.rss == 0
    assert board.USED <= board.STRIDE


def no_content(environ, start_response):
    start_response("204 No Content", [])
    return []


def test_a_worker_counts_on_its_own_board_slot(tmp_path):
    """The loops write the board in place: a request through Server.adopt shows up in the slot."""
    import socket
    from fastcluster.config import Config
    for name in [p.values[0] for p in IMPLS if not (p.values[0] == "cython" and NO_EXTENSIONS and not HAS_EXTENSION)]:
        module = importlib.import_module("fastcluster._parser" if name == "cython" else "fastcluster._parser_py")
        b = board.Board(slots=2)
        index = b.take()
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / ("%s.sock" % name)))
        server = module.Server(listener, no_content, Config(workers=2), board=b.mem, board_index=index)
        ours, theirs = socket.socketpair()
        conn = server.adopt(ours)
        request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        theirs.sendall(request * 3)
        conn.on_readable()
        answer = theirs.recv(65536)
        numbers, _beat = b.read(index)
        assert numbers.requests == 3 and numbers.responses["2xx"] == 3, name
        assert numbers.bytes_in == 3 * len(request) and numbers.bytes_out == len(answer), name
        assert numbers.accepted == 1 and numbers.conns == 1 and numbers.in_flight == 0, name
        conn.close()
        assert b.read(index)[0].conns == 0
        theirs.close()
        listener.close()


# --- access log ---

ENV = {"REMOTE_ADDR": "10.1.2.3", "REQUEST_METHOD": "GET", "RAW_URI": "/a?b=c", "SERVER_PROTOCOL": "HTTP/1.1",
       "PATH_INFO": "/a", "QUERY_STRING": "b=c", "HTTP_USER_AGENT": "curl/8", "HTTP_REFERER": "http://x/"}


def test_default_format_is_combined_plus_pid_and_microseconds():
    render = logs.compile_access_format(logs.DEFAULT_ACCESS_FORMAT)
    line = render(ENV, 200, 12, 0.0015, "[26/Nov/2026:10:00:00 +0000]", 42)
    assert line == ('10.1.2.3 - - [26/Nov/2026:10:00:00 +0000] "GET /a?b=c HTTP/1.1" 200 12 "http://x/" "curl/8" '
                    '42 1500\n')
    assert render({}, 400, 0, 0.0, "[t]", 1) == '- - - [t] "-" 400 - "-" "-" 1 0\n'


@pytest.mark.parametrize("fmt, message", [
    ("%(nope)s", "unknown field %(nope)s"),
    ("%(h)s 100%", "a lone %"),
    ("%(h)d", "a lone %"),
])
def test_bad_access_formats_are_refused(fmt, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        logs.compile_access_format(fmt)


def test_escaping_is_apaches():
    assert logs.escape('a"b\\c\x1b\xe9\u20ac\U0001f600') == 'a\\"b\\\\c\\x1b\\xe9\\u20ac\\U0001f600'
    render = logs.compile_access_format("%({x-real-ip}i)s %(a)s")
    assert render({"HTTP_X_REAL_IP": "1.1.1.1", "HTTP_USER_AGENT": "\n"}, 200, 0, 0, "", 1) == "1.1.1.1 \\x0a\n"


def test_access_log_batches_and_keeps_pipe_writes_whole(tmp_path, monkeypatch):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    log = logs.AccessLog(fifo)
    assert log.pipe
    writes = []
    real_write = os.write
    monkeypatch.setattr(logs.os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    for i in range(logs.ACCESS_BATCH - 1):
        log.log(dict(ENV, RAW_URI="/%d" % i), 200, 5, 0.001)
    assert writes == []                          # gathered, not written one by one
    log.log(ENV, 200, 5, 0.001)                  # the batch is full: written now
    assert writes and all(size <= 4096 for size in writes) and len(writes) < logs.ACCESS_BATCH / 10
    data = os.read(reader, 1 << 20)
    assert data.count(b"\n") == logs.ACCESS_BATCH and data.endswith(b"\n")
    log.close()
    os.close(reader)


texts = st.text(alphabet=st.characters(max_codepoint=0x1F64F, exclude_categories=("Cs",)), max_size=40)


@pytest.mark.skipif(NO_EXTENSIONS and not HAS_EXTENSION, reason="built with FASTCLUSTER_NO_EXTENSIONS")
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(addr=texts, method=st.one_of(st.none(), texts), uri=texts, agent=st.one_of(st.none(), texts),
       referer=st.one_of(st.none(), texts), status=st.integers(100, 599), size=st.integers(0, 10 ** 12),
       secs=st.floats(0, 1000))
def test_the_compiled_renderer_writes_the_same_bytes(tmp_path_factory, addr, method, uri, agent, referer, status,
                                                     size, secs):
    from fastcluster._parser import AccessWriter
    folder = tmp_path_factory.mktemp("access")
    env = {"REMOTE_ADDR": addr, "RAW_URI": uri, "SERVER_PROTOCOL": "HTTP/1.1"}
    for key, value in (("REQUEST_METHOD", method), ("HTTP_USER_AGENT", agent), ("HTTP_REFERER", referer)):
        if value is not None:
            env[key] = value
    compiled, python = logs.AccessLog(str(folder / "c")), logs.AccessLog(str(folder / "p"))
    writer = AccessWriter(compiled)
    writer.add(env, status, size, int(secs * 1e6))    # as the compiled loop converts its float
    writer.flush_now()
    python.log(env, status, size, secs)
    python.flush()
    compiled.close()
    python.close()
    with open(folder / "c", "rb") as c, open(folder / "p", "rb") as p:
        # the two calls may straddle a second: compare all but the time stamp, which must be there
        stamp = re.compile(rb" - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] ")
        compiled_line, python_line = c.read(), p.read()
        assert stamp.search(compiled_line) and stamp.search(python_line)
        assert stamp.sub(b" - - [T] ", compiled_line, 1) == stamp.sub(b" - - [T] ", python_line, 1)


def test_json_log_lines_are_one_object_each(capsys):
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("fastcluster", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["message"] == "failed here" and entry["pid"] == os.getpid()
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]


# --- /metrics and status ---

def snapshot():
    slot = SlotTotals(requests=5, bytes_in=100, bytes_out=900, accepted=2, conns=1, in_flight=0, rss=1 << 24,
                      heartbeat=1.8e9, restarts={"crash": 1, "recycle": 0, "rollout": 2, "timeout": 0})
    slot.responses["2xx"] = 4
    slot.responses["4xx"] = 1
    slot.refused["400"] = 1
    worker = WorkerRow(slot=1, pid=123, generation=3, state="online", age=12.5, last_heartbeat=0.4,
                       requests=5, bytes_out=900, rss=1 << 24, busy=3)
    return Snapshot(master_pid=1, started=1.79e9, generation=3, workers_wanted=1, loop="cython", stopping=False,
                    rollout=RolloutState(in_progress=True, waiting=0,
                                         replacing=Replacing(slot=1, pid=124, replaces=123)),
                    restarts={"crash": 1, "recycle": 0, "rollout": 2, "timeout": 0}, workers=[worker],
                    slots=[(1, slot)])


def test_the_snapshot_survives_its_json_form():
    before = snapshot()
    after = Snapshot.from_json(before.to_json())
    assert after == before
    assert json.loads(before.to_json())["slots"][0][1]["responses"]["2xx"] == 4


def test_metrics_text_parses_with_the_prometheus_parser():
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(snapshot()))}
    assert families["fastcluster_requests"].type == "counter"
    assert families["fastcluster_requests"].samples[0].value == 5
    assert families["fastcluster_requests"].samples[0].labels == {"worker": "1"}
    classes = {s.labels["class"]: s.value for s in families["fastcluster_responses"].samples}
    assert classes == {"1xx": 0, "2xx": 4, "3xx": 0, "4xx": 1, "5xx": 0}
    causes = {s.labels["cause"]: s.value for s in families["fastcluster_worker_restarts"].samples}
    assert causes == {"crash": 1, "recycle": 0, "rollout": 2, "timeout": 0}
    assert families["fastcluster_worker_info"].samples[0].labels == {"worker": "1", "pid": "123",
                                                                      "generation": "3", "state": "online"}
    assert families["fastcluster_rollout_in_progress"].samples[0].value == 1
    assert families["fastcluster_app_threads_busy"].type == "gauge"
    assert all(name.startswith("fastcluster_") for name in families)


def test_status_table_rows_and_rollout_line():
    text = format_status(1, snapshot())
    lines = text.splitlines()
    assert lines[0] == "master 1: generation 3, 1 workers wanted, loop cython"
    assert lines[1] == "rolling restart in progress: starting pid 124 for slot 1 (replaces pid 123), 0 more waiting"
    assert lines[2] == "restarts: crash 1, recycle 0, rollout 2, timeout 0"
    assert lines[3].split() == ["slot", "pid", "gen", "state", "age", "requests", "inflight", "busy", "conns", "in",
                                "out", "2xx", "4xx", "5xx", "refused", "rss", "beat"]
    assert lines[4].split() == ["1", "123", "3", "online", "12.5s", "5", "0", "3", "0", "0", "B", "900", "B", "0", "0",
                                "0", "0", "16.0", "MiB", "0.4s"]


def test_text_log_lines_each_name_the_pid():
    formatter = logs.TextFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("fastcluster", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    lines = formatter.format(record).splitlines()
    assert len(lines) > 3 and lines[-1].endswith("] ValueError: boom")
    assert all(re.match(r"^\[[\d :,-]+\] \[%d\] \[ERROR\] " % os.getpid(), line) for line in lines), lines
