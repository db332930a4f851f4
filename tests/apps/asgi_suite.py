"""The ASGI app the integration tests serve: the routes of suite.py that the HTTP and hardening
suites use, with the same answers, plus what only ASGI has (scope, disconnects, lifespan,
concurrency on one worker, WebSockets).

Lifespan: startup and shutdown each append a line to the file named by $ASGI_LIFESPAN_LOG, and
$ASGI_LIFESPAN_FAIL makes startup fail with that message.
"""

import asyncio
import hashlib
import json
import os
import sys
from urllib.parse import parse_qs

STATE = {"tasks_done": 0}


def _qs(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


async def _text(send, body, status=200, extra=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))] + list(extra)})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive):
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client gone")
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def _log_lifespan(line):
    path = os.environ.get("ASGI_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%s %d\n" % (line, os.getpid()))


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            failure = os.environ.get("ASGI_LIFESPAN_FAIL")
            if failure:
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
            _log_lifespan("startup")
            scope["state"]["started_by"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.sleep(0.05)
            _log_lifespan("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def http(scope, receive, send):
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):     # as Starlette routes: the path under the app's mount point
        path = path[len(root):]
    q = _qs(scope)
    if path == "/":
        return await _text(send, b"Hello from process %d\n" % os.getpid())
    if path == "/pid":
        return await _text(send, b"%d" % os.getpid())
    if path == "/fds":         # how many descriptors this worker holds
        return await _text(send, b"%d" % len(os.listdir("/proc/self/fd")))
    if path == "/pathsend":    # ?path=: that file, sent by the server (with its length, unless ?nolen)
        headers = [(b"content-type", b"application/octet-stream")]
        if "nolen" not in q:
            headers.append((b"content-length", b"%d" % os.stat(q["path"]).st_size))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        return await send({"type": "http.response.pathsend", "path": q["path"]})
    if path == "/trailers":    # a streamed body, then trailers (the extension): ?split: in two messages,
        # ?bad: a value with CRLF in it, ?undeclared: without "trailers": True, ?never: declared and never sent
        await send({"type": "http.response.start", "status": 200, "trailers": "undeclared" not in q,
                    "headers": [(b"content-type", b"text/plain"), (b"trailer", b"x-checksum, x-count")]})
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})
        if "never" in q:
            return
        checksum = b"abc\r\nx-injected: 1" if "bad" in q else b"abc123"
        rest = [(b"x-count", b"2"), (b"content-length", b"99"), (b"Host", b"elsewhere")]   # (the last two: dropped)
        if "split" in q:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", checksum)],
                        "more_trailers": True})
            return await send({"type": "http.response.trailers", "headers": rest})
        return await send({"type": "http.response.trailers", "headers": [(b"x-checksum", checksum)] + rest})
    if path == "/zerocopy":    # ?path=: bytes 10-29 and 100-... of it, with a body piece between
        headers = [(b"content-type", b"application/octet-stream")]
        if "len" in q:
            headers.append((b"content-length", q["len"].encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        with open(q["path"], "rb") as f:
            await send({"type": "http.response.zerocopysend", "file": f, "offset": 10, "count": 20,
                        "more_body": True})
            await send({"type": "http.response.body", "body": b"--between--", "more_body": True})
            f.seek(100)      # (no offset: from the file's position)
            await send({"type": "http.response.zerocopysend", "file": f.fileno()})
        return
    if path == "/scope" or path.startswith("/scope/"):
        data = {k: v for k, v in scope.items() if k not in ("headers", "state", "raw_path", "query_string")}
        data["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        data["raw_path"] = scope["raw_path"].decode("latin-1")
        data["query_string"] = scope["query_string"].decode("latin-1")
        data["state"] = dict(scope.get("state", {}))
        return await _text(send, json.dumps(data).encode(), extra=[(b"content-type", b"application/json")])
    if path == "/echo":
        body = await _read_body(receive)
        return await _text(send, body, extra=[(b"x-body-length", b"%d" % len(body))])
    if path == "/echo-pieces":     # the body's pieces as they came: their sizes
        sizes = []
        while True:
            message = await receive()
            sizes.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        return await _text(send, json.dumps(sizes).encode())
    if path == "/reject":  # answers without reading the body
        return await _text(send, b"too large\n", 413)
    if path == "/stream":
        n, size = int(q.get("n", "3")), int(q.get("size", "5"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(n):
            await send({"type": "http.response.body", "body": b"%c" % (97 + i % 26) * size, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/raise":
        raise RuntimeError("boom from the test app")
    if path == "/raise-after-headers":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after the headers")
    if path == "/no-response":
        return
    if path == "/sleep":
        if "marker" in q:
            open(q["marker"], "w").close()
        await asyncio.sleep(float(q.get("s", "1")))
        return await _text(send, b"slept %d\n" % os.getpid())
    if path == "/running":     # the worker's count of running app tasks, as this request's first step sees it
        counts = [getattr(sys.modules.get(name), "running", 0) for name in ("fastcluster._asgi_c", "fastcluster._asgi")]
        return await _text(send, b"%d" % max(counts))
    if path == "/cancel-all":     # cancels every other task of the event loop (as some shutdown code does)
        me = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not me]
        for task in others:
            task.cancel()
        return await _text(send, b"cancelled %d\n" % len(others))
    if path == "/block":      # blocks the event loop (a stuck worker)
        import time
        time.sleep(float(q.get("s", "1")))
        return await _text(send, b"blocked\n")
    if path == "/upload":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            data = message.get("body", b"")
            size += len(data)
            digest.update(data)
            if not message.get("more_body"):
                break
        return await _text(send, b"%d %s" % (size, digest.hexdigest().encode()))
    if path == "/slow-reader":    # takes its body slowly: the server must not buffer it all
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
            await asyncio.sleep(0.01)
        return await _text(send, b"%d" % size)
    if path == "/big":     # MB pieces of 1 MiB, as fast as send() lets it
        mb = int(q["mb"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % (mb << 20))]})
        piece = b"w" * (1 << 20)
        for i in range(mb):
            await send({"type": "http.response.body", "body": piece, "more_body": i < mb - 1})
        return
    if path == "/wait-disconnect":   # answers nothing; records the http.disconnect it gets
        await receive()
        if "started" in q:   # lets a test see that the app now waits on receive()
            open(q["started"], "w").close()
        message = await receive()
        with open(q["marker"], "w") as f:
            f.write(message["type"])
        return
    if path == "/background":   # the response, then more work in the same task
        await _text(send, b"done\n")
        await asyncio.sleep(float(q.get("s", "0.2")))
        with open(q["marker"], "w") as f:
            f.write("background done")
        return
    if path == "/send-after-leave":   # streams until send() fails; the marker says how it failed
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(3000):
                await send({"type": "http.response.body", "body": b"e" * 20, "more_body": True})
                await asyncio.sleep(0.01)
            outcome = "never failed"
        except OSError as exc:
            outcome = "OSError " + type(exc).__name__
        with open(q["marker"], "w") as f:
            f.write(outcome)
        return
    if path == "/closing":    # a long stream; the marker once it ended (sent, or dropped with its client)
        n, size = int(q.get("n", "3")), int(q.get("size", "5"))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            piece = b"c" * size
            for _ in range(n):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            open(q["marker"], "w").close()
        return
    if path == "/exit":
        os._exit(int(q.get("code", "7")))
    if path == "/no-content":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/not-modified":
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"x"')]})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/bad-header":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nSet-Cookie: pwned=1")]})
        await send({"type": "http.response.body", "body": b"never"})
        return
    if path == "/short":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"only this"})
        return
    if path == "/long":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"12345678"})
        return
    return await _text(send, b"not found\n", 404)


async def websocket(scope, receive, send):
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect"
    if path == "/ws/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/ws/deny-response":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-why", b"no-token")]})
        await send({"type": "websocket.http.response.body", "body": b"no token\n"})
        return
    if path == "/ws/raise":
        raise RuntimeError("boom before accept")
    accept = {"type": "websocket.accept"}
    offered = scope.get("subprotocols") or []
    if "chat" in offered:
        accept["subprotocol"] = "chat"
    accept["headers"] = [(b"x-accepted-by", b"%d" % os.getpid())]
    await send(accept)
    if path == "/ws/close":
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        return
    if path == "/ws/scope":
        data = {k: v for k, v in scope.items() if k not in ("headers", "state", "raw_path", "query_string")}
        data["query_string"] = scope["query_string"].decode()
        await send({"type": "websocket.send", "text": json.dumps(data)})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            marker = _qs(scope).get("marker")
            if marker:
                with open(marker, "w") as f:
                    f.write(str(message.get("code")))
            return
        if message.get("text") is not None:
            if message["text"] == "close-me":
                await send({"type": "websocket.close", "code": 1000})
                return
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        return await lifespan(scope, receive, send)
    if kind == "websocket":
        return await websocket(scope, receive, send)
    return await http(scope, receive, send)


async def no_lifespan(scope, receive, send):
    """An app that does not support lifespan (it asserts the scope type, as many do)."""
    assert scope["type"] == "http"
    await _text(send, b"no lifespan here\n")
