"""A Flask app for the WSGI servers (gunicorn sync, gthread and gevent workers; uWSGI).
The middleware wait is a ``before_request`` hook, Flask's own middleware."""

from __future__ import annotations

import time

from fidelity_common import BIG, BODY, WAIT_S, slow_query
from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.before_request
def authenticate() -> None:
    if request.path == "/mw-sleep":
        time.sleep(WAIT_S)  # an auth check that calls out: L3


@app.route("/ping")
@app.route("/mw-sleep")
def ping() -> str:
    return "ok"


@app.route("/sleep")
def sleep() -> str:
    time.sleep(WAIT_S)
    return "slept"


@app.route("/db")
def db() -> str:
    return str(slow_query())


@app.route("/big")
def big() -> Response:
    return jsonify(BIG)


@app.route("/stream")
def stream() -> Response:
    return Response(BODY, mimetype="application/octet-stream")
