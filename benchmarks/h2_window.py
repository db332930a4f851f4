"""HTTP/2 request-body flow control: what `--h2-initial-window-size` costs and buys.

For each window W in WINDOWS a fresh server (`fastcluster serve --loop cython -w 1`, this module's ASGI
app, `--h2-initial-window-size W`) and two measurements:

  upload   h2load POSTs a BODY_MIB MiB body on one stream (h2c, prior knowledge), directly and through
           a user-space proxy on 127.0.0.1 that holds every chunk R/2 in each direction (R: the round
           trip; the kernel here has no netem), then 4 such streams at once on one connection. The app
           reads the whole body and answers its length. A stream is capped at about W/R.
  memory   one h2 client connection opens 100 streams (the default --h2-max-concurrent-streams) and
           sends a full window of body on each while the app has not read any (it sleeps first); a
           PING's answer says the worker has taken every byte; the worker's peak RSS (VmHWM) against
           its RSS before: the memory one connection can make a worker hold.

    python benchmarks/h2_window.py   -> results/h2-window.json (raw) and results/h2-window.md (table)

Run it alone (`flock /work/load.lock python benchmarks/h2_window.py` on a shared machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
WINDOWS = (65535, 262144, 1048576, 4194304)
RTTS_MS = (0, 10, 50)
BODY_MIB = 16
REPEAT = 2              # sequential uploads per measurement (h2load -n): the mean request time is kept
CONCURRENT = 4          # streams at once on one connection, at the largest RTT
STREAMS = 100           # the memory test's streams (--h2-max-concurrent-streams' default)
HOLD_S = 30.0           # how long the memory test's app sleeps before it reads
H2LOAD_TIMEOUT = 180.0


# --- the app (imported by the server: nothing above is heavy) ------------------------------------

async def app(scope, receive, send):
    """POST /: read the whole body, answer its length. /hold: sleep HOLD_S first (the memory test)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/hold":
        await asyncio.sleep(HOLD_S)
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"%d\n" % size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


# --- the delay proxy -------------------------------------------------------------------------------

class DelayProxy:
    """A TCP proxy on 127.0.0.1 (its own thread and event loop) that forwards both directions, each
    chunk held until `one_way` seconds after it was read, in order; no bandwidth cap."""

    def __init__(self, target_port, one_way):
        self.target_port, self.one_way = target_port, one_way
        self.port = None
        self.tasks = set()
        self.ready = threading.Event()
        self.failure = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        if not self.ready.wait(10) or self.port is None:
            self.stop()
            raise RuntimeError("the delay proxy did not start: %r" % (self.failure,))
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        loop = getattr(self, "loop", None)
        if loop is not None and self.thread.is_alive():
            loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(10)

    def _run(self):
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:    # (reported by __enter__ or ignored after the measurement)
            self.failure = exc
        finally:
            self.ready.set()
            self.loop.close()

    async def _main(self):
        self.stopping = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        try:
            await self.stopping.wait()
        finally:
            server.close()
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            await server.wait_closed()

    async def _client(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass                         # (a reset, or the proxy's stop: the connection just ends)
        finally:
            self.tasks.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _pipe(self, reader, writer):
        loop = asyncio.get_running_loop()
        held = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await held.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(1 << 20)
                held.put_nowait((loop.time() + self.one_way, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()


# --- the measurements ------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def upload(port, path, size, requests, streams):
    """h2load -d: `requests` POSTs of the file, `streams` at once on one connection."""
    cmd = ["h2load", "-d", path, "-n", str(requests), "-c", "1", "-m", str(streams),
           "http://127.0.0.1:%d/" % port]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=H2LOAD_TIMEOUT).stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    finished = re.search(r"finished in ([\d.]+\w+),", out)
    per = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if done is None or finished is None or per is None or int(done.group(4)) != requests:
        raise RuntimeError("h2load: %s" % out[-600:])
    total = _seconds(finished.group(1))
    mean = _seconds(per.group(3))
    return {"command": " ".join(cmd), "requests": requests, "streams": streams, "total_s": total,
            "request_min_s": _seconds(per.group(1)), "request_max_s": _seconds(per.group(2)),
            "request_mean_s": mean, "stream_mb_s": size / mean / 1e6,
            "aggregate_mb_s": size * requests / total / 1e6, "h2load": out}


def _read_until(sock, conn, done):
    """Read the server's frames until done(events_so_far) is true."""
    seen = []
    while not done(seen):
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        seen.extend(conn.receive_data(data))
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return seen


def memory(server, window, streams):
    """`streams` streams each sending `window` bytes of body the app does not read: worker RSS."""
    import h2.config
    import h2.connection
    import h2.events

    from helpers import rss_kib

    pid = server.worker_pids[0]
    before = rss_kib(pid)
    sock = socket.create_connection((server.host, server.port), timeout=60)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        _read_until(sock, conn, lambda seen: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in seen)
                    and any(isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0 for e in seen))
        if conn.remote_settings.initial_window_size != window:
            raise RuntimeError("the server announced %d" % conn.remote_settings.initial_window_size)
        chunk = b"x" * conn.max_outbound_frame_size
        sids = []
        for _ in range(streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                                    (":path", "/hold")])
            sids.append(sid)
        sock.sendall(conn.data_to_send())
        started = time.monotonic()
        sent = 0
        for sid in sids:
            while True:
                room = min(conn.local_flow_control_window(sid), len(chunk))
                if room <= 0:
                    break
                conn.send_data(sid, chunk[:room])
                sent += room
                sock.sendall(conn.data_to_send())
        conn.ping(b"fcwindow")                    # its answer: the server has read everything before it
        sock.sendall(conn.data_to_send())
        _read_until(sock, conn, lambda seen: any(isinstance(e, h2.events.PingAckReceived) for e in seen))
        elapsed = time.monotonic() - started
        peak, after = rss_kib(pid, "VmHWM"), rss_kib(pid)
        # nothing more may come: every stream's window (and so the connection's share) is used up
        stuck = [sid for sid in sids if conn.local_flow_control_window(sid) > 0]
        conn.close_connection()
        sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return {"window": window, "streams": streams, "body_bytes": sent, "rss_before_kib": before,
            "rss_after_kib": after, "peak_rss_kib": peak, "peak_increase_kib": peak - before,
            "send_s": elapsed, "streams_with_window_left": len(stuck)}


def measure_window(window, body_path, size):
    from helpers import Server

    row = {"window": window, "uploads": [], "memory": None}
    with Server("h2_window:app", "--bind", "127.0.0.1:0", "--workers", "1", "--loop", "cython",
                "--h2-initial-window-size", str(window), "--graceful-timeout", "1",
                env={"PYTHONPATH": HERE}) as server:
        row["server_lines"] = list(server.lines)
        upload(server.port, body_path, size, 1, 1)             # (warm: the first request loads what any needs)
        for rtt_ms in RTTS_MS:
            cases = [(REPEAT, 1)] + ([(CONCURRENT, CONCURRENT)] if rtt_ms == max(RTTS_MS) else [])
            for requests, streams in cases:
                if rtt_ms == 0:
                    result = upload(server.port, body_path, size, requests, streams)
                else:
                    with DelayProxy(server.port, rtt_ms / 2000.0) as proxy:
                        result = upload(proxy.port, body_path, size, requests, streams)
                result.update(rtt_ms=rtt_ms, window=window)
                row["uploads"].append(result)
                print("window %8d  RTT %2d ms  %d stream(s): %8.1f MB/s per stream, %8.1f MB/s in all "
                      "(W/R = %s)" % (window, rtt_ms, streams, result["stream_mb_s"], result["aggregate_mb_s"],
                                      "%.1f MB/s" % (window / (rtt_ms / 1000.0) / 1e6) if rtt_ms else "-"),
                      flush=True)
        row["memory"] = memory(server, window, STREAMS)
        m = row["memory"]
        print("window %8d  %d streams x window unread: worker RSS %d KiB, peak +%d KiB (%.1f MiB; body %.1f MiB)"
              % (window, STREAMS, m["rss_before_kib"], m["peak_increase_kib"], m["peak_increase_kib"] / 1024,
                 m["body_bytes"] / 2**20), flush=True)
    return row


def _tool_version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine():
    sys.path.insert(0, os.path.dirname(HERE))
    from fastcluster import h2codes
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nproc": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "engine": h2codes.engine_name(True), "h2load": _tool_version(["h2load", "--version"]),
            "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                         if line.startswith("model name")), "?")}


def markdown(report):
    info = report["machine"]
    rows = report["windows"]
    lines = ["# HTTP/2 request bodies: `--h2-initial-window-size`", "",
             "`python benchmarks/h2_window.py`, %s, %d CPUs (%s), Linux %s, Python %s, HTTP/2 by %s, "
             "client %s. One worker, `--loop cython`, an ASGI app that reads the whole body and answers its "
             "length. Upload: a %d MiB POST body, h2c with prior knowledge, through a user-space proxy that "
             "holds each chunk RTT/2 each way (RTT 0: no proxy); MB/s = body / h2load's mean request time, "
             "mean of %d uploads one after the other; %d streams: %d uploads at once on one connection, "
             "all bytes / the run's time. W/R: the window over the round trip, the cap of one stream."
             % (info["date"], info["nproc"], info["cpu"], info["kernel"], info["python"], info["engine"],
                info["h2load"], report["body_mib"], REPEAT, CONCURRENT, CONCURRENT), ""]
    header = "| window | " + " | ".join(
        ("RTT %d ms" % r if r else "no proxy") + (" (W/R)" if r else "") for r in RTTS_MS) + \
        " | RTT %d ms, %d streams | peak RSS, %d streams x window unread |" % (max(RTTS_MS), CONCURRENT, STREAMS)
    lines += [header, "|---|" + "---|" * (len(RTTS_MS) + 2)]
    for row in rows:
        cells = []
        for rtt in RTTS_MS:
            up = next(u for u in row["uploads"] if u["rtt_ms"] == rtt and u["streams"] == 1)
            cap = " (%.1f)" % (row["window"] / (rtt / 1000.0) / 1e6) if rtt else ""
            cells.append("%.1f MB/s%s" % (up["stream_mb_s"], cap))
        many = next(u for u in row["uploads"] if u["streams"] == CONCURRENT)
        cells.append("%.1f MB/s" % many["aggregate_mb_s"])
        m = row["memory"]
        cells.append("+%.1f MiB (body %.1f MiB)" % (m["peak_increase_kib"] / 1024, m["body_bytes"] / 2**20))
        lines.append("| %d | %s |" % (row["window"], " | ".join(cells)))
    return "\n".join(lines) + "\n"


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    size = BODY_MIB << 20
    report = {"machine": machine(), "body_mib": BODY_MIB, "windows": []}
    with tempfile.TemporaryDirectory(prefix="h2window-") as tmp:
        body_path = os.path.join(tmp, "body")
        with open(body_path, "wb") as f:
            f.write(os.urandom(size))
        for window in WINDOWS:
            report["windows"].append(measure_window(window, body_path, size))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "h2-window.json"), "w") as f:
        json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.join(RESULTS, "h2-window.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
