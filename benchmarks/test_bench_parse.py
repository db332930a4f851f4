"""Bytes through the httptools protocol of each loop: parse and build the environ, answer nothing."""

import pytest

from conftest import REQUEST

PIPELINED = REQUEST * 16


@pytest.mark.benchmark(group="parse-16")
def test_parse_16_requests(benchmark, in_process_connection):
    conn, _client = in_process_connection
    assert benchmark(conn.parse_only, PIPELINED) == 16
