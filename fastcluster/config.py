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
import logging
import os
import re
import socket
from typing import Any, Callable, Optional

from . import hooks, logs
from .errors import AppImportError, ConfigError
from .record import Record, field

ENV_PREFIX = "FASTCLUSTER_"
LOOPS = ("auto", "cython", "python")
FORWARDED_FAMILIES = ("x-forwarded", "forwarded", "none")   # wsgi.FORWARDED_FAMILIES (not imported by the master)


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


def h2_window(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 2 ** 31 - 1:
        raise ValueError("must be from 1 to 2147483647 (RFC 9113 6.9.2)")
    return value


def h2_frame_size(text: str) -> int:
    value = int(text)
    if not 16384 <= value <= 16777215:
        raise ValueError("must be from 16384 to 16777215 (RFC 9113 6.5.2)")
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


def glob_pattern(text: str) -> str:
    if not text or "/" in text:
        raise ValueError("a file name pattern such as *.py or *.html, without a directory")
    return text


def cert_reqs(text: str) -> str:
    names = {"0": "none", "1": "optional", "2": "required"}
    lowered = names.get(text.strip(), text.strip().lower())
    if lowered not in ("none", "optional", "required"):
        raise ValueError("choose from none, optional, required (or 0, 1, 2)")
    return lowered


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


class BindAddress(Record, frozen=True):
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


class Setting(Record, frozen=True):
    name: str                      # attribute of Config; env var is FASTCLUSTER_<NAME>
    flags: tuple                   # command-line flags
    parse: Callable[[str], Any]    # str -> value, raises ValueError
    default: Any                   # a value, or a callable giving one
    help: str
    metavar: Optional[str] = None
    many: bool = False             # repeatable: a tuple of parsed items (env: comma-separated; file: a list)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def default_value(self) -> Any:
        """The typed default: a callable is called, a str goes through `parse` like any input."""
        value = self.default() if callable(self.default) else self.default
        return self.parse(value) if isinstance(value, str) else value

    def parse_raw(self, raw) -> Any:
        """A value from the environment or a file: a str, or (a repeatable setting) a list of them."""
        if not self.many:
            return self.parse(raw.strip())
        items = raw.split(",") if isinstance(raw, str) else raw
        return tuple(self.parse(item.strip()) for item in items if item.strip())


SETTINGS = (
    Setting("config", ("-c", "--config"), path, None,
            "read settings (and server hooks) from this file: Python (FILE.py: module-level names, as in a "
            "gunicorn.conf.py) or TOML (keys are the option names); SIGHUP reads it again", "FILE"),
    Setting("bind", ("-b", "--bind"), parse_bind, (parse_bind("127.0.0.1:8000"),),
            "address to listen on: HOST:PORT, [IPv6]:PORT, unix:/path or fd://N (port 0 picks a free one); "
            "repeatable: every worker serves every address (under systemd socket activation, LISTEN_FDS: "
            "the sockets it passes)",
            "ADDRESS", many=True),
    Setting("workers", ("-w", "--workers"), positive_int, _default_workers,
            "number of worker processes (default: one per CPU)", "N"),
    Setting("threads", ("--threads",), positive_int, 32,
            "the most app calls each worker runs at once: the app runs on the loop's thread, and when a "
            "call waits for the world (an API, a slow query, a slow upload) another thread takes the loop "
            "over and starts more calls while they can run; 1 runs every call inline, one at a time", "N"),
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
    Setting("http", ("--http",), choice("auto", "1", "2"), "auto",
            "HTTP versions served: auto (HTTP/1.1, and HTTP/2 by ALPN over TLS or the h2c preface on a plain "
            "port), 1 (HTTP/1.1 only), 2 (HTTP/2 only: an HTTP/1.x request gets 505)", "{auto,1,2}"),
    Setting("h2_max_concurrent_streams", ("--h2-max-concurrent-streams",), positive_int, 100,
            "HTTP/2: streams a client may have open at once on one connection", "N"),
    # 256 KiB, by measurement (benchmarks/h2_window.py): an upload at 4.4 MB/s over a 50 ms round trip
    # (65535: 1.3), and at most 25 MiB of unread body held by one connection of 100 streams (65535: 6.4)
    Setting("h2_initial_window_size", ("--h2-initial-window-size",), h2_window, 262144,
            "HTTP/2: request body bytes a stream may send ahead of the app's reading (its flow-control window)",
            "BYTES"),
    Setting("h2_max_frame_size", ("--h2-max-frame-size",), h2_frame_size, 16384,
            "HTTP/2: the largest frame payload the server accepts (16384 to 16777215)", "BYTES"),
    Setting("backlog", ("--backlog",), positive_int, 2048,
            "listen queue length of the shared socket", "N"),
    Setting("defer_accept", ("--defer-accept",), non_negative_int, 1,
            "seconds the kernel holds a new TCP connection until its first bytes arrive (TCP_DEFER_ACCEPT: "
            "a worker wakes for a request, not for a bare connect, and reads it at once); a silent client "
            "is handed over after them and the header timeout starts then (0: off)", "S"),
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
            "seconds a new worker may take to start (app import, hooks, ASGI lifespan startup); past it its stack "
            "is logged, it is killed and started again with backoff, and a rolling restart waiting on it is "
            "aborted (0: no limit)", "S"),
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
            "headers set the client address and scheme (unix-socket peers are trusted, unless a --proxy-protocol "
            "header names another peer)", "LIST"),
    Setting("forwarded_headers", ("--forwarded-headers",), choice(*FORWARDED_FAMILIES), FORWARDED_FAMILIES[0],
            "the one proxy header family those peers' headers are read from: x-forwarded (X-Forwarded-For "
            "and X-Forwarded-Proto, which nginx, HAProxy and Kubernetes ingresses set), forwarded (RFC 7239), "
            "or none; the other family is an ordinary header, so a client cannot send it past the proxy",
            "{%s}" % ",".join(FORWARDED_FAMILIES)),
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
    Setting("reload", ("--reload",), boolean, False,
            "development: watch the app's source files and, on a change, restart the workers one at a time "
            "(an edit that fails to import leaves the old workers serving); not with --preload"),
    Setting("reload_dir", ("--reload-dir",), path, (),
            "watch this directory for --reload (repeatable; default: the app's package and the current "
            "directory)", "DIR", many=True),
    Setting("reload_include", ("--reload-include",), glob_pattern, (),
            "file names --reload watches, as a glob (repeatable; default: *.py)", "GLOB", many=True),
    Setting("certfile", ("--certfile",), path, None,
            "serve HTTPS: the server's certificate chain (PEM); needs --keyfile unless the file holds the key",
            "FILE"),
    Setting("keyfile", ("--keyfile",), path, None, "the certificate's private key (PEM)", "FILE"),
    Setting("keyfile_password", ("--keyfile-password",), str, None,
            "the password of an encrypted --keyfile", "PASSWORD"),
    Setting("ca_certs", ("--ca-certs",), path, None,
            "CA certificates (PEM) that client certificates are checked against (with --cert-reqs)", "FILE"),
    Setting("cert_reqs", ("--cert-reqs",), cert_reqs, "none",
            "client certificates: none, optional (checked when sent) or required (also 0, 1, 2)",
            "{none,optional,required}"),
    Setting("ssl_ciphers", ("--ssl-ciphers",), str, None,
            "TLS 1.2 cipher suites, in OpenSSL's cipher list format (default: OpenSSL's; TLS 1.2 is the "
            "minimum version)", "CIPHERS"),
    Setting("demo_work_ms", ("--demo-work-ms",), non_negative_int, 0,
            "built-in demo app only: burn this many ms of CPU per request, like the seed's slow handler",
            "MS"),
)


_BY_NAME = {setting.name: setting for setting in SETTINGS}


def _default(name: str) -> Any:
    """A Config field whose default is its Setting's."""
    return field(_BY_NAME[name].default_value)


class Config(Record, frozen=True):
    """Every setting, resolved; one field per SETTINGS entry (a test keeps the two in step)."""

    app: Optional[str] = None      # "module:attribute"; None serves the built-in demo app
    hooks: dict = field(dict, compare=False)   # hook name -> callable (hooks.py)
    config: Optional[str] = _default("config")
    bind: tuple = _default("bind")       # BindAddress, one or more
    workers: int = _default("workers")
    threads: int = _default("threads")
    loop: str = _default("loop")
    interface: str = _default("interface")
    event_loop: str = _default("event_loop")
    lifespan: str = _default("lifespan")
    ws_max_size: int = _default("ws_max_size")
    ws_ping_interval: float = _default("ws_ping_interval")
    ws_ping_timeout: float = _default("ws_ping_timeout")
    http: str = _default("http")
    h2_max_concurrent_streams: int = _default("h2_max_concurrent_streams")
    h2_initial_window_size: int = _default("h2_initial_window_size")
    h2_max_frame_size: int = _default("h2_max_frame_size")
    backlog: int = _default("backlog")
    defer_accept: int = _default("defer_accept")
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
    forwarded_headers: str = _default("forwarded_headers")
    proxy_protocol: bool = _default("proxy_protocol")
    health_path: Optional[str] = _default("health_path")
    shutdown_delay: float = _default("shutdown_delay")
    metrics_bind: Optional[BindAddress] = _default("metrics_bind")
    reload: bool = _default("reload")
    reload_dir: tuple = _default("reload_dir")
    reload_include: tuple = _default("reload_include")
    certfile: Optional[str] = _default("certfile")
    keyfile: Optional[str] = _default("keyfile")
    keyfile_password: Optional[str] = _default("keyfile_password")
    ca_certs: Optional[str] = _default("ca_certs")
    cert_reqs: str = _default("cert_reqs")
    ssl_ciphers: Optional[str] = _default("ssl_ciphers")
    demo_work_ms: int = _default("demo_work_ms")

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ=os.environ) -> "Config":
        """Resolve each setting: command line, then FASTCLUSTER_*, then the config file, then the default."""
        config_file = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG") or None
        loaded = load_file(config_file) if config_file else FileSettings()
        from_file = loaded.values
        values = {}
        for setting in SETTINGS:
            given = getattr(args, setting.name, None)
            if given is not None:
                values[setting.name] = tuple(given) if setting.many else given   # argparse parsed it already
                continue
            raw, where = environ.get(setting.env), setting.env
            if raw is None and setting.name in from_file:
                raw, where = from_file[setting.name], "%s: %s" % (config_file, setting.name)
            if raw is None:
                values[setting.name] = (setting.name == "bind" and systemd_binds(environ)) or setting.default_value()
                continue
            try:
                values[setting.name] = setting.parse_raw(raw)
            except ValueError as exc:
                raise ConfigError("%s=%r: %s" % (where, raw, _reason(exc))) from None
        values["config"] = config_file
        inherited = environ.get(ENV_PREFIX + "UPGRADE_FD")
        if inherited:    # a master started by an upgrade in place: the old master's sockets, whatever --bind says
            values["bind"] = tuple(BindAddress("fd", fd=int(fd)) for fd in inherited.split(","))
        inherited = environ.get(ENV_PREFIX + "UPGRADE_METRICS_FD")
        if inherited and values["metrics_bind"] is not None:   # and its metrics socket (master.py closes
            values["metrics_bind"] = BindAddress("fd", fd=int(inherited))   # it when there is no --metrics-bind)
        app = getattr(args, "app", None) or environ.get(ENV_PREFIX + "APP") or from_file.get("app") or None
        config = cls(app=app, hooks=loaded.hooks, **values)
        check(config)
        return config


def check(config: Config) -> None:
    """What no single setting can tell alone."""
    if config.reload and config.preload:
        raise ConfigError("--reload restarts the workers to load edited code, and a --preload app is "
                          "loaded once in the master: use one or the other")
    if config.keyfile and not config.certfile:
        raise ConfigError("--keyfile needs --certfile")
    for name in ("ca_certs", "ssl_ciphers", "keyfile_password"):
        if getattr(config, name) and not config.certfile:
            raise ConfigError("--%s needs --certfile (TLS)" % name.replace("_", "-"))
    if config.cert_reqs != "none" and not config.ca_certs:
        raise ConfigError("--cert-reqs %s needs --ca-certs (the CAs client certificates are checked against)"
                          % config.cert_reqs)


def systemd_binds(environ) -> tuple:
    """systemd socket activation (sd_listen_fds): with LISTEN_PID naming this process, the sockets
    it passed from fd 3 on; () without it."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return None
    if count < 1:
        return ()
    return tuple(BindAddress("fd", fd=3 + i) for i in range(count))


FIXED_ON_RELOAD = ("bind", "backlog", "defer_accept", "pid", "log_file", "preload", "metrics_bind", "umask", "reload",
                   "reload_dir", "reload_include")   # need a full restart


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
    return new.replace(**fixed), warnings


class FileSettings(Record):
    values: dict = field(dict)   # setting name -> str (or a list of str)
    hooks: dict = field(dict)    # hook name -> callable


# gunicorn's names for fastcluster's settings, so that a gunicorn.conf.py reads as it is
GUNICORN_NAMES = {
    "preload_app": "preload", "accesslog": "access_log", "errorlog": "log_file", "loglevel": "log_level",
    "keepalive": "keep_alive", "pidfile": "pid", "limit_request_line": "max_request_line",
    "limit_request_fields": "max_headers", "worker_connections": "max_connections", "wsgi_app": "app",
    "ciphers": "ssl_ciphers", "reload_extra_files": None,
}
# gunicorn settings with no fastcluster counterpart: a warning each, and the rest of the file counts
GUNICORN_IGNORED = ("worker_class", "daemon", "raw_env", "chdir", "proc_name", "default_proc_name",
                    "worker_tmp_dir", "limit_request_field_size", "capture_output", "enable_stdio_inheritance",
                    "statsd_host", "statsd_prefix", "logconfig", "logconfig_dict", "syslog", "reuse_port",
                    "sendfile", "spew", "check_config", "print_config", "paste", "tmp_upload_dir",
                    "secure_scheme_headers", "forwarder_headers", "initgroups", "disable_redirect_access_to_syslog",
                    "strip_header_spaces", "permit_unconventional_http_method", "casefold_http_method",
                    "header_map", "ssl_version", "suppress_ragged_eofs", "do_handshake_on_connect",
                    "is_ssl", "reload_engine", "errorlog_format")
_NAMES = {s.name for s in SETTINGS if s.name != "config"} | {"app"}
_MANY = {s.name for s in SETTINGS if s.many}


def load_file(path: str) -> FileSettings:
    """Read a config file: Python when its name ends in .py, else TOML."""
    if path.endswith(".py"):
        return _load_python(path)
    return _load_toml(path)


def _load_toml(path: str) -> FileSettings:
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
    loaded = FileSettings()
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in hooks.NAMES:
            if not isinstance(value, str):
                raise ConfigError('config file %s: %s must name a function, as "module:function"' % (path, key))
            loaded.hooks[name] = _import_hook(path, key, value)
            continue
        if name not in _NAMES:
            raise ConfigError("config file %s: unknown setting %r" % (path, key))
        loaded.values[name] = _text(path, key, name, value)
    return loaded


def _load_python(path: str) -> FileSettings:
    """A Python config file is run, and its module-level names are read: settings by their option
    names with underscores (or gunicorn's), hooks as functions. Names that are neither are ignored,
    with a warning for a gunicorn setting fastcluster does not have."""
    import runpy
    import traceback
    import types

    if not os.path.isfile(path):
        raise ConfigError("cannot read config file %s: No such file" % path)
    try:
        namespace = runpy.run_path(path, run_name="__config__")
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc)) from None
    except SyntaxError as exc:
        raise ConfigError("config file %s, line %s: %s" % (path, exc.lineno, exc.msg)) from None
    except BaseException as exc:
        lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
                 if os.path.abspath(frame.filename) == os.path.abspath(path)]
        where = ", line %d" % lines[-1] if lines else ""
        raise ConfigError("config file %s%s raised %s" % (
            path, where, "".join(traceback.format_exception_only(type(exc), exc)).strip())) from None
    loaded = FileSettings()
    notes = []
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if key in hooks.NAMES:
            if not callable(value):
                raise ConfigError("config file %s: %s must be a function" % (path, key))
            loaded.hooks[key] = value
            continue
        if key in hooks.UNSUPPORTED and callable(value):
            notes.append("the %s hook is gunicorn's and fastcluster does not call it" % key)
            continue
        if callable(value):
            continue       # a helper function or class of the file's own
        name = GUNICORN_NAMES.get(key, key)
        if key in GUNICORN_IGNORED or (key in GUNICORN_NAMES and name is None):
            notes.append("%s is a gunicorn setting fastcluster does not have; ignored" % key)
            continue
        if name not in _NAMES:
            notes.append("%s is not a fastcluster setting; ignored" % key)
            continue
        if value is None:
            continue
        if name == "log_file" and value == "-":
            continue       # gunicorn's errorlog "-": stderr, which is fastcluster's default
        if name == "forwarded_allow_ips" and isinstance(value, (list, tuple)):
            value = ",".join(str(item) for item in value)
        loaded.values[name] = _text(path, key, name, value)
    for note in notes:
        logging.getLogger("fastcluster").warning("config file %s: %s", path, note)
    return loaded


def _text(path, key, name, value):
    """A file's value as the text (or, for a repeatable setting, the list of texts) `parse` reads."""
    if name in _MANY and isinstance(value, (list, tuple)):
        return [_text(path, key, "", item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ConfigError("config file %s: %s must be a string or a number" % (path, key))


def _import_hook(path, key, target):
    from .importer import import_object, is_target

    if not is_target(target):
        raise ConfigError('config file %s: %s = %r: name a function as "module:function"' % (path, key, target))
    try:
        hook = import_object(target, "hook")
    except AppImportError as exc:
        raise ConfigError("config file %s: %s: %s" % (path, key, exc)) from None
    except Exception as exc:
        raise ConfigError("config file %s: %s: importing %s raised %s: %s" % (
            path, key, target, type(exc).__name__, exc)) from None
    return hook


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


def _shown_default(setting: Setting) -> str:
    if callable(setting.default):
        return "number of CPUs"
    if isinstance(setting.default, tuple) and setting.default:
        return ", ".join(str(item) for item in setting.default)
    return "none" if setting.default in (None, ()) else setting.default


def add_settings(parser: argparse.ArgumentParser) -> None:
    """Add one option per Setting; argparse leaves unset options as None."""
    for setting in SETTINGS:
        default = _shown_default(setting)
        text = ("%s [default: %s; env %s]" % (setting.help, default, setting.env)).replace("%", "%%")
        if setting.parse is boolean:   # a flag on the command line; true/false in env and file
            parser.add_argument(*setting.flags, dest=setting.name, action="store_const", const=True,
                                default=None, help=text)
            continue
        parser.add_argument(*setting.flags, dest=setting.name, type=_argparse_type(setting), default=None,
                            metavar=setting.metavar, help=text,
                            action="append" if setting.many else "store")


def options_table() -> str:
    """The README's options table, made from SETTINGS (a test keeps the README in step)."""
    rows = ["| option | environment | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        default = _shown_default(setting)
        flags = ", ".join("`%s %s`" % (flag, setting.metavar) if flag.startswith("--") and setting.metavar
                          else "`%s`" % flag for flag in setting.flags)
        rows.append("| %s | `%s` | `%s` | %s |" % (flags, setting.env, default, setting.help.replace("|", "\\|")))
    return "\n".join(rows)
