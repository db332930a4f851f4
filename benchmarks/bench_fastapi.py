"""A FastAPI JSON endpoint, the app of the ASGI comparison's FastAPI row."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root():
    return {"message": "Hello, World!", "server": "fastcluster bench"}
