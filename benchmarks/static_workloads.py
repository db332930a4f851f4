"""The static-file workloads of `python benchmarks/compare.py --static`: 1 worker pinned to CPU 0
with the load generator on CPU 1, wrk -t1 -c100 keep-alive, each server fresh for each run, rounds
interleaved. The same 32 KiB asset each time:

  fileresponse  a FastAPI endpoint answering with Starlette's FileResponse (bench_files:app, ASGI)
  servestatic   ServeStatic's ASGI middleware (bench_static:servestatic_app)
  whitenoise    WhiteNoise's WSGI middleware (bench_static:whitenoise_app)

Each server serves the apps of the interface it has: fastcluster both loops, granian and gunicorn
(its sync worker for WSGI, its asgi worker for ASGI) all three; uvicorn the ASGI ones and WhiteNoise
through its WSGI interface (`--interface wsgi`: its thread-pool adapter). Before each run one
request checks that the answer is the asset (a wrong path would measure WhiteNoise's fallback app).
"""

from __future__ import annotations

import os
import sys
import urllib.request

SERVERS = ["fastcluster-cython", "fastcluster-python", "granian", "uvicorn-httptools", "gunicorn"]
WORKLOADS = ["fileresponse", "servestatic", "whitenoise"]
APPS = {"fileresponse": "bench_files:app", "servestatic": "bench_static:servestatic_app",
        "whitenoise": "bench_static:whitenoise_app"}
PATHS = {"fileresponse": "/", "servestatic": "/static/asset.js", "whitenoise": "/static/asset.js"}
SIZE = 32 * 1024
PEERS = ("granian", "uvicorn-httptools", "gunicorn")


def commands(name, port, bin_, workload):
    host, app = "127.0.0.1", APPS[workload]
    wsgi = workload == "whitenoise"
    if name.startswith("fastcluster-"):
        return [os.path.join(bin_, "fastcluster"), "serve", app, "--workers", "1", "--loop", name.split("-")[1],
                "--bind", "%s:%d" % (host, port)]
    if name == "granian":
        return [os.path.join(bin_, "granian"), "--interface", "wsgi" if wsgi else "asgi", "--host", host, "--port",
                str(port), "--workers", "1", "--log-level", "warning"] + ([] if wsgi else ["--loop", "uvloop"]) + [app]
    if name == "uvicorn-httptools":
        return [os.path.join(bin_, "uvicorn"), app, "--host", host, "--port", str(port), "--http", "httptools",
                "--loop", "uvloop", "--interface", "wsgi" if wsgi else "asgi3", "--no-access-log",
                "--log-level", "warning"]
    if name == "gunicorn":
        return [os.path.join(bin_, "gunicorn"), "-w", "1", "-k", "sync" if wsgi else "asgi", "--bind",
                "%s:%d" % (host, port), "--log-level", "warning", app]
    raise KeyError(name)


def check(port, workload):
    """One request: the answer must be the 32 KiB asset."""
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, PATHS[workload]), timeout=10) as answer:
        body = answer.read()
    if answer.status != 200 or len(body) != SIZE:
        raise RuntimeError("%s answered %d with %d bytes, not the %d-byte asset"
                           % (workload, answer.status, len(body), SIZE))


def markdown(report):
    from asgi_workloads import medians_markdown
    return medians_markdown(report["medians"], WORKLOADS, SERVERS, [(peer, peer) for peer in PEERS], "req/s")

if __name__ == "__main__":
    sys.exit("run it through benchmarks/compare.py --static")
