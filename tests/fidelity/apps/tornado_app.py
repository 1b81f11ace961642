"""A Tornado app on Tornado's own server. Usage: ``python tornado_app.py PORT``."""

from __future__ import annotations

import asyncio
import sys
import time

import tornado.web
from fidelity_common import STALL_S, WAIT_S


class Ping(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


class Sleep(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(WAIT_S)
        self.write("slept")


class Block(tornado.web.RequestHandler):
    def get(self) -> None:
        time.sleep(STALL_S)
        self.write("blocked")


async def main(port: int) -> None:
    app = tornado.web.Application([("/ping", Ping), ("/sleep", Sleep), ("/block", Block)])
    app.listen(port, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
