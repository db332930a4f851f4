"""Build the compiled request loop; fall back to the pure-Python package when that is impossible.

Knobs (environment variables at build time):
  FASTCLUSTER_NO_EXTENSIONS=1   build no extension: the package runs the pure-Python loop
  FASTCLUSTER_CYTHON_ANNOTATE=1 also write fastcluster/_parser.html (cython -a)
  FASTCLUSTER_DEBUG=1           linetrace + CYTHON_TRACE, for profilers and coverage
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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


def extensions():
    if _flag("FASTCLUSTER_NO_EXTENSIONS") or sys.implementation.name != "cpython":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("*** fastcluster: Cython is not installed; building the pure-Python loop only.\n")
        return []
    debug = _flag("FASTCLUSTER_DEBUG")
    directives = {"language_level": 3, "embedsignature": True}
    macros = []
    if debug:
        directives.update(linetrace=True, profile=True)
        macros.append(("CYTHON_TRACE", "1"))
    ext = Extension("fastcluster._parser", ["fastcluster/_parser.pyx"], define_macros=macros,
                    extra_compile_args=["-O2"])
    return cythonize([ext], compiler_directives=directives, annotate=_flag("FASTCLUSTER_CYTHON_ANNOTATE"))


setup(ext_modules=extensions(), cmdclass={"build_ext": optional_build_ext})
