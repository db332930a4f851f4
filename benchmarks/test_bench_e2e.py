"""End to end: a live `fastcluster serve` (1 worker) and a raw keep-alive client, each loop, for
the WSGI hello and the same hello as an ASGI app.

Besides the client-side timing, each test records the worker's CPU time per request
(user+sys from /proc), the figure that tells servers apart on a shared 2-core machine.
"""

import socket

import pytest

from conftest import REQUEST, Exchange, cpu_seconds

ROUNDS = 2000


def _run(benchmark, live, data, count):
    sock = socket.create_connection((live.host, live.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        exchange = Exchange(sock)
        worker = live.worker_pids[-1]
        before = cpu_seconds(worker)
        benchmark.pedantic(exchange.roundtrip, args=(data, count), rounds=ROUNDS, iterations=1, warmup_rounds=50)
        used = cpu_seconds(worker) - before
        benchmark.extra_info["server_cpu_us_per_request"] = round(used / ((ROUNDS + 50) * count) * 1e6, 2)
    finally:
        sock.close()


@pytest.mark.benchmark(group="e2e-keep-alive")
def test_e2e_keep_alive(benchmark, live):
    _run(benchmark, live, REQUEST, 1)


@pytest.mark.benchmark(group="e2e-pipelined-16")
def test_e2e_pipelined_16(benchmark, live):
    _run(benchmark, live, REQUEST * 16, 16)


@pytest.mark.benchmark(group="e2e-asgi-keep-alive")
def test_e2e_asgi_keep_alive(benchmark, live_asgi):
    _run(benchmark, live_asgi, REQUEST, 1)


@pytest.mark.benchmark(group="e2e-asgi-pipelined-16")
def test_e2e_asgi_pipelined_16(benchmark, live_asgi):
    _run(benchmark, live_asgi, REQUEST * 16, 16)
