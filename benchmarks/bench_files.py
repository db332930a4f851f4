"""A FastAPI endpoint answering with a file (Starlette's FileResponse): the ASGI comparison's file row.

The file is a 32 KiB static asset, written once next to the system's temporary files. A server that
offers the ASGI http.response.pathsend extension sends it itself; one that does not gets it from
Starlette in 64 KiB body messages read through a worker thread.
"""

import os
import tempfile

from fastapi import FastAPI
from fastapi.responses import FileResponse

SIZE = 32 * 1024
PATH = os.path.join(tempfile.gettempdir(), "fastcluster-bench-asset-%d.bin" % SIZE)
if not os.path.exists(PATH) or os.path.getsize(PATH) != SIZE:
    with open(PATH + ".tmp", "wb") as f:
        f.write(bytes(range(256)) * (SIZE // 256))
    os.replace(PATH + ".tmp", PATH)

app = FastAPI()


@app.get("/")
async def asset():
    return FileResponse(PATH, media_type="application/javascript")
