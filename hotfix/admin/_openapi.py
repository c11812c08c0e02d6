"""The OpenAPI 3.1 document, generated from the route table."""

from __future__ import annotations

from typing import Any

from ._routes import MAX_BODY, ROUTES, SCHEMA_VERSION

_STATUS_TEXT = {
    200: "OK",
    400: "Bad input: not a JSON object, wrong field type or value, or an unknown field",
    401: "Missing or wrong bearer token",
    403: "Host header not allowed (DNS rebinding guard) or Unix-socket peer of another user",
    404: "Unknown route (`not-found`), a module not loaded or not allowed (`unknown-module`), or an "
         "unknown patch id (`unknown-patch`)",
    405: "Method not allowed on this route",
    409: "Rejected (nothing changed; `reason`: busy, blocked, risky, precondition) or rolled back",
    413: f"Body larger than {MAX_BODY} bytes",
    415: "Body is not application/json",
    500: "Internal error (see the service log)",
}

_ERROR = {
    "type": "object",
    "required": ["schema_version", "error", "message"],
    "properties": {
        "schema_version": {"type": "integer", "const": SCHEMA_VERSION},
        "error": {"type": "string", "description": "Machine-readable error kind.", "enum": [
            "bad-request", "unauthorized", "forbidden", "not-found", "unknown-module", "unknown-patch",
            "method-not-allowed", "rejected", "rolled-back", "payload-too-large",
            "unsupported-media-type", "internal"]},
        "reason": {"type": "string", "description": "For 409: busy, blocked, risky, precondition, "
                   "nothing-to-roll-back, check-failed, probation-failed, verify-failed."},
        "message": {"type": "string", "description": "One sentence: what happened, what to do."},
        "report": {"description": "The verification report (`Report.to_dict()`), when one was made."},
        "patch_id": {"type": "string"},
    },
}

_OK = {
    "type": "object",
    "required": ["schema_version"],
    "properties": {
        "schema_version": {"type": "integer", "const": SCHEMA_VERSION},
        "outcome": {"type": "string", "description": "dry-run: the verdict; apply: applied or "
                    "unchanged; rollback: rolled-back."},
    },
    "additionalProperties": True,
}


def build_openapi(server_url: str | None = None) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "operationId": route.name.replace("-", "_").replace(".", "_"),
            "summary": route.summary,
            "description": route.description,
            "responses": {},
        }
        if not route.auth:
            op["security"] = []
        if route.fields:
            op["requestBody"] = {
                "required": any(f.required for f in route.fields),
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [f.name for f in route.fields if f.required],
                    "properties": {f.name: f.schema() for f in route.fields},
                }}},
            }
        for status in sorted(set(route.responses) | {500}):
            schema = _OK if status == 200 else _ERROR
            content: dict[str, Any] = {"application/json": {"schema": schema}}
            if status == 200 and route.content_type != "application/json":
                content = {route.content_type: {"schema": {"type": "string"}}}
            op["responses"][str(status)] = {"description": _STATUS_TEXT[status], "content": content}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "hotfix admin endpoint",
            "version": str(SCHEMA_VERSION),
            "description": "Verify, apply and roll back in-place patches of this process. The only "
                           "source of new code is the file on disk: no route accepts code.",
        },
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
