"""What real clients do to a worker (issue 28): every request they send is answered, a client that
leaves costs nothing, and what a connection holds is bounded whatever the client sends.

Each test meets a fresh server on each loop: a cold worker is where requests were lost.
"""

import os
import socket
import tempfile
import threading
import time

import pytest

from helpers import Server, read_response, rss_kib, wait_until

pytestmark = pytest.mark.timeout(150)


def _cpu_seconds(pid):
    """User plus system CPU time of a process, all its threads, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _text_of(path):
    """What a marker file holds ("" while it is not there)."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _run_clients(count, body):
    """`count` threads each running body(index); the failures they report, and any that hung."""
    failures = []
    lock = threading.Lock()

    def run(index):
        try:
            problem = body(index)
        except Exception as exc:  # a refused, reset or timed-out connection is the failure under test
            problem = repr(exc)
        if problem:
            with lock:
                failures.append((index, problem))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 90
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    return failures, hung


@pytest.mark.parametrize("threads", ["32", "4"])
def test_cold_worker_answers_every_new_connection(impl, threads):
    """The seed's experiment: 5 ms of CPU a request, many clients each opening new connections
    one after another (HTTP/1.0, as ab does): every one gets its 200 (row 0 lost up to a third)."""
    with Server("--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--demo-work-ms", "5",
                "--threads", threads) as server:

        def client(index):
            for _ in range(4):
                with socket.create_connection((server.host, server.port), timeout=20) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
                    resp = read_response(sock.makefile("rb"))
                    if resp is None or resp.status != 200:
                        return "got %r" % (resp,)
            return None

        failures, hung = _run_clients(120, client)
        assert hung == 0 and failures == [], (hung, failures[:5])


def test_cold_worker_reads_every_keep_alive_request(impl):
    """Keep-alive clients whose calls wait 0-50 ms (a database stand-in) on a fresh worker: every
    request on every connection is read and answered (row 1: a second request sat unread)."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:

        def client(index):
            with socket.create_connection((server.host, server.port), timeout=20) as sock:
                f = sock.makefile("rb")
                for j in range(4):
                    wait = ((index * 7 + j * 13) % 50) / 1000.0
                    sock.sendall(b"GET /sleep?s=%.3f HTTP/1.1\r\nHost: t\r\n\r\n" % wait)
                    resp = read_response(f)
                    if resp is None or resp.status != 200:
                        return "request %d got %r" % (j, resp)
            return None

        failures, hung = _run_clients(40, client)
        assert hung == 0 and failures == [], (hung, failures[:5])


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_half_close_during_a_call_costs_no_cpu(impl, app):
    """A client half-closes while its app call runs (2 s): the loop does not spin on the end of
    file (row 2: 0.9 of a core), and the answer still reaches the client."""
    target = "apps.suite:app" if app == "wsgi" else "apps.asgi_suite:app"
    with Server(target, "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        pid = server.worker_pids[0]
        with socket.create_connection((server.host, server.port), timeout=20) as sock:
            sock.sendall(b"GET /sleep?s=2 HTTP/1.1\r\nHost: t\r\n\r\n")
            before = _cpu_seconds(pid)
            sock.shutdown(socket.SHUT_WR)
            resp = read_response(sock.makefile("rb"))
            used = _cpu_seconds(pid) - before
        assert resp is not None and resp.status == 200 and resp.body.startswith(b"slept")
        assert used < 0.5, "the worker used %.2f s of CPU during a 2 s call" % used


def test_asgi_long_poll_learns_of_the_close_without_spinning(impl):
    """An ASGI long-poll whose client closes: receive() gives http.disconnect, and the worker
    stays idle meanwhile."""
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        pid = server.worker_pids[0]
        with tempfile.TemporaryDirectory() as tmp:
            marker = os.path.join(tmp, "disconnect")
            sock = socket.create_connection((server.host, server.port), timeout=20)
            sock.sendall(b"GET /wait-disconnect?marker=%s HTTP/1.1\r\nHost: t\r\n\r\n" % marker.encode())
            time.sleep(0.3)     # (the call is waiting on its second receive(): nothing to wait on)
            before = _cpu_seconds(pid)
            sock.close()
            wait_until(lambda: _text_of(marker), timeout=10, what="the app's http.disconnect", server=server)
            assert _text_of(marker) == "http.disconnect"
            # nothing left to spin on either
            time.sleep(1.0)
            assert _cpu_seconds(pid) - before < 0.4


@pytest.mark.parametrize("threads", ["32", "2", "1"])
def test_event_stream_leavers_free_their_threads(impl, threads):
    """Clients that read a little of an endless stream and leave: the iterable is not pulled
    again and its close() is called (row 3: pulled forever, and after --threads such clients
    the worker answered nothing)."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--threads", threads) as server, tempfile.TemporaryDirectory() as tmp:
        markers = []
        for i in range(3):
            marker = os.path.join(tmp, "closed-%d" % i)
            markers.append(marker)
            with socket.create_connection((server.host, server.port), timeout=20) as sock:
                sock.sendall(b"GET /closing?marker=%s&n=1000000&size=20&delay=0.02 HTTP/1.1\r\nHost: t\r\n\r\n"
                             % marker.encode())
                assert sock.recv(100).startswith(b"HTTP/1.1 200")
        for marker in markers:
            wait_until(lambda: os.path.exists(marker), timeout=15, what="close() of a left stream", server=server)
        with socket.create_connection((server.host, server.port), timeout=20) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            resp = read_response(sock.makefile("rb"))
        assert resp is not None and resp.status == 200


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_pipelined_flood_is_read_as_it_is_answered(impl, app):
    """One request that waits, then 200,000 small GETs pipelined behind it: the worker reads
    them as it answers them (row 4: all parsed at once, +160 MiB), and answers every one."""
    target = "apps.suite:app" if app == "wsgi" else "apps.asgi_suite:app"
    count = 200_000
    with Server(target, "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        pid = server.worker_pids[0]
        base = rss_kib(pid)
        sock = socket.create_connection((server.host, server.port), timeout=30)
        sent = threading.Event()

        def send():
            try:
                sock.sendall(b"GET /sleep?s=1.5 HTTP/1.1\r\nHost: t\r\n\r\n"
                             + b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n" * count)
            except OSError:
                pass
            sent.set()

        threading.Thread(target=send, daemon=True).start()
        time.sleep(1.0)          # (inside the first call: what the worker holds now is the point)
        grown = rss_kib(pid) - base
        seen, tail = 0, b""
        deadline = time.monotonic() + 100
        while seen < count + 1 and time.monotonic() < deadline:
            data = sock.recv(1 << 20)
            if not data:
                break
            chunk = tail + data
            seen += chunk.count(b"HTTP/1.1 200 OK")
            tail = chunk[-14:]          # (shorter than the status line: no match is counted twice)
        sock.close()
        assert sent.wait(10)
        assert grown < 40 * 1024, "the worker grew %d KiB while the first call waited" % grown
        assert seen == count + 1


def test_100_continue_upload_is_read_as_the_app_reads(impl):
    """A 64 MiB upload with Expect: 100-continue to an app that pauses after its first read: the
    worker holds about a megabyte of it, not all of it (row 6), and the app gets every byte."""
    size = 64 << 20
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server, \
            tempfile.TemporaryDirectory() as tmp:
        pid = server.worker_pids[0]
        marker = os.path.join(tmp, "paused")
        base = rss_kib(pid)
        sock = socket.create_connection((server.host, server.port), timeout=30)
        f = sock.makefile("rb")
        sock.sendall(b"POST /slow-upload?pause=2&marker=%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                     b"Expect: 100-continue\r\n\r\n" % (marker.encode(), size))
        interim = read_response(f)
        assert interim.status == 100

        def send():
            piece = b"u" * (1 << 20)
            try:
                for _ in range(size >> 20):
                    sock.sendall(piece)
            except OSError:
                pass

        threading.Thread(target=send, daemon=True).start()
        wait_until(lambda: os.path.exists(marker), timeout=10, what="the app's pause", server=server)
        time.sleep(1.0)
        grown = rss_kib(pid) - base
        resp = read_response(f)
        sock.close()
        assert grown < 16 * 1024, "the worker grew %d KiB while its app paused" % grown
        assert resp.status == 200 and resp.body == b"%d" % size


@pytest.mark.parametrize("threads", ["32", "1"])
def test_stalled_100_continue_body_gets_408(impl, threads):
    """A client that stops halfway through a 100-continue body gets the 408 a plain body gets
    (row 7: closed with no answer)."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--threads", threads, "--body-timeout", "1") as server:
        with socket.create_connection((server.host, server.port), timeout=20) as sock:
            f = sock.makefile("rb")
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            assert read_response(f).status == 100
            sock.sendall(b"x" * 50000)
            began = time.monotonic()
            resp = read_response(f)
            took = time.monotonic() - began
        assert resp is not None and resp.status == 408, resp
        assert took < 10
        # the worker serves on
        with socket.create_connection((server.host, server.port), timeout=20) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_response(sock.makefile("rb")).status == 200


def test_timeout_covers_a_call_whose_client_left(impl):
    """An app call that never returns, whose client reset its connection: --timeout still finds it
    (the connection is gone from the worker's table), the stack is logged and the worker replaced."""
    import struct

    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--threads", "2",
                "--timeout", "2") as server, tempfile.TemporaryDirectory() as tmp:
        first = server.worker_pids[0]
        marker = os.path.join(tmp, "called")
        sock = socket.create_connection((server.host, server.port), timeout=20)
        sock.sendall(b"GET /sleep?s=60&marker=%s HTTP/1.1\r\nHost: t\r\n\r\n" % marker.encode())
        wait_until(lambda: os.path.exists(marker), timeout=10, what="the call", server=server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()                                        # a reset: the worker closes its side at once
        wait_until(lambda: "an app call has run for over 2 s" in server.stderr(), timeout=20,
                   what="--timeout for the left call", server=server)
        wait_until(lambda: len(server.worker_pids) > 1, timeout=20, what="a new worker", server=server)
        assert server.worker_pids[-1] != first


def test_requests_that_wait_for_an_app_thread_are_served_in_turn(impl):
    """50 keep-alive clients, 5 ms of CPU a request, 1 worker: requests that wait for an app thread
    go in the order they came, so none waits much longer than the rest (the requests read in each
    batch of events took every thread that came free, and a request that waited could wait seconds)."""
    with Server("--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--demo-work-ms", "5") as server:
        latencies = []
        lock = threading.Lock()
        stop_at = time.monotonic() + 4.0

        def client(index):
            with socket.create_connection((server.host, server.port), timeout=30) as sock:
                f = sock.makefile("rb")
                while time.monotonic() < stop_at:
                    began = time.monotonic()
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                    resp = read_response(f)
                    if resp is None or resp.status != 200:
                        return "got %r" % (resp,)
                    with lock:
                        latencies.append(time.monotonic() - began)
            return None

        failures, hung = _run_clients(50, client)
        assert hung == 0 and failures == [], (hung, failures[:5])
        latencies.sort()
        median, worst = latencies[len(latencies) // 2], latencies[-1]
        assert worst < 6 * median + 0.5, "median %.3f s, worst %.3f s over %d requests" % (
            median, worst, len(latencies))


def test_asgi_send_after_the_client_left_raises_oserror(impl):
    """ASGI spec 2.4: send() on a connection whose client is gone raises an OSError (the app
    stops), and the server logs no traceback for it."""
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server, \
            tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "outcome")
        with socket.create_connection((server.host, server.port), timeout=20) as sock:
            sock.sendall(b"GET /send-after-leave?marker=%s HTTP/1.1\r\nHost: t\r\n\r\n" % marker.encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        wait_until(lambda: _text_of(marker), timeout=15, what="send() to fail", server=server)
        assert _text_of(marker) == "OSError ClientDisconnected"
        assert "Traceback" not in server.stderr()
