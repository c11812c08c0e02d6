"""Defect 11 (issue 12): expect_sha256 must be a whole sha256 everywhere, with a message that shows
what differs; the OpenAPI document states the constraints on ``module`` and ``patch_id`` that the
router enforces (one pattern, published and checked)."""

from __future__ import annotations

import re

import pytest

import hotfix
import hotfix.admin
from hotfix._cli import main as cli_main
from hotfix.admin._routes import ROUTES_BY_PATH, BadRequest

SHORT = "b7fdeefd2ff2"


def _schema(route: str) -> dict:
    doc = hotfix.admin.build_openapi()
    op = doc["paths"][f"/hotfix/v1/{route}"]["post"]
    return op["requestBody"]["content"]["application/json"]["schema"]["properties"]


def _router_accepts(route: str, field: str, value) -> bool:
    body = {"module": "billing"} if route == "apply" and field != "module" else {}
    body[field] = value
    import json

    try:
        ROUTES_BY_PATH[f"/hotfix/v1/{route}"]["POST"].parse(json.dumps(body).encode())
    except BadRequest:
        return False
    return True


@pytest.mark.parametrize(("route", "field"), [("apply", "module"), ("dry-run", "module"),
                                              ("rollback", "patch_id"), ("apply", "expect_sha256")])
def test_the_document_states_what_the_router_enforces(route, field):
    schema = _schema(route)[field]
    assert "pattern" in schema and "maxLength" in schema, schema
    samples = ["billing", "billing.rules", "_private.mod2", "hf-1234-1", "hf-1-22", "a" * 64, "0" * 64,
               "", " ", "billing.", ".billing", "a..b", "2fast", "billing rules", "b\u00e9la", "os; import os",
               "hf 1", "-x", "x\n", "A" * 64, "a" * 63, "a" * 65, SHORT, "hf-1234-1\n", "mod" * 80]
    # JSON Schema patterns are ECMA-262: "$" ends the input; Python's "$" also matches before a final "\n".
    ecma = re.compile(schema["pattern"][:-1] + r"\Z" if schema["pattern"].endswith("$") else schema["pattern"])
    for value in samples:
        documented = len(value) <= schema["maxLength"] and ecma.search(value) is not None
        assert _router_accepts(route, field, value) == documented, (field, value)


def test_a_short_expect_sha256_is_refused_by_the_endpoint_with_what_differs():
    with pytest.raises(BadRequest) as info:
        ROUTES_BY_PATH["/hotfix/v1/apply"]["POST"].parse(b'{"module": "m", "expect_sha256": "b7fdeefd2ff2"}')
    assert "64" in str(info.value) and "12 characters" in str(info.value) and SHORT in str(info.value)


def test_a_short_expect_sha256_is_refused_by_the_api(modules):
    mod = modules.create("def f():\n    return 1\n")
    modules.write(mod, "def f():\n    return 2\n")
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply(mod, expect_sha256=SHORT)
    assert info.value.reason == hotfix.Reason.INVALID_ARGUMENT
    assert mod.f() == 1


def test_a_short_expect_sha256_is_a_usage_error_in_the_cli(capsys):
    code = cli_main(["--url", "http://127.0.0.1:9", "--token", "t" * 20, "apply", "billing",
                     "--expect-sha256", SHORT])
    err = capsys.readouterr().err
    assert code == 2
    assert "64 hex digits" in err and "has 12" in err
