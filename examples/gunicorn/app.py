"""A WSGI app served by gunicorn with several worker processes."""

from __future__ import annotations

import json
import os

import greeting


def application(environ, start_response):  # the WSGI signature
    body = json.dumps({"greeting": greeting.greet("world"), "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def smoke() -> bool:
    """The check hotfix runs in each worker after patching ``greeting`` (see gunicorn.conf.py)."""
    return greeting.greet("x").endswith("x")
