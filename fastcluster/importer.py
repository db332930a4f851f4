"""Resolve "package.module:attribute" to the app (a WSGI or ASGI callable), and tell which it is.

A malformed string, a module that does not exist and a missing attribute raise
AppImportError with one precise line.  An exception raised while the module
itself runs is the app's bug and propagates with its traceback.
"""

from __future__ import annotations

import importlib
import functools
import re
import sys
import traceback
import types
from typing import Any

from .errors import EXIT_APP_LOAD_ERROR, EXIT_USAGE, AppImportError

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_APP_RE = re.compile(r"^%s:%s$" % (_DOTTED, _DOTTED))


def is_target(text: str) -> bool:
    """True for "module:attribute" (dotted names on both sides)."""
    return bool(_APP_RE.match(text))


def check_app_string(app: str) -> None:
    if not is_target(app):
        raise AppImportError(
            'APP %r must be in format "<module>:<attribute>", as in "myproject.wsgi:application"' % app
        )


def import_object(target: str, what: str = "APP"):
    """The callable "module:attribute" names; AppImportError for a missing module or attribute."""
    module_name, _, attrs = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a miss of the named module (or one of its parents) is the user's typo;
        # a missing import inside the app is the app's bug and keeps its traceback.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        raise AppImportError('could not import module "%s" for %s %r' % (module_name, what, target)) from None
    obj = module
    try:
        for attr in attrs.split("."):
            obj = getattr(obj, attr)
    except AttributeError:
        raise AppImportError('attribute "%s" not found in module "%s"' % (attrs, module_name)) from None
    if not callable(obj):
        raise AppImportError('%s %r is a %s, not a %s' % (
            what, target, type(obj).__name__, "WSGI callable" if what == "APP" else "function"))
    return obj


def import_app(app: str):
    check_app_string(app)
    return import_object(app)


def load_app(config):
    """The app `config` names (the demo app when none), or an exit code: EXIT_USAGE for a bad APP
    (one line printed), EXIT_APP_LOAD_ERROR for an app that raised while imported (traceback
    printed). Used by each worker after the fork, and by the master for --preload."""
    from . import demo

    try:
        return demo.make_app(config.demo_work_ms) if config.app is None else import_app(config.app)
    except AppImportError as exc:
        print("fastcluster: error: %s" % exc, file=sys.stderr, flush=True)
        return EXIT_USAGE
    except BaseException:
        print("fastcluster: error: the app %s raised while it was imported:" % config.app, file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        return EXIT_APP_LOAD_ERROR


def is_asgi(app: Any) -> bool:
    """An ASGI 3 app: a coroutine function, or an object whose __call__ is one."""
    if _coroutine_function(app):
        return True
    call = getattr(app, "__call__", None)
    return call is not None and not isinstance(app, type) and _coroutine_function(call)


def _coroutine_function(obj: Any) -> bool:
    """inspect.iscoroutinefunction, without importing inspect (with ast, dis and tokenize, 1 MiB
    in every worker) for a WSGI app: an app that imported inspect gets its answer (which also
    knows inspect.markcoroutinefunction); otherwise `async def` is told by its code's flag."""
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        return inspect.iscoroutinefunction(obj)
    while True:
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            obj = obj.func
        else:
            break
    flags = getattr(getattr(obj, "__code__", None), "co_flags", 0)
    return callable(obj) and isinstance(flags, int) and bool(flags & 0x80)   # 0x80: CO_COROUTINE


def interface_of(app: Any, choice: str) -> str:
    """'asgi' or 'wsgi': what --interface says, or (auto) what the app is."""
    if choice != "auto":
        return choice
    return "asgi" if is_asgi(app) else "wsgi"
