"""The master and its workers as processes: start-up, errors, signals, respawn, stop."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from helpers import Server, TESTS, pid_alive, read_to_eof, wait_until

pytestmark = pytest.mark.timeout(90)


def fetch(server, path="/pid", timeout=10):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def run_cli(*args, env=None, timeout=30):
    full_env = dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "fastcluster", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


# --- start-up ---

def test_startup_lines_follow_the_seed(impl):
    with Server("--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        first = server.lines[0]
        assert ("compiled Cython loop" if impl == "cython" else "pure-Python loop") in first
        assert "--loop %s" % impl in first
        assert server.lines[1] == "Forking for 2"
        assert server.lines[2] == "Master PID: %d" % server.proc.pid
        assert len(server.worker_pids) == 2
        assert server.lines[-1] == "fastcluster: listening on http://127.0.0.1:%d" % server.port
        for pid in server.worker_pids:
            assert "Process %d listening on port %d" % (pid, server.port) in server.lines
        status, body = fetch(server, "/")
        assert status == 200
        assert body.decode().startswith("Hello from process ")
        assert int(body.split()[-1]) in server.worker_pids


def test_demo_work_ms_burns_cpu_per_request():
    with Server("--bind", "127.0.0.1:0", "--workers", "1", "--demo-work-ms", "30") as server:
        fetch(server, "/")
        start = time.perf_counter()
        fetch(server, "/")
        assert time.perf_counter() - start >= 0.03


def test_env_vars_configure_the_server():
    env = {"FASTCLUSTER_WORKERS": "3", "FASTCLUSTER_BIND": "127.0.0.1:0", "FASTCLUSTER_LOOP": "python"}
    with Server(env=env) as server:
        assert "Forking for 3" in server.lines
        assert len(server.worker_pids) == 3, (server.lines, server.stderr())
        assert "--loop python" in server.lines[0]


def test_unix_socket_bind(impl):
    path = tempfile.mktemp(prefix="fc-", suffix=".sock")
    with Server("--bind", "unix:" + path, "--workers", "1", "--loop", impl, wait=False) as server:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_to_eof(sock)
        sock.close()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    # the socket file left behind is stale; a new server takes it over
    with Server("--bind", "unix:" + path, "--workers", "1", wait=False) as server:
        server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
    os.unlink(path)


def test_ipv6_bind():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with Server("--bind", "[::1]:0", "--workers", "1", wait=False) as server:
        m = server.wait_line(r"^fastcluster: listening on http://\[::1\]:(\d+)$")
        sock = socket.create_connection(("::1", int(m.group(1))), timeout=10)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.close()


# --- errors: one clear line, exit code 2, no traceback ---

@pytest.mark.parametrize("args, message", [
    (["serve", "--workers", "0"], "--workers"),
    (["serve", "--workers", "many"], "--workers"),
    (["serve", "--bind", "nowhere"], "--bind"),
    (["serve", "--loop", "rust"], "--loop"),
    (["serve", "--keep-alive", "-1"], "--keep-alive"),
    (["serve", "--no-such-flag"], "--no-such-flag"),
    (["serve", "not a module"], "module"),
    (["serve", "apps.suite"], "format"),
    (["serve", "--bind", "127.0.0.1:0", "fastcluster_no_such_module:app"], "fastcluster_no_such_module"),
    (["serve", "--bind", "127.0.0.1:0", "apps.suite:no_such_app"], "no_such_app"),
    (["serve", "--bind", "127.0.0.1:0", "apps.not_callable:app"], "not a WSGI callable"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastcluster: error:") and message in lines[0], lines
    assert "Traceback" not in result.stderr


def test_bad_environment_value_is_one_line_and_exit_2():
    result = run_cli("serve", env={"FASTCLUSTER_WORKERS": "lots"})
    assert result.returncode == 2
    assert result.stderr.strip() == "fastcluster: error: FASTCLUSTER_WORKERS='lots': not a number"


def test_address_in_use_is_one_line_and_exit_2():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = run_cli("serve", "--bind", "127.0.0.1:%d" % port)
    finally:
        holder.close()
    assert result.returncode == 2
    assert result.stderr == "fastcluster: error: cannot bind 127.0.0.1:%d: address already in use\n" % port


@pytest.mark.parametrize("app, text", [
    ("apps.broken:app", "this app is broken at import time"),
    ("apps.missing_dep:app", "fastcluster_no_such_dependency"),
])
def test_app_failing_at_import_stops_the_master_with_one_traceback(app, text):
    start = time.monotonic()
    result = run_cli("serve", app, "--bind", "127.0.0.1:0", "--workers", "4")
    assert time.monotonic() - start < 5
    assert result.returncode == 4, result
    assert result.stderr.count("Traceback (most recent call last)") == 1, result.stderr
    assert text in result.stderr
    assert "listening on http" not in result.stdout


def test_version_and_help():
    from fastcluster import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "fastcluster %s" % __version__
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag in ("--bind", "--workers", "--loop", "--backlog", "--keep-alive", "--graceful-timeout",
                 "--demo-work-ms", "FASTCLUSTER_WORKERS"):
        assert flag in result.stdout


def _console_script():
    exe = os.path.join(os.path.dirname(sys.executable), "fastcluster")
    if not os.path.exists(exe):
        pytest.skip("the fastcluster script is not next to this python")
    return exe


def test_console_script_is_installed():
    result = subprocess.run([_console_script(), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("fastcluster ")


def test_console_script_finds_the_app_in_the_current_directory():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([_console_script(), "serve", "apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1"],
                            cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("fastcluster: listening on"):
                break
        else:
            pytest.fail("server did not start: %s" % proc.stderr.read())
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0


# --- signals and supervision ---

def test_sigterm_lets_the_in_flight_request_finish(impl):
    marker = tempfile.mktemp(prefix="fc-inflight-")
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl)
    result = {}

    def slow():
        result["value"] = fetch(server, "/sleep?s=1.5&marker=" + marker, timeout=20)

    client = threading.Thread(target=slow)
    client.start()
    try:
        wait_until(lambda: os.path.exists(marker), what="the request to reach the app")
        server.signal(signal.SIGTERM)
        client.join(20)
        assert result["value"][0] == 200 and result["value"][1].startswith(b"slept")
        assert server.wait(20) == 0
        wait_until(lambda: not any(pid_alive(p) for p in server.worker_pids), timeout=5, what="workers to exit")
        # the listener is closed: nothing answers any more
        with pytest.raises(OSError):
            socket.create_connection((server.host, server.port), timeout=2).close()
    finally:
        os.path.exists(marker) and os.unlink(marker)
        server.stop()


def test_sigint_stops_gracefully_and_twice_quickly():
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1")
    marker = tempfile.mktemp(prefix="fc-inflight-")
    result = {}

    def slow():
        try:
            result["value"] = fetch(server, "/sleep?s=30&marker=" + marker, timeout=20)
        except (OSError, http.client.HTTPException) as exc:
            result["value"] = exc

    client = threading.Thread(target=slow)
    client.start()
    try:
        wait_until(lambda: os.path.exists(marker), what="the request to reach the app")
        server.signal(signal.SIGINT)
        wait_until(lambda: "graceful stop" in server.stderr(), what="the graceful stop to begin")
        assert server.proc.poll() is None, "the first SIGINT waits for the request"
        start = time.monotonic()
        server.signal(signal.SIGINT)
        server.wait(10)
        assert time.monotonic() - start < 5
        client.join(10)
        assert isinstance(result["value"], Exception), "the quick stop does not wait for the request"
        wait_until(lambda: not any(pid_alive(p) for p in server.worker_pids), timeout=5, what="workers to exit")
    finally:
        os.path.exists(marker) and os.unlink(marker)
        server.stop()


def test_graceful_timeout_kills_what_is_left():
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--graceful-timeout", "1")
    marker = tempfile.mktemp(prefix="fc-inflight-")
    client = threading.Thread(target=lambda: _ignore(fetch, server, "/sleep?s=30&marker=" + marker, timeout=20))
    client.start()
    try:
        wait_until(lambda: os.path.exists(marker), what="the request to reach the app")
        start = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 0
        assert time.monotonic() - start < 5
        assert not any(pid_alive(p) for p in server.worker_pids)
        client.join(10)
    finally:
        os.path.exists(marker) and os.unlink(marker)
        server.stop()


def _ignore(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except (OSError, http.client.HTTPException):
        pass


def test_sigkill_of_the_master_leaves_no_worker(impl):
    server = Server("--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl)
    try:
        workers = list(server.worker_pids)
        server.signal(signal.SIGKILL)
        server.wait(5)
        wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=2.5, what="orphaned workers to exit")
    finally:
        server.stop()


def test_a_killed_worker_is_replaced(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        victim = server.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        match = server.wait_line(r"^Process (\d+) listening on", timeout=5)
        assert int(match.group(1)) not in (victim,)
        wait_until(lambda: "was killed by SIGKILL" in server.stderr(), what="the log line naming the signal")
        assert "worker 1 (pid %d) was killed by SIGKILL" % victim in server.stderr()
        for _ in range(10):
            assert fetch(server)[0] == 200


def test_a_worker_that_exits_is_replaced_and_logged():
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1") as server:
        victim = server.worker_pids[0]
        os.kill(victim, signal.SIGTERM)   # a worker stopping on its own, not asked by the master
        server.wait_line(r"^Process (\d+) listening on", timeout=5)
        assert "worker 1 (pid %d) exited with code 0" % victim in server.stderr()
        assert fetch(server)[0] == 200


def test_rolling_restart_on_sigusr2_replaces_every_worker(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        old = set(server.worker_pids)
        server.signal(signal.SIGUSR2)
        new = {int(server.wait_line(r"^Process (\d+) listening on", timeout=10).group(1)) for _ in range(2)}
        assert not new & old
        wait_until(lambda: not any(pid_alive(p) for p in old), timeout=10, what="old workers to drain")
        wait_until(lambda: "rolling restart complete" in server.stderr(), what="the rollout to finish")
        pids = {int(fetch(server)[1]) for _ in range(20)}
        assert pids <= new


def test_ttin_and_ttou_change_the_worker_count():
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1") as server:
        server.signal(signal.SIGTTIN)
        added = int(server.wait_line(r"^Process (\d+) listening on", timeout=10).group(1))
        assert pid_alive(added)
        server.signal(signal.SIGTTOU)
        wait_until(lambda: not pid_alive(added), timeout=10, what="the extra worker to stop")
        assert pid_alive(server.worker_pids[0])
        assert fetch(server)[0] == 200


def test_plain_fastcluster_serve_uses_the_default_address():
    """The README's first command, as written: no APP, no options, 127.0.0.1:8000."""
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 8000))
    except OSError:
        pytest.skip("port 8000 is taken on this machine")
    finally:
        probe.close()
    with Server(wait=False) as server:
        server.wait_line(r"^fastcluster: listening on http://127\.0\.0\.1:8000$")
        server.host, server.port = "127.0.0.1", 8000
        status, body = fetch(server, "/")
        assert status == 200 and body.startswith(b"Hello from process ")


def test_graceful_stop_ends_keep_alive_connections_cleanly(impl):
    from helpers import read_response

    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl)
    try:
        idle, busy = server.connect(), server.connect()
        files = idle.makefile("rb"), busy.makefile("rb")
        for sock, f in zip((idle, busy), files):
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(f).header("Connection") is None
        server.signal(signal.SIGTERM)
        wait_until(lambda: "graceful stop" in server.stderr(), what="the stop to begin")
        # a request sent during the drain is answered, with Connection: close
        busy.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        last = read_response(files[1])
        assert last.status == 200 and last.header("Connection") == "close"
        assert files[1].read() == b""
        # the idle one is closed with a FIN (a clean EOF), not a reset
        idle.settimeout(10)
        assert files[0].read() == b""
        assert server.wait(10) == 0
        idle.close()
        busy.close()
    finally:
        server.stop()


def test_inherited_socket_bind(impl):
    """--bind fd://N serves on a socket the parent process (systemd, a supervisor) opened."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    try:
        with Server("--bind", "fd://%d" % fd, "--workers", "1", "--loop", impl, pass_fds=(fd,)) as server:
            assert server.url == "http://127.0.0.1:%d" % port
            assert fetch(server, "/")[0] == 200
    finally:
        listener.close()
    result = run_cli("serve", "--bind", "fd://999")
    assert result.returncode == 2 and "fd://999 is not a usable socket" in result.stderr


def test_keep_alive_clients_of_a_cpu_bound_app_use_every_worker(impl):
    """The seed's experiment with keep-alive clients: connections stay where they are accepted,
    so a burst of them must be spread at accept time or one worker does all the work."""
    with Server("--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl, "--demo-work-ms", "10") as server:
        conns = [http.client.HTTPConnection(server.host, server.port, timeout=10) for _ in range(8)]
        for conn in conns:
            conn.connect()
        served = []
        lock = threading.Lock()
        deadline = time.monotonic() + 2.0

        def client(conn):
            while time.monotonic() < deadline:
                conn.request("GET", "/")
                pid = int(conn.getresponse().read().split()[-1])
                with lock:
                    served.append(pid)

        threads = [threading.Thread(target=client, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for conn in conns:
            conn.close()
        shares = {pid: served.count(pid) / len(served) for pid in set(served)}
        assert len(shares) == 2 and min(shares.values()) >= 0.25, shares
