"""fastcluster: Node's cluster model for Python WSGI apps, with a compiled request loop.

Importing this package is cheap: it never imports the compiled extension, which
only the worker processes load.
"""

__version__ = "0.1.0"

from .config import Config  # noqa: E402

__all__ = ["Config", "__version__", "serve"]


def serve(config: Config) -> int:
    """Run a master with `config` until it stops; returns the exit code."""
    from .master import Master

    return Master(config).run()
