"""TechEmpower's json test for the HTTP/2 comparison: {"message": "Hello, World!"} serialized per request
(WSGI `app`, ASGI `asgi`); any other path answers the 32-byte hello of bench_app."""

import json

from bench_app import app as _hello


def app(environ, start_response):
    if environ["PATH_INFO"] != "/json":
        return _hello(environ, start_response)
    body = json.dumps({"message": "Hello, World!"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"message": "Hello, World!"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
