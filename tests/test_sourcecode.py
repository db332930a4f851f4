"""The source tree passes `ruff check`, with the rules and paths of pyproject.toml's [tool.ruff].

A test rather than a CI step, so that the README's test command lints too. Ruff comes with the test
extras (pip install -e ".[test]"); to see and fix the findings: `ruff check` at the top of the tree.
"""

import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff():
    assert importlib.util.find_spec("ruff"), 'ruff is not installed: pip install -e ".[test]"'
    # --no-cache: writes nothing into the tree; no paths: pyproject.toml's include and excludes decide
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "ruff check found:\n" + proc.stdout + proc.stderr
