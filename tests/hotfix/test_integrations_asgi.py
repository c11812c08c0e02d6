"""ASGIMiddleware: an HTTP request is an async unit of work; websockets are not; the mounted admin app
can patch from inside a request. Real ``hotfix.apply`` on real modules, the app on a real event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

import hotfix
import hotfix.admin
import safepoints
from hotfix.integrations import ASGIMiddleware

WAIT = 30.0
TOKEN = "asgi-units-" + "y" * 24


def poll(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Loop:
    """A plain event loop in a thread (not registered: only units register it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asgi-test-loop", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn) -> None:
        self.loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@pytest.fixture
def loop():
    lp = Loop()
    yield lp
    lp.close()


async def call_app(app, scope_type: str = "http", path: str = "/", body: bytes = b"",
                   headers: dict[str, str] | None = None) -> list[dict]:
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": scope_type, "method": "POST" if body else "GET", "path": path, "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 5)}
    await app(scope, receive, send)
    return sent


def test_a_request_awaiting_across_a_patch_sees_one_version(modules, loop):
    mod = modules.create("def value():\n    return 'old'\n")
    gates: dict[str, asyncio.Event] = {}
    entered: dict[str, threading.Event] = {"/slow": threading.Event(), "/held": threading.Event()}
    started = threading.Event()

    async def app(scope, receive, send):
        path = scope["path"]
        first = mod.value()
        entered[path].set()
        await gates.setdefault(path, asyncio.Event()).wait()
        second = mod.value()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps([first, second]).encode()})

    wrapped = ASGIMiddleware(app)

    async def arriving_during_the_patch():
        started.set()
        return await call_app(wrapped, path="/held")

    slow = loop.submit(call_app(wrapped, path="/slow"))
    assert entered["/slow"].wait(WAIT)
    modules.write(mod, "def value():\n    return 'new'\n")
    result: dict[str, object] = {}
    patcher = threading.Thread(target=lambda: result.update(patch=hotfix.apply(mod.__name__, probation=0, timeout=WAIT)))
    patcher.start()
    poll(lambda: safepoints.statistics().pause_pending, "the patch's pause")
    held = loop.submit(arriving_during_the_patch())
    assert started.wait(WAIT)
    assert not entered["/held"].is_set()  # held: it awaits the end of the swap
    assert patcher.is_alive()  # the patch waits for the request in flight
    loop.call(lambda: gates.setdefault("/slow", asyncio.Event()).set())
    patcher.join(WAIT)
    assert not patcher.is_alive() and "patch" in result
    assert json.loads(slow.result(WAIT)[1]["body"]) == ["old", "old"]
    assert entered["/held"].wait(WAIT)
    loop.call(lambda: gates.setdefault("/held", asyncio.Event()).set())
    assert json.loads(held.result(WAIT)[1]["body"]) == ["new", "new"]
    assert safepoints.statistics().workers == ()
    hold = result["patch"].hold  # type: ignore[attr-defined]
    assert (hold.workers, hold.units, hold.units_in_flight) == ((), 2, 1)  # /slow waited for, /held held


def test_a_websocket_is_not_a_unit(modules, loop):
    inside = threading.Event()
    go_on = asyncio.Event()

    async def app(scope, receive, send):
        inside.set()
        await go_on.wait()

    wrapped = ASGIMiddleware(app, name="ws loop")
    connection = loop.submit(call_app(wrapped, scope_type="websocket"))
    assert inside.wait(WAIT)
    # the loop is a registered worker while the connection is open, with no unit in flight:
    # a pause parks it between callbacks instead of waiting for the connection to end
    [w] = safepoints.statistics().workers
    assert (w.name, w.units, w.loop is not None) == ("ws loop", 0, True)
    with safepoints.pause(timeout=WAIT) as info:
        assert info.workers == 1 and safepoints.statistics().workers[0].state == "parked"
    loop.call(go_on.set)
    connection.result(WAIT)
    assert safepoints.statistics().workers == ()


def test_the_mounted_admin_app_patches_from_inside_a_request(modules, loop):
    mod = modules.create("def value():\n    return 1\n")
    modules.write(mod, "def value():\n    return 2\n")
    admin = ASGIMiddleware(hotfix.admin.asgi_app(token=TOKEN, allowed_roots=[modules.dir]))
    body = json.dumps({"module": mod.__name__, "probation": 0, "timeout": 5}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    sent = loop.submit(call_app(admin, path="/hotfix/v1/apply", body=body, headers=headers)).result(WAIT)
    # the apply request is itself a unit on this loop: the pause does not wait for it
    assert sent[0]["status"] == 200, sent[1]["body"][:500]
    assert mod.value() == 2


def test_the_mounted_admin_app_rolls_back_from_inside_a_request_without_waiting_for_itself(modules, loop, caplog):
    mod = modules.create("def value():\n    return 1\n")
    modules.write(mod, "def value():\n    return -1\n")
    admin = ASGIMiddleware(hotfix.admin.asgi_app(token=TOKEN, allowed_roots=[modules.dir],
                                                 checks={mod.__name__: [lambda: mod.value() > 0]}))
    body = json.dumps({"module": mod.__name__, "probation": 0, "timeout": 5}).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with caplog.at_level("ERROR", logger="hotfix"):
        sent = loop.submit(call_app(admin, path="/hotfix/v1/apply", body=body, headers=headers)).result(WAIT)
    assert sent[0]["status"] == 409, sent[1]["body"][:500]
    assert json.loads(sent[1]["body"])["outcome"] == "rolled-back"
    assert mod.value() == 1
    # the undo took its pause at once: it did not wait for the request it runs in
    assert not [r for r in caplog.records if "could not park" in r.getMessage()]
