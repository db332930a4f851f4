"""Two hosts behind HAProxy: network namespaces made and removed here (as root, like CI), one
fastcluster in each, HAProxy in front with HTTP checks on the health path every 200 ms and no
retries or redispatch, wrk through HAProxy for the whole run. A rolling deploy over both hosts
(stop one, start it again, then the other), and then `fastcluster upgrade` on each: 0 failed
requests. Skipped, with the reason, where namespaces, HAProxy or wrk are not available."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from helpers import IMPLS, Server, pid_alive, wait_until

pytestmark = pytest.mark.timeout(240)

SUBNETS = ("10.231.71", "10.231.72")     # host side .1, namespace side .2


def _run(*cmd, check=True):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=check)


def _skip_reason():
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "haproxy", "wrk"):
        if shutil.which(tool) is None:
            return "%s is not installed (.ci/run installs it)" % tool
    probe = "fc-probe-%s" % uuid.uuid4().hex[:6]
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return "network namespaces are not permitted here: %s" % made.stderr.strip()
    _run("ip", "netns", "del", probe, check=False)
    return None


class Host:
    """A network namespace with a veth pair to this one; removed by close()."""

    def __init__(self, index):
        tag = uuid.uuid4().hex[:5]
        self.ns = "fc-h%d-%s" % (index, tag)
        self.outer, self.inner = "fcv%d%so" % (index, tag), "fcv%d%si" % (index, tag)
        net = SUBNETS[index]
        self.addr = net + ".2"
        _run("ip", "netns", "add", self.ns)
        try:
            _run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
            _run("ip", "link", "set", self.inner, "netns", self.ns)
            _run("ip", "addr", "add", net + ".1/24", "dev", self.outer)
            _run("ip", "link", "set", self.outer, "up")
            _run("ip", "netns", "exec", self.ns, "ip", "addr", "add", self.addr + "/24", "dev", self.inner)
            _run("ip", "netns", "exec", self.ns, "ip", "link", "set", self.inner, "up")
            _run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self):
        _run("ip", "link", "del", self.outer, check=False)      # (removes its peer too)
        _run("ip", "netns", "del", self.ns, check=False)


HAPROXY = """
global
    maxconn 1000
    stats socket {stats} mode 600 level user
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0
    option http-keep-alive
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{servers}
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_in(host, impl, pidfile):
    return Server("apps.suite:app", "--bind", "%s:8000" % host.addr, "--workers", "2", "--loop", impl,
                  "--health-path", "/healthz", "--shutdown-delay", "1", "--pid", pidfile,
                  prefix=["ip", "netns", "exec", host.ns])


def _wrk_result(out):
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return requests, failed


def _both_up(stats):
    """HAProxy itself counts both hosts UP (its stats socket). Two different pids through HAProxy
    would not tell: each host runs two workers, so they could both be one host's while HAProxy
    still waits for its next check of the host just started."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        try:
            s.connect(stats)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return False
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    status = {row[1]: row[17] for row in rows if len(row) > 17 and row[0] == "app"}
    return all(status.get(name, "").startswith("UP") for name in ("h0", "h1"))


@pytest.mark.parametrize("impl", IMPLS)
def test_rolling_deploy_and_upgrade_over_two_hosts_behind_haproxy_fail_nothing(impl, tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    hosts, servers, haproxy, wrk = [], {}, None, None
    try:
        hosts = [Host(0), Host(1)]
        pids = [str(tmp_path / ("host%d.pid" % i)) for i in range(2)]
        for i, host in enumerate(hosts):
            servers[i] = _serve_in(host, impl, pids[i])
        port = _free_port()
        cfg = tmp_path / "haproxy.cfg"
        stats = str(tmp_path / "haproxy.sock")
        cfg.write_text(HAPROXY.format(port=port, stats=stats, servers="\n".join(
            "    server h%d %s:8000 check" % (i, host.addr) for i, host in enumerate(hosts))))
        with open(tmp_path / "haproxy.log", "wb") as haproxy_log:
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                       stderr=haproxy_log, start_new_session=True)
        wait_until(lambda: _both_up(stats), timeout=20, what="HAProxy to reach both hosts")
        wrk = subprocess.Popen(["wrk", "-t1", "-c50", "-d120s", "http://127.0.0.1:%d/pid" % port],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        time.sleep(1.0)          # (not a readiness wait: traffic before the deploy)
        # a rolling deploy: each host stopped (SIGTERM: 503 on the health path, then a drain) and started again
        for i, host in enumerate(hosts):
            assert servers[i].stop() == 0
            servers[i] = _serve_in(host, impl, pids[i])
            wait_until(lambda: _both_up(stats), timeout=20, what="host %d back in HAProxy" % i)
        # then an upgrade in place on each host
        for i in range(2):
            old = servers[i].master_pid
            out = subprocess.run([sys.executable, "-m", "fastcluster", "upgrade", "--pid", pids[i], "--wait", "60"],
                                 capture_output=True, text=True, timeout=90)
            assert out.returncode == 0, out.stderr
            assert servers[i].wait(timeout=60) == 0 and not pid_alive(old)
        time.sleep(1.0)          # (traffic after the last change)
        wrk.send_signal(signal.SIGINT)
        out = wrk.communicate(timeout=30)[0]
        wrk = None
        requests, failed = _wrk_result(out)
        print("multi-host run (%s): %d requests through HAProxy, %d failed" % (impl, requests, failed))
        assert requests > 1000, out
        assert failed == 0, out
    finally:
        if wrk is not None:
            wrk.kill()
            wrk.communicate()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        for i, server in servers.items():
            try:
                with open(pids[i]) as f:
                    new = int(f.read())
                if pid_alive(new):
                    os.kill(new, signal.SIGTERM)
                    wait_until(lambda: not pid_alive(new), timeout=30, what="host %d's master to stop" % i)
            except (OSError, ValueError):
                pass
            server.stop()
        for host in hosts:
            host.close()
