"""The route table: one description drives validation, dispatch and the OpenAPI document."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

#: Every route lives under this path (relative to where the app is mounted).
API_PREFIX = "/hotfix/v1"
#: Version of the JSON documents the endpoint and the CLI emit.
SCHEMA_VERSION = 1
#: Request bodies larger than this are refused with 413.
MAX_BODY = 64 * 1024
MAX_PROBATION = 600.0
MAX_TIMEOUT = 60.0
MAX_NAME = 200
MAX_PATCH_ID = 128
#: The string constraints, stated once: the OpenAPI document publishes these patterns and the
#: router enforces them with ``re.fullmatch``. Anchored, ASCII classes only, so JSON Schema's
#: ECMA-262 regexes and Python's agree.
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
PATCH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


class BadRequest(Exception):
    """The body or a field is unusable (400)."""


@attrs.frozen
class Field:
    """One JSON body field; ``kind`` is ``string``, ``boolean`` or ``number``."""

    name: str
    kind: str
    description: str
    required: bool = False
    max_length: int | None = None
    pattern: str | None = None
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    #: What a valid value looks like, for the 400 message (string fields with a pattern).
    hint: str = ""

    def check(self, value: Any) -> Any:
        if self.kind == "string":
            if not isinstance(value, str):
                raise BadRequest(f"field {self.name!r} must be a string")
            if self.max_length is not None and len(value) > self.max_length:
                raise BadRequest(f"field {self.name!r} is longer than {self.max_length} characters")
            if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
                raise BadRequest(f"field {self.name!r} must be {self.hint or 'match ' + self.pattern}; got "
                                 f"{len(value)} characters: {value[:70]!r}")
            return value
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise BadRequest(f"field {self.name!r} must be true or false")
            return value
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BadRequest(f"field {self.name!r} must be a finite number")
            if self.minimum is not None and value < self.minimum:
                raise BadRequest(f"field {self.name!r} must be >= {self.minimum}")
            if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
                raise BadRequest(f"field {self.name!r} must be > {self.exclusive_minimum}")
            if self.maximum is not None and value > self.maximum:
                raise BadRequest(f"field {self.name!r} must be <= {self.maximum}")
            return float(value)
        raise AssertionError(self.kind)  # pragma: no cover

    def schema(self) -> dict:
        out: dict[str, Any] = {"type": self.kind, "description": self.description}
        for key, value in (("maxLength", self.max_length), ("pattern", self.pattern),
                           ("minimum", self.minimum), ("exclusiveMinimum", self.exclusive_minimum),
                           ("maximum", self.maximum)):
            if value is not None:
                out[key] = value
        return out


@attrs.frozen
class Route:
    method: str
    name: str  # path segment after API_PREFIX
    summary: str
    description: str
    auth: bool = True
    fields: tuple[Field, ...] = ()
    responses: tuple[int, ...] = (200,)
    content_type: str = "application/json"  # of a 200 answer

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.name}"

    def parse(self, body: bytes) -> dict[str, Any]:
        """Validate a JSON body against ``fields``; unknown fields are refused."""
        if self.method == "GET":
            return {}
        data = parse_json_object(body)
        known = {f.name: f for f in self.fields}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(repr(u[:40]) for u in unknown[:5])}")
        out = {}
        for f in self.fields:
            if f.name in data:
                if data[f.name] is None and not f.required:
                    continue
                out[f.name] = f.check(data[f.name])
            elif f.required:
                raise BadRequest(f"field {f.name!r} is required")
        return out


def is_module_name(value: str) -> bool:
    return len(value) <= MAX_NAME and re.fullmatch(MODULE_PATTERN, value) is not None


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(SHA256_PATTERN, value) is not None


def sha256_problem(value: object) -> str | None:
    """Why ``value`` is not a full sha256 (64 lowercase hex digits), or ``None`` if it is one."""
    if not isinstance(value, str):
        return f"a sha256 is a string of 64 hex digits, not {type(value).__name__}"
    if is_sha256(value):
        return None
    if len(value) != 64:
        return f"a sha256 has 64 hex digits; {value[:70]!r} has {len(value)} (a shortened sha256 is not accepted)"
    bad = sorted({c for c in value if c not in "0123456789abcdef"})
    return f"a sha256 has only the digits 0-9a-f (lowercase); {value!r} contains {''.join(bad)!r}"


def _no_constants(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BadRequest(f"duplicate field {key[:40]!r}")
        out[key] = value
    return out


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object from a UTF-8 body (an empty body is ``{}``)."""
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:100]}") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


MODULE = Field("module", "string", "Dotted name of a module already imported by the process and "
               "under the allowed prefixes/roots, made of ASCII identifiers. Never code: the new code "
               "is the file on disk.", required=True, max_length=MAX_NAME, pattern=MODULE_PATTERN,
               hint="a dotted module name of ASCII identifiers, like billing.rules")
EXPECT = Field("expect_sha256", "string", "Refuse unless the file on disk has exactly this sha256 "
               "(as shown by a dry run): pins the reviewed content. All 64 lowercase hex digits.",
               max_length=64, pattern=SHA256_PATTERN, hint="all 64 lowercase hex digits of a sha256 (a dry run shows them)")
ALLOW_RISKY = Field("allow_risky", "boolean", "Apply a change whose verdict is risky.")
PROBATION = Field("probation", "number", "Seconds to watch the patched code after the checks "
                  "(default: the server's).", minimum=0.0, maximum=MAX_PROBATION)
TIMEOUT = Field("timeout", "number", "Seconds to wait for workers to park (default: the server's).",
                exclusive_minimum=0.0, maximum=MAX_TIMEOUT)
PATCH_ID = Field("patch_id", "string", "Patch to roll back (default: the latest applied one), as "
                 "`history` shows it (hf-<pid>-<n>).", max_length=MAX_PATCH_ID, pattern=PATCH_ID_PATTERN,
                 hint="a patch id as history shows it, like hf-1234-1")

ROUTES: tuple[Route, ...] = (
    Route("GET", "health", "Liveness", "Answers 200 when the admin server is up. Needs no token and "
          "reveals only booleans and counts: whether a patch is in probation, how many patches are in "
          "effect, how many modules are stale.", auth=False, responses=(200,)),
    Route("GET", "status", "Workers, patches and stale modules",
          "Registered safepoint workers and their state, the patches in effect, and loaded modules "
          "(under the allowed prefixes) whose file on disk differs from what runs.",
          responses=(200, 401)),
    Route("POST", "dry-run", "Verify a module against its file on disk",
          "Changes nothing and runs no module code. `outcome` is the verdict: unchanged, safe, risky "
          "or blocked.", fields=(MODULE,), responses=(200, 400, 401, 404, 413, 415)),
    Route("POST", "apply", "Adopt the file on disk",
          "Verifies, parks workers, swaps the code in place, runs the server-side checks registered "
          "for the module and watches a probation window. Synchronous: answers after probation. 409 "
          "when the patch was rejected (nothing changed) or rolled back (the previous code runs).",
          fields=(MODULE, EXPECT, ALLOW_RISKY, PROBATION, TIMEOUT),
          responses=(200, 400, 401, 404, 409, 413, 415)),
    Route("POST", "rollback", "Undo an applied patch",
          "Restores the exact previous objects of the latest applied patch, or of `patch_id`.",
          fields=(PATCH_ID, TIMEOUT), responses=(200, 400, 401, 404, 409, 413, 415)),
    Route("GET", "history", "Every patch and rollback, oldest first", "As recorded by the process.",
          responses=(200, 401)),
    Route("GET", "metrics", "Prometheus metrics",
          "The Prometheus text exposition (format 0.0.4) of hotfix's counters, gauges and held-time "
          "histogram. Needs the token unless the server was started with metrics_public=True; "
          "then it answers without one and leaves out the build information.",
          responses=(200, 401), content_type="text/plain; version=0.0.4; charset=utf-8"),
    Route("GET", "openapi.json", "This document", "The OpenAPI 3.1 description of these routes.",
          responses=(200, 401)),
)

_by_path: dict[str, dict[str, Route]] = {}
for _r in ROUTES:
    _by_path.setdefault(_r.path, {})[_r.method] = _r
del _r
ROUTES_BY_PATH: Mapping[str, dict[str, Route]] = _by_path
