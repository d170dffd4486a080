"""The signup benchmark's baseline: the smallest Flask app that answers the same request.

``gunicorn bench.minimal_app:app`` is served by the same gunicorn command line as the
course app (``bench/signup.py``), and wrk sends it the very same requests: ``POST
/subscribe`` with a JSON body. It reads the body as JSON and answers a short JSON 200, with
no database, no rate limiter and no template, so the ratio of the two rates is what the
signup itself costs on top of Flask and gunicorn.
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)


@app.post("/subscribe")
def subscribe() -> ResponseReturnValue:
    """Read the JSON body as the signup does, and answer briefly."""
    request.get_json(silent=True)
    return jsonify(status="ok")
