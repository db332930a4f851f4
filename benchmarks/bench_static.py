"""Static files served by the middleware people put in front of their apps: the file rows of
`python benchmarks/compare.py --static`.

  whitenoise_app   WhiteNoise (WSGI) over a hello app: the file goes out through wsgi.file_wrapper
  servestatic_app  ServeStatic's ASGI middleware over a hello app: the file goes out through the
                   server's http.response.zerocopysend (or pathsend) when the scope offers it, else
                   ServeStatic reads it in a thread and sends body messages

Both serve the same 32 KiB asset as bench_files (Starlette's FileResponse), from a directory of its
own under the system's temporary files, at /static/asset.js.
"""

import os
import shutil
import tempfile

import bench_files

ROOT = os.path.join(tempfile.gettempdir(), "fastcluster-bench-static")
ASSET = os.path.join(ROOT, "asset.js")
if not os.path.exists(ASSET) or os.path.getsize(ASSET) != bench_files.SIZE:
    os.makedirs(ROOT, exist_ok=True)
    shutil.copyfile(bench_files.PATH, ASSET + ".tmp")
    os.replace(ASSET + ".tmp", ASSET)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]


async def hello_asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")]})
    await send({"type": "http.response.body", "body": b"hello\n"})


def _whitenoise():
    from whitenoise import WhiteNoise
    return WhiteNoise(hello, root=ROOT, prefix="/static/", max_age=60)


def _servestatic():
    from servestatic import ServeStaticASGI
    return ServeStaticASGI(hello_asgi, root=ROOT, prefix="/static/", max_age=60)


whitenoise_app = _whitenoise()
servestatic_app = _servestatic()
