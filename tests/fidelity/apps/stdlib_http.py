"""http.server's ThreadingHTTPServer (HTTP/1.1, so keep-alive clients stay): a thread per
connection, the request handled in ``do_GET``. Usage: ``python stdlib_http.py PORT``."""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fidelity_common import BIG, BODY, LONG_ROWS, WAIT_S, slow_query


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/sleep":
            time.sleep(WAIT_S)
            body = b"slept"
        elif self.path == "/db":
            body = str(slow_query()).encode()
        elif self.path == "/db-long":
            body = str(slow_query(LONG_ROWS)).encode()
        elif self.path == "/big":
            body = json.dumps(BIG).encode()
        elif self.path == "/stream":
            body = BODY
        else:
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
