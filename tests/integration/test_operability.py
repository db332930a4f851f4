"""Operability on both loops: /metrics, `fastcluster status`, the access log, log formats, titles.

Counts are checked against what the test's own clients sent: every request goes over raw
sockets whose bytes the test knows, so the server's counters must match exactly.
"""

import errno
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import TESTS, Server, read_response, read_to_eof, wait_until

pytestmark = pytest.mark.timeout(90)

LINE = re.compile(r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "(.*)" (\d{3}) (\d+|-) "(.*)" "(.*)" '
                  r'(\d+) (\d+)$')


def metrics_url(server):
    for line in server.lines:
        m = re.match(r"^fastcluster: metrics on (\S+)$", line)
        if m:
            return m.group(1)
    raise AssertionError("no metrics line in %r" % server.lines)


def scrape(server):
    """{(name, labels as a sorted tuple): value}, parsed by the Prometheus client's parser."""
    with urllib.request.urlopen(metrics_url(server), timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples, name, **labels):
    """Sum of a metric over the series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def talk(server, requests, expect):
    """Send raw `requests` on one connection, read `expect` responses and then EOF; bytes each way."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(requests)
    received = read_to_eof(sock)
    sock.close()
    assert received.count(b"HTTP/1.1 ") == expect, received[:500]
    return len(requests), len(received)


def get(path, close=False, agent=None):
    extra = "User-Agent: %s\r\n" % agent if agent else ""
    return ("GET %s HTTP/1.1\r\nHost: t\r\n%s%s\r\n" % (path, extra, "Connection: close\r\n" if close else "")
            ).encode("latin-1")


def test_metrics_add_up_to_what_the_clients_sent(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--metrics-bind", "127.0.0.1:0") as server:
        sent = received = 0
        for _ in range(4):   # 4 connections x 15 pipelined requests, the last one closing
            a, b = talk(server, get("/") * 14 + get("/", close=True), 15)
            sent, received = sent + a, received + b
        a, b = talk(server, get("/nope") * 6 + get("/nope", close=True), 7)           # 404s
        sent, received = sent + a, received + b
        a, b = talk(server, get("/raise") * 2 + get("/raise", close=True), 3)         # 500s
        sent, received = sent + a, received + b
        for bad in (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", b"GARBAGE\r\n\r\n",
                    b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"):
            a, b = talk(server, bad, 1)
            sent, received = sent + a, received + b
        wait_until(lambda: total(scrape(server), "fastcluster_connections_open") == 0, what="connections closed",
                   server=server)
        m = scrape(server)
        assert total(m, "fastcluster_requests_total") == 60 + 7 + 3
        assert total(m, "fastcluster_responses_total", **{"class": "2xx"}) == 60
        assert total(m, "fastcluster_responses_total", **{"class": "4xx"}) == 7 + 3
        assert total(m, "fastcluster_responses_total", **{"class": "5xx"}) == 3
        assert total(m, "fastcluster_refused_requests_total", reason="400") == 2
        assert total(m, "fastcluster_refused_requests_total", reason="414") == 1
        assert total(m, "fastcluster_refused_requests_total") == 3
        assert total(m, "fastcluster_connections_total") == 9
        assert total(m, "fastcluster_received_bytes_total") == sent
        assert total(m, "fastcluster_sent_bytes_total") == received
        assert total(m, "fastcluster_requests_in_flight") == 0
        assert total(m, "fastcluster_worker_restarts_total") == 0
        assert m[("fastcluster_workers_wanted", ())] == 2 and m[("fastcluster_generation", ())] == 1
        pids = {dict(ls)["pid"] for (n, ls) in m if n == "fastcluster_worker_info"}
        assert pids == {str(p) for p in server.worker_pids}
        for worker in ("1", "2"):
            assert total(m, "fastcluster_worker_rss_bytes", worker=worker) > 4 << 20
            assert total(m, "fastcluster_worker_last_heartbeat_timestamp_seconds", worker=worker) > 1.7e9


def test_in_flight_and_open_connections_are_live(impl, tmp_path):
    marker = str(tmp_path / "in-flight")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--metrics-bind", "127.0.0.1:0") as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(get("/sleep?s=1.5&marker=%s" % marker) + get("/"))   # the second waits behind the first
        wait_until(lambda: os.path.exists(marker), what="the request in the app", server=server)
        # the worker is busy in the app: the master answers from the board alone
        m = scrape(server)
        assert total(m, "fastcluster_requests_in_flight") == 2
        assert total(m, "fastcluster_connections_open") == 1
        f = sock.makefile("rb")
        assert read_response(f).status == 200 and read_response(f).status == 200
        wait_until(lambda: total(scrape(server), "fastcluster_requests_in_flight") == 0, what="in flight 0")
        sock.close()
        f.close()
        wait_until(lambda: total(scrape(server), "fastcluster_connections_open") == 0, what="closed")


def test_counters_carry_over_restarts_by_cause(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--metrics-bind", "127.0.0.1:0") as server:
        talk(server, get("/") * 9 + get("/", close=True), 10)
        victim = server.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(server.worker_pids) == 3, what="a replacement", server=server)
        talk(server, get("/") * 4 + get("/", close=True), 5)
        server.signal(signal.SIGUSR2)
        wait_until(lambda: "rolling restart complete" in server.stderr(), timeout=20, what="the rollout",
                   server=server)
        talk(server, get("/") * 2 + get("/", close=True), 3)
        # "complete" is logged once the last replacement is ready; the worker it replaced is
        # counted when it has drained and exited
        wait_until(lambda: total(scrape(server), "fastcluster_worker_restarts_total", cause="rollout") == 2,
                   what="the replaced workers to exit", server=server)
        m = scrape(server)
        assert total(m, "fastcluster_requests_total") == 18
        assert total(m, "fastcluster_responses_total", **{"class": "2xx"}) == 18
        assert total(m, "fastcluster_worker_restarts_total", cause="crash") == 1
        assert total(m, "fastcluster_worker_restarts_total", cause="rollout") == 2
        assert total(m, "fastcluster_worker_restarts_total", cause="recycle") == 0
        assert total(m, "fastcluster_worker_restarts_total", cause="timeout") == 0
        assert m[("fastcluster_generation", ())] == 2
        gens = {dict(ls)["generation"] for (n, ls) in m if n == "fastcluster_worker_info"}
        assert gens == {"2"}


def test_metrics_endpoint_answers_only_metrics_and_never_blocks():
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1",
                "--metrics-bind", "127.0.0.1:0") as server:
        host, port = re.match(r"http://([\d.]+):(\d+)/", metrics_url(server)).groups()
        idle = socket.create_connection((host, int(port)), timeout=10)   # a scraper that never asks
        idle.sendall(b"GET /met")
        for method, path, status in (("GET", "/", 404), ("POST", "/metrics", 405), ("HEAD", "/metrics", 200),
                                     ("GET", "/metrics?x=1", 200)):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == status, (method, path)
            assert (body == b"") == (method == "HEAD")
            assert (b"fastcluster_requests_total" in body) == (method == "GET" and status == 200)
            conn.close()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"\x00\x01 nonsense\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
        idle.close()
        # and the server itself kept serving
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(get("/", close=True))
            assert read_to_eof(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def test_metrics_bind_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "fastcluster", "serve", "--bind", "127.0.0.1:0",
                              "--metrics-bind", "127.0.0.1:%d" % port], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == ("fastcluster: error: --metrics-bind: cannot bind 127.0.0.1:%d: address already "
                                  "in use" % port)


def status_of(pidfile):
    out = subprocess.run([sys.executable, "-m", "fastcluster", "status", "--pid", pidfile],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


ROW = re.compile(r"^\s*(?P<slot>\d+)\s+(?P<pid>\d+)\s+(?P<gen>\d+)\s+(?P<state>\w+)\s+\S+\s+(?P<requests>\d+)\s+"
                 r"(?P<inflight>\d+)\s+(?P<busy>\d+)\s+(?P<conns>\d+)\s+\S+ \S+\s+\S+ \S+\s+"
                 r"(?P<ok>\d+)\s+(?P<client>\d+)\s+"
                 r"(?P<failed>\d+)\s+(?P<refused>\d+)\s+\S+ \S+\s+\S+$")


def status_row(line):
    m = ROW.match(line)
    assert m, line
    return m.groupdict()


def test_status_shows_the_numbers_during_a_rolling_restart(impl, tmp_path):
    pidfile = str(tmp_path / "fc.pid")
    marker = str(tmp_path / "slow")
    with Server("apps.slowstart:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--pid", pidfile, env={"SLOWSTART_MARKER": marker}) as server:
        talk(server, get("/") * 11 + get("/", close=True), 12)
        talk(server, get("/raise", close=True), 1)
        old = list(server.worker_pids)
        with open(marker, "w") as f:
            f.write("4")     # each replacement takes 4 s to import the app
        server.signal(signal.SIGUSR2)
        wait_until(lambda: "rolling restart in progress: starting pid" in status_of(pidfile), what="the rollout",
                   server=server)
        wait_until(lambda: os.path.exists(marker + ".sleeping"), what="the first replacement to import the app",
                   server=server)
        os.unlink(marker)    # the first replacement is sleeping; the second starts quickly
        text = status_of(pidfile)
        assert re.search(r"^master %d: generation 2, 2 workers wanted, loop %s$" % (server.proc.pid, impl), text,
                         re.M), text
        lines = text.splitlines()
        assert lines[1] == "listening on %s" % server.url, text
        table = [i for i, line in enumerate(lines) if line.split()[:2] == ["slot", "pid"]][0]
        rows = {int(row["pid"]): row for row in map(status_row, lines[table + 1:])}
        assert set(old) < set(rows) and len(rows) == 3, text          # both old workers and one new
        new = (set(rows) - set(old)).pop()
        assert rows[new]["state"] == "spawning" and rows[new]["gen"] == "2", text
        assert sum(int(rows[pid]["requests"]) for pid in old) == 13, text
        assert sum(int(rows[pid]["ok"]) for pid in old) == 12, text
        assert sum(int(rows[pid]["failed"]) for pid in old) == 1, text
        assert all(rows[pid]["state"] == "online" and rows[pid]["gen"] == "1" for pid in old), text
        wait_until(lambda: "rolling restart complete" in server.stderr(), timeout=30, what="the end of the rollout",
                   server=server)
        wait_until(lambda: "no rolling restart in progress" in status_of(pidfile), what="status after the rollout")
        text = status_of(pidfile)
        assert "restarts: crash 0, recycle 0, rollout 2, timeout 0" in text, text
        out = subprocess.run([sys.executable, "-m", "fastcluster", "status", "--pid", pidfile, "--json"],
                             capture_output=True, text=True, timeout=30)
        status = json.loads(out.stdout)
        assert status["generation"] == 2 and not status["rollout"]["in_progress"]
        assert sum(slot["requests"] for _, slot in status["slots"]) == 13


def access_lines(path):
    with open(path, encoding="ascii") as f:
        return f.read().splitlines()


def test_access_log_lines_in_batches(impl, tmp_path):
    log = str(tmp_path / "access.log")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--access-log", log) as server:
        worker = server.worker_pids[0]
        ua = b'agent "quoted" back\\slash \xe9 \t end'
        talk(server, b"GET /pid?a=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: " + ua + b"\r\nReferer: http://r/\r\n"
             b"Connection: close\r\n\r\n", 1)
        talk(server, get("/sleep?s=0.2", close=True), 1)
        talk(server, b"BAD\r\n\r\n", 1)
        wait_until(lambda: os.path.exists(log) and len(access_lines(log)) == 3, what="3 access log lines",
                   server=server)
        lines = [LINE.match(line) for line in access_lines(log)]
        assert all(lines), access_lines(log)
        first, slept, bad = (m.groups() for m in lines)
        assert first[0] == "127.0.0.1" and first[2] == "GET /pid?a=1 HTTP/1.1" and first[3] == "200"
        assert first[5] == "http://r/"
        assert first[6] == 'agent \\"quoted\\" back\\\\slash \\xe9 \\x09 end'
        assert int(first[4]) == len(str(worker)) and first[7] == str(worker)
        assert slept[2] == "GET /sleep?s=0.2 HTTP/1.1" and int(slept[8]) >= 200000
        assert bad[2:5] == ("-", "400", "-")

        # 600 pipelined requests: the lines go out in a few writes, not one per request
        with open("/proc/%d/io" % worker) as f:
            before = int(re.search(r"syscw: (\d+)", f.read()).group(1))
        talk(server, get("/") * 599 + get("/", close=True), 600)
        wait_until(lambda: len(access_lines(log)) == 603, what="600 more lines", server=server)
        with open("/proc/%d/io" % worker) as f:
            writes = int(re.search(r"syscw: (\d+)", f.read()).group(1)) - before
        assert writes < 60, writes      # responses (a writev per read) and access log blocks together

        # SIGUSR1 (logrotate): the workers reopen the file
        os.rename(log, log + ".1")
        server.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(log), what="the reopened log", server=server)
        talk(server, get("/after", close=True), 1)
        wait_until(lambda: len(access_lines(log)) == 1, what="a line in the new file", server=server)
        assert '"GET /after HTTP/1.1" 404' in access_lines(log)[0]


def test_access_log_format_to_stdout(impl):
    fmt = '%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%({x-forwarded-for}i)s|%(L)s|%(p)s|100%%'
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--access-log", "-", "--access-log-format", fmt) as server:
        talk(server, b"POST /echo?x=%20y HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 5\r\n"
             b"Connection: close\r\n\r\nhello", 1)
        m = server.wait_line(r"^POST\|")
        fields = m.string.split("|")
        assert fields[:7] == ["POST", "/echo", "x=%20y", "HTTP/1.1", "200", "5", "10.0.0.1"], fields
        assert re.match(r"^\d+\.\d{6}$", fields[7]) and fields[8] == str(server.worker_pids[0])
        assert fields[9] == "100%"


def test_a_bad_access_log_is_a_clear_error(tmp_path):
    target = str(tmp_path / "no-such-dir" / "access.log")
    out = subprocess.run([sys.executable, "-m", "fastcluster", "serve", "--bind", "127.0.0.1:0",
                          "--access-log", target], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert out.stderr.strip() == ("fastcluster: error: cannot open the access log %s: No such file or directory"
                                  % target)


def test_json_log_lines_and_log_level(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--log-format", "json", "--log-level", "warning") as server:
        talk(server, get("/raise", close=True), 1)
        server.signal(signal.SIGUSR2)       # logged at info: must not appear
        wait_until(lambda: len(server.worker_pids) == 2, what="the rollout", server=server)
        wait_until(lambda: '"exception"' in server.stderr(), what="the error line", server=server)
        entries = [json.loads(line) for line in server.stderr().splitlines()]
        assert entries and all(e["level"] in ("warning", "error", "critical") for e in entries), entries
        error = [e for e in entries if "exception" in e]
        assert len(error) == 1 and error[0]["pid"] == server.worker_pids[0] and error[0]["level"] == "error"
        assert "Traceback" in error[0]["exception"] and "GET /raise" in error[0]["message"]


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()


def test_process_titles(impl):
    pytest.importorskip("setproctitle")   # in the test extras; without it only comm changes (checked below too)
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        master = server.proc.pid
        assert cmdline(master) == "fastcluster master [apps.suite:app] workers=2 gen=1"
        assert comm(master) == "fc master"
        first, second = server.worker_pids
        assert {comm(first), comm(second)} == {"fc worker 1", "fc worker 2"}
        talk(server, get("/") * 6 + get("/", close=True), 7)

        def served():
            titles = [cmdline(pid) for pid in (first, second)]
            assert all(re.match(r"^fastcluster worker [12] gen=1 req=\d+$", t) for t in titles), titles
            return sum(int(t.rsplit("=", 1)[1]) for t in titles)
        wait_until(lambda: served() == 7, what="req= in the titles", server=server)
        server.signal(signal.SIGUSR2)
        wait_until(lambda: len(server.worker_pids) == 4, what="the rollout", server=server)
        assert cmdline(master) == "fastcluster master [apps.suite:app] workers=2 gen=2"
        wait_until(lambda: all(cmdline(p).startswith("fastcluster worker ") and " gen=2 " in cmdline(p)
                               for p in server.worker_pids[2:]), what="gen=2 workers", server=server)


def test_sighup_applies_logging_settings_and_refuses_a_bad_access_log(tmp_path):
    cfg = tmp_path / "fastcluster.toml"
    access = tmp_path / "access.log"
    cfg.write_text('app = "apps.suite:app"\nworkers = 1\n')
    with Server("--bind", "127.0.0.1:0", "--config", str(cfg)) as server:
        cfg.write_text('app = "apps.suite:app"\nworkers = 1\nlog-format = "json"\naccess-log = "%s"\n' % access)
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(server.worker_pids) == 2, timeout=20, what="the new worker", server=server)
        wait_until(lambda: '"message": "rolling restart complete"' in server.stderr(), timeout=20,
                   what="the reload, logged as JSON", server=server)
        talk(server, get("/after-reload", close=True), 1)
        wait_until(lambda: access.exists() and '"GET /after-reload HTTP/1.1" 404' in access.read_text(),
                   what="the access log of the new worker", server=server)
        cfg.write_text('app = "apps.suite:app"\nworkers = 1\naccess-log = "%s"\n' % (tmp_path / "nodir" / "a.log"))
        server.signal(signal.SIGHUP)
        wait_until(lambda: "cannot open the access log" in server.stderr(), what="the refusal", server=server)
        line = [entry for entry in server.stderr().splitlines() if "cannot open the access log" in entry][0]
        assert json.loads(line)["message"].startswith("config reload failed: cannot open the access log")
        assert len(server.worker_pids) == 2   # nothing restarted


def test_without_setproctitle_only_the_process_name_changes(impl):
    shim = os.path.join(TESTS, "shims", "no_setproctitle")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                env={"PYTHONPATH": os.pathsep.join((shim, TESTS, os.environ.get("PYTHONPATH", "")))}) as server:
        assert comm(server.proc.pid) == "fc master"
        assert comm(server.worker_pids[0]) == "fc worker 1"
        assert " -m fastcluster serve apps.suite:app " in cmdline(server.proc.pid) + " "


def test_counters_add_up_under_concurrent_load(impl):
    """8 keep-alive clients on 2 workers: the sum of the counters is what the clients got."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--metrics-bind", "127.0.0.1:0") as server:
        counts, errors = [0] * 8, []

        def client(i):
            try:
                conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
                for n in range(150 + i):
                    conn.request("GET", "/pid" if n % 10 else "/nope")
                    resp = conn.getresponse()
                    resp.read()
                    counts[i] += 1
                conn.close()
            except Exception as exc:    # reported below; a thread cannot fail the test itself
                errors.append(exc)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)
        sent = sum(counts)
        m = scrape(server)
        assert total(m, "fastcluster_requests_total") == sent == 8 * 150 + 28
        assert total(m, "fastcluster_responses_total", **{"class": "4xx"}) == sum((150 + i + 9) // 10 for i in range(8))
        assert total(m, "fastcluster_responses_total") == sent
        per_worker = [total(m, "fastcluster_requests_total", worker=w) for w in ("1", "2")]
        assert all(per_worker), per_worker     # both workers served (the accept balancing)


def test_restarts_by_cause_recycle_and_timeout(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--timeout", "1",
                "--max-requests", "20", "--metrics-bind", "127.0.0.1:0") as server:
        first = server.worker_pids[0]
        talk(server, get("/") * 24 + get("/", close=True), 25)       # past --max-requests: recycled
        wait_until(lambda: not os.path.exists("/proc/%d" % first), what="the recycled worker to go", server=server)
        wait_until(lambda: len(server.worker_pids) >= 2, what="its replacement's listening line", server=server)
        assert len(server.worker_pids) == 2
        with socket.create_connection((server.host, server.port), timeout=30) as sock:
            sock.sendall(get("/sleep?s=30", close=True))               # stuck past --timeout: killed
            # (its replacement, the third worker: the recycle's own "listening" line came before)
            wait_until(lambda: len(server.worker_pids) >= 3, timeout=15, what="the stuck worker's replacement",
                       server=server)
            assert read_to_eof(sock) == b""                            # cut, not answered
        m = scrape(server)
        assert total(m, "fastcluster_worker_restarts_total", cause="recycle") == 1
        assert total(m, "fastcluster_worker_restarts_total", cause="timeout") == 1
        assert total(m, "fastcluster_worker_restarts_total", cause="crash") == 0
        assert total(m, "fastcluster_worker_restarts_total", cause="rollout") == 0
        assert total(m, "fastcluster_requests_total") == 26              # the stuck request reached the app


def test_access_lines_of_two_workers_on_one_pipe_never_interleave(impl):
    """stdout is a pipe here (the test reads it): every line must arrive whole, one per request."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--access-log", "-") as server:
        agent = "x" * 300      # long lines, so that a write of many lines passes PIPE_BUF (4096)
        threads = [threading.Thread(target=talk, args=(server, get("/pid", agent=agent) * 399
                                                       + get("/pid", close=True, agent=agent), 400))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        def logged():
            return [line for line in server.lines if '"GET /pid HTTP/1.1"' in line]
        wait_until(lambda: len(logged()) >= 2400, what="2400 access lines", server=server)
        lines = logged()
        assert len(lines) == 2400
        assert all(LINE.match(line) and line.endswith(tuple("0123456789")) for line in lines)
        assert {LINE.match(line).group(8) for line in lines} <= {str(p) for p in server.worker_pids}


def test_idle_metrics_clients_cannot_take_the_descriptors_the_master_forks_with():
    """200 connections to the metrics port that never ask, to a master allowed 128 descriptors:
    it holds at most metrics.MAX_CLIENTS of them (the oldest make room), drops the idle ones
    after metrics.CLIENT_TIMEOUT, and still respawns a worker that dies meanwhile."""
    from fastcluster import metrics

    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--metrics-bind", "127.0.0.1:0",
                prefix=("prlimit", "--nofile=128", "--")) as server:
        host, port = re.match(r"http://([\d.]+):(\d+)/", metrics_url(server)).groups()
        fd_dir = "/proc/%d/fd" % server.master_pid
        baseline = len(os.listdir(fd_dir))
        idle = []

        def closed(sock):
            try:
                return sock.recv(1) == b""
            except BlockingIOError:
                return False
            except OSError as exc:             # reset: closed; not connected yet: not
                return exc.errno != errno.ENOTCONN
        try:
            for _ in range(4):                 # in batches the listen backlog (64) holds
                for _ in range(50):
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex((host, int(port)))
                    idle.append(sock)
                wait_until(lambda: sum(map(closed, idle)) >= len(idle) - metrics.MAX_CLIENTS, timeout=10,
                           what="the oldest idle clients to be closed", server=server)
            assert len(os.listdir(fd_dir)) <= baseline + metrics.MAX_CLIENTS
            worker = server.worker_pids[0]
            os.kill(worker, signal.SIGKILL)                        # and a worker dies meanwhile
            server.wait_line(r"^Process \d+ listening on", timeout=15)
            assert "cannot start worker" not in server.stderr()
            wait_until(lambda: all(map(closed, idle)), timeout=10, what="every idle client to be dropped",
                       server=server)
        finally:
            for sock in idle:
                sock.close()
        assert scrape(server)[("fastcluster_workers_wanted", ())] == 1    # and scrapes are answered
