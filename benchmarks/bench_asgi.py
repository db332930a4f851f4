"""The same hello as bench_app.py, for ASGI servers (uvicorn)."""

import time

from bench_app import BODY, WORK_S

START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]}
BODY_EVENT = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if WORK_S:
        end = time.perf_counter() + WORK_S
        while time.perf_counter() < end:
            pass
    await send(START)
    await send(BODY_EVENT)
