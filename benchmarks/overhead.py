"""What a feature costs: keep-alive CPU per request of server variants, side by side.

    python benchmarks/overhead.py --baseline-python PATH [--rounds 5] [--seconds 5] [--loops cython,python]
    python benchmarks/overhead.py --variant "threads-1=--threads 1" --variant "default=" [--name NAME] ...

PATH is a Python with an older fastcluster installed (the "before"), for example:

    git worktree add /tmp/fc-base e5dc4d3 && python -m venv /tmp/fc-base-venv \\
        && /tmp/fc-base-venv/bin/pip install /tmp/fc-base

For each loop it runs three servers with 1 worker pinned to CPU 0, wrk -t1 -c100 keep-alive pinned
to CPU 1, in interleaved rounds (so drift on a shared machine hits all variants alike):

  before   the baseline interpreter's fastcluster
  off      this fastcluster, access log off (board counters always on; /metrics off)
  access   this fastcluster with --access-log FILE (default format) and --metrics-bind

and reports the median worker+master CPU microseconds per request and its ratio to "before".
With --variant NAME=ARGS (repeatable) it runs those instead, each this fastcluster with the extra
command-line ARGS, and the first variant is the one the others are compared with.
Results go to benchmarks/results/overhead-LOOPS.json and .md (LOOPS as given, e.g.
overhead-cython.md), or overhead-NAME with --name. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare import RESULTS, Running, free_port, run_wrk  # noqa: E402


def variants(baseline, loop, given=()):
    def serve(python, *extra):
        def command(port, tmp):
            return [python, "-m", "fastcluster", "serve", "bench_app:app", "--workers", "1", "--loop", loop,
                    "--bind", "127.0.0.1:%d" % port, *[e.format(tmp=tmp, free=free_port()) for e in extra]]
        return command
    if given:
        return {name: serve(sys.executable, *args.split()) for name, args in given}
    return {
        "before": serve(baseline),
        "off": serve(sys.executable),
        "access": serve(sys.executable, "--access-log", "{tmp}/access.log", "--metrics-bind", "127.0.0.1:{free}"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-python")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="a variant: this fastcluster with extra command-line ARGS (repeatable; the first is the base)")
    ap.add_argument("--name", help="results file stem (default: overhead-LOOPS)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--loops", default="cython,python")
    args = ap.parse_args()
    given = [tuple(v.split("=", 1)) for v in args.variant]
    if not given and not args.baseline_python:
        ap.error("--baseline-python is needed without --variant")
    results = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for loop in args.loops.split(","):
        table = variants(args.baseline_python, loop, given)
        runs = {name: [] for name in table}
        for round_ in range(args.rounds):
            for name, command in table.items():
                server = Running("%s-%s" % (name, loop), 1, True, command=command)
                try:
                    cpu0 = server.cpu_seconds()
                    result = run_wrk(server.port, args.seconds, True)
                    cpu = server.cpu_seconds() - cpu0
                    if name == "access":   # the log must really hold a line per request
                        result["logged"] = _lines(os.path.join(server.tmp, "access.log"))
                finally:
                    server.stop()
                result["us"] = cpu / max(result["requests"], 1) * 1e6
                runs[name].append(result)
                print("%s %s round %d: %.2f us/request, %d req/s, %d errors%s" % (
                    loop, name, round_ + 1, result["us"], result["rps"], result["errors"],
                    ", %d lines logged" % result["logged"] if "logged" in result else ""), flush=True)
        base = statistics.median(r["us"] for r in runs[next(iter(table))])
        results[loop] = {name: {"median_us": round(statistics.median(r["us"] for r in rs), 2),
                                "ratio": round(statistics.median(r["us"] for r in rs) / base, 3),
                                "median_rps": round(statistics.median(r["rps"] for r in rs)),
                                "runs_us": [round(r["us"], 2) for r in rs],
                                "errors": sum(r["errors"] for r in rs)}
                         for name, rs in runs.items()}
    report = {"started": started, "machine": "%s, %d CPUs" % (platform.processor() or platform.machine(),
                                                             os.cpu_count()),
              "python": platform.python_version(), "rounds": args.rounds, "seconds": args.seconds,
              "variants": {name: args_ for name, args_ in given} or None,
              "results": results}
    os.makedirs(RESULTS, exist_ok=True)
    stem = args.name or "overhead-%s" % args.loops.replace(",", "-")
    with open(os.path.join(RESULTS, stem + ".json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = ["| loop | variant | CPU us/request (median) | vs %s | req/s (median) | runs (us) |"
             % (given[0][0] if given else "before"),
             "|---|---|---|---|---|---|"]
    for loop, table in results.items():
        for name, r in table.items():
            lines.append("| %s | %s | %.2f | %.3f | %d | %s |" % (loop, name, r["median_us"], r["ratio"],
                                                                   r["median_rps"], ", ".join(map(str, r["runs_us"]))))
    with open(os.path.join(RESULTS, stem + ".md"), "w") as f:
        f.write("Run %s, `%s`: %s rounds of %d s, wrk -t1 -c100 keep-alive, 1 worker pinned.\n%s\n\n%s\n"
                % (started, " ".join(["python", "benchmarks/overhead.py"] + [shlex.quote(a) for a in sys.argv[1:]]),
                   args.rounds, args.seconds, report["machine"] + ", Python " + report["python"],
                   "\n".join(lines)))
    print("\n".join(lines))


def _lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    main()
