"""Behind a load balancer: the health path the server answers itself, --shutdown-delay, and the
backlog at the final stop; both loops, WSGI and ASGI."""

import concurrent.futures
import http.client
import os
import signal
import socket
import time

import pytest

from helpers import Server, read_response, wait_until

pytestmark = pytest.mark.timeout(90)

APPS = {"wsgi": "apps.suite:app", "asgi": "apps.asgi_suite:app"}


@pytest.fixture(params=sorted(APPS))
def app(request):
    return APPS[request.param]


def get(server, path, timeout=10):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_health_path_is_answered_by_the_server_even_when_every_app_thread_is_busy(impl, app):
    with Server(app, "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--threads", "2",
                "--health-path", "/healthz") as server:
        assert get(server, "/healthz") == (200, b"ok\n")
        assert get(server, "/healthz?probe=1") == (200, b"ok\n")
        assert get(server, "/healthz/deeper")[0] == 404          # only the path itself
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            slow = [pool.submit(get, server, "/sleep?s=2") for _ in range(3)]   # more than the threads
            time.sleep(0.3)          # (not a readiness wait: the slow calls are under way)
            started = time.monotonic()
            assert get(server, "/healthz") == (200, b"ok\n")
            assert time.monotonic() - started < 0.5, "the health check waited for an app thread"
            assert [f.result()[0] for f in slow] == [200] * 3


def test_shutdown_delay_says_503_while_serving_then_stops(impl, app):
    server = Server(app, "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl, "--health-path", "/healthz",
                    "--shutdown-delay", "2")
    try:
        assert get(server, "/healthz")[0] == 200
        server.signal(signal.SIGTERM)
        wait_until(lambda: get(server, "/healthz")[0] == 503, timeout=5, what="the health path to say 503")
        began = time.monotonic()
        # everything else is served as before while the balancer notices
        for _ in range(20):
            status, body = get(server, "/pid")
            assert status == 200 and body.isdigit()
        assert server.wait(timeout=20) == 0
        assert time.monotonic() - began > 1.0, "stopped before the delay was over"
        assert "stopping in 2 s (--shutdown-delay)" in server.stderr()
    finally:
        server.stop()


def test_a_rolling_restart_keeps_the_health_path_at_200(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                "--health-path", "/healthz") as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            server.signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            statuses = set()
            while "rolling restart complete" not in server.stderr() and time.monotonic() < deadline:
                try:
                    conn.request("GET", "/healthz")
                    resp = conn.getresponse()
                    resp.read()
                    statuses.add(resp.status)
                except (http.client.HTTPException, OSError):
                    conn.close()     # an old worker closed its keep-alive connection: a new one
                    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            assert "rolling restart complete" in server.stderr()
            assert statuses == {200}
        finally:
            conn.close()


def test_connections_waiting_in_the_backlog_at_the_final_stop_are_answered(impl):
    """The worker is frozen (SIGSTOP) while clients connect and send: they wait in the kernel's
    backlog. Then the master is told to stop and the worker thawed: each one gets its answer,
    with Connection: close, instead of a reset."""
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl)
    clients = []
    try:
        worker = server.worker_pids[0]
        os.kill(worker, signal.SIGSTOP)
        try:
            for _ in range(5):
                s = socket.create_connection((server.host, server.port), timeout=10)
                s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
                clients.append(s)
            server.signal(signal.SIGTERM)
            wait_until(lambda: "graceful stop of 1 workers" in server.stderr(), what="the stop to begin")
        finally:
            os.kill(worker, signal.SIGCONT)
        for s in clients:
            resp = read_response(s.makefile("rb"))
            assert resp is not None and resp.status == 200 and resp.body == str(worker).encode()
            assert resp.header("Connection") == "close"
        assert server.wait(timeout=20) == 0
    finally:
        for s in clients:
            s.close()
        server.stop()


def test_bad_health_path_is_refused_at_start():
    server = Server("--bind", "127.0.0.1:0", "--health-path", "healthz", wait=False)
    try:
        assert server.wait(timeout=20) == 2
        assert "--health-path" in server.stderr() and "starts with /" in server.stderr()
    finally:
        server.stop()


def client_seen(server, interface, headers):
    """(address, port, scheme) the app sees for a request with `headers`."""
    import json

    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/scope" if interface == "asgi" else "/environ", headers=headers)
        data = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    if interface == "asgi":
        return data["client"][0], data["client"][1], data["scheme"]
    return data["REMOTE_ADDR"], int(data["REMOTE_PORT"]), data["wsgi.url_scheme"]


@pytest.mark.parametrize("interface", sorted(APPS))
def test_proxy_headers_from_a_trusted_peer_set_the_client_and_scheme(impl, interface):
    with Server(APPS[interface], "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8") as server:
        addr, port, scheme = client_seen(server, interface, {})
        assert addr == "127.0.0.1" and port > 0 and scheme == "http"
        # the rightmost address that is not a trusted proxy itself
        assert client_seen(server, interface, {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.1.1",
                                               "X-Forwarded-Proto": "https"}) == ("203.0.113.9", 0, "https")
        # what is not an address or a known scheme changes nothing
        addr, _port, scheme = client_seen(server, interface, {"X-Forwarded-For": "not an address",
                                                              "X-Forwarded-Proto": "gopher"})
        assert (addr, scheme) == ("127.0.0.1", "http")


def seen_raw(sock, interface, header_lines):
    """(address, scheme) the app sees for a request with these raw header lines, on `sock`."""
    import json

    target = b"/scope" if interface == "asgi" else b"/environ"
    sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(line + b"\r\n" for line in header_lines)
                 + b"\r\n")
    resp = read_response(sock.makefile("rb"))
    assert resp is not None and resp.status == 200
    data = json.loads(resp.body)
    if interface == "asgi":
        return data["client"][0], data["scheme"]
    return data["REMOTE_ADDR"], data["wsgi.url_scheme"]


@pytest.mark.parametrize("interface", sorted(APPS))
def test_a_clients_own_forwarded_header_never_overrides_its_proxys(impl, interface):
    """Issue 28 row 5: behind nginx as the README sets it up (X-Forwarded-For appended,
    X-Forwarded-Proto replaced), a client that adds `Forwarded` or fills X-Forwarded-For itself
    is still seen as itself. The proxy is this test, from 127.0.0.1 (trusted by default)."""
    with Server(APPS[interface], "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        with server.connect() as sock:
            assert seen_raw(sock, interface, [b"X-Forwarded-For: 1.2.3.4", b"X-Forwarded-Proto: http",
                                              b"Forwarded: for=6.6.6.6;proto=https"]) == ("1.2.3.4", "http")
            assert seen_raw(sock, interface, [b"Forwarded: for=6.6.6.6;proto=https", b"X-Forwarded-For: 6.6.6.6",
                                              b"X-Forwarded-For: 1.2.3.4", b"X-Forwarded-Proto: http"]) \
                == ("1.2.3.4", "http")
            # a peer that sets nothing (a health checker on the host): the client's header counts for nothing
            assert seen_raw(sock, interface, [b"Forwarded: for=6.6.6.6;proto=https"]) == ("127.0.0.1", "http")


@pytest.mark.parametrize("interface", sorted(APPS))
def test_forwarded_family_reads_rfc_7239_only(impl, interface):
    with Server(APPS[interface], "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8", "--forwarded-headers", "forwarded") as server:
        # RFC 7239, quoted IPv6 with a port, several elements; the scheme of the client's own element
        assert client_seen(server, interface, {"Forwarded": 'for="[2001:db8:cafe::17]:4711";proto=https, '
                                                            'for=10.0.0.3'}) == ("2001:db8:cafe::17", 4711, "https")
        with server.connect() as sock:
            assert seen_raw(sock, interface, [b"Forwarded: for=1.2.3.4;proto=http", b"X-Forwarded-For: 6.6.6.6",
                                              b"X-Forwarded-Proto: https"]) == ("1.2.3.4", "http")
            assert seen_raw(sock, interface, [b"X-Forwarded-For: 6.6.6.6", b"X-Forwarded-Proto: https"]) \
                == ("127.0.0.1", "http")


@pytest.mark.parametrize("interface", sorted(APPS))
def test_proxy_headers_from_any_other_peer_change_nothing(impl, interface):
    with Server(APPS[interface], "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--forwarded-allow-ips", "10.9.9.9") as server:
        addr, _port, scheme = client_seen(server, interface, {"X-Forwarded-For": "203.0.113.9",
                                                              "X-Forwarded-Proto": "https",
                                                              "Forwarded": "for=192.0.2.1;proto=https"})
        assert (addr, scheme) == ("127.0.0.1", "http")


# --- socket activation and privileges ---

def _proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1:]
    raise KeyError(field)


WRAPPER = """
import os, socket, sys
ports, socks = [], []              # (each kept open until the exec)
for i in range(int(sys.argv[1])):
    sock = socket.socket()
    socks.append(sock)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    ports.append(sock.getsockname()[1])
    os.dup2(sock.fileno(), 3 + i)  # as systemd passes them: from the first fd after stdin, stdout, stderr
    os.set_inheritable(3 + i, True)   # (dup2 onto itself keeps the socket's close-on-exec)
os.environ["LISTEN_FDS"] = sys.argv[1]
os.environ["LISTEN_PID"] = str(os.getpid())
print("socket port %s" % " ".join(map(str, ports)), flush=True)
os.execv(sys.executable, [sys.executable, "-m", "fastcluster", "serve", *sys.argv[2:]])
"""


@pytest.mark.parametrize("sockets, workers", [(1, 2), (2, 1)])
def test_systemd_socket_activation_serves_on_the_passed_sockets(impl, sockets, workers):
    import subprocess
    import sys

    from helpers import TESTS

    env = dict(os.environ, PYTHONPATH=TESTS)
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(sockets), "apps.suite:app", "--workers", str(workers),
                             "--loop", impl],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True, text=True)
    try:
        ports = [int(word) for word in proc.stdout.readline().split()[2:]]
        listening = []
        while len(listening) < sockets:
            line = proc.stdout.readline()
            assert line, "exited: %s" % proc.stderr.read()
            if line.startswith("fastcluster: listening on"):
                listening.append(line.strip())
        assert listening == ["fastcluster: listening on http://127.0.0.1:%d" % port for port in ports]
        for port in ports:          # each socket served
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/pid")
            assert conn.getresponse().status == 200
            conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")


@needs_root
def test_workers_run_as_user_and_group_with_the_umask(impl, tmp_path):
    import grp
    import pwd

    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    access = tmp_path / "access.log"
    os.chmod(tmp_path, 0o755)
    with Server("apps.whoami:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--user", "nobody",
                "--group", group, "--umask", "027", "--access-log", str(access)) as server:
        worker = server.worker_pids[0]
        assert _proc_status(worker, "Uid")[:2] == [str(nobody.pw_uid)] * 2
        assert _proc_status(worker, "Gid")[:2] == [str(nobody.pw_gid)] * 2
        assert _proc_status(server.master_pid, "Uid")[0] == "0"          # the master stays root
        assert _proc_status(worker, "Umask") == ["0027"] and _proc_status(server.master_pid, "Umask") == ["0027"]
        # imported as nobody, served as nobody
        assert get(server, "/") == (200, b"%d %d %d" % (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid))
        assert os.stat(access).st_uid == nobody.pw_uid                   # the workers reopen it
        # a body over 1 MiB spills to a temporary file: tempfile, imported only then, came in before
        # the switch (nobody may not read this Python's files)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        conn.request("POST", "/", body=b"x" * (3 << 20))
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"%d %d %d" % (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid))
        conn.close()


def test_unknown_user_or_group_is_a_clear_error():
    for flag, name in (("--user", "no-such-user-here"), ("--group", "no-such-group-here")):
        server = Server("--bind", "127.0.0.1:0", flag, name, wait=False)
        try:
            assert server.wait(timeout=20) == 2
            assert "%s %s: no such" % (flag, name) in server.stderr()
        finally:
            server.stop()


# --- PROXY protocol ---

def _v2(command=1, family=1, src="203.0.113.5", sport=4242, extra=b""):
    import struct

    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if family == 1:
        body = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, "10.0.0.1")
        body += struct.pack("!HH", sport, 80)
    elif family == 2:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1")
        body += struct.pack("!HH", sport, 80)
    else:
        body = b""
    body += extra
    return sig + bytes([0x20 | command, (family << 4) | 1]) + struct.pack("!H", len(body)) + body


def _seen_through_proxy(server, interface, pieces):
    import json

    sock = server.connect()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        path = b"/scope" if interface == "asgi" else b"/environ"
        pieces = list(pieces) + [b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n"]
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.02)     # (not a readiness wait: separate reads, so the header comes in pieces)
        resp = read_response(sock.makefile("rb"))
        data = json.loads(resp.body)
    finally:
        sock.close()
    if interface == "asgi":
        return data["client"][0], data["client"][1]
    return data["REMOTE_ADDR"], int(data["REMOTE_PORT"])


@pytest.mark.parametrize("interface", sorted(APPS))
def test_proxy_protocol_v1_and_v2_set_the_client(impl, interface):
    with Server(APPS[interface], "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--proxy-protocol") as server:
        v1 = b"PROXY TCP4 192.0.2.44 198.51.100.1 56324 443\r\n"
        assert _seen_through_proxy(server, interface, [v1]) == ("192.0.2.44", 56324)
        assert _seen_through_proxy(server, interface, [v1[:7], v1[7:20], v1[20:]]) == ("192.0.2.44", 56324)
        v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 1234 443\r\n"
        assert _seen_through_proxy(server, interface, [v1_6]) == ("2001:db8::7", 1234)
        assert _seen_through_proxy(server, interface, [_v2()]) == ("203.0.113.5", 4242)
        v2 = _v2(family=2, src="2001:db8::9", sport=999, extra=b"\x04\x00\x02ab")      # with a TLV
        assert _seen_through_proxy(server, interface, [v2[:5], v2[5:17], v2[17:]]) == ("2001:db8::9", 999)
        # no address to take: the connection's own stays
        assert _seen_through_proxy(server, interface, [b"PROXY UNKNOWN\r\n"])[0] == "127.0.0.1"
        assert _seen_through_proxy(server, interface, [_v2(command=0, family=0)])[0] == "127.0.0.1"


def test_a_connection_without_a_valid_proxy_header_is_closed_and_counted(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--proxy-protocol",
                "--metrics-bind", "127.0.0.1:0") as server:
        for bad in (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
                    b"PROXY " + b"9" * 200, _v2(extra=b"x" * 3000)):
            sock = server.connect()
            try:
                sock.sendall(bad)
                sock.settimeout(10)
                try:
                    assert sock.recv(4096) == b""        # closed, nothing answered
                except ConnectionResetError:
                    pass
            finally:
                sock.close()
        wait_until(lambda: server.stderr().count("without a valid PROXY protocol header") == 4,
                   what="4 log lines", server=server)
        # and the server still serves a proper one
        assert _seen_through_proxy(server, "wsgi", [b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"]) == ("192.0.2.1", 1)
