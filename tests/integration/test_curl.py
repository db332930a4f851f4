"""curl as the client: what users will try first."""

import hashlib
import os
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)")]


def curl(*args):
    out = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", *args],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_curl_get_and_head(suite_server):
    out = curl("-i", suite_server.url + "/")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Hello from process" in out
    head = curl("-I", suite_server.url + "/")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: " in head


def test_curl_large_upload_uses_100_continue(suite_server, tmp_path):
    payload = os.urandom(2 * 1024 * 1024)   # curl sends Expect: 100-continue above 1 MiB
    path = tmp_path / "payload"
    path.write_bytes(payload)
    out = curl("-v", "--data-binary", "@%s" % path, "-o", str(tmp_path / "echo"),
               "-H", "Content-Type: application/octet-stream", suite_server.url + "/echo", "--stderr", "-")
    assert b"Expect: 100-continue" in out and b"HTTP/1.1 100 Continue" in out
    echoed = (tmp_path / "echo").read_bytes()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_curl_chunked_upload_and_http10(suite_server):
    out = curl("-H", "Transfer-Encoding: chunked", "--data-binary", "chunked body", suite_server.url + "/echo")
    assert out == b"chunked body"
    out = curl("--http1.0", "-i", suite_server.url + "/stream?n=2&size=3")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"aaabbb")
    assert b"Transfer-Encoding" not in out
