import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import IMPLS, Server  # noqa: E402

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
