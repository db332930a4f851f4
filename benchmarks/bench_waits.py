"""The apps that wait, for the waiting workloads of benchmarks/compare.py (--waits), as WSGI.

    /            the 32-byte hello of bench_app (answers at once)
    /sleep/MS    waits MS milliseconds (time.sleep, as a database query would), then the hello
    /upload      reads the whole request body (wsgi.input), then answers its length
"""

import time

from bench_app import BODY, HEADERS


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        time.sleep(int(path[7:]) / 1000.0)
    elif path == "/upload":
        size = len(environ["wsgi.input"].read())
        body = b"%d\n" % size
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", HEADERS)
    return [BODY]
