"""Guards: the compiled loop must have been built (unless the build was asked not to), and its two
builds expose one API: the same names, the same public methods with the same signatures, the same
sizes."""

import ast
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys

import pytest

from fastcluster import loop

# compiled module -> the plain-Python module with the same API
BUILDS = {
    "fastcluster._parser": "fastcluster._parser_py",      # the loops: two sources, one API
    "fastcluster._server_c": "fastcluster._server",       # the shared sources: one source, two builds
    "fastcluster._exchange_c": "fastcluster._exchange",
    "fastcluster._asgi_c": "fastcluster._asgi",
    "fastcluster._websocket_c": "fastcluster._websocket",
    "fastcluster._transport_c": "fastcluster._transport",
    "fastcluster._request_c": "fastcluster._request",
    "fastcluster._dispatch_c": "fastcluster._dispatch",
    "fastcluster._http_c": "fastcluster._http",
    "fastcluster._h2_c": "fastcluster._h2",
}
ONLY_COMPILED = {"fastcluster._parser": {"AccessWriter", "use_parser"}}   # the C access-log renderer (logs.py
# renders otherwise); the choice between driving llhttp directly and httptools' callbacks (_llhttp.pxi)
COMPILED = pytest.mark.skipif(not loop.has_extension(), reason="no compiled loop to compare with")


@pytest.mark.skipif(bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS")),
                    reason="FASTCLUSTER_NO_EXTENSIONS: the pure-Python build is intended")
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_compiled_loop_was_built(name):
    module = importlib.import_module(name)
    assert module.__file__.endswith((".so", ".pyd")), module.__file__
    assert loop.resolve("auto") == "cython"
    assert importlib.import_module("fastcluster._parser").IMPLEMENTATION == "cython"


@pytest.mark.skipif(bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS")),
                    reason="FASTCLUSTER_NO_EXTENSIONS: the pure-Python build is intended")
@pytest.mark.skipif(not os.path.exists("/usr/include/nghttp2/nghttp2.h") and not os.environ.get("CI"),
                    reason="libnghttp2's headers are not installed: HTTP/2 runs on h2 (CI installs them)")
def test_compiled_http2_engine_was_built():
    """Where libnghttp2's headers are (and always in CI, which installs them), the compiled loop's
    HTTP/2 runs on libnghttp2: a build that fell back to the h2 package quietly fails here."""
    from fastcluster import h2codes

    engine = importlib.import_module("fastcluster._nghttp2")
    assert engine.__file__.endswith(".so"), engine.__file__
    assert h2codes.engine_class(True) is engine.Engine
    assert h2codes.engine_name(True).startswith("libnghttp2 1.")


@pytest.mark.skipif(bool(os.environ.get("FASTCLUSTER_NO_EXTENSIONS")) or importlib.util.find_spec(
    "fastcluster._nghttp2") is None, reason="no libnghttp2 engine in this build: HTTP/2 runs on h2")
def test_a_compiled_worker_and_the_master_never_load_the_h2_package():
    """libnghttp2 serves the compiled loop's HTTP/2: importing the HTTP/2 layer and asking which
    engine runs (as the master does for its start line) loads no module of the h2 package."""
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from fastcluster import h2codes, _h2; h2codes.engine_name(True); h2codes.engine_class(True);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('h2', 'hpack', 'hyperframe')))")],
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _defined(module):
    """The classes and functions a module defines itself (not what it imports)."""
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isroutine(value))
            and getattr(value, "__module__", None) == module.__name__}


def _public_methods(cls):
    return {name: getattr(cls, name) for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))}


@COMPILED
@pytest.mark.parametrize("compiled_name", sorted(BUILDS))
def test_both_builds_expose_the_same_api(compiled_name):
    compiled = importlib.import_module(compiled_name)
    pure = importlib.import_module(BUILDS[compiled_name])
    ours, theirs = _defined(compiled), _defined(pure)
    assert set(ours) - ONLY_COMPILED.get(compiled_name, set()) == set(theirs)
    for name, obj in theirs.items():
        if inspect.isclass(obj):
            methods, twins = _public_methods(ours[name]), _public_methods(obj)
            assert set(methods) == set(twins), name
            for method, func in twins.items():
                assert inspect.signature(methods[method]) == inspect.signature(func), "%s.%s" % (name, method)
        else:
            assert inspect.signature(ours[name]) == inspect.signature(obj), name
    assert getattr(compiled, "SIZES", None) == getattr(pure, "SIZES", None)


def test_the_twin_states_the_loops_sizes():
    python = importlib.import_module("fastcluster._parser_py")
    assert python.IMPLEMENTATION == "python"
    assert set(python.SIZES) == {"RECV_SIZE", "MAX_IOV", "ACCEPT_BATCH", "MAX_EVENTS", "SENDFILE_CHUNK"}


def test_master_side_never_imports_the_extension():
    import subprocess
    import sys

    code = ("import sys, fastcluster.cli, fastcluster.master, fastcluster.config, fastcluster.loop;"
            "fastcluster.loop.resolve('auto');"
            "print(sorted(m for m in sys.modules if m.startswith('fastcluster._')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    assert out.stdout.strip() == "[]", out


def test_the_stub_types_what_the_compiled_loop_exports():
    """fastcluster/_parser.pyi: every class and public method it names exists, and every public
    class and method of the twin is in it."""
    import ast

    path = os.path.join(os.path.dirname(loop.__file__), "_parser.pyi")
    with open(path) as f:
        tree = ast.parse(f.read())
    stub = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):     # its own methods, and those of the stub's classes it subclasses
            stub[node.name] = {item.name for item in node.body if isinstance(item, ast.FunctionDef)
                               and not item.name.startswith("_")}
            for base in node.bases:
                stub[node.name] |= stub.get(getattr(base, "id", None), set())
        elif isinstance(node, ast.FunctionDef):
            stub[node.name] = set()
    python = importlib.import_module("fastcluster._parser_py")
    for name, cls in _defined(python).items():
        assert stub.get(name) == set(_public_methods(cls)), name
    if loop.has_extension():
        compiled = importlib.import_module("fastcluster._parser")
        assert set(stub) == set(_defined(compiled))


# what a WSGI worker must not load, and why: asyncio (~9 MiB) and websockets (~4 MiB) come with an
# ASGI worker or a first WebSocket handshake, ssl with --certfile, watchfiles with --reload; the rest
# were the imports of a helper or two each (RSS of a worker, issue 14): hashlib loads libcrypto (3 MiB,
# for the handshake's SHA-1), email (2 MiB, for the Date header), tempfile with shutil, bz2 and lzma
# (1 MiB, for a spilled body; argparse imports shutil too unless told the terminal's width),
# datetime, ctypes, base64, random and http's status enum; dataclasses with inspect, ast and dis
# (1 MiB, for a dozen plain records: record.py); urllib.parse with ipaddress (0.3 MiB, for
# percent-decoding a path); json (0.1 MiB: --log-format json and the --pid status file only).
# The loop's ASGI and WebSocket modules (two extension modules in the compiled build, and the
# handshake's binascii and _sha1) come with an ASGI worker's first connection.
NOT_IN_A_WSGI_WORKER = ("asyncio", "websockets", "ssl", "watchfiles", "hashlib", "_hashlib", "email", "tempfile",
                        "shutil", "datetime", "ctypes", "base64", "random", "http", "dataclasses", "inspect", "ast",
                        "dis", "urllib.parse", "ipaddress", "json", "fastcluster._asgi", "fastcluster._asgi_c",
                        "fastcluster._websocket", "fastcluster._websocket_c", "binascii", "_sha1")


@pytest.mark.parametrize("impl", ["cython", "python"])
def test_a_wsgi_worker_loads_none_of_the_heavy_modules(impl):
    """The master (whose modules every forked worker carries, its command line parsed), a loop,
    the worker module and a WSGI app answering a request load none of NOT_IN_A_WSGI_WORKER (the
    pure loop: ctypes, for prctl)."""
    import subprocess
    import sys

    if impl == "cython" and not loop.has_extension():
        pytest.skip("the compiled loop is not built")
    heavy = tuple(m for m in NOT_IN_A_WSGI_WORKER if not (impl == "python" and m == "ctypes"))
    # (what the interpreter loaded before, an editable install's finder loads urllib.parse, is not ours)
    code = ("import sys\nbefore = set(sys.modules)\n"
            "import fastcluster.cli, fastcluster.master, fastcluster.worker, %s\n"
            "args = fastcluster.cli.build_parser().parse_args(['serve', '--workers', '2'])\n"
            "import fastcluster.demo, socket\n"
            "from fastcluster.config import Config\n"
            "listener = socket.socket()\nlistener.bind(('127.0.0.1', 0))\nlistener.listen(8)\n"
            "config = Config.from_args(args, environ={})\n"
            "server = sys.modules[%r].Server(listener, fastcluster.demo.app, config)\n"
            "client = socket.create_connection(listener.getsockname())\n"
            "conn = server.adopt(listener.accept()[0])\n"
            "client.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
            "conn.on_readable()\n"
            "assert client.recv(65536).startswith(b'HTTP/1.1 200 '), 'no answer'\n"
            "print(sorted(m for m in %r if m in sys.modules and m not in before))"
            % (loop.LOOPS[impl], loop.LOOPS[impl], heavy))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@COMPILED
def test_the_compiled_loop_calls_the_kernel_without_glibcs_cancellation_wrappers():
    """recv, send, writev, accept4 and close of a connection go to the kernel through syscall():
    glibc's wrappers are cancellation points, and in a worker with app threads each call paid two
    atomic updates of the thread's cancel state (~1% of a keep-alive request). The extension's
    undefined dynamic symbols are read from its ELF file with nm (binutils comes with gcc)."""
    import shutil
    import subprocess

    nm = shutil.which("nm")
    assert nm, "nm (binutils) not found; gcc's toolchain includes it"
    path = importlib.import_module("fastcluster._parser").__file__
    out = subprocess.run([nm, "-D", "--undefined-only", path], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    imported = {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}
    assert "syscall" in imported
    assert not imported & {"recv", "recvfrom", "send", "sendto", "writev", "accept4"}, sorted(imported)


SHARED_SOURCES = ("_server.py", "_exchange.py", "_transport.py", "_request.py", "_dispatch.py", "_http.py",
                  "_asgi.py", "_websocket.py", "_h2.py")
# the loops' classes that provide the I/O under each shared class
IO_CLASSES = {"HttpServer": ("Server",), "AppPool": ("Pool",)}
CONNECTION_IO = ("Connection", "TlsConnection")
FAMILY = dict.fromkeys(("Channel", "Transport", "RequestBuilder", "AppDispatch", "HttpConnection"), "conn")
COMPILED_ONLY_IO = {"_input"}   # the parsed bytes as an object: only the compiled loop parses in place
                                # (_feed(None, n))
# a Channel's method that only a framed channel has (an HTTP/2 stream, _h2.py's Stream: no loop I/O)
FRAMED_ONLY = {("Channel", "_frame_head")}


def _io_contract():
    """{(shared class, method)}: what the shared code calls on the I/O layer: the methods a shared
    source leaves to the loops (`raise NotImplementedError`, and no shared subclass defines them),
    and what _parser.pxd declares for the loops' classes that the shared code calls."""
    package = os.path.dirname(loop.__file__)
    abstract, defined, text = set(), set(), ""
    for name in SHARED_SOURCES:
        with open(os.path.join(package, name), encoding="utf-8") as f:
            source = f.read()
        text += source
        tree = ast.parse(source)
        for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            for func in (node for node in ast.walk(cls) if isinstance(node, ast.FunctionDef)):
                body = [node for node in func.body if not (isinstance(node, ast.Expr)
                                                           and isinstance(node.value, ast.Constant))]
                if len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.dump(body[0]):
                    abstract.add((cls.name, func.name))
                else:
                    defined.add((FAMILY.get(cls.name, cls.name), func.name))
    contract = {(cls, method) for cls, method in abstract
                if (FAMILY.get(cls, cls), method) not in defined and (cls, method) not in FRAMED_ONLY}
    current = None
    with open(os.path.join(package, "_parser.pxd"), encoding="utf-8") as f:
        for cls, method in re.findall(r"^cdef class (\w+)|^    (?:cdef|cpdef) [\w *]*?\b(\w+)\(", f.read(), re.M):
            current = cls or current
            shared = {"Server": "HttpServer", "Pool": "AppPool", "Connection": "Transport"}.get(current)
            called = re.search(r"\.%s\(" % method, text)
            if method and shared and called and (FAMILY.get(shared, shared), method) not in defined:
                contract.add((shared, method))
    return contract


def test_both_loops_provide_the_private_io_the_shared_code_calls():
    """The twin guard above sees public methods only: a private I/O method missing from one loop
    would show only when a request reached it. Each method of the contract is defined in the
    compiled loop's sources (_parser.pyx and its .pxi files) and by the twin's classes."""
    package = os.path.dirname(loop.__file__)
    compiled = ""
    for name in sorted(os.listdir(package)):
        if name == "_parser.pyx" or name.endswith(".pxi"):
            with open(os.path.join(package, name), encoding="utf-8") as f:
                compiled += f.read()
    twin = importlib.import_module("fastcluster._parser_py")
    contract = _io_contract()
    assert ("Transport", "_set_mask") in contract and ("HttpServer", "_watch_listener") in contract
    missing = []
    for cls, method in sorted(contract):
        if not re.search(r"^    (?:cdef|cpdef|def) [\w *]*?\b%s\(" % method, compiled, re.M):
            missing.append("compiled: %s.%s" % (cls, method))
        if method not in COMPILED_ONLY_IO and not any(
                method in vars(getattr(twin, name)) for name in IO_CLASSES.get(cls, CONNECTION_IO)):
            missing.append("_parser_py.py: %s.%s" % (cls, method))
    assert not missing, "I/O the shared code calls, not provided: %s" % missing
