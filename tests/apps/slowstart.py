"""The suite app, slow to import while the file named by $SLOWSTART_MARKER exists (a rollout to watch)."""
import os
import time

from apps.suite import app  # noqa: F401

_marker = os.environ.get("SLOWSTART_MARKER")
if _marker and os.path.exists(_marker):
    time.sleep(float(open(_marker).read() or "3"))
