"""--reload: notice edits to the app's source files, for the master to restart its workers.

What is watched: the --reload-dir directories (default: the app's top-level package or module
directory, found without importing it, and the current directory), files matching a
--reload-include glob (default `*.py`), skipping hidden directories, `__pycache__`,
`node_modules` and installed packages.

Two ways to notice, one interface (`fds()`, `deadline()`, `check(now)`): with `watchfiles`
installed (`pip install 'fastcluster[reload]'`), its inotify watch runs on a thread that only writes
the changed paths to a socket the master's loop selects on; without it, the master's loop stats
the files every POLL_INTERVAL seconds.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import threading
from importlib.machinery import PathFinder

log = logging.getLogger("fastcluster")

POLL_INTERVAL = 0.5           # seconds between two scans without watchfiles
DEBOUNCE_MS = 150             # watchfiles: changes this close together are one reload
SKIPPED_DIRS = ("__pycache__", "node_modules", "site-packages", "dist-packages")
DEFAULT_INCLUDES = ("*.py",)


def watched_dirs(config, cwd=None) -> list:
    """The directories --reload watches: --reload-dir, else the app's and the current one."""
    cwd = os.path.abspath(cwd or os.getcwd())
    if config.reload_dir:
        dirs = [os.path.abspath(d) for d in config.reload_dir]
    else:
        dirs = [cwd]
        where = app_dir(config.app) if config.app else None
        if where is not None:
            dirs.append(where)
    unique = []
    for d in sorted(set(dirs), key=len):        # a directory inside another one is watched already
        if not any(d == u or d.startswith(u.rstrip(os.sep) + os.sep) for u in unique):
            unique.append(d)
    return unique


def app_dir(app: str):
    """The directory of the app's top-level package (or module), found without importing it."""
    top = app.partition(":")[0].split(".")[0]
    try:
        spec = PathFinder.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return os.path.abspath(list(spec.submodule_search_locations)[0])
    if spec.origin and os.path.isfile(spec.origin):
        return os.path.dirname(os.path.abspath(spec.origin))
    return None


class _Filter:
    def __init__(self, dirs, includes, extra=()):
        self.roots = [d.rstrip(os.sep) + os.sep for d in dirs]
        self.includes = tuple(includes) or DEFAULT_INCLUDES
        self.extra = {os.path.abspath(p) for p in extra}   # files watched whatever their name

    def skip_dir(self, name: str) -> bool:
        return name.startswith(".") or name in SKIPPED_DIRS

    def wanted(self, path: str) -> bool:
        if path in self.extra:
            return True
        for root in self.roots:
            if path.startswith(root):
                parts = path[len(root):].split(os.sep)
                break
        else:
            return False
        if any(self.skip_dir(part) for part in parts[:-1]):
            return False
        return any(fnmatch.fnmatch(parts[-1], pattern) for pattern in self.includes)


class Poller:
    """Stats every watched file each POLL_INTERVAL seconds."""

    kind = "polling"

    def __init__(self, dirs, includes, extra=(), now=0.0):
        self.dirs = dirs
        self.filter = _Filter(dirs, includes, extra)
        self.next_scan = now + POLL_INTERVAL
        self.seen = self._scan()

    def _scan(self) -> dict:
        seen = {}
        for path in self.filter.extra:
            self._stat(path, seen)
        for top in self.dirs:
            for root, dirnames, files in os.walk(top):
                dirnames[:] = [d for d in dirnames if not self.filter.skip_dir(d)]
                for name in files:
                    path = os.path.join(root, name)
                    if self.filter.wanted(path):
                        self._stat(path, seen)
        return seen

    @staticmethod
    def _stat(path, seen):
        try:
            st = os.stat(path)
        except OSError:
            return
        seen[path] = (st.st_mtime_ns, st.st_size, st.st_ino)

    def fds(self):
        return ()

    def deadline(self) -> float:
        return self.next_scan

    def check(self, now) -> list:
        """The paths added, changed or removed since the last scan (none before it is due)."""
        if now < self.next_scan:
            return []
        self.next_scan = now + POLL_INTERVAL
        seen = self._scan()
        changed = [p for p, stamp in seen.items() if self.seen.get(p) != stamp]
        changed.extend(p for p in self.seen if p not in seen)
        self.seen = seen
        return sorted(changed)

    def close(self):
        pass


class Notifier:
    """watchfiles on a thread; the thread does nothing but write what changed to a socket (no
    locks that a fork could leave held, no logging), which the master's loop reads."""

    kind = "watchfiles"

    def __init__(self, dirs, includes, extra=()):
        import watchfiles

        logging.getLogger("watchfiles").setLevel(logging.WARNING)   # (its "1 change detected" lines)
        self.filter = _Filter(dirs, includes, extra)
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.stop_event = threading.Event()
        self.inbox = b""
        roots = list(dirs) + [p for p in self.filter.extra if not any(p.startswith(d + os.sep) for d in dirs)]
        self.thread = threading.Thread(target=self._watch, args=(watchfiles, roots), daemon=True,
                                       name="fastcluster-reload")
        self.thread.start()

    def _watch(self, watchfiles, roots):
        try:
            for changes in watchfiles.watch(*roots, watch_filter=lambda _change, path: self.filter.wanted(path),
                                            debounce=DEBOUNCE_MS, step=50, stop_event=self.stop_event,
                                            raise_interrupt=False):
                self.writer.sendall("".join(path + "\n" for _change, path in changes).encode("utf-8", "replace"))
        except Exception as exc:    # the master reads this as a line of its own
            try:
                self.writer.sendall(("\0%s: %s\n" % (type(exc).__name__, exc)).encode("utf-8", "replace"))
            except OSError:
                pass

    def fds(self):
        return (self.reader.fileno(), self.writer.fileno())

    def deadline(self) -> float:
        return float("inf")

    def check(self, now) -> list:
        try:
            while True:
                data = self.reader.recv(65536)
                if not data:
                    break
                self.inbox += data
        except (BlockingIOError, InterruptedError):
            pass
        lines = self.inbox.split(b"\n")
        self.inbox = lines.pop()
        changed = set()
        for line in lines:
            text = line.decode("utf-8", "replace")
            if text.startswith("\0"):
                log.error("reload: watchfiles stopped (%s); edits are no longer noticed", text[1:])
            elif text:
                changed.add(text)
        return sorted(changed)

    def close(self):
        self.stop_event.set()
        self.thread.join(timeout=2.0)
        self.reader.close()
        self.writer.close()


def start(config, now, extra=()):
    """The watcher for `config` (watchfiles when installed, else polling)."""
    dirs = watched_dirs(config)
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return Poller(dirs, config.reload_include, extra, now)
    return Notifier(dirs, config.reload_include, extra)
