"""Instructions per request over HTTP/2 and over HTTP/1.1, counted by callgrind, side by side.

    python benchmarks/h2_instructions.py [--baseline-python PATH --baseline-name NAME]

CPU time per request moves by 10-20% between runs on this shared machine; instruction counts do
not (benchmarks/instructions.py's reasoning). The compiled loop serves benchmarks/bench_app.py
in-process over a socketpair it adopts, and each round is one real turn of the worker's loop
(`Server._iterate`: the epoll wait, the events, the deferred app calls, the writes). The client
(the `h2` package's, for HTTP/2) runs outside the count (callgrind --toggle-collect on
Server._iterate). Workloads: "h1" one HTTP/1.1 keep-alive request a turn; "h2" one h2c stream a
turn; "h2x10" ten streams a turn (what h2load -m sends a busy worker). Each runs N1 and N2
requests; (I(N2) - I(N1)) / (N2 - N1) is reported, so the connection's set-up cancels out.
Only user-space instructions count: the system calls' cost in the kernel, which an HTTP/1.1
request pays per request and HTTP/2 streams share, is not in these numbers (compare.py --h2
measures CPU time with it). Results: benchmarks/results/h2-instructions.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)
from instructions import callgrind  # noqa: E402

DRIVER = r"""
import os, socket, sys
sys.path.insert(0, %(here)r)
from bench_app import app
from fastcluster._parser import Server
from fastcluster.config import Config
proto, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
listener = socket.socket(socket.AF_UNIX)
listener.bind(os.path.join(sys.argv[4], "l.sock"))
server = Server(listener, app, Config(workers=1))
ours, client = socket.socketpair()
server.adopt(ours)
if proto == "h1":
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n" * batch
    for _ in range(count // batch):
        client.sendall(request)
        server._iterate(0.0)
        got = 0
        while got < batch:
            got += client.recv(1 << 20).count(b"HTTP/1.1 200")
    sys.exit(0)
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, StreamEnded
c = H2Connection(H2Configuration(client_side=True))
c.initiate_connection()
client.sendall(c.data_to_send())
server._iterate(0.0)
c.receive_data(client.recv(65536))
client.sendall(c.data_to_send())
server._iterate(0.0)
head = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1:8000"), (":path", "/"),
        ("user-agent", "h2load nghttp2/1.52.0")]
for _ in range(count // batch):
    for _ in range(batch):
        c.send_headers(c.get_next_available_stream_id(), head, end_stream=True)
    client.sendall(c.data_to_send())
    server._iterate(0.0)
    ended = 0
    while ended < batch:
        for event in c.receive_data(client.recv(1 << 20)):
            if isinstance(event, StreamEnded):
                ended += 1
            elif isinstance(event, DataReceived):
                c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    data = c.data_to_send()
    if data:
        client.sendall(data)
        server._iterate(0.0)
"""

WORKLOADS = {"h1": ("h1", 1), "h2": ("h2", 1), "h2x10": ("h2", 10)}
COUNTS = (1000, 3000)


def count(python, workload):
    proto, batch = WORKLOADS[workload]
    options = ("--toggle-collect=__pyx_f_*Server__iterate",)   # (the C body only: the wrapper would toggle it off)
    return [callgrind(python, DRIVER % {"here": HERE}, [proto, str(n), str(batch), "{tmp}"], None, options)
            for n in COUNTS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-python", default=None, help="also count the fastcluster installed for this python")
    ap.add_argument("--baseline-name", default="before", help="what the baseline is (a commit), for the report")
    args = ap.parse_args()
    pythons = {"now": sys.executable}
    if args.baseline_python:
        pythons = {args.baseline_name: args.baseline_python, **pythons}
    results = {}
    for name, python in pythons.items():
        results[name] = {}
        for workload in WORKLOADS:
            low, high = count(python, workload)
            results[name][workload] = round((high - low) / (COUNTS[1] - COUNTS[0]))
            print("%s %s: %d instructions a request" % (name, workload, results[name][workload]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
              "machine": platform.machine(), "commit": commit, "requests": list(COUNTS), "results": results}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "h2-instructions.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = ["| build | HTTP/1.1, 1 a turn | h2c, 1 stream a turn | h2c, 10 streams a turn | h2c x10 / HTTP/1.1 |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append("| %s | %d | %d | %d | %.2f |" % (name, r["h1"], r["h2"], r["h2x10"], r["h2x10"] / r["h1"]))
    with open(os.path.join(RESULTS, "h2-instructions.md"), "w") as f:
        f.write("Instructions per request (callgrind, %d to %d requests in-process, user space only), run %s at %s,"
                " Python %s.\nCommand: `python benchmarks/h2_instructions.py%s`\n\n%s\n"
                % (COUNTS[0], COUNTS[1], report["started"], commit, report["python"],
                   " --baseline-python %s --baseline-name %s" % (args.baseline_python, args.baseline_name)
                   if args.baseline_python else "", "\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
