"""WebSockets over ASGI on both loops, with a real client (the `websockets` package's) and raw
sockets where the client must misbehave: the handshake and its refusals, messages both ways,
fragments, close codes, sizes, the keep-alive ping, back-pressure and the drain."""

import base64
import os
import signal
import socket
import struct

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from helpers import IMPLS, Server, read_response, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", params=IMPLS)
def ws_server(request):
    server = Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", request.param,
                    "--ws-max-size", "1000000")
    server.impl = request.param
    yield server
    server.stop()


def url(server, path):
    return "ws://127.0.0.1:%d%s" % (server.port, path)


def frame(opcode, payload, fin=True, mask=True):
    """One client frame (masked, as RFC 6455 requires of clients, unless mask=False)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frame(f):
    """One server frame: (opcode, payload)."""
    b0, b1 = f.read(2)
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack("!H", f.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", f.read(8))[0]
    assert not b1 & 0x80, "a server frame must not be masked"
    return b0 & 0x0F, f.read(size)


def raw_handshake(server, path="/ws/echo", extra=b"", version=b"13", key=None):
    sock = server.connect(timeout=10)
    key = key if key is not None else base64.b64encode(os.urandom(16))
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n\r\n%s" % (path.encode(), key, version, extra))
    f = sock.makefile("rb")
    return sock, f, read_response(f, head=True)


def test_echo_text_bytes_fragments_and_large_messages(ws_server):
    with connect(url(ws_server, "/ws/echo"), open_timeout=10, max_size=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
        ws.send(["frag", "men", "ted"])          # one message in three frames
        assert ws.recv(timeout=10) == "fragmented"
        ws.send("\u00e9t\u00e9 \u2603")
        assert ws.recv(timeout=10) == "\u00e9t\u00e9 \u2603"
        big = os.urandom(900_000)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.ping(b"are you there").wait(10)       # the server answers pings


def test_accept_with_a_subprotocol_and_headers(ws_server):
    with connect(url(ws_server, "/ws/echo"), subprotocols=["other", "chat"], open_timeout=10) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["x-accepted-by"] == str(ws_server.worker_pids[0])
        assert ws.response.status_code == 101


def test_the_scope_of_a_websocket(ws_server):
    import json

    with connect(url(ws_server, "/ws/scope?a=1"), open_timeout=10, subprotocols=["x"]) as ws:
        scope = json.loads(ws.recv(timeout=10))
    assert scope["type"] == "websocket" and scope["scheme"] == "ws" and scope["path"] == "/ws/scope"
    assert scope["query_string"] == "a=1" and scope["subprotocols"] == ["x"] and "method" not in scope
    assert "websocket.http.response" in scope["extensions"]
    assert scope["http_version"] == "1.1" and scope["client"][0] == "127.0.0.1"


@pytest.mark.parametrize("path, status, body", [("/ws/deny", 403, b""), ("/ws/deny-response", 401, b"no token\n"),
                                                ("/ws/raise", 500, b"")])
def test_a_refused_handshake_is_an_http_response(ws_server, path, status, body):
    with pytest.raises(InvalidStatus) as info:
        connect(url(ws_server, path), open_timeout=10)
    response = info.value.response
    assert response.status_code == status and bytes(response.body) == body
    if path == "/ws/deny-response":
        assert response.headers["x-why"] == "no-token"


@pytest.mark.parametrize("key", [b"too-short", base64.b64encode(os.urandom(17)), base64.b64encode(os.urandom(15)),
                                 base64.b64encode(os.urandom(16))[:22], b"!" + base64.b64encode(os.urandom(16))[1:],
                                 b"AAAAAAAAAAAAAAAAAAAA\xffA=="])
def test_a_key_that_is_not_16_bytes_of_base64_is_refused(ws_server, key):
    sock, f, resp = raw_handshake(ws_server, key=key)
    sock.close()
    assert resp.status == 400


def test_invalid_handshakes_are_refused_before_the_app(ws_server):
    sock, f, resp = raw_handshake(ws_server, version=b"8")
    sock.close()
    assert resp.status == 426 and resp.header("Sec-WebSocket-Version") == "13"


def test_close_codes_both_ways(ws_server, tmp_path):
    with connect(url(ws_server, "/ws/close"), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 4001 and info.value.rcvd.reason == "bye"
    marker = tmp_path / "code"
    with connect(url(ws_server, "/ws/echo?marker=%s" % marker), open_timeout=10) as ws:
        ws.close(code=4321, reason="client done")
    wait_until(lambda: marker.exists() and marker.read_text() == "4321", what="the app's disconnect code")
    # a client that just goes away: 1006 for the app
    marker2 = tmp_path / "code2"
    sock, f, resp = raw_handshake(ws_server, "/ws/echo?marker=%s" % marker2)
    assert resp.status == 101
    sock.close()
    wait_until(lambda: marker2.exists() and marker2.read_text() == "1006", what="1006 for a lost connection")


def test_frames_sent_with_the_handshake_reach_the_app(ws_server):
    sock, f, resp = raw_handshake(ws_server, extra=frame(0x1, b"early") + frame(0x2, b"\x01\x02"))
    try:
        assert resp.status == 101
        assert read_frame(f) == (0x1, b"early")
        assert read_frame(f) == (0x2, b"\x01\x02")
    finally:
        sock.close()


def test_a_message_over_ws_max_size_closes_with_1009(ws_server):
    # (the server closes as soon as the frame header, or the running total, says too big: the client
    # may see it while it is still sending, or at its next receive)
    with connect(url(ws_server, "/ws/echo"), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.send(b"x" * 1_000_001)
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 1009
    # fragments add up to the same limit
    with connect(url(ws_server, "/ws/echo"), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.send([b"y" * 600_000, b"y" * 600_000])
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 1009


def test_protocol_errors_close_with_1002_or_1007(ws_server):
    sock, f, resp = raw_handshake(ws_server)
    try:
        sock.sendall(frame(0x1, b"unmasked", mask=False))
        opcode, payload = read_frame(f)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    finally:
        sock.close()
    sock, f, resp = raw_handshake(ws_server)
    try:
        sock.sendall(frame(0x1, b"\xff\xfe not utf-8"))
        opcode, payload = read_frame(f)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007
    finally:
        sock.close()


def test_many_messages_while_the_client_reads_late_arrive_whole_and_in_order(ws_server):
    """200 x 64 KiB sent while the reader starts late: the server pauses reading while the app is
    behind, send() waits while the client is, and reading goes on while a write waits; nothing is
    lost or reordered. (The asyncio client: the sync one cannot read while one of its sends blocks.)"""
    import asyncio

    from websockets.asyncio.client import connect as async_connect

    messages = [bytes([i]) * 65536 for i in range(200)]

    async def run():
        async with async_connect(url(ws_server, "/ws/echo"), max_size=None, open_timeout=10) as ws:
            async def reader():
                await asyncio.sleep(0.5)    # (not a readiness wait: the lag that fills the buffers)
                return [await asyncio.wait_for(ws.recv(), 20) for _ in messages]

            task = asyncio.create_task(reader())
            for m in messages:
                await asyncio.wait_for(ws.send(m), 20)
            return await asyncio.wait_for(task, 30)

    assert asyncio.run(run()) == messages


def test_the_server_pings_an_idle_client_and_closes_one_that_never_answers(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--ws-ping-interval", "1", "--ws-ping-timeout", "1") as server:
        # a real client answers the pings: still open after three intervals
        with connect(url(server, "/ws/echo"), open_timeout=10, ping_interval=None) as ws:
            with pytest.raises(TimeoutError):
                ws.recv(timeout=3.5)
            ws.send("still here")
            assert ws.recv(timeout=10) == "still here"
        # a raw client that never answers: a ping, then a close with 1011
        sock, f, resp = raw_handshake(server)
        try:
            assert resp.status == 101
            sock.settimeout(10)
            assert read_frame(f)[0] == 0x9
            opcode, payload = read_frame(f)
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011
        finally:
            sock.close()


def test_a_graceful_stop_closes_websockets_with_1001(impl):
    server = Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl)
    try:
        with connect(url(server, "/ws/echo"), open_timeout=10) as ws:
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            server.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
        assert info.value.rcvd.code == 1001
        assert server.wait(timeout=20) == 0
    finally:
        server.stop()


def test_a_wsgi_app_answers_an_upgrade_as_a_plain_request(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        sock, f, resp = raw_handshake(server, "/")
        try:
            assert resp.status == 200 and resp.header("Connection") == "close"
        finally:
            sock.close()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
