"""Instructions per keep-alive request, counted by valgrind (stable where CPU time is not).

    python benchmarks/instructions.py --baseline-python PATH [--loops cython,python]

This machine is shared and its CPU time per request moves by 10-20% from run to run
(benchmarks/overhead.py shows it), too much to see a 3% cost. Valgrind's callgrind counts the
instructions a process executes, which is the same from run to run. Each variant serves
`bench_app:app` in-process through `Server.adopt()` over a socketpair: the client sends one
request, the connection handles the readiness event, the client reads the answer; the loop's
epoll wait is the only part of the worker not run. It runs N1 and N2 requests under callgrind
and reports (I(N2) - I(N1)) / (N2 - N1), so start-up costs cancel out. PYTHONHASHSEED is fixed,
since string hashes change dict probing; what still moves between runs (memory layout) is about 1%.

Variants: "before" (the fastcluster installed for --baseline-python), "off" (this fastcluster,
counters on the board, access log off) and "access" (this fastcluster, access log to a file in the
default format). Results go to benchmarks/results/instructions.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

DRIVER = r"""
import importlib, socket, sys
sys.path.insert(0, %(here)r)
from bench_app import app
from fastcluster.config import Config
loop, count, access = sys.argv[1], int(sys.argv[2]), sys.argv[3]
module = importlib.import_module("fastcluster._parser" if loop == "cython" else "fastcluster._parser_py")
listener = socket.socket(socket.AF_UNIX)
listener.bind("l.sock")
kwargs = {}
if access != "-":
    from fastcluster.logs import AccessLog
    kwargs["access_log"] = AccessLog(access)
server = module.Server(listener, app, Config(workers=1), **kwargs)
ours, client = socket.socketpair()
conn = server.adopt(ours)
request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
for _ in range(count):
    client.send(request)
    conn.on_readable()
    client.recv(65536)
"""


def callgrind(python, driver_text, args, env=None, options=()):
    """Run `driver_text` (a Python script, given `args`, in a temporary directory that it may use)
    under callgrind; the instructions it counted."""
    with tempfile.TemporaryDirectory() as tmp:
        driver = os.path.join(tmp, "driver.py")
        with open(driver, "w") as f:
            f.write(driver_text)
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s/cg.out" % tmp, *options,
                              python, driver, *[a.replace("{tmp}", tmp) for a in args]],
                             capture_output=True, text=True, timeout=1200, cwd=tmp,
                             env=dict(os.environ, PYTHONHASHSEED="0", **(env or {})))   # dict lookups the same each run
        match = re.search(r"Collected : (\d+)", out.stderr)
        if out.returncode != 0 or not match:
            raise RuntimeError("callgrind run failed: %s" % out.stderr[-2000:])
        return int(match.group(1))


def count_instructions(python, loop, requests, access):
    return callgrind(python, DRIVER % {"here": HERE},
                     [loop, str(requests), access if access == "-" else os.path.join("{tmp}", "a.log")])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-python", required=True)
    ap.add_argument("--loops", default="cython,python")
    ap.add_argument("--requests", default="2000,6000", help="N1,N2")
    args = ap.parse_args()
    n1, n2 = map(int, args.requests.split(","))
    variants = {"before": (args.baseline_python, "-"), "off": (sys.executable, "-"),
                "access": (sys.executable, "file")}
    results = {}
    for loop in args.loops.split(","):
        results[loop] = {}
        for name, (python, access) in variants.items():
            low = count_instructions(python, loop, n1, access)
            high = count_instructions(python, loop, n2, access)
            results[loop][name] = round((high - low) / (n2 - n1))
            print("%s %s: %d instructions per request" % (loop, name, results[loop][name]), flush=True)
        for name in variants:
            results[loop][name + "_ratio"] = round(results[loop][name] / results[loop]["before"], 4)
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": platform.python_version(),
              "requests": [n1, n2], "results": results}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "instructions.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = ["| loop | before | off | access log on | off / before | access / before |", "|---|---|---|---|---|---|"]
    for loop, r in results.items():
        lines.append("| %s | %d | %d | %d | %.3f | %.3f |" % (loop, r["before"], r["off"], r["access"], r["off_ratio"],
                                                             r["access_ratio"]))
    with open(os.path.join(RESULTS, "instructions.md"), "w") as f:
        f.write("Instructions per keep-alive request (callgrind, %s to %s requests in-process), run %s.\n\n%s\n"
                % (n1, n2, report["started"], "\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
