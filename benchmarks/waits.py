"""The waiting workloads of `python benchmarks/compare.py --waits`: apps that wait, 2 workers each.

  head-of-line  2 keep-alive clients loop a 1 s endpoint while 10 keep-alive clients loop a fast
                one (two wrk processes at once): the fast clients' p50/p99, errors of both
  wait-20ms     an app that waits 20 ms per request (time.sleep, like a query), wrk -t1 -c50
                keep-alive: req/s (the limit is 50 / 0.02 = 2,500), p50/p99
  trickle       2 clients send Expect: 100-continue, then their body 1 byte every 0.5 s, to an app
                that reads wsgi.input; meanwhile wrk -c8 sends GET / on a new connection per
                request: those requests' p50/p99/max, errors, and whether the uploads were answered
  cpu-bound     the seed's experiment with fastcluster's defaults: 5 ms of CPU per request
                (bench_app, BENCH_WORK_MS=5), wrk -c50, 1 worker and then 2: the ratio of req/s

The servers serve bench_waits:app. Everything runs on 127.0.0.1 and is bounded in time.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def commands(name, port, bin_, workers="2", app="bench_waits:app"):
    """The server commands of the waiting workloads; `bin_` is the peers' venv bin."""
    host = "127.0.0.1"
    if name == "fastcluster-cython":
        return [os.path.join(bin_, "fastcluster"), "serve", app, "--workers", workers, "--loop", "cython",
                "--bind", "%s:%d" % (host, port)]
    if name == "fastcluster-python":
        return [os.path.join(bin_, "fastcluster"), "serve", app, "--workers", workers, "--loop", "python",
                "--bind", "%s:%d" % (host, port)]
    if name.startswith("gunicorn-gthread"):       # gunicorn-gthread-4, gunicorn-gthread-8: --threads
        return [os.path.join(bin_, "gunicorn"), "-w", workers, "-k", "gthread", "--threads", name.rsplit("-", 1)[1],
                "--bind", "%s:%d" % (host, port), "--log-level", "warning", "bench_waits:app"]
    if name == "granian-wsgi":
        return [os.path.join(bin_, "granian"), "--interface", "wsgi", "--host", host, "--port", str(port),
                "--workers", workers, "--no-ws", "--log-level", "warning", "bench_waits:app"]
    raise KeyError(name)


# (workload, servers): gunicorn gthread with the threads the issue used, 4 (8 for the 20 ms app)
PLAN = (
    ("head-of-line", ("fastcluster-cython", "fastcluster-python", "gunicorn-gthread-4", "granian-wsgi")),
    ("wait-20ms", ("fastcluster-cython", "fastcluster-python", "gunicorn-gthread-8", "granian-wsgi")),
    ("trickle", ("fastcluster-cython", "fastcluster-python", "gunicorn-gthread-4", "granian-wsgi")),
    ("cpu-bound", ("fastcluster-cython", "fastcluster-python")),
)


def _wrk(port, path, connections, seconds, extra=()):
    out = subprocess.run(["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--latency", *extra,
                          "http://127.0.0.1:%d%s" % (port, path)], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    result = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
              "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(r"\s%s(?:\.000)?%%\s+([\d.]+)(us|ms|s)\b" % pct, out)
        result["p%s_ms" % pct] = round(_ms(*m.groups()), 3) if m else None
    m = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    result["max_ms"] = round(_ms(*m.groups()), 3) if m else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return result


def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def head_of_line(port, seconds):
    slow = {}
    runner = threading.Thread(target=lambda: slow.update(_wrk(port, "/sleep/1000", 2, seconds)))
    runner.start()
    fast = _wrk(port, "/", 10, seconds)
    runner.join(seconds + 60)
    return {"fast": fast, "slow": slow, "errors": fast["errors"] + slow.get("errors", 0)}


def wait_20ms(port, seconds):
    return _wrk(port, "/sleep/20", 50, seconds)


def _trickle(port, seconds, answers):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=seconds + 30) as sock:
            size = int(seconds / 0.5) + 2
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                         % size)
            interim = sock.recv(100)
            for _ in range(size):
                sock.sendall(b"x")
                time.sleep(0.5)
            data = sock.recv(200) if interim.startswith(b"HTTP/1.1 100") else interim
            answers.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
    except OSError as exc:
        answers.append("failed: %s" % exc)


def trickle(port, seconds):
    answers = []
    uploads = [threading.Thread(target=_trickle, args=(port, seconds, answers)) for _ in range(2)]
    for t in uploads:
        t.start()
    time.sleep(0.5)          # the uploads are under way
    others = _wrk(port, "/", 8, max(1, int(seconds) - 1), ("-H", "Connection: close"))
    for t in uploads:
        t.join(seconds + 60)
    others["uploads"] = answers
    others["uploads_answered"] = sum(1 for a in answers if " 200 " in a + " ")
    return others


WORKLOADS = {"head-of-line": head_of_line, "wait-20ms": wait_20ms, "trickle": trickle}   # cpu-bound: compare.py


def markdown(runs):
    lines = []
    hol = runs.get("head-of-line", {})
    if hol:
        lines += ["## Head-of-line: 2 keep-alive clients loop a 1 s endpoint, 10 loop a fast one (2 workers)", "",
                  "| server | fast req/s | fast p50 ms | fast p99 ms | fast max ms | slow requests | errors |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in hol.items():
            if "error" in r:
                lines.append("| %s | failed: %s | | | | | |" % (name, r["error"][:80]))
                continue
            lines.append("| %s | %s | %s | %s | %s | %s | %d |" % (
                name, format(int(r["fast"]["rps"]), ","), r["fast"]["p50_ms"], r["fast"]["p99_ms"],
                r["fast"]["max_ms"], r["slow"].get("requests"), r["errors"]))
        lines.append("")
    w20 = runs.get("wait-20ms", {})
    if w20:
        lines += ["## An app that waits 20 ms per request, wrk -t1 -c50 keep-alive (2 workers; limit 2,500 req/s)", "",
                  "| server | req/s | p50 ms | p99 ms | max ms | errors |", "|---|---|---|---|---|---|"]
        for name, r in w20.items():
            if "error" in r:
                lines.append("| %s | failed: %s | | | | |" % (name, r["error"][:80]))
                continue
            lines.append("| %s | %s | %s | %s | %s | %d |" % (name, format(int(r["rps"]), ","), r["p50_ms"],
                                                            r["p99_ms"], r["max_ms"], r["errors"]))
        lines.append("")
    tr = runs.get("trickle", {})
    if tr:
        lines += ["## 2 trickling 100-continue uploads; others GET / on new connections (wrk -c8, 2 workers)", "",
                  "| server | others answered | req/s | p50 ms | p99 ms | max ms | errors | uploads answered |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in tr.items():
            if "error" in r:
                lines.append("| %s | failed: %s | | | | | | |" % (name, r["error"][:80]))
                continue
            lines.append("| %s | %s | %s | %s | %s | %s | %d | %d of 2 |" % (
                name, format(r["requests"], ","), format(int(r["rps"]), ","), r["p50_ms"], r["p99_ms"], r["max_ms"],
                r["errors"], r["uploads_answered"]))
        lines.append("")
    cpu = runs.get("cpu-bound", {})
    if cpu:
        lines += ["## The seed's CPU-bound experiment with the defaults: 5 ms of CPU per request, wrk -c50", "",
                  "| server | 1 worker req/s | 2 workers req/s | 2/1 | p99 ms, 1 worker | p99 ms, 2 workers |",
                  "|---|---|---|---|---|---|"]
        for name, r in cpu.items():
            if "error" in r:
                lines.append("| %s | failed: %s | | | | |" % (name, r["error"][:80]))
                continue
            lines.append("| %s | %.1f | %.1f | %.2f | %s | %s |" % (name, r["1"]["rps"], r["2"]["rps"],
                                                                    r["2"]["rps"] / r["1"]["rps"], r["1"]["p99_ms"],
                                                                    r["2"]["p99_ms"]))
        lines.append("")
    return "\n".join(lines)
