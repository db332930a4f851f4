"""The WSGI app the integration tests serve: one route per behaviour under test.

Paths under /v/ go through wsgiref.validate, which checks both sides of PEP 3333
(and turns every warning into an error, so a lax server fails loudly).
"""

import json
import os
import tempfile
import threading as _threading
import time
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import validator

warnings.simplefilter("error")
_HOG = []


def _qs(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _text(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


class ClosingIterable:
    """A body that records its close() in a marker file, and paces itself when asked."""

    def __init__(self, marker, chunks, size, delay):
        self.marker, self.chunks, self.size, self.delay = marker, chunks, size, delay

    def __iter__(self):
        for _ in range(self.chunks):
            if self.delay:
                time.sleep(self.delay)
            yield b"x" * self.size

    def close(self):
        with open(self.marker, "w") as f:
            f.write("closed")


_SHARED_HEADERS = [("Content-Type", "text/plain")]   # one list object, edited in place by /shared-headers


def _shared_headers(environ, start_response):
    """The same header list object on every call, edited in place as the query asks: `ct` its
    Content-Type (the same tuple object kept while it does not change), `extra` an X-Extra pair
    appended (none: removed), `clen` a Content-Length pair; `code` the status, as a new string each
    call; `size` the one-piece body's length."""
    q = _qs(environ)
    ct = q.get("ct", "text/plain")
    if _SHARED_HEADERS[0][1] != ct:
        _SHARED_HEADERS[0] = ("Content-Type", ct)
    del _SHARED_HEADERS[1:]
    if "extra" in q:
        _SHARED_HEADERS.append(("X-Extra", q["extra"]))
    if "clen" in q:
        _SHARED_HEADERS.append(("Content-Length", q["clen"]))
    code = q.get("code", "200")
    reason = {"200": "OK", "201": "Created", "404": "Not Found", "299": "Whatever"}.get(code, "X")
    start_response("%s %s" % (code, reason), _SHARED_HEADERS)
    return [b"b" * int(q.get("size", "5"))]


_THEN = {"calls": 0, "kept": []}
_SPIN = {"now": 0, "most": 0, "lock": _threading.Lock()}   # /spin calls running, and the most at once


class _ChangesOnClose:
    """A body whose close() edits the environ it was given."""

    def __init__(self, environ, body):
        self.environ, self.body = environ, body

    def __iter__(self):
        yield self.body

    def close(self):
        self.environ["HTTP_HOST"] = "closed"


def _environ_then(environ, start_response):
    """/environ's answer (the environ as it came), then something done to that environ, chosen by
    the call's number: changed, added to, a key taken out and put back, changed by the body's
    close(), held after the response and changed at the next call. A server that gives a later
    request an environ it handed out before must notice every one of these."""
    if _THEN["kept"]:
        _THEN["kept"].pop()["HTTP_HOST"] = "late"     # (before this call's environ is read)
    data = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
    body = json.dumps(data).encode()
    step = _THEN["calls"] % 9
    _THEN["calls"] += 1
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    if step == 2:
        environ["HTTP_HOST"] = "changed"
    elif step == 4:
        environ["x.added"] = "1"
    elif step == 5:
        environ["QUERY_STRING"] = environ.pop("QUERY_STRING")
    elif step == 6:
        return _ChangesOnClose(environ, body)
    elif step == 7:
        _THEN["kept"].append(environ)
    return [body]


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    q = _qs(environ)
    if path == "/":
        return _text(start_response, b"Hello from process %d\n" % os.getpid())
    if path == "/pid":
        return _text(start_response, b"%d" % os.getpid())
    if path == "/shared-headers":
        return _shared_headers(environ, start_response)
    if path == "/environ-then":
        return _environ_then(environ, start_response)
    if path == "/environ" or path.startswith("/environ/"):
        data = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        data["wsgi.input"] = type(environ["wsgi.input"]).__name__
        body = json.dumps(data).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _text(start_response, body, extra=[("X-Body-Length", str(len(body)))])
    if path == "/echo-lines":
        stream = environ["wsgi.input"]
        lines = [stream.readline()]
        lines.extend(stream)
        body = json.dumps([line.decode("latin-1") for line in lines]).encode()
        return _text(start_response, body)
    if path == "/reject":  # answers without reading the body
        return _text(start_response, b"too large\n", "413 Payload Too Large")
    if path == "/stream":
        n, size = int(q.get("n", "3")), int(q.get("size", "5"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (b"%c" % (97 + i % 26) * size for i in range(n))
    if path == "/generator-start":  # start_response called lazily, inside the generator
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"lazy "
            yield b"start"
        return gen()
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("X-Pid", str(os.getpid()))])
        return ClosingIterable(q["marker"], int(q.get("n", "1000")), int(q.get("size", "65536")),
                               float(q.get("delay", "0")))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]
    if path == "/file":
        size = int(q.get("size", "100000"))
        f = tempfile.TemporaryFile()
        f.write(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
        f.seek(0)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/raise":
        raise RuntimeError("boom from the test app")
    if path == "/raise-after-headers":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"partial"
            raise RuntimeError("boom after the headers")
        return gen()
    if path == "/exc-info":
        try:
            raise ValueError("handled")
        except ValueError:
            import sys
            start_response("200 OK", [("Content-Type", "text/plain")])
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/spin":     # computes (with sleep=1: sleeps) `ms`, after a sleep of `pause` ms if given;
        spin = _SPIN        # answers its thread, and the most /spin calls at once
        with spin["lock"]:
            spin["now"] += 1
            spin["most"] = max(spin["most"], spin["now"])
        try:
            if "pause" in q:
                time.sleep(float(q["pause"]) / 1000)
            if "sleep" in q:
                time.sleep(float(q["ms"]) / 1000)
            else:
                end = time.perf_counter() + float(q["ms"]) / 1000
                while time.perf_counter() < end:
                    pass
        finally:
            with spin["lock"]:
                spin["now"] -= 1
        return _text(start_response, b"%d %d" % (_threading.get_ident(), spin["most"]))
    if path == "/sleep":
        if "marker" in q:   # lets a test see that the request is in flight
            open(q["marker"], "w").close()
        time.sleep(float(q.get("s", "1")))
        return _text(start_response, b"slept %d\n" % os.getpid())
    if path == "/upload":    # reads the whole body, answers its size and digest
        import hashlib
        stream, digest, size = environ["wsgi.input"], hashlib.sha256(), 0
        while True:
            data = stream.read(65536)
            if not data:
                break
            size += len(data)
            digest.update(data)
        return _text(start_response, b"%d %s" % (size, digest.hexdigest().encode()))
    if path == "/slow-upload":   # reads a first piece, pauses, then the rest: the server must not buffer it all
        stream, size = environ["wsgi.input"], 0
        size += len(stream.read(65536))
        if "marker" in q:
            open(q["marker"], "w").close()
        time.sleep(float(q.get("pause", "2")))
        while True:
            data = stream.read(65536)
            if not data:
                break
            size += len(data)
        return _text(start_response, b"%d" % size)
    if path == "/write-big":   # write() MB pieces of 1 MiB as fast as it can
        write = start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                          ("Content-Length", str(int(q["mb"]) << 20))])
        piece = b"w" * (1 << 20)
        for _ in range(int(q["mb"])):
            write(piece)
        return []
    if path == "/thread":    # the name of the thread that runs the call
        import threading
        return _text(start_response, threading.current_thread().name.encode())
    if path == "/hog":   # keeps memory allocated for the life of the worker
        _HOG.append(bytearray(int(q.get("mb", "64")) * 1024 * 1024))
        return _text(start_response, b"%d" % os.getpid())
    if path == "/exit":      # a worker that dies in the middle of a request
        os._exit(int(q.get("code", "7")))
    if path == "/segfault":
        import ctypes
        ctypes.string_at(0)
    if path == "/no-start":     # an empty body and no start_response() at all: the app's error
        return iter(()) if q.get("items") != "1" else iter([b"", b""])
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    if path == "/not-modified":
        start_response("304 Not Modified", [("ETag", '"x"')])
        return []
    if path == "/bad-header":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"never"]
    if path == "/short":  # claims more than it sends
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only this"]
    if path == "/long":   # sends more than it claims
        start_response("200 OK", [("Content-Length", "4")])
        return [b"12345678"]
    return _text(start_response, b"not found\n", "404 Not Found")


_validated = validator(inner)


def app(environ, start_response):
    if environ["PATH_INFO"].startswith("/v/"):
        environ["PATH_INFO"] = environ["PATH_INFO"][2:]
        return _validated(environ, start_response)
    return inner(environ, start_response)
