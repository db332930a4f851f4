"""HTTP/2 (issue 29): h2c with prior knowledge and h2 over TLS by ALPN, for WSGI and ASGI apps, on
both loops, with real clients: curl, httpx, h2load, and raw frames from the `h2` package's client
(`H2Client` below) for what the others cannot do (many streams at once, resets, small windows,
GOAWAY)."""

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from helpers import IMPLS, TESTS, Server, get, pid_alive, wait_until

h2_connection = pytest.importorskip("h2.connection")
h2_config = pytest.importorskip("h2.config")
h2_events = pytest.importorskip("h2.events")

pytestmark = pytest.mark.timeout(120)

CERTS = os.path.join(TESTS, "certs")
TLS = ("--certfile", os.path.join(CERTS, "server.pem"), "--keyfile", os.path.join(CERTS, "server.key"))
CURL = shutil.which("curl")
H2LOAD = shutil.which("h2load")


class H2Client:
    """An HTTP/2 client connection over a real socket (plain h2c, or TLS with ALPN h2), driven by
    the `h2` package: requests go out as frames, `run()` reads until the streams asked for end."""

    def __init__(self, server, tls=False, window=None):
        sock = socket.create_connection((server.host, server.port), timeout=20)
        if tls:
            context = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.conn = h2_connection.H2Connection(config=h2_config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2_connection.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.responses = {}
        self.inbuf = b""
        self.ended = set()
        self.resets = {}
        self.goaway = None
        self.closed = False
        self.authority = "%s:%d" % (server.host, server.port)
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", body=None, headers=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":scheme", "http"), (":authority", self.authority), (":path", path)]
        head += list(headers)
        self.conn.send_headers(sid, head, end_stream=body is None and end)
        self.responses[sid] = {"status": None, "headers": {}, "body": b"", "trailers": None}
        if body is not None:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Send `body` on `sid` as the server's windows allow (reading its WINDOW_UPDATEs meanwhile)."""
        view = memoryview(body)
        while view:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(view))
            if room <= 0:
                self.flush()
                self._read_once()
                continue
            self.conn.send_data(sid, view[:room].tobytes())
            view = view[room:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def _read_once(self):
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return
        self.inbuf += data
        while len(self.inbuf) >= 9:
            size = 9 + int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < size:
                break
            frame, self.inbuf = self.inbuf[:size], self.inbuf[size:]
            if frame[3] == 7:
                # GOAWAY: read here, not by h2, whose client closes its state machine on one and then
                # refuses the responses still in flight (which a graceful GOAWAY lets finish)
                self.goaway = (int.from_bytes(frame[13:17], "big"), int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF)
                continue
            for event in self.conn.receive_data(frame):
                self._event(event)
        self.flush()

    def _event(self, event):
        if isinstance(event, h2_events.ResponseReceived):
            headers = {k.decode(): v.decode() for k, v in event.headers}
            self.responses[event.stream_id]["status"] = int(headers.pop(":status"))
            self.responses[event.stream_id]["headers"] = headers
        elif isinstance(event, h2_events.DataReceived):
            self.responses[event.stream_id]["body"] += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2_events.TrailersReceived):
            self.responses[event.stream_id]["trailers"] = [(k.decode(), v.decode()) for k, v in event.headers]
        elif isinstance(event, h2_events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2_events.StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, h2_events.ConnectionTerminated):
            self.goaway = (event.error_code, event.last_stream_id)

    def run(self, sids, timeout=20.0, until_close=False):
        """Read until every stream in `sids` ended or was reset (or, `until_close`, the server closed)."""
        deadline = time.monotonic() + timeout
        while not self.closed and (until_close or not all(s in self.ended or s in self.resets for s in sids)):
            assert time.monotonic() < deadline, "streams not done: %r" % (set(sids) - self.ended,)
            self._read_once()
        return [self.responses[s] for s in sids]

    def get(self, path, **kw):
        sid = self.request(path, **kw)
        return self.run([sid])[0]

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module", params=IMPLS)
def wsgi(request):
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", request.param)
    server.impl = request.param
    yield server
    server.stop()


@pytest.fixture(scope="module", params=IMPLS)
def asgi(request):
    server = Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", request.param)
    server.impl = request.param
    yield server
    server.stop()


def _curl(*args):
    out = subprocess.run([CURL, "-sS", "--max-time", "20", *args], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


# --- negotiation ---

@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_curl_h2c_prior_knowledge(wsgi):
    out = _curl("--http2-prior-knowledge", "-w", "\n%{http_version} %{response_code}", wsgi.url + "/pid")
    body, _, tail = out.rpartition(b"\n")
    assert tail == b"2 200"
    assert int(body) in wsgi.worker_pids


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_upgrade_h2c_is_answered_as_http1(wsgi):
    """The deprecated `Upgrade: h2c` (curl --http2 on http://): the request is answered as HTTP/1.1."""
    out = _curl("--http2", "-w", "\n%{http_version} %{response_code}", wsgi.url + "/pid")
    body, _, tail = out.rpartition(b"\n")
    assert tail == b"1.1 200" and int(body) in wsgi.worker_pids


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_curl_tls_alpn_both_versions(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, *TLS) as server:
        url = "https://localhost:%d/pid" % server.port
        common = ("--cacert", os.path.join(CERTS, "ca.pem"), "--resolve", "localhost:%d:127.0.0.1" % server.port,
                  "-w", "\n%{http_version}")
        assert _curl("--http2", *common, url).rpartition(b"\n")[2] == b"2"
        assert _curl("--http1.1", *common, url).rpartition(b"\n")[2] == b"1.1"
        with H2Client(server, tls=True) as client:
            response = client.get("/environ")
            assert response["status"] == 200
            env = json.loads(response["body"])
            assert env["SERVER_PROTOCOL"] == "HTTP/2" and env["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("cut", [10, 20])
def test_a_preface_in_pieces(wsgi, cut):
    """The h2c preface split over two reads (its first 10 or 20 bytes, then the rest with the
    SETTINGS and a request): still HTTP/2."""
    conn = h2_connection.H2Connection(config=h2_config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/pid")],
                      end_stream=True)
    data = conn.data_to_send()
    sock = socket.create_connection((wsgi.host, wsgi.port), timeout=10)
    try:
        sock.sendall(data[:cut])
        time.sleep(0.2)            # (so that the server reads the first piece alone)
        sock.sendall(data[cut:])
        status = None
        while status is None:
            chunk = sock.recv(65536)
            assert chunk, "closed before the response"
            for event in conn.receive_data(chunk):
                if isinstance(event, h2_events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
            sock.sendall(conn.data_to_send())
        assert status == b"200"
    finally:
        sock.close()


def test_http1_still_served_beside_h2c(wsgi):
    response = get(wsgi, "/pid")
    assert response.status == 200 and response.version == "HTTP/1.1"
    assert int(response.body) in wsgi.worker_pids


def test_http_1_refuses_the_preface_and_http_2_refuses_http1(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--http", "1") as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
        sock.close()
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--http", "2") as server:
        sock = socket.create_connection((server.host, server.port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 505")
        sock.close()
        with H2Client(server) as client:
            assert client.get("/pid")["status"] == 200


# --- streams as exchanges ---

def test_wsgi_environ_and_headers(wsgi):
    with H2Client(wsgi) as client:
        response = client.get("/environ?a=1", headers=[("x-thing", "one"), ("x-thing", "two")])
        env = json.loads(response["body"])
        assert env["SERVER_PROTOCOL"] == "HTTP/2"
        assert env["REQUEST_METHOD"] == "GET" and env["PATH_INFO"] == "/environ" and env["QUERY_STRING"] == "a=1"
        assert env["HTTP_HOST"] == client.authority
        assert env["HTTP_X_THING"] == "one,two"
        headers = response["headers"]
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(response["body"])
        assert "date" in headers and headers["server"] == "fastcluster"
        head = client.get("/", method="HEAD")
        assert head["status"] == 200 and head["body"] == b"" and int(head["headers"]["content-length"]) > 0


def test_asgi_scope(asgi):
    with H2Client(asgi) as client:
        response = client.get("/scope?x=2")
        scope = json.loads(response["body"])
        assert scope["http_version"] == "2" and scope["method"] == "GET" and scope["path"] == "/scope"
        assert scope["query_string"] == "x=2"
        assert ["host", client.authority] in scope["headers"]     # (from :authority, as HTTP/1.1's Host)


def _concurrent_streams_interleave(server, app):
    """Twenty streams on one connection to an app that waits 0.5 s each: they run at once (app
    threads, or the event loop), so all are answered long before 20 x 0.5 s, each whole."""
    with H2Client(server) as client:
        began = time.monotonic()
        sids = [client.request("/sleep?s=0.5") for _ in range(20)]
        responses = client.run(sids)
        took = time.monotonic() - began
        assert all(r["status"] == 200 and r["body"].startswith(b"slept") for r in responses)
        assert took < 5.0, took


def test_concurrent_streams_interleave_wsgi(wsgi):
    _concurrent_streams_interleave(wsgi, "wsgi")


def test_concurrent_streams_interleave_asgi(asgi):
    _concurrent_streams_interleave(asgi, "asgi")


def _large_upload_and_download_through_small_windows(server, app):
    with H2Client(server, window=16384) as client:
        body = os.urandom(3 << 20)
        sid = client.request("/upload", method="POST", body=body)
        response = client.run([sid])[0]
        assert response["status"] == 200
        assert response["body"] == b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
        big = client.get("/write-big?mb=4" if app == "wsgi" else "/big?mb=4")
        assert big["status"] == 200 and big["body"] == b"w" * (4 << 20)


def test_large_upload_and_download_through_small_windows_wsgi(wsgi):
    _large_upload_and_download_through_small_windows(wsgi, "wsgi")


def test_large_upload_and_download_through_small_windows_asgi(asgi):
    _large_upload_and_download_through_small_windows(asgi, "asgi")


def _app_error_is_a_500_on_its_stream_only(server, app):
    with H2Client(server) as client:
        bad = client.request("/raise")
        good = client.request("/pid")
        failed, fine = client.run([bad, good])
        assert failed["status"] == 500
        assert fine["status"] == 200 and int(fine["body"]) in server.worker_pids


def test_app_error_is_a_500_on_its_stream_only_wsgi(wsgi):
    _app_error_is_a_500_on_its_stream_only(wsgi, "wsgi")


def test_app_error_is_a_500_on_its_stream_only_asgi(asgi):
    _app_error_is_a_500_on_its_stream_only(asgi, "asgi")


def test_files_over_streams(wsgi, asgi, tmp_path):
    """wsgi.file_wrapper and ASGI's pathsend over HTTP/2: read in pieces into the stream (no
    sendfile under HTTP/2's framing), whole, with and without a length."""
    with H2Client(wsgi) as client:
        size = 300001
        response = client.get("/file?size=%d" % size)
        assert response["status"] == 200
        assert response["body"] == bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    path = tmp_path / "data.bin"
    data = os.urandom(200000)
    path.write_bytes(data)
    with H2Client(asgi) as client:
        for query in ("", "&nolen"):
            response = client.get("/pathsend?path=%s%s" % (path, query))
            assert response["status"] == 200 and response["body"] == data


def test_asgi_trailers_end_the_stream(asgi):
    """The trailers extension over HTTP/2: a HEADERS block after the DATA, which ends the stream, for
    a client that sent te: trailers (content-length and host among the app's trailers: dropped);
    none without it, and none on a HEAD (its HEADERS ended the stream)."""
    with H2Client(asgi) as client:
        asked = [client.request("/trailers" + query, headers=[("te", "trailers")]) for query in ("", "?split=1")]
        plain = client.request("/trailers")
        head = client.request("/trailers", method="HEAD", headers=[("te", "trailers")])
        responses = client.run(asked + [plain, head])
        for response in responses[:3]:
            assert response["status"] == 200 and response["body"] == b"part one, part two"
            assert "content-length" not in response["headers"]
        for response in responses[:2]:
            assert response["trailers"] == [("x-checksum", "abc123"), ("x-count", "2")]
        assert responses[2]["trailers"] is None
        assert responses[3]["status"] == 200 and responses[3]["body"] == b"" and responses[3]["trailers"] is None
        assert all(sid in client.ended for sid in asked + [plain, head])


def test_request_trailers_end_the_body(wsgi, asgi):
    """A request body followed by trailers (HEADERS with END_STREAM after the DATA): the body is
    whole for the app (the trailers themselves reach neither the environ nor the scope: neither
    has a place for them), and the connection serves on."""
    for server in (wsgi, asgi):
        with H2Client(server) as client:
            body = b"q" * 100000
            sid = client.request("/echo", method="POST", body=body, end=False)
            client.conn.send_headers(sid, [("x-digest", "abc")], end_stream=True)
            client.flush()
            response = client.run([sid])[0]
            assert response["status"] == 200 and response["body"] == body
            assert client.get("/pid")["status"] == 200


def _unread_bodies_do_not_shrink_the_window(server):
    with H2Client(server) as client:
        assert client.get("/pid")["status"] == 200                     # (the server's SETTINGS are in)
        window = client.conn.remote_settings.initial_window_size    # (the default, 256 KiB)
        body = b"b" * (2 * window)
        for _ in range(150):      # two stream windows, 150 times on one connection: 3x its 100 windows
            sid = client.request("/reject", method="POST", body=body)
            assert client.run([sid])[0]["status"] == 413
        assert client.get("/pid")["status"] == 200


def test_unread_bodies_do_not_shrink_the_window_wsgi(wsgi):
    """An app that answers without reading its body (/reject): what was read of it goes back to the
    connection's window, which otherwise would close for good after a hundred such requests."""
    _unread_bodies_do_not_shrink_the_window(wsgi)


def test_unread_bodies_do_not_shrink_the_window_asgi(asgi):
    _unread_bodies_do_not_shrink_the_window(asgi)


def test_client_reset_leaves_the_connection_serving(wsgi):
    with H2Client(wsgi) as client:
        sid = client.request("/sleep?s=0.3")
        client.conn.reset_stream(sid)
        client.flush()
        assert client.get("/pid")["status"] == 200


def test_header_limits_get_431(impl):
    """--max-header-bytes and --max-headers bound an HTTP/2 header list as they do HTTP/1.1's: 431
    on that stream, and the connection serves on."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--max-header-bytes", "4096", "--max-headers", "20") as server:
        with H2Client(server) as client:
            assert client.get("/pid", headers=[("x-big", "v" * 6000)])["status"] == 431
            assert client.get("/pid", headers=[("x-n%d" % i, "v") for i in range(30)])["status"] == 431
            assert client.get("/pid", headers=[("x-small", "v" * 1000)])["status"] == 200


def test_httpx_http2(wsgi):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    with httpx.Client(http1=False, http2=True, timeout=20) as client:
        responses = [client.get(wsgi.url + "/pid") for _ in range(3)]
    assert all(r.http_version == "HTTP/2" and r.status_code == 200 for r in responses)


# --- hostile peers ---

def test_a_stream_held_at_a_zero_window_is_reset_after_write_timeout(impl):
    """HTTP/2's slowloris: a client that opens a stream and keeps its window at 0 holds the app's
    response (and an app thread waiting to write it) until --write-timeout; then the stream is
    reset (CANCEL), the app's write fails, and others are served all along."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--write-timeout", "2") as server:
        with H2Client(server, window=0) as client:
            sid = client.request("/write-big?mb=4")
            other = H2Client(server)
            try:
                assert other.get("/pid")["status"] == 200
            finally:
                other.close()
            client.run([sid], timeout=15)
            assert client.resets.get(sid) == 8, (client.resets, client.responses[sid]["status"])
            assert client.responses[sid]["body"] == b""
        with H2Client(server) as again:
            assert again.get("/pid")["status"] == 200


def test_rapid_reset_ends_the_connection_and_others_are_served(wsgi):
    with H2Client(wsgi) as client:
        head = [(":method", "GET"), (":scheme", "http"), (":authority", client.authority), (":path", "/pid")]
        for _ in range(400):        # each stream opened and reset in the same write (CVE-2023-44487)
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, head, end_stream=True)
            client.conn.reset_stream(sid)
        client.flush()
        client.run([], until_close=True)
        assert client.goaway is not None and client.goaway[0] == 11     # ENHANCE_YOUR_CALM
    with H2Client(wsgi) as other:
        assert other.get("/pid")["status"] == 200


def test_hpack_bomb_gets_431_and_the_connection_serves_on(wsgi):
    """A 4000-byte field put in the HPACK table once, then referenced 100 times in one header block
    (a few hundred bytes on the wire, 400 KB decoded): counted while decoded, refused with 431."""
    with H2Client(wsgi) as client:
        big = ("x-big", "v" * 4000)
        assert client.get("/pid", headers=[big])["status"] == 200       # (now in both HPACK tables)
        assert client.get("/pid", headers=[big] * 100)["status"] == 431
        assert client.get("/pid")["status"] == 200


def _raw_h2(server):
    """A socket that has sent the client preface and an empty SETTINGS, and a frame maker."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b""))
    return sock


def _frame(kind, flags, sid, payload):
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def _ends(sock, timeout=15.0):
    """Read until the server closes the connection: the GOAWAY's error code, if one came."""
    sock.settimeout(timeout)
    data, code = b"", None
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    while len(data) >= 9:
        size = int.from_bytes(data[:3], "big")
        if data[3] == 7:
            code = int.from_bytes(data[13:17], "big")
        data = data[9 + size:]
    return code


def test_continuation_flood_is_cut_off(wsgi):
    """CVE-2024-27316: a HEADERS frame without END_HEADERS and CONTINUATION frames that never end it,
    each full of new header fields: the connection ends once the block passes the header limits
    (its memory bounded by them), and the worker serves others."""
    hpack = pytest.importorskip("hpack")
    encoder = hpack.Encoder()
    sock = _raw_h2(wsgi)
    try:
        head = encoder.encode([(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/pid")])
        sock.sendall(_frame(1, 0, 1, head))
        try:
            for i in range(2000):                 # 2000 x 1 KB: far past --max-header-bytes (64 KiB)
                sock.sendall(_frame(9, 0, 1, encoder.encode([("x-flood-%d" % i, "v" * 1000)])))
        except (BrokenPipeError, ConnectionResetError):
            pass                                   # (the server closed while the flood went on)
        # a GOAWAY, with the engine's code: libnghttp2's CONTINUATION limit says INTERNAL_ERROR (2),
        # the h2 engine PROTOCOL_ERROR (1) or ENHANCE_YOUR_CALM (11)
        assert _ends(sock) in (1, 2, 11)
    finally:
        sock.close()
    with H2Client(wsgi) as other:
        assert other.get("/pid")["status"] == 200


def test_continuation_flood_in_trailers_is_cut_off(wsgi, asgi):
    """The same flood in a request's trailers (after the headers and some body): trailers are read
    and dropped, under the same bound: the connection ends, and the worker serves others."""
    hpack = pytest.importorskip("hpack")
    for server in (wsgi, asgi):
        encoder = hpack.Encoder()
        sock = _raw_h2(server)
        try:
            head = encoder.encode([(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/echo")])
            sock.sendall(_frame(1, 0x4, 1, head) + _frame(0, 0, 1, b"body"))
            sock.sendall(_frame(1, 0x1, 1, encoder.encode([("x-trailer", "1")])))   # END_STREAM, no END_HEADERS
            try:
                for i in range(2000):
                    sock.sendall(_frame(9, 0, 1, encoder.encode([("x-flood-%d" % i, "v" * 1000)])))
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert _ends(sock) in (1, 2, 11)
        finally:
            sock.close()
        with H2Client(server) as other:
            assert other.get("/pid")["status"] == 200


def test_ping_flood_of_a_client_that_does_not_read(wsgi):
    """PINGs sent without reading their ACKs: the answers pile up behind a full socket until the
    engine's bound, then the connection ends; the worker serves others meanwhile and after."""
    sock = _raw_h2(wsgi)
    sock.settimeout(20)
    ping = _frame(6, 0, 0, b"12345678") * 1000
    try:
        for _ in range(400):                      # 400,000 PINGs, 6.8 MB, nothing read
            sock.sendall(ping)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    finally:
        sock.close()
    with H2Client(wsgi) as other:
        assert other.get("/pid")["status"] == 200


# --- restarts and stops ---

def test_sigterm_sends_goaway_and_finishes_streams(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        with H2Client(server) as client:
            sid = client.request("/sleep?s=1")
            time.sleep(0.2)           # (the stream is in the app when the stop comes)
            server.signal(signal.SIGTERM)
            response = client.run([sid], until_close=True)[0]
            assert response["status"] == 200 and response["body"].startswith(b"slept")
            assert client.goaway is not None and client.goaway[0] == 0 and client.goaway[1] >= sid
        assert server.wait(30) == 0


def _load_until(server, stop, tally, streams=5):
    """A client as browsers and gRPC are: up to `streams` GETs at once on one HTTP/2 connection; after
    a GOAWAY it finishes what the server took, and sends the rest (refused, or never sent) on a new
    connection. Counts each answer (`ok`) and each stream that failed after the server took it."""
    pending = 0
    while not stop.is_set():
        client = H2Client(server)
        try:
            inflight = [client.request("/pid") for _ in range(streams + pending)]
            pending = 0
            while inflight and not stop.is_set():
                client._read_once()
                for sid in list(inflight):
                    code = client.resets.get(sid)
                    if sid in client.ended:
                        inflight.remove(sid)
                        response = client.responses[sid]
                        tally["ok" if response["status"] == 200 else "failed"] += 1
                    elif code is not None or (client.goaway is not None and sid > client.goaway[1]):
                        inflight.remove(sid)
                        if code not in (None, 7):       # (REFUSED_STREAM: not taken, sent again)
                            tally["failed"] += 1
                        else:
                            pending += 1
                if client.closed:
                    tally["failed"] += len(inflight)   # streams it took, cut off
                    break
                if client.goaway is None:
                    while len(inflight) < streams:
                        inflight.append(client.request("/pid"))
                else:
                    pending += streams - len(inflight) if not inflight else 0
        except (OSError, h2_connection.ProtocolError) as exc:
            tally["errors"] += 1
            tally.setdefault("what", []).append(repr(exc))
        finally:
            client.close()


def test_rolling_restart_drops_no_stream(impl):
    """The seed's experiment over HTTP/2: SIGUSR2 replaces both workers while four clients keep five
    streams each in flight; every stream a worker took is answered (GOAWAY, then the streams in
    flight finish), and what it did not take goes to the new workers."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        tally = {"ok": 0, "failed": 0, "errors": 0}
        stop = threading.Event()
        threads = [threading.Thread(target=_load_until, args=(server, stop, tally)) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            old = set(server.worker_pids)
            server.signal(signal.SIGUSR2)
            wait_until(lambda: len(set(server.worker_pids) - old) >= 2, timeout=30, what="two new workers")
            time.sleep(2.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert tally["failed"] == 0 and tally["errors"] == 0, tally
        assert tally["ok"] > 200, tally
        assert set(server.worker_pids) - old, "the workers were not replaced"


def test_upgrade_in_place_drops_no_stream(impl, tmp_path):
    """`fastcluster upgrade` (a new master takes the socket over, the old one drains) while four
    HTTP/2 clients keep streams in flight: every stream either master took is answered."""
    pidfile = tmp_path / "master.pid"
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                    "--pid", str(pidfile))
    new_master = None
    tally = {"ok": 0, "failed": 0, "errors": 0}
    stop = threading.Event()
    threads = [threading.Thread(target=_load_until, args=(server, stop, tally)) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: tally["ok"] > 50, timeout=20, what="load before the upgrade")
        out = subprocess.run([sys.executable, "-m", "fastcluster", "upgrade", "--pid", str(pidfile), "--wait", "60"],
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        with open(pidfile) as f:
            new_master = int(f.read())
        assert server.wait(timeout=60) == 0          # the old master drained and left
        before = tally["ok"]
        wait_until(lambda: tally["ok"] > before + 50, timeout=20, what="load after the upgrade")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        if new_master is not None and pid_alive(new_master):
            os.kill(new_master, signal.SIGTERM)
            wait_until(lambda: not pid_alive(new_master), timeout=30, what="the new master to stop")
        server.stop()
    assert tally["failed"] == 0 and tally["errors"] == 0, tally


@pytest.mark.skipif(H2LOAD is None, reason="needs h2load (Debian nghttp2-client)")
def test_h2load_many_streams(impl):
    """h2load, 8 connections with 10 streams each for 2 s: every request answered."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl) as server:
        out = subprocess.run([H2LOAD, "-c", "8", "-m", "10", "-D", "2", server.url + "/pid"],
                             capture_output=True, text=True, timeout=60).stdout
        line = [x for x in out.splitlines() if x.startswith("requests:")][0]
        numbers = dict(part.strip().split(" ", 1)[::-1] for part in line.split(":", 1)[1].split(","))
        assert int(numbers["failed"]) == 0 and int(numbers["errored"]) == 0, out
        assert int(numbers["succeeded"]) > 500, out
