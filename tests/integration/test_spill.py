"""Request bodies spilled to temporary files, on both loops: every path that drops a request closes
its file, and one worker's spilled bodies stay within --max-spill (past it: 503, and the disk comes
back when those requests end)."""

import os

import pytest

from helpers import IMPLS, Server, read_response, wait_until

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20


def files(pid):
    """The sizes of the files the worker holds open (not sockets, pipes or devices)."""
    sizes = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        path = "/proc/%d/fd/%s" % (pid, fd)
        try:
            target = os.readlink(path)
            size = os.stat(path).st_size      # follows the link, to a deleted temporary file too
        except FileNotFoundError:
            continue
        if target.startswith("/") and not target.startswith("/dev/"):
            sizes.append(size)
    return sizes


def open_files(pid):
    return len(files(pid))


def post(server, path, body, chunked=False):
    sock = server.connect(20)
    try:
        if chunked:
            head = b"POST %s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % path
            data = head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        else:
            data = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)
        sock.sendall(data)
        return read_response(sock.makefile("rb"))
    finally:
        sock.close()


@pytest.fixture(scope="module", params=IMPLS)
def spill_server(request):
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", request.param,
                    "--max-body", str(3 * MIB), "--max-spill", str(5 * MIB))
    yield server
    server.stop()


def test_a_failed_app_and_a_refused_body_close_their_spill_files(spill_server):
    pid = spill_server.worker_pids[0]
    assert post(spill_server, b"/echo", b"x" * (2 * MIB)).status == 200
    before = open_files(pid)
    for _ in range(4):
        assert post(spill_server, b"/raise", b"x" * (2 * MIB)).status == 500     # the app raised
        assert post(spill_server, b"/echo", b"y" * (4 * MIB), chunked=True).status == 413   # refused mid-body
    wait_until(lambda: open_files(pid) == before, timeout=5, what="spill files closed", server=spill_server)
    # and the budget came back: a body that needs most of it is still taken
    assert post(spill_server, b"/echo", b"z" * (3 * MIB - 10)).status == 200


def test_spilled_bodies_stay_within_max_spill(spill_server):
    """Two bodies of 2.5 MiB held at once use 5 MiB; a third is refused with 503 until one ends."""
    held = []
    try:
        for _ in range(2):   # announced 2.5 MiB, 2.25 MiB sent: spilled and kept open
            sock = spill_server.connect(20)
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (5 * MIB // 2)
                         + b"h" * (9 * MIB // 4))
            held.append(sock)
        pid = spill_server.worker_pids[0]
        # the files' sizes trail what the worker received by up to a write buffer each; 4.25 MiB on
        # disk means at least that much of the 5 MiB budget is taken, too much for a third body
        wait_until(lambda: sum(files(pid)) >= 4 * MIB + MIB // 4, timeout=10, what="two spilled bodies",
                   server=spill_server)
        refused = post(spill_server, b"/echo", b"r" * (2 * MIB))
        assert refused.status == 503 and refused.header("Connection") == "close"
        held.pop().close()         # that request ends: its disk comes back
        wait_until(lambda: post(spill_server, b"/echo", b"o" * (2 * MIB)).status == 200, timeout=10,
                   what="the budget back", server=spill_server)
    finally:
        for sock in held:
            sock.close()
    assert "exited with" not in spill_server.stderr()


def test_max_spill_zero_means_no_limit(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--max-spill", "0") as server:
        resp = post(server, b"/echo", b"u" * (3 * MIB))
        assert resp.status == 200 and len(resp.body) == 3 * MIB
