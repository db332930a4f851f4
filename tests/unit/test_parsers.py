"""The compiled loop drives llhttp itself (fastcluster/_llhttp.pxi) and keeps httptools' callbacks
as its fallback; the pure-Python loop always uses the callbacks. The three must answer every byte
stream the same, however it is split across reads."""

import importlib
import itertools
import json
import re
import socket

import pytest
from hypothesis import given, settings, strategies as st

from fastcluster import loop
from fastcluster.config import Config
from helpers import NO_EXTENSIONS

_COUNT = itertools.count()
COMPILED = pytest.mark.skipif(not loop.has_extension(), reason="no compiled loop")

CORPUS = [
    b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: u\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\nHEAD /c HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n"
    b"X-Trailer: yes\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"GET /old-ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /next HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PATCH /m HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nDELETE /d HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nextra bytes",
    b"GET / HTTP/1.1\r\n\r\n",                                       # no Host: 400
    b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",          # 400
    b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",                           # 505 (or 400)
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n",
    b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: t\r\n\r\n",
    b"\r\nGET /after-crlf HTTP/1.1\r\nHost: t\r\n\r\n",
]


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    keys = ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL", "RAW_URI", "HTTP_HOST",
            "HTTP_X_TWO", "HTTP_X_TRAILER", "CONTENT_LENGTH")
    data = json.dumps({k: environ.get(k) for k in keys} | {"body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def variants():
    found = [("python", "httptools")]
    if loop.has_extension():
        found += [("cython", "llhttp"), ("cython", "httptools")]
    return found


def answer(impl, parser, pieces, tmp_path):
    """The bytes a fresh connection answers to `pieces`, one read each; Date lines removed."""
    module = importlib.import_module("fastcluster._parser" if impl == "cython" else "fastcluster._parser_py")
    if impl == "cython":
        module.use_parser(parser)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / ("%s-%s-%d.sock" % (impl, parser, next(_COUNT)))))
    try:
        server = module.Server(listener, app, Config(workers=1, threads=1))
        ours, theirs = socket.socketpair()
        conn = server.adopt(ours)
        theirs.settimeout(5)
        theirs.setblocking(False)
        out = b""
        try:
            for piece in pieces:
                try:
                    theirs.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break   # the server ended the connection after a request that asked it to
                conn.on_readable()
                try:
                    while True:
                        chunk = theirs.recv(65536)
                        if not chunk:
                            break
                        out += chunk
                except BlockingIOError:
                    pass
        finally:
            conn.close()
            theirs.close()
    finally:
        listener.close()
        if impl == "cython":
            module.use_parser(module_default())
    return re.sub(rb"Date: [^\r]*\r\n", b"", out)


def module_default():
    return "httptools" if NO_EXTENSIONS else _compiled().PARSER_DEFAULT


def _compiled():
    return importlib.import_module("fastcluster._parser")


@COMPILED
def test_the_compiled_loop_drives_llhttp_itself():
    """A guard: on a machine where the compiled loop built, its direct llhttp path passed its
    checks (httptools' version, the exported symbols, the self-test) and is in use."""
    compiled = _compiled()
    assert compiled.PARSER_DEFAULT == "llhttp", compiled.PARSER_WHY
    assert compiled.PARSER == "llhttp"


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_parser_answers_the_corpus_alike(index, tmp_path):
    data = CORPUS[index]
    whole = {v: answer(*v, [data], tmp_path) for v in variants()}
    assert len(set(whole.values())) == 1, whole
    assert whole[("python", "httptools")].startswith(b"HTTP/1.")
    bytewise = {v: answer(*v, [data[i:i + 1] for i in range(len(data))], tmp_path) for v in variants()}
    assert len(set(bytewise.values())) == 1, bytewise


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(CORPUS[:8]), min_size=1, max_size=4), st.lists(st.integers(1, 40), max_size=12))
def test_random_splits_of_pipelined_requests(tmp_path_factory, requests, cuts):
    data = b"".join(requests)
    pieces, at = [], 0
    for cut in cuts:
        if at >= len(data):
            break
        pieces.append(data[at:at + cut])
        at += cut
    if at < len(data):
        pieces.append(data[at:])
    tmp = tmp_path_factory.mktemp("split")
    answers = {v: answer(*v, pieces, tmp) for v in variants()}
    assert len(set(answers.values())) == 1, answers
