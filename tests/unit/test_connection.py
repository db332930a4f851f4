"""The request loop driven in-process: one connection over a socketpair, no epoll wait, both loops."""

import importlib
import socket

import pytest

from fastcluster.config import Config
from helpers import IMPLS


def hello(environ, start_response):
    body = b"hi " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def serve(tmp_path):
    """serve(impl, app, count=1) -> (server, conns, clients): a loop's Server on a unix listener
    with `count` adopted socketpairs, its clients timing out after 5 s; all closed after the test."""
    opened = []

    def start(impl, app, count=1):
        module = importlib.import_module("fastcluster._parser" if impl == "cython" else "fastcluster._parser_py")
        listener = socket.socket(socket.AF_UNIX)
        opened.append(listener)
        listener.bind(str(tmp_path / "l.sock"))
        listener.listen()
        listener.setblocking(False)          # (as serve() makes it)
        server = module.Server(listener, app, Config(workers=2))
        conns, clients = [], []
        for _ in range(count):
            ours, theirs = socket.socketpair()
            theirs.settimeout(5)
            opened.append(theirs)
            conns.append(server.adopt(ours))
            opened.append(conns[-1])
            clients.append(theirs)
        return server, conns, clients

    yield start
    for obj in reversed(opened):
        obj.close()


@pytest.fixture(params=IMPLS)
def served(request, serve):
    _server, (conn,), (client,) = serve(request.param, hello)
    return conn, client


def test_adopted_connection_answers_pipelined_requests(served):
    conn, client = served
    client.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    data = client.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert data.index(b"hi /a") < data.index(b"hi /b")


def test_adopted_connection_refuses_a_bad_request(served):
    conn, client = served
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")     # no Host
    conn.on_readable()
    assert client.recv(65536).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_worker_whose_app_threads_are_all_busy_leaves_connections_to_one_that_is_not(tmp_path):
    """The balancing rule reads the board: more than one connection fewer, or (when all of this
    worker's threads are busy) a thread free; a worker that is full or stopping does not count."""
    from fastcluster import board

    module = importlib.import_module("fastcluster._parser_py")
    b = board.Board(slots=4)
    mine, peer = b.take(), b.take()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "b.sock"))
    server = module.Server(listener, hello, Config(workers=2, threads=2), board=b.mem, board_index=mine)
    cells = memoryview(b.mem).cast("q")
    peer_base = board.HEADER + board.STRIDE * peer
    cells[peer_base + board.CONNS] = 3
    cells[peer_base + board.NOT_ACCEPTING] = 0
    server.conns.update({n: None for n in range(3)})        # three connections of its own
    assert server._lighter_worker() == -1                   # as heavy as the peer
    server.pool.busy = 2                                    # ... but both its threads busy
    assert server._lighter_worker() == peer
    cells[peer_base + board.BUSY] = 2                       # the peer's are too
    assert server._lighter_worker() == -1
    server.conns.update({n: None for n in range(3, 6)})     # six against three
    assert server._lighter_worker() == peer
    cells[peer_base + board.NOT_ACCEPTING] = 2              # paused for balance: still counts
    assert server._lighter_worker() == peer
    cells[peer_base + board.NOT_ACCEPTING] = 1              # full or stopping: does not
    assert server._lighter_worker() == -1
    server.conns.clear()
    listener.close()


def test_answered_requests_leave_the_pipeline_and_are_released(served):
    """Each answered request leaves `pending` in order and is let go: after 3,000 of them (one
    at a time, then 30 pipelined at once) no more than a handful of Exchange objects are alive.
    The compiled loop's pipeline also keeps its list's item array between requests (allocating
    it for each one and freeing it after was ~200 instructions a keep-alive request)."""
    import gc
    import sys

    conn, client = served

    def exchanges():
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "Exchange")

    before = exchanges()
    for i in range(100):
        client.sendall(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        conn.on_readable()
        assert client.recv(65536).endswith(b"hi /%d" % i)
        assert conn.pending == []
    if conn.__class__.__module__ == "fastcluster._parser":
        assert sys.getsizeof(conn.pending) > sys.getsizeof([]), "the pipeline's item array was freed"
    received = b""
    for i in range(100):
        client.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % k for k in range(30)))
        conn.on_readable()
        while received.count(b"HTTP/1.1 200 OK\r\n") < 30 * (i + 1):
            received += client.recv(1 << 20)
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3000
    assert received.index(b"hi /p0") < received.index(b"hi /p1") < received.index(b"hi /p29")
    assert conn.pending == []
    assert exchanges() - before <= 5


@pytest.mark.parametrize("impl", IMPLS)
def test_a_response_head_is_joined_again_whenever_any_piece_of_it_changes(impl, serve):
    """The last response head is used again while every piece of it is the same (_head): each
    response here changes one piece (body object, status, header list, method, date line,
    framing, Connection: close) against the one before, and each must come out exactly as
    expected, parsed from everything the client received."""
    body = b"constant body"
    plain = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]

    def app(environ, start_response):
        kind, query = environ["PATH_INFO"], environ["QUERY_STRING"]
        if kind == "/status":
            start_response("201 Created", plain)
        elif kind == "/headers":
            start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
        elif kind == "/unsized":                     # the server frames it: Content-Length of its own
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"y" * int(query)]
        elif kind == "/close":
            start_response("200 OK", plain + [("Connection", "close")])
        else:
            start_response("200 OK", plain)
        if kind == "/copy":
            return [bytes(bytearray(body))]           # equal, but another object
        if kind == "/other":
            return [b"other body!!!"]
        return [body]

    server, (conn,), (client,) = serve(impl, app)
    date = server.date_line
    steps = [  # (method, target, status line, content type, body, date line)
        ("GET", "/", "200 OK", "text/plain", body), ("GET", "/", "200 OK", "text/plain", body),
        ("GET", "/copy", "200 OK", "text/plain", body), ("GET", "/other", "200 OK", "text/plain", b"other body!!!"),
        ("GET", "/", "200 OK", "text/plain", body), ("GET", "/status", "201 Created", "text/plain", body),
        ("GET", "/", "200 OK", "text/plain", body), ("GET", "/headers", "200 OK", "text/html", body),
        ("GET", "/", "200 OK", "text/plain", body), ("HEAD", "/", "200 OK", "text/plain", b""),
        ("GET", "/", "200 OK", "text/plain", body),
        ("NEWDATE", "/", "200 OK", "text/plain", body), ("GET", "/", "200 OK", "text/plain", body),
        ("GET", "/unsized?3", "200 OK", "text/plain", b"yyy"), ("GET", "/unsized?5", "200 OK", "text/plain", b"yyyyy"),
        ("GET", "/unsized?5", "200 OK", "text/plain", b"yyyyy"), ("GET", "/unsized?3", "200 OK", "text/plain", b"yyy"),
        ("GET", "/", "200 OK", "text/plain", body), ("GET10", "/", "200 OK", "text/plain", body),
        ("GET", "/", "200 OK", "text/plain", body), ("GET", "/close", "200 OK", "text/plain", body),
    ]
    for method, target, status, ctype, expected in steps:
        if method == "NEWDATE":                   # the next second's date line
            date = b"Date: Thu, 01 Jan 2032 00:00:0%d GMT\r\n" % (len(date) % 10)
            server.date_line = date
            method = "GET"
        http10 = method == "GET10"
        if http10:                                # HTTP/1.0 kept alive: another end of the head
            client.sendall(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % target.encode())
            method = "GET"
        else:
            client.sendall(b"%s %s HTTP/1.1\r\nHost: t\r\n\r\n" % (method.encode(), target.encode()))
        conn.on_readable()
        received = b""
        while b"\r\n\r\n" not in received:
            received += client.recv(65536) or pytest.fail("closed after %r" % received)
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        size = int(fields[b"Content-Length"])
        if method == "GET":
            while len(rest) < size:
                rest += client.recv(65536) or pytest.fail("closed after %r" % received)
        assert lines[0] == b"HTTP/1.1 " + status.encode(), target
        assert fields[b"Content-Type"] == ctype.encode(), target
        assert b"Date: " + fields[b"Date"] + b"\r\n" == date, target
        assert size == (len(expected) if method == "GET" else len(body)), target
        assert rest == expected, target
        assert fields.get(b"Connection") == (b"close" if target == "/close" else b"keep-alive" if http10 else None)
        assert len(lines) == 5 + (target == "/close" or http10), (target, lines)   # status, 3 + Server


@pytest.mark.parametrize("impl", IMPLS)
def test_after_a_batch_of_long_calls_the_next_wait_takes_one_event(impl, serve):
    """A batch of events that ran over LONG_CALL (1 ms) makes the next wait take one event, so
    that connections are served in the order their requests came (a level-triggered connection
    that a wait returned is back in the kernel's ready list ahead of those that became ready
    during the batch); a batch under it makes the next take them all again."""
    import time

    spin = [0.0]

    def app(environ, start_response):
        end = time.perf_counter() + spin[0]
        while time.perf_counter() < end:
            pass
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server, _conns, clients = serve(impl, app, 3)
    whole = server.batch_events
    assert whole > 3

    def answered():
        count = 0
        for c in clients:
            c.setblocking(False)
            try:
                count += c.recv(65536).count(b"HTTP/1.1 200 OK")
            except BlockingIOError:
                pass
            finally:
                c.settimeout(5)
        return count

    def send_all():
        for c in clients:
            c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")

    spin[0] = 0.002
    send_all()
    server._iterate(1.0)                     # a whole batch: 6 ms of calls
    assert answered() == 3
    assert server.batch_events == 1
    spin[0] = 0.0
    send_all()
    server._iterate(1.0)                     # one event, a quick batch
    assert answered() == 1
    assert server.batch_events == whole
    server._iterate(1.0)                     # the other two
    assert answered() == 2


@pytest.mark.parametrize("impl", IMPLS)
def test_after_a_batch_of_long_calls_the_listening_socket_is_looked_at_without_its_event(impl, serve, tmp_path):
    """With one event a wait, the listening socket's event would come after every connection
    ready before it (a round of long calls; with two workers balancing, a round for each connection
    or two taken): after a long batch the loop accepts what is queued, event or not."""
    import time

    def app(environ, start_response):
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server, _conns, (client,) = serve(impl, app, 1)
    server.resume_accepting()                # (as serve() does: the listening socket in the epoll set)
    assert server.accepting
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    server._iterate(1.0)                     # a long batch: the next wait takes one event
    assert client.recv(65536).endswith(b"\r\n\r\nok") and server.batch_events == 1
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")      # ready first ...
    newcomer = socket.socket(socket.AF_UNIX)
    try:
        newcomer.settimeout(5)
        newcomer.connect(str(tmp_path / "l.sock"))                 # ... then the listening socket
        newcomer.sendall(b"GET /new HTTP/1.1\r\nHost: t\r\n\r\n")
        server._iterate(1.0)                 # one event: the first client's request, and the accept
        assert client.recv(65536).endswith(b"\r\n\r\nok")
        assert len(server.conns) == 2
        server._iterate(1.0)
        assert newcomer.recv(65536).endswith(b"\r\n\r\nok")
    finally:
        newcomer.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_one_batch_of_events_is_answered_then_sent(impl, serve):
    """One loop iteration over three connections with a request each answers all three. The
    compiled loop sends a batch's answers after the batch (Connection._send_later), so no app
    call in it finds an earlier call's answer at its client yet; the plain-Python loop sends
    each as it is made. A keep-alive request after that is answered too (the connection went
    back to reading). App calls of 2 ms have theirs sent at once in both: an answer waits for its
    batch's end only while the batch has run less than 0.5 ms. (The first round warms up: its
    first call starts a spare app thread.)"""
    import select
    import time

    clients, seen = [], []
    spin = [0.0]

    def app(environ, start_response):
        end = time.perf_counter() + spin[0]
        while time.perf_counter() < end:
            pass
        readable, _, _ = select.select(clients, [], [], 0)    # clients with an answer to read now
        seen.append(len(readable))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server, _conns, socks = serve(impl, app, 3)
    clients.extend(socks)
    whole = server.batch_events              # (all of them: MAX_EVENTS)
    fast = []
    for round_ in range(7):                          # a warm-up, five fast rounds, a slow one
        slow = round_ == 6
        spin[0] = 0.002 if slow else 0.0
        seen.clear()
        for c in clients:
            c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        server.batch_events = whole          # (a round the machine preempted past 1 ms takes one event next)
        server._iterate(1.0)
        assert len(seen) == 3, round_
        for c in clients:
            assert c.recv(65536).endswith(b"\r\n\r\nok")
        if slow:
            assert seen == [0, 1, 2]
        elif round_:
            fast.append(list(seen))
    if impl == "cython":      # (any one of them: a batch the machine preempted may run past 0.5 ms)
        assert [0, 0, 0] in fast, fast
    else:
        assert fast == [[0, 1, 2]] * 5


THREAD_CHECK = r"""
import importlib, socket, sys, threading
from fastcluster.config import Config
module = importlib.import_module(sys.argv[1])
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[2])
listener.listen()
server = module.Server(listener, lambda environ, start_response: [], Config(workers=2, threads=int(sys.argv[3])))
server._holding()                 # (what serve() does first: this thread runs the loop)
ours, theirs = socket.socketpair()
conn = server.adopt(ours)
conn.tick(0.0)                    # the loop's code on the loop's thread: allowed
caught = []
def elsewhere():
    try:
        conn.close()              # the loop's code on another thread
    except AssertionError as exc:
        caught.append(str(exc))
thread = threading.Thread(target=elsewhere)
thread.start()
thread.join()
print(caught[0] if caught else "not caught")
"""


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("check", ["1", ""])
def test_the_thread_check_catches_loop_code_on_another_thread(impl, threads, check, tmp_path):
    """FASTCLUSTER_CHECK_THREADS=1: the loop's code run by a thread that does not hold the loop
    raises (with or without app threads); without it, nothing is checked (and nothing costs)."""
    import os
    import subprocess
    import sys

    module = "fastcluster._parser" if impl == "cython" else "fastcluster._parser_py"
    env = dict(os.environ, FASTCLUSTER_CHECK_THREADS=check)
    out = subprocess.run([sys.executable, "-c", THREAD_CHECK, module, str(tmp_path / "l.sock"), threads],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    if check:
        assert "AppDispatch.close ran on thread" in out.stdout and "holds the loop" in out.stdout, out.stdout
    else:
        assert out.stdout.strip() == "not caught"
