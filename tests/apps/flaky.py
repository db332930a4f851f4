"""Imports fine until the file named by FLAKY_MARKER exists; then every import raises."""

import os

if os.path.exists(os.environ.get("FLAKY_MARKER", "/nonexistent")):
    raise RuntimeError("flaky app: broken on purpose while the marker file exists")

from apps.suite import app  # noqa: E402,F401
