"""Where the time goes for apps that make many short waits (issue 31): one app, a few server settings.

    flock /work/load.lock python benchmarks/shortwaits.py [--apps flask] [--tests db,queries]
        [--config NAME=SERVER[:ARGS]]... [--seconds 5] [--perf-stat] [--strace] [--perf-record DIR] [--pyspy DIR]

Starts a throwaway PostgreSQL cluster (realapps.py's), then for each --config (SERVER: fastcluster,
gunicorn-sync, gunicorn-gthread or granian; ARGS: extra arguments for the server, e.g.
`fc-t4=fastcluster:--threads 4`; a word env:NAME=VALUE sets the server's environment instead) serves
the app at 2 workers from this Python's environment, fastcluster from this tree (its in-place build:
`python setup.py build_ext --inplace` first; PYTHONPATH=<tree>:<realapps> unless a config sets
PYTHONPATH itself, as `env:PYTHONPATH=<another tree>:<realapps>` does to measure another build) and
runs, per test, `wrk -t1 -c64 --latency` for
--seconds after a 1 s warm-up (realapps.py's load), reading from /proc: the server's CPU (all its
processes) and the context switches of every thread of every process (voluntary and not), and the
database's CPU. Per request: CPU ms, context switches.

Optional passes, each a separate wrk run of --seconds with the tool attached to the workers:
--perf-stat: `perf stat -e context-switches,cpu-migrations,syscalls:sys_enter_futex[,GIL probes]`
  on every worker (the GIL probes are probe_libpython3:take_gil / drop_gil when `perf probe` has
  defined them: `perf probe -x .../libpython3.11.so.1.0 take_gil`), counts per request;
--strace: `strace -c -f -e trace=futex` on every worker (strace slows the server: its req/s is not
  comparable, its calls per request are);
--perf-record DIR: `perf record -g` on the workers, and the top of `perf report` by self time;
--pyspy DIR: `py-spy record --native --format raw` on one worker, and the top frames by self samples.

Traffic goes to 127.0.0.1 only; the cluster and every server are stopped and removed at the end.
Run it under `flock /work/load.lock` on a shared machine so that no two load tests overlap.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import realapps  # noqa: E402
from compare import ROOT, Running, log, run_wrk  # noqa: E402

BIN = os.path.dirname(sys.executable)
PERF_EVENTS = ["context-switches", "cpu-migrations", "syscalls:sys_enter_futex"]
GIL_PROBES = ["probe_libpython3:take_gil", "probe_libpython3:drop_gil"]


def command(server, extra, interface, app, port):
    host, workers = "127.0.0.1", str(realapps.WORKERS)
    if server == "fastcluster":
        return [os.path.join(BIN, "fastcluster"), "serve", app, "--workers", workers, "--bind",
                "%s:%d" % (host, port), *extra]
    if server in ("gunicorn-sync", "gunicorn-gthread"):
        kind = ["-k", "sync"] if server == "gunicorn-sync" else ["-k", "gthread"]
        return [os.path.join(BIN, "gunicorn"), "-w", workers, *kind, "--bind", "%s:%d" % (host, port),
                "--log-level", "warning", *extra, app]
    if server == "granian":
        return [os.path.join(BIN, "granian"), "--interface", interface, "--host", host, "--port", str(port),
                "--workers", workers, "--log-level", "warning", *extra, app]
    raise KeyError(server)


def thread_stats(pids, by_name=None):
    """(voluntary, involuntary context switches, threads) summed over every thread of `pids`; with
    `by_name` (a Counter), each thread's voluntary switches are added to its name's count too."""
    vol = invol = threads = 0
    for pid in pids:
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tasks:
            try:
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    text = f.read()
            except OSError:
                continue
            threads += 1
            v = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))
            vol += v
            if by_name is not None:
                by_name[re.search(r"^Name:\s+(.*)$", text, re.M).group(1)] += v
            invol += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))
    return vol, invol, threads


def gil_probes():
    out = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    return [p for p in GIL_PROBES if p in out]


def wrk(port, seconds, path):
    return run_wrk(port, seconds, False, ("--timeout", realapps.WRK_TIMEOUT), realapps.CONNECTIONS, path=path)


def clean_run(server, db, port, seconds, path):
    pids = server.pids()
    names0, names1 = collections.Counter(), collections.Counter()
    v0, i0, _ = thread_stats(pids, names0)
    c0, d0 = server.cpu_seconds(), db.cpu_seconds()
    r = wrk(port, seconds, path)
    c1, d1 = server.cpu_seconds(), db.cpu_seconds()
    v1, i1, threads = thread_stats(server.pids(), names1)
    n = max(r["requests"], 1)
    names1.subtract(names0)
    r["vol_cs_per_req_by_thread_name"] = {k: round(v / n, 2) for k, v in names1.most_common() if v > 0}
    r.update(server_cpu_ms_per_req=round((c1 - c0) / n * 1e3, 3), db_cpu_ms_per_req=round((d1 - d0) / n * 1e3, 3),
             vol_cs_per_req=round((v1 - v0) / n, 2), invol_cs_per_req=round((i1 - i0) / n, 2), threads=threads)
    return r


def perf_stat(workers, port, seconds, path):
    events = PERF_EVENTS + gil_probes()
    proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(events), "-p",
                             ",".join(map(str, workers))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.3)
    r = wrk(port, seconds, path)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=30)[1]
    n = max(r["requests"], 1)
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] in events:
            try:
                counts[parts[2]] = int(float(parts[0]))
            except ValueError:
                counts[parts[2]] = None
    return {"rps": r["rps"], "requests": r["requests"],
            "per_request": {k: (round(v / n, 2) if v is not None else None) for k, v in counts.items()},
            "raw": counts}


def strace_futex(workers, port, seconds, path):
    cmd = ["strace", "-c", "-f", "-e", "trace=futex"]
    for pid in workers:
        cmd += ["-p", str(pid)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    r = wrk(port, seconds, path)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=30)[1]
    calls = errors = 0
    m = re.search(r"^\s*[\d.]+\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)?\s*futex$", err, re.M)
    if m:
        calls = int(m.group(3))
        errors = int(m.group(4) or 0)
    n = max(r["requests"], 1)
    return {"rps_under_strace": r["rps"], "requests": r["requests"], "futex_calls": calls, "futex_errors": errors,
            "futex_per_request": round(calls / n, 2), "table": err.strip()[-900:]}


def perf_record(workers, port, seconds, path, out_dir, tag):
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.join(out_dir, "%s.perf.data" % tag)
    proc = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-o", data, "-p", ",".join(map(str, workers))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = wrk(port, seconds, path)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none",
                          "--percent-limit", "0.7"], capture_output=True, text=True, timeout=300).stdout
    top = [ln for ln in rep.splitlines() if ln.strip() and not ln.startswith("#")][:40]
    with open(os.path.join(out_dir, "%s.top.txt" % tag), "w") as f:
        f.write(rep)
    comm = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "comm", "--stdio", "-g", "none"],
                          capture_output=True, text=True, timeout=300).stdout
    dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
                         capture_output=True, text=True, timeout=300).stdout
    # the system calls under which the kernel's share of samples was taken
    calls = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio", "-G",
                            "--percent-limit", "3"], capture_output=True, text=True, timeout=300).stdout
    with open(os.path.join(out_dir, "%s.callers.txt" % tag), "w") as f:
        f.write(calls)
    if not os.environ.get("SHORTWAITS_KEEP_PERF_DATA"):
        os.unlink(data)
    return {"rps_under_perf": r["rps"], "top": top,
            "by_dso": [ln for ln in dso.splitlines() if ln.strip() and not ln.startswith("#")][:8],
            "by_thread_name": [ln for ln in comm.splitlines() if ln.strip() and not ln.startswith("#")][:10]}


def pyspy(workers, port, seconds, path, out_dir, tag):
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, "%s.pyspy.txt" % tag)
    proc = subprocess.Popen([os.path.join(BIN, "py-spy"), "record", "--native", "--threads", "--idle", "-r", "250",
                             "-d", str(seconds), "-f", "raw", "-o", raw, "-p", str(workers[0])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    r = wrk(port, seconds, path)
    proc.wait(timeout=seconds + 60)
    selfs, total = collections.Counter(), 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            total += int(count)
            selfs[frames[-1]] += int(count)
    return {"rps_under_pyspy": r["rps"], "samples": total,
            "top_self": [("%.1f%%" % (100.0 * c / total), f) for f, c in selfs.most_common(25)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--apps", default="flask")
    ap.add_argument("--tests", default="db,queries")
    ap.add_argument("--config", action="append", default=[], help="NAME=SERVER[:ARGS] (repeat)")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--perf-stat", action="store_true")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--perf-record", default=None)
    ap.add_argument("--pyspy", default=None)
    ap.add_argument("--json", default=None, help="append the results here (one JSON object a line)")
    args = ap.parse_args()
    configs = []
    for spec in args.config or ["fastcluster=fastcluster", "gunicorn-sync=gunicorn-sync"]:
        name, _, rest = spec.partition("=")
        server, _, extra = rest.partition(":")
        words = extra.split()
        env = dict(w[4:].split("=", 1) for w in words if w.startswith("env:"))   # env:NAME=VALUE
        configs.append((name, server, [w for w in words if not w.startswith("env:")], env))
    db = realapps.Postgres(realapps.postgres_bin())
    try:
        for app_name in args.apps.split(","):
            interface, app = realapps.APPS[app_name]
            for name, server_name, extra, env in configs:
                # (fastcluster from this tree: an installed copy in the venv would be found first)
                tree = {"PYTHONPATH": ROOT + os.pathsep + realapps.APPS_DIR} if server_name == "fastcluster" else {}
                server = Running(name, realapps.WORKERS, False,
                                 command=lambda port, tmp: command(server_name, extra, interface, app, port),
                                 env=realapps.server_env(db) | tree | env)
                try:
                    workers = server.pids()[1:]
                    for test in args.tests.split(","):
                        path = realapps.TESTS[test].format(q=args.queries)
                        wrk(server.port, 1, path)
                        out = {"app": app_name, "config": name, "server": server_name, "args": " ".join(extra),
                               "test": test, "run": clean_run(server, db, server.port, args.seconds, path)}
                        r = out["run"]
                        log("%-8s %-8s %-22s %7.0f req/s  p99 %7.1f ms  cpu %.3f ms/req  cs %.1f+%.1f/req  "
                            "db %.3f ms/req  threads %d  errors %d" % (
                                app_name, test, name, r["rps"], r["p99_ms"] or -1, r["server_cpu_ms_per_req"],
                                r["vol_cs_per_req"], r["invol_cs_per_req"], r["db_cpu_ms_per_req"], r["threads"],
                                r["errors"]))
                        log("    voluntary switches per request by thread name: %s"
                            % r["vol_cs_per_req_by_thread_name"])
                        if args.perf_stat:
                            out["perf_stat"] = perf_stat(workers, server.port, args.seconds, path)
                            log("    perf stat: %s" % out["perf_stat"]["per_request"])
                        if args.strace:
                            out["strace"] = strace_futex(workers, server.port, min(args.seconds, 3), path)
                            log("    strace: futex %.2f/request (%d errors), %.0f req/s under strace" % (
                                out["strace"]["futex_per_request"], out["strace"]["futex_errors"],
                                out["strace"]["rps_under_strace"]))
                        tag = "%s-%s-%s" % (app_name, test, name)
                        if args.perf_record:
                            out["perf_record"] = perf_record(workers, server.port, min(args.seconds, 4), path,
                                                             args.perf_record, tag)
                            log("    perf top:\n      " + "\n      ".join(out["perf_record"]["top"][:25]))
                            log("    by dso:\n      " + "\n      ".join(out["perf_record"]["by_dso"]))
                            log("    by thread:\n      " + "\n      ".join(out["perf_record"]["by_thread_name"]))
                        if args.pyspy:
                            out["pyspy"] = pyspy(workers, server.port, min(args.seconds, 4), path, args.pyspy, tag)
                            log("    py-spy top self:\n      " + "\n      ".join(
                                "%6s %s" % t for t in out["pyspy"]["top_self"][:20]))
                        if args.json:
                            with open(args.json, "a") as f:
                                f.write(json.dumps(out) + "\n")
                finally:
                    server.stop()
    finally:
        db.stop()


if __name__ == "__main__":
    main()
