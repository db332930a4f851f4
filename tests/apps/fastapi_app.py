"""A real FastAPI app: JSON in and out through pydantic models, path and query parameters,
dependencies, an HTTPException, a WebSocket, and a startup that fills app state."""

import asyncio
import contextlib
import os
import threading
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.started_in = os.getpid()
    yield


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def common(limit: int = 10):
    return {"limit": limit}


@app.get("/")
async def root():
    return {"hello": "world", "pid": os.getpid(), "started_in": app.state.started_in}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None, params: dict = Depends(common)):
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "q": q, "limit": params["limit"]}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "total": item.price * 2, "tags": item.tags}


@app.get("/sync")
def sync_endpoint():     # FastAPI runs a plain def in its thread pool (anyio's worker threads)
    return {"sync": True, "pid": os.getpid(), "thread": threading.get_native_id()}


@app.get("/sleep")
async def sleep(s: float = 0.2):
    await asyncio.sleep(s)
    return {"slept": s}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"got": data})
    except WebSocketDisconnect:
        pass
