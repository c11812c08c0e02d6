"""A plain WSGI app. No hotfix code: `hotfix run` adds everything (see README, "Whole services")."""

from __future__ import annotations

import json
import os

import greeting


def application(environ, start_response):  # the WSGI signature
    try:
        body, status = {"greeting": greeting.greet("world"), "pid": os.getpid()}, "200 OK"
    except Exception as exc:  # a 500 that says which process failed
        body, status = {"error": f"{type(exc).__name__}: {exc}", "pid": os.getpid()}, "500 Internal Server Error"
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
