"""The suite app, slow to import while the file named by $SLOWSTART_MARKER exists (a rollout to watch)."""
import os
import time

from apps.suite import app  # noqa: F401

_marker = os.environ.get("SLOWSTART_MARKER")
if _marker and os.path.exists(_marker):
    with open(_marker) as f:
        seconds = float(f.read() or "3")
    with open(_marker + ".sleeping", "w"):      # (the test waits for this, not for a time)
        pass
    time.sleep(seconds)
