"""TLS (--certfile, --keyfile, --keyfile-password, --ca-certs, --cert-reqs, --ssl-ciphers) on both
loops, with real TLS clients: http.client, raw ssl sockets, curl and a WebSocket client. The
certificates are tests/certs (make.sh made them: a test CA, a server certificate for localhost
signed by it, a client certificate, the server key encrypted with "secret")."""

import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import warnings

import pytest

from helpers import IMPLS, TESTS, Server, exit_of, read_response, read_to_eof, wait_until

pytestmark = pytest.mark.timeout(90)

CERTS = os.path.join(TESTS, "certs")
CERT, KEY = os.path.join(CERTS, "server.pem"), os.path.join(CERTS, "server.key")
CA = os.path.join(CERTS, "ca.pem")
TLS = ("--certfile", CERT, "--keyfile", KEY)


def client_context(cert=None, key=None, cafile=CA):
    context = ssl.create_default_context(cafile=cafile)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def tls_socket(server, context=None, hostname="localhost"):
    raw = socket.create_connection((server.host, server.port), timeout=20)
    return (context or client_context()).wrap_socket(raw, server_hostname=hostname)


def https(server, context=None):
    return http.client.HTTPSConnection("localhost", server.port, timeout=20, context=context or client_context())


@pytest.fixture(params=IMPLS)
def tls_server(request):
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", request.param, *TLS)
    server.impl = request.param
    yield server
    server.stop()


def test_keep_alive_large_bodies_and_the_https_scheme(tls_server):
    assert tls_server.url.startswith("https://")
    conn = https(tls_server)
    try:
        pids = set()
        for _ in range(5):                   # one connection, kept alive
            conn.request("GET", "/pid")
            response = conn.getresponse()
            assert response.status == 200
            pids.add(response.read())
        assert len(pids) == 1
        conn.request("GET", "/environ")
        env = json.loads(conn.getresponse().read())
        assert env["wsgi.url_scheme"] == "https" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
        body = os.urandom(3 * 1024 * 1024 + 17)          # larger than any TLS record or read
        conn.request("POST", "/upload", body=body)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
        conn.request("POST", "/echo", body=body)
        assert conn.getresponse().read() == body
        conn.request("GET", "/write-big?mb=8")            # a response much larger than the socket buffer
        data = conn.getresponse().read()
        assert len(data) == 8 * 1024 * 1024
    finally:
        conn.close()


def test_pipelined_requests_in_one_write(tls_server):
    sock = tls_socket(tls_server)
    try:
        sock.sendall(b"".join(b"GET /environ/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(16)))
        f = sock.makefile("rb")
        for i in range(16):
            response = read_response(f)
            assert response.status == 200 and json.loads(response.body)["PATH_INFO"] == "/environ/%d" % i
    finally:
        sock.close()


def test_a_file_body_goes_through_tls(tls_server):
    conn = https(tls_server)
    try:
        size = 5 * 1024 * 1024 + 3
        conn.request("GET", "/file?size=%d" % size)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200 and len(data) == size
        assert data == (bytes(range(256)) * (size // 256) + b"z" * (size % 256))
        conn.request("GET", "/pid")                      # the connection is still good after it
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_an_asgi_pathsend_and_zerocopysend_go_through_tls(impl, tmp_path):
    path = tmp_path / "file.bin"
    data = os.urandom((2 << 20) + 5)
    path.write_bytes(data)
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, *TLS) as server:
        conn = https(server)
        try:
            for _ in range(2):
                conn.request("GET", "/pathsend?path=%s" % path)
                response = conn.getresponse()
                assert response.status == 200 and response.read() == data
            conn.request("GET", "/zerocopy?path=%s&len=%d" % (path, 20 + 11 + len(data) - 100))
            response = conn.getresponse()
            assert response.status == 200 and response.read() == data[10:30] + b"--between--" + data[100:]
        finally:
            conn.close()


def test_curl_over_tls(tls_server):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(["curl", "-sS", "--cacert", CA, "https://localhost:%d/" % tls_server.port,
                          "https://localhost:%d/pid" % tls_server.port], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"Hello from process ")


def test_plain_http_on_the_tls_port_is_closed_with_a_log_line(tls_server):
    sock = tls_server.connect()
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_to_eof(sock) == b""
    finally:
        sock.close()
    wait_until(lambda: "a plain-HTTP request on the TLS port" in tls_server.stderr(), what="the log line",
               server=tls_server)
    conn = https(tls_server)                  # the worker serves on
    conn.request("GET", "/")
    assert conn.getresponse().status == 200
    conn.close()


def test_a_client_that_never_finishes_the_handshake_is_closed_after_the_header_timeout(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, *TLS,
                "--header-timeout", "1", "--keep-alive", "60") as server:
        idle = server.connect()
        half = None
        try:
            idle.settimeout(15)
            assert idle.recv(100) == b""              # no ClientHello at all
            # (connected only now: opened beside `idle`, its own deadline would pass while the test
            # waits above, and the server could close it as the ClientHello arrives, with a reset)
            half = server.connect()
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
            with pytest.raises(ssl.SSLWantReadError):
                obj.do_handshake()
            half.sendall(outgoing.read())             # a ClientHello, and then nothing
            half.settimeout(15)
            while True:                               # the server's hello, then its close
                data = half.recv(65536)
                if not data:
                    break
        finally:
            idle.close()
            if half is not None:
                half.close()


def test_client_certificates(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, *TLS,
                "--ca-certs", CA, "--cert-reqs", "required") as server:
        trusted = client_context(os.path.join(CERTS, "client.pem"), os.path.join(CERTS, "client.key"))
        conn = https(server, trusted)
        conn.request("GET", "/pid")
        assert conn.getresponse().status == 200
        conn.close()
        for context in (client_context(), client_context(os.path.join(CERTS, "stranger.pem"),
                                                          os.path.join(CERTS, "stranger.key"))):
            conn = https(server, context)
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
                conn.request("GET", "/pid")       # TLS 1.3: the refusal may come with the first read
                conn.getresponse()
            conn.close()
        wait_until(lambda: "closed a TLS connection" in server.stderr(), what="the log line", server=server)


def test_an_encrypted_key_with_its_password(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--certfile", CERT,
                "--keyfile", os.path.join(CERTS, "server-encrypted.key"), "--keyfile-password", "secret") as server:
        conn = https(server)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()


def test_tls_1_1_is_refused_and_ciphers_apply(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, *TLS,
                "--ssl-ciphers", "ECDHE+AESGCM") as server:
        old = client_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")       # (so that this client does offer TLS 1.1)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_socket(server, old).close()
        wait_until(lambda: "closed a TLS connection from 127.0.0.1: unsupported protocol" in server.stderr(),
                   what="the server's refusal", server=server)
        tls12 = client_context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        sock = tls_socket(server, tls12)
        try:
            assert sock.version() == "TLSv1.2" and "GCM" in sock.cipher()[0]
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_response(sock.makefile("rb")).status == 200
        finally:
            sock.close()


@pytest.mark.parametrize("args, message", [
    (("--certfile", "/nonexistent.pem"), "cannot read /nonexistent.pem"),
    (("--certfile", CERT, "--keyfile", os.path.join(CERTS, "stranger.key")), "the key does not match"),
    (("--certfile", CERT, "--keyfile", os.path.join(CERTS, "server-encrypted.key")), "--keyfile-password"),
    (("--certfile", CERT, "--keyfile", os.path.join(CERTS, "server-encrypted.key"), "--keyfile-password", "nope"),
     "wrong --keyfile-password"),
    (("--keyfile", KEY), "--keyfile needs --certfile"),
    ((*TLS, "--cert-reqs", "required"), "needs --ca-certs"),
    ((*TLS, "--ssl-ciphers", "NOPE"), "--ssl-ciphers"),
    ((*TLS, "--cert-reqs", "sometimes"), "--cert-reqs"),
])
def test_bad_tls_settings_are_one_line_errors(args, message):
    code, text = exit_of("--bind", "127.0.0.1:0", *args)
    assert code == 2
    assert message in text and "Traceback" not in text


def test_asgi_and_websockets_over_tls(impl):
    from websockets.sync.client import connect

    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, *TLS) as server:
        conn = https(server)
        conn.request("GET", "/scope")
        scope = json.loads(conn.getresponse().read())
        assert scope["scheme"] == "https"
        conn.close()
        with connect("wss://localhost:%d/ws/echo" % server.port, ssl=client_context(), open_timeout=10) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=10) == "over tls"
            big = os.urandom(1024 * 1024)
            ws.send(big)
            assert ws.recv(timeout=20) == big


def test_unix_socket_with_tls(impl, tmp_path):
    path = str(tmp_path / "tls.sock")
    with Server("apps.suite:app", "--bind", "unix:" + path, "--workers", "1", "--loop", impl, *TLS,
                wait=False) as server:
        server.wait_line(r"^fastcluster: listening on unix:")
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(10)
        raw.connect(path)
        sock = client_context().wrap_socket(raw, server_hostname="localhost")
        try:
            sock.sendall(b"GET /environ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = read_to_eof(sock)
            assert json.loads(data.split(b"\r\n\r\n", 1)[1])["wsgi.url_scheme"] == "https"
        finally:
            sock.close()
