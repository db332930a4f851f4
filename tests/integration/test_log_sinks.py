"""Issue 28 row 12: `--access-log -` to a pipe nobody reads for a while never holds up requests;
lines past what is held are dropped and counted in /metrics, and lines go on once it is read."""

import re
import socket
import threading
import time
import urllib.request

from helpers import Server, read_response

AGENT = b"a" * 1000     # ~1.1 KiB lines: 2,000 of them are more than a pipe and the 1 MiB held
REQUESTS = 2000
BATCH = 50              # pipelined per write


class HeldStdout(Server):
    """A Server whose stdout is read up to the "listening" line, then left unread until resume()."""

    def __init__(self, *args, **kwargs):
        self.reading = threading.Event()
        super().__init__(*args, **kwargs)

    def _read(self, line):
        if line.startswith("fastcluster: listening on"):
            self.reading.wait()

    def resume(self):
        self.reading.set()

    def stop(self, timeout=30.0):
        self.resume()
        return super().stop(timeout)


def metric(lines, name):
    """Worker 1's value of the counter `name` on the /metrics endpoint the server's `lines` announce."""
    url = next(m.group(1) for m in map(re.compile(r"^fastcluster: metrics on (\S+)$").match, lines) if m)
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return int(re.search(r'^fastcluster_%s\{worker="1"\} (\d+)$' % name, text, re.M).group(1))


def dropped(server):
    return metric(server.lines, "access_log_dropped_lines_total")


def pipelined(sock, request, status):
    """REQUESTS of `request`, BATCH pipelined per write, each answered `status`; the seconds it took."""
    start = time.monotonic()
    with sock.makefile("rb") as replies:
        for _ in range(REQUESTS // BATCH):
            sock.sendall(request * BATCH)
            for _ in range(BATCH):     # (a worker blocked on its log times this out)
                resp = read_response(replies)
                assert resp is not None and resp.status == status
    return time.monotonic() - start


def test_access_log_to_a_pipe_nobody_reads(impl):
    request = b"GET /pid HTTP/1.1\r\nHost: t\r\nUser-Agent: " + AGENT + b"\r\n\r\n"
    with HeldStdout("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                    "--access-log", "-", "--metrics-bind", "127.0.0.1:0") as server:
        with server.connect(timeout=5) as sock:
            elapsed = pipelined(sock, request, 200)
        assert elapsed < 10, "%d requests took %.1f s" % (REQUESTS, elapsed)
        assert dropped(server) > 0
        # read again: what was held goes out, then the lines of new requests
        server.resume()
        with server.connect(timeout=5) as sock:
            sock.sendall(b"GET /after-the-drain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_response(sock.makefile("rb")).status == 404
        try:
            server.wait_line(r'"GET /after-the-drain HTTP/1\.1" 404 ', timeout=20)
        except AssertionError:     # (not the default message: it would print a megabyte of lines)
            raise AssertionError("no line for the request after the drain; %d lines, the last %r; stderr %r"
                                 % (len(server.lines), server.lines[-1][-300:], server.stderr())) from None
        lines = [line for line in server.lines if line.startswith("127.0.0.1 - - [")]
        assert all(LINE.match(line) for line in lines)          # whole lines, none cut or run together
        assert len(lines) + dropped(server) == REQUESTS + 1


LINE = re.compile(r'127\.0\.0\.1 - - \[[^]]+\] "GET /(pid|after-the-drain) HTTP/1\.1" (200|404) \d+ "-" '
                  r'"(a{1000}|-)" \d+ \d+$')


def test_the_workers_own_log_to_a_pipe_nobody_reads(impl):
    """The worker's own log (an app error's traceback for every request) on a stderr pipe nobody
    reads: no request waits for it; what is not held is dropped and counted in /metrics."""
    import os
    import signal
    import subprocess
    import sys

    from helpers import TESTS, kill_group

    env = dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "fastcluster", "serve", "apps.suite:app", "--bind", "127.0.0.1:0",
                             "--workers", "1", "--loop", impl, "--metrics-bind", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        lines, port = [], None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            assert line, "the server exited: %r" % lines
            lines.append(line.rstrip("\n"))
            m = re.match(r"fastcluster: listening on http://[^:]+:(\d+)$", lines[-1])
            port = int(m.group(1)) if m else None
        threading.Thread(target=lambda: lines.extend(raw.decode().rstrip("\n") for raw in proc.stdout),
                         daemon=True).start()
        request = b"GET /raise HTTP/1.1\r\nHost: t\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            elapsed = pipelined(sock, request, 500)
        assert elapsed < 10, "%d requests took %.1f s" % (REQUESTS, elapsed)
        assert metric(lines, "log_dropped_lines_total") > 0
    finally:
        drain = threading.Thread(target=proc.stderr.read, daemon=True)   # (the master logs its stop there)
        drain.start()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        kill_group(proc.pid)
        proc.wait(5)
        drain.join(10)
        proc.stdout.close()
        proc.stderr.close()
