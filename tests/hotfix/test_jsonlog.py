"""hotfix.JSONFormatter: one JSON object per record, with patch_id, trace_id, module and outcome."""

from __future__ import annotations

import io
import json
import logging

import pytest

import hotfix
import hotfix.admin
from hotfix._jsonlog import CORE_KEYS

TOKEN = "jsonlog-token-" + "j" * 24
V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"


@pytest.fixture
def json_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(hotfix.JSONFormatter())
    logger = logging.getLogger("hotfix")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def read() -> list[dict]:
        lines = stream.getvalue().splitlines()
        return [json.loads(line) for line in lines]  # every line is exactly one object

    yield read
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_every_record_is_one_object_with_the_core_keys(modules, json_lines):
    mod = modules.create(V1)
    modules.write(mod, V2)
    patch = hotfix.apply(mod, probation=0)
    docs = json_lines()
    assert docs
    for doc in docs:
        assert set(CORE_KEYS) <= set(doc)
        assert doc["ts"].endswith("Z") and "T" in doc["ts"]
    ours = [d for d in docs if d["patch_id"] == patch.id]
    assert ours and all(d["logger"] == "hotfix" for d in ours)
    assert any("swapped" in d["message"] for d in ours)
    hotfix.rollback()


def test_admin_audit_records_carry_module_outcome_and_patch_id(modules, json_lines):
    mod = modules.create(V1)
    modules.write(mod, V2)
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    try:
        reply = hotfix.admin.Client(server.url, token=TOKEN).apply(mod.__name__, probation=0)
        assert reply.status == 200
    finally:
        server.close()
    [doc] = [d for d in json_lines() if d["logger"] == "hotfix.audit" and d.get("route") == "apply"]
    assert doc["module"] == mod.__name__
    assert doc["outcome"] == "applied"
    assert doc["patch_id"] == reply.body["patch"]["id"]
    assert doc["level"] == "INFO" and doc["status"] == 200
    hotfix.rollback()


def test_the_request_audit_record_carries_the_callers_trace(modules, json_lines):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    server = hotfix.admin.serve(token=TOKEN, allowed_roots=[modules.dir])
    try:
        client = hotfix.admin.Client(server.url, token=TOKEN, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        assert client.status().status == 200
    finally:
        server.close()
    [doc] = [d for d in json_lines() if d["logger"] == "hotfix.audit" and d.get("route") == "status"]
    assert doc["trace_id"] == trace_id and doc["span_id"] == parent


def test_trace_ids_and_exceptions_are_fields():
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    formatter = hotfix.JSONFormatter()
    logger = logging.getLogger("hotfix.test-jsonlog")
    with trace.get_tracer("test").start_as_current_span("outer") as span:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed %s", ("x",),
                                       __import__("sys").exc_info(), extra={"patch_id": "hf-1-1", "outcome": "rejected",
                                                                            "modules": ["a", "b"]})
    doc = json.loads(formatter.format(record))
    assert doc["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert doc["span_id"] == format(span.get_span_context().span_id, "016x")
    assert doc["message"] == "failed x" and doc["level"] == "ERROR"
    assert doc["patch_id"] == "hf-1-1" and doc["outcome"] == "rejected" and doc["module"] == "a,b"
    assert "ValueError: boom" in doc["exception"]
    plain = json.loads(formatter.format(logging.makeLogRecord({"msg": "hello\nworld", "name": "app"})))
    assert plain["message"] == "hello\nworld" and plain["trace_id"] is None and plain["patch_id"] is None
