"""The benchmark app: a 32-byte text/plain hello, the body every peer serves in the comparison.

BENCH_WORK_MS=N makes each request burn N ms of CPU first (the seed's CPU-bound experiment).
"""

import os
import time

BODY = b"Hello, World! fastcluster bench\n"
assert len(BODY) == 32
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
WORK_S = float(os.environ.get("BENCH_WORK_MS", "0") or 0) / 1000.0


def app(environ, start_response):
    if WORK_S:
        end = time.perf_counter() + WORK_S
        while time.perf_counter() < end:
            pass
    start_response("200 OK", HEADERS)
    return [BODY]
