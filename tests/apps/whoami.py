"""An app that imports nothing new and says which user imported it and which serves (for --user:
a worker switches before it imports the app). It needs no module the master has not loaded, so it
also runs where the Python installation is not readable by that user (a Python under /root)."""

import os

IMPORTED_AS = os.getuid()


def app(environ, start_response):
    body = b"%d %d %d" % (IMPORTED_AS, os.getuid(), os.getgid())
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
