"""The built-in demo app: the seed's server in Python.

`GET /` answers "Hello from process <pid>".  With `--demo-work-ms N` every request
first burns N ms of CPU, like the seed's slow handler, so that one worker against
several shows how the cluster scales.
"""

import os
import time


def make_app(work_ms: int = 0):
    work_s = work_ms / 1000.0

    def app(environ, start_response):
        if work_s:
            end = time.perf_counter() + work_s
            while time.perf_counter() < end:
                pass
        body = b"Hello from process %d\n" % os.getpid()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


app = make_app(int(os.environ.get("FASTCLUSTER_DEMO_WORK_MS", "0") or 0))
