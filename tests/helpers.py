"""Run real fastcluster servers in subprocesses and talk to them with real clients.

Readiness is the server's own "fastcluster: listening on" line, never a sleep.
Every wait has a deadline, and `stop()` leaves no process behind.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

import importlib.util

import pytest

NO_EXTENSIONS = bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS"))
HAS_EXTENSION = importlib.util.find_spec("fastcluster._parser") is not None

# Every server test runs on both loops.  Without the extension the cython cases are
# skipped only where FASTCLUSTER_NO_EXTENSIONS says so; otherwise they fail (and the
# guard test in test_extension.py says why).
IMPLS = [
    pytest.param("cython", id="cython",
                 marks=pytest.mark.skipif(NO_EXTENSIONS and not HAS_EXTENSION,
                                          reason="built with FASTCLUSTER_NO_EXTENSIONS")),
    pytest.param("python", id="python"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
START_TIMEOUT = 30.0


class Server:
    """`python -m fastcluster serve ...` in its own session, stdout read by a thread."""

    def __init__(self, *args, env=None, wait=True, pass_fds=(), prefix=()):
        """`prefix`: a command that runs the server (`ip netns exec NS`), in the same process."""
        self.args = [*prefix, sys.executable, "-m", "fastcluster", "serve", *args]
        # The server's processes append (O_APPEND) to one file; the test reads it through its own
        # descriptor, so reading never moves the offset the servers write at.
        fd, self.stderr_path = tempfile.mkstemp(prefix="fastcluster-test-", suffix=".log")
        os.close(fd)
        self.stderr_file = open(self.stderr_path, "ab")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = TESTS + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self.stderr_file,
                                     stdin=subprocess.DEVNULL, env=full_env, start_new_session=True,
                                     pass_fds=pass_fds)
        self.lines = []
        self.line_queue = queue.Queue()
        self.worker_pids = []
        self.master_pid = None
        self.url = None
        self._stderr_text = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if wait:
            try:
                self.wait_listening()
            except BaseException:
                self.stop()   # a server that failed to start leaves no process and no open file
                raise

    def _read_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._note(line)
            self.lines.append(line)
            self.line_queue.put(line)
            self._read(line)
        self.line_queue.put(None)

    def _read(self, line):
        """After each stdout line is taken (a subclass may hold the reading here)."""

    def wait_line(self, pattern, timeout=START_TIMEOUT):
        """Block until a stdout line matches `pattern`; return the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no line matching %r in %.0f s; stdout %r, stderr %r"
                                     % (pattern, timeout, self.lines, self.stderr()))
            try:
                line = self.line_queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("server exited (%s) before printing %r; stdout %r, stderr %r"
                                     % (self.proc.wait(), pattern, self.lines, self.stderr()))
            match = regex.search(line)
            if match:
                return match

    def _note(self, line):
        m = re.match(r"Process (\d+) listening on", line)
        if m:
            self.worker_pids.append(int(m.group(1)))
        m = re.match(r"Master PID: (\d+)", line)
        if m:
            self.master_pid = int(m.group(1))

    def wait_listening(self, timeout=START_TIMEOUT):
        self.url = self.wait_line(r"^fastcluster: listening on (\S+)$", timeout).group(1)
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        return self

    def stderr(self):
        if os.path.exists(self.stderr_path):
            with open(self.stderr_path, "rb") as f:
                self._stderr_text = f.read().decode("utf-8", "replace")
        return self._stderr_text

    def signal(self, signum):
        os.kill(self.proc.pid, signum)

    def wait(self, timeout=30.0):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=30.0):
        """SIGTERM, wait, and make sure nothing of the process group survives."""
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        kill_group(self.proc.pid)
        self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self.stderr()
        self.stderr_file.close()
        os.unlink(self.stderr_path)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def connect(self, timeout=10.0):
        return Client(socket.create_connection((self.host, self.port), timeout=timeout))


class Client:
    """A client socket whose close() also closes the files made from it."""

    def __init__(self, sock):
        self.sock = sock
        self.files = []

    def makefile(self, mode="rb"):
        f = self.sock.makefile(mode)
        self.files.append(f)
        return f

    def close(self):
        for f in self.files:
            f.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self.sock, name)


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pid_alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition", server=None):
    """Poll `predicate` until true; on timeout fail, with the server's log when one is given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = ""
    if server is not None:
        detail = "\nstdout: %s\nstderr (last 3000 chars): %s" % (server.lines, server.stderr()[-3000:])
    raise AssertionError("timed out after %.1f s waiting for %s%s" % (timeout, what, detail))


class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status, self.reason, self.headers, self.body, self.version = status, reason, headers, body, version
        self.trailers = []        # a chunked body's trailer fields

    def header(self, name, default=None):
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else default

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:80])


def read_response(f, head=False):
    """Read one HTTP/1.x response from a buffered binary file; None at a clean EOF."""
    line = f.readline()
    if not line:
        return None
    version, status, reason = (line.decode("latin-1").rstrip("\r\n").split(" ", 2) + [""])[:3]
    headers = []
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers.append((name, value.strip()))
    resp = Response(int(status), reason, headers, b"", version)
    code = int(status)
    if head or code < 200 or code in (204, 304):
        return resp
    te = resp.header("Transfer-Encoding")
    if te and "chunked" in te.lower():
        body = []
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while True:
                    line = f.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    resp.trailers.append((name, value.strip()))
                break
            body.append(f.read(size))
            f.readline()
        resp.body = b"".join(body)
    elif resp.header("Content-Length") is not None:
        resp.body = f.read(int(resp.header("Content-Length")))
    else:
        resp.body = f.read()
    return resp


def exchange(server, data, count=1, head=False, timeout=10.0):
    """Send raw bytes on a new connection, read `count` responses, return them with the socket."""
    sock = server.connect(timeout)
    sock.sendall(data)
    f = sock.makefile("rb")
    responses = [read_response(f, head=head) for _ in range(count)]
    return responses, sock, f


def get(server, path="/"):
    """One GET of `path` on a new connection that asks to close; its Response."""
    sock = server.connect()
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode())
        return read_response(sock.makefile("rb"))
    finally:
        sock.close()


def exit_of(*args, timeout=20.0):
    """Run a server that is expected not to start; (its exit code, what it wrote on stderr)."""
    server = Server(*args, wait=False)
    try:
        code = server.wait(timeout=timeout)
    finally:
        server.stop()
    return code, server.stderr()


def read_to_eof(sock):
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def at_eof(sock, f, timeout=5.0):
    """True when the server closed the connection (nothing more to read)."""
    sock.settimeout(timeout)
    try:
        return f.read(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)
