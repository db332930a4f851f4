"""HTTP/1.1 and WSGI behaviour of a live server, on both loops (the suite_server fixture)."""

import http.client
import json
import os
import socket
import tempfile
import time

import pytest

from helpers import Server, at_eof, exchange, pid_alive, read_response, rss_kib, wait_until

pytestmark = pytest.mark.timeout(60)


def get(server, path, method="GET", body=None, headers=None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_hello_and_required_headers(suite_server):
    status, headers, body = get(suite_server, "/")
    assert status == 200
    assert body.startswith(b"Hello from process ")
    assert headers["Content-Length"] == str(len(body))
    assert headers["Server"] == "fastcluster"
    assert headers["Date"].endswith(" GMT")


def test_keep_alive_reuses_one_connection(suite_server):
    conn = http.client.HTTPConnection(suite_server.host, suite_server.port, timeout=10)
    pids = set()
    for _ in range(5):
        conn.request("GET", "/pid")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Connection") is None  # HTTP/1.1 default: stays open
        pids.add(resp.read())
    sock = conn.sock
    conn.request("GET", "/pid")
    conn.getresponse().read()
    assert conn.sock is sock, "the client had to reconnect"
    assert len(pids) == 1, "one connection is served by one worker"
    conn.close()


def test_three_pipelined_requests_in_one_packet(suite_server):
    data = (b"GET /stream?n=2&size=3 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    responses, sock, f = exchange(suite_server, data, count=3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert responses[0].body == b"aaabbb"
    assert responses[1].body == b"hello"
    assert responses[2].body.isdigit()
    sock.close()


def test_chunked_request_body(suite_server):
    data = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n")
    (resp,), sock, f = exchange(suite_server, data)
    assert resp.status == 200
    assert resp.body == b"hello world"
    sock.close()


def test_large_body_is_read_whole(suite_server):
    payload = os.urandom(3 * 1024 * 1024 + 7)   # above the spill-to-disk threshold
    status, headers, body = get(suite_server, "/echo", "POST", body=payload)
    assert status == 200 and body == payload


def test_readline_and_iteration_over_input(suite_server):
    status, _, body = get(suite_server, "/echo-lines", "POST", body=b"one\ntwo\nthree")
    assert json.loads(body) == ["one\n", "two\n", "three"]


def test_expect_100_continue_is_sent_when_the_app_reads(suite_server):
    sock = suite_server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    f = sock.makefile("rb")
    interim = read_response(f)
    assert interim.status == 100
    sock.sendall(b"body")
    resp = read_response(f)
    assert resp.status == 200 and resp.body == b"body"
    # the connection stays usable
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(f).status == 200
    sock.close()


def test_expect_100_continue_not_sent_when_the_app_answers_without_reading(suite_server):
    sock = suite_server.connect()
    sock.sendall(b"POST /reject HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
    f = sock.makefile("rb")
    resp = read_response(f)
    assert resp.status == 413, "the final response must come without a 100 Continue before it"
    assert resp.header("Connection") == "close"   # the unread body cannot be skipped
    assert at_eof(sock, f)
    sock.close()


def test_no_100_continue_for_http10(suite_server):
    data = b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"
    (resp,), sock, f = exchange(suite_server, data)
    assert resp.status == 200 and resp.body == b"ok"
    sock.close()


def test_head_has_get_headers_and_no_body(suite_server):
    for path in ("/", "/stream", "/file?size=5000", "/generator-start"):
        (get_resp,), s1, _ = exchange(suite_server, b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        s1.close()
        sock = suite_server.connect()
        sock.sendall(b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
        f = sock.makefile("rb")
        head = read_response(f, head=True)
        assert head.status == 200
        assert head.header("Content-Length") == get_resp.header("Content-Length"), path
        assert head.header("Content-Type") == get_resp.header("Content-Type"), path
        # the next response starts right after the HEAD headers: no body bytes were sent
        nxt = read_response(f)
        assert nxt.status == 200 and nxt.body.isdigit(), (path, nxt)
        sock.close()


def test_generator_body_is_chunked_on_http11(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /stream?n=3&size=4 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.header("Transfer-Encoding") == "chunked"
    assert resp.header("Content-Length") is None
    assert resp.body == b"aaaabbbbcccc"
    sock.close()


def test_generator_body_is_close_delimited_on_http10(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /stream?n=3&size=4 HTTP/1.0\r\n\r\n")
    assert resp.header("Transfer-Encoding") is None
    assert resp.header("Connection") == "close"
    assert resp.body == b"aaaabbbbcccc"
    sock.close()


def test_http10_keep_alive_on_request(suite_server):
    sock = suite_server.connect()
    f = sock.makefile("rb")
    sock.sendall(b"GET /pid HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    first = read_response(f)
    assert first.header("Connection") == "keep-alive"
    sock.sendall(b"GET /pid HTTP/1.0\r\n\r\n")
    second = read_response(f)
    assert second.status == 200 and second.header("Connection") == "close"
    assert at_eof(sock, f)
    sock.close()


def test_connection_close_is_honoured(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert resp.header("Connection") == "close"
    assert at_eof(sock, f)
    sock.close()


def test_single_item_list_gets_content_length(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.status == 200
    assert resp.header("Content-Length") == str(len(resp.body))
    sock.close()


def test_environ_follows_pep3333(suite_server):
    data = (b"GET /v/environ/caf%C3%A9%20x?a=1&b=%20&c HTTP/1.1\r\nHost: example.com:8080\r\n"
            b"Content-Type: text/x\r\nX-Multi: one\r\nX-Multi: two\r\nX-Spaced:   padded  \r\n"
            b"X_Underscore: dropped\r\nX-Underscore: kept\r\n\r\n")
    (resp,), sock, f = exchange(suite_server, data)
    assert resp.status == 200, resp
    env = json.loads(resp.body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9 x"      # percent-decoded, held as latin-1
    assert env["QUERY_STRING"] == "a=1&b=%20&c"                    # raw
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(suite_server.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(sock.getsockname()[1])
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["CONTENT_TYPE"] == "text/x" and "HTTP_CONTENT_TYPE" not in env
    assert "CONTENT_LENGTH" not in env
    assert env["HTTP_X_MULTI"] == "one,two"
    assert env["HTTP_X_SPACED"] == "padded"
    assert env["HTTP_X_UNDERSCORE"] == "kept"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True      # the default --threads 32: calls may run on several threads
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    sock.close()


def _head(fields, path="/v/environ"):
    return b"GET %s HTTP/1.1\r\n%s\r\n" % (path.encode(), b"".join(b"%s: %s\r\n" % f for f in fields))


def _http_fields(env):
    return {k: v for k, v in env.items() if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}


# The compiled loop remembers the header fields it saw last at each position of a head and reuses
# what it made of one that comes again (_llhttp.pxi): these heads repeat, change and move fields.
HEADS = [
    [(b"Host", b"t"), (b"X-A", b"1"), (b"Accept", b"*/*")],
    [(b"Host", b"t"), (b"X-A", b"1"), (b"Accept", b"*/*")],                  # the same again
    [(b"Host", b"t"), (b"X-A", b"2"), (b"Accept", b"*/*")],                  # a value changes
    [(b"Host", b"t"), (b"X-B", b"2"), (b"Accept", b"*/*")],                  # a name changes, not its value
    [(b"Host", b"u"), (b"Accept", b"*/*"), (b"X-A", b"1")],                  # fields move
    [(b"Host", b"t"), (b"X-A", b"1"), (b"X-A", b"1"), (b"X_A", b"3")],       # repeated: combined; X_A dropped
    [(b"Host", b"t"), (b"X-A", b""), (b"X-A", b"")],                         # repeated empty values
    [(b"Host", b"t"), (b"X-A", b"  1  ")],                                   # the same text, padded
    [(b"Host", b"t"), (b"x-a", b"1"), (b"Content-Type", b"text/x")],        # another spelling
    [(b"Host", b"t")],
    [(b"Host", b"t"), (b"X-A", b"1"), (b"Accept", b"*/*")],
]
EXPECTED = [
    {"HTTP_HOST": "t", "HTTP_X_A": "1", "HTTP_ACCEPT": "*/*"},
    {"HTTP_HOST": "t", "HTTP_X_A": "1", "HTTP_ACCEPT": "*/*"},
    {"HTTP_HOST": "t", "HTTP_X_A": "2", "HTTP_ACCEPT": "*/*"},
    {"HTTP_HOST": "t", "HTTP_X_B": "2", "HTTP_ACCEPT": "*/*"},
    {"HTTP_HOST": "u", "HTTP_ACCEPT": "*/*", "HTTP_X_A": "1"},
    {"HTTP_HOST": "t", "HTTP_X_A": "1,1"},
    {"HTTP_HOST": "t", "HTTP_X_A": ","},
    {"HTTP_HOST": "t", "HTTP_X_A": "1"},
    {"HTTP_HOST": "t", "HTTP_X_A": "1", "CONTENT_TYPE": "text/x"},
    {"HTTP_HOST": "t"},
    {"HTTP_HOST": "t", "HTTP_X_A": "1", "HTTP_ACCEPT": "*/*"},
]


@pytest.mark.parametrize("path", ["/v/environ", "/environ"])
def test_header_fields_that_repeat_change_and_move_on_one_connection(suite_server, path):
    """Each head twice in a row. /environ leaves its environ as it was, so the compiled loop's next
    request with the same line and fields starts from it (RequestBuilder.kept_env, _request.py); /v/ edits it."""
    sock = suite_server.connect()
    f = sock.makefile("rb")
    rest = None
    for fields, expected in zip(HEADS * 2, EXPECTED * 2):
        for _ in range(2):
            sock.sendall(_head(fields, path))
            resp = read_response(f)
            assert resp.status == 200, (fields, resp)
            env = json.loads(resp.body)
            assert _http_fields(env) == expected, fields
            others = {k: v for k, v in env.items() if k not in _http_fields(env)}
            assert others == (rest if rest is not None else others), fields
            rest = others
    sock.close()


def test_header_fields_in_pieces_and_on_new_connections(suite_server):
    """A field split across reads is parsed as a whole; other connections see the same environ."""
    for fields, expected in zip(HEADS, EXPECTED):
        with suite_server.connect() as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            data = _head(fields)
            for i in range(0, len(data), 3):     # (TCP_NODELAY on the client: small writes, several reads)
                sock.sendall(data[i:i + 3])
                time.sleep(0.001)
            resp = read_response(sock.makefile("rb"))
            assert resp.status == 200 and _http_fields(json.loads(resp.body)) == expected, fields


def test_repeated_fields_still_count_toward_the_limits(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--loop", impl, "--max-headers", "6") as server:
        sock = server.connect()
        f = sock.makefile("rb")
        fields = [(b"Host", b"t")] + [(b"X-%d" % i, b"v") for i in range(5)]
        for _ in range(3):
            sock.sendall(_head(fields))
            assert read_response(f).status == 200
        sock.sendall(_head(fields + [(b"X-9", b"v")]))
        assert read_response(f).status == 431
        sock.close()


def test_request_lines_that_repeat_and_change_on_one_connection(suite_server):
    """A connection that repeats its request line starts later requests from an environ that has
    that line's keys (_request_line): every change of target, method or version is seen, and the
    app's edits of its environ (the /v/ prefix is cut from PATH_INFO) do not leak into the next."""
    lines = [b"GET /v/environ/a?x=1 HTTP/1.1", b"GET /v/environ/a?x=1 HTTP/1.1", b"GET /v/environ/a?x=1 HTTP/1.1",
             b"GET /v/environ/a?x=2 HTTP/1.1", b"GET /v/environ/a?x=2 HTTP/1.1", b"POST /v/environ/a?x=2 HTTP/1.1",
             b"GET /v/environ/a?x=2 HTTP/1.0", b"GET /v/environ/a?x=2 HTTP/1.1", b"GET /v/environ/a?x=2 HTTP/1.1",
             b"GET /v/environ/caf%C3%A9 HTTP/1.1", b"GET /v/environ/caf%C3%A9 HTTP/1.1", b"GET /v/environ/b HTTP/1.1",
             b"GET /v/environ/b HTTP/1.1", b"GET /v/environ/a?x=1 HTTP/1.1"]
    sock = suite_server.connect()
    f = sock.makefile("rb")
    for line in lines * 2:
        method, target, version = line.decode().split(" ")
        extra = b"Connection: keep-alive\r\n" if version == "HTTP/1.0" else b""
        body = b"Content-Length: 3\r\n\r\nabc" if method == "POST" else b"\r\n"
        sock.sendall(line + b"\r\nHost: t\r\n" + extra + body)
        resp = read_response(f)
        assert resp.status == 200, (line, resp)
        env = json.loads(resp.body)
        path, _, query = target.partition("?")
        assert (env["REQUEST_METHOD"], env["RAW_URI"], env["SERVER_PROTOCOL"]) == (method, target, version), line
        assert env["PATH_INFO"] == path[2:].replace("caf%C3%A9", "caf\u00c3\u00a9"), line
        assert env["QUERY_STRING"] == query, line
        assert env.get("CONTENT_LENGTH") == ("3" if method == "POST" else None), line
        if resp.header("Connection") == "close":    # (HTTP/1.0: this streamed body ends with the connection)
            sock.close()
            sock = suite_server.connect()
            f = sock.makefile("rb")
    # a body after the line repeated (its environ starts with wsgi.input empty), then one without
    for body in (b"abc", b"defg", b"h" * 5000, b"", b"ij"):
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        resp = read_response(f)
        assert resp.status == 200 and resp.body == body
    sock.close()


def test_one_header_list_edited_in_place_statuses_and_one_piece_bodies(suite_server):
    """The app hands over the same header list object every time and edits it in place between
    responses (encode_headers answers a list whose every pair it knew again only while each pair
    matches), its statuses are new strings (set_status remembers the last), and one-piece bodies go
    out in the head's buffer when the Content-Length allows all of them (a longer body is cut to
    it, a HEAD gets none, a body above 4 KiB goes separately)."""
    cases = [  # query -> status, Content-Type, X-Extra, Content-Length, body length
        ("", 200, "text/plain", None, 5, 5), ("", 200, "text/plain", None, 5, 5),
        ("ct=text/html", 200, "text/html", None, 5, 5),
        ("ct=text/html&extra=1", 200, "text/html", "1", 5, 5), ("ct=text/html&extra=1", 200, "text/html", "1", 5, 5),
        ("ct=text/html&extra=2", 200, "text/html", "2", 5, 5),
        ("ct=text/html&extra=2&code=404", 404, "text/html", "2", 5, 5),
        ("ct=text/html&extra=2&code=201", 201, "text/html", "2", 5, 5),
        ("ct=text/html&code=299", 299, "text/html", None, 5, 5), ("code=299", 299, "text/plain", None, 5, 5),
        ("size=4096", 200, "text/plain", None, 4096, 4096), ("size=4097", 200, "text/plain", None, 4097, 4097),
        ("size=0", 200, "text/plain", None, 0, 0),
        ("clen=5&size=5", 200, "text/plain", None, 5, 5), ("clen=3&size=5", 200, "text/plain", None, 3, 3),
        ("clen=3&size=5&extra=x", 200, "text/plain", "x", 3, 3), ("clen=3&size=5", 200, "text/plain", None, 3, 3),
        ("", 200, "text/plain", None, 5, 5),
    ]
    sock = suite_server.connect()
    f = sock.makefile("rb")
    for query, status, ctype, extra, clen, size in cases * 2:
        for method in ("GET", "HEAD", "GET"):
            sock.sendall(b"%s /shared-headers?%s HTTP/1.1\r\nHost: t\r\n\r\n" % (method.encode(), query.encode()))
            resp = read_response(f, head=method == "HEAD")
            assert resp.version == "HTTP/1.1", (query, method)      # (nothing left of the response before)
            assert (resp.status, resp.header("Content-Type"), resp.header("X-Extra")) == (status, ctype, extra), query
            assert resp.header("Content-Length") == str(clen), (query, method)
            assert resp.body == (b"" if method == "HEAD" else b"b" * size), (query, method)
            assert resp.header("Connection") is None, query
    # a one-piece body shorter than its Content-Length: what there is, and then the connection closes
    sock.sendall(b"GET /shared-headers?clen=8&size=5 HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    resp = read_response(f)
    assert resp.status == 200 and resp.header("Content-Length") == "8" and resp.body == b"bbbbb"
    assert f.read() == b""
    sock.close()


def test_an_environ_the_app_changed_or_kept_is_never_handed_out_again(suite_server):
    """The compiled loop starts a request with the same line and fields as the last one from that
    request's environ when the app left it unchanged and holds no reference to it (kept_env). The
    app here changes it, adds to it, takes a key out and puts it back, changes it in its body's
    close(), and holds it past the response to change it at the next call: every request still sees
    the environ a new one would be. Between the repeats, requests with other fields, a body and a
    proxy's field each get their own."""
    plain = b"GET /environ-then?q=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n"
    others = [
        (b"GET /environ-then?q=1 HTTP/1.1\r\nHost: t\r\nX-A: 2\r\n\r\n", {"HTTP_X_A": "2"}),
        (b"GET /environ-then?q=1 HTTP/1.1\r\nHost: t\r\n\r\n", {"HTTP_X_A": None}),
        (b"GET /environ-then?q=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-B: 1\r\n\r\n", {"HTTP_X_B": "1"}),
        (b"GET /environ-then?q=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-A: 1\r\n\r\n", {"HTTP_X_A": "1,1"}),
        (b"POST /environ-then?q=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nab",
         {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "2"}),
        (b"GET /environ-then?q=1 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n",
         {"HTTP_X_FORWARDED_FOR": "10.1.2.3", "REMOTE_ADDR": "10.1.2.3"}),
        (b"GET /environ-then?q=2 HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n",
         {"QUERY_STRING": "q=2", "RAW_URI": "/environ-then?q=2"}),
    ]
    sock = suite_server.connect()
    f = sock.makefile("rb")

    def ask(data):
        sock.sendall(data)
        resp = read_response(f)
        assert resp.status == 200, (data, resp)
        return json.loads(resp.body)

    first = ask(plain)
    assert first["HTTP_HOST"] == "t" and "x.added" not in first
    for data, changes in others * 2:
        for _ in range(11):                          # (more than the app's 9 steps)
            assert ask(plain) == first
        env = ask(data)
        expected = {k: v for k, v in {**first, **changes}.items() if v is not None}
        if "REMOTE_ADDR" in changes:                 # (a proxy's client: its port is not known)
            expected.pop("REMOTE_PORT", None)
            env.pop("REMOTE_PORT", None)
        assert env == expected, data
    assert ask(plain) == first
    sock.close()


def test_requests_repeated_with_a_body_or_a_proxy_field_are_each_read_whole(suite_server):
    """A request with a body, or with a proxy's field, repeated exactly: each one's body is read
    and each one's client is found again (such an environ is never kept for the next request),
    and the plain request after them has neither."""
    sock = suite_server.connect()
    f = sock.makefile("rb")

    def ask(data, path=b"/environ"):
        sock.sendall(data.replace(b"PATH", path))
        resp = read_response(f)
        assert resp.status == 200, (data, resp)
        return resp

    post = b"POST PATH HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    proxied = b"GET PATH HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"
    plain = b"GET PATH HTTP/1.1\r\nHost: t\r\n\r\n"
    for _ in range(2):
        for _ in range(4):
            assert ask(post, b"/echo").body == b"abc"
        for _ in range(4):
            env = json.loads(ask(post).body)
            assert env["CONTENT_LENGTH"] == "3" and env["REQUEST_METHOD"] == "POST"
        for _ in range(4):
            env = json.loads(ask(proxied).body)
            assert env["REMOTE_ADDR"] == "10.1.2.3" and env["HTTP_X_FORWARDED_FOR"] == "10.1.2.3"
        for _ in range(4):
            env = json.loads(ask(plain).body)
            assert env["REMOTE_ADDR"] == "127.0.0.1" and "CONTENT_LENGTH" not in env
            assert "HTTP_X_FORWARDED_FOR" not in env and env["REQUEST_METHOD"] == "GET"
    sock.close()


def test_a_kept_environ_is_not_taken_for_another_connections_fields(impl):
    """One worker, two connections: A repeats a head (its environ is kept), B sends another value
    at the same position (the worker's memo of fields now holds B's), then A sends B's value and
    then its own again. Each request sees its own fields."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--loop", impl) as server:
        a, b = server.connect(), server.connect()
        fa, fb = a.makefile("rb"), b.makefile("rb")

        def ask(sock, f, value):
            sock.sendall(b"GET /environ HTTP/1.1\r\nHost: t\r\nX-A: %s\r\nAccept: */*\r\n\r\n" % value)
            resp = read_response(f)
            assert resp.status == 200
            return json.loads(resp.body)["HTTP_X_A"]

        for _ in range(3):
            assert [ask(a, fa, b"1") for _ in range(3)] == ["1"] * 3
            assert [ask(b, fb, b"2") for _ in range(2)] == ["2"] * 2
            assert ask(a, fa, b"2") == "2"
            assert [ask(a, fa, b"1") for _ in range(3)] == ["1"] * 3
            assert ask(b, fb, b"1") == "1"
            assert ask(a, fa, b"1") == "1"
        a.close()
        b.close()


def test_absolute_form_target(suite_server):
    (resp,), sock, f = exchange(suite_server,
                                b"GET http://example.com/environ?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    env = json.loads(resp.body)
    assert env["PATH_INFO"] == "/environ" and env["QUERY_STRING"] == "x=1"
    sock.close()


def test_write_callable(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /v/write HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.status == 200 and resp.body == b"written returned"
    sock.close()


def test_lazy_start_response_inside_generator(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /v/generator-start HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.status == 200 and resp.body == b"lazy start"
    sock.close()


def test_exc_info_replaces_unsent_headers(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /exc-info HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.status == 503 and resp.body == b"replaced"
    sock.close()


def test_bodiless_statuses(suite_server):
    sock = suite_server.connect()
    f = sock.makefile("rb")
    sock.sendall(b"GET /no-content HTTP/1.1\r\nHost: t\r\n\r\nGET /not-modified HTTP/1.1\r\nHost: t\r\n\r\n"
                 b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    r204, r304, nxt = read_response(f), read_response(f), read_response(f)
    assert r204.status == 204 and r204.header("Content-Length") is None and r204.header("Transfer-Encoding") is None
    assert r304.status == 304 and r304.header("Transfer-Encoding") is None
    assert nxt.status == 200 and nxt.body.isdigit()
    sock.close()


def test_file_wrapper_sends_the_file(suite_server):
    size = 3 * 1024 * 1024 + 11
    (resp,), sock, f = exchange(suite_server, b"GET /file?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
    assert resp.header("Content-Length") == str(size)
    assert resp.body == bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    sock.close()


def test_app_exception_gives_500_and_the_worker_keeps_serving(suite_server):
    before = [pid for pid in suite_server.worker_pids if pid_alive(pid)]
    for _ in range(4):
        (resp,), sock, f = exchange(suite_server, b"GET /raise HTTP/1.1\r\nHost: t\r\n\r\n")
        assert resp.status == 500
        assert b"boom" not in resp.body, "no traceback goes to the client"
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(f).status == 200, "the connection survives an app error"
        sock.close()
    assert all(pid_alive(pid) for pid in before)
    wait_until(lambda: "boom from the test app" in suite_server.stderr(), what="the traceback in the log")
    assert "Traceback" in suite_server.stderr()


def test_exception_after_headers_cuts_the_connection(suite_server):
    sock = suite_server.connect()
    sock.sendall(b"GET /raise-after-headers HTTP/1.1\r\nHost: t\r\n\r\n")
    f = sock.makefile("rb")
    line = f.readline()
    assert line.startswith(b"HTTP/1.1 200")
    rest = f.read()     # until the server closes
    assert b"partial" in rest
    assert not rest.endswith(b"0\r\n\r\n"), "a failed body must not look complete"
    sock.close()


def test_bad_header_from_app_is_never_written(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /bad-header HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.status == 500
    assert resp.header("Set-Cookie") is None
    sock.close()


def _no_start_then_pid(server):
    sock = server.connect()
    f = sock.makefile("rb")
    pids = []
    for path in (b"/pid", b"/no-start", b"/no-start?items=1", b"/pid"):
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
        resp = read_response(f)
        if path == b"/pid":
            assert resp.status == 200
            pids.append(resp.body)
        else:
            assert resp.status == 500 and resp.body == b"Internal Server Error\n", (path, resp)
    sock.close()
    assert pids[0] == pids[1]       # the same worker, and the connection kept


def test_an_empty_body_without_start_response_is_a_500(suite_server):
    """PEP 3333: the app must call start_response before its iterable ends; one that does not (an
    empty generator, or empty items only) gets a 500 and the error logged, and the worker goes on
    (it used to raise out of the loop: the worker exited, or the head went out without its status)."""
    _no_start_then_pid(suite_server)
    wait_until(lambda: "without calling start_response()" in suite_server.stderr(), what="the error logged")


def test_an_empty_body_without_start_response_with_one_thread(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--loop", impl, "--threads", "1") as server:
        _no_start_then_pid(server)


def test_short_body_closes_and_long_body_is_cut(suite_server):
    sock = suite_server.connect()
    sock.sendall(b"GET /short HTTP/1.1\r\nHost: t\r\n\r\n")
    f = sock.makefile("rb")
    assert f.readline().startswith(b"HTTP/1.1 200")
    assert f.read().endswith(b"only this")   # then EOF: the client is not left waiting for 91 bytes
    sock.close()
    (resp,), sock, f = exchange(suite_server,
                                b"GET /long HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp.body == b"1234"
    assert read_response(f).body.isdigit(), "the extra bytes never went out"
    sock.close()


def test_malformed_request_gets_400_and_close(suite_server):
    (resp,), sock, f = exchange(suite_server, b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nNOT HTTP\r\n\r\n", count=1)
    assert resp.status == 200
    bad = read_response(f)
    assert bad.status == 400 and bad.header("Connection") == "close"
    assert at_eof(sock, f)
    sock.close()


def test_streamed_50mb_response_with_bounded_memory(suite_server):
    marker = tempfile.mktemp(prefix="fc-close-")
    sock = suite_server.connect(timeout=30)
    sock.sendall(b"GET /closing?marker=%s&n=800&size=65536 HTTP/1.1\r\nHost: t\r\n\r\n" % marker.encode())
    f = sock.makefile("rb")
    assert f.readline().startswith(b"HTTP/1.1 200")
    headers = {}
    while True:
        line = f.readline()
        if line == b"\r\n":
            break
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    assert headers["transfer-encoding"] == "chunked"
    pid = int(headers["x-pid"])
    with open("/proc/%d/clear_refs" % pid, "w") as refs:
        refs.write("5")         # restart the worker's peak-RSS counter (VmHWM) from now
    start_rss = rss_kib(pid)
    total = 0
    while True:
        size = int(f.readline(), 16)
        if size == 0:
            f.readline()
            break
        total += len(f.read(size))
        f.readline()
        if total % (4 << 20) == 0:
            time.sleep(0.02)    # a slow reader: the server must hold back, not buffer
    assert total == 800 * 65536
    wait_until(lambda: os.path.exists(marker), what="close() of the body")
    os.unlink(marker)
    growth = rss_kib(pid, "VmHWM") - start_rss
    assert growth < 16 * 1024, "worker RSS grew by %d KiB while streaming 50 MB" % growth
    sock.close()


def test_client_disconnect_mid_response_still_closes_the_iterable(suite_server):
    marker = tempfile.mktemp(prefix="fc-close-")
    sock = suite_server.connect()
    sock.sendall(b"GET /closing?marker=%s&n=100000&size=65536 HTTP/1.1\r\nHost: t\r\n\r\n" % marker.encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()   # reset while the server is mid-body
    wait_until(lambda: os.path.exists(marker), what="close() after the client went away")
    os.unlink(marker)
    status, _, _ = get(suite_server, "/pid")
    assert status == 200


def test_concurrent_clients_are_spread_over_both_workers(suite_server):
    import concurrent.futures

    def fetch(_):
        return get(suite_server, "/sleep?s=0.05")[2].split()[-1]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(fetch, range(48)))
    counts = {pid: pids.count(pid) for pid in set(pids)}
    assert len(counts) == 2, counts


def test_many_pipelined_requests_are_answered_in_order(suite_server):
    count = 1000
    data = b"".join(b"GET /stream?n=1&size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (i % 50 + 1) for i in range(count))
    sock = suite_server.connect(timeout=20)
    sender = __import__("threading").Thread(target=sock.sendall, args=(data,))
    sender.start()      # send while reading: neither side may wait for the other to finish
    f = sock.makefile("rb")
    for i in range(count):
        resp = read_response(f)
        assert resp.status == 200 and resp.body == b"a" * (i % 50 + 1), i
    sender.join(10)
    sock.close()


def test_half_closed_client_still_gets_its_response(suite_server):
    sock = suite_server.connect()
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    f = sock.makefile("rb")
    assert read_response(f).status == 200
    assert read_response(f).status == 200
    assert at_eof(sock, f)
    sock.close()


def test_request_split_into_single_bytes(suite_server):
    sock = suite_server.connect()
    for byte in b"POST /echo?q=1 HTTP/1.1\r\nHost: t\r\nX-Long: " + b"v" * 50 + b"\r\nContent-Length: 3\r\n\r\nabc":
        sock.sendall(bytes([byte]))
    resp = read_response(sock.makefile("rb"))
    assert resp.status == 200 and resp.body == b"abc"
    sock.close()


@pytest.mark.parametrize("first", [
    b"GET /stream?n=1&size=300000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /stream?n=1&size=300000 HTTP/1.0\r\n\r\n",
    b"BAD REQUEST LINE\r\n\r\n",
])
def test_closing_with_unread_input_does_not_reset_the_response(suite_server, first):
    """Lingering close: bytes the server will never parse must not destroy the response."""
    import threading

    sock = suite_server.connect(timeout=20)
    junk = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n" * 20000   # about 600 KB the server will not answer
    sender = threading.Thread(target=_ignore_errors, args=(sock.sendall, first + junk))
    sender.start()
    try:
        resp = read_response(sock.makefile("rb"))
        if first.startswith(b"BAD"):
            assert resp.status == 400
        else:
            assert resp.status == 200 and len(resp.body) == 300000
    finally:
        sock.close()
        sender.join(20)


def _ignore_errors(fn, *args):
    try:
        fn(*args)
    except OSError:
        pass


def _server_side_rows(server, client):
    """The /proc/net/tcp rows of the server's side of `client`'s connection (split in fields: [3]
    is the state, [9] the inode)."""
    port = client.getsockname()[1]
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return [row for row in rows if int(row[1].split(":")[1], 16) == server.port
            and int(row[2].split(":")[1], 16) == port]


def _server_side_nodelay(server, client):
    """TCP_NODELAY on the worker's side of `client`'s connection, read through a copy of the worker's
    descriptor (pidfd_getfd: Linux 5.6, and the right to trace the worker)."""
    import ctypes

    rows = _server_side_rows(server, client)
    inodes = {row[9] for row in rows}
    assert len(inodes) == 1, rows
    target = "socket:[%s]" % inodes.pop()
    for pid in server.worker_pids:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != target:
                    continue
            except OSError:
                continue
            pidfd = os.pidfd_open(pid)
            try:
                copy = ctypes.CDLL(None, use_errno=True).syscall(438, pidfd, int(fd), 0)   # SYS_pidfd_getfd
                if copy < 0:
                    pytest.skip("pidfd_getfd: %s" % os.strerror(ctypes.get_errno()))
                with socket.socket(fileno=copy) as sock:   # (closing the copy leaves the worker's open)
                    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            finally:
                os.close(pidfd)
    raise AssertionError("no worker holds %s" % target)


def test_tcp_nodelay_is_set_before_any_write_but_a_connections_last(suite_server, tmp_path):
    """Nagle's algorithm would hold back a second response or a streamed one: TCP_NODELAY is on by
    then. A connection answered in one write and closed never needs it (nginx does the same)."""
    keep = socket.create_connection((suite_server.host, suite_server.port), timeout=10)
    keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = read_response(keep.makefile("rb"))
    assert resp.status == 200 and _server_side_nodelay(suite_server, keep)
    keep.close()
    marker = tmp_path / "in-app"
    once = socket.create_connection((suite_server.host, suite_server.port), timeout=10)
    once.sendall(b"GET /sleep?s=0.5&marker=%s HTTP/1.0\r\n\r\n" % str(marker).encode())
    wait_until(marker.exists, what="the request in the app")
    assert not _server_side_nodelay(suite_server, once)     # HTTP/1.0, closing: nothing written yet
    assert read_response(once.makefile("rb")).status == 200
    once.close()
    stream = socket.create_connection((suite_server.host, suite_server.port), timeout=10)
    stream.sendall(b"GET /closing?marker=%s&n=40&size=10&delay=0.05 HTTP/1.0\r\n\r\n"
                   % str(tmp_path / "closed").encode())
    assert stream.recv(100).startswith(b"HTTP/1.1 200 OK")
    assert _server_side_nodelay(suite_server, stream)        # a response in pieces, to a closing request
    stream.close()


@pytest.mark.parametrize("source", ["127.0.0.1", "127.10.200.5", "127.255.0.99", "127.1.23.100", "127.9.99.250"])
def test_remote_addr_is_the_clients_address(suite_server, source):
    """REMOTE_ADDR and REMOTE_PORT from the accepted socket (the compiled loop formats IPv4 itself):
    every octet width, from clients bound to other loopback addresses."""
    client = socket.socket()
    client.settimeout(10)
    client.bind((source, 0))
    client.connect((suite_server.host, suite_server.port))
    client.sendall(b"GET /environ HTTP/1.0\r\n\r\n")
    env = json.loads(read_response(client.makefile("rb")).body)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (source, str(client.getsockname()[1]))
    client.close()


def _server_side_states(server, client):
    """The TCP states of the server's side of `client`'s connection: "01" established, "03"
    SYN_RECV (a connection TCP_DEFER_ACCEPT still holds back from accept())."""
    return [row[3] for row in _server_side_rows(server, client)]


def test_a_connection_reaches_a_worker_with_its_first_bytes(impl):
    """--defer-accept (default 1 s): the kernel queues a connection for accept() once its request
    arrives, and the worker reads it at once; a client that says nothing is held by the kernel,
    then handed over, and the header timeout runs from there."""
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--header-timeout", "1") as server:
        silent = server.connect()
        assert _server_side_states(server, silent) == ["03"]          # not accepted: no data yet
        for _ in range(3):                                            # others are served meanwhile
            talking = server.connect()
            talking.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            f = talking.makefile("rb")
            assert read_response(f).status == 200
            talking.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")   # and kept alive
            assert read_response(f).status == 200
            talking.close()
        wait_until(lambda: _server_side_states(server, silent) == ["01"], timeout=10,
                   what="the deferral to pass")
        f = silent.makefile("rb")
        assert read_response(f).status == 408
        assert at_eof(silent, f)
        silent.close()


def test_defer_accept_0_accepts_a_silent_connection_at_once(impl):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--header-timeout", "1", "--defer-accept", "0") as server:
        silent = server.connect()
        start = time.monotonic()
        wait_until(lambda: _server_side_states(server, silent) == ["01"], timeout=10)
        assert time.monotonic() - start < 0.5       # (deferred, it would be a second at the least)
        f = silent.makefile("rb")
        assert read_response(f).status == 408
        silent.close()
