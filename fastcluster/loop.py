"""Choose the request loop: the compiled `_parser` or its pure-Python twin `_parser_py`.

Both modules export the same names.  The master only asks `resolve()` which one
a worker will run (by looking for the module, never importing the extension);
the worker imports it with `load()`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .errors import ConfigError

LOOPS = {"cython": "fastcluster._parser", "python": "fastcluster._parser_py"}

NO_EXTENSIONS = bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS")) or sys.implementation.name != "cpython"


def has_extension() -> bool:
    return importlib.util.find_spec(LOOPS["cython"]) is not None


def resolve(name: str) -> str:
    """Map auto|cython|python to the loop a worker will run, or raise ConfigError."""
    if name == "auto":
        return "cython" if not NO_EXTENSIONS and has_extension() else "python"
    if name == "cython" and not has_extension():
        raise ConfigError(
            "--loop cython: the compiled loop was not built (reinstall with a C compiler and "
            "without FASTCLUSTER_NO_EXTENSIONS, or use --loop python)"
        )
    if name not in LOOPS:
        raise ConfigError("unknown loop %r" % name)
    return name


def load(name: str):
    return importlib.import_module(LOOPS[resolve(name)])
