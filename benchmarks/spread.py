"""How evenly a running fastcluster spreads requests over its workers.

Usage:  python benchmarks/spread.py URL [--requests N] [--concurrency C] [--keep-alive]

URL must answer with a body ending in the worker's pid (the demo app does:
"Hello from process <pid>").  Each request uses a new connection unless
--keep-alive is given, in which case each client thread keeps one connection
(and so one worker) for all its requests.
"""

import argparse
import collections
import http.client
import threading
import time
from urllib.parse import urlsplit


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--keep-alive", action="store_true")
    args = ap.parse_args()
    parts = urlsplit(args.url)
    counts = collections.Counter()
    errors = collections.Counter()
    lock = threading.Lock()
    per_thread = args.requests // args.concurrency

    def client():
        local = collections.Counter()
        conn = None
        for _ in range(per_thread):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                conn.request("GET", parts.path or "/")
                local[conn.getresponse().read().split()[-1].decode()] += 1
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors[type(exc).__name__] += 1
                conn = None
                continue
            if not args.keep_alive:
                conn.close()
                conn = None
        with lock:
            counts.update(local)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    total = sum(counts.values())
    print("%d requests in %.1f s, %d errors %s" % (total, elapsed, sum(errors.values()), dict(errors)))
    for pid, n in sorted(counts.items()):
        print("  worker %s: %6d  (%.1f%%)" % (pid, n, 100.0 * n / total))
    if counts:
        print("max/min share: %.2f" % (max(counts.values()) / min(counts.values())))


if __name__ == "__main__":
    main()
