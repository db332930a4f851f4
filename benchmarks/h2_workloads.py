"""The HTTP/2 workloads of `python benchmarks/compare.py --h2`: 1 worker pinned to CPU 0, h2load on
CPU 1, each server fresh for each run, rounds interleaved, medians kept (compare.py's _rounds).

  h2c-hello     the 32-byte hello over h2c (prior knowledge), h2load -c16 -m100
  h2c-json      TechEmpower's json test ({"message": "Hello, World!"}) the same way
  h2-tls-hello  the hello over TLS, h2 by ALPN (tests/certs), h2load -c16 -m100
  h1-keepalive  the hello over HTTP/1.1 keep-alive (h2load --h1 -c16 -m1): fastcluster's own
                HTTP/1.1, the base of the target "HTTP/2 at most 1.5x HTTP/1.1's CPU per request"

Peers: granian (Rust hyper's HTTP/2; WSGI), hypercorn (the h2 package; ASGI), gunicorn 27 (its beta
HTTP/2: --http-protocols h2,h1 and --http2-cleartext for h2c; gthread worker).
"""

from __future__ import annotations

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(os.path.dirname(HERE), "tests", "certs")
CERT, KEY = os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key")
SERVERS = ["fastcluster-cython", "fastcluster-python", "granian-wsgi", "hypercorn", "gunicorn-h2"]
WORKLOADS = ["h2c-hello", "h2c-json", "h2-tls-hello", "h1-keepalive"]
TLS = ("h2-tls-hello",)
APPS = {"h2c-hello": ("bench_app:app", "bench_asgi:app"), "h2c-json": ("bench_json:app", "bench_json:asgi"),
        "h2-tls-hello": ("bench_app:app", "bench_asgi:app"), "h1-keepalive": ("bench_app:app", "bench_asgi:app")}
H2_PEERS = ("granian-wsgi", "hypercorn", "gunicorn-h2")


def command(name, port, bin_, workload):
    host = "127.0.0.1"
    wsgi, asgi = APPS[workload]
    tls = workload in TLS
    if name.startswith("fastcluster-"):
        return [os.path.join(bin_, "fastcluster"), "serve", wsgi, "--workers", "1", "--loop", name.split("-")[1],
                "--bind", "%s:%d" % (host, port)] + (["--certfile", CERT, "--keyfile", KEY] if tls else [])
    if workload == "h1-keepalive":
        return None                     # (the HTTP/1.1 base is fastcluster's own)
    if name == "granian-wsgi":
        return [os.path.join(bin_, "granian"), "--interface", "wsgi", "--host", host, "--port", str(port),
                "--workers", "1", "--no-ws", "--log-level", "warning", "--http", "auto", wsgi] + (
                    ["--ssl-certificate", CERT, "--ssl-keyfile", KEY] if tls else [])
    if name == "hypercorn":
        return [os.path.join(bin_, "hypercorn"), "--bind", "%s:%d" % (host, port), "--workers", "1",
                "--log-level", "warning", asgi] + (["--certfile", CERT, "--keyfile", KEY] if tls else [])
    if name == "gunicorn-h2":
        return [os.path.join(bin_, "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "8", "--bind",
                "%s:%d" % (host, port), "--log-level", "warning", "--http-protocols", "h2,h1", wsgi] + (
                    ["--certfile", CERT, "--keyfile", KEY] if tls else ["--http2-cleartext", "prior-knowledge"])
    raise KeyError(name)


def run_h2load(port, seconds, workload, load):
    """h2load against the server (on CPU 1 through compare.py's _load): req/s and failures."""
    scheme = "https" if workload in TLS else "http"
    if workload == "h1-keepalive":
        args = ["--h1", "-c", "16", "-m", "1"]
    else:
        args = ["-c", "16", "-m", "100"]
    path = "/json" if workload == "h2c-json" else "/"
    out = load(["h2load", *args, "-D", str(seconds), "%s://127.0.0.1:%d%s" % (scheme, port, path)])
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored", out)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if done is None or rps is None:
        raise RuntimeError("h2load: %s" % out[-400:])
    proto = re.search(r"Application protocol: (\S+)", out)
    return {"requests": int(done.group(4)), "rps": float(rps.group(1)),
            "errors": int(done.group(5)) + int(done.group(6)), "protocol": proto.group(1) if proto else "?"}


def markdown(report):
    runs = report["medians"]
    lines = ["| workload | " + " | ".join(SERVERS) + " |", "|---|" + "---|" * len(SERVERS)]
    for workload in WORKLOADS:
        for what, key, fmt in (("server CPU us per request", "server_cpu_us_per_request", "%.1f"),
                               ("req/s", "rps", "%.0f"), ("errors", "errors", "%d"),
                               ("worker RSS MiB", "rss_mib", "%.1f")):
            cells = []
            for name in SERVERS:
                value = runs.get(workload, {}).get(name, {}).get(key)
                cells.append(fmt % value if value is not None else "-")
            lines.append("| %s: %s | %s |" % (workload, what, " | ".join(cells)))
    ours = runs.get("h1-keepalive", {}).get("fastcluster-cython", {}).get("server_cpu_us_per_request")
    h2 = runs.get("h2c-hello", {}).get("fastcluster-cython", {}).get("server_cpu_us_per_request")
    if ours and h2:
        lines.append("")
        lines.append("fastcluster-cython: HTTP/2 (h2c hello) CPU per request / its HTTP/1.1 keep-alive: %.2fx "
                     "(target: at most 1.5x)." % (h2 / ours))
    for peer in H2_PEERS:
        theirs = runs.get("h2c-hello", {}).get(peer, {}).get("server_cpu_us_per_request")
        if h2 and theirs:
            lines.append("fastcluster-cython / %s, h2c hello CPU per request: %.2f." % (peer, h2 / theirs))
    return "\n".join(lines) + "\n"
