"""FastAPI + asyncpg: TechEmpower's six tests. Each worker makes its own pool in the lifespan."""

from contextlib import asynccontextmanager

import asyncpg
import jinja2
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from common import DB, HELLO, POOL_SIZE, TEMPLATES, query_count, random_id, sorted_fortunes

SELECT_WORLD = "SELECT id, randomnumber FROM world WHERE id = $1"
UPDATE_WORLDS = ("UPDATE world SET randomnumber = v.r FROM unnest($1::int[], $2::int[]) AS v(id, r) "
                 "WHERE world.id = v.id")
template = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True).get_template("fortunes.html")
pool = None


@asynccontextmanager
async def lifespan(app):
    global pool
    pool = await asyncpg.create_pool(host=DB["host"], port=DB["port"], database=DB["dbname"], user=DB["user"],
                                     min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None)


@app.get("/json")
async def json_():
    return JSONResponse({"message": HELLO})


@app.get("/plaintext")
async def plaintext():
    return PlainTextResponse(HELLO)


@app.get("/db")
async def db():
    async with pool.acquire() as conn:
        id_, number = await conn.fetchrow(SELECT_WORLD, random_id())
    return JSONResponse({"id": id_, "randomNumber": number})


@app.get("/queries")
async def queries(queries: str | None = None):
    worlds = []
    async with pool.acquire() as conn:
        for _ in range(query_count(queries)):
            id_, number = await conn.fetchrow(SELECT_WORLD, random_id())
            worlds.append({"id": id_, "randomNumber": number})
    return JSONResponse(worlds)


@app.get("/fortunes")
async def fortunes():
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, message FROM fortune")
    return HTMLResponse(template.render(fortunes=sorted_fortunes(tuple(row) for row in rows)))


@app.get("/updates")
async def updates(queries: str | None = None):
    worlds = []
    async with pool.acquire() as conn:
        for _ in range(query_count(queries)):
            id_, _old = await conn.fetchrow(SELECT_WORLD, random_id())
            worlds.append((id_, random_id()))
        final = dict(worlds)                   # a row drawn twice keeps its last number
        changes = sorted(final.items())        # one change per row, in id order: no deadlocks between requests
        await conn.execute(UPDATE_WORLDS, [i for i, _ in changes], [n for _, n in changes])
    return JSONResponse([{"id": id_, "randomNumber": final[id_]} for id_, _ in worlds])
