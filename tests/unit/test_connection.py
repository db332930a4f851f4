"""The request loop driven in-process: one connection over a socketpair, no epoll wait, both loops."""

import importlib
import socket

import pytest

from fastcluster.config import Config
from helpers import IMPLS


def hello(environ, start_response):
    body = b"hi " + environ["PATH_INFO"].encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(params=IMPLS)
def served(request, tmp_path):
    module = importlib.import_module("fastcluster._parser" if request.param == "cython" else "fastcluster._parser_py")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "l.sock"))
    listener.listen()
    server = module.Server(listener, hello, Config(workers=2))
    ours, theirs = socket.socketpair()
    conn = server.adopt(ours)
    theirs.settimeout(5)
    yield conn, theirs
    conn.close()
    theirs.close()
    listener.close()


def test_adopted_connection_answers_pipelined_requests(served):
    conn, client = served
    client.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
    conn.on_readable()
    data = client.recv(65536)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert data.index(b"hi /a") < data.index(b"hi /b")


def test_adopted_connection_refuses_a_bad_request(served):
    conn, client = served
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")     # no Host
    conn.on_readable()
    assert client.recv(65536).startswith(b"HTTP/1.1 400 Bad Request\r\n")
