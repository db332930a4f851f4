"""Instructions per keep-alive request and per new connection, counted by callgrind.

    python benchmarks/speed_instructions.py [--baseline-python PATH [--baseline-pythonpath TREE]]

The compiled loop in-process, as in benchmarks/instructions.py (whose reasoning applies: counts
are stable where CPU time is not): "keepalive" sends one request at a time over one adopted
socketpair; "connection" accepts a TCP connection on loopback, adopts it, answers one HTTP/1.0
request with the three headers ab sends, and closes, so the connection's set-up and tear-down
are in the count. Only the server's calls are counted (callgrind --toggle-collect on
Server.adopt and Connection.on_readable; the client's Python code is not). Each is run for N1
and N2 iterations and (I(N2) - I(N1)) / (N2 - N1) reported.

Variants: "before" (the fastcluster installed for --baseline-python, if given), "httptools"
(this one with FASTCLUSTER_PARSER=httptools: httptools' callbacks) and "llhttp" (this one,
driving llhttp directly). Results: benchmarks/results/speed-instructions.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)
from instructions import DRIVER as KEEPALIVE_DRIVER, callgrind  # noqa: E402

# "keepalive" is instructions.py's driver; "connection" is this one
CONNECTION_DRIVER = r"""
import importlib, socket, sys
sys.path.insert(0, %(here)r)
from bench_app import app
from fastcluster.config import Config
count = int(sys.argv[1])
module = importlib.import_module("fastcluster._parser")
listener = socket.socket(socket.AF_INET)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
server = module.Server(listener, app, Config(workers=1))
request = b"GET / HTTP/1.0\r\nHost: 127.0.0.1:8000\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n"
address = listener.getsockname()
for _ in range(count):
    client = socket.create_connection(address)
    ours, _peer = listener.accept()
    conn = server.adopt(ours)
    client.sendall(request)
    conn.on_readable()
    client.recv(65536)
    client.close()
"""

COUNTS = {"keepalive": (2000, 6000), "connection": (1000, 3000)}


def count(python, workload, n, env):
    options = ("--toggle-collect=*Server_*adopt", "--toggle-collect=*HttpConnection_*on_readable")
    if workload == "keepalive":
        return callgrind(python, KEEPALIVE_DRIVER % {"here": HERE}, ["cython", str(n), "-"], env, options)
    return callgrind(python, CONNECTION_DRIVER % {"here": HERE}, [str(n)], env, options)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-python", default=None)
    ap.add_argument("--baseline-name", default="", help="what the baseline is (a commit), for the report")
    ap.add_argument("--baseline-pythonpath", default=None,
                    help="a tree built in place to count as the baseline (PYTHONPATH for --baseline-python)")
    args = ap.parse_args()
    variants = {"httptools": (sys.executable, {"FASTCLUSTER_PARSER": "httptools"}),
                "llhttp": (sys.executable, {"FASTCLUSTER_PARSER": ""})}
    if args.baseline_python:
        base_env = {"PYTHONPATH": args.baseline_pythonpath} if args.baseline_pythonpath else {}
        variants = {"before": (args.baseline_python, base_env), **variants}
    results = {}
    for workload, (n1, n2) in COUNTS.items():
        results[workload] = {}
        for name, (python, env) in variants.items():
            low, high = count(python, workload, n1, env), count(python, workload, n2, env)
            results[workload][name] = round((high - low) / (n2 - n1))
            print("%-10s %-9s %6d instructions" % (workload, name, results[workload][name]), flush=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
              "machine": "%d CPUs, %s" % (os.cpu_count(), platform.machine()), "counts": COUNTS, "results": results,
              "baseline": args.baseline_name}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "speed-instructions.json"), "w") as f:
        json.dump(report, f, indent=2)
    names = list(variants)
    lines = ["| workload | " + " | ".join(names) + " | llhttp / " + names[0] + " |",
             "|---|" + "---|" * (len(names) + 1)]
    for workload, row in results.items():
        lines.append("| %s | %s | %.3f |" % (workload, " | ".join("%d" % row[n] for n in names),
                                             row["llhttp"] / row[names[0]]))
    with open(os.path.join(RESULTS, "speed-instructions.md"), "w") as f:
        f.write("Instructions per keep-alive request and per new connection (callgrind, in-process, the server's "
                "calls only; `python benchmarks/speed_instructions.py%s`), run %s, Python %s.%s\n\n%s\n"
                % (" --baseline-python ..." if args.baseline_python else "", report["started"], report["python"],
                   " before: %s." % args.baseline_name if args.baseline_name else "", "\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
