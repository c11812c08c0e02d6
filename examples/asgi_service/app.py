"""A FastAPI app. No hotfix code: `hotfix run` adds everything (see README, "Whole services")."""

from __future__ import annotations

import os

import greeting
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/")
async def hello() -> JSONResponse:
    try:
        return JSONResponse({"greeting": greeting.greet("world"), "pid": os.getpid()})
    except Exception as exc:  # a 500 that says which process failed
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}, status_code=500)
