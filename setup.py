"""Build the compiled request loop; fall back to the pure-Python package when that is impossible.

The compiled loop is eleven extension modules: `fastcluster._parser` (from `_parser.pyx`, the
loop's I/O) and the compiled builds of the shared plain-Python sources `_settings.py`, `_server.py`,
`_exchange.py`, `_transport.py`, `_request.py`, `_dispatch.py`, `_asgi.py`, `_websocket.py`,
`_http.py` and `_h2.py`, as `_settings_c`, `_server_c`, ... and `_h2_c` (Cython's pure-Python mode, with the
C types in `_<name>_c.pxd`); a twelfth is its HTTP/2 engine where libnghttp2 is installed (below).
The pure-Python loop runs those same sources as they are. Cython takes a module's name from its
file, so each shared source is compiled from a copy named `_<name>_c.py`, written here at
build time (generated, like the .c files, and never committed).

HTTP/2: `fastcluster._nghttp2` (from `_nghttp2.pyx`, with libnghttp2's C API declared in
`_libnghttp2.pxd`) is the HTTP/2 engine of the compiled loop, linked with libnghttp2. It is built
only when libnghttp2's headers are found (nghttp2/nghttp2.h under /usr/include, /usr/local/include
or what `pkg-config --cflags libnghttp2` names; Debian: libnghttp2-dev). Without them, or when its
compile or link fails, the rest is built as before and HTTP/2 uses the pure-Python `h2` package
(fastcluster/h2engine.py), with one line on stderr that says so.

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
  FASTCLUSTER_NO_NGHTTP2=1      build the compiled loop without fastcluster._nghttp2 (HTTP/2 by `h2`)
"""

import os
import subprocess
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
            if ext.name == "fastcluster._nghttp2":   # the loop is whole without it
                sys.stderr.write("\n*** fastcluster: fastcluster._nghttp2 could not be built (%s); "
                                 "HTTP/2 will use the pure-Python h2 package\n\n" % exc)
                return
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


NGHTTP2_MISSING = ("*** fastcluster: libnghttp2's headers not found (Debian: apt-get install libnghttp2-dev); "
                   "HTTP/2 will use the pure-Python h2 package\n")


def _nghttp2():
    """(include_dirs, library_dirs) to build fastcluster._nghttp2 with, or None without libnghttp2's headers.
    The usual directories first (needing no flags), then pkg-config's."""
    for where in ("/usr/include", "/usr/local/include"):
        if os.path.exists(os.path.join(where, "nghttp2", "nghttp2.h")):
            return [], []
    flags = {}
    for option in ("--cflags-only-I", "--libs-only-L"):
        try:
            proc = subprocess.run(["pkg-config", option, "libnghttp2"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):     # no pkg-config
            return None
        if proc.returncode != 0:                            # pkg-config does not know libnghttp2
            return None
        flags[option] = [flag[2:] for flag in proc.stdout.split() if flag[:2] in ("-I", "-L")]
    for where in flags["--cflags-only-I"]:
        if os.path.exists(os.path.join(where, "nghttp2", "nghttp2.h")):
            return flags["--cflags-only-I"], flags["--libs-only-L"]
    return None


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
    found = None if _flag("FASTCLUSTER_NO_NGHTTP2") else _nghttp2()
    if found is not None:
        exts.append(Extension("fastcluster._nghttp2", ["fastcluster/_nghttp2.pyx"], define_macros=macros,
                              include_dirs=found[0], library_dirs=found[1], libraries=["nghttp2"],
                              extra_compile_args=["-O2"]))
    elif not _flag("FASTCLUSTER_NO_NGHTTP2"):
        sys.stderr.write(NGHTTP2_MISSING)
    try:
        return cythonize(exts, compiler_directives=directives, annotate=_flag("FASTCLUSTER_CYTHON_ANNOTATE"))
    except CompileError as exc:
        # not the pure-Python fallback: Cython's message above names the file and line to fix
        sys.exit("\n*** fastcluster: Cython failed on %s; its warnings are errors in this build "
                 "(see the message above).\n" % exc)


setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext, "build_py": build_py_without_copies})
