"""The ASGI workloads of `python benchmarks/compare.py --asgi`: 1 worker, pinned to CPU 0 with the
load generator on CPU 1, keep-alive, each server fresh for each run, rounds interleaved.

  hello       the raw ASGI hello (bench_asgi:app, 32-byte body), wrk -t1 -c100
  pipeline16  the same with 16 pipelined requests per write (pipeline.lua), wrk -t1 -c100
  fastapi     a FastAPI JSON endpoint (bench_fastapi:app), wrk -t1 -c100
  ws-echo     WebSocket echo of 16-byte text messages: 20 connections, each sends one and waits
              for its echo, over and over (ws_client.py, on CPU 1): messages/s
  file        a FastAPI endpoint answering with a 32 KiB file (FileResponse; bench_files:app),
              wrk -t1 -c100

The number that counts is the server's CPU per request (or message): the load generator is one
core, and a server faster than it cannot show that in req/s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = ["fastcluster-cython", "fastcluster-python", "fastcluster-cython-asyncio", "uvicorn-httptools",
           "granian-asgi", "gunicorn-asgi"]
WORKLOADS = ["hello", "pipeline16", "fastapi", "ws-echo", "file"]
APPS = {"hello": "bench_asgi:app", "pipeline16": "bench_asgi:app", "fastapi": "bench_fastapi:app",
        "ws-echo": "bench_asgi:app", "file": "bench_files:app"}


def commands(name, port, bin_, app):
    host = "127.0.0.1"
    if name.startswith("fastcluster-"):
        loop = name.split("-")[1]
        cmd = [os.path.join(bin_, "fastcluster"), "serve", app, "--workers", "1", "--loop", loop,
               "--bind", "%s:%d" % (host, port)]
        if name.endswith("-asyncio"):
            cmd += ["--event-loop", "asyncio"]
        return cmd
    if name == "uvicorn-httptools":
        return [os.path.join(bin_, "uvicorn"), app, "--host", host, "--port", str(port), "--http", "httptools",
                "--loop", "uvloop", "--ws", "websockets", "--no-access-log", "--log-level", "warning"]
    if name == "granian-asgi":
        return [os.path.join(bin_, "granian"), "--interface", "asgi", "--host", host, "--port", str(port),
                "--workers", "1", "--loop", "uvloop", "--log-level", "warning", app]
    if name == "gunicorn-asgi":        # gunicorn's own ASGI worker (gunicorn 24+), on uvloop when installed
        return [os.path.join(bin_, "gunicorn"), "-w", "1", "-k", "asgi", "--bind", "%s:%d" % (host, port),
                "--log-level", "warning", app]
    raise KeyError(name)


def run_ws(port, seconds, pin, python):
    cmd = [python, os.path.join(HERE, "ws_client.py"), str(port), str(seconds), "20"]
    if pin:
        cmd = ["taskset", "-c", "1"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"messages (\d+) errors (\d+)", out.stdout)
    if not m:
        raise RuntimeError("ws_client: %s %s" % (out.stdout[-300:], out.stderr[-300:]))
    count = int(m.group(1))
    return {"requests": count, "rps": round(count / seconds, 1), "errors": int(m.group(2)), "p50_ms": None,
            "p99_ms": None}


def markdown(report):
    return medians_markdown(report["medians"], WORKLOADS, SERVERS, (("uvicorn-httptools", "uvicorn"),
                            ("granian-asgi", "granian"), ("gunicorn-asgi", "gunicorn-asgi")), "req/s (messages/s)")


def medians_markdown(runs, order, servers, peers, rate):
    """A comparison's medians (`runs`: workload -> server -> medians), CPU and `rate` rows per
    workload in `order`, then fastcluster-cython's ratios to each of `peers`, (name, label) pairs
    (--asgi and --static)."""
    workloads = [w for w in order if w in runs]       # (a run of some rows: compare.py --workloads)
    lines = ["| workload | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]
    for workload in workloads:
        for what, key, fmt in (("server CPU us per request", "server_cpu_us_per_request", "%.1f"),
                               (rate, "rps", "%.0f")):
            cells = []
            for name in servers:
                r = runs[workload].get(name)
                cells.append(fmt % r[key] if r and r.get(key) is not None else "-")
            lines.append("| %s: %s | %s |" % (workload, what, " | ".join(cells)))
    lines += ["", "Ratios (fastcluster-cython against each peer, same run; CPU per request: lower is better):", "",
              "| workload | " + " | ".join("CPU/req vs " + label for _name, label in peers) + " | "
              + " | ".join("req/s vs " + label for _name, label in peers) + " |",
              "|---|" + "---|" * (2 * len(peers))]
    for workload in workloads:
        ours = runs[workload].get("fastcluster-cython")
        row = []
        for key in ("server_cpu_us_per_request", "rps"):
            for name, _label in peers:
                theirs = runs[workload].get(name)
                row.append("%.2f" % (ours[key] / theirs[key]) if ours and theirs and ours.get(key)
                           and theirs.get(key) else "-")
        lines.append("| %s | %s |" % (workload, " | ".join(row)))
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    sys.exit("run it through benchmarks/compare.py --asgi")
