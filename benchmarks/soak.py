"""Soak: ordinary keep-alive clients sharing two workers with hostile ones, about a minute in all.

    python benchmarks/soak.py [--seconds 25] [--loop cython] [--name soak]

Two phases against one `fastcluster serve benchmarks/soak_app.py --workers 2` (defaults otherwise):
- "calm": wrk -t1 -c32 --latency against / for --seconds, alone;
- "hostile": the same wrk run while threads of this process play the clients real traffic brings:
  half-closers (GET /sleep?s=0.2, then shutdown(SHUT_WR), and the 200 expected all the same),
  event-stream leavers (GET /events, read a few events, close), one pipelining flooder (GET
  /sleep?s=1 and 100,000 GETs behind it on one connection, every answer read), slow 100-continue
  uploads (4 MiB in 256 KiB pieces to an app that reads 64 KiB every 5 ms; the size expected back)
  and slowloris clients (50 connections sending a header byte a second, never finishing).
Reported per phase: wrk's requests/s, p99 and errors; the workers' peak RSS and CPU seconds; the
requests lost (wrk's errors, and the hostile clients' requests that were owed an answer and got
none). Results: benchmarks/results/<name>.{md,json,log}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
HELLO = b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"


def read_response(f):
    """(status, body) of one HTTP/1.1 response from a buffered file; None at end of file."""
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    length, chunked = None, False
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        name, _, value = h.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
        elif name.lower() == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if status == 100:
        return status, b""
    if chunked:
        return status, None            # (only event streams are chunked here: left unread)
    return status, f.read(length or 0)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def half_closer(port, stop, tally):
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: soak\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                resp = read_response(s.makefile("rb"))
            tally.add("half-close answered" if resp and resp[0] == 200 else "half-close LOST")
        except OSError:
            tally.add("half-close LOST")


def stream_leaver(port, stop, tally):
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /events HTTP/1.1\r\nHost: soak\r\n\r\n")
                got = b""
                while got.count(b"data:") < 3:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            tally.add("stream left" if got.startswith(b"HTTP/1.1 200") else "stream LOST")
        except OSError:
            tally.add("stream LOST")


def flooder(port, stop, tally, count=100_000):
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                def send():
                    try:
                        s.sendall(b"GET /sleep?s=1 HTTP/1.1\r\nHost: soak\r\n\r\n" + HELLO * count)
                    except OSError:
                        pass
                threading.Thread(target=send, daemon=True).start()
                seen, tail = 0, b""
                while seen < count + 1:
                    data = s.recv(1 << 20)
                    if not data:
                        break
                    chunk = tail + data
                    seen += chunk.count(b"HTTP/1.1 200 OK")
                    tail = chunk[-14:]
            tally.add("pipelined answered", seen)
            if seen < count + 1:
                tally.add("pipelined LOST", count + 1 - seen)
        except OSError:
            tally.add("pipelined LOST", count + 1)


def uploader(port, stop, tally, size=4 << 20):
    piece = b"u" * (256 << 10)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                f = s.makefile("rb")
                s.sendall(b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n"
                          b"Expect: 100-continue\r\n\r\n" % size)
                first = read_response(f)
                if first is None or first[0] != 100:
                    tally.add("upload LOST")
                    continue
                for _ in range(size // len(piece)):
                    s.sendall(piece)
                    time.sleep(0.02)
                resp = read_response(f)
            tally.add("upload answered" if resp and resp == (200, b"%d" % size) else "upload LOST")
        except OSError:
            tally.add("upload LOST")


def slowloris(port, stop, tally):
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"GET / HTTP/1.1\r\n")
                while not stop.is_set():
                    s.sendall(b"X")
                    if stop.wait(1.0):
                        break
            tally.add("slowloris ended by the client")
        except OSError:
            tally.add("slowloris dropped by the server")


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_wrk(port, seconds):
    out = subprocess.run(["wrk", "-t1", "-c32", "-d%ds" % seconds, "--latency", "--timeout", "10s",
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout

    def find(pattern, default="0"):
        m = re.search(pattern, text)
        return m.group(1) if m else default

    def ms(value):
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", find(r"Socket errors: (.*)", "")))
    errors += int(find(r"Non-2xx or 3xx responses: (\d+)"))
    return {"requests_per_s": float(find(r"Requests/sec:\s+([\d.]+)")),
            "p99_ms": ms(find(r"99%\s+(\S+)", "0us")), "p50_ms": ms(find(r"50%\s+(\S+)", "0us")),
            "requests": int(find(r"(\d+) requests in")), "errors": errors}, text


def phase(name, port, pids, seconds, hostile):
    stop = threading.Event()
    tally = Tally()
    peak = {pid: proc_rss_kib(pid) for pid in pids}
    cpu0 = {pid: proc_cpu(pid) for pid in pids}

    def watch():
        while not stop.is_set():
            for pid in pids:
                peak[pid] = max(peak[pid], proc_rss_kib(pid))
            stop.wait(0.2)

    threads = [threading.Thread(target=watch, daemon=True)]
    if hostile:
        plan = [(half_closer, 4), (stream_leaver, 4), (flooder, 1), (uploader, 2)] + [(slowloris, 1)] * 50
        threads += [threading.Thread(target=fn, args=(port, stop, tally), daemon=True)
                    for fn, n in plan for _ in range(n)]
    for t in threads:
        t.start()
    wrk, text = run_wrk(port, seconds)
    stop.set()
    for t in threads:
        t.join(60)
    stuck = sum(t.is_alive() for t in threads)
    cpu = sum(proc_cpu(pid) - cpu0[pid] for pid in pids)
    lost = wrk["errors"] + sum(n for key, n in tally.counts.items() if "LOST" in key)
    return {"phase": name, "wrk": wrk, "hostile": dict(sorted(tally.counts.items())),
            "peak_rss_mib": {str(pid): round(kib / 1024, 1) for pid, kib in peak.items()},
            "worker_cpu_s": round(cpu, 2), "lost": lost, "clients_still_running": stuck}, text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--loop", default="cython")
    parser.add_argument("--name", default="soak")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-m", "fastcluster", "serve", "soak_app:app", "--bind",
                               "127.0.0.1:0", "--workers", "2", "--loop", args.loop],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lines, pids, port = [], [], None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = server.stdout.readline().decode()
        if not line:
            break
        lines.append(line)
        m = re.match(r"Process (\d+) listening on", line)
        if m:
            pids.append(int(m.group(1)))
        m = re.match(r"fastcluster: listening on http://[^:]+:(\d+)", line)
        if m:
            port = int(m.group(1))
    if port is None:
        os.killpg(server.pid, signal.SIGKILL)
        sys.exit("the server did not start:\n" + "".join(lines))
    threading.Thread(target=lambda: lines.extend(raw.decode() for raw in server.stdout), daemon=True).start()
    try:
        calm, calm_text = phase("calm", port, pids, args.seconds, False)
        hostile, hostile_text = phase("hostile", port, pids, args.seconds, True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    import fastcluster
    machine = "%s, %d CPUs, %s, Python %s, fastcluster %s" % (
        platform.machine(), os.cpu_count(), platform.release(), platform.python_version(), fastcluster.__version__)
    command = "python benchmarks/soak.py --seconds %d --loop %s --name %s" % (args.seconds, args.loop, args.name)
    result = {"command": command, "machine": machine, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "phases": [calm, hostile]}
    os.makedirs(RESULTS, exist_ok=True)
    base = os.path.join(RESULTS, args.name)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".log", "w") as f:
        f.write("".join(["== calm: wrk\n", calm_text, "\n== hostile: wrk\n", hostile_text, "\n== server\n"] + lines))
    rows = ["| phase | wrk req/s | wrk p50 ms | wrk p99 ms | wrk errors | hostile clients (count) "
            "| workers' peak RSS MiB | workers' CPU s | requests lost |", "|---|---|---|---|---|---|---|---|---|"]
    for p in (calm, hostile):
        w = p["wrk"]
        rows.append("| %s | %.0f | %.2f | %.2f | %d | %s | %s | %.1f | %d |" % (
            p["phase"], w["requests_per_s"], w["p50_ms"], w["p99_ms"], w["errors"],
            ", ".join("%s %d" % kv for kv in p["hostile"].items()) or "none",
            " / ".join(str(v) for v in p["peak_rss_mib"].values()), p["worker_cpu_s"], p["lost"]))
    text = "# Soak: ordinary clients beside hostile ones\n\n`%s`, %s, %s\n\n%s\n" % (
        command, result["when"], machine, "\n".join(rows))
    with open(base + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0 if calm["lost"] == 0 and hostile["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
