"""Prometheus metrics, served by the master at --metrics-bind, never through a worker.

The numbers come from the board (board.py) that the workers write and the master
reads, plus what the master itself knows (restarts, generation, rollout). Series
are per worker *slot* (label worker="1".."N"): a slot's counters carry over when
its process is replaced, so they only ever grow while the master runs.

The endpoint is a few lines of non-blocking HTTP/1.0-style serving inside the
master's selector loop: one request per connection, answered and closed. It holds at most
MAX_CLIENTS connections (a new one pushes the oldest out) and each for at most CLIENT_TIMEOUT
seconds, so idle or slow clients can never take the descriptors the master needs to fork.
"""

from __future__ import annotations

import selectors
import socket
import time

from .board import CLASSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD = 8192          # bytes of request head read before giving up on a scraper
CLIENT_TIMEOUT = 2.0     # seconds a scrape connection may stay open, from its accept to its answer's end
MAX_CLIENTS = 32         # scrape connections held at once; a new one closes the oldest

# (name, type, help, where the value comes from)
_SLOT_METRICS = (
    ("requests_total", "counter", "Requests handed to the app.", "requests"),
    ("received_bytes_total", "counter", "Bytes read from clients.", "bytes_in"),
    ("sent_bytes_total", "counter", "Bytes written to clients.", "bytes_out"),
    ("connections_total", "counter", "Connections accepted.", "accepted"),
    ("requests_in_flight", "gauge", "Requests read in full and not answered yet.", "in_flight"),
    ("connections_open", "gauge", "Connections open.", "conns"),
    ("app_threads_busy", "gauge", "App calls in progress (with --threads N, N means every app thread is busy).",
     "busy"),
    ("worker_rss_bytes", "gauge", "Resident memory of the slot's live processes, sampled each second.", "rss"),
    ("access_log_dropped_lines_total", "counter",
     "Access log lines dropped because their pipe or socket was not read (1 MiB is held first).", "log_dropped"),
    ("log_dropped_lines_total", "counter",
     "The workers' own log lines dropped because stderr, a pipe, was not read (1 MiB is held first).",
     "own_log_dropped"),
)


def render(snapshot) -> str:
    """The Prometheus text exposition (format 0.0.4) of a status.Snapshot."""
    out = []

    def family(name, kind, help_text):
        out.append("# HELP fastcluster_%s %s" % (name, help_text))
        out.append("# TYPE fastcluster_%s %s" % (name, kind))

    def sample(name, labels, value):
        text = ",".join('%s="%s"' % (key, _label(val)) for key, val in labels)
        out.append("fastcluster_%s{%s} %s" % (name, text, _number(value)) if text else
                   "fastcluster_%s %s" % (name, _number(value)))

    slots = snapshot.slots
    for name, kind, help_text, key in _SLOT_METRICS:
        family(name, kind, help_text)
        for slot, totals in slots:
            sample(name, (("worker", slot),), getattr(totals, key))
    family("responses_total", "counter", "Responses by status class, the server's own refusals included.")
    for slot, totals in slots:
        for cls in CLASSES:
            sample("responses_total", (("worker", slot), ("class", cls)), totals.responses[cls])
    family("refused_requests_total", "counter",
           "Requests the server refused itself (malformed, too large, too slow), by status.")
    for slot, totals in slots:
        for reason, value in totals.refused.items():
            sample("refused_requests_total", (("worker", slot), ("reason", reason)), value)
    family("worker_restarts_total", "counter", "Worker processes replaced, by cause.")
    for slot, totals in slots:
        for cause, value in totals.restarts.items():
            sample("worker_restarts_total", (("worker", slot), ("cause", cause)), value)
    family("worker_last_heartbeat_timestamp_seconds", "gauge",
           "Unix time of the newest heartbeat from the slot's processes.")
    for slot, totals in slots:
        if totals.heartbeat:
            sample("worker_last_heartbeat_timestamp_seconds", (("worker", slot),), round(totals.heartbeat, 3))
    family("worker_info", "gauge", "One series per live worker process: its slot, pid, generation and state.")
    for row in snapshot.workers:
        sample("worker_info", (("worker", row.slot), ("pid", row.pid), ("generation", row.generation),
                               ("state", row.state)), 1)
    family("workers_wanted", "gauge", "Workers the master keeps running.")
    sample("workers_wanted", (), snapshot.workers_wanted)
    family("generation", "gauge", "Rolling restarts begun since the master started, plus one.")
    sample("generation", (), snapshot.generation)
    family("rollout_in_progress", "gauge", "1 while a rolling restart or a recycling is replacing workers.")
    sample("rollout_in_progress", (), int(snapshot.rollout.in_progress))
    family("master_start_time_seconds", "gauge", "Unix time the master started.")
    sample("master_start_time_seconds", (), round(snapshot.started, 3))
    out.append("")
    return "\n".join(out)


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


class Endpoint:
    """GET /metrics on its own listening socket, served from the master's selector loop."""

    def __init__(self, sock: socket.socket, selector, snapshot):
        self.sock = sock
        self.selector = selector
        self.snapshot = snapshot          # () -> the status.Snapshot render() takes
        self.clients = {}                 # socket -> [received bytes, bytes to send, deadline]
        self.paused_until = 0.0           # accepting paused (out of descriptors) until then
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, self._on_accept)

    def fds(self):
        return [self.sock.fileno()] + [client.fileno() for client in self.clients]

    def close(self):
        for client in list(self.clients):
            self._drop(client)
        if not self.paused_until:
            self.selector.unregister(self.sock)
        self.sock.close()

    def deadline(self) -> float:
        """When expire() next has something to do (the master's loop wakes for it)."""
        times = [state[2] for state in self.clients.values()]
        if self.paused_until:
            times.append(self.paused_until)
        return min(times, default=float("inf"))

    def expire(self, now: float) -> None:
        if self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.selector.register(self.sock, selectors.EVENT_READ, self._on_accept)
        for client, state in list(self.clients.items()):
            if now >= state[2]:
                self._drop(client)

    def _on_accept(self, _events):
        for _ in range(16):
            try:
                client, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Out of descriptors (or the client went away): the socket stays readable, so
                # stop watching it for a second instead of spinning on it.
                self.selector.unregister(self.sock)
                self.paused_until = time.monotonic() + 1.0
                return
            if len(self.clients) >= MAX_CLIENTS:   # full: the oldest goes (a scraper asks at once)
                self._drop(next(iter(self.clients)))
            client.setblocking(False)
            self.clients[client] = [b"", b"", time.monotonic() + CLIENT_TIMEOUT]
            self.selector.register(client, selectors.EVENT_READ, lambda events, c=client: self._on_client(c))

    def _on_client(self, client):
        state = self.clients.get(client)
        if state is None:
            return
        if state[1]:
            self._send(client, state)
            return
        try:
            data = client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        state[0] += data
        if b"\r\n\r\n" not in state[0] and b"\n\n" not in state[0]:
            if len(state[0]) > MAX_HEAD:
                state[1] = _response("431 Request Header Fields Too Large", b"request head too large\n")
                self._send(client, state)
            return
        state[1] = self._answer(state[0])
        self._send(client, state)

    def _answer(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response("400 Bad Request", b"bad request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return _response("404 Not Found", b"metrics are at /metrics\n")
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"use GET\n", extra="Allow: GET, HEAD\r\n")
        body = render(self.snapshot()).encode("utf-8")
        return _response("200 OK", body, CONTENT_TYPE, head_only=method == b"HEAD")

    def _send(self, client, state):
        try:
            sent = client.send(state[1])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client)
            return
        state[1] = state[1][sent:]
        if not state[1]:
            self._drop(client)
        else:      # the rest when the socket has room
            self.selector.modify(client, selectors.EVENT_WRITE, lambda events, c=client: self._on_client(c))

    def _drop(self, client):
        self.clients.pop(client, None)
        try:
            self.selector.unregister(client)
        except (KeyError, ValueError):
            pass
        client.close()


def _response(status, body, content_type="text/plain; charset=utf-8", head_only=False, extra=""):
    head = ("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
            % (status, content_type, len(body), extra)).encode("ascii")
    return head if head_only else head + body
