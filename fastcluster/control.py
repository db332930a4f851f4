"""`fastcluster reload|stop|status --pid FILE`: the signals and the status table, for operators."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from .errors import EXIT_USAGE


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
    return _status(pid, args.pid + ".json")


def _status(pid, path):
    try:
        with open(path) as f:
            status = json.load(f)
    except (FileNotFoundError, ValueError):
        return _fail("no status in %s yet" % path)
    rollout = status["rollout"]
    print("master %d: %d workers wanted, loop %s%s%s" % (
        pid, status["workers_wanted"], status["loop"],
        ", rolling restart in progress (%d waiting)" % rollout["waiting"] if rollout["in_progress"] else "",
        ", stopping" if status["stopping"] else ""))
    print("%-6s %-8s %-9s %10s %10s %10s" % ("slot", "pid", "state", "age (s)", "requests", "beat (s)"))
    for w in status["workers"]:
        print("%-6d %-8d %-9s %10.1f %10d %10.1f" % (w["slot"], w["pid"], w["state"], w["age"], w["requests"],
                                                      w["last_heartbeat"]))
    return 0
