"""Telemetry of a transaction: one OpenTelemetry span, metrics, and trace ids on log records.

``traced("hotfix.apply")`` wraps ``apply`` and ``rollback``. For every call it
counts the outcome (``_metrics``) and, when ``opentelemetry-api`` is
importable, runs the call inside a span of that name, current for the call,
so the transaction's steps (``step()``, called for every audited step) become
span events and hotfix's log records carry its ``trace_id``/``span_id``. The
span continues whatever context is current: the admin endpoint makes the
caller's W3C ``traceparent`` current before it calls ``apply`` (see
``continue_trace``), so a deploy pipeline's trace runs into the patch.

Without ``opentelemetry-api`` nothing here imports it, and the only cost
per transaction is a few counter increments. Without an SDK configured by
the application, the API hands out non-recording spans: no cost either.

Span attributes (OpenTelemetry naming: namespaced, lower case)::

    hotfix.patch_id, hotfix.modules, hotfix.verdicts, hotfix.sha256,
    hotfix.outcome, hotfix.reason, hotfix.held_seconds

Events: one per transaction step (``verified``, ``swapped``, ``applied``,
``rolled-back``, ...), plus an ``exception`` event (the standard one) for the
exception that made probation or a check roll the patch back.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from . import _metrics
from ._version import __version__

F = TypeVar("F", bound=Callable[..., Any])

_otel: Any = None  # opentelemetry.trace once imported; False when not installed
_TRACER_NAME = "hotfix"


def _trace_api() -> Any:
    """``opentelemetry.trace``, or ``None`` when the API is not installed (looked up once)."""
    global _otel
    if _otel is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel = False
        else:
            _otel = trace
            install_log_record_ids()
    return _otel or None


# --------------------------------------------------------------------------- the wrapper


def traced(span_name: str) -> Callable[[F], F]:
    """Wrap a transaction entry point (``apply`` or ``rollback``) with its span and metrics."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _span(span_name) as span:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    _ended(span_name, span, None, exc)
                    raise
                _ended(span_name, span, result, None)
                return result

        return wrapper  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def _span(name: str) -> Iterator[Any]:
    trace = _trace_api()
    if trace is None:
        yield None
        return
    tracer = trace.get_tracer(_TRACER_NAME, __version__)
    # Exceptions are recorded by _ended (with the typed reason), not again by the SDK.
    with tracer.start_as_current_span(name, kind=trace.SpanKind.INTERNAL, record_exception=False,
                                      set_status_on_exception=False) as span:
        yield span


def _ended(span_name: str, span: Any, result: Any, exc: BaseException | None) -> None:
    _metrics.set_in_probation(False)
    _metrics.register_default()  # an app's prometheus_client registry shows hotfix's series from now on
    outcome, reason = _outcome(span_name, result, exc)
    if span_name == "hotfix.apply":
        _metrics.record_outcome(outcome, reason)
    elif outcome == "rolled_back":
        _metrics.record_rollback(reason or "requested")
    elif outcome == "rejected":
        _metrics.record_rollback_refused(reason or "unknown")
    if outcome in ("applied", "rolled_back", "rollback_incomplete"):
        from ._taint import patches_changed

        patches_changed()  # crash output names the patches in effect
    if span is None:
        return
    attributes = _attributes(result, exc)
    attributes["hotfix.outcome"] = outcome
    if reason:
        attributes["hotfix.reason"] = reason
    span.set_attributes(attributes)
    failure = getattr(exc, "failure", None)
    if isinstance(failure, BaseException):  # the exception that made probation or a check roll back
        event: dict[str, Any] = {"hotfix.reason": reason or ""}
        formatted = (getattr(exc, "details", None) or {}).get("traceback")
        if isinstance(formatted, str):  # formatted while the patched source was running: the right lines
            event["exception.stacktrace"] = formatted
        span.record_exception(failure, attributes=event)
    if outcome in ("rejected", "rolled_back", "rollback_incomplete") or (exc is not None and outcome == "error"):
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, f"{outcome}: {reason}" if reason else outcome))


def _outcome(span_name: str, result: Any, exc: BaseException | None) -> tuple[str, str | None]:
    """``(outcome, reason)`` from what the call returned or raised; types and fields only."""
    from ._exceptions import PatchRejected, PatchRolledBack, RollbackIncomplete

    if exc is None:
        if span_name == "hotfix.rollback":
            return "rolled_back", str(getattr(result, "reason", "requested"))
        return str(getattr(result, "status", "applied")), None
    reason = _reason(exc)
    if isinstance(exc, RollbackIncomplete):
        return "rollback_incomplete", reason
    if isinstance(exc, PatchRolledBack):
        return "rolled_back", reason
    if isinstance(exc, PatchRejected):
        return "rejected", reason
    return "error", type(exc).__name__


def _reason(exc: BaseException) -> str | None:
    reason = getattr(exc, "reason", None)  # typed reasons on hotfix's exceptions
    if reason is None:
        details = getattr(exc, "details", None) or {}
        reason = details.get("reason")
    if reason is None:
        report = getattr(exc, "report", None)
        reports = report if isinstance(report, tuple) else (report,)
        verdicts = {getattr(r, "verdict", None) for r in reports}
        reason = "blocked" if "blocked" in verdicts else "precondition"
    return str(getattr(reason, "value", reason))


def _attributes(result: Any, exc: BaseException | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    details = getattr(exc, "details", None) or {}
    patch_id = getattr(result, "id", None) or getattr(result, "patch_id", None) or details.get("patch_id")
    if patch_id:
        out["hotfix.patch_id"] = str(patch_id)
    modules = getattr(result, "modules", None)
    report = getattr(result, "report", None) if exc is None else getattr(exc, "report", None)
    reports = report if isinstance(report, tuple) else (report,) if report is not None else ()
    if not modules and reports:
        modules = tuple(getattr(r, "module", "") for r in reports)
    if modules:
        out["hotfix.modules"] = [str(m) for m in modules]
    verdicts = [str(getattr(r, "verdict", "")) for r in reports if getattr(r, "verdict", None)]
    if verdicts:
        out["hotfix.verdicts"] = verdicts
    sha = getattr(result, "sha256", None)
    if sha:
        out["hotfix.sha256"] = [str(s) for s in sha]
    held = getattr(result, "stall_seconds", None)
    if isinstance(held, int | float):
        out["hotfix.held_seconds"] = float(held)
    return out


# --------------------------------------------------------------------------- steps


def step(step_name: str, fields: Mapping[str, Any]) -> None:
    """A transaction step happened (called for every audited step): a span event, held-time metrics."""
    if step_name in ("swapped", "rolled-back"):
        _metrics.record_held(fields.get("stall_seconds"))  # type: ignore[arg-type]
    if step_name == "swapped":
        _metrics.set_in_probation(True)
    trace = _otel or None  # only if a span could have been started: never import the API here
    if trace is None:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {}
    for key in ("patch_id", "outcome", "reason", "detail", "stall_seconds", "events"):
        value = fields.get(key)
        if isinstance(value, str | int | float | bool):
            attributes[f"hotfix.{key}"] = getattr(value, "value", value)
    for key in ("modules", "verdicts", "sha256"):
        value = fields.get(key)
        if isinstance(value, list | tuple) and value:
            attributes[f"hotfix.{key}"] = [str(v) for v in value]
    span.add_event(step_name, attributes)


# --------------------------------------------------------------------------- propagation


def continue_trace(headers: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
    """Make the W3C ``traceparent``/``tracestate`` of a request current (no-op without the API)."""
    if not headers.get("traceparent") or _trace_api() is None:
        return contextlib.nullcontext()
    return _attached(headers)


@contextlib.contextmanager
def _attached(headers: Mapping[str, str]) -> Iterator[None]:
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k: v for k, v in headers.items() if k in ("traceparent", "tracestate")}
    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def valid_traceparent(value: str) -> bool:
    """The W3C format ``00-<32 hex>-<16 hex>-<2 hex>``, ids not all zero."""
    parts = value.strip().split("-")
    if len(parts) != 4 or [len(p) for p in parts] != [2, 32, 16, 2]:
        return False
    if not all(c in "0123456789abcdef" for c in "".join(parts)) or parts[0] == "ff":
        return False
    return parts[1] != "0" * 32 and parts[2] != "0" * 16


# --------------------------------------------------------------------------- log records


def current_ids() -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` in hex of the active span, if the API is loaded and a span is active."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None, None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


_factory_installed = False


def install_log_record_ids() -> None:
    """Give records of the ``hotfix`` loggers ``trace_id``/``span_id`` attributes (once, chained)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        name = record.name
        if isinstance(name, str) and (name == "hotfix" or name.startswith("hotfix.")):
            trace_id, span_id = current_ids()
            if trace_id is not None:
                record.trace_id = trace_id
                record.span_id = span_id
        return record

    logging.setLogRecordFactory(factory)
