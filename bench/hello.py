"""The denominator of bench/api.py: Flask's hello world, served by the same gunicorn settings as the service.

gunicorn --config gunicorn.conf.py bench.hello:app
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/health")
def health() -> Response:
    return jsonify(status="ok")
