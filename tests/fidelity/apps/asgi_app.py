"""A FastAPI app for the ASGI servers (uvicorn, Hypercorn, Granian).

The root app has no middleware, so its endpoints are the plain case: ``/sleep`` (``async
def``, awaits), ``/sync-sleep`` and ``/sync-db`` (``def``: FastAPI runs them in AnyIO's worker
threads), ``/block`` (``async def`` calling ``time.sleep``: a loop stall per request). The
sub-app mounted at ``/mw`` has both middleware kinds, each waiting on its own path:
``/mw/base-sleep`` (a ``BaseHTTPMiddleware``) and ``/mw/asgi-sleep`` (a pure ASGI one).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fidelity_common import BIG, BODY, STALL_S, WAIT_S, slow_query
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp, Receive, Scope, Send

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/sleep")
async def sleep() -> dict[str, str]:
    await asyncio.sleep(WAIT_S)
    return {"slept": "yes"}


@app.get("/sync-sleep")
def sync_sleep() -> dict[str, str]:
    time.sleep(WAIT_S)
    return {"slept": "yes"}


@app.get("/sync-db")
def sync_db() -> dict[str, int]:
    return {"rows": slow_query()}


@app.get("/block")
async def block() -> dict[str, str]:
    time.sleep(STALL_S)  # the bug on purpose: blocks the event loop
    return {"blocked": "yes"}


@app.get("/big")
async def big() -> JSONResponse:
    return JSONResponse(BIG)


@app.get("/stream")
async def stream() -> Response:
    return Response(BODY, media_type="application/octet-stream")


class SlowBaseMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path.endswith("/base-sleep"):
            await asyncio.sleep(WAIT_S)  # an auth check that calls out: L3
        return await call_next(request)


class SlowAsgiMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/asgi-sleep"):
            await asyncio.sleep(WAIT_S)  # L3
        await self.app(scope, receive, send)


mw = FastAPI()
mw.add_middleware(SlowBaseMiddleware)
mw.add_middleware(SlowAsgiMiddleware)


@mw.get("/base-sleep")
@mw.get("/asgi-sleep")
async def fast() -> dict[str, str]:
    return {"ok": "yes"}


app.mount("/mw", mw)
