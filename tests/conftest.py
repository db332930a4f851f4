import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Server  # noqa: E402

NO_EXTENSIONS = bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS"))
HAS_EXTENSION = importlib.util.find_spec("fastcluster._parser") is not None

# Every server test runs on both loops.  Without the extension the cython cases are
# skipped only where FASTCLUSTER_NO_EXTENSIONS says so; otherwise they fail (and the
# guard test in test_extension.py says why).
IMPLS = [
    pytest.param("cython", id="cython",
                 marks=pytest.mark.skipif(NO_EXTENSIONS and not HAS_EXTENSION,
                                          reason="built with FASTCLUSTER_NO_EXTENSIONS")),
    pytest.param("python", id="python"),
]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


@pytest.fixture(scope="module", params=IMPLS)
def suite_server(request):
    """Two workers serving tests/apps/suite.py, shared by a module's tests, per loop."""
    server = Server("apps.suite:app", "--bind", "127.0.0.1:0", "--workers", "2", "--loop", request.param,
                    "--keep-alive", "30")
    server.impl = request.param
    yield server
    server.stop()
