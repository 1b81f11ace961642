"""A plain werkzeug WSGI app on werkzeug's own threaded server (``run_simple``), the way
Flask's development server runs. Usage: ``python werkzeug_app.py PORT``."""

from __future__ import annotations

import sys
import time

from fidelity_common import WAIT_S, slow_query
from werkzeug.serving import run_simple
from werkzeug.wrappers import Request, Response


@Request.application
def app(request: Request) -> Response:
    if request.path == "/sleep":
        time.sleep(WAIT_S)
        return Response("slept")
    if request.path == "/db":
        return Response(str(slow_query()))
    return Response("ok")


if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
