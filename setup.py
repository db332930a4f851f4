"""Build the compiled request loop; fall back to the pure-Python package when that is impossible.

The compiled loop is nine extension modules: `fastcluster._parser` (from `_parser.pyx`, the
loop's I/O) and the compiled builds of the shared plain-Python sources `_server.py`,
`_exchange.py`, `_transport.py`, `_request.py`, `_dispatch.py`, `_asgi.py`, `_websocket.py` and
`_http.py`, as `_server_c`, `_exchange_c`, ... and `_http_c` (Cython's pure-Python mode, with the
C types in `_<name>_c.pxd`). The pure-Python loop runs those same sources as they are. Cython takes
a module's name from its file, so each is compiled from a copy named `_<name>_c.py`, written here at
build time (generated, like the .c files, and never committed).

What fails and what falls back:
  - Cython's own warnings are errors (Cython's -Werror, `Options.warning_errors`): a warning stops the
    build with Cython's message and its source line, so a developer sees it and fixes it. A .pyx
    that Cython rejects is a bug in this tree, never a reason to ship the slower loop. (Performance
    hints, "performance hint: ...", are not warnings and do not fail it.)
  - The C compile is allowed to fail: no compiler, no Python headers, a failing `CC`. Then
    optional_build_ext installs the pure-Python package with a loud message on stderr, and
    `fastcluster serve` says which loop runs. The C compiler's own warnings are shown, not errors
    (they depend on the compiler and its version, which the user picks, not this tree).
  - No Cython at all (or FASTCLUSTER_NO_EXTENSIONS=1, or not CPython): the pure-Python package.

Knobs (environment variables at build time):
  FASTCLUSTER_NO_EXTENSIONS=1   build no extension: the package runs the pure-Python loop
  FASTCLUSTER_CYTHON_ANNOTATE=1 also write fastcluster/*.html (cython -a)
  FASTCLUSTER_DEBUG=1           linetrace + CYTHON_TRACE, for profilers and coverage
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


class optional_build_ext(build_ext):
    """A failed compile leaves a working pure-Python package, and says so loudly."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers, ...
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    def _warn(self, exc):
        sys.stderr.write(
            "\n*** fastcluster: the compiled loop could not be built (%s).\n"
            "*** Installing the pure-Python loop only; `fastcluster serve` will say so.\n\n" % exc
        )


# the plain-Python sources compiled as <name>_c too
SHARED = ("_settings", "_server", "_exchange", "_transport", "_request", "_dispatch", "_asgi", "_websocket", "_http",
          "_h2")


def _shared_copy(name):
    """fastcluster/<name>_c.py, the same bytes as <name>.py (so compiled line numbers match)."""
    source, copy = "fastcluster/%s.py" % name, "fastcluster/%s_c.py" % name
    with open(source, "rb") as f:
        data = f.read()
    try:
        with open(copy, "rb") as f:
            if f.read() == data:
                return copy
    except FileNotFoundError:
        pass
    with open(copy, "wb") as f:
        f.write(data)
    return copy


class build_py_without_copies(build_py):
    """The `_<name>_c.py` copies are only Cython's input: never installed as modules."""

    def find_package_modules(self, package, package_dir):
        return [entry for entry in super().find_package_modules(package, package_dir)
                if not (entry[1].startswith("_") and entry[1][:-2] in SHARED and entry[1].endswith("_c"))]


def extensions():
    if _flag("FASTCLUSTER_NO_EXTENSIONS") or sys.implementation.name != "cpython":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("*** fastcluster: Cython is not installed; building the pure-Python loop only.\n")
        return []
    from Cython.Compiler import Options
    from Cython.Compiler.Errors import CompileError
    Options.warning_errors = True   # cython -Werror: a warning is reported as an error and fails the build
    debug = _flag("FASTCLUSTER_DEBUG")
    directives = {"language_level": 3, "embedsignature": True}
    macros = []
    if debug:
        directives.update(linetrace=True, profile=True)
        macros.append(("CYTHON_TRACE", "1"))
    exts = [Extension("fastcluster.%s_c" % name, [_shared_copy(name)], define_macros=macros,
                      extra_compile_args=["-O2"]) for name in SHARED]
    exts.append(Extension("fastcluster._parser", ["fastcluster/_parser.pyx"], define_macros=macros,
                          extra_compile_args=["-O2"]))
    try:
        return cythonize(exts, compiler_directives=directives, annotate=_flag("FASTCLUSTER_CYTHON_ANNOTATE"))
    except CompileError as exc:
        # not the pure-Python fallback: Cython's message above names the file and line to fix
        sys.exit("\n*** fastcluster: Cython failed on %s; its warnings are errors in this build "
                 "(see the message above).\n" % exc)


setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext, "build_py": build_py_without_copies})
