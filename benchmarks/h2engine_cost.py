"""What an HTTP/2 engine costs alone: CPU per request and memory per idle connection, no sockets.

    python benchmarks/h2engine_cost.py [--requests 5000] [--engine h2|native]

CPU: an h2 client's bytes for N GET requests, prepared beforehand (the client has not read our SETTINGS,
so it opens them all), fed to the engine in 64 KiB pieces; the handler answers each with 200 and 13 bytes
from h2_request; pending() is drained after each piece. The engine is built with max_concurrent_streams=N
so that none is refused. A second figure feeds the same requests 100 at a time (a client that keeps to
the default 100 concurrent streams), pending() drained after each batch. process_time() around receive()
and pending() only; the responses are decoded by the client afterwards, untimed, to check them.
Memory: tracemalloc's growth over 1000 engines, just built, then after each read a client's preface and
SETTINGS and its output was drained.
"""

import argparse
import time
import tracemalloc

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import StreamEnded

from fastcluster.h2engine import H2Engine, engine_class

CHUNK = 65536
BODY = b"hello, world!"


class Answer:
    def __init__(self):
        self.engine = None
        self.closed = 0

    def h2_request(self, sid, headers, end_stream):
        self.engine.respond(sid, 200, [(b"content-type", b"text/plain"), (b"content-length", b"13")], False)
        self.engine.send_data(sid, BODY, True)

    def h2_closed(self, sid):
        self.closed += 1

    def h2_refused(self, sid, status):
        raise AssertionError("refused")

    def h2_data(self, sid, data):
        pass

    h2_end = h2_reset = h2_data


def client_bytes(n):
    """(the client, its bytes for n GETs, the offsets where each request's frame ends)."""
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    wire, ends = bytearray(client.data_to_send()), []
    for i in range(n):
        sid = 2 * i + 1
        client.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.test"),
                                  (b":path", b"/item/%d" % i), (b"user-agent", b"bench/1.0"),
                                  (b"accept", b"*/*")], end_stream=True)
        wire += client.data_to_send()
        ends.append(len(wire))
    return client, bytes(wire), ends


def run(cls, n, cuts, streams):
    client, wire, ends = client_bytes(n)
    handler = Answer()
    engine = handler.engine = cls(handler, max_concurrent_streams=streams)
    out = [engine.pending()]
    start = time.process_time()
    last = 0
    for cut in cuts(wire, ends):
        engine.receive(wire[last:cut])
        last = cut
        data = engine.pending()
        while data:
            out.append(data)
            data = engine.pending()
    spent = time.process_time() - start
    events = client.receive_data(b"".join(out))
    assert handler.closed == n and sum(isinstance(e, StreamEnded) for e in events) == n, handler.closed
    return spent / n * 1e6


def memory(cls, count):
    client = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    hello = client.data_to_send()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    engines = [cls(Answer()) for _ in range(count)]
    built = tracemalloc.take_snapshot()
    for engine in engines:
        engine.pending()
        engine.receive(hello)
        engine.pending()
    idle = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = [sum(s.size_diff for s in snap.compare_to(base, "filename")) for snap in (built, idle)]
    return [s / count for s in size]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--engine", choices=("h2", "native"), default="h2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cls = H2Engine if args.engine == "h2" else engine_class()
    n = args.requests
    pieces = [run(cls, n, lambda wire, ends: list(range(CHUNK, len(wire), CHUNK)) + [len(wire)], n)
              for _ in range(args.rounds)]
    batches = [run(cls, n, lambda wire, ends: ends[99::100] + [len(wire)], 100) for _ in range(args.rounds)]
    built, idle = memory(cls, 1000)
    print("%s, %d GETs: %.1f us/request in 64 KiB pieces, %.1f us/request 100 a read (best of %d)"
          % (cls.__name__, n, min(pieces), min(batches), args.rounds))
    print("memory per engine: %.0f bytes built, %.0f bytes idle after the client's preface" % (built, idle))


if __name__ == "__main__":
    main()
