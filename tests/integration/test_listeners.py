"""Every --bind, served by every worker: a TCP and a unix listener side by side, through a rolling
restart and an upgrade in place; a bind that cannot be served stops the start (issue 31: before,
`--bind A --bind B` listened on B alone, silently)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from helpers import IMPLS, TESTS, Server, pid_alive, wait_until

pytestmark = pytest.mark.timeout(120)


def _unix_get(path, target=b"/pid", before=b"", headers=b""):
    """GET `target` on a connection of its own to the unix socket at `path` (`before`: bytes sent
    ahead of the request, as a PROXY header): the status and the body."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    try:
        sock.connect(path)
        sock.sendall(before + b"GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n" % (target, headers))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _tcp_get(port, target="/pid"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _pids_behind(open_one, count=12):
    """The workers answering `count` connections open at once (so that balancing spreads them)."""
    socks = [open_one() for _ in range(count)]
    pids = set()
    try:
        for sock in socks:
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in socks:
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().split(b"\r\n\r\n", 1)[1]:
                chunk = sock.recv(4096)
                assert chunk, "closed before its answer"
                data += chunk
            pids.add(int(data.split(b"\r\n\r\n", 1)[1]))
    finally:
        for sock in socks:
            sock.close()
    return pids


def _status(pidfile):
    out = subprocess.run([sys.executable, "-m", "fastcluster", "status", "--pid", str(pidfile), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _unix_connect(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    return sock


@pytest.mark.parametrize("impl", IMPLS)
def test_every_worker_serves_every_bind(impl, tmp_path):
    path = str(tmp_path / "s.sock")
    pidfile = tmp_path / "master.pid"
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--bind", "unix:" + path, "--workers", "2",
                "--loop", impl, "--pid", str(pidfile)) as server:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)     # (a line for each, in order)
        assert server.url.startswith("http://127.0.0.1:")
        assert _tcp_get(server.port)[0] == 200 and _unix_get(path)[0] == 200
        workers = set(server.worker_pids)
        assert len(workers) == 2
        # each worker serves both: connections held at once on either listener reach both workers
        wait_until(lambda: _pids_behind(lambda: socket.create_connection(("127.0.0.1", server.port), 10))
                   == workers, timeout=30, what="both workers behind the TCP listener", server=server)
        wait_until(lambda: _pids_behind(lambda: _unix_connect(path)) == workers, timeout=30,
                   what="both workers behind the unix listener", server=server)
        assert _status(pidfile)["listening"] == [server.url, "unix:" + path]
        # the environ's SERVER_* keys follow the listener the request came in on
        unix_env = json.loads(_unix_get(path, b"/environ")[1])
        tcp_env = json.loads(_tcp_get(server.port, "/environ")[1])
        assert (unix_env["SERVER_NAME"], unix_env["SERVER_PORT"], unix_env["REMOTE_ADDR"]) == ("localhost", "80", "")
        assert (tcp_env["SERVER_NAME"], tcp_env["SERVER_PORT"]) == ("127.0.0.1", str(server.port))
        assert tcp_env["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize("impl", IMPLS)
def test_a_rolling_restart_fails_nothing_on_either_bind(impl, tmp_path):
    path = str(tmp_path / "s.sock")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--bind", "unix:" + path, "--workers", "2",
                "--loop", impl) as server:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
        old = set(server.worker_pids)
        failures, done = [], {"tcp": 0, "unix": 0}
        stop = threading.Event()

        def load(kind):
            while not stop.is_set():
                try:
                    status = (_tcp_get(server.port) if kind == "tcp" else _unix_get(path))[0]
                    if status != 200:
                        failures.append((kind, status))
                    done[kind] += 1
                except Exception as exc:  # every failure is counted and reported
                    failures.append((kind, repr(exc)))

        threads = [threading.Thread(target=load, args=(kind,)) for kind in ("tcp", "unix")]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: min(done.values()) >= 50, timeout=30, what="load on both binds")
            server.signal(signal.SIGUSR2)
            wait_until(lambda: len(set(server.worker_pids) - old) >= 2 and not any(pid_alive(p) for p in old),
                       timeout=60, what="both workers replaced", server=server)
            start = dict(done)
            wait_until(lambda: all(done[k] >= start[k] + 50 for k in done), timeout=30,
                       what="load after the restart")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert failures == [], failures[:5]


def test_an_upgrade_in_place_keeps_every_bind(tmp_path):
    path = str(tmp_path / "s.sock")
    pidfile = tmp_path / "master.pid"
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--bind", "unix:" + path, "--workers", "1",
                    "--pid", str(pidfile), env={"PYTHONPATH": TESTS})
    new_master = None
    try:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
        old_master = server.master_pid
        out = subprocess.run([sys.executable, "-m", "fastcluster", "upgrade", "--pid", str(pidfile), "--wait", "60"],
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        with open(pidfile) as f:
            new_master = int(f.read())
        assert new_master != old_master
        assert server.wait(timeout=60) == 0
        assert _status(pidfile)["listening"] == [server.url, "unix:" + path]
        tcp_pid, unix_pid = int(_tcp_get(server.port)[1]), int(_unix_get(path)[1])
        assert tcp_pid == unix_pid                   # (one worker, the new master's)
        with open("/proc/%d/stat" % tcp_pid) as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == new_master
    finally:
        if new_master is not None and pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: not pid_alive(new_master), timeout=30, what="the new master to stop")
        server.stop()


def test_a_bind_that_cannot_be_served_stops_the_start(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "fastcluster", "serve", "--bind", "127.0.0.1:0",
                              "--bind", "127.0.0.1:%d" % port, "--workers", "1"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert "cannot bind 127.0.0.1:%d: address already in use" % port in out.stderr
        assert "listening on" not in out.stdout
    finally:
        taken.close()


def _unix_environ(path, before=b""):
    return json.loads(_unix_get(path, b"/environ", before, b"X-Forwarded-For: 203.0.113.9\r\n")[1])


@pytest.mark.parametrize("impl", IMPLS)
def test_proxy_trust_on_a_unix_listener(impl, tmp_path):
    """A unix socket's peer is a local proxy, trusted; with --proxy-protocol the peer is the one
    the PROXY header names, and its X-Forwarded-For counts only if that address is allowed."""
    path = str(tmp_path / "s.sock")
    with Server("apps.suite:app", "--bind", "unix:" + path, "--workers", "1", "--loop", impl, wait=False) as server:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
        assert _unix_environ(path)["REMOTE_ADDR"] == "203.0.113.9"
    with Server("apps.suite:app", "--bind", "unix:" + path, "--workers", "1", "--loop", impl, "--proxy-protocol",
                wait=False) as server:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
        env = _unix_environ(path, b"PROXY TCP4 192.0.2.44 198.51.100.1 56324 443\r\n")
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.44", "56324")   # not the header's claim
        env = _unix_environ(path, b"PROXY TCP4 127.0.0.1 198.51.100.1 56324 443\r\n")
        assert env["REMOTE_ADDR"] == "203.0.113.9"          # an allowed peer's header counts
