"""One before/after fixture pair per reason code: verdict, code and qualified name."""

from __future__ import annotations

import json
import shutil

import pytest

import hotfix
import verification
from tests.helpers import FIXTURES, REPO
from verification._model import strip_lines

REASONS_DIR = FIXTURES / "reasons"

# code -> qualified name the finding must carry (None: module-level finding)
EXPECTED = {
    "syntax-error": None,
    "undecodable-file": None,
    "bases-changed": "B",
    "metaclass-changed": "B",
    "class-decorators-changed": "B",
    "slots-changed": "P",
    "fields-changed": "Point",
    "enum-members-changed": "Color",
    "signature-changed": "f",
    "exception-handling-changed": "f",
    "closure-changed": "B.f",
    "decorators-changed": "f",
    "statement-with-call": "HOME",
    "state-reset": "cache",
    "init-changed-live-instances": "C.__init__",
    "body-changed": "f",
    "defaults-changed": "f",
    "annotations-changed": "f",
    "docstring-changed": "f",
    "line-shift": "f",
    "function-added": "g",
    "function-removed": "g",
    "class-added": "K",
    "class-removed": "K",
    "statement-added": "LIMIT",
    "statement-removed": "OTHER",
    "import-changed": "json",
    "source-only": None,
    "too-deep": None,
    "old-object-held": "f",
    "removed-but-referenced": "g",
    "init-subclass-changed": "Base.__init_subclass__",
    "metaclass-hook-changed": "Meta.__new__",
    "abstract-method-added": "A.g",
    "set-name-changed": "Field.__set_name__",
    "lambda-changed": "key",
    "cached-values": "C.v",
    "enum-member-added": "Color",
    "dependent-rerun": "TABLE",
    "state-kept": "X",
    "signature-changed-local": "f",
}

#: Codes found only in a running process (live holders, instances, state), not by the offline diff.
LIVE_ONLY = {"signature-changed-local", "init-changed-live-instances", "state-reset", "old-object-held", "cached-values", "dependent-rerun",
             "state-kept"}
#: Codes that name a difference from a fresh import (the names they carry, and holders in their detail, are
#: not compared); class-creation hooks mean existing classes differ (the classes are not compared).
DIFFERENCES = {"state-kept", "state-reset", "old-object-held", "cached-values"}
HOOKS = {"init-subclass-changed", "metaclass-hook-changed", "abstract-method-added", "set-name-changed"}


#: Codes about other modules: a dependent that imports from the fixture module is loaded too.
HOLDERS = {"signature-changed": "from {module} import f\n"}


def load_pair(modules, code: str):
    before = (REASONS_DIR / f"{code}.before.py").read_bytes()
    m = modules.create(before.decode())
    if code in HOLDERS:
        modules.create(HOLDERS[code].format(module=m.__name__))
    shutil.copyfile(REASONS_DIR / f"{code}.after.py", modules.path(m.__name__))
    return m


def test_every_reason_code_has_a_fixture_pair():
    testable = set(verification.REASONS) - {
        "file-missing", "file-unreadable", "not-a-file", "file-too-large",  # tested with real files below
        "not-a-source-module", "main-module", "no-baseline", "no-live-object",  # need a live situation
    }
    assert testable == set(EXPECTED)
    for code in EXPECTED:
        assert (REASONS_DIR / f"{code}.before.py").exists(), code
        assert (REASONS_DIR / f"{code}.after.py").exists(), code


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_reason_code_from_fixture(modules, code):
    m = load_pair(modules, code)
    report = hotfix.dry_run(m)
    severity = verification.REASONS[code][0]
    found = report.by_code(code)
    assert found, f"{code} not in {[f.code for f in report.findings]}"
    assert found[0].qualname == EXPECTED[code]
    assert found[0].severity == severity
    assert report.verdict == severity
    # JSON round-trip with stable keys
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema_version"] == verification.SCHEMA_VERSION
    assert set(data) == {"schema_version", "module", "verdict", "source", "findings", "impact", "dependents", "created_at"}
    assert {"code": code, "severity": severity, "qualname": EXPECTED[code]}.items() <= next(
        f for f in data["findings"] if f["code"] == code).items()
    # the offline diff agrees with the live dry run on the reason code
    offline = verification.compare_files(str(REASONS_DIR / f"{code}.before.py"), str(REASONS_DIR / f"{code}.after.py"))
    if code not in LIVE_ONLY:
        assert offline.by_code(code), f"offline: {[f.code for f in offline.findings]}"
    assert code in str(report)


@pytest.mark.parametrize("code", sorted(c for c, (sev, _) in verification.REASONS.items() if sev == "blocked" and c in EXPECTED))
def test_blocked_fixture_is_refused_and_changes_nothing(modules, code):
    from tests.helpers import assert_same, snapshot

    m = load_pair(modules, code)
    before = snapshot(m)
    with pytest.raises(hotfix.PatchRejected):
        hotfix.apply(m, probation=0, allow_risky=True)
    assert_same(before, snapshot(m))


@pytest.mark.parametrize("code", sorted(c for c, (sev, _) in verification.REASONS.items() if sev != "blocked" and c in EXPECTED))
def test_applicable_fixture_applies_and_matches_a_fresh_import(modules, code):
    """Differential: after the patch the module behaves like a fresh import of the new source."""
    m = load_pair(modules, code)
    before = public_shape(m)
    report = hotfix.dry_run(m)
    patch = hotfix.apply(m, probation=0, allow_risky=True)
    assert patch.status == "applied"
    fresh_name = m.__name__ + "_fresh"
    shutil.copyfile(modules.path(m.__name__), modules.path(fresh_name))
    fresh = modules.load(fresh_name)
    explained = {f.qualname for f in report.findings if f.code in DIFFERENCES}
    explained |= {line.split("[")[0].split(".")[0] for f in report.findings if f.code in DIFFERENCES
                  for line in (f.detail or "").splitlines()}
    patched, expected = public_shape(m), public_shape(fresh)
    if any(f.code in HOOKS for f in report.findings):  # existing classes keep what the old hook did
        patched = {k: v for k, v in patched.items() if v[0] != "class"}
        expected = {k: v for k, v in expected.items() if v[0] != "class"}
    for name in explained:
        patched.pop(name, None)
        expected.pop(name, None)
    assert patched == expected
    hotfix.rollback(patch.id)
    restored = public_shape(m)
    for name in explained:  # a re-run decorator's own side effects (a registry append) are not undone
        restored.pop(name, None)
        before.pop(name, None)
    assert restored == before


def public_shape(module) -> dict:
    """Names, kinds and, for functions, code (line info stripped) and defaults; values for plain data."""
    shape = {}
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if isinstance(value, type):
            members = {}
            for k, v in vars(value).items():
                fn = getattr(v, "__func__", None) or getattr(v, "func", None) or v
                if hasattr(fn, "__code__"):
                    members[k] = (strip_lines(fn.__code__), fn.__defaults__)
                elif not k.startswith("__"):
                    members[k] = repr(v)
            shape[name] = ("class", members)
        elif hasattr(value, "__code__"):
            shape[name] = ("function", strip_lines(value.__code__), value.__defaults__,
                           value.__kwdefaults__, value.__annotations__, value.__doc__)
        elif hasattr(value, "__wrapped__"):
            shape[name] = ("wrapped", strip_lines(value.__wrapped__.__code__))
        elif isinstance(value, type(module)):
            shape[name] = ("module", value.__name__)
        else:
            shape[name] = ("value", repr(value) if type(value).__module__ == "builtins" else type(value).__qualname__)
    return shape


def test_bad_files_are_blocked_never_a_traceback(modules, tmp_path):
    m = modules.create("def f():\n    return 1\n")
    path = modules.path(m.__name__)
    cases = {
        "file-missing": lambda: path.unlink(),
        "not-a-file": lambda: (path.unlink(), path.mkdir()),
        "undecodable-file": lambda: path.write_bytes(b"\x00\x01\x02binary\xff"),
    }
    for code, make in cases.items():
        if path.is_dir():
            path.rmdir()
        path.write_text("def f():\n    return 1\n")
        make()
        report = hotfix.dry_run(m)
        assert report.verdict == "blocked" and report.by_code(code), (code, report.findings)
        with pytest.raises(hotfix.PatchRejected):
            hotfix.apply(m, probation=0)
    if path.is_dir():
        path.rmdir()
    path.write_text("")  # empty file: every definition removed, a valid module
    assert hotfix.dry_run(m).by_code("function-removed")
    big = "x = 1\n" * (verification._source.MAX_SOURCE_BYTES // 6 + 10)
    path.write_text(big)
    assert hotfix.dry_run(m).by_code("file-too-large")


def test_module_whose_file_points_nowhere(modules):
    import types

    ghost = types.ModuleType("hf_ghost_mod")
    ghost.__file__ = "/nonexistent/dir/hf_ghost_mod.py"
    import sys

    sys.modules["hf_ghost_mod"] = ghost
    try:
        report = hotfix.dry_run("hf_ghost_mod")
        assert report.verdict == "blocked" and report.by_code("file-missing")
    finally:
        del sys.modules["hf_ghost_mod"]


def test_no_live_object_when_a_definition_was_deleted_at_runtime(modules):
    m = modules.create("def f():\n    return 1\n\ndef g():\n    return 1\n")
    del m.f
    modules.write(m, "def f():\n    return 2\n\ndef g():\n    return 1\n")
    report = hotfix.dry_run(m)
    assert report.by_code("no-live-object") and report.verdict == "risky"


def test_readme_table_lists_exactly_the_catalog():

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Reason codes"):]
    table = table[: table.index("\n## ", 1)]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0] not in ("code", "---"):
            for code in cells[0].split("/"):
                rows[code.strip()] = cells[1]
    assert rows == {code: severity for code, (severity, _) in verification.REASONS.items()}
