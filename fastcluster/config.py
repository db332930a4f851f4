"""Settings: one table drives the command line, the FASTCLUSTER_* environment, the config file and
the README.

Each `Setting` is stated once, its default included: `Config`'s fields take their defaults from
the table, so `Config()` and the command line agree. `add_settings()` turns the table into
argparse options (cli.py builds the parser), `Config.from_args()` resolves every value in the
order command line > environment > config file > default, validating as it goes, and
`options_table()` writes the README's table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
from typing import Any, Callable, Optional

from . import logs
from .errors import ConfigError

ENV_PREFIX = "FASTCLUSTER_"
LOOPS = ("auto", "cython", "python")


# --- value parsers: each takes a str and returns the typed value or raises ValueError ---

def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number of seconds, 0 or more")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise ValueError("must be more than 0")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def path(text: str) -> str:
    if not text:
        raise ValueError("needs a file path")
    return text


def root_path(text: str) -> str:
    if text in ("", "/"):
        return ""
    return url_path(text).rstrip("/")


def url_path(text: str) -> str:
    if not text.startswith("/") or any(c in text for c in " ?#") or not text.isprintable():
        raise ValueError("not a path: it starts with / and has no space, ? or #")
    return text


def _umask(text: str) -> int:
    from .privileges import umask

    return umask(text)


def address_list(text: str) -> str:
    from .wsgi import Trust

    try:
        Trust(text)
    except ValueError as exc:
        raise ValueError("not an address, network or *: %s" % exc) from None
    return text


def choice(*names: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in names:
            raise ValueError("choose from " + ", ".join(names))
        return text.lower()
    return parse


loop_name = choice(*LOOPS)


def access_target(text: str) -> str:
    if not text:
        raise ValueError("needs - (stdout) or a file path")
    return text


def tcp_address(text: str) -> "BindAddress":
    address = parse_bind(text)
    if address.kind != "tcp":
        raise ValueError("expected HOST:PORT or [IPv6]:PORT")
    return address


@dataclasses.dataclass(frozen=True)
class BindAddress:
    """Where the master listens: kind is 'tcp' (host, port), 'unix' (path) or 'fd' (fd)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    @property
    def family(self) -> int:
        if self.kind == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix:" + self.path
        if self.kind == "fd":
            return "fd://%d" % self.fd
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)


_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z]+)\]|(?P<host>[^\[\]:]*)):(?P<port>\d+)$")


def parse_bind(text: str) -> BindAddress:
    """Parse HOST:PORT, [IPv6]:PORT, :PORT, PORT, unix:/path or fd://N."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a path, as in unix:/run/app.sock")
        return BindAddress("unix", path=path)
    if text.startswith("fd://"):
        fd = int(text[5:])
        if fd < 0:
            raise ValueError("fd:// needs a descriptor number, 0 or more")
        return BindAddress("fd", fd=fd)
    if text.isdigit():
        text = "127.0.0.1:" + text
    match = _HOST_PORT.match(text)
    if not match:
        raise ValueError("expected HOST:PORT, [IPv6]:PORT, unix:/path or fd://N")
    port = int(match["port"])
    if port > 65535:
        raise ValueError("port must be 0-65535")
    host = match["v6"] if match["v6"] is not None else (match["host"] or "0.0.0.0")
    return BindAddress("tcp", host=host, port=port)


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str                      # attribute of Config; env var is FASTCLUSTER_<NAME>
    flags: tuple                   # command-line flags
    parse: Callable[[str], Any]    # str -> value, raises ValueError
    default: Any                   # a value, or a callable giving one
    help: str
    metavar: Optional[str] = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def default_value(self) -> Any:
        """The typed default: a callable is called, a str goes through `parse` like any input."""
        value = self.default() if callable(self.default) else self.default
        return self.parse(value) if isinstance(value, str) else value


SETTINGS = (
    Setting("config", ("-c", "--config"), path, None,
            "read settings from this TOML file (keys are the option names); SIGHUP reads it again", "FILE"),
    Setting("bind", ("-b", "--bind"), parse_bind, "127.0.0.1:8000",
            "address to listen on: HOST:PORT, [IPv6]:PORT, unix:/path or fd://N (port 0 picks a free one; "
            "under systemd socket activation, LISTEN_FDS, the socket it passes)",
            "ADDRESS"),
    Setting("workers", ("-w", "--workers"), positive_int, _default_workers,
            "number of worker processes (default: one per CPU)", "N"),
    Setting("threads", ("--threads",), positive_int, 32,
            "app calls each worker runs at once: the app runs on the loop's thread, and when a call waits "
            "(a database, an API, a slow upload) another thread takes the loop over; 1 runs every call "
            "inline, one at a time (CPU-bound apps)", "N"),
    Setting("loop", ("--loop",), loop_name, "auto",
            "request loop: cython (compiled), python (pure-Python twin) or auto (compiled when built)",
            "{auto,cython,python}"),
    Setting("interface", ("--interface",), choice("auto", "wsgi", "asgi"), "auto",
            "the app's interface: auto tells an ASGI app (an async callable) from a WSGI one", "{auto,wsgi,asgi}"),
    Setting("event_loop", ("--event-loop",), choice("auto", "asyncio", "uvloop"), "auto",
            "ASGI apps: the event loop each worker runs (auto: uvloop when installed, else asyncio)",
            "{auto,asyncio,uvloop}"),
    Setting("lifespan", ("--lifespan",), choice("auto", "on", "off"), "auto",
            "ASGI lifespan: on (startup must succeed in each worker before it serves), off, or auto "
            "(on unless the app does not support it)", "{auto,on,off}"),
    Setting("ws_max_size", ("--ws-max-size",), positive_int, 16 * 1024 * 1024,
            "largest incoming WebSocket message in bytes (then close code 1009)", "BYTES"),
    Setting("ws_ping_interval", ("--ws-ping-interval",), non_negative_float, 20.0,
            "seconds between keep-alive pings on an idle WebSocket (0: none)", "S"),
    Setting("ws_ping_timeout", ("--ws-ping-timeout",), non_negative_float, 20.0,
            "seconds a WebSocket client gets to answer a ping before it is closed (0: no limit)", "S"),
    Setting("backlog", ("--backlog",), positive_int, 2048,
            "listen queue length of the shared socket", "N"),
    Setting("keep_alive", ("--keep-alive",), non_negative_float, 75.0,
            "seconds an idle keep-alive connection is kept open (0 closes after each response)", "S"),
    Setting("graceful_timeout", ("--graceful-timeout",), non_negative_float, 30.0,
            "seconds workers get to finish in-flight requests on SIGTERM before they are killed", "S"),
    Setting("header_timeout", ("--header-timeout",), positive_float, 10.0,
            "seconds a client gets to send a request's headers, from the accept or the request's first byte "
            "(then 408)", "S"),
    Setting("body_timeout", ("--body-timeout",), positive_float, 30.0,
            "seconds a request body may stall between two reads (then 408)", "S"),
    Setting("write_timeout", ("--write-timeout",), positive_float, 30.0,
            "seconds a client may stop reading a response before it is dropped", "S"),
    Setting("max_connections", ("--max-connections",), positive_int, 1000,
            "connections per worker; past it the worker stops accepting and the backlog holds the rest", "N"),
    Setting("max_request_line", ("--max-request-line",), positive_int, 8190,
            "longest request target in bytes (then 414)", "BYTES"),
    Setting("max_headers", ("--max-headers",), positive_int, 100,
            "most header fields in a request (then 431)", "N"),
    Setting("max_header_bytes", ("--max-header-bytes",), positive_int, 65536,
            "largest header section in bytes (then 431)", "BYTES"),
    Setting("max_body", ("--max-body",), non_negative_int, 100 * 1024 * 1024,
            "largest request body in bytes, announced or chunked (then 413; 0: no limit)", "BYTES"),
    Setting("max_spill", ("--max-spill",), non_negative_int, 1024 * 1024 * 1024,
            "disk one worker may use for request bodies buffered in temporary files (then 503; 0: no limit)",
            "BYTES"),
    Setting("ready_timeout", ("--ready-timeout",), non_negative_float, 60.0,
            "seconds a new worker may take to load the app in a rolling restart before the restart is aborted",
            "S"),
    Setting("timeout", ("--timeout",), non_negative_float, 0.0,
            "kill and replace a worker stuck this long in one request, logging its stack (0: off)", "S"),
    Setting("max_requests", ("--max-requests",), non_negative_int, 0,
            "replace a worker (without dropping requests) after it served this many (0: off)", "N"),
    Setting("max_requests_jitter", ("--max-requests-jitter",), non_negative_int, 0,
            "add 0..J at random to --max-requests per worker, so workers do not all recycle at once", "J"),
    Setting("max_worker_memory", ("--max-worker-memory",), non_negative_int, 0,
            "replace a worker whose RSS passes this many MiB, sampled each second (0: off)", "MIB"),
    Setting("max_worker_lifetime", ("--max-worker-lifetime",), non_negative_float, 0.0,
            "replace a worker after it lived this many seconds (0: off)", "S"),
    Setting("preload", ("--preload",), boolean, False,
            "import the app once in the master before forking (less memory; a reload then keeps the old code)"),
    Setting("pid", ("--pid",), path, None,
            "write the master's pid to FILE (and its status to FILE.json, read by `fastcluster status`)",
            "FILE"),
    Setting("log_file", ("--log-file",), path, None,
            "append the log to FILE instead of stderr; SIGUSR1 reopens it (for logrotate)", "FILE"),
    Setting("log_level", ("--log-level",), choice(*logs.LEVELS), "info",
            "least severe log lines written", "{%s}" % ",".join(logs.LEVELS)),
    Setting("log_format", ("--log-format",), choice(*logs.FORMATS), "text",
            "log lines as text or as one JSON object each (time, level, pid, message, exception)",
            "{text,json}"),
    Setting("access_log", ("--access-log",), access_target, None,
            "write an access log line per request to - (stdout) or FILE, in batches; SIGUSR1 reopens FILE",
            "-|FILE"),
    Setting("access_log_format", ("--access-log-format",), logs.check_access_format, logs.DEFAULT_ACCESS_FORMAT,
            "access log fields: " + logs.access_fields_help(), "FORMAT"),
    Setting("user", ("--user",), str, None,
            "run the workers as this user (a name or uid): the master binds first (port 80 as root), each "
            "worker switches before it imports the app", "USER"),
    Setting("group", ("--group",), str, None,
            "run the workers with this group (a name or gid; default: the --user's own)", "GROUP"),
    Setting("umask", ("--umask",), _umask, None,
            "the file mode mask of the master and its workers (octal, e.g. 027)", "MASK"),
    Setting("root_path", ("--root-path",), root_path, "",
            "the prefix the app is mounted at behind a proxy: SCRIPT_NAME (ASGI: root_path), and PATH_INFO "
            "without it when the request path starts with it", "PATH"),
    Setting("forwarded_allow_ips", ("--forwarded-allow-ips",), address_list, "127.0.0.1,::1",
            "peers (addresses, CIDR networks, * for all) whose Forwarded / X-Forwarded-For / X-Forwarded-Proto "
            "headers set the client address and scheme (unix-socket peers are trusted)", "LIST"),
    Setting("proxy_protocol", ("--proxy-protocol",), boolean, False,
            "each connection starts with a PROXY protocol header (v1 or v2, from HAProxy, an AWS or GCP "
            "balancer): the client address comes from it; a connection without a valid one is closed"),
    Setting("health_path", ("--health-path",), url_path, None,
            "a path the server answers itself, never the app (also while every app thread is busy): 200 "
            "while serving, 503 once the master is stopping", "PATH"),
    Setting("shutdown_delay", ("--shutdown-delay",), non_negative_float, 0.0,
            "on SIGTERM, keep serving this many seconds with the health path already saying 503 (so a "
            "balancer stops sending traffic), then stop gracefully", "S"),
    Setting("metrics_bind", ("--metrics-bind",), tcp_address, None,
            "serve Prometheus metrics at http://ADDRESS/metrics, from the master (port 0 picks a free one)",
            "HOST:PORT"),
    Setting("demo_work_ms", ("--demo-work-ms",), non_negative_int, 0,
            "built-in demo app only: burn this many ms of CPU per request, like the seed's slow handler",
            "MS"),
)


_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _default(name: str) -> Any:
    """A Config field whose default is its Setting's."""
    return dataclasses.field(default_factory=_BY_NAME[name].default_value)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting, resolved; one field per SETTINGS entry (a test keeps the two in step)."""

    app: Optional[str] = None      # "module:attribute"; None serves the built-in demo app
    config: Optional[str] = _default("config")
    bind: BindAddress = _default("bind")
    workers: int = _default("workers")
    threads: int = _default("threads")
    loop: str = _default("loop")
    interface: str = _default("interface")
    event_loop: str = _default("event_loop")
    lifespan: str = _default("lifespan")
    ws_max_size: int = _default("ws_max_size")
    ws_ping_interval: float = _default("ws_ping_interval")
    ws_ping_timeout: float = _default("ws_ping_timeout")
    backlog: int = _default("backlog")
    keep_alive: float = _default("keep_alive")
    graceful_timeout: float = _default("graceful_timeout")
    header_timeout: float = _default("header_timeout")
    body_timeout: float = _default("body_timeout")
    write_timeout: float = _default("write_timeout")
    max_connections: int = _default("max_connections")
    max_request_line: int = _default("max_request_line")
    max_headers: int = _default("max_headers")
    max_header_bytes: int = _default("max_header_bytes")
    max_body: int = _default("max_body")
    max_spill: int = _default("max_spill")
    ready_timeout: float = _default("ready_timeout")
    timeout: float = _default("timeout")
    max_requests: int = _default("max_requests")
    max_requests_jitter: int = _default("max_requests_jitter")
    max_worker_memory: int = _default("max_worker_memory")
    max_worker_lifetime: float = _default("max_worker_lifetime")
    preload: bool = _default("preload")
    pid: Optional[str] = _default("pid")
    log_file: Optional[str] = _default("log_file")
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")
    access_log: Optional[str] = _default("access_log")
    access_log_format: str = _default("access_log_format")
    user: Optional[str] = _default("user")
    group: Optional[str] = _default("group")
    umask: Optional[int] = _default("umask")
    root_path: str = _default("root_path")
    forwarded_allow_ips: str = _default("forwarded_allow_ips")
    proxy_protocol: bool = _default("proxy_protocol")
    health_path: Optional[str] = _default("health_path")
    shutdown_delay: float = _default("shutdown_delay")
    metrics_bind: Optional[BindAddress] = _default("metrics_bind")
    demo_work_ms: int = _default("demo_work_ms")

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ=os.environ) -> "Config":
        """Resolve each setting: command line, then FASTCLUSTER_*, then the config file, then the default."""
        config_file = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG") or None
        from_file = load_file(config_file) if config_file else {}
        values = {}
        for setting in SETTINGS:
            given = getattr(args, setting.name, None)
            if given is not None:
                values[setting.name] = given  # argparse already parsed and validated it
                continue
            raw, where = environ.get(setting.env), setting.env
            if raw is None and setting.name in from_file:
                raw, where = from_file[setting.name], "%s: %s" % (config_file, setting.name)
            if raw is None:
                values[setting.name] = (setting.name == "bind" and systemd_bind(environ)) or setting.default_value()
                continue
            try:
                values[setting.name] = setting.parse(raw.strip())
            except ValueError as exc:
                raise ConfigError("%s=%r: %s" % (where, raw, _reason(exc))) from None
        values["config"] = config_file
        inherited = environ.get(ENV_PREFIX + "UPGRADE_FD")
        if inherited:    # a master started by an upgrade in place: the old master's socket, whatever --bind says
            values["bind"] = BindAddress("fd", fd=int(inherited))
        app = getattr(args, "app", None) or environ.get(ENV_PREFIX + "APP") or from_file.get("app") or None
        return cls(app=app, **values)


def systemd_bind(environ) -> Optional[BindAddress]:
    """systemd socket activation (sd_listen_fds): with LISTEN_PID naming this process, the socket
    it passed as fd 3; None without it. fastcluster serves one socket, so more is an error."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return None
    if count < 1:
        return None
    if count > 1:
        raise ConfigError("LISTEN_FDS=%d: systemd passed %d sockets and fastcluster serves one "
                          "(give the .socket unit one ListenStream=)" % (count, count))
    return BindAddress("fd", fd=3)


FIXED_ON_RELOAD = ("bind", "backlog", "pid", "log_file", "preload", "metrics_bind", "umask")   # need a full restart


def reloaded(old: Config, new: Config):
    """The settings a running master takes from a re-read config (SIGHUP), and a warning for each
    change it cannot take: the socket, the pid file and the log file stay as they are, and so does
    a preloaded app. Raises AppImportError for a malformed new APP."""
    if new.app is not None:
        from .importer import check_app_string

        check_app_string(new.app)
    fixed = {name: getattr(old, name) for name in FIXED_ON_RELOAD}
    warnings = []
    changed = [name for name, value in fixed.items() if getattr(new, name) != value]
    if changed:
        warnings.append("%s only change with a full restart; keeping the running values" % ", ".join(changed))
    if new.app != old.app and old.preload:
        warnings.append("the app was preloaded; a new APP needs a full restart")
        fixed["app"] = old.app
    return dataclasses.replace(new, **fixed), warnings


def load_file(path: str) -> dict:
    """Read a TOML config file into {setting name: text}; keys may use '-' or '_'."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config file %s: %s" % (path, exc)) from None
    known = {s.name for s in SETTINGS if s.name != "config"} | {"app"}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError("config file %s: unknown setting %r" % (path, key))
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, (str, int, float)):
            raise ConfigError("config file %s: %s must be a string or a number" % (path, key))
        values[name] = str(value)
    return values


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith("invalid literal"):
        return "not a number"
    if text.startswith("could not convert"):
        return "not a number"
    return text


def _argparse_type(setting: Setting) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError("%r: %s" % (text, _reason(exc))) from None
    convert.__name__ = setting.name
    return convert


def add_settings(parser: argparse.ArgumentParser) -> None:
    """Add one option per Setting; argparse leaves unset options as None."""
    for setting in SETTINGS:
        default = "number of CPUs" if callable(setting.default) else (
            "none" if setting.default is None else setting.default)
        text = ("%s [default: %s; env %s]" % (setting.help, default, setting.env)).replace("%", "%%")
        if setting.parse is boolean:   # a flag on the command line; true/false in env and file
            parser.add_argument(*setting.flags, dest=setting.name, action="store_const", const=True,
                                default=None, help=text)
            continue
        parser.add_argument(*setting.flags, dest=setting.name, type=_argparse_type(setting), default=None,
                            metavar=setting.metavar, help=text)


def options_table() -> str:
    """The README's options table, made from SETTINGS (a test keeps the README in step)."""
    rows = ["| option | environment | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        default = "number of CPUs" if callable(setting.default) else (
            "none" if setting.default is None else setting.default)
        flags = ", ".join("`%s %s`" % (flag, setting.metavar) if flag.startswith("--") and setting.metavar
                          else "`%s`" % flag for flag in setting.flags)
        rows.append("| %s | `%s` | `%s` | %s |" % (flags, setting.env, default, setting.help.replace("|", "\\|")))
    return "\n".join(rows)
