"""An app whose import fails: the master must stop, showing this traceback once."""

raise RuntimeError("this app is broken at import time")
