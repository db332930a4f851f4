"""Exceptions and the exit-code protocol shared by the master and its workers.

A worker that cannot start tells the master why through its exit code, so the
master can stop instead of respawning a worker that will only fail again.
"""

EXIT_OK = 0
EXIT_USAGE = 2            # bad option, bad APP string, missing module/attribute, address in use
EXIT_BOOT_ERROR = 3       # the worker itself failed to start (not the app's fault)
EXIT_APP_LOAD_ERROR = 4   # importing the app raised; its traceback was printed once

BOOT_EXIT_CODES = (EXIT_USAGE, EXIT_BOOT_ERROR, EXIT_APP_LOAD_ERROR)


class FastclusterError(Exception):
    """Base class of fastcluster's own errors."""


class ConfigError(FastclusterError):
    """A bad option or environment value; shown as one line, exit code 2."""


class AppImportError(FastclusterError):
    """The APP string is malformed or names a module/attribute that does not exist."""


class Demoted(Exception):
    """Not an error: raised in a worker thread whose app call returned after another thread took
    the loop over; it unwinds the loop's code on that thread, which then waits as a spare."""


class ClientDisconnected(OSError):
    """An ASGI app's send() on a WebSocket that is closed (the ASGI spec asks for an OSError)."""
