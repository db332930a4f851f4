"""The TLS workloads of `python benchmarks/compare.py --tls`: 1 worker, pinned to CPU 0 with the
load generator on CPU 1, each server fresh for each run, rounds interleaved, the test certificate
(tests/certs: RSA 2048, TLS 1.3 as the client and server agree).

  keepalive   the 32-byte hello over HTTPS, wrk -t1 -c100 keep-alive (the handshakes are a few
              hundred of the requests: this is the cost of TLS records, not of handshakes)
  pipeline16  the same with 16 pipelined requests per write (pipeline.lua)

Peers: gunicorn's gthread worker (its sync worker closes every connection, so it cannot keep one
alive) with --certfile/--keyfile, uvicorn (httptools, uvloop) with --ssl-certfile/--ssl-keyfile on
the ASGI hello, and granian's WSGI with --ssl-certificate/--ssl-keyfile.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(os.path.dirname(HERE), "tests", "certs")
CERT, KEY = os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key")
SERVERS = ["fastcluster-cython", "fastcluster-python", "gunicorn-gthread", "uvicorn-httptools", "granian-wsgi"]
WORKLOADS = ["keepalive", "pipeline16"]


def command(name, port, bin_, workload):
    host = "127.0.0.1"
    if name.startswith("fastcluster-"):
        return [os.path.join(bin_, "fastcluster"), "serve", "bench_app:app", "--workers", "1", "--loop",
                name.split("-")[1], "--bind", "%s:%d" % (host, port), "--certfile", CERT, "--keyfile", KEY]
    if name == "gunicorn-gthread":
        return [os.path.join(bin_, "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "8", "--keep-alive", "75",
                "--bind", "%s:%d" % (host, port), "--certfile", CERT, "--keyfile", KEY, "--log-level", "warning",
                "bench_app:app"]
    if name == "uvicorn-httptools":
        return [os.path.join(bin_, "uvicorn"), "bench_asgi:app", "--host", host, "--port", str(port), "--http",
                "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
                "--ssl-certfile", CERT, "--ssl-keyfile", KEY]
    if name == "granian-wsgi":
        return [os.path.join(bin_, "granian"), "--interface", "wsgi", "--host", host, "--port", str(port),
                "--workers", "1", "--no-ws", "--log-level", "warning", "--ssl-certificate", CERT,
                "--ssl-keyfile", KEY, "bench_app:app"]
    raise KeyError(name)


def markdown(report):
    runs = report["medians"]
    lines = ["| workload | " + " | ".join(SERVERS) + " |", "|---|" + "---|" * len(SERVERS)]
    for workload in WORKLOADS:
        for what, key, fmt in (("server CPU us per request", "server_cpu_us_per_request", "%.1f"),
                               ("req/s", "rps", "%.0f"), ("errors", "errors", "%d")):
            cells = []
            for name in SERVERS:
                value = runs.get(workload, {}).get(name, {}).get(key)
                cells.append("-" if value is None else fmt % value)
            lines.append("| %s: %s | %s |" % (workload, what, " | ".join(cells)))
    base = runs.get("keepalive", {}).get("fastcluster-cython", {}).get("server_cpu_us_per_request")
    if base:
        lines += ["", "Server CPU per keep-alive request, relative to fastcluster-cython (higher: costs more):", ""]
        for name in SERVERS[1:]:
            other = runs.get("keepalive", {}).get(name, {}).get("server_cpu_us_per_request")
            if other:
                lines.append("- %s: %.2fx" % (name, other / base))
    return "\n".join(lines) + "\n"
