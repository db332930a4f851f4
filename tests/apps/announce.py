"""Says in which process it was imported (to show what --preload does)."""

import os
import sys

print("announce: imported in process %d" % os.getpid(), file=sys.stderr, flush=True)

from apps.suite import app  # noqa: E402,F401
