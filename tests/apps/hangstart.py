"""An ASGI app whose lifespan startup waits for a "database" while the file named by
$HANGSTART_MARKER exists (one that is down), and otherwise starts at once."""

import asyncio
import os


async def wait_for_the_database():
    marker = os.environ.get("HANGSTART_MARKER")
    while marker and os.path.exists(marker):
        await asyncio.sleep(0.05)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await wait_for_the_database()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"%d" % os.getpid()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
