"""ASGI apps on both loops: the HTTP spec, lifespan, concurrency on one worker, app failures,
real Starlette and FastAPI apps (the WebSocket cases are in test_websocket.py)."""

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import time

import pytest

from helpers import IMPLS, Server, at_eof, exchange, pid_alive, read_response, read_to_eof, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module", params=IMPLS)
def asgi_server(request, tmp_path_factory):
    log = tmp_path_factory.mktemp("lifespan") / "lifespan.log"
    server = Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", request.param,
                    env={"ASGI_LIFESPAN_LOG": str(log)})
    server.impl = request.param
    server.lifespan_log = log
    yield server
    server.stop()


def get(server, path, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_the_banner_says_the_app_is_asgi_and_on_which_event_loop(asgi_server):
    line = [entry for entry in asgi_server.lines if entry.startswith("fastcluster: the app is")]
    assert line == ["fastcluster: the app is an ASGI app, on the uvloop event loop"], asgi_server.lines


def test_hello_and_keep_alive(asgi_server):
    conn = http.client.HTTPConnection(asgi_server.host, asgi_server.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read().startswith(b"Hello from process ")
            assert resp.getheader("Content-Length") and resp.getheader("Date") and resp.getheader("Server")
    finally:
        conn.close()


def test_scope_has_what_the_spec_asks(asgi_server):
    status, _h, body = get(asgi_server, "/scope/caf%C3%A9%2Fx?q=%20a&b=2", headers={"X-Mixed-Case": "Yes"})
    assert status == 200
    scope = json.loads(body)
    assert scope["type"] == "http" and scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1" and scope["method"] == "GET" and scope["scheme"] == "http"
    assert scope["path"] == "/scope/caf\u00e9/x"            # percent-decoded, as UTF-8
    assert scope["raw_path"] == "/scope/caf%C3%A9%2Fx"      # as sent
    assert scope["query_string"] == "q=%20a&b=2"
    assert scope["root_path"] == ""
    assert scope["server"] == ["127.0.0.1", asgi_server.port]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert ["x-mixed-case", "Yes"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    # the lifespan's state, copied into each request
    assert scope["state"]["started_by"] in asgi_server.worker_pids


def test_http10_scope_and_close(asgi_server):
    (resp,), sock, f = exchange(asgi_server, b"GET /scope HTTP/1.0\r\n\r\n")
    try:
        assert resp.status == 200 and json.loads(resp.body)["http_version"] == "1.0"
        assert at_eof(sock, f)
    finally:
        sock.close()


def test_request_bodies_sized_chunked_and_in_pieces(asgi_server):
    status, headers, body = get(asgi_server, "/echo", "POST", b"x" * 100_000)
    assert status == 200 and body == b"x" * 100_000 and headers["x-body-length"] == "100000"
    chunked = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    (resp,), sock, _f = exchange(asgi_server, chunked)
    sock.close()
    assert resp.status == 200 and resp.body == b"hello world"
    # a large body reaches the app as it comes: more than one http.request, more_body until the last
    status, _h, body = get(asgi_server, "/echo-pieces", "POST", os.urandom(3 * 1024 * 1024))
    sizes = json.loads(body)
    assert status == 200 and sum(sizes) == 3 * 1024 * 1024 and len(sizes) > 1


def test_100_continue_goes_out_when_the_app_reads(asgi_server):
    sock = asgi_server.connect()
    try:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        f = sock.makefile("rb")
        interim = read_response(f)
        assert interim.status == 100
        sock.sendall(b"hello")
        final = read_response(f)
        assert final.status == 200 and final.body == b"hello"
    finally:
        sock.close()


def test_an_app_answering_without_reading_a_100_continue_body_closes(asgi_server):
    (resp,), sock, f = exchange(asgi_server, b"POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                                             b"Expect: 100-continue\r\n\r\n")
    try:
        assert resp.status == 413 and resp.header("Connection") == "close"
        assert at_eof(sock, f)
    finally:
        sock.close()


def test_pipelined_requests_are_answered_in_order(asgi_server):
    paths = ["/scope/%d" % i for i in range(8)]
    data = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths)
    responses, sock, _f = exchange(asgi_server, data, count=len(paths))
    sock.close()
    assert [json.loads(r.body)["path"] for r in responses] == paths


def test_streamed_response_bodies_are_chunked(asgi_server):
    (resp,), sock, _f = exchange(asgi_server, b"GET /stream?n=4&size=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.close()
    assert resp.header("Transfer-Encoding") == "chunked" and resp.body == b"aaabbbcccddd"


def test_head_204_and_304_have_no_body(asgi_server):
    (head,), sock, _f = exchange(asgi_server, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
    sock.close()
    assert head.status == 200 and int(head.header("Content-Length")) > 0
    for path, status in (("/no-content", 204), ("/not-modified", 304)):
        responses, sock, _f = exchange(asgi_server, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode(), count=2)
        sock.close()
        # no body, and none that the next response on the connection would be read into
        assert responses[0].status == status and responses[0].header("Content-Length") is None
        assert responses[1].status == 200 and responses[1].body.startswith(b"Hello from process ")


def test_big_responses_are_paced_by_the_client(asgi_server):
    sock = asgi_server.connect(timeout=20)
    try:
        sock.sendall(b"GET /big?mb=32 HTTP/1.1\r\nHost: x\r\n\r\n")
        f = sock.makefile("rb")
        resp = read_response(f)
        assert resp.status == 200 and len(resp.body) == 32 << 20 and set(resp.body) == {ord("w")}
    finally:
        sock.close()


def test_a_slow_reading_app_gets_a_big_upload_without_the_server_buffering_it(asgi_server):
    size = 8 * 1024 * 1024
    status, _h, body = get(asgi_server, "/slow-reader", "POST", b"u" * size)
    assert status == 200 and int(body) == size


def test_app_failures_are_500_or_a_cut_connection_and_logged(asgi_server):
    for path in ("/raise", "/no-response"):
        status, _h, body = get(asgi_server, path)
        assert status == 500 and body == b"Internal Server Error\n"
    (resp,), sock, f = exchange(asgi_server, b"GET /raise-after-headers HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
    try:
        assert resp.status == 200
        data = f.read()      # the chunked body never ends: the connection is cut
        assert b"partial" in data and not data.endswith(b"0\r\n\r\n")
    finally:
        sock.close()
    (resp,), sock, _f = exchange(asgi_server, b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.close()
    assert resp.status == 500
    wait_until(lambda: "boom from the test app" in asgi_server.stderr(), what="the traceback")
    assert "the ASGI app returned without starting a response" in asgi_server.stderr()
    assert "header value contains CR, LF or NUL" in asgi_server.stderr()
    # the workers are the ones that started
    assert all(pid_alive(pid) for pid in asgi_server.worker_pids)


def test_content_length_shorter_or_longer_than_the_body(asgi_server):
    (resp,), sock, f = exchange(asgi_server, b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
    try:
        assert resp.status == 200 and f.read() == b"only this"     # then the connection ends
    finally:
        sock.close()
    (resp,), sock, _f = exchange(asgi_server, b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.close()
    assert resp.body == b"1234"


def test_http_disconnect_reaches_an_app_waiting_on_receive(asgi_server, tmp_path):
    marker, started = tmp_path / "disconnect", tmp_path / "waiting"
    sock = asgi_server.connect()
    sock.sendall(b"GET /wait-disconnect?marker=%s&started=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                 % (str(marker).encode(), str(started).encode()))
    wait_until(started.exists, what="the app waiting on receive()", server=asgi_server)
    sock.close()
    wait_until(lambda: marker.exists() and marker.read_text() == "http.disconnect", what="http.disconnect")


def test_a_background_task_runs_after_the_response(asgi_server, tmp_path):
    """The response goes out when the app sends it, not when the app returns: a server that waited
    for the app would answer only after the task's 2 s, with its marker already written."""
    marker = tmp_path / "bg"
    status, _h, body = get(asgi_server, "/background?s=2&marker=%s" % marker)
    assert status == 200 and body == b"done\n" and not marker.exists()
    wait_until(lambda: marker.exists(), what="the background task")


def test_twenty_sleeping_requests_on_one_worker_finish_together(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda _: get(server, "/sleep?s=0.5"), range(20)))
        took = time.monotonic() - started
        assert [status for status, _h, _b in results] == [200] * 20
        assert len({body for _s, _h, body in results}) == 1        # one worker answered them all
        # at once: about 0.5 s; one at a time 10 s, even two at a time 5 s
        assert took < 3.0, "20 x sleep(0.5) took %.2f s: they did not run at once" % took


def test_lifespan_runs_on_every_worker_and_shutdown_on_stop(impl, tmp_path):
    log = tmp_path / "lifespan.log"
    server = Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                    env={"ASGI_LIFESPAN_LOG": str(log)})
    try:
        pids = set(server.worker_pids)
        started = {int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("startup")}
        assert started == pids        # each worker's startup ran before it said it was ready
    finally:
        assert server.stop() == 0
    stopped = {int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("shutdown")}
    assert stopped == pids


def test_a_rolling_restart_waits_for_the_new_workers_lifespan(impl, tmp_path):
    log = tmp_path / "lifespan.log"
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                env={"ASGI_LIFESPAN_LOG": str(log)}) as server:
        server.signal(signal.SIGUSR2)
        wait_until(lambda: "rolling restart complete" in server.stderr(), timeout=30, what="the rollout",
                   server=server)
        # (the workers' "listening" lines come on stdout, the master's log on stderr: read apart)
        wait_until(lambda: len(server.worker_pids) >= 4, what="the new workers' listening lines", server=server)
        assert len(server.worker_pids) == 4
        lines = log.read_text().splitlines()
        for pid in server.worker_pids:
            assert "startup %d" % pid in lines
        for pid in server.worker_pids[:2]:
            wait_until(lambda: "shutdown %d" % pid in log.read_text().splitlines(), what="old worker's shutdown")


def test_a_failed_lifespan_startup_is_a_boot_failure_with_its_message(impl):
    server = Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl,
                    env={"ASGI_LIFESPAN_FAIL": "no database at db:5432"}, wait=False)
    try:
        code = server.wait(timeout=30)
        assert code != 0
        err = server.stderr()
        assert "the app's lifespan startup failed: no database at db:5432" in err
        assert not any("listening on http" in line for line in server.lines)
    finally:
        server.stop()


def test_an_app_without_lifespan_support_serves(impl):
    with Server("apps.asgi_suite:no_lifespan", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        status, _h, body = get(server, "/")
        assert status == 200 and body == b"no lifespan here\n"
        assert "does not support the ASGI lifespan protocol" in server.stderr()
    server = Server("apps.asgi_suite:no_lifespan", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                    "--lifespan", "on", wait=False)
    try:
        assert server.wait(timeout=30) != 0
        assert "lifespan startup raised AssertionError" in server.stderr()
    finally:
        server.stop()


def test_asyncio_event_loop_and_interface_override(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--event-loop", "asyncio") as server:
        assert "fastcluster: the app is an ASGI app, on the asyncio event loop" in server.lines
        status, _h, body = get(server, "/echo", "POST", b"asyncio body")
        assert status == 200 and body == b"asyncio body"
    # the demo is a WSGI app: told it is ASGI, each request fails with a 500 and a log line that says why
    with Server("--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl, "--interface", "asgi") as server:
        status, _h, _b = get(server, "/")
        assert status == 500
        wait_until(lambda: "not an ASGI app? --interface says which it is" in server.stderr(), what="the log line")


def test_a_blocked_event_loop_is_a_stuck_worker(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--timeout", "1") as server:
        first = server.worker_pids[0]
        try:
            get(server, "/block?s=5")
        except (http.client.HTTPException, OSError):
            pass
        wait_until(lambda: len(server.worker_pids) == 2, timeout=15, what="a replacement", server=server)
        assert not pid_alive(first)
        status, _h, _b = get(server, "/")
        assert status == 200


def test_a_request_starts_in_its_read_only_while_no_other_runs(impl, tmp_path):
    # alone, its first step runs inside the read, before start() counts it; beside a running one it
    # is scheduled behind the steps already due (counted first, so its first step sees both)
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        status, _h, body = get(server, "/running")
        assert status == 200 and body == b"0"
        marker = tmp_path / "sleeping"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(get, server, "/sleep?s=2&marker=%s" % marker)
            wait_until(marker.exists, what="the sleeping request")
            status, _h, body = get(server, "/running")
            assert status == 200 and body == b"2"
            assert slow.result(timeout=10)[0] == 200
        status, _h, body = get(server, "/running")
        assert status == 200 and body == b"0"


def test_an_app_that_cancels_every_task_does_not_stop_the_worker(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl) as server:
        pid = server.worker_pids[0]
        for _ in range(2):
            status, _h, body = get(server, "/cancel-all")
            assert status == 200 and int(body.split()[1]) >= 1     # the worker's own serving task at least
        status, _h, body = get(server, "/pid")
        assert status == 200 and int(body) == pid and server.worker_pids == [pid]


def test_access_log_and_metrics_count_asgi_requests(impl, tmp_path):
    access = tmp_path / "access.log"
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--access-log", str(access), "--metrics-bind", "127.0.0.1:0") as server:
        for path in ("/", "/missing", "/raise"):
            get(server, path)
        wait_until(lambda: access.exists() and access.read_text().count("\n") >= 3, what="3 access log lines")
        lines = access.read_text().splitlines()
        assert '"GET / HTTP/1.1" 200' in lines[0]
        assert '"GET /missing HTTP/1.1" 404' in lines[1] and '"GET /raise HTTP/1.1" 500' in lines[2]


# --- real frameworks ---

@pytest.fixture(scope="module", params=IMPLS)
def starlette_server(request, tmp_path_factory):
    pytest.importorskip("starlette")
    log = tmp_path_factory.mktemp("starlette") / "lifespan.log"
    server = Server("apps.starlette_app:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", request.param,
                    env={"ASGI_LIFESPAN_LOG": str(log)})
    server.lifespan_log = log
    yield server
    server.stop()


def test_starlette_routes_bodies_streams_and_middleware(starlette_server):
    status, headers, body = get(starlette_server, "/")
    assert status == 200 and body.startswith(b"Hello from Starlette") and headers["x-middleware"] == "seen"
    status, _h, body = get(starlette_server, "/items/42?q=x")
    item = json.loads(body)
    assert item["id"] == 42 and item["q"] == "x" and item["db"].startswith("connected in ")
    assert item["url"] == "http://127.0.0.1:%d/items/42?q=x" % starlette_server.port
    status, headers, body = get(starlette_server, "/echo", "POST", b"posted" * 1000)
    assert status == 200 and body == b"posted" * 1000 and headers["x-length"] == "6000"
    status, headers, body = get(starlette_server, "/stream")
    assert status == 200 and body == b"".join(b"piece %d\n" % i for i in range(5))
    status, _h, _b = get(starlette_server, "/items/notanint")
    assert status == 404


def test_starlette_background_task_and_lifespan(starlette_server, tmp_path):
    marker = tmp_path / "bg"
    status, _h, body = get(starlette_server, "/background?marker=%s" % marker)
    assert status == 200 and body == b"queued\n"
    wait_until(lambda: marker.exists() and marker.read_text() == "background ran", what="the background task")
    started = {int(line.split()[1]) for line in starlette_server.lifespan_log.read_text().splitlines()
               if line.startswith("startup")}
    assert started == set(starlette_server.worker_pids)


def test_starlette_websocket(starlette_server):
    from websockets.sync.client import connect

    with connect("ws://127.0.0.1:%d/ws" % starlette_server.port, open_timeout=10) as ws:
        ws.send("one")
        assert ws.recv(timeout=10) == "echo: one"
        ws.send("two")
        assert ws.recv(timeout=10) == "echo: two"


@pytest.fixture(scope="module", params=IMPLS)
def fastapi_server(request):
    pytest.importorskip("fastapi")
    server = Server("apps.fastapi_app:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", request.param)
    yield server
    server.stop()


def test_fastapi_json_validation_errors_and_threadpool(fastapi_server):
    status, _h, body = get(fastapi_server, "/")
    data = json.loads(body)
    assert status == 200 and data["hello"] == "world" and data["started_in"] == data["pid"]
    status, _h, body = get(fastapi_server, "/items/5?q=abc&limit=3")
    assert status == 200 and json.loads(body) == {"item_id": 5, "q": "abc", "limit": 3}
    status, _h, body = get(fastapi_server, "/items/404")
    assert status == 404 and json.loads(body) == {"detail": "no such item"}
    status, _h, body = get(fastapi_server, "/items/abc")
    assert status == 422
    payload = json.dumps({"name": "pen", "price": 1.5, "tags": ["a"]}).encode()
    status, _h, body = get(fastapi_server, "/items", "POST", payload, {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body) == {"name": "pen", "total": 3.0, "tags": ["a"]}
    status, _h, body = get(fastapi_server, "/items", "POST", b'{"name": 1}', {"Content-Type": "application/json"})
    assert status == 422
    status, _h, body = get(fastapi_server, "/sync")
    assert status == 200 and json.loads(body)["sync"] is True


def test_fastapi_sync_endpoints_reuse_the_thread_pools_threads(fastapi_server):
    # anyio keeps its worker threads while the event loop's root task runs; when each request's task
    # was the root, every call to a plain def started a thread (a new native id) and ended it
    threads = {}
    for _ in range(12):
        status, _h, body = get(fastapi_server, "/sync")
        answer = json.loads(body)
        assert status == 200
        threads.setdefault(answer["pid"], set()).add(answer["thread"])
    assert threads and all(len(ids) == 1 for ids in threads.values()), threads


def test_fastapi_concurrency_and_websocket(fastapi_server):
    from websockets.sync.client import connect

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: get(fastapi_server, "/sleep?s=1"), range(10)))
    # at once: about 1 s; one at a time on each of the 2 workers, 5 s or more
    assert [r[0] for r in results] == [200] * 10 and time.monotonic() - started < 3.0
    with connect("ws://127.0.0.1:%d/ws" % fastapi_server.port, open_timeout=10) as ws:
        ws.send(json.dumps({"a": [1, 2]}))
        assert json.loads(ws.recv(timeout=10)) == {"got": {"a": [1, 2]}}


def test_a_client_that_never_finishes_its_headers_gets_408_over_asgi(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--header-timeout", "1") as server:
        sock = server.connect()
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(10)
            data = sock.recv(4096)
            assert data.startswith(b"HTTP/1.1 408 ")
        finally:
            sock.close()
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def _file(tmp_path, size, name="file.bin"):
    path = tmp_path / name
    data = os.urandom(size)
    path.write_bytes(data)
    return str(path), data


def _fds(server):
    """The descriptors the workers hold, all together (read from /proc by this test)."""
    return sum(len(os.listdir("/proc/%d/fd" % pid)) for pid in server.worker_pids)


def test_the_file_and_trailer_extensions_are_in_the_scope(asgi_server):
    scope = json.loads(get(asgi_server, "/scope")[2])
    assert scope["extensions"] == {"http.response.pathsend": {}, "http.response.zerocopysend": {},
                                   "http.response.trailers": {}}


TRAILERS = [("x-checksum", "abc123"), ("x-count", "2")]     # (the app's content-length and host: dropped)


@pytest.mark.parametrize("query", ["", "?split=1"])
def test_trailers_follow_the_last_chunk_when_the_client_takes_them(asgi_server, query):
    """HTTP/1.1: the trailers extension's fields after the last chunk, for a client that sent
    TE: trailers; without it the same response ends with an empty last chunk. The connection
    goes on after both (the framing is whole)."""
    request = b"GET /trailers%s HTTP/1.1\r\nHost: x\r\n%%s\r\n" % query.encode()
    (with_te, without, after), sock, f = exchange(
        asgi_server, request % b"TE: trailers\r\n" + request % b"" + b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n", count=3)
    try:
        for resp in (with_te, without):
            assert resp.status == 200 and resp.body == b"part one, part two"
            assert resp.header("Transfer-Encoding") == "chunked" and resp.header("Content-Length") is None
        assert with_te.trailers == TRAILERS
        assert without.trailers == []
        assert after.status == 200 and int(after.body) in asgi_server.worker_pids
    finally:
        sock.close()


def test_trailers_of_a_head_request_are_not_sent(asgi_server):
    (resp, after), sock, f = exchange(
        asgi_server, b"HEAD /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n",
        count=2, head=True)
    try:
        assert resp.status == 200
        # (head=True read the second response's head only: what follows it is its body, the pid, with
        # no last chunk or trailers of the HEAD's before it)
        assert after.status == 200 and int(f.read(int(after.header("Content-Length")))) in asgi_server.worker_pids
    finally:
        sock.close()


def test_trailers_without_the_declaration_are_an_error_after_a_whole_response(asgi_server):
    """Without "trailers": True the body's last piece completed the response (whole, no trailers,
    the connection goes on); the trailers message after it fails the app's send, and says why."""
    (resp, after), sock, f = exchange(
        asgi_server, b"GET /trailers?undeclared=1 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n"
                     b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n", count=2)
    try:
        assert resp.status == 200 and resp.body == b"part one, part two" and resp.trailers == []
        assert after.status == 200
    finally:
        sock.close()
    wait_until(lambda: "trailers need 'trailers': True" in asgi_server.stderr(), timeout=10,
               what="the error in the log", server=asgi_server)


@pytest.mark.parametrize("query, error", [("?bad=1", "CR, LF or NUL"),
                                          ("?never=1", "returned without completing its response")])
def test_trailers_the_app_gets_wrong_cut_the_response(asgi_server, query, error):
    """A trailer value with CRLF in it, declared trailers never sent: part of the response is out,
    so the connection ends without a last chunk (the client sees that it failed), the error is
    logged, nothing injected goes out, and the worker serves on."""
    sock = asgi_server.connect()
    try:
        sock.sendall(b"GET /trailers%s HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n" % query.encode())
        data = read_to_eof(sock)
    finally:
        sock.close()
    assert b"part two" in data and not data.endswith(b"0\r\n\r\n") and b"x-injected" not in data
    wait_until(lambda: error in asgi_server.stderr(), timeout=10, what="the error in the log", server=asgi_server)
    assert get(asgi_server, "/")[0] == 200


def test_pathsend_sends_the_file_and_closes_it(asgi_server, tmp_path):
    path, data = _file(tmp_path, (3 << 20) + 7)
    before = _fds(asgi_server)
    conn = http.client.HTTPConnection(asgi_server.host, asgi_server.port, timeout=20)
    try:
        for query in ("path=%s" % path, "path=%s&nolen=1" % path):
            for _ in range(5):
                conn.request("GET", "/pathsend?" + query)
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200 and body == data
                assert resp.getheader("Content-Length") == str(len(data))    # the server's, without the app's
        conn.request("HEAD", "/pathsend?path=%s" % path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"" and resp.getheader("Content-Length") == str(len(data))
    finally:
        conn.close()
    # every file the server opened is closed again (and the connection, once the worker sees it end)
    wait_until(lambda: _fds(asgi_server) <= before, timeout=10, what="the workers' descriptors", server=asgi_server)


def test_pathsend_of_a_missing_file_is_a_500_and_the_worker_serves_on(asgi_server, tmp_path):
    conn = http.client.HTTPConnection(asgi_server.host, asgi_server.port, timeout=10)
    try:
        conn.request("GET", "/pathsend?nolen=1&path=%s" % (tmp_path / "missing"))
        resp = conn.getresponse()
        assert resp.status == 500
        resp.read()
    finally:
        conn.close()
    assert get(asgi_server, "/")[0] == 200


def test_a_client_that_leaves_during_a_pathsend_leaves_nothing_open(asgi_server, tmp_path):
    path, _data = _file(tmp_path, 64 << 20)
    before = _fds(asgi_server)
    for _ in range(3):
        sock = socket.create_connection((asgi_server.host, asgi_server.port), timeout=10)
        sock.sendall(b"GET /pathsend?path=%s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        assert sock.recv(65536)                  # the head and the start of 64 MiB, then gone
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()                             # (a reset, with most of the file unsent)
    wait_until(lambda: _fds(asgi_server) <= before, timeout=20, what="the workers' descriptors", server=asgi_server)
    assert get(asgi_server, "/")[0] == 200


@pytest.mark.parametrize("length", [None, 20 + 11 + 400])
def test_zerocopysend_pieces_with_a_body_between(asgi_server, tmp_path, length):
    path, data = _file(tmp_path, 500)
    query = "path=%s" % path + ("&len=%d" % length if length else "")
    conn = http.client.HTTPConnection(asgi_server.host, asgi_server.port, timeout=10)
    try:
        for _ in range(3):                           # (and the connection goes on)
            conn.request("GET", "/zerocopy?" + query)
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == data[10:30] + b"--between--" + data[100:]
            if length:
                assert resp.getheader("Content-Length") == str(length)
            else:
                assert resp.getheader("Transfer-Encoding") == "chunked"
    finally:
        conn.close()
