"""-c FILE: a Python config file (a gunicorn.conf.py) or a TOML one, and the server hooks either
names; real masters and workers, both loops."""

import os
import signal

import pytest

from helpers import TESTS, Server, exit_of, get, pid_alive, wait_until

pytestmark = pytest.mark.timeout(90)

HOOKS = ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init", "worker_exit", "child_exit",
         "on_reload", "on_exit")


def text_of(path):
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        return f.read()


def records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


def test_a_gunicorn_conf_py_starts_unchanged(impl, tmp_path):
    log, access = str(tmp_path / "hooks.log"), str(tmp_path / "access.log")
    conf = os.path.join(TESTS, "configs", "gunicorn.conf.py")
    with Server("-c", conf, "--loop", impl, env={"FC_HOOK_LOG": log, "FC_ACCESS_LOG": access}) as server:
        assert len(server.worker_pids) == 2                        # workers = 2
        forked = {int(pid): int(slot) for _name, pid, slot in records(log)}     # post_fork, in each worker
        assert sorted(forked) == sorted(server.worker_pids) and sorted(forked.values()) == [1, 2]
        assert get(server, "/environ").status == 200                # wsgi_app = "apps.suite:app", preloaded
        wait_until(lambda: "GET /environ" in text_of(access),
                   what="the access log line", server=server)
        text = server.stderr()
        assert "worker_class is a gunicorn setting fastcluster does not have" in text
        assert "the pre_request hook is gunicorn's and fastcluster does not call it" in text


def test_every_hook_runs_where_and_when_it_should(impl, tmp_path):
    log = str(tmp_path / "hooks.log")
    conf = tmp_path / "conf.py"
    conf.write_text("from apps.hookmod import %s\nworkers = 2\n" % ", ".join(HOOKS))
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--loop", impl, "-c", str(conf),
                    env={"FC_HOOK_LOG": log})
    try:
        master, first = server.master_pid, sorted(server.worker_pids)
        seen = records(log)
        assert seen[0] == ["on_starting", str(master)]
        assert [r for r in seen if r[0] == "pre_fork"] == [["pre_fork", str(master), "1", "None"],
                                                           ["pre_fork", str(master), "2", "None"]]
        for name in ("post_fork", "post_worker_init"):
            rows = [r for r in seen if r[0] == name]
            assert sorted(int(r[1]) for r in rows) == first           # in the worker itself
            assert all(r[1] == r[3] for r in rows)                     # worker.pid is its pid
        assert all(r[4] == str(master) for r in seen if r[0] == "post_fork")   # master.pid in the worker
        assert seen[-1] == ["when_ready", str(master), str(master)]     # before the listening line
        server.signal(signal.SIGHUP)                                   # on_reload, then a rolling restart
        wait_until(lambda: sum(1 for r in records(log) if r[0] == "child_exit") == 2, what="two child exits",
                   server=server)
        seen = records(log)
        assert ["on_reload", str(master)] in seen
        exits = [r for r in seen if r[0] == "child_exit"]
        assert sorted(int(r[3]) for r in exits) == first and all(r[4] == "0" for r in exits)
        assert sorted(int(r[1]) for r in seen if r[0] == "worker_exit") == first   # in each old worker
    finally:
        assert server.stop() == 0
    assert records(log)[-1] == ["on_exit", str(master)]


def test_a_hook_that_raises_before_the_worker_is_ready_is_a_boot_failure(impl, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("from apps.hookmod import raises as post_worker_init\n")
    code, text = exit_of("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                         "-c", str(conf), timeout=30)
    assert code == 4
    assert "the post_worker_init hook raised" in text and "RuntimeError: boom from a hook" in text


def test_a_master_hook_that_raises_is_logged_and_the_server_serves(impl, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("from apps.hookmod import raises as when_ready\nfrom apps.hookmod import raises as pre_fork\n")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", impl,
                "-c", str(conf)) as server:
        assert get(server, "/").status == 200
        text = server.stderr()
        assert "the when_ready hook raised" in text and "the pre_fork hook raised" in text
        assert "Traceback" in text and "boom from a hook" in text


def test_a_toml_file_names_hooks_as_module_function(impl, tmp_path):
    log = str(tmp_path / "hooks.log")
    conf = tmp_path / "conf.toml"
    conf.write_text('workers = 1\npost-fork = "apps.hookmod:post_fork"\nwhen_ready = "apps.hookmod:when_ready"\n')
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--loop", impl, "-c", str(conf),
                env={"FC_HOOK_LOG": log}) as server:
        names = [r[0] for r in records(log)]
        assert names == ["post_fork", "when_ready"]
        assert records(log)[0][1] == str(server.worker_pids[0])


@pytest.mark.parametrize("name, text, message", [
    ("c.toml", 'post_fork = "apps.hookmod:nope"\n', 'attribute "nope" not found in module "apps.hookmod"'),
    ("c.toml", 'post_fork = "apps.nomodule:fn"\n', 'could not import module "apps.nomodule"'),
    ("c.toml", 'post_fork = "not a target"\n', 'name a function as "module:function"'),
    ("c.py", "workers = 2\nworkers +\n", "c.py, line 2: invalid syntax"),
    ("c.py", "import os\nworkers = int(os.environ['NOPE'])\n", "c.py, line 2 raised KeyError: 'NOPE'"),
    ("c.py", "workers = 0\n", "workers='0': must be at least 1"),
    ("c.py", "post_fork = 3\n", "post_fork must be a function"),
])
def test_config_file_errors_are_one_line(tmp_path, name, text, message):
    conf = tmp_path / name
    conf.write_text(text)
    code, text = exit_of("--bind", "127.0.0.1:0", "-c", str(conf))
    assert code == 2
    assert message in text and "Traceback" not in text


def test_sighup_reads_a_python_config_again(impl, tmp_path):
    log = str(tmp_path / "hooks.log")
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\n")
    with Server("apps.suite:app", "--bind", "127.0.0.1:0", "--loop", impl, "-c", str(conf),
                env={"FC_HOOK_LOG": log}) as server:
        old = server.worker_pids[0]
        conf.write_text("from apps.hookmod import post_fork\nworkers = 2\n")
        server.signal(signal.SIGHUP)
        wait_until(lambda: len(records(log)) == 2, what="post_fork in two new workers", server=server)
        wait_until(lambda: not pid_alive(old), what="the old worker to go", server=server)
        assert sorted(int(r[3]) for r in records(log)) == sorted(int(r[1]) for r in records(log))
        conf.write_text("workers = \n")                              # a broken edit: the running settings stay
        server.signal(signal.SIGHUP)
        wait_until(lambda: "config reload failed" in server.stderr(), what="the error", server=server)
        assert get(server, "/").status == 200
