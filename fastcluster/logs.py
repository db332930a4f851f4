"""The server's own log (levels, text or JSON lines) and the access log.

The access log is written by each worker for the requests it answers: lines are
gathered in memory and written in batches, at most ACCESS_BATCH lines or one
second apart (on the loop's tick), and when the worker stops.  A batch never
splits a line, and a batch for a pipe is cut into writes of at most PIPE_BUF
bytes, so the lines of several workers sharing one pipe never interleave.

A pipe or socket (stdout read by another program, journald) is written without
blocking: a reader that stops reading must not stop the loop. What it does not
take waits, up to ACCESS_HOLD bytes of whole lines, and a thread of the log's own
writes it as soon as the reader takes it; past ACCESS_HOLD, lines are dropped and
counted (`dropped`, and the worker's LOG_DROPPED cell on the board: /metrics).
A worker's own log lines take the same way when stderr is a pipe (WorkerLogHandler), counted in
OWN_LOG_DROPPED.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import select
import socket
import stat
import sys
import threading
import time

from .board import LOG_DROPPED, OWN_LOG_DROPPED

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"

ACCESS_BATCH = 256      # lines gathered before a write (the tick writes the rest once a second)
ACCESS_HOLD = 1 << 20   # bytes of whole lines held for a pipe or socket that is not read; then lines are dropped
CLOSE_WAIT = 1.0        # seconds a stopping worker waits for a full pipe or socket to take what is held

# The combined log format, then the worker's pid and the request time in microseconds.
DEFAULT_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(p)s %(D)s'

# Access log fields: name -> (expression over env, status, size, secs, stamp, pid; escaped?, meaning)
_FIELDS = {
    "h": ('env.get("REMOTE_ADDR") or "-"', True, "client address"),
    "l": ('"-"', False, "remote logname (always -)"),
    "u": ('"-"', False, "remote user (always -)"),
    "t": ("stamp", False, "time the line was written, [day/month/year:hour:minute:second zone]"),
    "r": ('"-" if (m := env.get("REQUEST_METHOD")) is None else '
          'm + " " + env.get("RAW_URI", "") + " " + env.get("SERVER_PROTOCOL", "")', True,
          'request line, "GET /path?query HTTP/1.1" (- for a refused request)'),
    "m": ('env.get("REQUEST_METHOD", "-")', True, "method"),
    "U": ('env.get("PATH_INFO", "-")', True, "path, decoded"),
    "q": ('env.get("QUERY_STRING", "")', True, "query string"),
    "H": ('env.get("SERVER_PROTOCOL", "-")', True, "protocol"),
    "s": ("status", False, "status code"),
    "b": ('size or "-"', False, "response body bytes (- for none)"),
    "B": ("size", False, "response body bytes"),
    "f": ('env.get("HTTP_REFERER", "-")', True, "Referer header"),
    "a": ('env.get("HTTP_USER_AGENT", "-")', True, "User-Agent header"),
    "p": ("pid", False, "worker pid"),
    "D": ("int(secs * 1000000)", False, "request time in microseconds"),
    "T": ("int(secs)", False, "request time in whole seconds"),
    "L": ('"%.6f" % secs', False, "request time in seconds, 6 decimals"),
}
_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')      # escaped as \xHH, \" and \\ (Apache's way)


def access_fields_help() -> str:
    """The field list for --help and the README."""
    return ", ".join("%%(%s)s %s" % (name, meaning) for name, (_e, _s, meaning) in _FIELDS.items()) + \
        ", %({header-name}i)s a request header"


def _escape_char(match) -> str:
    c = match.group()
    return "\\" + c if c in '"\\' else "\\x%02x" % ord(c) if ord(c) < 256 else c.encode(
        "unicode_escape").decode("ascii")


def escape(text: str) -> str:
    return _UNSAFE.sub(_escape_char, text)


_TOKEN = re.compile(r"%\((\w+|\{[A-Za-z0-9-]+\}i)\)s|%%|%")


def compile_access_format(fmt: str):
    """A function (env, status, size, secs, stamp, pid) -> the line, for an access log format.

    The format uses %(name)s fields (see _FIELDS) and %% for a percent sign; anything else
    raises ValueError. The function is generated once, as one f-string, so a line costs one
    call; fields that carry client bytes are checked together and escaped only when one of
    them holds something unsafe. A value that is not a str (an app may write anything into
    its environ) raises TypeError, and AccessLog.log() then renders from str() copies.
    """
    names, exprs, escaped, pieces, literal, pos = [], [], [], [], "", 0
    for match in _TOKEN.finditer(fmt):
        literal += fmt[pos:match.start()]
        pos = match.end()
        name = match.group(1)
        if match.group(0) == "%%":
            literal += "%"
            continue
        if name is None:
            raise ValueError("a lone %% in %r: write %%%% for a percent sign, %%(name)s for a field" % fmt)
        if name.startswith("{"):
            key = "HTTP_" + name[1:-2].upper().replace("-", "_")
            expr, unsafe = "env.get(%r, %r)" % (key, "-"), True
        elif name in _FIELDS:
            expr, unsafe = _FIELDS[name][:2]
        else:
            raise ValueError("unknown field %%(%s)s (fields: %s)" % (name, ", ".join(_FIELDS)))
        variable = "v%d" % len(names)
        if unsafe:
            escaped.append(variable)
        names.append(variable)
        exprs.append(expr)
        pieces.append(repr(literal))
        pieces.append("f'{%s}'" % variable)
        literal = ""
    pieces.append(repr(literal + fmt[pos:] + "\n"))
    lines = ["def render(env, status, size, secs, stamp, pid):"]
    lines.extend("    %s = %s" % (name, expr) for name, expr in zip(names, exprs))
    if escaped:
        lines.append("    text = %s" % " + ".join(escaped))
        lines.append("    if not (text.isascii() and text.isprintable()) or '\"' in text or '\\\\' in text:")
        lines.extend("        %s = escape(%s)" % (name, name) for name in escaped)
    lines.append("    return " + " ".join(pieces))
    namespace = {"escape": escape}
    exec(compile("\n".join(lines), "<access log format>", "exec"), namespace)
    return namespace["render"]


def check_access_format(fmt: str) -> str:
    """config.py's parser for --access-log-format."""
    compile_access_format(fmt)
    return fmt


class AccessLog:
    """One worker's access log: '-' is stdout, anything else a file opened for appending.

    `cells`: the worker's slot on the board (board.slot_cells), where the count of dropped lines
    is published (in its `cell`); None without a master. `announce`: log when lines start to be
    dropped and when writing resumes (not for the log's own sink: WorkerLogHandler)."""

    def __init__(self, target: str, fmt: str = DEFAULT_ACCESS_FORMAT, cells=None, cell=LOG_DROPPED,
                 announce=True):
        self.target = target
        self.cell = cell
        self.announce = announce
        self.render = compile_access_format(fmt)
        self.default_format = fmt == DEFAULT_ACCESS_FORMAT   # the compiled loop renders it in C
        self.pid = os.getpid()
        self.lines = []
        self.stamp = ""
        self.stamp_until = 0.0
        self.fd = -1
        self.owned = False
        self.pipe = False
        self.sock = None        # a socket sink (journald's stdout): sent to with MSG_DONTWAIT
        self.own_fd = -1        # a pipe's own non-blocking open file description (stdout's stays blocking)
        self.held = bytearray() # whole lines a pipe or socket has not taken yet (at most ACCESS_HOLD)
        self.lock = threading.Lock()            # held, dropped: the loop adds, the drainer takes
        self.wake = threading.Condition(self.lock)
        self.drainer = None     # the thread that waits for a slow sink, started the first time one is
        self.closing = False
        self.dropped = 0
        self.dropping = False   # lines are being dropped now (logged when it starts and when it ends)
        self.cells = cells
        self.open()

    def open(self):
        if self.target == "-":
            self.fd, self.owned = sys.stdout.fileno(), False
        else:
            self.fd, self.owned = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                                          0o644), True
        mode = os.fstat(self.fd).st_mode
        self.pipe = stat.S_ISFIFO(mode)
        if self.pipe:
            # O_NONBLOCK belongs to the open file description, which stdout shares with the master,
            # the other workers and the app's print(): a description of our own, opened anew
            # through /proc, is non-blocking for this log alone. (A FIFO we opened is ours already.)
            try:
                self.own_fd = self.fd if self.owned else os.open(
                    "/proc/self/fd/%d" % self.fd, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                if self.owned:
                    fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_NONBLOCK)
            except OSError:
                self.own_fd = -1            # no /proc: blocking writes, as to a file
        elif stat.S_ISSOCK(mode):
            self.sock = socket.socket(fileno=os.dup(self.fd))

    def reopen(self):
        """SIGUSR1 (log rotation): write what is gathered, then open the file anew (a named pipe
        is not rotated: it stays, and so does its drainer)."""
        self.flush()
        if self.owned and self.own_fd < 0 and self.sock is None:
            self._close_fds()
            self.open()

    def log(self, env, status, size, secs):
        now = time.time()
        if now >= self.stamp_until:
            self.stamp_until = int(now) + 1
            self.stamp = self.stamp_for(int(now))
        try:
            line = self.render(env, status, size, secs, self.stamp, self.pid)
        except TypeError:   # the app put something other than a str into the environ
            line = self.render({key: value if type(value) is str else str(value) for key, value in env.items()},
                               status, size, secs, self.stamp, self.pid)
        lines = self.lines
        lines.append(line)
        if len(lines) >= ACCESS_BATCH:
            self.flush()

    @staticmethod
    def stamp_for(second: int) -> str:
        """%(t)s for a Unix second, in local time: [26/Nov/2026:10:52:44 +0000]."""
        return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))

    def write_block(self, block: bytes):
        """Whole lines rendered elsewhere (the compiled loop), after the lines gathered here."""
        self.flush()
        self._put(block)

    def flush(self):
        if self.lines:
            lines, self.lines = self.lines, []
            self._put("".join(lines).encode("utf-8", "backslashreplace"))

    def _put(self, data):
        """Whole lines to the sink, after those it holds. The loop writes only while nothing is
        held, and never waits; what a pipe or socket does not take is left to the drainer."""
        if self.own_fd < 0 and self.sock is None:
            self._write(data)               # a file (or a tty): it takes everything
            return
        with self.lock:
            held = self.held
            if not held:
                try:
                    data = data[self._send_now(data):]
                except OSError as exc:
                    self._lost(data.count(b"\n"), os.strerror(exc.errno or errno.EIO))
                    return
                if not data:
                    return
            room = ACCESS_HOLD - len(held)
            if len(data) > room:            # a sink that has not read for a while: whole lines go
                cut = data.rfind(b"\n", 0, room) + 1
                self._lost(data.count(b"\n", cut), "its reader is not reading")
                data = data[:cut]
            held += data
            if self.drainer is None:
                self.drainer = threading.Thread(target=self._drain, name="fastcluster access log", daemon=True)
                self.drainer.start()
            self.wake.notify()

    def _send_now(self, data):
        """Bytes of `data` (whole lines) the sink takes now, without waiting: for a pipe in writes of
        whole lines of at most PIPE_BUF bytes (a longer line alone), which the kernel keeps whole
        among the other workers' and which a full pipe refuses whole (EAGAIN)."""
        done, size = 0, len(data)
        view = memoryview(data)
        try:
            while done < size:
                if self.sock is not None:
                    done += self.sock.send(view[done:], socket.MSG_DONTWAIT)
                    continue
                end = size
                if end - done > select.PIPE_BUF:
                    end = (data.rfind(b"\n", done, done + select.PIPE_BUF) + 1 or data.find(b"\n", done) + 1
                           or size)
                done += os.write(self.own_fd, view[done:end])
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            view.release()
        return done

    def _drain(self):
        """The drainer thread: waits until the sink can take what is held, so that the loop never
        does; from the moment the reader reads again, lines flow at its pace."""
        fd = self.sock if self.sock is not None else self.own_fd
        while True:
            with self.lock:
                while not self.held and not self.closing:
                    self.wake.wait()
                if self.closing:
                    return
                held = self.held
                chunk = bytes(held[:held.rfind(b"\n", 0, 1 << 16) + 1 or held.find(b"\n") + 1])   # whole lines
            select.select([], [fd], [], 0.2)            # (0.2: a closing log is noticed soon)
            try:
                sent = self._send_now(chunk)
            except OSError as exc:
                with self.lock:
                    self._lost(self.held.count(b"\n"), os.strerror(exc.errno or errno.EIO))
                    del self.held[:]
                    self.wake.notify_all()
                continue
            with self.lock:
                if self.closing:
                    return
                del self.held[:sent]
                if not self.held:
                    self.wake.notify_all()          # (close() may be waiting)
                    if self.dropping:
                        self.dropping = False
                        if self.announce:
                            logging.getLogger("fastcluster").warning(
                            "access log %s: writing again (%d lines dropped so far)", self.target, self.dropped)

    def _write(self, data):
        view = memoryview(data)
        deadline = 0.0
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except InterruptedError:
                continue
            except BlockingIOError:    # a non-blocking stdout that is full: wait a little
                deadline = deadline or time.monotonic() + 1.0
                if time.monotonic() < deadline:
                    select.select([], [self.fd], [], 0.05)
                    continue
                self._lost(bytes(view).count(b"\n"), "its reader is not reading")
                return
            except OSError as exc:
                self._lost(bytes(view).count(b"\n"), os.strerror(exc.errno or errno.EIO))
                return

    def _lost(self, count, why):
        if not count:
            return
        if not self.dropping:
            self.dropping = True
            if self.announce:
                logging.getLogger("fastcluster").error("access log %s: %s; dropping lines", self.target, why)
        self.dropped += count
        if self.cells is not None:
            self.cells[self.cell] = self.dropped

    def close(self):
        """The worker stops: what is gathered and held gets CLOSE_WAIT seconds to go out."""
        self.flush()
        with self.lock:
            deadline = time.monotonic() + CLOSE_WAIT
            while self.held and time.monotonic() < deadline:
                self.wake.wait(deadline - time.monotonic())
            if self.held:
                self._lost(self.held.count(b"\n"), "its reader is not reading")
                del self.held[:]
            self.closing = True
            self.wake.notify_all()
        if self.drainer is not None:
            self.drainer.join(1.0)
        self._close_fds()

    def _close_fds(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.own_fd >= 0 and self.own_fd != self.fd:
            os.close(self.own_fd)
        self.own_fd = -1
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def check_access_target(target: str) -> None:
    """Fail early, in the master, with a clear message when the access log cannot be opened."""
    if target and target != "-":
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(fd)


# --- the server's own log ---

def iso_time(when: float) -> str:
    """ISO 8601 local time to the millisecond with the offset: 2026-11-26T10:52:44.123+00:00 (what
    datetime's isoformat gives, without importing datetime into every worker)."""
    t = time.localtime(when)
    offset = t.tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    offset = abs(offset)
    return "%s.%03d%s%02d:%02d" % (time.strftime("%Y-%m-%dT%H:%M:%S", t), int(when % 1 * 1000), sign,
                                   offset // 60, offset % 60)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, pid, logger, message, and the traceback as one string."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import json   # here: only --log-format json needs it in every process

        self.dumps = json.dumps

    def format(self, record):
        entry = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return self.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`[time] [pid] [LEVEL] message`; a traceback's lines get the same prefix, so that every line
    of the log names its process (grep by pid finds a whole event)."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record):
        text = super().format(record)
        if "\n" not in text:
            return text
        first, rest = text.split("\n", 1)
        prefix = first[:len(first) - len(record.getMessage().split("\n", 1)[0])]
        return first + "".join("\n" + prefix + line for line in rest.split("\n"))


class WorkerLogHandler(logging.Handler):
    """A worker's own log lines, when stderr is a pipe (a container runtime's, a supervisor's),
    through an AccessLog sink of their own: a reader that stops reading never blocks the worker's
    loop; past ACCESS_HOLD the lines are dropped and counted (OWN_LOG_DROPPED). (Tracebacks that
    go to sys.stderr itself, faulthandler's among them, are still written as before.)"""

    def __init__(self, sink, formatter):
        super().__init__()
        self.sink = sink
        self.setFormatter(formatter)

    def emit(self, record):
        try:
            self.sink._put((self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except Exception:
            self.handleError(record)

    def close(self):
        self.sink.close()
        super().close()


def worker_log(cells):
    """In a worker: its log lines go through a WorkerLogHandler when stderr is a pipe (a file, a
    tty or --log-file takes every line as it comes; a socket is left as it is). Returns the
    handler to close when the worker stops, or None."""
    try:
        if not stat.S_ISFIFO(os.fstat(2).st_mode):
            return None
        sink = AccessLog("/proc/self/fd/2", cells=cells, cell=OWN_LOG_DROPPED, announce=False)
    except OSError:
        return None
    root = logging.getLogger()
    formatter = root.handlers[0].formatter if root.handlers else TextFormatter()
    handler = WorkerLogHandler(sink, formatter)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    return handler


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger on stderr (fd 2, which --log-file points at a file)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())


# --- lines and files of any process ---

def say(line):
    """One line on stdout in one write(), so lines from several processes never interleave."""
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def reopen_log(path):
    """Point fd 2 (stderr, and so every log line and traceback) at `path`, opened anew."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 2)
    finally:
        os.close(fd)
