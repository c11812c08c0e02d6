"""Units of work without application edits: WSGI middleware and covered executor pools."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import hotfix
import safepoints
from hotfix._run._process import process_info
from hotfix.integrations import WSGIMiddleware, cover_executor

WAIT = 30.0


def poll(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_wsgi_request_is_a_critical_unit_and_new_requests_wait_for_the_swap():
    inside, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/slow":
            inside.set()
            release.wait(WAIT)
        start_response("200 OK", [])
        return iter([b"ok"])  # a lazy body: the unit ends when the server closes it

    wrapped = WSGIMiddleware(app)
    units = process_info()["units_of_work"]

    def serve(path: str) -> None:
        body = wrapped({"PATH_INFO": path}, lambda *a: None)
        b"".join(body)
        body.close()

    slow = threading.Thread(target=serve, args=("/slow",))
    slow.start()
    assert inside.wait(WAIT)
    assert [w.state for w in safepoints.statistics().workers] == ["critical"]
    held = threading.Event()
    done = threading.Event()

    def pauser() -> None:
        with safepoints.pause(timeout=WAIT):
            held.set()
            poll(lambda: any(w.state == "parked" for w in safepoints.statistics().workers), "the new request to park")
        done.set()

    p = threading.Thread(target=pauser)
    p.start()
    poll(lambda: safepoints.statistics().pause_pending, "the pause request")
    assert not held.is_set()  # waits for the request in flight
    release.set()
    assert held.wait(WAIT)
    fast = threading.Thread(target=serve, args=("/fast",))
    fast.start()  # parks at entry until the pause ends
    assert done.wait(WAIT)
    fast.join(WAIT)
    slow.join(WAIT)
    p.join(WAIT)
    assert calls == ["/slow", "/fast"]
    assert process_info()["units_of_work"] == units + 2
    assert safepoints.statistics().workers == ()  # between units no thread is registered


def test_a_saturated_covered_pool_takes_a_patch(modules):
    mod = modules.create("import time\n\ndef job(n):\n    time.sleep(0.02)\n    return n\n")
    stop = threading.Event()
    results: list[int] = []
    errors: list[BaseException] = []
    pool = cover_executor(ThreadPoolExecutor(max_workers=4))

    def feed() -> None:
        while not stop.is_set():
            for future in [pool.submit(mod.job, 1) for _ in range(8)]:
                try:
                    results.append(future.result())
                except BaseException as exc:  # recorded, asserted below
                    errors.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        poll(lambda: len(results) > 16, "jobs")
        modules.write(mod, "import time\n\ndef job(n):\n    time.sleep(0.02)\n    return n + 1\n")
        patch = hotfix.apply(mod, probation=0, timeout=2.0)
        assert patch.status == "applied"
        count = len(results)
        poll(lambda: len(results) > count + 16, "jobs after the patch")
    finally:
        stop.set()
        feeder.join(WAIT)
        pool.shutdown()
    assert not errors and results[-1] == 2
