"""An app that imports a module that does not exist: its traceback must be shown, not hidden."""

import fastcluster_no_such_dependency  # noqa: F401

app = None
