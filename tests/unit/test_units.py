"""In-process tests of the pure-Python pieces: config, importer, and the shared WSGI helpers."""

import re
import io
import os

import pytest

from fastcluster import wsgi
from fastcluster.cli import build_parser
from fastcluster.config import SETTINGS, BindAddress, Config, parse_bind
from fastcluster.errors import AppImportError, ConfigError
from fastcluster.importer import check_app_string, import_app


# --- config ---

@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8000", BindAddress("tcp", host="127.0.0.1", port=8000)),
    ("0.0.0.0:0", BindAddress("tcp", host="0.0.0.0", port=0)),
    (":8080", BindAddress("tcp", host="0.0.0.0", port=8080)),
    ("8080", BindAddress("tcp", host="127.0.0.1", port=8080)),
    ("[::1]:9000", BindAddress("tcp", host="::1", port=9000)),
    ("localhost:80", BindAddress("tcp", host="localhost", port=80)),
    ("unix:/tmp/x.sock", BindAddress("unix", path="/tmp/x.sock")),
    ("fd://3", BindAddress("fd", fd=3)),
])
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:", "1.2.3.4:70000", "[::1:80", "unix:", "fd://x", "a:b:c"])
def test_parse_bind_rejects(text):
    with pytest.raises(ValueError):
        parse_bind(text)


def test_bind_address_str_round_trips():
    for text in ("127.0.0.1:8000", "[::1]:9000", "unix:/tmp/x.sock", "fd://3"):
        assert str(parse_bind(text)) == text


def _config(argv, env=None):
    args = build_parser().parse_args(["serve", *argv])
    return Config.from_args(args, environ=env or {})


def test_bind_is_repeatable_in_every_source(tmp_path):
    """Every --bind is kept, in order (before, `--bind A --bind B` served B alone, silently)."""
    tcp, unix = BindAddress("tcp", host="127.0.0.1", port=8001), BindAddress("unix", path="/tmp/x.sock")
    assert _config(["--bind", "127.0.0.1:8001", "-b", "unix:/tmp/x.sock"]).bind == (tcp, unix)
    assert _config([], {"FASTCLUSTER_BIND": "127.0.0.1:8001, unix:/tmp/x.sock"}).bind == (tcp, unix)
    cfg = tmp_path / "c.toml"
    cfg.write_text('bind = ["127.0.0.1:8001", "unix:/tmp/x.sock"]\n')
    assert _config(["--config", str(cfg)]).bind == (tcp, unix)
    # systemd's sockets, from fd 3 on, and an upgrade's inherited ones, whatever --bind says
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    assert _config([], env).bind == (BindAddress("fd", fd=3), BindAddress("fd", fd=4))
    assert _config(["-b", "127.0.0.1:1"], {"FASTCLUSTER_UPGRADE_FD": "7,9"}).bind == (
        BindAddress("fd", fd=7), BindAddress("fd", fd=9))


def test_precedence_is_cli_then_env_then_default():
    assert _config([]).backlog == 2048
    assert _config([], {"FASTCLUSTER_BACKLOG": "10"}).backlog == 10
    assert _config(["--backlog", "20"], {"FASTCLUSTER_BACKLOG": "10"}).backlog == 20
    assert _config([], {"FASTCLUSTER_APP": "a:b"}).app == "a:b"
    assert _config(["x:y"], {"FASTCLUSTER_APP": "a:b"}).app == "x:y"


def test_every_setting_has_an_env_var_and_a_cli_flag():
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    dests = {a.dest for a in serve._actions}
    for setting in SETTINGS:
        assert setting.name in dests
        assert setting.env == "FASTCLUSTER_" + setting.name.upper()
        assert setting.help


def test_defaults_are_typed_values():
    config = _config([])
    assert config.bind == (BindAddress("tcp", host="127.0.0.1", port=8000),)
    assert config.loop == "auto" and config.keep_alive == 75.0 and config.app is None
    for setting in SETTINGS:
        assert not isinstance(getattr(config, setting.name), str) or setting.name in (
            "loop", "interface", "event_loop", "lifespan", "log_level", "log_format", "access_log_format",
            "forwarded_allow_ips", "forwarded_headers", "root_path", "cert_reqs", "http")


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="FASTCLUSTER_KEEP_ALIVE='soon': not a number"):
        _config([], {"FASTCLUSTER_KEEP_ALIVE": "soon"})


def test_default_workers_is_the_cpu_count():
    import os

    assert _config([]).workers == len(os.sched_getaffinity(0))


# --- importer ---

@pytest.mark.parametrize("text", ["app", "a b:c", ":app", "mod:", "mod:1x", "mod..x:app", "mod.:app", "mod:a..b"])
def test_malformed_app_strings(text):
    with pytest.raises(AppImportError, match="format"):
        check_app_string(text)


def test_import_app_errors_are_precise(monkeypatch, tmp_path):
    with pytest.raises(AppImportError, match='could not import module "fastcluster_nope"'):
        import_app("fastcluster_nope:app")
    with pytest.raises(AppImportError, match='attribute "nope" not found in module "fastcluster.demo"'):
        import_app("fastcluster.demo:nope")
    assert callable(import_app("fastcluster.demo:app"))
    assert import_app("fastcluster.demo:make_app")(0) is not None
    # a missing import inside the app is the app's bug: its own error, not ours
    (tmp_path / "fc_app_with_bad_import.py").write_text("import fc_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="fc_dependency_that_is_missing"):
        import_app("fc_app_with_bad_import:app")


# --- wsgi helpers ---

@pytest.mark.parametrize("target, path, query", [
    (b"/", "/", ""),
    (b"/a/b?x=1&y=%20", "/a/b", "x=1&y=%20"),
    (b"/caf%C3%A9", "/caf\u00c3\u00a9", ""),
    (b"/a%2Fb", "/a/b", ""),
    (b"/p#frag", "/p", ""),
    (b"/p?q#frag", "/p", "q"),
    (b"http://example.com/x/y?z", "/x/y", "z"),
    (b"http://example.com?z", "/", "z"),
    (b"http://example.com", "/", ""),
    (b"*", "*", ""),
])
def test_split_target(target, path, query):
    assert wsgi.split_target(target) == (path, query)


def test_header_keys():
    assert wsgi.header_key(b"Content-Type") == "CONTENT_TYPE"
    assert wsgi.header_key(b"content-length") == "CONTENT_LENGTH"
    assert wsgi.header_key(b"X-Forwarded-For") == "HTTP_X_FORWARDED_FOR"
    assert wsgi.header_key(b"X_Forwarded_For") is None


def _encoders():
    """The shared source's encoder run as plain Python, and its compiled build."""
    import importlib.util

    from fastcluster import _exchange

    yield pytest.param(_exchange.encode_headers, id="python")
    if importlib.util.find_spec("fastcluster._exchange_c") is not None:
        from fastcluster import _exchange_c

        yield pytest.param(_exchange_c.encode_headers, id="cython")


@pytest.mark.parametrize("encode", list(_encoders()))
def test_encode_headers_flags_and_length(encode):
    lines, clen, flags = encode([("Content-Type", "text/plain"), ("Content-Length", "12"),
                                 ("Date", "x"), ("Connection", "close"), ("Keep-Alive", "1")])
    assert b"".join(lines) == b"Content-Type: text/plain\r\nContent-Length: 12\r\nDate: x\r\n"
    assert clen == 12
    assert flags == wsgi.HAS_DATE | wsgi.WANTS_CLOSE
    lines, clen, _flags = encode([("Content-Length", "3"), ("Content-Length", " 3 ")])
    assert (b"".join(lines), clen) == (b"Content-Length: 3\r\n", 3)
    assert b"".join(encode([("X-Latin", "caf\u00e9")])[0]) == b"X-Latin: caf\xe9\r\n"


@pytest.mark.parametrize("encode", list(_encoders()))
def test_header_pairs_compared_by_position_give_their_own_lines(encode):
    """encode_headers compares each pair with the one it last found at that position (LINE_MEMO):
    equal text in new objects, changed values, moved and repeated pairs each get their own line."""
    def fresh(text):      # equal text, another object
        return "".join(list(text))

    sequences = [
        [("Content-Type", "text/plain"), ("Content-Length", "12")],
        [("Content-Type", "text/plain"), ("Content-Length", "12")],
        [(fresh("Content-Type"), fresh("text/plain")), (fresh("Content-Length"), fresh("12"))],
        [("Content-Type", "text/html"), ("Content-Length", "12")],
        [("Content-Length", "12"), ("Content-Type", "text/plain")],
        [("Content-Type", "text/plain"), ("Content-Type", "text/plain"), ("X-A", "1")],
        [("Content-Type", "text/plai"), ("Content-Length", "1")],
    ]
    for headers in sequences * 3:
        lines, clen, _flags = encode(headers)
        expected = [("%s: %s\r\n" % pair).encode("latin-1") for pair in headers]
        assert lines == expected, headers
        assert clen == next((int(v) for n, v in headers if n == "Content-Length"), -1)
    with pytest.raises(ValueError):
        encode([("X-Wide", "\u0101")])         # not latin-1, at a position where a valid pair was found
    with pytest.raises(ValueError):
        encode([("Content-Length", "12"), ("Content-Length", "13")])


@pytest.mark.parametrize("encode", list(_encoders()))
def test_a_header_list_known_whole_is_answered_again_only_while_every_pair_matches(encode):
    """encode_headers keeps the answer for the last list whose every pair it knew: the same list
    object edited in place, equal text in new objects, a tuple of pairs and an empty list each get
    their own answer."""
    def fresh(text):
        return "".join(list(text))

    plain, html = ("Content-Type", "text/plain"), ("Content-Type", "text/html")
    h = [plain, ("Content-Length", "12")]
    steps = [
        (lambda: None, [b"Content-Type: text/plain\r\n", b"Content-Length: 12\r\n"], 12, 0),
        (lambda: None, [b"Content-Type: text/plain\r\n", b"Content-Length: 12\r\n"], 12, 0),
        (lambda: h.__setitem__(1, ("Content-Length", "13")),
         [b"Content-Type: text/plain\r\n", b"Content-Length: 13\r\n"], 13, 0),
        (lambda: h.__setitem__(0, html), [b"Content-Type: text/html\r\n", b"Content-Length: 13\r\n"], 13, 0),
        (lambda: h.__setitem__(0, (fresh("Content-Type"), fresh("text/html"))),
         [b"Content-Type: text/html\r\n", b"Content-Length: 13\r\n"], 13, 0),
        (lambda: h.append(("X-A", "1")),
         [b"Content-Type: text/html\r\n", b"Content-Length: 13\r\n", b"X-A: 1\r\n"], 13, 0),
        (lambda: h.__setitem__(2, ("X-A", "2")),
         [b"Content-Type: text/html\r\n", b"Content-Length: 13\r\n", b"X-A: 2\r\n"], 13, 0),
        (lambda: h.reverse(), [b"X-A: 2\r\n", b"Content-Length: 13\r\n", b"Content-Type: text/html\r\n"], 13, 0),
        (lambda: h.__delitem__(0), [b"Content-Length: 13\r\n", b"Content-Type: text/html\r\n"], 13, 0),
        (lambda: h.append(("Date", "x")), [b"Content-Length: 13\r\n", b"Content-Type: text/html\r\n", b"Date: x\r\n"],
         13, wsgi.HAS_DATE),
        (lambda: h.__setitem__(2, ("Connection", "close")), [b"Content-Length: 13\r\n", b"Content-Type: text/html\r\n"],
         13, wsgi.WANTS_CLOSE),
        (lambda: h.__setitem__(2, ["X-B", "b"]),
         [b"Content-Length: 13\r\n", b"Content-Type: text/html\r\n", b"X-B: b\r\n"], 13, 0),
        (lambda: h.__delitem__(2), [b"Content-Length: 13\r\n", b"Content-Type: text/html\r\n"], 13, 0),
        (lambda: h.__setitem__(slice(None), [("Content-Length", "13"), ("Content-Length", "13")]),
         [b"Content-Length: 13\r\n"], 13, 0),
        (lambda: h.__setitem__(slice(None), []), [], -1, 0),
        (lambda: h.__setitem__(slice(None), [plain]), [b"Content-Type: text/plain\r\n"], -1, 0),
    ]
    for _ in range(2):
        h[:] = [plain, ("Content-Length", "12")]
        for change, lines, clen, flags in steps:
            change()
            for headers in (h, tuple(h), list(h), h):
                assert encode(headers) == (lines, clen, flags), headers
    h[:] = [("Content-Length", "13"), ("Content-Length", "13")]
    assert encode(h)[1] == 13
    h[1] = ("Content-Length", "14")          # the list just known whole, its second pair changed
    with pytest.raises(ValueError):
        encode(h)
    h[:] = [plain]
    assert encode(h) == ([b"Content-Type: text/plain\r\n"], -1, 0)
    h[0] = ("Content-Type", "\u0101")
    with pytest.raises(ValueError):
        encode(h)


@pytest.mark.parametrize("encode", list(_encoders()))
def test_encoded_header_lines_are_remembered_only_for_what_was_valid(encode):
    """A (name, value) pair seen before gives its remembered line: the same answers the second
    time, for tuples and lists alike, and nothing wrong is remembered as right."""
    headers = [("Content-Type", "text/plain"), ("Content-Length", "12"), ["X-List", "l"], ("Date", "x")]
    first = encode(headers)
    assert encode(headers) == first == ([b"Content-Type: text/plain\r\n", b"Content-Length: 12\r\n",
                                         b"X-List: l\r\n", b"Date: x\r\n"], 12, wsgi.HAS_DATE)
    assert encode([("Content-Length", "12"), ("Content-Length", "12")])[:2] == ([b"Content-Length: 12\r\n"], 12)
    with pytest.raises(ValueError):
        encode([("Content-Length", "12"), ("Content-Length", "13")])   # both remembered, and they differ
    for _ in range(2):
        with pytest.raises(ValueError):
            encode([("X-Split", "a\r\nb")])
        with pytest.raises(TypeError, match="X-Unhashable value must be str"):
            encode([("X-Unhashable", ["a"])])
        with pytest.raises(TypeError, match="X-Bytes value must be str"):
            encode([("X-Bytes", b"a")])
    assert encode([("Connection", "close")])[2] == wsgi.WANTS_CLOSE            # never remembered as a line


@pytest.mark.parametrize("encode", list(_encoders()))
@pytest.mark.parametrize("value, closes", [
    ("close", True), ("Close", True), ("keep-alive, close", True), (" upgrade ,CLOSE ", True),
    ("keep-alive", False), ("x-enclosed", False), ("closed", False), ("close-later", False),
])
def test_connection_close_is_a_token_not_a_substring(encode, value, closes):
    _block, _clen, flags = encode([("Connection", value)])
    assert bool(flags & wsgi.WANTS_CLOSE) is closes


@pytest.mark.parametrize("encode", list(_encoders()))
@pytest.mark.parametrize("headers", [
    [("X-A", "a\r\nSet-Cookie: x")],
    [("X-A", "a\nb")],
    [("X-A", "a\rb")],
    [("X-A", "a\0b")],
    [("Bad Name", "v")],
    [("X-A:", "v")],
    [("X-A", "\u20ac")],
    [("X-A", b"bytes")],
    [(b"X-A", "v")],
    [("X-A", 5)],
    [("Content-Length", "-1")],
    [("Content-Length", "1e3")],
    [("Content-Length", "\u0661")],
    [("Content-Length", "3"), ("Content-Length", "4")],
    [("X-A", "v", "extra")],
])
def test_encode_headers_rejects_what_could_split_the_response(encode, headers):
    with pytest.raises((ValueError, TypeError, UnicodeError)):
        encode(headers)


@pytest.mark.parametrize("status", ["200", "200 OK", "404 Not Found", "599 Custom reason"])
def test_status_line(status):
    assert wsgi.status_line(status) == ("HTTP/1.1 %s\r\n" % status).encode()


@pytest.mark.parametrize("status", ["OK", "20 OK", "2000 OK", "200 OK\r\nX: y", b"200 OK", 200, "200\tOK\n"])
def test_status_line_rejects(status):
    with pytest.raises(ValueError):
        wsgi.status_line(status)


def test_body_buffer_spills_to_disk():
    buf = wsgi.BodyBuffer()
    for _ in range(3):
        buf.add(b"x" * (wsgi.SPILL_BYTES // 2 + 1))
    assert buf.file is not None
    stream = buf.stream()
    assert len(stream.read()) == 3 * (wsgi.SPILL_BYTES // 2 + 1)
    buf.discard()
    small = wsgi.BodyBuffer()
    small.add(b"abc")
    assert isinstance(small.stream(), io.BytesIO) and small.stream().read() == b"abc"


def test_lazy_input_reads_as_the_app_asks():
    chunks = [b"line one\nline", b" two\n", b"tail"]
    lazy = None

    def fill():
        if chunks:
            lazy.add(chunks.pop(0))
            if not chunks:
                lazy.finish()
            return True
        return False

    lazy = wsgi.LazyInput(fill)
    assert lazy.read(4) == b"line"
    assert lazy.readline() == b" one\n"
    assert lazy.readline(3) == b"lin"
    assert list(lazy) == [b"e two\n", b"tail"]
    assert lazy.read() == b""


def test_lazy_input_raises_when_the_client_goes_away():
    lazy = wsgi.LazyInput(lambda: False)
    with pytest.raises(OSError, match="disconnected"):
        lazy.read()


def test_file_wrapper_iterates_and_closes():
    f = io.BytesIO(b"a" * 10)
    wrapper = wsgi.FileWrapper(f, 4)
    assert list(wrapper) == [b"aaaa", b"aaaa", b"aa"]
    wrapper.close()
    assert f.closed


def test_simple_response_is_complete():
    resp = wsgi.simple_response("400 Bad Request", b"Bad Request\n", True, b"Date: x\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Length: 12" in head and b"Connection: close" in head
    assert body == b"Bad Request\n"


def test_readme_options_table_is_generated_from_settings():
    import os

    from fastcluster.config import options_table

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert options_table() in readme, \
        "regenerate the table: python -c 'from fastcluster.config import options_table; print(options_table())'"


def test_config_file_sits_between_env_and_defaults(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('app = "x:y"\nworkers = 3\nkeep-alive = 5.5\npreload = true\nbind = "unix:/tmp/s"\n')
    config = _config(["--config", str(cfg)])
    assert (config.app, config.workers, config.keep_alive, config.preload) == ("x:y", 3, 5.5, True)
    assert config.bind == (BindAddress("unix", path="/tmp/s"),)
    assert _config(["--config", str(cfg)], {"FASTCLUSTER_WORKERS": "4"}).workers == 4
    assert _config(["--config", str(cfg), "-w", "5"], {"FASTCLUSTER_WORKERS": "4"}).workers == 5
    assert _config([], {"FASTCLUSTER_CONFIG": str(cfg)}).workers == 3


@pytest.mark.parametrize("text, message", [
    ("workers = 0\n", "workers='0': must be at least 1"),
    ("nope = 1\n", "unknown setting 'nope'"),
    ("workers = [1]\n", "must be a string or a number"),
    ("workers = \n", "c.toml"),
])
def test_config_file_errors(tmp_path, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(["--config", str(cfg)])


def test_missing_config_file():
    with pytest.raises(ConfigError, match="cannot read config file /nonexistent.toml"):
        _config(["--config", "/nonexistent.toml"])


def test_config_has_one_field_per_setting_with_its_default():
    from fastcluster.config import SETTINGS, Config

    names = list(Config.FIELDS)
    assert names == ["app", "hooks"] + [setting.name for setting in SETTINGS]
    plain = Config()
    for setting in SETTINGS:
        assert getattr(plain, setting.name) == setting.default_value(), setting.name
    assert plain.workers == len(os.sched_getaffinity(0))   # as on the command line


def test_a_reloaded_config_keeps_what_needs_a_full_restart():
    from fastcluster.config import reloaded

    old = Config(app="a:app", bind=parse_bind("127.0.0.1:8000"), workers=2, preload=True)
    new = Config(app="b:app", bind=parse_bind("127.0.0.1:9000"), workers=4, timeout=3.0, preload=True)
    config, warnings = reloaded(old, new)
    assert (config.workers, config.timeout) == (4, 3.0)                    # taken
    assert config.bind == old.bind and config.app == "a:app"              # kept
    assert warnings == ["bind only change with a full restart; keeping the running values",
                        "the app was preloaded; a new APP needs a full restart"]
    assert reloaded(old, old.replace(workers=3)) == (old.replace(workers=3), [])
    with pytest.raises(AppImportError):
        reloaded(old, old.replace(app="not an app"))


def test_a_gunicorn_conf_py_reads_as_fastclusters_settings(monkeypatch):
    monkeypatch.setenv("FC_ACCESS_LOG", "/tmp/access.log")
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "gunicorn.conf.py")
    config = _config(["-c", path], dict(os.environ))
    assert config.bind == (BindAddress("tcp", host="127.0.0.1", port=0),)
    assert (config.workers, config.timeout, config.graceful_timeout, config.keep_alive) == (2, 30.0, 10.0, 5.0)
    assert (config.max_requests, config.max_requests_jitter, config.preload) == (1000, 50, True)
    assert (config.access_log, config.log_file, config.log_level) == ("/tmp/access.log", None, "info")
    assert config.app == "apps.suite:app"
    assert sorted(config.hooks) == ["post_fork"] and callable(config.hooks["post_fork"])


def test_repeatable_settings_from_flags_env_and_files(tmp_path):
    assert _config(["--reload-include", "*.html", "--reload-include", "*.py"]).reload_include == ("*.html", "*.py")
    assert _config([], {"FASTCLUSTER_RELOAD_DIR": "a, b"}).reload_dir == ("a", "b")
    cfg = tmp_path / "c.toml"
    cfg.write_text('reload-include = ["*.txt", "*.py"]\n')
    assert _config(["-c", str(cfg)]).reload_include == ("*.txt", "*.py")
    assert _config([]).reload_dir == ()


@pytest.mark.parametrize("argv, message", [
    (["--reload", "--preload"], "--reload restarts the workers"),
    (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
    (["--ca-certs", "ca.pem"], "--ca-certs needs --certfile"),
    (["--certfile", "c.pem", "--cert-reqs", "optional"], "--cert-reqs optional needs --ca-certs"),
])
def test_settings_that_go_together(argv, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(argv)


@pytest.mark.parametrize("second", [0, 784111777, 951782400, 1700000000.75, 4102444799, 2 ** 33])
def test_http_date_is_what_email_utils_formats(second):
    from email.utils import formatdate

    assert wsgi.http_date(second) == formatdate(second, usegmt=True)


@pytest.mark.parametrize("tz", ["UTC", "America/St_Johns", "Asia/Kolkata", "Europe/Berlin"])
def test_log_times_are_what_datetime_formats(tz, monkeypatch):
    import datetime
    import time

    from fastcluster.logs import AccessLog, iso_time

    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        for when in (0.25, 1700000000.5, 1719000000.125, 1735689599.999):
            assert iso_time(when) == datetime.datetime.fromtimestamp(when).astimezone().isoformat(
                timespec="milliseconds")
            assert AccessLog.stamp_for(int(when)) == datetime.datetime.fromtimestamp(int(when)).astimezone().strftime(
                "[%d/%b/%Y:%H:%M:%S %z]")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_coroutine_functions_are_told_apart_without_inspect(monkeypatch):
    import functools
    import inspect
    import sys

    from fastcluster.importer import _coroutine_function, is_asgi

    async def coro(scope, receive, send):
        pass

    def plain(environ, start_response):
        pass

    class Asgi:
        async def __call__(self, scope, receive, send):
            pass

        async def method(self):
            pass

    class Wsgi:
        def __call__(self, environ, start_response):
            pass

    cases = [coro, plain, Asgi, Asgi(), Asgi().method, Asgi.__call__, Wsgi, Wsgi(), functools.partial(coro, {}),
             functools.partial(plain, {}), len, lambda: None, "not callable", None]
    expected = [inspect.iscoroutinefunction(obj) for obj in cases]
    asgi = [is_asgi(obj) for obj in cases]
    monkeypatch.delitem(sys.modules, "inspect")
    assert [_coroutine_function(obj) for obj in cases] == expected
    assert [is_asgi(obj) for obj in cases] == asgi
    assert asgi[:8] == [True, False, False, True, True, True, False, False]


def test_records_do_what_the_dataclasses_they_replace_did():
    from fastcluster.record import FrozenError, Record, field

    class Base(Record):
        a: int
        b: list = field(list)
        hidden: dict = field(dict, compare=False)

    class Child(Base):
        c: str = "c"

    class Point(Record, frozen=True):
        x: int
        y: int = 0

    assert Child.FIELDS == ("a", "b", "hidden", "c")
    one, two = Child(1), Child(1)
    assert one == two and one.b is not two.b                 # a field(make) default is made per instance
    one.hidden["k"] = 1
    assert one == two                                        # compare=False: left out of ==
    one.b.append(2)
    assert one != two and one != Base(1) and repr(one).endswith(".Child(a=1, b=[2], hidden={'k': 1}, c='c')")
    assert Child(5, [1], {}, "d") == Child(a=5, b=[1], c="d")
    for bad in (lambda: Child(), lambda: Child(1, a=2), lambda: Child(1, nope=3), lambda: Point(1, 2, 3)):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(TypeError):
        hash(one)                                            # mutable: not hashable
    p = Point(1)
    assert hash(p) == hash(Point(1, 0)) and {p: "v"}[Point(1)] == "v"
    with pytest.raises(FrozenError):
        p.x = 2
    with pytest.raises(AttributeError):
        del p.y
    assert p.replace(y=5) == Point(1, 5) and p == Point(1, 0)
    nested = Child(1, [Point(2, 3), (Point(4),)], {"p": Point(5)})
    assert nested.as_dict() == {"a": 1, "b": [{"x": 2, "y": 3}, ({"x": 4, "y": 0},)], "hidden": {"p": {"x": 5, "y": 0}},
                                "c": "c"}
    with pytest.raises(AttributeError):
        Child.a                                              # a field is no class attribute


def test_percent_decoding_follows_urllib():
    import random
    from urllib.parse import unquote_to_bytes

    cases = [b"", b"%", b"%%", b"%4", b"%41", b"%4g", b"a%2Fb", b"%e2%82%ac%E2%82%AC", b"%%41", b"x%41%", b"%ZZ%20",
             b"/caf%C3%A9 x", b"%00%ff%FF%fF"]
    rng = random.Random(14)
    alphabet = b"%%%0123456789abcdefABCDEFgxyz/ "
    cases += [bytes(rng.choice(alphabet) for _ in range(rng.randrange(12))) for _ in range(2000)]
    for case in cases:
        assert wsgi.unquote_to_bytes(case) == unquote_to_bytes(case), case


def test_defer_accept_is_set_on_tcp_listeners_and_cleared_on_an_inherited_one(tmp_path):
    import socket

    from fastcluster.sockets import create_listener

    assert _config([]).defer_accept == 1
    assert _config(["--defer-accept", "0"]).defer_accept == 0
    with pytest.raises(SystemExit):
        _config(["--defer-accept", "-1"])
    with create_listener(parse_bind("127.0.0.1:0"), 16, 3) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 3
    with create_listener(parse_bind("127.0.0.1:0"), 16) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0
    with create_listener(parse_bind("unix:%s" % (tmp_path / "s")), 16, 1) as sock:
        assert sock.family == socket.AF_UNIX           # (nothing to defer on a unix socket)
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen(8)
    inherited.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
    with create_listener(BindAddress("fd", fd=inherited.detach()), 16, 0) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) == 0


def test_trust_matches_ipaddress_without_importing_it_for_plain_addresses():
    """--forwarded-allow-ips: plain addresses are compared as canonical text (the socket module),
    networks through ipaddress; both give ipaddress's own answer, IPv4-mapped IPv6 included."""
    import ipaddress
    import random
    import subprocess
    import sys

    spec = "127.0.0.1,::1,10.0.0.0/8,2001:db8::/32,192.0.2.7"
    nets = [ipaddress.ip_network(s) for s in ("127.0.0.1/32", "::1/128", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")]

    def expected(text):
        ip = ipaddress.ip_address(text)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in nets)

    trust = wsgi.Trust(spec)
    rng = random.Random(7)
    samples = ["127.0.0.1", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "::ffff:10.9.8.7", "192.0.2.7",
               "192.0.2.8", "2001:db8::1", "2001:DB8:0::2", "2001:db9::1", "fe80::1"]
    for _ in range(500):
        if rng.random() < 0.5:
            base = rng.choice([0x0A000000, 0x7F000000, 0xC0000200])
            samples.append(str(ipaddress.IPv4Address(base + rng.randrange(512))))
        else:
            samples.append(str(ipaddress.IPv6Address((0x20010DB8 << 96) + rng.randrange(1 << 20) if rng.random() < 0.5
                                                     else rng.getrandbits(128))))
    for text in samples:
        assert trust(text) == expected(text), text
    assert not trust("not an address") and not trust("") and wsgi.Trust("*")("anything")
    for bad in ("1.2.3", "x", "1.2.3.4/33", "::1::2"):
        with pytest.raises(ValueError):
            wsgi.Trust(bad)
    # (an editable install's finder loads urllib.parse, and with it ipaddress, before any of ours)
    code = ("import sys\nbefore = set(sys.modules)\nfrom fastcluster.wsgi import Trust\n"
            "t = Trust('127.0.0.1,::1')\n"
            "assert t('127.0.0.1') and t('::ffff:127.0.0.1') and not t('10.0.0.1')\n"
            "print('ipaddress' in sys.modules and 'ipaddress' not in before)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out


@pytest.mark.parametrize("name, value, message", [
    ("HTTP", "3", "choose from auto, 1, 2"),
    ("H2_INITIAL_WINDOW_SIZE", "0", "from 1 to 2147483647"),
    ("H2_MAX_FRAME_SIZE", "1000", "from 16384 to 16777215"),
    ("H2_MAX_CONCURRENT_STREAMS", "0", "at least 1"),
])
def test_http2_options_refuse_what_rfc_9113_does_not_allow(name, value, message):
    with pytest.raises(ConfigError, match="FASTCLUSTER_%s=%r: .*%s" % (name, value, message)):
        _config([], {"FASTCLUSTER_" + name: value})
