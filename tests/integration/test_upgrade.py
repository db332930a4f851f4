"""Upgrade in place (SIGURG, `fastcluster upgrade --pid FILE`): a new master on the same socket,
new code included, with nothing failed under load; and a failed upgrade leaves the old one serving."""

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from helpers import TESTS, Server, pid_alive, wait_until
from test_supervision import Load

pytestmark = pytest.mark.timeout(120)

APP = '''
import os

VERSION = {version!r}


def app(environ, start_response):
    body = (b"%d" % os.getpid()) if environ["PATH_INFO"] == "/pid" else VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def write_app(directory, version, broken=False):
    (directory / "upapp.py").write_text(APP.format(version=version) + ("\ndef broken(:\n" if broken else ""))


def version_of(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def read_pid(path):
    with open(path) as f:
        return int(f.read())


def upgrade(pidfile):
    return subprocess.run([sys.executable, "-m", "fastcluster", "upgrade", "--pid", str(pidfile), "--wait", "60"],
                          capture_output=True, text=True, timeout=90)


def test_an_upgrade_in_place_under_load_brings_new_code_and_fails_nothing(impl, tmp_path):
    write_app(tmp_path, "v1")
    pidfile = tmp_path / "master.pid"
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + TESTS}
    server = Server("upapp:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl, "--pid", str(pidfile),
                    env=env)
    new_master = None
    try:
        old_master = server.master_pid
        assert version_of(server) == "v1" and read_pid(pidfile) == old_master
        load = Load(server)
        try:
            load.wait_for(300)
            write_app(tmp_path, "v2")
            out = upgrade(pidfile)
            assert out.returncode == 0, out.stderr
            new_master = read_pid(pidfile)
            assert new_master != old_master and "took over from %d" % old_master in out.stdout
            assert server.wait(timeout=60) == 0          # the old master drained and exited cleanly
            start = load.ok
            load.wait_for(start + 300)
        finally:
            load.stop()
        assert load.failures == [], load.failures[:5]
        assert version_of(server) == "v2"
        assert pid_alive(new_master)
        assert "upgrade: the new master is ready" in server.stderr()
    finally:
        if new_master is not None and pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: not pid_alive(new_master), timeout=30, what="the new master to stop")
        server.stop()


def test_a_failed_upgrade_leaves_the_old_master_serving(impl, tmp_path):
    write_app(tmp_path, "v1")
    pidfile = tmp_path / "master.pid"
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + TESTS}
    with Server("upapp:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--pid", str(pidfile),
                env=env) as server:
        old_master = server.master_pid
        write_app(tmp_path, "v2", broken=True)
        server.signal(signal.SIGURG)
        wait_until(lambda: "upgrade failed: the new master" in server.stderr(), timeout=60, what="the failure",
                   server=server)
        assert "SyntaxError" in server.stderr()          # the new master's own error is shown
        assert version_of(server) == "v1" and read_pid(pidfile) == old_master and pid_alive(old_master)
        # and a later upgrade, once the code is fixed, goes through
        write_app(tmp_path, "v3")
        out = upgrade(pidfile)
        assert out.returncode == 0, out.stderr
        new_master = read_pid(pidfile)
        try:
            assert server.wait(timeout=60) == 0 and version_of(server) == "v3"
        finally:
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: not pid_alive(new_master), timeout=30, what="the new master to stop")


def test_an_upgrade_hands_over_a_fixed_metrics_port(tmp_path):
    """--metrics-bind on a fixed port: the new master adopts the old one's metrics socket (it could
    not bind the port the old one holds), and from then on the scrapes show its own workers."""
    write_app(tmp_path, "v1")
    pidfile = tmp_path / "master.pid"
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + TESTS}
    with socket.socket() as probe:          # a free port, named on the command line as a user would
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Server("upapp:app", "--bind", "127.0.0.1:0", "--workers", "1", "--pid", str(pidfile),
                    "--metrics-bind", "127.0.0.1:%d" % port, env=env)
    new_master = None
    try:
        old_master, old_worker = server.master_pid, server.worker_pids[0]
        assert 'pid="%d"' % old_worker in scrape(port)
        out = upgrade(pidfile)
        assert out.returncode == 0, out.stderr + server.stderr()
        new_master = read_pid(pidfile)
        assert new_master != old_master
        assert server.wait(timeout=60) == 0                  # the old master drained and exited
        assert "cannot bind" not in server.stderr()
        new_workers = set(server.worker_pids) - {old_worker}
        page = scrape(port)                                  # the same port, now the new master's
        assert {int(p) for p in re.findall(r'fastcluster_worker_info\{[^}]*pid="(\d+)"', page)} == new_workers
    finally:
        if new_master is not None and pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: not pid_alive(new_master), timeout=30, what="the new master to stop")
        server.stop()


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as resp:
        return resp.read().decode()
