"""Worker memory per idle connection, HTTP/2 against HTTP/1.1: one worker of each loop, N clients
that each open a connection and make one request (HTTP/1.1 keep-alive; HTTP/2 with prior knowledge,
its SETTINGS exchanged), then stay idle; the worker's RSS before and after, per connection.

    python benchmarks/h2_memory.py [--connections 500]   -> results/h2-memory.md
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time

import h2.config
import h2.connection

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from helpers import Server, rss_kib  # noqa: E402


def _h1(server):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"\n") or b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    return sock


def _h2(server):
    sock = socket.create_connection((server.host, server.port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")],
                      end_stream=True)
    sock.sendall(conn.data_to_send())
    ended = False
    while not ended:
        for event in conn.receive_data(sock.recv(65536)):
            ended = ended or type(event).__name__ == "StreamEnded"
        sock.sendall(conn.data_to_send())
    return sock


def measure(loop, opener, count):
    with Server("bench_app:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", loop,
                env={"PYTHONPATH": HERE}) as server:
        pid = server.worker_pids[0]
        warm = [opener(server) for _ in range(20)]       # (the first connections load what any needs)
        for sock in warm:
            sock.close()
        time.sleep(0.5)
        before = rss_kib(pid)
        socks = [opener(server) for _ in range(count)]
        time.sleep(0.5)
        after = rss_kib(pid)
        for sock in socks:
            sock.close()
    return before, after, (after - before) / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=500)
    args = ap.parse_args()
    rows = []
    for loop in ("cython", "python"):
        for name, opener in (("HTTP/1.1", _h1), ("HTTP/2 (h2c)", _h2)):
            before, after, per = measure(loop, opener, args.connections)
            rows.append((loop, name, before, after, per))
            print("%-7s %-13s RSS %6d -> %6d KiB: %.1f KiB per idle connection" % (loop, name, before, after, per))
    engine = subprocess.run([sys.executable, "-c", "from fastcluster import h2engine; print(h2engine.engine_name())"],
                            capture_output=True, text=True).stdout.strip()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "h2-memory.md"), "w") as f:
        f.write("# Worker memory per idle connection\n\n`python benchmarks/h2_memory.py --connections %d`, %s, "
                "%d CPUs, Linux %s, Python %s; HTTP/2 of the compiled loop by %s (the pure-Python loop: h2).\n\n"
                % (args.connections, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.cpu_count(),
                   platform.release(), platform.python_version(), engine))
        f.write("| loop | protocol | worker RSS before (KiB) | after (KiB) | KiB per idle connection |\n"
                "|---|---|---|---|---|\n")
        for loop, name, before, after, per in rows:
            f.write("| %s | %s | %d | %d | %.1f |\n" % (loop, name, before, after, per))


if __name__ == "__main__":
    main()
