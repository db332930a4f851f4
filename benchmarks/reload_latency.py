"""How soon an edit is served under --reload: python benchmarks/reload_latency.py [EDITS]

For each way of noticing edits (watchfiles, and polling with watchfiles hidden by
tests/shims/no_watchfiles), a 2-worker fastcluster serves a one-file app from a temporary
directory; each edit rewrites the file with a new body, and the time from the save until 8
requests in a row on fresh connections (so both workers) answer the new body is recorded.
Prints one line per edit and the median and maximum per engine (the issue's bound: 2 s).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = ('def app(environ, start_response):\n'
       '    start_response("200 OK", [("Content-Type", "text/plain")])\n'
       '    return [b"%s"]\n')


def get(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data.split(b"\r\n\r\n", 1)[-1]
            data += chunk


def run(engine, edits):
    project = tempfile.mkdtemp(prefix="fc-reload-")
    source = os.path.join(project, "reloadme.py")
    with open(source, "w") as f:
        f.write(APP % "v0")
    path = project + (os.pathsep + os.path.join(ROOT, "tests", "shims", "no_watchfiles") if engine == "polling" else "")
    proc = subprocess.Popen([sys.executable, "-m", "fastcluster", "serve", "reloadme:app", "--bind", "127.0.0.1:0",
                             "--workers", "2", "--reload", "--reload-dir", project],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONPATH=path), start_new_session=True)
    times = []
    try:
        port = None
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            m = re.match(r"fastcluster: listening on http://127.0.0.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
            if time.monotonic() > deadline:
                break
        if port is None:
            raise RuntimeError("the server did not start")
        for i in range(1, edits + 1):
            time.sleep(0.5)                      # (between edits: let the last restart settle)
            body = b"v%d" % i
            with open(source, "w") as f:
                f.write(APP % body.decode())
            saved = time.monotonic()
            streak = 0
            while streak < 8:
                if time.monotonic() - saved > 20:
                    raise RuntimeError("edit %d not served after 20 s" % i)
                streak = streak + 1 if get(port) == body else 0
            times.append(time.monotonic() - saved)
            print("%-10s edit %2d served by every worker %.3f s after the save" % (engine, i, times[-1]), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(project, ignore_errors=True)
    return times


def main():
    edits = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print("machine: %d CPUs, Linux %s, Python %s; %s" % (os.cpu_count(), os.uname().release, sys.version.split()[0],
                                                       time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    for engine in ("watchfiles", "polling"):
        times = run(engine, edits)
        print("%-10s median %.3f s, max %.3f s over %d edits" % (engine, statistics.median(times), max(times), edits))


if __name__ == "__main__":
    main()
