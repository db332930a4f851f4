"""The benchmark app: a 32-byte text/plain hello, the body every peer serves in the comparison."""

BODY = b"Hello, World! fastcluster bench\n"
assert len(BODY) == 32
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
