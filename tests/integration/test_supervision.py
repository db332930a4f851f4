"""Supervision under load: rolling restarts, crashes, recycling, timeouts, control commands.

A real load client (threads, keep-alive and a new connection per request) counts every
response while the master replaces workers; "drops nothing" means zero failures.
"""

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from helpers import Server, pid_alive, wait_until

pytestmark = pytest.mark.timeout(120)


class Load:
    """Client threads hammering GET /pid until stopped; bounded by time and count."""

    def __init__(self, server, keep_alive=4, new_connection=4, max_seconds=60, max_requests=2_000_000):
        self.server = server
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.pids = set()
        self.deadline = time.monotonic() + max_seconds
        self.max_requests = max_requests
        self.threads = [threading.Thread(target=self._run, args=(True,)) for _ in range(keep_alive)]
        self.threads += [threading.Thread(target=self._run, args=(False,)) for _ in range(new_connection)]
        for t in self.threads:
            t.start()

    def _run(self, keep_alive):
        conn = None
        while not self.stop_event.is_set() and time.monotonic() < self.deadline and self.ok < self.max_requests:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
                conn.request("GET", "/pid")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise AssertionError("status %d" % resp.status)
                with self.lock:
                    self.ok += 1
                    self.pids.add(int(body))
            except Exception as exc:  # every failure is counted and reported
                with self.lock:
                    self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
                continue
            if not keep_alive:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wait_for(self, count, timeout=10):
        wait_until(lambda: self.ok >= count, timeout=timeout, what="%d responses" % count)

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(20)
        return self


def count_in_log(server, text):
    return server.stderr().count(text)


@pytest.mark.parametrize("app", ["apps.suite:app", "apps.asgi_suite:app"], ids=["wsgi", "asgi"])
def test_three_rolling_restarts_under_load_drop_nothing(impl, app):
    with Server(app, "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        first = set(server.worker_pids)
        load = Load(server)
        try:
            load.wait_for(200)
            for n in range(1, 4):
                server.signal(signal.SIGUSR2)
                wait_until(lambda: count_in_log(server, "rolling restart complete") >= n, timeout=20,
                           what="rollout %d" % n, server=server)
                wait_until(lambda: count_in_log(server, "stopped: exited with code 0") >= 2 * n, timeout=20,
                           what="the old workers of rollout %d to drain" % n, server=server)
                start = load.ok
                load.wait_for(start + 200)
        finally:
            load.stop()
        assert load.failures == [], load.failures[:5]
        assert load.ok > 800
        # (the workers' "listening" lines come on stdout, the master's log on stderr: read apart)
        wait_until(lambda: len(server.worker_pids) >= 8, what="the new workers' listening lines", server=server)
        live = [p for p in server.worker_pids if pid_alive(p)]
        assert len(live) == 2 and not set(live) & first
        assert len(server.worker_pids) == 8, "2 first workers + 3 rollouts x 2"


def test_a_killed_worker_is_replaced_within_a_second_under_load(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        load = Load(server, keep_alive=2, new_connection=2)
        try:
            load.wait_for(100)
            victim = server.worker_pids[0]
            killed = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            server.wait_line(r"^Process \d+ listening on", timeout=5)
            assert time.monotonic() - killed < 1.0
            before = load.ok
            load.wait_for(before + 200)
        finally:
            load.stop()
        # only what was in flight on the killed worker may fail: at most one request per client thread
        assert len(load.failures) <= 4, load.failures


def test_max_requests_recycles_workers_without_dropping(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--max-requests", "300", "--max-requests-jitter", "50") as server:
        load = Load(server)
        try:
            wait_until(lambda: count_in_log(server, "reached its max-requests limit") >= 3, timeout=30,
                       what="three recycles")
            wait_until(lambda: len(server.worker_pids) >= 5, timeout=30, what="three replacement workers")
            load.wait_for(load.ok + 100)
        finally:
            load.stop()
        assert load.failures == [], load.failures[:5]
        assert "worker" in server.stderr() and "replacing it" in server.stderr()


def test_max_worker_lifetime_replaces_workers():
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--max-worker-lifetime", "1") as server:
        first = server.worker_pids[0]
        server.wait_line(r"^Process \d+ listening on", timeout=10)
        wait_until(lambda: not pid_alive(first), timeout=10, what="the old worker to leave")
        assert "reached its max-worker-lifetime" in server.stderr()


def test_max_worker_memory_replaces_a_worker_that_grew():
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--max-worker-memory", "80") as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/hog?mb=100")
        hog = int(conn.getresponse().read())
        conn.close()
        server.wait_line(r"^Process \d+ listening on", timeout=10)
        wait_until(lambda: not pid_alive(hog), timeout=10, what="the grown worker to leave")
        assert "reached its max-worker-memory limit" in server.stderr()


def test_timeout_dumps_the_stack_and_replaces_a_stuck_worker():
    """--threads 1: the call stops the loop, so the heartbeats stop (with app threads the loop goes
    on; test_threads.py has that case)."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--timeout", "1",
                "--threads", "1") as server:
        stuck = server.worker_pids[0]
        result = {}

        def call():
            try:
                conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
                conn.request("GET", "/sleep?s=30")
                result["status"] = conn.getresponse().status
            except (OSError, http.client.HTTPException) as exc:
                result["error"] = exc

        client = threading.Thread(target=call)
        client.start()
        server.wait_line(r"^Process \d+ listening on", timeout=10)
        client.join(10)
        assert "error" in result, "the stuck request is cut, not answered"
        assert not pid_alive(stuck)
        log = server.stderr()
        assert "has been stuck for over 1 s (--timeout)" in log
        assert "suite.py" in log and "in inner" in log, "faulthandler's stack of the stuck worker"


def _flaky_env(marker):
    return {"FLAKY_MARKER": marker}


def test_a_worker_that_keeps_dying_is_restarted_with_backoff():
    marker = tempfile.mktemp(prefix="fc-flaky-")
    with Server("apps.flaky:app", "--bind", "127.0.0.1:0", "--workers", "2", env=_flaky_env(marker)) as server:
        survivor, victim = server.worker_pids
        open(marker, "w").close()
        try:
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: "died 3 times within" in server.stderr(), timeout=10, what="the backoff log line")
            start_count = count_in_log(server, "raised while it was imported")
            time.sleep(1.0)   # the observation window: how many restarts happen in one second
            in_one_second = count_in_log(server, "raised while it was imported") - start_count
            assert in_one_second <= 3, "restarted %d times in 1 s: the master spins" % in_one_second
            assert server.proc.poll() is None and pid_alive(survivor), "the master and the healthy worker stay"
            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            conn.request("GET", "/pid")
            assert conn.getresponse().read() == b"%d" % survivor
            conn.close()
        finally:
            os.unlink(marker)
        server.wait_line(r"^Process \d+ listening on", timeout=15)   # recovers once the app imports again


def test_rollout_with_a_broken_new_version_is_aborted_and_the_old_workers_keep_serving():
    marker = tempfile.mktemp(prefix="fc-flaky-")
    with Server("apps.flaky:app", "--bind", "127.0.0.1:0", "--workers", "2", env=_flaky_env(marker)) as server:
        old = list(server.worker_pids)
        open(marker, "w").close()   # the "new deploy" does not import
        try:
            server.signal(signal.SIGUSR2)
            wait_until(lambda: "rolling restart aborted" in server.stderr(), timeout=10, what="the abort")
            assert all(pid_alive(p) for p in old)
            for _ in range(5):
                conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
                conn.request("GET", "/pid")
                assert int(conn.getresponse().read()) in old
                conn.close()
        finally:
            os.unlink(marker)


def test_pid_file_and_the_control_commands(tmp_path):
    pidfile = str(tmp_path / "fc.pid")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--pid", pidfile) as server:
        with open(pidfile) as f:
            assert int(f.read()) == server.proc.pid

        def control(*args):
            return subprocess.run([sys.executable, "-m", "fastcluster", *args, "--pid", pidfile],
                                  capture_output=True, text=True, timeout=60)

        out = control("status")
        assert out.returncode == 0, out.stderr
        assert "master %d: generation 1, 2 workers wanted" % server.proc.pid in out.stdout
        for pid in server.worker_pids:
            assert " %d " % pid in out.stdout and "online" in out.stdout
        old = set(server.worker_pids)
        assert control("reload").returncode == 0
        wait_until(lambda: "rolling restart complete" in server.stderr(), timeout=20, what="the reload")
        wait_until(lambda: len(server.worker_pids) == 4, what="two new workers")
        out = control("stop")
        assert out.returncode == 0 and "stopped" in out.stdout
        assert server.wait(5) == 0
        assert not os.path.exists(pidfile) and not os.path.exists(pidfile + ".json")
        assert not any(pid_alive(p) for p in old)
    out = subprocess.run([sys.executable, "-m", "fastcluster", "status", "--pid", pidfile],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("fastcluster: error: no pid file")


def test_sigusr1_reopens_the_log_file(tmp_path):
    log = tmp_path / "fc.log"
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--log-file", str(log)) as server:
        os.rename(log, tmp_path / "fc.log.1")          # what logrotate does
        server.signal(signal.SIGUSR1)
        # the master reopens at once, the worker at its next tick; each logs it
        wait_until(lambda: log.exists() and log.read_text().count("log file reopened") == 2, what="the new log file")
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/raise")
        assert conn.getresponse().status == 500
        conn.close()
        # the worker writes its traceback to the new file too
        wait_until(lambda: "boom from the test app" in log.read_text(), timeout=5, what="the worker's log line")
        assert "boom" not in (tmp_path / "fc.log.1").read_text()


@pytest.mark.parametrize("path, how", [("/exit?code=7", "exited with code 7"),
                                       ("/segfault", "was killed by SIGSEGV")])
def test_a_worker_dying_in_a_request_is_named_and_replaced(impl, path, how):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        victim = server.worker_pids[0]
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", path)
            conn.getresponse().read()
        conn.close()
        server.wait_line(r"^Process \d+ listening on", timeout=5)
        assert "worker 1 (pid %d) %s" % (victim, how) in server.stderr()
        if "SEGV" in how:
            assert "Fatal Python error: Segmentation fault" in server.stderr()   # faulthandler's stack
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/pid")
        assert conn.getresponse().status == 200
        conn.close()


def test_preload_imports_the_app_once_in_the_master():
    with Server("apps.announce:app", "--bind", "127.0.0.1:0", "--workers", "2", "--preload") as server:
        lines = [line for line in server.stderr().splitlines() if line.startswith("announce:")]
        assert lines == ["announce: imported in process %d" % server.proc.pid]
        server.signal(signal.SIGUSR2)   # a reload forks from the master again: no new import
        wait_until(lambda: "rolling restart complete" in server.stderr(), timeout=20, what="the reload")
        assert server.stderr().count("announce:") == 1
    with Server("apps.announce:app", "--bind", "127.0.0.1:0", "--workers", "2") as server:
        wait_until(lambda: server.stderr().count("announce:") == 2, what="one import per worker")
        assert str(server.proc.pid) not in server.stderr().split("announce:")[1]


def test_sighup_rereads_the_config_file(tmp_path):
    cfg = tmp_path / "fastcluster.toml"
    cfg.write_text('app = "apps.suite:app"\nworkers = 1\nkeep-alive = 30\n')
    with Server("--bind", "127.0.0.1:0", "--config", str(cfg)) as server:
        assert "Forking for 1" in server.lines and len(server.worker_pids) == 1
        cfg.write_text('app = "apps.suite:app"\nworkers = 3\n')
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(server.worker_pids) == 4, timeout=20, what="3 workers of the new config")
        wait_until(lambda: "rolling restart complete" in server.stderr(), timeout=20, what="the reload")
        assert "config reloaded from %s" % cfg in server.stderr()
        wait_until(lambda: len([p for p in server.worker_pids if pid_alive(p)]) == 3, what="the old worker to go")
        live = [p for p in server.worker_pids if pid_alive(p)]
        # a broken file: an error in the log, nothing restarted
        cfg.write_text("workers = 'many'\n")
        server.signal(signal.SIGHUP)
        wait_until(lambda: "config reload failed" in server.stderr(), what="the error")
        assert "workers='many'" in server.stderr().split("config reload failed")[1].splitlines()[0]
        assert all(pid_alive(p) for p in live) and len(server.worker_pids) == 4


def _timed_out_pid(server):
    """The pid of the first worker the master killed past --ready-timeout (from its log), or None."""
    import re

    m = re.search(r"worker \d+ \(pid (\d+)\) was not ready after [\d.]+ s \(--ready-timeout\); its stack follows",
                  server.stderr())
    return int(m.group(1)) if m else None


def test_a_first_start_whose_import_hangs_is_dumped_killed_and_tried_again(tmp_path):
    """An app import waiting for a database that is down: past --ready-timeout the log shows where
    it waits, the worker is killed, and once the database is back a new start serves."""
    marker = str(tmp_path / "db-down")
    with open(marker, "w") as f:
        f.write("600")                                   # apps.slowstart sleeps that long on import
    with Server("apps.slowstart:app", "--bind", "127.0.0.1:0", "--workers", "1", "--ready-timeout", "2",
                env={"SLOWSTART_MARKER": marker}, wait=False) as server:
        wait_until(lambda: _timed_out_pid(server) is not None, timeout=30, what="the --ready-timeout kill",
                   server=server)
        hung = _timed_out_pid(server)
        os.unlink(marker)                                # the database is back
        server.wait_listening(timeout=30)
        wait_until(lambda: not pid_alive(hung), timeout=10, what="the hung worker to be gone", server=server)
        log = server.stderr()
        assert "slowstart.py" in log and "in <module>" in log, "faulthandler's stack of the hung import"
        assert "before it was ready; starting a new one" in log
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/pid")
        assert int(conn.getresponse().read()) == server.worker_pids[-1] != hung
        conn.close()


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_an_asgi_lifespan_startup_that_hangs_on_a_respawn_is_dumped_killed_and_retried(tmp_path, event_loop):
    """A respawned ASGI worker whose lifespan startup waits forever: the log names the app's
    coroutine it waits in, the worker is killed and started again with backoff."""
    pytest.importorskip(event_loop)
    marker = str(tmp_path / "db-down")
    with Server("apps.hangstart:app", "--bind", "127.0.0.1:0", "--workers", "1", "--ready-timeout", "2",
                "--lifespan", "on", "--event-loop", event_loop, env={"HANGSTART_MARKER": marker}) as server:
        first = server.worker_pids[0]
        open(marker, "w").close()                        # the database goes down, and the worker dies
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: _timed_out_pid(server) is not None, timeout=30, what="the --ready-timeout kill",
                   server=server)
        hung = _timed_out_pid(server)
        wait_until(lambda: "in wait_for_the_database" in server.stderr(), timeout=10,
                   what="the lifespan's await chain in the log", server=server)
        wait_until(lambda: not pid_alive(hung), timeout=10, what="the hung worker to be killed", server=server)
        os.unlink(marker)
        server.wait_line(r"^Process \d+ listening on", timeout=30)
        log = server.stderr()
        assert "ASGI task" in log and "hangstart.py" in log
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/")
        assert int(conn.getresponse().read()) == server.worker_pids[-1] not in (first, hung)
        conn.close()


def test_a_recycle_whose_replacement_was_not_ready_in_time_is_asked_for_again(impl, tmp_path):
    """--max-requests: the first replacement hangs past --ready-timeout (the rollout is aborted);
    the master asks again, and the worker past its limit does leave."""
    marker = str(tmp_path / "slow")
    with Server("apps.slowstart:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--max-requests", "10", "--ready-timeout", "2", env={"SLOWSTART_MARKER": marker}) as server:
        old = server.worker_pids[0]
        with open(marker, "w") as f:
            f.write("600")                               # the next imports hang
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        for _ in range(12):
            conn.request("GET", "/pid")
            assert int(conn.getresponse().read()) == old
        conn.close()
        wait_until(lambda: "rolling restart aborted" in server.stderr(), timeout=30, what="the aborted recycle",
                   server=server)
        os.unlink(marker)
        wait_until(lambda: not pid_alive(old), timeout=30, what="the old worker to be replaced after all",
                   server=server)
        log = server.stderr()
        assert "is still past its max-requests limit; asking for its replacement again" in log
        assert len(server.worker_pids) >= 2 and server.worker_pids[-1] != old
