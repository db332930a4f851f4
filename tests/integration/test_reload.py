"""--reload: an edit to the app's source is served after a readiness-gated rolling restart; an edit
that does not import leaves the old workers serving. Both loops, and both ways of noticing edits:
watchfiles (installed with the test extras) and polling (watchfiles hidden by tests/shims)."""

import os
import time

import pytest

from helpers import TESTS, Server, exit_of, get, wait_until

pytestmark = pytest.mark.timeout(90)

NO_WATCHFILES = os.path.join(TESTS, "shims", "no_watchfiles")
APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%s"]
'''


def write(path, text):
    """A save: the new text, with an mtime that differs from the last one even on a coarse clock."""
    before = os.stat(path).st_mtime_ns if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(text)
    if os.stat(path).st_mtime_ns == before:
        os.utime(path, ns=(before + 10_000_000, before + 10_000_000))


@pytest.fixture(params=["watchfiles", "polling"])
def engine(request):
    return request.param


def reload_server(impl, engine, project, *extra, wait=True):
    path = str(project) + (os.pathsep + NO_WATCHFILES if engine == "polling" else "")
    return Server("reloadme:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", impl, "--reload",
                  "--reload-dir", str(project), *extra, env={"PYTHONPATH": path + os.pathsep + TESTS}, wait=wait)


def served(server, body, timeout=20.0):
    """Wait until every worker serves `body`; returns how long it took."""
    began = time.monotonic()
    wait_until(lambda: all(get(server).body == body for _ in range(4)), timeout=timeout,
               what="%r to be served" % body, server=server)
    return time.monotonic() - began


def test_an_edit_is_served_and_a_broken_edit_keeps_the_old_workers(impl, engine, tmp_path):
    source = tmp_path / "reloadme.py"
    write(source, APP % "v1")
    with reload_server(impl, engine, tmp_path) as server:
        assert any(line.startswith("fastcluster: reloading on changes to *.py in %s (%s)" % (tmp_path, engine))
                   for line in server.lines)
        assert get(server).body == b"v1"
        write(source, APP % "v2")
        served(server, b"v2")
        write(source, "def app(:\n")                                   # a syntax error
        wait_until(lambda: "SyntaxError" in server.stderr(), what="the traceback", server=server)
        wait_until(lambda: "rolling restart aborted" in server.stderr(), what="the abort", server=server)
        assert all(get(server).body == b"v2" for _ in range(6))         # the old workers serve on
        write(source, APP % "v3")
        served(server, b"v3")


def test_reload_include_and_the_default_filter(impl, tmp_path):
    source = tmp_path / "reloadme.py"
    template = tmp_path / "page.html"
    write(source, 'import os\nHERE = os.path.dirname(__file__)\n'
                  'def app(environ, start_response):\n'
                  '    start_response("200 OK", [])\n'
                  '    return [open(os.path.join(HERE, "page.html"), "rb").read()]\n')
    write(template, "one")
    with reload_server(impl, "polling", tmp_path, "--reload-include", "*.html") as server:
        pids = set(server.worker_pids)
        assert get(server).body == b"one"
        write(template, "two")            # (read per request: served at once; the restart is the point)
        wait_until(lambda: len(server.worker_pids) >= 4, what="new workers after the .html edit", server=server)
        assert not set(server.worker_pids[2:]) & pids


def test_an_app_that_fails_to_load_at_start_waits_for_the_fix(impl, engine, tmp_path):
    source = tmp_path / "reloadme.py"
    write(source, "raise RuntimeError('not yet')\n")
    with reload_server(impl, engine, tmp_path, wait=False) as server:
        wait_until(lambda: "waiting for a change to the app's files" in server.stderr(), what="the wait",
                   server=server)
        assert server.proc.poll() is None                               # the master waits
        write(source, APP % "fixed")
        server.wait_listening()
        assert get(server).body == b"fixed"


def test_reload_is_refused_with_preload():
    code, text = exit_of("--bind", "127.0.0.1:0", "--reload", "--preload")
    assert code == 2
    assert "--reload restarts the workers" in text
