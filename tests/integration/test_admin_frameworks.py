"""The examples' Flask (WSGI) and FastAPI (ASGI) apps, with the admin routes mounted at /ops."""

from __future__ import annotations

import importlib.util
import uuid
import warnings

import pytest

import hotfix
from tests.helpers import EXAMPLES, assert_same, snapshot

TOKEN = "framework-token-" + "k" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}

GREETINGS_V1 = """
    def greet(name):
        return f"Hello {name}"
"""
GREETINGS_V2 = """
    def greet(name):
        return f"Hi {name}"
"""
GREETINGS_BROKEN = """
    def greet(name):
        return "oops"
"""


def load_example(relative: str, *frameworks: str):
    """Import an example file under a unique name (both apps are called app.py).

    The frameworks are imported without the baseline finder, as the examples
    do (``hotfix.install()`` after the framework): compiling all of pydantic
    from source would take seconds.
    """
    hotfix.uninstall()
    try:
        for name in frameworks:
            pytest.importorskip(name)
    finally:
        hotfix.install()
    spec = importlib.util.spec_from_file_location(f"example_{uuid.uuid4().hex[:8]}", EXAMPLES / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Client:
    """Flask's and Starlette's test clients differ slightly; this evens them out."""

    def __init__(self, client, raw_key: str) -> None:
        self.client = client
        self.raw_key = raw_key

    def get(self, path, auth=False):
        return self._wrap(self.client.get(path, headers=AUTH if auth else {}))

    def post(self, path, body=None, raw=None, auth=True):
        headers = dict(AUTH) if auth else {}
        if raw is not None:
            headers["Content-Type"] = "application/json"
            return self._wrap(self.client.post(path, headers=headers, **{self.raw_key: raw}))
        return self._wrap(self.client.post(path, json=body, headers=headers))

    @staticmethod
    def _wrap(response):
        data = response.json() if callable(response.json) else response.json
        return response.status_code, data


def exercise(client: Client, modules, mod) -> None:
    """The same script for both frameworks."""
    name = mod.__name__
    assert client.get("/") == (200, {"greeting": "Hello world"})
    assert client.get("/ops/hotfix/v1/health")[0] == 200
    assert client.get("/ops/hotfix/v1/status")[0] == 401
    status, body = client.get("/ops/hotfix/v1/status", auth=True)
    assert status == 200 and body["pid"]
    assert client.post("/ops/hotfix/v1/dry-run", {"module": "json"})[0] == 404
    assert client.post("/ops/hotfix/v1/dry-run", raw=b"{")[0] == 400

    modules.write(mod, GREETINGS_V2)
    before = snapshot(mod)
    status, dry = client.post("/ops/hotfix/v1/dry-run", {"module": name})
    assert status == 200 and dry["outcome"] == "safe"
    assert_same(before, snapshot(mod))
    sha = dry["report"]["source"]["disk"]["sha256"]
    status, applied = client.post("/ops/hotfix/v1/apply", {"module": name, "expect_sha256": sha, "probation": 0})
    assert status == 200, applied
    assert client.get("/") == (200, {"greeting": "Hi world"})

    # the app registered a smoke check server-side: a broken version is rolled back
    modules.write(mod, GREETINGS_BROKEN)
    before = snapshot(mod)
    status, broken = client.post("/ops/hotfix/v1/apply", {"module": name, "probation": 0})
    assert (status, broken["reason"]) == (409, "check-failed")
    assert_same(before, snapshot(mod))
    assert client.get("/") == (200, {"greeting": "Hi world"})

    status, undone = client.post("/ops/hotfix/v1/rollback", {})
    assert status == 200 and undone["rollback"]["patch_id"] == applied["patch"]["id"]
    assert client.get("/") == (200, {"greeting": "Hello world"})
    assert client.get("/ops/hotfix/v1/openapi.json", auth=True)[1]["openapi"] == "3.1.0"


def test_flask_app_mounts_the_wsgi_routes(modules):
    example = load_example("flask_app/app.py", "flask", "werkzeug.middleware.dispatcher")
    mod = modules.create(GREETINGS_V1)
    app = example.create_app(mod, token=TOKEN)
    exercise(Client(app.test_client(), "data"), modules, mod)


def test_fastapi_app_mounts_the_asgi_routes(modules):
    example = load_example("fastapi_app/app.py", "fastapi", "httpx")
    with warnings.catch_warnings():  # recent Starlette prefers httpx2 to httpx; either works here
        warnings.filterwarnings("ignore", message=".*httpx2")
        hotfix.uninstall()
        try:
            from fastapi.testclient import TestClient
        finally:
            hotfix.install()

    mod = modules.create(GREETINGS_V1)
    with TestClient(example.create_app(mod, token=TOKEN)) as client:
        exercise(Client(client, "content"), modules, mod)
