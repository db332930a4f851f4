"""Hostile and broken clients, on both loops: strict parsing, limits, timeouts, capacity.

Each case is a raw socket against a live server. After every module the workers must
still be the ones that started: no request may kill a worker.
"""

import os
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import IMPLS, Server, at_eof, pid_alive, read_response, rss_kib, wait_until

pytestmark = pytest.mark.timeout(120)

LIMITS = ("--header-timeout", "1", "--body-timeout", "1", "--write-timeout", "1", "--keep-alive", "5",
          "--max-body", "1000", "--max-request-line", "200", "--max-headers", "20", "--max-header-bytes", "2000")


APPS = {"wsgi": "apps.suite:app", "asgi": "apps.asgi_suite:app"}   # the same routes, the same answers


@pytest.fixture(scope="module", params=sorted(APPS))
def interface(request):
    return request.param


@pytest.fixture(scope="module", params=IMPLS)
def hard_server(request, interface):
    server = Server(APPS[interface], "--bind", "127.0.0.1:0", "--workers", "1", "--loop", request.param, *LIMITS)
    server.impl = request.param
    server.interface = interface
    yield server
    try:
        assert server.worker_pids and all(pid_alive(p) for p in server.worker_pids), "a worker died"
        assert len(server.worker_pids) == 1, "a worker was replaced: %s" % server.worker_pids
        assert "exited with" not in server.stderr() and "was killed" not in server.stderr()
    finally:
        server.stop()


def expect(server, data, status, closes=None):
    """Send `data` on a new connection: the response must have `status`; refusals (4xx/5xx,
    but not an app's 500) must also say Connection: close and close."""
    if closes is None:
        closes = status >= 400 and status != 500
    sock = server.connect(10)
    try:
        sock.sendall(data)
        f = sock.makefile("rb")
        resp = read_response(f)
        assert resp is not None, "no response"
        assert resp.status == status, (resp.status, resp.body)
        if closes:
            assert resp.header("Connection") == "close" and at_eof(sock, f, timeout=5)
        return resp
    finally:
        sock.close()


H = b"Host: t\r\n"

BAD_REQUESTS = {
    "content-length and transfer-encoding": b"POST /echo HTTP/1.1\r\n" + H +
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different content-lengths":
        b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length with sign": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "content-length in hex": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0x3\r\n\r\nabc",
    "content-length with space": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\nabc",
    "content-length overflow": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
    "content-length non-ascii digit": "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \u0663\r\n\r\nabc".encode(),
    "chunked not last": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "chunked on http/1.0": b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + H + b"X-A : a\r\n\r\n",
    "CR in value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "NUL in value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: t\n\n",
    "request line ended by bare LF": b"GET / HTTP/1.1\nHost: t\r\n\r\n",
    "bare CR": b"GET / HTTP/1.1\rHost: t\r\n\r\n",
    "no host on 1.1": b"GET / HTTP/1.1\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "invalid host": b"GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    "chunk data too long": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    "bad method": b"G@T / HTTP/1.1\r\n" + H + b"\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\n" + H + b"\r\n",
    "not http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40),
    "asterisk target on GET": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "host in chunked trailers": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                                b"3\r\nabc\r\n0\r\nHost: evil\r\n\r\n",
    "content-length in chunked trailers": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                                          b"3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
    "transfer-encoding in chunked trailers": b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
                                             b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "two content-types": b"POST /echo HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\nok",
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_malformed_requests_get_400_and_close(hard_server, name):
    expect(hard_server, BAD_REQUESTS[name], 400)


def test_nothing_after_a_bad_request_reaches_the_app(hard_server):
    data = (b"GET /pid HTTP/1.1\r\n" + H + b"\r\n"
            b"GET / HTTP/1.1\r\n" + H + b"X-A : smuggled\r\n\r\n"
            b"GET /raise HTTP/1.1\r\n" + H + b"\r\n")
    sock = hard_server.connect()
    sock.sendall(data)
    f = sock.makefile("rb")
    assert read_response(f).status == 200
    bad = read_response(f)
    assert bad.status == 400
    assert at_eof(sock, f)
    sock.close()
    assert "boom from the test app" not in hard_server.stderr(), "the request after the bad one ran"


@pytest.mark.parametrize("data, status", [
    (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(25)) + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 3000 + b"\r\n\r\n", 431),
    (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1001\r\n\r\n", 413),
    (b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b"100\r\n" + b"x" * 256 + b"\r\n" * 1
     + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n", 413),
])
def test_limits_and_unsupported(hard_server, data, status):
    expect(hard_server, data, status)


def test_within_limits_is_fine(hard_server):
    resp = expect(hard_server, b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1000\r\n\r\n" + b"z" * 1000, 200)
    assert resp.body == b"z" * 1000
    resp = expect(hard_server, b"GET / HTTP/1.0\r\n\r\n", 200)   # HTTP/1.0 needs no Host
    resp = expect(hard_server, b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nX-Tab: a\tb\r\n\r\n", 200)


def test_options_asterisk_and_harmless_trailers_are_fine(hard_server):
    import json
    # answered by the app (neither suite app has an OPTIONS route), not refused
    expect(hard_server, b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 404, closes=False)
    # an allowed trailer is read and never reaches the environ (or the scope)
    path = b"/scope" if hard_server.interface == "asgi" else b"/environ"
    data = (b"POST " + path + b" HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nX-Checksum: abc\r\n\r\n")
    seen = json.loads(expect(hard_server, data, 200).body)
    assert "HTTP_X_CHECKSUM" not in seen and ["x-checksum", "abc"] not in seen.get("headers", [])


def test_header_values_reach_the_app_trimmed(hard_server):
    import json
    path = b"/scope" if hard_server.interface == "asgi" else b"/environ"
    resp = expect(hard_server, b"GET " + path + b" HTTP/1.1\r\n" + H + b"X-A: \t padded \t \r\nX_A: other\r\n\r\n", 200)
    if hard_server.interface == "asgi":
        # ASGI passes every field as sent, trimmed: the app tells x-a from x_a itself
        headers = json.loads(resp.body)["headers"]
        assert ["x-a", "padded"] in headers and ["x_a", "other"] in headers
    else:
        # WSGI: a name with "_" would pass for HTTP_X_A, so it is dropped
        assert json.loads(resp.body)["HTTP_X_A"] == "padded"


def test_a_request_whose_headers_never_end_gets_431_with_bounded_memory(hard_server):
    pid = hard_server.worker_pids[0]
    before = rss_kib(pid)
    sock = hard_server.connect()
    sock.sendall(b"GET / HTTP/1.1\r\n" + H + b"X-Endless: ")
    f = sock.makefile("rb")
    try:
        for _ in range(200):          # up to 6.4 MB of one header value
            sock.sendall(b"v" * 32768)
    except OSError:
        pass                          # the server answered and closed while we were still sending
    resp = read_response(f)
    assert resp.status == 431
    sock.close()
    assert rss_kib(pid) - before < 4096


def test_header_timeout_for_a_silent_client(hard_server):
    sock = hard_server.connect()
    start = time.monotonic()
    f = sock.makefile("rb")
    resp = read_response(f)
    assert resp.status == 408
    assert 0.9 <= time.monotonic() - start < 3.5
    assert at_eof(sock, f)
    sock.close()


def test_header_timeout_for_a_dribbling_client(hard_server):
    """One byte every 0.3 s keeps a connection busy but never within the header deadline."""
    sock = hard_server.connect()
    start = time.monotonic()
    got = b""
    sock.settimeout(0.3)
    for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"x" * 100:
        try:
            sock.sendall(bytes([byte]))
            got += sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if got:
            break
    elapsed = time.monotonic() - start
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert elapsed < 4
    sock.close()


def test_header_timeout_runs_from_the_first_byte_on_a_kept_alive_connection(hard_server):
    sock = hard_server.connect()
    f = sock.makefile("rb")
    sock.sendall(b"GET /pid HTTP/1.1\r\n" + H + b"\r\n")
    assert read_response(f).status == 200
    time.sleep(1.5)      # idle, within the 5 s keep-alive: no deadline yet
    sock.sendall(b"GET /pid HTTP/1.1\r\n" + H + b"\r\n")
    assert read_response(f).status == 200
    sock.sendall(b"GET /pid HTTP/1.1\r\n")     # then a request that stalls
    assert read_response(f).status == 408
    sock.close()


def test_body_timeout(hard_server):
    sock = hard_server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\nonly part")
    f = sock.makefile("rb")
    resp = read_response(f)
    assert resp.status == 408
    sock.close()


def test_write_timeout_drops_a_client_that_stops_reading(hard_server):
    pid = hard_server.worker_pids[0]
    marker = "/tmp/fc-write-timeout-%d" % os.getpid()
    sock = hard_server.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /closing?marker=%s&n=100000&size=65536 HTTP/1.1\r\nHost: t\r\n\r\n" % marker.encode())
    # never read: the server must give up after --write-timeout and close the body (close() is called)
    wait_until(lambda: os.path.exists(marker), timeout=10, what="the stalled response to be dropped")
    os.unlink(marker)
    sock.close()
    assert rss_kib(pid) < 200 * 1024


def test_slow_header_connections_do_not_starve_a_normal_client(hard_server):
    slow = []
    try:
        for _ in range(500):
            s = socket.create_connection((hard_server.host, hard_server.port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\n")
            slow.append(s)
        start = time.monotonic()
        resp = expect(hard_server, b"GET /pid HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", 200)
        assert time.monotonic() - start < 1.0
        assert resp.body.isdigit()
    finally:
        for s in slow:
            s.close()


def test_app_breaking_the_rules(hard_server):
    for path in ("/bad-header", "/raise"):
        resp = expect(hard_server, b"GET %s HTTP/1.1\r\n%s\r\n" % (path.encode(), H), 500)
        assert b"Traceback" not in resp.body


SEEDS = list(BAD_REQUESTS.values()) + [
    b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"GET /stream?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]
_SPECIAL = b"\r\n :\t\x00;,aZ0-_/%\x7f\xff"

# a mutation: (kind, position as a fraction of the length, size, byte, filler)
_MUTATION = st.tuples(st.integers(0, 3), st.floats(0, 1), st.integers(1, 8), st.integers(0, 255),
                      st.binary(min_size=0, max_size=6))


def _mutate(seed, mutations, extra):
    data = bytearray(seed)
    for kind, where, size, byte, filler in mutations:
        pos = int(where * len(data))
        if kind == 0 and data:
            del data[pos:pos + size]
        elif kind == 1:
            data[pos:pos] = bytes(_SPECIAL[b % len(_SPECIAL)] for b in filler) or b"\r\n"
        elif kind == 2 and data:
            data[min(pos, len(data) - 1)] = byte
        else:
            data[pos:pos] = extra[:size * 5]
    return bytes(data)


def test_fuzzed_requests_never_kill_a_worker(hard_server):
    """Random and mutated requests (hypothesis): each gets well-formed responses or a clean
    close, the worker lives, and its memory stays flat."""
    pid = hard_server.worker_pids[0]
    before = rss_kib(pid)

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.sampled_from(SEEDS), mutations=st.lists(_MUTATION, min_size=1, max_size=6),
           extra=st.sampled_from(SEEDS))
    def one(seed, mutations, extra):
        data = _mutate(seed, mutations, extra)
        sock = hard_server.connect(timeout=10)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            f = sock.makefile("rb")
            while True:
                try:
                    resp = read_response(f)
                except (ConnectionResetError, ValueError) as exc:
                    raise AssertionError("%r got a malformed answer or a reset: %r" % (data, exc))
                if resp is None:
                    break
                assert 100 <= resp.status < 600
        finally:
            sock.close()

    one()
    assert pid_alive(pid)
    assert rss_kib(pid) - before < 8 * 1024


def test_connection_cap_holds_the_rest_in_the_backlog(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--max-connections", "3") as server:
        held = [server.connect() for _ in range(3)]
        for s in held:
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s.makefile("rb")).status == 200
        waiting = server.connect()   # completes in the kernel, waits in the backlog
        waiting.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        waiting.settimeout(0.5)
        with pytest.raises(socket.timeout):
            waiting.recv(1)
        held[0].close()              # a slot frees: the waiting client is accepted and answered
        waiting.settimeout(5)
        assert read_response(waiting.makefile("rb")).status == 200
        for s in held[1:] + [waiting]:
            s.close()


def test_running_out_of_descriptors_pauses_accepting_without_dying(impl):
    """EMFILE: the worker stops accepting for a moment, logs once, and serves again later."""
    import resource

    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        worker = server.worker_pids[0]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (48, hard))   # the worker alone gets few fds
        clients = []
        try:
            for _ in range(80):
                s = server.connect()
                s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
                clients.append(s)
            wait_until(lambda: "accept failed" in server.stderr(), timeout=10, what="the EMFILE log line")
            time.sleep(1.5)   # several 0.5 s pauses pass: the line must not repeat
            assert server.stderr().count("accept failed") == 1
            assert pid_alive(worker)
        finally:
            for s in clients:
                s.close()
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        resp = expect(server, b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 200)
        assert int(resp.body) == worker
