"""Process titles, so that `ps` and `top` tell the master and each worker apart.

With the optional setproctitle package (`pip install ".[proctitle]"`) the whole
command line shown by `ps` becomes the title. Without it, only the kernel's
15-byte process name changes (`ps -o comm`, `top`), through prctl(PR_SET_NAME).
"""

from __future__ import annotations

import ctypes

try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:   # the optional extra is not installed
    _setproctitle = None

PR_SET_NAME = 15
_libc = None


def set_title(title: str, name: str) -> None:
    """`title` for the command line (with setproctitle), `name` (at most 15 bytes kept) for the kernel."""
    global _libc
    if _setproctitle is not None:
        _setproctitle(title)
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)   # dlopen(NULL): libc is already loaded
        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):   # pragma: no cover - not Linux
        pass


def full_titles() -> bool:
    return _setproctitle is not None
