"""Everyday settings: --root-path for an app mounted under a prefix (WSGI SCRIPT_NAME/PATH_INFO,
ASGI root_path), and an environ that PEP 3333 accepts on a unix socket; both loops."""

import json
import os
import socket
import tempfile

import pytest

from helpers import Server, exit_of, get, read_to_eof

pytestmark = pytest.mark.timeout(60)


def ask(server, path):
    return json.loads(get(server, path).body)


@pytest.mark.parametrize("prefix", ["/api", "/api/"])
def test_root_path_sets_script_name_and_strips_path_info(impl, prefix):
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--root-path", prefix) as server:
        env = ask(server, "/api/environ/x?q=1")
        assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/api", "/environ/x", "q=1")
        env = ask(server, "/environ")             # a proxy that stripped the prefix already
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/api", "/environ")

    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--root-path", "/env") as server:
        env = ask(server, "/environ")              # only on a segment boundary: /env is not a prefix of it
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/env", "/environ")


def test_root_path_over_asgi(impl):
    with Server("apps.asgi_suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "--root-path", "/api") as server:
        scope = ask(server, "/api/scope/x")
        # ASGI: root_path is the prefix; path is the whole path (apps strip root_path themselves)
        assert scope["root_path"] == "/api" and scope["path"] == "/api/scope/x"


def test_a_bad_root_path_is_refused():
    code, text = exit_of("--bind", "127.0.0.1:0", "--root-path", "api")
    assert code == 2 and "--root-path" in text


def test_server_name_and_port_are_never_empty_on_a_unix_socket(impl):
    path = tempfile.mktemp(prefix="fc-", suffix=".sock")
    try:
        with Server("apps.suite:app", "--bind", "unix:" + path, "--workers", "1", "--loop", impl,
                    wait=False) as server:
            server.wait_line(r"^fastcluster: listening on unix:%s$" % path)
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_to_eof(sock)
            sock.close()
            env = json.loads(data.split(b"\r\n\r\n", 1)[1])
            assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == "80"
    finally:
        if os.path.exists(path):
            os.unlink(path)
