"""Guard: the compiled loop must have been built, unless the build was asked not to."""

import importlib
import os

import pytest

from fastcluster import loop


@pytest.mark.skipif(bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS")),
                    reason="FASTCLUSTER_NO_EXTENSIONS: the pure-Python build is intended")
def test_compiled_loop_was_built():
    module = importlib.import_module("fastcluster._parser")
    assert module.IMPLEMENTATION == "cython"
    assert module.__file__.endswith((".so", ".pyd")), module.__file__
    assert loop.resolve("auto") == "cython"


def test_both_loops_export_the_same_names():
    python = importlib.import_module("fastcluster._parser_py")
    assert python.IMPLEMENTATION == "python"
    if not loop.has_extension():
        pytest.skip("no compiled loop to compare with")
    compiled = importlib.import_module("fastcluster._parser")
    for name in ("Server", "Connection", "Request", "IMPLEMENTATION"):
        assert hasattr(python, name) and hasattr(compiled, name), name


def test_master_side_never_imports_the_extension():
    import subprocess
    import sys

    code = ("import sys, fastcluster.cli, fastcluster.master, fastcluster.config, fastcluster.loop;"
            "fastcluster.loop.resolve('auto');"
            "print('fastcluster._parser' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out
