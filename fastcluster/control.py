"""`fastcluster reload|stop|upgrade|status --pid FILE`: the signals and the status table, for operators."""

from __future__ import annotations

import os
import signal
import sys
import time

from .errors import EXIT_USAGE
from .status import Snapshot


def _fail(message):
    print("fastcluster: error: %s" % message, file=sys.stderr)
    return EXIT_USAGE


def _master_pid(pidfile):
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except FileNotFoundError:
        raise LookupError("no pid file %s: is the server running with --pid %s?" % (pidfile, pidfile))
    except ValueError:
        raise LookupError("%s does not hold a pid" % pidfile)
    if not _alive(pid):
        raise LookupError("the master (pid %d in %s) is not running" % (pid, pidfile))
    return pid


def _alive(pid):
    """True while pid runs; an exited process its parent has not reaped yet (a zombie) counts as gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run(args) -> int:
    try:
        pid = _master_pid(args.pid)
    except LookupError as exc:
        return _fail(exc)
    if args.command == "reload":
        os.kill(pid, signal.SIGUSR2)
        print("rolling restart requested (SIGUSR2 to master %d)" % pid)
        return 0
    if args.command == "stop":
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                print("master %d stopped" % pid)
                return 0
            time.sleep(0.05)
        return _fail("master %d still running after %g s" % (pid, args.wait))
    if args.command == "upgrade":
        os.kill(pid, signal.SIGURG)
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            try:
                new = _master_pid(args.pid)
            except LookupError:
                new = pid
            if new != pid:
                print("upgraded: master %d took over from %d" % (new, pid))
                return 0
            if not _alive(pid):
                return _fail("master %d exited and no new master took over" % pid)
            time.sleep(0.05)
        return _fail("no new master took over within %g s; master %d serves on (its log says why)" % (args.wait, pid))
    return _status(pid, args.pid + ".json", getattr(args, "json", False))


def _status(pid, path, raw=False):
    try:
        with open(path) as f:
            status = Snapshot.from_json(f.read())
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return _fail("no status in %s yet" % path)
    if raw:
        print(status.to_json())
        return 0
    print(format_status(pid, status))
    return 0


_COLUMNS = (  # heading, width, value of a status.WorkerRow
    ("slot", 4, lambda w: w.slot),
    ("pid", 8, lambda w: w.pid),
    ("gen", 4, lambda w: w.generation),
    ("state", 9, lambda w: w.state),
    ("age", 8, lambda w: _seconds(w.age)),
    ("requests", 10, lambda w: w.requests),
    ("inflight", 8, lambda w: w.in_flight),
    ("busy", 5, lambda w: w.busy),
    ("conns", 6, lambda w: w.conns),
    ("in", 8, lambda w: _bytes(w.bytes_in)),
    ("out", 8, lambda w: _bytes(w.bytes_out)),
    ("2xx", 9, lambda w: w.responses["2xx"]),
    ("4xx", 7, lambda w: w.responses["4xx"]),
    ("5xx", 7, lambda w: w.responses["5xx"]),
    ("refused", 7, lambda w: sum(w.refused.values())),
    ("rss", 8, lambda w: _bytes(w.rss)),
    ("beat", 6, lambda w: _seconds(w.last_heartbeat)),
)


def format_status(pid, status) -> str:
    """The table `fastcluster status` prints from a status.Snapshot: the master, then one row per
    worker process."""
    rollout = status.rollout
    lines = ["master %d: generation %d, %d workers wanted, loop %s%s" % (
        pid, status.generation, status.workers_wanted, status.loop, ", stopping" if status.stopping else "")]
    if status.listening:
        lines.append("listening on %s" % ", ".join(status.listening))
    if rollout.in_progress:
        rep = rollout.replacing
        lines.append("rolling restart in progress: %s, %d more waiting" % (
            "starting pid %d for slot %d (replaces pid %d)" % (rep.pid, rep.slot, rep.replaces)
            if rep else "between workers", rollout.waiting))
    else:
        lines.append("no rolling restart in progress")
    lines.append("restarts: " + ", ".join("%s %d" % item for item in status.restarts.items()))
    lines.append(" ".join(heading.rjust(width) for heading, width, _ in _COLUMNS))
    for row in status.workers:
        lines.append(" ".join(str(value(row)).rjust(width) for _, width, value in _COLUMNS))
    return "\n".join(lines)


def _bytes(n) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0


def _seconds(s) -> str:
    return "%.1fs" % s if s < 600 else "%dm" % (s // 60)
