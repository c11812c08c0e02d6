"""The transport-independent router: ``Request -> Response``.

The embedded HTTP server, the WSGI app and the ASGI app all turn their
request into a ``Request`` and send back the ``Response``; routing, auth,
validation, the calls into hotfix and the audit record happen here, once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

import hotfix
import safepoints
from verification import Report

# The routes call into the transaction core: it loads with the endpoint, never lazily in a request
# thread (a fork while a thread holds a module's import lock leaves every import of it in the child
# blocked for good: a pre-fork server's new worker would hang on its first status request).
from .. import _metrics, _tracing
from .. import _transaction as _transaction  # loaded eagerly, see above
from .._baseline import baselines
from .._outcomes import Reason, State, answer
from .._run._process import process_info
from .._scope import Scope, stale_modules
from ._audit import AuditSink, printable
from ._auth import (
    AuthFailureLimiter,
    HostAllowlist,
    host_allowed,
    host_allowlist,
    resolve_token,
    token_matches,
)
from ._identity import actor, claims, evidence
from ._openapi import build_openapi
from ._routes import API_PREFIX, MAX_BODY, ROUTES_BY_PATH, SCHEMA_VERSION, BadRequest

_log = logging.getLogger("hotfix.admin")

Check = Callable[[], object]


@attrs.frozen
class Request:
    """What every transport hands to the router. Header names are lower case."""

    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    remote: str = ""
    transport: str = "tcp"
    peer_pid: int | None = None  # Unix socket: the peer's credentials from the kernel (SO_PEERCRED)
    peer_uid: int | None = None


@attrs.frozen
class Response:
    status: int
    payload: dict = attrs.field(repr=False)
    extra_headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = attrs.field(default=None, repr=False)  # a non-JSON body (metrics)
    content_type: str = "application/json"

    def body(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.payload, default=str, separators=(",", ":")).encode("utf-8")

    def headers(self, body: bytes) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *self.extra_headers,
        ]


class _Fail(Exception):
    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra


class Router:
    """Routes, auth, validation, calls into hotfix, audit. Shared by every transport."""

    def __init__(
        self,
        *,
        token: str,  # the secret; only ever compared, never logged or returned
        policy: Scope,
        checks: Mapping[str, Iterable[Check]] | None = None,
        audit: AuditSink | None = None,
        allowed_hosts: HostAllowlist | None = None,
        max_body: int = MAX_BODY,
        probation: float | None = None,
        timeout: float | None = None,
        check_timeout: float | None = None,
        server_url: str | None = None,
        metrics_public: bool = False,
    ) -> None:
        self._token = token
        self.metrics_public = metrics_public
        self.policy = policy
        self.checks = {name: tuple(fns) for name, fns in (checks or {}).items()}
        for name, fns in self.checks.items():
            if not all(callable(f) for f in fns):
                raise TypeError(f"checks for {name!r} must be callables")
        self.audit = audit or AuditSink()
        self.allowed_hosts = allowed_hosts
        self.max_body = max_body
        self.probation = probation
        self.timeout = timeout
        self.check_timeout = check_timeout
        self.server_url = server_url
        self.started = time.time()
        self.token_source = "argument"
        #: Failed-token limiting (the embedded server sets one; mounted apps see a proxy's address).
        self.auth_limiter: AuthFailureLimiter | None = None

    # ------------------------------------------------------------------ entry points

    def handle(self, request: Request) -> Response:
        """Answer one request. Never raises."""
        # The caller's W3C trace context, if any, is current for the request and its audit record.
        with _tracing.continue_trace(_traceparent(request.headers)):
            return self._handle(request)

    def _handle(self, request: Request) -> Response:
        start = time.perf_counter()
        record: dict[str, Any] = {"module": None, "outcome": None, "patch_id": None, "route": None}
        try:
            response = self._dispatch(request, record)
        except _Fail as f:
            response = self._error(f)
        except Exception:  # the endpoint answers 500 and keeps serving
            _log.exception("admin endpoint: internal error on %s %s", printable(request.method, 20), printable(request.path))
            response = self._error(_Fail(500, "internal", "internal error in the hotfix endpoint; see the service log."))
        if record["outcome"] is None and response.status >= 400:
            record["outcome"] = response.payload.get("error")
        if not record.get("aggregated"):
            self._audit(request, response.status, record, start)
        self.flush_auth_audit()
        return response

    def flush_auth_audit(self, *, everything: bool = False) -> None:
        """Write the aggregated failed-token records whose window ended (see ``AuthFailureLimiter``)."""
        if self.auth_limiter is None:
            return
        for summary in self.auth_limiter.due(everything=everything):
            self.audit({"ts": time.time(), "method": None, "path": None, "route": None, "status": 401,
                        "remote": printable(summary["remote"], 100), "transport": None, "module": None,
                        "outcome": "auth-failures", "patch_id": None, "duration_ms": 0.0,
                        "failures": summary["failures"], "refused": summary["refused"],
                        "since_ts": summary["since_ts"], "last_ts": summary["last_ts"]})

    def refuse(self, request: Request, status: int, error: str, message: str) -> Response:
        """A transport-level refusal (oversized body, bad framing, wrong peer), audited."""
        response = self._error(_Fail(status, error, message))
        self._audit(request, status, {"module": None, "outcome": error, "patch_id": None, "route": None},
                    time.perf_counter())
        return response

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, request: Request, record: dict) -> Response:
        path = request.path.split("?", 1)[0]
        if not host_allowed(self.allowed_hosts, request.headers.get("host")):
            raise _Fail(403, "forbidden", "Host header not allowed: use localhost, 127.0.0.1 or [::1] with the server's port.")
        routes = ROUTES_BY_PATH.get(path)
        route = routes.get(request.method) if routes else None
        record["authenticated"] = token_matches(self._token, request.headers.get("authorization"))
        if route is None or (route.auth and not (route.name == "metrics" and self.metrics_public)):
            limiter = self.auth_limiter
            peer = limiter.peer_key(request.remote, request.transport) if limiter is not None else ""
            if limiter is not None and (wait := limiter.retry_after(peer)) is not None:
                # Refused whatever the token: a limited peer learns nothing from its guesses.
                record["aggregated"] = True
                raise _Fail(429, "too-many-auth-failures", f"too many wrong tokens from {printable(peer, 60)};"
                            f" try again in {wait:.1f}s with the right token.", retry_after=max(1, math.ceil(wait)))
            if not record["authenticated"]:
                record["aggregated"] = limiter is not None and not limiter.failed(peer)
                raise _Fail(401, "unauthorized", "missing or wrong bearer token: send 'Authorization: Bearer <token>'.")
        if routes is None:
            raise _Fail(404, "not-found", f"no such route; the routes are under {API_PREFIX}/ (see {API_PREFIX}/openapi.json).")
        if route is None:
            raise _Fail(405, "method-not-allowed", f"use {' or '.join(sorted(routes))} on this route.",
                        allow=", ".join(sorted(routes)))
        record["route"] = route.name
        record["actor"] = actor(request.transport, request.remote, request.peer_pid, request.peer_uid, request.headers)
        if len(request.body) > self.max_body:
            raise _Fail(413, "payload-too-large", f"the body is larger than {self.max_body} bytes.")
        if route.method == "POST" and request.body.strip():
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise _Fail(415, "unsupported-media-type", "send the body as Content-Type: application/json.")
        try:
            args = route.parse(request.body)
        except BadRequest as exc:
            raise _Fail(400, "bad-request", str(exc) + ".") from None
        if "module" in args:
            record["module"] = args["module"]
        answer = getattr(self, "_route_" + route.name.replace("-", "_").replace(".", "_"))(args, record)
        if isinstance(answer, Response):
            return answer
        status, payload = answer
        if record["outcome"] is None:
            record["outcome"] = payload.get("outcome", "ok")
        return Response(status, {"schema_version": SCHEMA_VERSION, **payload})

    def _error(self, f: _Fail) -> Response:
        headers: tuple[tuple[str, str], ...] = ()
        extra = dict(f.extra)
        if f.status == 401:
            headers = (("WWW-Authenticate", 'Bearer realm="hotfix"'),)
        if "allow" in extra:
            headers = (("Allow", extra.pop("allow")),)
        if "retry_after" in extra:
            headers = (("Retry-After", str(extra["retry_after"])),)
        return Response(f.status, {"schema_version": SCHEMA_VERSION, "error": f.error, "message": f.message, **extra}, headers)

    def _audit(self, request: Request, status: int, record: dict, start: float) -> None:
        self.audit({
            "ts": time.time(),
            "method": printable(request.method, 16),
            "path": printable(request.path),
            "route": record["route"],
            "status": status,
            "remote": printable(request.remote or "", 100),
            "transport": request.transport,
            "module": record["module"],
            "outcome": record["outcome"],
            "patch_id": record["patch_id"],
            "duration_ms": round((time.perf_counter() - start) * 1000, 3),
            **evidence(request.transport, request.remote, request.peer_pid, request.peer_uid),
            **claims(request.headers),
        })

    # ------------------------------------------------------------------ routes

    def _route_health(self, args: dict, record: dict) -> tuple[int, dict]:
        # No token here: booleans and counts only, never a module name or a patch id.
        return 200, {"status": "ok", "in_probation": _metrics.in_probation(),
                     "patches_in_effect": len(_metrics.patch_ids_in_effect()),
                     "stale_modules": len(self.stale_modules())}

    def _route_metrics(self, args: dict, record: dict) -> Response:
        public = not record["authenticated"]  # reached without the token: metrics_public, counts only
        text = _metrics.render(public=public, stale_count=lambda: len(self.stale_modules()))
        return Response(200, {}, raw=text.encode("utf-8"), content_type=_metrics.CONTENT_TYPE)

    def _route_openapi_json(self, args: dict, record: dict) -> tuple[int, dict]:
        return 200, build_openapi(self.server_url)

    def _route_status(self, args: dict, record: dict) -> tuple[int, dict]:
        stats = safepoints.statistics()
        history = hotfix.history()
        rolled_back = {h.patch_id for h in history if isinstance(h, hotfix.Rollback)}
        patches = [
            {"id": h.id, "status": h.status, "modules": list(h.modules), "applied_at": h.applied_at,
             "in_effect": h.status == "applied" and h.id not in rolled_back}
            for h in history if isinstance(h, hotfix.Patch)
        ]
        return 200, {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "uptime_seconds": round(time.time() - self.started, 3),
            "workers": [attrs.asdict(w) for w in stats.workers],
            "safepoints": {k: v for k, v in attrs.asdict(stats).items() if k != "workers"},
            "patches": patches,
            "stale_modules": self.stale_modules(),
            "running_sha256": self.running_sha256(),
            "process": process_info(),
            "allowed": self.policy.describe(),
            "checks": {name: [getattr(f, "__qualname__", repr(f)) for f in fns] for name, fns in self.checks.items()},
        }

    def _route_dry_run(self, args: dict, record: dict) -> tuple[int, dict]:
        name = self._module(args["module"])
        try:
            report = hotfix.dry_run(name)
        except hotfix.PatchRejected as exc:  # unloaded between our check and the call
            raise _outcome_fail(exc, record, module=name) from None
        return 200, {"outcome": report.verdict, "module": name, "report": report.to_dict(), "report_text": str(report)}

    def _route_apply(self, args: dict, record: dict) -> tuple[int, dict]:
        name = self._module(args["module"])
        kwargs: dict[str, Any] = {"checks": self.checks.get(name, ()) + self.checks.get("*", ()), "allow_risky": args.get("allow_risky", False)}
        probation = args.get("probation", self.probation)
        timeout = args.get("timeout", self.timeout)
        if probation is not None:
            kwargs["probation"] = probation
        if timeout is not None:
            kwargs["timeout"] = timeout
        if self.check_timeout is not None:
            kwargs["check_timeout"] = self.check_timeout
        if "expect_sha256" in args:
            kwargs["expect_sha256"] = args["expect_sha256"]
        kwargs["actor"] = record["actor"]
        try:
            patch = hotfix.apply(name, **kwargs)
        except hotfix.HotfixError as exc:
            raise _outcome_fail(exc, record, module=name) from None
        record["patch_id"] = patch.id
        return 200, {"outcome": patch.status, "module": name, "patch": patch.to_dict(),
                     "report_text": str(patch.report) if isinstance(patch.report, Report) else None}

    def _route_rollback(self, args: dict, record: dict) -> tuple[int, dict]:
        history = hotfix.history()
        patches = {h.id: h for h in history if isinstance(h, hotfix.Patch)}
        patch_id = args.get("patch_id")
        if patch_id is None:
            undone = {h.patch_id for h in history if isinstance(h, hotfix.Rollback)}
            live = [h for h in history if isinstance(h, hotfix.Patch) and h.status == "applied" and h.id not in undone
                    and all(self.policy.allows_module(m, sys.modules.get(m)) for m in h.modules)]
            if not live:
                raise _outcome_fail(hotfix.PatchRejected("there is no applied patch to roll back.",
                                                         reason=Reason.NOTHING_TO_ROLL_BACK), record)
            patch_id = live[-1].id
        elif patch_id not in patches:
            raise _Fail(404, "unknown-patch", f"no patch {printable(patch_id, 128)} in this process's history.")
        record["patch_id"] = patch_id
        for name in patches[patch_id].modules:
            if not self.policy.allows_module(name, sys.modules.get(name)):
                raise _Fail(404, "unknown-module", f"patch {patch_id} touches {name}, which is not under the allowed prefixes.")
        record["module"] = ",".join(patches[patch_id].modules)
        timeout = args.get("timeout", self.timeout)
        try:
            rb = hotfix.rollback(patch_id, actor=record["actor"], **({"timeout": timeout} if timeout is not None else {}))
        except hotfix.HotfixError as exc:
            raise _outcome_fail(exc, record, patch_id=patch_id) from None
        return 200, {"outcome": "rolled-back", "rollback": rb.to_dict()}

    def _route_history(self, args: dict, record: dict) -> tuple[int, dict]:
        entries = [h.to_dict() for h in hotfix.history()]
        return 200, {"count": len(entries), "entries": entries}

    # ------------------------------------------------------------------ helpers

    def _module(self, name: str) -> str:
        module = sys.modules.get(name)
        if module is None:
            raise _Fail(404, "unknown-module", f"module {name} is not loaded in this process; only imported modules can be patched.",
                        reason="not-loaded")
        if not self.policy.allows_module(name, module):
            raise _Fail(404, "unknown-module", f"module {name} is not under the allowed prefixes of this endpoint.",
                        reason="not-allowed")
        return name

    def running_sha256(self) -> dict[str, str]:
        """sha256 of the source each allowed module with a baseline runs (for ``hotfix rollout status``)."""
        out = {}
        for name, baseline in sorted(baselines().items()):
            module = sys.modules.get(name)
            if module is not None and self.policy.allows_module(name, module):
                out[name] = baseline.state.sha256
        return out

    def stale_modules(self) -> list[dict]:
        """Allowed modules whose file on disk differs from the version running (see ``hotfix._scope``)."""
        return [stale.to_dict() for stale in stale_modules(self.policy)]


def _outcome_fail(exc: hotfix.HotfixError, record: dict, **fields: Any) -> _Fail:
    """The answer for a transaction outcome: status and words from the one table (``hotfix._outcomes``)."""
    row = answer(exc.reason, exc.state)
    given = fields.pop("patch_id", None)
    patch_id = exc.patch_id or given
    if row.http_status == 404:  # unknown module / patch: the message alone, as for the endpoint's own checks
        record["outcome"] = row.error
        return _Fail(row.http_status, row.error, exc.message)
    record["outcome"] = f"{row.outcome}:{row.reason}" if row.outcome == "rejected" else row.outcome
    body: dict[str, Any] = {"outcome": row.outcome, **fields, "reason_code": exc.reason.value, "state": exc.state.value}
    if row.reason is not None:
        body["reason"] = row.reason
    if exc.state != State.UNCHANGED or patch_id is not None:
        record["patch_id"] = patch_id
        body["patch_id"] = patch_id
    if isinstance(exc, hotfix.PatchRolledBack):
        body["failure"] = _describe(exc.failure)
    if isinstance(exc, hotfix.RollbackIncomplete):
        body["failures"] = list(exc.failures)
    if exc.check is not None:
        body["check"] = exc.check
    if exc.audit_error is not None:
        body["audit_error"] = exc.audit_error
    return _Fail(row.http_status, row.error, exc.message, **body, **_reports(exc.report))


def _traceparent(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The request's W3C trace context, if well formed (anything else is ignored)."""
    value = headers.get("traceparent", "")
    return headers if value and _tracing.valid_traceparent(value) else {}


def _reports(report: Any) -> dict:
    if report is None:
        return {}
    if isinstance(report, tuple):
        return {"report": [r.to_dict() for r in report]}
    if isinstance(report, Report):
        return {"report": report.to_dict(), "report_text": str(report)}
    return {}


def _describe(failure: Any) -> str | None:
    if failure is None:
        return None
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    return str(failure)


def make_router(
    *,
    token: str | None,
    token_file: str | os.PathLike | None,
    allowed_prefixes: Iterable[str] | None,
    allowed_roots: Iterable[str | os.PathLike] | None,
    audit: Any,
    checks: Mapping[str, Iterable[Check]] | None,
    probation: float | None,
    timeout: float | None,
    max_body: int,
    check_timeout: float | None = None,
    allowed_hosts: Iterable[str] | None = None,
    metrics_public: bool = False,
) -> tuple[Router, str | None]:
    """A router with its token resolved; also returns the token file hotfix wrote, if any.

    ``allowed_hosts`` turns on the Host check for a mounted (WSGI/ASGI) app;
    the embedded server sets its own once it knows the bound port.
    """
    secret, _source, written = resolve_token(token, token_file)
    try:
        router = Router(token=secret, policy=Scope.of(allowed_prefixes, allowed_roots), checks=checks,
                        audit=AuditSink(audit), max_body=max_body, probation=probation, timeout=timeout,
                        metrics_public=metrics_public, check_timeout=check_timeout)
        _metrics.register_default()  # the app's prometheus_client registry shows hotfix's series
    except BaseException:
        if written:
            with contextlib.suppress(OSError):
                os.unlink(written)
        raise
    router.token_source = _source
    if allowed_hosts is not None:
        router.allowed_hosts = host_allowlist("localhost", None, allowed_hosts)
    return router, written
