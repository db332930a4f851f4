"""The same hello as bench_app.py, for ASGI servers, and a WebSocket echo (any path)."""

import time

from bench_app import BODY, WORK_S

START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]}
BODY_EVENT = {"type": "http.response.body", "body": BODY}
ACCEPT = {"type": "websocket.accept"}


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        return await echo(receive, send)
    if kind != "http":
        return
    if WORK_S:
        end = time.perf_counter() + WORK_S
        while time.perf_counter() < end:
            pass
    await send(START)
    await send(BODY_EVENT)


async def echo(receive, send):
    await receive()                       # websocket.connect
    await send(ACCEPT)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
