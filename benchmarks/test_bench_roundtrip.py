"""In-process: request bytes in, WSGI app, response bytes out, through one connection of each loop.

No epoll wait and no second process, so the difference between the loops is what compiling
buys (the socketpair's send/recv remain on both sides).
"""

import pytest

from conftest import REQUEST

PIPELINED = REQUEST * 16


@pytest.mark.benchmark(group="roundtrip")
def test_roundtrip_one_request(benchmark, in_process):
    benchmark(in_process.roundtrip, REQUEST, 1)


@pytest.mark.benchmark(group="roundtrip-pipelined-16")
def test_roundtrip_16_pipelined(benchmark, in_process):
    benchmark(in_process.roundtrip, PIPELINED, 16)
