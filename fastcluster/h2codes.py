"""HTTP/2's error codes (RFC 9113 section 7) and the client preface, for both engines (_nghttp2.pyx,
h2engine.py, which re-export them), and which engine a build runs (`engine_class`, `engine_name`).
Nothing here imports the h2 package: a compiled worker with libnghttp2, and the master, never load it."""

NO_ERROR = 0
PROTOCOL_ERROR = 1
INTERNAL_ERROR = 2
FLOW_CONTROL_ERROR = 3
SETTINGS_TIMEOUT = 4
STREAM_CLOSED = 5
FRAME_SIZE_ERROR = 6
REFUSED_STREAM = 7
CANCEL = 8
COMPRESSION_ERROR = 9
CONNECT_ERROR = 10
ENHANCE_YOUR_CALM = 11
INADEQUATE_SECURITY = 12
HTTP_1_1_REQUIRED = 13
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"    # a client's first bytes (RFC 9113 3.4)


def engine_class(prefer_native=True):
    """The engine class of this build: libnghttp2's (`fastcluster._nghttp2.Engine`) when it was compiled
    and `prefer_native`, else the h2 package's (`h2engine.H2Engine`). ImportError when neither can run."""
    if prefer_native:
        try:
            from ._nghttp2 import Engine
        except ImportError:
            pass
        else:
            return Engine
    from . import h2engine
    h2engine.check_available()
    return h2engine.H2Engine


def engine_name(prefer_native=True):
    """What serves HTTP/2 in this build, for the start line: libnghttp2 (and its version) or h2 (its
    version read from its metadata, not by importing it)."""
    if prefer_native:
        try:
            from ._nghttp2 import Engine
        except ImportError:
            pass
        else:
            return "libnghttp2 %s" % Engine.library_version()
    from importlib.metadata import PackageNotFoundError, version
    try:
        return "the h2 package %s (pure Python)" % version("h2")
    except PackageNotFoundError:
        return "nothing: neither libnghttp2 was built in nor is the h2 package installed"
