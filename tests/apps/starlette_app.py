"""A real Starlette app, as users write them: routes, a request body, streaming, a background
task, a middleware on anyio's task groups, a WebSocket endpoint and a lifespan that fills state."""

import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


@contextlib.asynccontextmanager
async def lifespan(app):
    path = os.environ.get("ASGI_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write("startup %d\n" % os.getpid())
    yield {"db": "connected in %d" % os.getpid()}
    if path:
        with open(path, "a") as f:
            f.write("shutdown %d\n" % os.getpid())


async def home(request):
    return PlainTextResponse("Hello from Starlette in %d\n" % os.getpid())


async def item(request):
    return JSONResponse({"id": int(request.path_params["id"]), "q": request.query_params.get("q"),
                         "db": request.state.db, "url": str(request.url)})


async def echo(request):
    body = await request.body()
    return PlainTextResponse(body.decode("latin-1"), headers={"x-length": str(len(body))})


async def stream(request):
    async def pieces():
        for i in range(5):
            yield ("piece %d\n" % i).encode()
            await asyncio.sleep(0)
    return StreamingResponse(pieces(), media_type="text/plain")


def _write_marker(path):
    with open(path, "w") as f:
        f.write("background ran")


async def background(request):
    return PlainTextResponse("queued\n", background=BackgroundTask(_write_marker, request.query_params["marker"]))


async def sleep(request):
    await asyncio.sleep(float(request.query_params.get("s", "0.2")))
    return PlainTextResponse("slept\n")


async def ws_echo(websocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text("echo: " + text)
    except WebSocketDisconnect:
        pass


class Stamp(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-middleware"] = "seen"
        return response


app = Starlette(
    routes=[Route("/", home), Route("/items/{id:int}", item), Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream), Route("/background", background), Route("/sleep", sleep),
            WebSocketRoute("/ws", ws_echo)],
    middleware=[Middleware(Stamp)],
    lifespan=lifespan,
)
