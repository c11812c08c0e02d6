"""OpenTelemetry: a span per transaction, events per step, trace continued from the CLI, ids on log records.

Uses the real SDK with its in-memory exporter (the SDK is only in the test extra).
"""

from __future__ import annotations

import logging
import threading

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import hotfix
import hotfix.admin
import safepoints
from hotfix._cli import main

TOKEN = "trace-token-" + "t" * 24
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"
V3 = "def f():\n    return 3\n"


@pytest.fixture(scope="module")
def exporter():
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the global provider can be set once per process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exp = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp
    exp.shutdown()


@pytest.fixture
def spans(exporter):
    exporter.clear()

    def finished(name: str | None = None):
        return [s for s in exporter.get_finished_spans() if name is None or s.name == name]

    return finished


def test_apply_is_one_span_with_attributes_and_an_event_per_step(modules, spans):
    mod = modules.create(V1)
    modules.write(mod, V2)
    patch = hotfix.apply(mod, probation=0)
    [span] = spans("hotfix.apply")
    a = span.attributes
    assert a["hotfix.patch_id"] == patch.id
    assert list(a["hotfix.modules"]) == [mod.__name__]
    assert list(a["hotfix.verdicts"]) == ["safe"]
    assert list(a["hotfix.sha256"]) == list(patch.sha256)
    assert a["hotfix.outcome"] == "applied"
    assert a["hotfix.held_seconds"] == patch.stall_seconds
    steps = [e.name for e in span.events]
    assert steps[0] == "verified" and "swapped" in steps and steps[-1] == "applied"
    assert span.status.status_code != StatusCode.ERROR
    hotfix.rollback()
    [rb] = spans("hotfix.rollback")
    assert rb.attributes["hotfix.outcome"] == "rolled_back" and rb.attributes["hotfix.reason"] == "requested"
    assert rb.attributes["hotfix.patch_id"] == patch.id


def test_rejection_is_an_error_span_with_the_typed_reason(modules, spans):
    mod = modules.create(V1)
    modules.write(mod, "def f(:\n    return 2\n")
    with pytest.raises(hotfix.PatchRejected):
        hotfix.apply(mod, probation=0)
    [span] = spans("hotfix.apply")
    assert span.attributes["hotfix.outcome"] == "rejected"
    assert span.attributes["hotfix.reason"] == "blocked"
    assert list(span.attributes["hotfix.verdicts"]) == ["blocked"]
    assert span.status.status_code == StatusCode.ERROR


def test_probation_rollback_is_an_exception_event(modules, spans):
    mod = modules.create("def handle(x):\n    return x\n")
    modules.write(mod, "def handle(x):\n    return x['key']\n")
    started, stop = threading.Event(), threading.Event()

    def worker():
        with safepoints.worker("trace-worker"):
            while not stop.is_set():
                safepoints.checkpoint()
                try:
                    mod.handle(1)
                except TypeError:
                    pass
                started.set()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    assert started.wait(10)
    try:
        with pytest.raises(hotfix.PatchRolledBack):
            hotfix.apply(mod, probation=10)
    finally:
        stop.set()
        t.join(10)
    [span] = spans("hotfix.apply")
    assert span.attributes["hotfix.outcome"] == "rolled_back"
    assert span.attributes["hotfix.reason"] == "probation-failed"
    [exc_event] = [e for e in span.events if e.name == "exception"]
    assert exc_event.attributes["exception.type"] == "TypeError"
    assert "x['key']" in exc_event.attributes["exception.stacktrace"]
    assert "rolled-back" in [e.name for e in span.events]


def test_log_records_of_hotfix_loggers_carry_the_span_ids(modules, spans, caplog):
    mod = modules.create(V1)
    modules.write(mod, V2)
    with caplog.at_level(logging.INFO, logger="hotfix"):
        hotfix.apply(mod, probation=0)
    [span] = spans("hotfix.apply")
    ours = [r for r in caplog.records if r.name == "hotfix" and getattr(r, "patch_id", None) == span.attributes["hotfix.patch_id"]]
    assert ours
    for record in ours:
        assert record.trace_id == format(span.context.trace_id, "032x")
        assert record.span_id == format(span.context.span_id, "016x")
    outside = logging.getLogger("hotfix").makeRecord("hotfix", logging.INFO, __file__, 1, "x", (), None)
    assert not hasattr(outside, "trace_id")  # no span active: no ids
    hotfix.rollback()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_cli_traceparent_continues_the_callers_trace(modules, spans, capsys, monkeypatch, how):
    mod = modules.create(V1)
    modules.write(mod, V3)
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    try:
        args = ["--url", server.url, "--token", TOKEN, "apply", mod.__name__, "--probation", "0"]
        if how == "option":
            args += ["--traceparent", TRACEPARENT]
        else:
            monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
        assert main(args) == 0, capsys.readouterr()
    finally:
        server.close()
    [span] = spans("hotfix.apply")
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    hotfix.rollback()


def test_cli_refuses_a_malformed_traceparent(capsys):
    assert main(["--url", "http://127.0.0.1:9", "--token", TOKEN, "status", "--traceparent", "00-xyz"]) == 2
    assert "traceparent" in capsys.readouterr().err


def test_a_malformed_traceparent_header_starts_a_new_trace(modules, spans):
    mod = modules.create(V1)
    modules.write(mod, V2)
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    try:
        client = hotfix.admin.Client(server.url, token=TOKEN, headers={"traceparent": "00-" + "0" * 32 + "-" + PARENT_ID + "-01"})
        assert client.apply(mod.__name__, probation=0).status == 200
    finally:
        server.close()
    [span] = spans("hotfix.apply")
    assert span.parent is None
    hotfix.rollback()
