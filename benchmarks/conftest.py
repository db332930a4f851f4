"""Fixtures for the speed suites: both loops, in-process and live.

Run:  pip install -e ".[bench]" && pytest benchmarks/ --benchmark-only
"""

import importlib
import os
import socket
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

from bench_app import app as hello_app  # noqa: E402
from helpers import IMPLS, Server  # noqa: E402

from fastcluster.config import Config  # noqa: E402

REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


class Exchange:
    """A client socket plus how many bytes one response takes (constant for the hello app)."""

    def __init__(self, sock, pump=None):
        self.sock = sock
        self.pump = pump          # in-process: run the server side of one read
        self.size = 0
        self.size = len(self.roundtrip(REQUEST, 1, exact=False))

    def roundtrip(self, data, count, exact=True):
        self.sock.sendall(data)
        if self.pump is not None:
            self.pump()
        want = count * self.size
        got = bytearray()
        while (len(got) < want) if exact else (b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 36):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise AssertionError("server closed the connection")
            got += chunk
        if exact:
            assert len(got) == want and got.count(b"HTTP/1.1 200 OK\r\n") == count
        return bytes(got)


@pytest.fixture
def in_process_connection(impl, tmp_path):
    """One connection of the loop over a socketpair: (connection, client socket)."""
    module = importlib.import_module("fastcluster._parser" if impl == "cython" else "fastcluster._parser_py")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "l.sock"))
    listener.listen()
    server = module.Server(listener, hello_app, Config(workers=2))
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)
    conn = server.adopt(ours)
    yield conn, theirs
    conn.close()
    theirs.close()
    listener.close()


@pytest.fixture
def in_process(in_process_connection):
    """The loop's connection driven directly: no epoll wait, no other process."""
    conn, client = in_process_connection
    return Exchange(client, conn.on_readable)


def _live(impl, app):
    env = {"PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = Server(app, "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, env=env)
    server.impl = impl
    return server


@pytest.fixture(scope="module", params=IMPLS)
def live(request):
    """`fastcluster serve bench_app:app --workers 1` as a real process, per loop."""
    server = _live(request.param, "bench_app:app")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=IMPLS)
def live_asgi(request):
    """The same hello as an ASGI app (bench_asgi:app), on the default event loop."""
    server = _live(request.param, "bench_asgi:app")
    yield server
    server.stop()


def cpu_seconds(pid):
    """user+sys CPU time of one process, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
