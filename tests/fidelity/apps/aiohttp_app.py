"""An aiohttp app on aiohttp's own server: ``/sleep`` awaits in the handler, ``/mw-sleep``
in a middleware, ``/block`` stalls the loop. Usage: ``python aiohttp_app.py PORT``."""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp import web
from fidelity_common import BIG, STALL_S, WAIT_S


@web.middleware
async def slow_auth(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path == "/mw-sleep":
        await asyncio.sleep(WAIT_S)  # L3
    return await handler(request)


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def sleep(request: web.Request) -> web.Response:
    await asyncio.sleep(WAIT_S)
    return web.Response(text="slept")


async def block(request: web.Request) -> web.Response:
    time.sleep(STALL_S)
    return web.Response(text="blocked")


async def big(request: web.Request) -> web.Response:
    return web.json_response(BIG)


app = web.Application(middlewares=[slow_auth])
app.add_routes(
    [
        web.get("/ping", ok),
        web.get("/mw-sleep", ok),
        web.get("/sleep", sleep),
        web.get("/block", block),
        web.get("/big", big),
    ]
)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
