"""Server hooks for the config-file tests: each appends "name pid slot ..." to $FC_HOOK_LOG."""

import os


def _log(*words):
    with open(os.environ["FC_HOOK_LOG"], "a") as f:
        f.write(" ".join(str(w) for w in words) + "\n")


def on_starting(master):
    _log("on_starting", os.getpid())


def when_ready(master):
    _log("when_ready", os.getpid(), master.pid)


def pre_fork(master, worker):
    _log("pre_fork", os.getpid(), worker.slot, worker.pid)


def post_fork(master, worker):
    _log("post_fork", os.getpid(), worker.slot, worker.pid, master.pid)


def post_worker_init(worker):
    _log("post_worker_init", os.getpid(), worker.slot, worker.pid)


def worker_exit(master, worker):
    _log("worker_exit", os.getpid(), worker.slot, worker.pid)


def child_exit(master, worker):
    _log("child_exit", os.getpid(), worker.slot, worker.pid, worker.exit_code)


def on_reload(master):
    _log("on_reload", os.getpid())


def on_exit(master):
    _log("on_exit", os.getpid())


def raises(*args):
    raise RuntimeError("boom from a hook")
