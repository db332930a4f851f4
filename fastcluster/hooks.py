"""Server hooks: functions a config file names, called at fixed points of the master's and the
workers' lives (the names and arguments of gunicorn's, so a gunicorn.conf.py's hooks run as they are).

In the master: on_starting(master) before anything is bound or preloaded, when_ready(master) once
every worker is ready (the "listening" line), pre_fork(master, worker) before each fork (the worker
has no pid yet), child_exit(master, worker) after a worker exited (`worker.exit_code` says how),
on_reload(master) on SIGHUP or a --reload change, before the rolling restart, and on_exit(master)
as the master returns. In each worker: post_fork(master, worker) right after the fork (before the
app is imported: where a --preload app's database connections are reset), post_worker_init(worker)
once the app is loaded, worker_exit(master, worker) as the worker ends. `master` is the Master
itself (in a worker, the copy the fork made of it); `worker` a `WorkerInfo`.

A hook that raises is logged with its traceback and the process goes on, except in a worker that is
not ready yet: that is a boot failure, as an app that fails to import is.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from .record import Record

log = logging.getLogger("fastcluster")

MASTER_HOOKS = ("on_starting", "when_ready", "pre_fork", "child_exit", "on_reload", "on_exit")
WORKER_HOOKS = ("post_fork", "post_worker_init", "worker_exit")
NAMES = MASTER_HOOKS + WORKER_HOOKS
# gunicorn hooks fastcluster does not call: defined in a config file, each is a warning
UNSUPPORTED = ("pre_exec", "pre_request", "post_request", "worker_int", "worker_abort", "nworkers_changed",
               "ssl_context")


class WorkerInfo(Record):
    """What a hook is told of a worker."""

    slot: int                          # 1..N, as `fastcluster status` numbers them
    pid: Optional[int] = None          # None in pre_fork (not forked yet)
    generation: int = 1                # the master's generation (+1 per rolling restart) it was started in
    exit_code: Optional[int] = None    # child_exit: its exit code, or minus the signal that killed it
    age: float = 0.0                   # child_exit: seconds it lived


def call(hooks, name, *args) -> bool:
    """Run hook `name` if the config defines it; False when it raised (logged with its traceback)."""
    hook = hooks.get(name) if hooks else None
    if hook is None:
        return True
    try:
        hook(*args)
    except Exception:
        log.exception("the %s hook raised (in pid %d)", name, os.getpid())
        return False
    return True
