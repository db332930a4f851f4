"""Process titles, so that `ps` and `top` tell the master and each worker apart.

With the optional setproctitle package (`pip install ".[proctitle]"`) the whole
command line shown by `ps` becomes the title. Without it, only the kernel's
15-byte process name changes (`ps -o comm`, `top`), through /proc/self/comm (what
prctl(PR_SET_NAME) sets, without loading ctypes into every process).
"""

from __future__ import annotations

try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:   # the optional extra is not installed
    _setproctitle = None


def set_title(title: str, name: str) -> None:
    """`title` for the command line (with setproctitle), `name` (at most 15 bytes kept) for the kernel."""
    if _setproctitle is not None:
        _setproctitle(title)
    try:
        # the thread group's leader: the main thread, whichever thread calls this
        with open("/proc/self/comm", "wb", buffering=0) as comm:
            comm.write(name.encode()[:15])
    except OSError:   # pragma: no cover - not Linux
        pass


def full_titles() -> bool:
    return _setproctitle is not None
