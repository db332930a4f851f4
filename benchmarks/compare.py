"""One command: fastcluster against its pure-Python twin and the peers, on this machine.

    python benchmarks/compare.py [--quick] [--only NAME,NAME]
    python benchmarks/compare.py --waits [--quick]     # apps that wait (benchmarks/waits.py)
    python benchmarks/compare.py --asgi [--quick]      # ASGI servers (benchmarks/asgi_workloads.py)
    python benchmarks/compare.py --tls [--quick]       # HTTPS (benchmarks/tls_workloads.py)
    python benchmarks/compare.py --speed [--quick]     # the three rows of issue 14, against nginx
    python benchmarks/compare.py --static [--quick]    # static files (benchmarks/static_workloads.py)

It installs what it needs (apt: wrk, apache2-utils, nginx, libev-dev; PyPI, into
benchmarks/.venv-peers: gunicorn, uvicorn, uvloop, granian, fastpysgi, bjoern, matplotlib and
this fastcluster), then serves the same 32-byte hello with each server and measures:

  ab -c200 -t10 (the seed's method, a new connection per request), wrk -t1 -c100 keep-alive,
  wrk with Connection: close, wrk with 16 pipelined requests per write, each with 1 worker (the
  server pinned to CPU 0, the load generator to CPU 1) and with 2 workers (unpinned: the load
  generator shares the cores), and the seed's CPU-bound experiment (5 ms of CPU per request,
  1 worker versus 2, unpinned).

For each run: requests/s, p50/p99 latency, errors, server CPU microseconds per request (user+sys
of every server process from /proc, over the requests served) and RSS. Output:
benchmarks/results/compare.json, compare.md and PNG charts. What cannot be installed or started is
listed as missing, and the rest still runs. All traffic goes to 127.0.0.1; every run is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv-peers")
RESULTS = os.path.join(HERE, "results")
PY = os.path.join(VENV, "bin", "python")
sys.path.insert(0, HERE)
from bench_app import BODY as _BODY_BYTES  # noqa: E402  (the hello every server answers)

BODY = _BODY_BYTES.decode()              # nginx's copy goes into its config
PEERS_PIP = ["gunicorn", "uvicorn", "uvloop", "httptools", "granian", "fastpysgi", "bjoern", "matplotlib", "hypercorn",
             "fastapi", "websockets", "whitenoise", "servestatic"]
APT = {"wrk": "wrk", "ab": "apache2-utils", "nginx": "nginx"}

NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port}{deferred};
        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}
}}
"""


def log(msg):
    print(msg, flush=True)


# --- installing -----------------------------------------------------------------------------

def ensure_tools(missing, apt=APT, libev=True, extra=()):
    """apt-get install what is missing: the packages of `apt` (tool: package) whose tool is not on the
    PATH, libev-dev when `libev`, and the packages of `extra`, which the caller found missing."""
    need = [pkg for tool, pkg in apt.items() if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool)]
    if libev and not os.path.exists("/usr/include/ev.h"):
        need.append("libev-dev")        # bjoern builds against libev
    need += list(extra)
    if not need:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        missing.append("apt packages %s: not root or no apt-get; install them by hand" % " ".join(need))
        return
    log("installing with apt: %s" % " ".join(need))
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", *need], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        missing.append("apt-get install %s failed: %s" % (" ".join(need), result.stderr.strip()[-300:]))


def ensure_venv(missing, packages=PEERS_PIP):
    """benchmarks/.venv-peers with this fastcluster (from the tree) and `packages` from PyPI."""
    if not os.path.exists(PY):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=300)
        subprocess.run([PY, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False, timeout=300)
    log("installing fastcluster and the peers into %s" % os.path.relpath(VENV, ROOT))
    result = subprocess.run([PY, "-m", "pip", "install", "-q", ROOT], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit("cannot install fastcluster itself: %s" % result.stderr[-500:])
    for package in packages:
        result = subprocess.run([PY, "-m", "pip", "install", "-q", package], capture_output=True, text=True,
                                timeout=900)
        if result.returncode != 0:
            missing.append("pip install %s failed: %s" % (package, result.stderr.strip().splitlines()[-1:]))


def versions(packages=PEERS_PIP):
    code = ("import importlib.metadata as m, json; out = {}\n"
            "for n in %r:\n"
            "    try: out[n] = m.version(n)\n"
            "    except Exception: pass\n"
            "print(json.dumps(out))" % (["fastcluster", "Cython", "httptools"] + [re.sub(r"\[.*\]", "", p)
                                                                             for p in packages],))
    found = json.loads(subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60).stdout)
    for tool, args in (("node", ["node", "--version"]), ("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "-v"]),
                       ("ab", ["ab", "-V"])):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10)
            found[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            pass
    return found


# --- servers ----------------------------------------------------------------------------------

def server_commands(name, port, workers):
    """The command (and extra env) that serves the hello app; None when `name` has no multi-worker mode."""
    bin_ = os.path.join(VENV, "bin")
    host = "127.0.0.1"
    if name in ("fastcluster-cython", "fastcluster-python", "fastcluster-no-defer"):
        loop = "python" if name == "fastcluster-python" else "cython"
        return [os.path.join(bin_, "fastcluster"), "serve", "bench_app:app", "--workers", str(workers),
                "--loop", loop, "--bind", "%s:%d" % (host, port)] + (
                    ["--defer-accept", "0"] if name == "fastcluster-no-defer" else [])
    if name == "gunicorn-sync":
        return [os.path.join(bin_, "gunicorn"), "-w", str(workers), "-k", "sync", "--bind", "%s:%d" % (host, port),
                "--log-level", "warning", "bench_app:app"]
    if name == "uvicorn-httptools":
        return [os.path.join(bin_, "uvicorn"), "bench_asgi:app", "--host", host, "--port", str(port), "--workers",
                str(workers), "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    if name == "granian-wsgi":
        return [os.path.join(bin_, "granian"), "--interface", "wsgi", "--host", host, "--port", str(port),
                "--workers", str(workers), "--no-ws", "--log-level", "warning", "bench_app:app"]
    if name == "fastpysgi":
        return [PY, "-c", "import fastpysgi, bench_app; fastpysgi.run(bench_app.app, %r, %d, workers=%d)"
                % (host, port, workers)]
    if name == "bjoern":
        if workers != 1:
            return None
        return [PY, "-c", "import bjoern, bench_app; bjoern.run(bench_app.app, %r, %d)" % (host, port)]
    if name == "node-cluster":
        return ["node", os.path.join(HERE, "node_cluster.js")]
    if name in ("nginx", "nginx-deferred"):
        return ["nginx", "-c", "{conf}"]
    raise KeyError(name)


SERVERS = ["nginx", "fastcluster-cython", "fastcluster-python", "fastpysgi", "bjoern", "granian-wsgi",
           "uvicorn-httptools", "gunicorn-sync", "node-cluster"]


def _insecure_tls():
    """A client context for the readiness probe of a TLS server (the test certificate, unchecked)."""
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    def __init__(self, name, workers, pin, work_ms=0, command=None, env=None):
        """`command(port, tmp)` overrides the named server's command (benchmarks/overhead.py); `env`
        adds to (or overrides) the server's environment (benchmarks/realapps.py)."""
        self.name = name
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="fc-bench-")
        self.err = self.out = None
        try:
            cmd = command(self.port, self.tmp) if command else server_commands(name, self.port, workers)
            if cmd is None:
                raise LookupError("no %d-worker mode" % workers)
            if name in ("nginx", "nginx-deferred"):
                conf = os.path.join(self.tmp, "nginx.conf")
                with open(conf, "w") as f:
                    f.write(NGINX_CONF.format(workers=workers, tmp=self.tmp, port=self.port,
                                              body=BODY.replace("\n", "\\n"),
                                              deferred=" deferred" if name == "nginx-deferred" else ""))
                cmd = [c.replace("{conf}", conf) for c in cmd]
            self.tls = any(flag in cmd for flag in ("--certfile", "--ssl-certfile", "--ssl-certificate"))
            if pin:
                cmd = ["taskset", "-c", "0"] + cmd
            env = dict(os.environ, PYTHONPATH=HERE, BENCH_WORK_MS=str(work_ms), BENCH_WORKERS=str(workers),
                       BENCH_PORT=str(self.port), FASTCLUSTER_NO_EXTENSIONS="") | (env or {})
            self.err = open(os.path.join(self.tmp, "stderr"), "wb")
            self.out = open(os.path.join(self.tmp, "stdout"), "wb")
            self.proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=self.out, stderr=self.err,
                                         start_new_session=True)
        except BaseException:      # nothing started: its folder and files go
            for f in (self.err, self.out):
                if f is not None:
                    f.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        try:
            # (by the program's name: a checkout in a folder named fastcluster has it in every path)
            self._wait_ready(workers, fastcluster=any(os.path.basename(c) == "fastcluster" for c in cmd))
        except BaseException:
            self.stop()          # a server that never got ready is not left running
            raise

    def _wait_ready(self, workers, fastcluster=False, timeout=30.0):
        """Ready when it answers a request and every process exists: with several workers, a
        master and its workers. fastcluster says when all of its workers are ready (its
        "listening on" line): a burst of connections before that would all go to the first."""
        deadline = time.monotonic() + timeout
        processes = workers + 1 if workers > 1 else workers
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("exited with %s: %s" % (self.proc.returncode, self.stderr()[-400:]))
            if fastcluster:
                with open(os.path.join(self.tmp, "stdout"), "rb") as f:
                    if b"fastcluster: listening on" not in f.read():
                        time.sleep(0.05)
                        continue
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if self.tls:
                        s = _insecure_tls().wrap_socket(s)
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1."):
                        if len(self.pids()) >= processes:
                            return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("not ready after %g s: %s" % (timeout, self.stderr()[-400:]))

    def stderr(self):
        with open(os.path.join(self.tmp, "stderr"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def pids(self):
        """The server's process and all its descendants."""
        children = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def cpu_seconds(self):
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError):
                pass
        return total

    def rss_mib(self):
        """(all processes together, the largest single process), in MiB."""
        sizes = []
        for pid in self.pids():
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            sizes.append(int(line.split()[1]))
            except OSError:
                pass
        return round(sum(sizes) / 1024.0, 1), round(max(sizes, default=0) / 1024.0, 1)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.err.close()
        self.out.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- load -------------------------------------------------------------------------------------

def _ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _load(cmd, seconds, pin):
    """Run a load generator (on CPU 1 when the server is pinned to CPU 0); its output."""
    if pin:
        cmd = ["taskset", "-c", "1"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout


def run_wrk(port, seconds, pin, extra=(), connections=100, scheme="http", path="/"):
    out = _load(["wrk", "-t1", "-c%d" % connections, "-d%ds" % seconds, "--latency", *extra,
                 "%s://127.0.0.1:%d%s" % (scheme, port, path)], seconds, pin)
    result = {"requests": int(re.search(r"(\d+) requests in", out).group(1))}
    result["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "99"):
        m = re.search(r"\s%s(?:\.000)?%%\s+([\d.]+)(us|ms|s)\b" % pct, out)
        result["p%s_ms" % pct] = round(_ms(*m.groups()), 3) if m else None
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["socket_errors"] = sum(map(int, errors.groups())) if errors else 0
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["errors"] = result["socket_errors"] + result["non2xx"]
    return result


def run_ab(port, seconds, pin, concurrency=200):
    out = _load(["ab", "-q", "-c%d" % concurrency, "-t%d" % seconds, "-n", "10000000",
                 "http://127.0.0.1:%d/" % port], seconds, pin)
    result = {"requests": int(re.search(r"Complete requests:\s+(\d+)", out).group(1))}
    result["rps"] = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\d+)" % pct, out, re.M)
        result["p%s_ms" % pct] = float(m.group(1)) if m else None
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    result["errors"] = failed + (int(non2xx.group(1)) if non2xx else 0)
    return result


WORKLOADS = {
    "ab-c200": lambda port, s, pin: run_ab(port, s, pin),
    "wrk-keepalive": lambda port, s, pin: run_wrk(port, s, pin),
    "wrk-close": lambda port, s, pin: run_wrk(port, s, pin, ("-H", "Connection: close")),
    "wrk-pipeline16": lambda port, s, pin: run_wrk(port, s, pin, ("-s", os.path.join(HERE, "pipeline.lua"))),
}


def measure(name, workers, workload, seconds, pin, work_ms=0):
    server = Running(name, workers, pin, work_ms)
    try:
        cpu0 = server.cpu_seconds()
        result = WORKLOADS[workload](server.port, seconds, pin)
        cpu = server.cpu_seconds() - cpu0
        result["server_cpu_us_per_request"] = round(cpu / max(result["requests"], 1) * 1e6, 1)
        result["rss_mib"], result["rss_max_process_mib"] = server.rss_mib()
        result["processes"] = len(server.pids())
        return result
    finally:
        server.stop()


# --- report -----------------------------------------------------------------------------------

def markdown(report):
    lines = ["# fastcluster and its peers", "",
             "Machine: %s. Run %s, %s. Versions: %s." % (
                 report["machine"], report["date"], report["command"],
                 ", ".join("%s %s" % kv for kv in sorted(report["versions"].items()))), ""]
    for workers, where in ((1, "server on CPU 0, load on CPU 1"), (2, "unpinned: the load shares the cores")):
        for workload in WORKLOADS:
            rows = [(n, r) for (n, w, wl), r in _items(report) if wl == workload and w == workers]
            if not rows:
                continue
            lines += ["## %s, %d worker%s (%s)" % (workload, workers, "s" if workers > 1 else "", where), "",
                      "| server | req/s | p50 ms | p99 ms | errors | server CPU us/req "
                      "| RSS MiB: all processes (count), largest |",
                      "|---|---|---|---|---|---|---|"]
            for name, r in rows:
                if "error" in r:
                    lines.append("| %s | failed: %s | | | | | |" % (name, r["error"][:80].replace("|", "/")))
                    continue
                lines.append("| %s | %s | %s | %s | %d | %s | %s (%d), %s |" % (
                    name, format(int(r["rps"]), ","), r["p50_ms"], r["p99_ms"], r["errors"],
                    r["server_cpu_us_per_request"], r["rss_mib"], r["processes"], r["rss_max_process_mib"]))
            lines.append("")
    cpu_rows = report.get("cpu_bound", {})
    if cpu_rows:
        lines += ["## The seed's CPU-bound experiment: 5 ms of CPU per request, wrk -c50, unpinned", "",
                  "| server | 1 worker req/s | 2 workers req/s | 2/1 | p99 ms (2 workers) |", "|---|---|---|---|---|"]
        for name, r in cpu_rows.items():
            if "error" in r:
                lines.append("| %s | failed: %s | | | |" % (name, r["error"][:80]))
                continue
            lines.append("| %s | %.1f | %.1f | %.2f | %s |" % (name, r["1"]["rps"], r["2"]["rps"],
                                                               r["2"]["rps"] / r["1"]["rps"], r["2"]["p99_ms"]))
        lines.append("")
    if report["missing"]:
        lines += ["## Missing", ""] + ["- %s" % m for m in report["missing"]] + [""]
    return "\n".join(lines)


def _items(report):
    for key, value in report["runs"].items():
        name, workers, workload = key.split("|")
        yield (name, int(workers), workload), value


def is_stall(result, reference_rps):
    """A run that mostly waited (bjoern on pipelined input: 20 req/s): under 1% of nginx's req/s
    in the same run. Its CPU per request would be drawn as a cost; it is a stall."""
    return "error" not in result and bool(reference_rps) and result["rps"] < 0.01 * reference_rps


def ratio_bars(ax, rows, reference, title):
    """Horizontal bars of value / reference on a log scale, drawn from 1 (= nginx) to the ratio,
    so that cheaper goes left and costlier right; a stall is a label, not a bar."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ratios = [value / reference for _n, value, stall in rows if not stall] + [1.0]
    low, high = min(ratios) / 1.6, max(ratios) * 1.6
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    for i, (name, value, stall) in enumerate(rows):
        if stall:
            ax.text(low * 1.08, i, "stall (requests waited)", va="center", fontsize=8, color="#555555")
            continue
        ratio = value / reference
        color = "#d62728" if name.startswith("fastcluster") else "#7f7f7f"
        ax.barh(i, abs(ratio - 1.0) or 0.002, left=min(ratio, 1.0), color=color)
        ax.text(ratio * (1.03 if ratio >= 1 else 0.97), i, "%.2f" % ratio, va="center", fontsize=8,
                ha="left" if ratio >= 1 else "right")
    ax.axvline(1.0, color="black", linewidth=0.8)
    steps = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64) if high / low > 6 else (0.5, 0.75, 1, 1.25, 1.5, 2)
    ticks = [t for t in steps if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: "%gx" % x))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _v, _s in rows])
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)     # (the first row on top, a stalled last row inside too)


def charts(report, missing):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        missing.append("matplotlib: no charts")
        return []
    made = []
    for metric, label in (("rps", "requests/s"), ("server_cpu_us_per_request", "server CPU per request")):
        fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(4.4 * len(WORKLOADS), 4.2))
        for ax, workload in zip(axes, WORKLOADS):
            found = {n: r for (n, w, wl), r in _items(report) if wl == workload and w == 1 and "error" not in r}
            runs = {n: found[n] for n in SERVERS if n in found}
            nginx = runs.get("nginx")
            if nginx is None:
                continue
            rows = [(n, r[metric], is_stall(r, nginx["rps"])) for n, r in runs.items()]
            ratio_bars(ax, rows, nginx[metric], workload)
        fig.suptitle("%s relative to nginx (log scale; %s), 1 worker (%s)" % (
            label, "higher is faster" if metric == "rps" else "lower is cheaper", report["machine"]), fontsize=10)
        fig.tight_layout()
        path = os.path.join(RESULTS, "compare-%s.png" % ("rps" if metric == "rps" else "cpu"))
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    return made


# --- --speed: issue 14's three rows -------------------------------------------------------------

SPEED_SERVERS = ["nginx", "fastcluster-cython", "fastpysgi", "bjoern"]
SPEED_WORKLOADS = ["wrk-keepalive", "ab-c200", "wrk-pipeline16"]
SPEED_TARGETS = {"wrk-keepalive": 1.0, "ab-c200": 1.1, "wrk-pipeline16": 0.5}   # fastcluster / nginx, at most


def compare_speed(args, missing, started):
    """--speed: nginx, fastcluster, fastpysgi and bjoern on the three workloads of issue 14, 1
    worker pinned, rounds interleaved, medians; then fastcluster's worker RSS over a million
    keep-alive requests. Writes results/compare-speed.{json,md,png}."""
    report = _rounds(args, missing, started, "--speed", SPEED_SERVERS, SPEED_WORKLOADS,
                     lambda name, port, workload: server_commands(name, port, 1),
                     lambda workload, port, seconds: WORKLOADS[workload](port, seconds, True),
                     speed_markdown, "compare-speed", "Speed: fastcluster, nginx, fastpysgi, bjoern",
                     extra=lambda report: report.update(rss=_rss_over_a_million()))
    speed_chart(report, missing)


DEFER_SERVERS = ["nginx", "nginx-deferred", "fastcluster-cython", "fastcluster-no-defer"]


def compare_speed_deferred(args, missing, started):
    """--speed --deferred: what TCP_DEFER_ACCEPT is worth to each side. nginx as --speed runs it and
    with `listen ... deferred`; fastcluster with its default --defer-accept 1 and with 0. Writes
    results/compare-speed-deferred.{json,md}."""
    def markdown(report):
        lines = ["Server CPU microseconds per request (median of the rounds), and each one's ratio to plain "
                 "nginx's within each round (median, range).", "",
                 "| workload | " + " | ".join(DEFER_SERVERS) + " |", "|---|" + "---|" * len(DEFER_SERVERS)]
        for workload in ("ab-c200", "wrk-keepalive"):
            row = report["medians"].get(workload, {})
            cells = []
            for name in DEFER_SERVERS:
                if name not in row:
                    cells.append("-")
                    continue
                ratio = "" if name == "nginx" else " (%s)" % paired_ratio(report, workload, ours=name)
                cells.append("%.1f%s" % (row[name]["server_cpu_us_per_request"], ratio))
            lines.append("| %s | %s |" % (workload, " | ".join(cells)))
        return "\n".join(lines) + "\n"

    _rounds(args, missing, started, "--speed --deferred", DEFER_SERVERS, ["ab-c200", "wrk-keepalive"],
            lambda name, port, workload: server_commands(name, port, 1),
            lambda workload, port, seconds: WORKLOADS[workload](port, seconds, True),
            markdown, "compare-speed-deferred", "TCP_DEFER_ACCEPT on both sides: nginx and fastcluster")


def _rss_over_a_million(target=1_000_000):
    """fastcluster-cython's worker RSS after start-up, then after keep-alive load until it served
    `target` requests (bounded by 60 s)."""
    server = Running("fastcluster-cython", 1, True)
    try:
        worker = max(server.pids())
        def rss():
            with open("/proc/%d/status" % worker) as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024.0
        samples = [(0, round(rss(), 1))]
        served, deadline = 0, time.monotonic() + 60
        while served < target and time.monotonic() < deadline:
            served += run_wrk(server.port, 5, True)["requests"]
            samples.append((served, round(rss(), 1)))
        return {"samples_requests_mib": samples, "requests": served}
    finally:
        server.stop()


def speed_markdown(report):
    med = report["medians"]
    lines = ["Server CPU microseconds per request (median of the rounds); ratios are fastcluster's over "
             "nginx's and over the better of fastpysgi and bjoern, from the same rounds; \"paired\" is the "
             "median (and range) of the ratio taken within each round, steadier on a busy machine.", "",
             "| workload | nginx | fastcluster | fastpysgi | bjoern | fastcluster / nginx | paired | target | "
             "fastcluster / best peer |", "|---|---|---|---|---|---|---|---|---|"]
    for workload in SPEED_WORKLOADS:
        row = med.get(workload, {})
        nginx = row.get("nginx", {})
        cells, peers = [], []
        for name in SPEED_SERVERS:
            r = row.get(name)
            if r is None:
                cells.append("-")
                continue
            stall = is_stall(r, nginx.get("rps"))
            cells.append("stall" if stall else "%.1f" % r["server_cpu_us_per_request"])
            if name in ("fastpysgi", "bjoern") and not stall:
                peers.append(r["server_cpu_us_per_request"])
        ours = row.get("fastcluster-cython", {}).get("server_cpu_us_per_request")
        ratio = "%.2f" % (ours / nginx["server_cpu_us_per_request"]) if ours and nginx else "-"
        best = "%.2f" % (ours / min(peers)) if ours and peers else "-"
        lines.append("| %s | %s | %s | %s | at most %.1f | %s |" % (
            workload, " | ".join(cells), ratio, paired_ratio(report, workload), SPEED_TARGETS[workload], best))
    lines += ["", "req/s (medians): " + "; ".join(
        "%s: %s" % (w, ", ".join("%s %.0f" % (n, r["rps"]) for n, r in med.get(w, {}).items()))
        for w in SPEED_WORKLOADS), ""]
    rss = report.get("rss")
    if rss:
        lines += ["fastcluster-cython's worker RSS (MiB) after start-up and after each 5 s of keep-alive load, "
                  "by requests served: " + ", ".join("%d: %.1f" % tuple(x) for x in rss["samples_requests_mib"])
                  + " (target: at most 15 MiB, flat).", ""]
    return "\n".join(lines)


def paired_ratio(report, workload, ours="fastcluster-cython", base="nginx"):
    """The median and range of ours/base CPU per request taken round by round (both runs of a
    round ran within seconds of each other), as text; "-" without a pair."""
    import statistics

    runs = report["runs"].get(workload, {})
    ratios = sorted(a["server_cpu_us_per_request"] / b["server_cpu_us_per_request"]
                    for a, b in zip(runs.get(ours, []), runs.get(base, []))
                    if "error" not in a and "error" not in b and b["server_cpu_us_per_request"])
    if not ratios:
        return "-"
    return "%.2f (%.2f-%.2f)" % (statistics.median(ratios), ratios[0], ratios[-1])


def speed_chart_from(path):
    """Draw compare-speed.png again from a saved compare-speed.json."""
    with open(path) as f:
        speed_chart(json.load(f), [])


def speed_chart(report, missing):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        missing.append("matplotlib: no chart")
        return
    fig, axes = plt.subplots(1, len(SPEED_WORKLOADS), figsize=(4.4 * len(SPEED_WORKLOADS), 3.2))
    for ax, workload in zip(axes, SPEED_WORKLOADS):
        row = report["medians"].get(workload, {})
        nginx = row.get("nginx")
        if not nginx:
            continue
        rows = [(n, row[n]["server_cpu_us_per_request"], is_stall(row[n], nginx["rps"]))
                for n in SPEED_SERVERS if n in row]
        ratio_bars(ax, rows, nginx["server_cpu_us_per_request"], "%s (target %.1f)" % (workload,
                                                                                   SPEED_TARGETS[workload]))
    fig.suptitle("server CPU per request relative to nginx (log scale; left of 1x is cheaper; %s)"
                 % report["machine"], fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "compare-speed.png"), dpi=90)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 s per run instead of 10 (ab) and 5 (wrk)")
    ap.add_argument("--only", default="", help="comma-separated server names (default: all)")
    ap.add_argument("--workloads", default="",
                    help="--asgi, --tls, --static: comma-separated workloads (default: all); results in a file "
                         "named after them")
    ap.add_argument("--waits", action="store_true",
                    help="the waiting workloads instead (head-of-line, a 20 ms app, trickling uploads)")
    ap.add_argument("--asgi", action="store_true",
                    help="the ASGI comparison instead (raw hello, pipelining, FastAPI, WebSocket echo)")
    ap.add_argument("--tls", action="store_true",
                    help="the TLS comparison instead (HTTPS keep-alive and pipelining; benchmarks/tls_workloads.py)")
    ap.add_argument("--h2", action="store_true",
                    help="the HTTP/2 comparison instead (h2c and h2 over TLS under h2load; benchmarks/h2_workloads.py)")
    ap.add_argument("--static", action="store_true",
                    help="the static-file comparison instead (Starlette's FileResponse, ServeStatic, WhiteNoise; "
                         "benchmarks/static_workloads.py)")
    ap.add_argument("--speed", action="store_true",
                    help="issue 14's comparison instead: nginx, fastcluster, fastpysgi, bjoern on keep-alive, a new "
                         "connection per request and 16-deep pipelining, plus the worker's RSS over 1M requests")
    ap.add_argument("--deferred", action="store_true",
                    help="with --speed: nginx with and without `listen ... deferred`, fastcluster with "
                         "--defer-accept 1 and 0, on the new-connection and keep-alive rows")
    ap.add_argument("--rounds", type=int, default=3,
                    help="--asgi, --tls, --static, --speed: interleaved rounds (medians are reported)")
    ap.add_argument("--installed", default=None, help=argparse.SUPPRESS)   # set by the re-exec below
    args = ap.parse_args()
    if args.installed is None:
        started = time.monotonic()
        missing = []
        ensure_tools(missing)
        ensure_venv(missing)
        # the rest runs in the venv's Python, which has matplotlib for the charts
        state = json.dumps({"missing": missing, "started": time.time() - (time.monotonic() - started)})
        os.execv(PY, [PY, os.path.abspath(__file__), *sys.argv[1:], "--installed", state])
    state = json.loads(args.installed)
    missing = state["missing"]
    started = time.monotonic() - (time.time() - state["started"])
    if args.waits:
        return compare_waits(args, missing, started)
    if args.asgi:
        return compare_asgi(args, missing, started)
    if args.static:
        return compare_static(args, missing, started)
    if args.tls:
        return compare_tls(args, missing, started)
    if args.h2:
        return compare_h2(args, missing, started)
    if args.speed and args.deferred:
        return compare_speed_deferred(args, missing, started)
    if args.speed:
        return compare_speed(args, missing, started)
    names = [n for n in SERVERS if not args.only or n in args.only.split(",")]
    if shutil.which("node") is None and "node-cluster" in names:
        missing.append("node: not installed, node-cluster skipped")
        names.remove("node-cluster")
    ab_s, wrk_s = (3, 3) if args.quick else (10, 5)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/compare.py" + (" --quick" if args.quick else "")
                   + (" --only " + args.only if args.only else ""),
        "machine": "%d CPUs, %s, Linux %s, Python %s" % (os.cpu_count(), _cpu_name(), platform.release(),
                                                        platform.python_version()),
        "versions": versions(), "missing": missing, "runs": {}, "cpu_bound": {},
    }
    for workers in (1, 2):
        for name in names:
            if server_commands(name, 0, workers) is None:
                continue        # no multi-worker mode (bjoern)
            for workload in WORKLOADS:
                key = "%s|%d|%s" % (name, workers, workload)
                log("%-20s %d %-15s" % (name, workers, workload))
                try:
                    report["runs"][key] = r = measure(name, workers, workload,
                                                      ab_s if workload.startswith("ab") else wrk_s, pin=workers == 1)
                    log("    %9.0f req/s  %6.1f us CPU/req  errors %d"
                        % (r["rps"], r["server_cpu_us_per_request"], r["errors"]))
                except Exception as exc:   # one server failing must not stop the comparison
                    report["runs"][key] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                    log("    failed: %s" % report["runs"][key]["error"][:200])
    for name in names:
        if name in ("nginx", "bjoern"):
            continue
        log("%-20s cpu-bound 5 ms, 1 and 2 workers" % name)
        try:
            report["cpu_bound"][name] = {
                str(w): _cpu_bound(name, w, wrk_s) for w in (1, 2)
            }
        except Exception as exc:
            report["cpu_bound"][name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
    os.makedirs(RESULTS, exist_ok=True)
    report["charts"] = [os.path.relpath(p, HERE) for p in charts(report, missing)]
    report["elapsed_s"] = round(time.monotonic() - started)
    with open(os.path.join(RESULTS, "compare.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    with open(os.path.join(RESULTS, "compare.md"), "w") as f:
        f.write(markdown(report))
    log("wrote %s (%d s)" % (os.path.relpath(os.path.join(RESULTS, "compare.md"), ROOT), report["elapsed_s"]))
    for m in missing:
        log("missing: %s" % m)


def compare_waits(args, missing, started):
    """--waits: benchmarks/waits.py's workloads, each server fresh for each, 2 workers, unpinned."""
    import waits

    seconds = 5 if args.quick else 10
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/compare.py --waits" + (" --quick" if args.quick else ""),
        "machine": "%d CPUs, %s, Linux %s, Python %s" % (os.cpu_count(), _cpu_name(), platform.release(),
                                                        platform.python_version()),
        "versions": versions(), "missing": missing, "seconds": seconds, "runs": {},
    }
    bin_ = os.path.join(VENV, "bin")
    for workload, names in waits.PLAN:
        report["runs"][workload] = {}
        for name in names:
            if args.only and name not in args.only.split(","):
                continue
            log("%-20s %s" % (name, workload))
            if workload == "cpu-bound":
                try:
                    report["runs"][workload][name] = r = {str(w): _cpu_bound_waits(name, w, seconds, bin_)
                                                          for w in (1, 2)}
                    log("    %.2fx" % (r["2"]["rps"] / r["1"]["rps"]))
                except Exception as exc:
                    report["runs"][workload][name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                continue
            server = None
            try:
                server = Running(name, 2, False, command=lambda port, tmp, n=name: waits.commands(n, port, bin_))
                cpu0 = server.cpu_seconds()
                result = waits.WORKLOADS[workload](server.port, seconds)
                result["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
                result["rss_mib"], result["rss_max_process_mib"] = server.rss_mib()
                report["runs"][workload][name] = result
                log("    %s" % json.dumps({k: v for k, v in result.items() if k in ("rps", "p99_ms", "errors")}
                                         if "rps" in result else {"fast_p99_ms": result["fast"]["p99_ms"],
                                                                  "errors": result["errors"]}))
            except Exception as exc:   # one server failing must not stop the comparison
                report["runs"][workload][name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                log("    failed: %s" % report["runs"][workload][name]["error"][:200])
            finally:
                if server is not None:
                    server.stop()
    report["elapsed_s"] = round(time.monotonic() - started)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "compare-waits.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    with open(os.path.join(RESULTS, "compare-waits.md"), "w") as f:
        f.write("# Apps that wait: fastcluster and its peers\n\n"
                "Machine: %s. Run %s, %s, %d s per run. Versions: %s.\n\n"
                % (report["machine"], report["date"], report["command"], seconds,
                   ", ".join("%s %s" % kv for kv in sorted(report["versions"].items()))))
        f.write(waits.markdown(report["runs"]))
        if missing:
            f.write("\n## Missing\n\n" + "\n".join("- %s" % m for m in missing) + "\n")
    log("wrote %s (%d s)" % (os.path.relpath(os.path.join(RESULTS, "compare-waits.md"), ROOT), report["elapsed_s"]))


def compare_asgi(args, missing, started):
    """--asgi: benchmarks/asgi_workloads.py, 1 worker pinned, rounds interleaved, medians kept."""
    import asgi_workloads as aw

    def load(workload, port, seconds):
        if workload == "ws-echo":
            return aw.run_ws(port, seconds, True, PY)
        if workload == "pipeline16":
            return run_wrk(port, seconds, True, ("-s", os.path.join(HERE, "pipeline.lua")))
        return run_wrk(port, seconds, True)

    bin_ = os.path.join(VENV, "bin")
    _rounds(args, missing, started, "--asgi", aw.SERVERS, aw.WORKLOADS,
            lambda name, port, workload: aw.commands(name, port, bin_, aw.APPS[workload]), load,
            aw.markdown, "compare-asgi", "ASGI: fastcluster and its peers")


def compare_static(args, missing, started):
    """--static: benchmarks/static_workloads.py, 1 worker pinned, rounds interleaved, medians kept."""
    import static_workloads as sw

    def load(workload, port, seconds):
        sw.check(port, workload)
        return run_wrk(port, seconds, True, path=sw.PATHS[workload])

    bin_ = os.path.join(VENV, "bin")
    _rounds(args, missing, started, "--static", sw.SERVERS, sw.WORKLOADS,
            lambda name, port, workload: sw.commands(name, port, bin_, workload), load,
            sw.markdown, "compare-static", "Static files: fastcluster and its peers")


def compare_tls(args, missing, started):
    """--tls: benchmarks/tls_workloads.py, the same way as --asgi."""
    import tls_workloads as tw

    def load(workload, port, seconds):
        extra = ("-s", os.path.join(HERE, "pipeline.lua")) if workload == "pipeline16" else ()
        return run_wrk(port, seconds, True, extra, scheme="https")

    bin_ = os.path.join(VENV, "bin")
    _rounds(args, missing, started, "--tls", tw.SERVERS, tw.WORKLOADS,
            lambda name, port, workload: tw.command(name, port, bin_, workload), load,
            tw.markdown, "compare-tls", "TLS: fastcluster and its peers")


def compare_h2(args, missing, started):
    """--h2: benchmarks/h2_workloads.py, the same way as --asgi (a server without HTTP/1.1's base
    workload, or without HTTP/2, gets no row there)."""
    import h2_workloads as hw

    def load(workload, port, seconds):
        return hw.run_h2load(port, seconds, workload, lambda cmd: _load(cmd, seconds, True))

    bin_ = os.path.join(VENV, "bin")
    _rounds(args, missing, started, "--h2", hw.SERVERS, hw.WORKLOADS,
            lambda name, port, workload: hw.command(name, port, bin_, workload), load,
            hw.markdown, "compare-h2", "HTTP/2: fastcluster and its peers")


def _rounds(args, missing, started, flag, servers, workloads, command, load, markdown, stem, title, extra=None):
    """Each server fresh for each run, 1 worker pinned to CPU 0, the load on CPU 1; rounds
    interleaved and medians kept; writes results/<stem>.json and .md."""
    import statistics

    seconds = 3 if args.quick else 5
    names = [n for n in servers if not args.only or n in args.only.split(",")]
    if args.workloads:
        workloads = [w for w in workloads if w in args.workloads.split(",")]
        stem += "-" + "-".join(workloads)         # (the full comparison's results stay as they are)
        flag += " --workloads " + ",".join(workloads)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": ("python benchmarks/compare.py %s --rounds %d" % (flag, args.rounds)
                    + (" --only " + args.only if args.only else "") + (" --quick" if args.quick else "")),
        "machine": "%d CPUs, %s, Linux %s, Python %s" % (os.cpu_count(), _cpu_name(), platform.release(),
                                                        platform.python_version()),
        "versions": versions(), "missing": missing, "seconds": seconds, "runs": {}, "medians": {},
    }
    for round_ in range(args.rounds):
        for workload in workloads:
            for name in names:
                log("round %d %-28s %s" % (round_ + 1, name, workload))
                server = None
                try:
                    server = Running(name, 1, True, command=lambda port, tmp, n=name, w=workload: command(n, port, w))
                    cpu0 = server.cpu_seconds()
                    result = load(workload, server.port, seconds)
                    cpu = server.cpu_seconds() - cpu0
                    result["server_cpu_us_per_request"] = round(cpu / max(result["requests"], 1) * 1e6, 1)
                    result["rss_mib"], result["rss_max_process_mib"] = server.rss_mib()
                    report["runs"].setdefault(workload, {}).setdefault(name, []).append(result)
                    log("    %9.0f req/s  %6.1f us CPU/req  errors %d"
                        % (result["rps"], result["server_cpu_us_per_request"], result["errors"]))
                except Exception as exc:   # one server failing must not stop the comparison
                    report["runs"].setdefault(workload, {}).setdefault(name, []).append(
                        {"error": "%s: %s" % (type(exc).__name__, exc)})
                    log("    failed: %s" % str(exc)[:200])
                finally:
                    if server is not None:
                        server.stop()
    for workload, by_name in report["runs"].items():
        for name, results in by_name.items():
            good = [r for r in results if "error" not in r]
            if good:
                report["medians"].setdefault(workload, {})[name] = {
                    key: statistics.median(r[key] for r in good)
                    for key in ("rps", "server_cpu_us_per_request", "errors", "rss_mib")}
    if extra is not None:
        extra(report)
    report["elapsed_s"] = round(time.monotonic() - started)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, stem + ".json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    with open(os.path.join(RESULTS, stem + ".md"), "w") as f:
        f.write("# %s\n\nMachine: %s. Run %s, `%s`: %d s per run, medians of %d "
                "interleaved rounds (each number the median of its own runs; every run is in the .json), "
                "1 worker pinned to CPU 0, the load generator on CPU 1. Versions: %s.\n\n"
                % (title, report["machine"], report["date"], report["command"], seconds, args.rounds,
                   ", ".join("%s %s" % kv for kv in sorted(report["versions"].items()))))
        f.write(markdown(report))
        if missing:
            f.write("\n## Missing\n\n" + "\n".join("- %s" % m for m in missing) + "\n")
    log("wrote %s (%d s)" % (os.path.relpath(os.path.join(RESULTS, stem + ".md"), ROOT), report["elapsed_s"]))
    return report


def _cpu_bound_waits(name, workers, seconds, bin_):
    import waits

    server = Running(name, workers, False, work_ms=5,
                     command=lambda port, tmp: waits.commands(name, port, bin_, str(workers), "bench_app:app"))
    try:
        return run_wrk(server.port, seconds, False, connections=50)
    finally:
        server.stop()


def _cpu_bound(name, workers, seconds):
    server = Running(name, workers, pin=False, work_ms=5)
    try:
        return run_wrk(server.port, seconds, False, connections=50)
    finally:
        server.stop()


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
