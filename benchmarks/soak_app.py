"""The soak benchmark's app (benchmarks/soak.py): what ordinary and hostile clients ask of it.

/            a 32-byte hello (the ordinary clients, wrk)
/sleep?s=S   waits S seconds (a database stand-in; the half-closers' and the flooder's first request)
/events      an endless event stream, one small event every 20 ms (the clients that leave it)
/upload      reads its body in 64 KiB pieces, 5 ms apart (a slow consumer), answers the size
"""

import time

BODY = b"Hello, World! fastcluster bench\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
STREAMS = {"open": 0, "closed": 0}     # event streams begun and closed in this worker (for the log)


class Events:
    def __iter__(self):
        STREAMS["open"] += 1
        n = 0
        while True:
            time.sleep(0.02)
            n += 1
            yield b"data: %d\n\n" % n

    def close(self):
        STREAMS["closed"] += 1


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"].partition("=")[2] or "0.1"))
        start_response("200 OK", HEADERS)
        return [BODY]
    if path == "/events":
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        return Events()
    if path == "/upload":
        stream, size = environ["wsgi.input"], 0
        while True:
            data = stream.read(65536)
            if not data:
                break
            size += len(data)
            time.sleep(0.005)
        body = b"%d" % size
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", HEADERS)
    return [BODY]
