"""The first slice: swap in place, keep identities, refuse and roll back cleanly."""

from __future__ import annotations

import sys
import threading

import pytest

import hotfix
from tests.helpers import assert_same, snapshot

V1 = """
    LIMIT = 10
    registry = {}

    def price(qty, unit=2):
        return qty * unit

    def register(fn):
        registry[fn.__name__] = fn
        return fn

    @register
    def handler(x):
        return x + 1

    class Cart:
        def __init__(self):
            self.items = []

        def total(self):
            return sum(price(q) for q in self.items)

        def describe(self):
            return "cart"
"""

V2 = """
    LIMIT = 10
    registry = {}

    def price(qty, unit=2):
        return qty * unit * 10

    def register(fn):
        registry[fn.__name__] = fn
        return fn

    @register
    def handler(x):
        return x + 100

    class Cart:
        def __init__(self):
            self.items = []

        def total(self):
            return sum(price(q) for q in self.items) + 1

        def describe(self):
            return "cart"

        def count(self):
            return len(self.items)
"""


def test_changed_function_keeps_identity_for_every_reference(modules):
    m = modules.create(V1)
    price = m.price  # a `from m import price` holder
    callback = m.registry["handler"]  # a callback stored in a dict
    cart = m.Cart()
    cart.items = [1, 2]
    bound = cart.total  # a bound method of an existing instance
    old_price_code = m.price.__code__
    state_registry = m.registry
    modules.write(m, V2)

    patch = hotfix.apply(m, probation=0)

    assert patch.status == "applied"
    assert patch.modules == (m.__name__,)
    assert m.price is price and price.__code__ is not old_price_code
    assert price(1) == 20
    assert callback(1) == 101
    assert bound() == 61
    assert cart.count() == 2  # added method visible on the existing instance
    assert type(cart) is m.Cart
    assert m.registry is state_registry and list(m.registry) == ["handler"]  # statement not re-run
    assert patch.report.verdict == "safe"
    codes = {f.code for f in patch.report.findings}
    assert {"body-changed", "function-added"} <= codes


def test_rollback_restores_identical_code_objects(modules):
    m = modules.create(V1)
    before = snapshot(m)
    modules.write(m, V2)
    patch = hotfix.apply(m, probation=0)
    assert m.price(1) == 20
    record = hotfix.rollback()
    assert record.patch_id == patch.id and record.reason == "requested"
    assert_same(before, snapshot(m))
    assert m.price(1) == 2
    assert not hasattr(m.Cart, "count")
    kinds = [(type(h).__name__, getattr(h, "id", getattr(h, "patch_id", None))) for h in hotfix.history()]
    assert ("Patch", patch.id) in kinds and ("Rollback", patch.id) in kinds
    assert kinds.index(("Patch", patch.id)) < kinds.index(("Rollback", patch.id))


def test_unchanged_content_is_unchanged_whatever_the_mtime(modules):
    m = modules.create(V1)
    path = modules.write(m, V1)  # same content, new mtime
    import os

    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10_000_000_000))
    report = hotfix.dry_run(m.__name__)
    assert report.verdict == "unchanged"
    patch = hotfix.apply(m, probation=0)
    assert patch.status == "unchanged"


def test_same_mtime_same_size_edit_is_detected(modules):
    m = modules.create("def f():\n    return 1\n")
    st = __import__("os").stat(m.__file__)
    modules.write(m, "def f():\n    return 2\n", keep_stat=True)
    st2 = __import__("os").stat(m.__file__)
    assert (st.st_mtime_ns, st.st_size) == (st2.st_mtime_ns, st2.st_size)
    report = hotfix.dry_run(m)
    assert report.verdict == "safe"
    assert [f.qualname for f in report.by_code("body-changed")] == ["f"]
    hotfix.apply(m, probation=0)
    assert m.f() == 2


def test_dry_run_lists_added_changed_removed_and_runs_no_code(modules, tmp_path):
    m = modules.create(V1)
    marker = tmp_path / "ran"
    modules.write(m, V2.replace("registry = {}", f"registry = {{}}\n    open({str(marker)!r}, 'w').close()")
                  .replace("        def describe(self):\n            return \"cart\"\n", ""))
    report = hotfix.dry_run(m)
    assert not marker.exists()
    by = {(f.code, f.qualname) for f in report.findings}
    assert ("body-changed", "price") in by
    assert ("function-added", "Cart.count") in by
    assert ("function-removed", "Cart.describe") in by
    assert report.verdict == "risky"  # the new open(...) statement calls code
    d = report.to_dict()
    assert d["verdict"] == "risky" and d["module"] == m.__name__
    assert "RISKY" in str(report)


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("def f(:\n    pass\n", "syntax-error"),
        (b"x = '\xff\xfe'\n", "undecodable-file"),
    ],
)
def test_rejections_leave_process_exactly_as_it_was(modules, source, code):
    m = modules.create(V1)
    before = snapshot(m)
    path = modules.path(m.__name__)
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source)
    assert hotfix.dry_run(m).verdict == "blocked"
    with pytest.raises(hotfix.PatchRejected) as info:
        hotfix.apply(m, probation=0)
    assert info.value.report.by_code(code)
    assert_same(before, snapshot(m))


def test_missing_file_is_blocked(modules):
    m = modules.create(V1)
    before = snapshot(m)
    modules.path(m.__name__).unlink()
    report = hotfix.dry_run(m)
    assert report.verdict == "blocked" and report.by_code("file-missing")
    with pytest.raises(hotfix.PatchRejected):
        hotfix.apply(m, probation=0)
    assert_same(before, snapshot(m))


def test_builtin_extension_and_main_are_blocked():
    import _json
    import math

    assert hotfix.dry_run("sys").by_code("not-a-source-module")
    assert hotfix.dry_run(math).verdict == "blocked"
    assert hotfix.dry_run(_json).verdict == "blocked"
    assert hotfix.dry_run("__main__").by_code("main-module") or hotfix.dry_run("__main__").verdict == "blocked"


def test_unknown_module_is_rejected():
    with pytest.raises(hotfix.PatchRejected, match="not loaded"):
        hotfix.apply("no_such_module_hf_12345", probation=0)


def test_failing_check_rolls_back_to_exact_previous_objects(modules):
    m = modules.create(V1)
    before = snapshot(m)
    modules.write(m, V2)
    seen = []

    def check():
        seen.append(m.price(1))
        return m.price(1) == 2  # the new code returns 20: fails

    with pytest.raises(hotfix.PatchRolledBack) as info:
        hotfix.apply(m, checks=[check], probation=0)
    assert seen == [20]  # the check saw the new code
    assert "check" in str(info.value)
    assert_same(before, snapshot(m))
    assert hotfix.dry_run(m).verdict == "safe"  # still stale: disk differs from what runs


def test_raising_check_rolls_back(modules):
    m = modules.create(V1)
    before = snapshot(m)
    modules.write(m, V2)

    def check():
        raise AssertionError("smoke test failed")

    with pytest.raises(hotfix.PatchRolledBack, match="smoke test failed") as info:
        hotfix.apply(m, checks=[check], probation=0)
    assert isinstance(info.value.failure, AssertionError)
    assert_same(before, snapshot(m))


def test_exception_in_module_code_during_swap_changes_nothing(modules):
    m = modules.create(V1)
    before = snapshot(m)
    modules.write(m, V2 + "\n    LIMIT = 1 // 0\n")
    with pytest.raises(hotfix.PatchRejected, match="ZeroDivisionError"):
        hotfix.apply(m, probation=0, allow_risky=True)
    assert_same(before, snapshot(m))
    assert m.LIMIT == 10


def test_risky_needs_allow_risky(modules):
    m = modules.create("def f(a):\n    return a\n")
    before = snapshot(m)
    modules.write(m, "def f(a):\n    try:\n        return a + 1\n    except KeyError:\n        return 0\n")
    with pytest.raises(hotfix.PatchRejected, match="risky"):
        hotfix.apply(m, probation=0)
    assert_same(before, snapshot(m))
    hotfix.apply(m, probation=0, allow_risky=True)
    assert m.f(1) == 2


def test_expect_sha256_pins_the_reviewed_content(modules):
    m = modules.create(V1)
    modules.write(m, V2)
    reviewed = hotfix.dry_run(m).source.disk.sha256
    before = snapshot(m)
    with pytest.raises(hotfix.PatchRejected, match="reviewed"):
        hotfix.apply(m, probation=0, expect_sha256="0" * 64)
    assert_same(before, snapshot(m))
    assert hotfix.apply(m, probation=0, expect_sha256=reviewed).status == "applied"


def test_second_concurrent_apply_is_refused(modules):
    m = modules.create(V1)
    other = modules.create("def g():\n    return 1\n")
    modules.write(m, V2)
    modules.write(other, "def g():\n    return 2\n")
    inside = threading.Event()
    release = threading.Event()

    def slow_check():
        inside.set()
        assert release.wait(10)
        return True

    result = {}
    t = threading.Thread(target=lambda: result.setdefault("p", hotfix.apply(m, checks=[slow_check], probation=0)))
    t.start()
    try:
        assert inside.wait(10)
        before = snapshot(other)
        with pytest.raises(hotfix.PatchRejected, match="in progress"):
            hotfix.apply(other, probation=0)
        assert_same(before, snapshot(other))
    finally:
        release.set()
        t.join(10)
    assert result["p"].status == "applied"


def test_defaults_kwdefaults_annotations_and_docstring(modules):
    m = modules.create('def f(a, b=1, *, c=2) -> int:\n    "old"\n    return a + b + c\n')
    f = m.f
    modules.write(m, 'def f(a, b=10, *, c=20) -> str:\n    "new"\n    return a + b + c\n')
    hotfix.apply(m, probation=0)
    assert m.f is f
    assert f(1) == 31
    assert f.__defaults__ == (10,) and f.__kwdefaults__ == {"c": 20}
    assert f.__annotations__ == {"return": str}
    assert f.__doc__ == "new"


def test_module_state_kept_and_changed_constant_rebound_in_dependents(modules):
    m = modules.create("LIMIT = 10\ncounter = [0]\n\ndef bump():\n    counter[0] += 1\n    return counter[0]\n")
    dep = modules.create(f"from {m.__name__} import LIMIT\n\ndef limit():\n    return LIMIT\n")
    m.bump()
    m.bump()
    modules.write(m, "LIMIT = 20\ncounter = [0]\n\ndef bump():\n    counter[0] += 2\n    return counter[0]\n")
    patch = hotfix.apply(m, probation=0)
    assert m.LIMIT == 20
    assert dep.LIMIT == 20 and dep.limit() == 20
    assert m.bump() == 4  # counter kept, new body
    assert any(e.action == "rebind" for e in patch.events)
    hotfix.rollback(patch.id)
    assert dep.LIMIT == 10 and m.LIMIT == 10


def test_methods_property_staticmethod_classmethod_and_super(modules):
    v1 = """
        class Base:
            def greet(self):
                return "base"

        class Child(Base):
            @property
            def size(self):
                return 1

            @staticmethod
            def util():
                return "u1"

            @classmethod
            def make(cls):
                return cls.__name__ + "1"

            def greet(self):
                return "child-" + super().greet()
    """
    m = modules.create(v1)
    obj = m.Child()
    modules.write(m, v1.replace("return 1", "return 2").replace('"u1"', '"u2"')
                  .replace('+ "1"', '+ "2"').replace('"child-"', '"CHILD-"'))
    hotfix.apply(m, probation=0)
    assert obj.size == 2 and obj.util() == "u2" and m.Child.make() == "Child2"
    assert obj.greet() == "CHILD-base"


def test_added_method_with_zero_argument_super_sees_live_class(modules):
    v1 = "class A:\n    def f(self):\n        return 1\n\nclass B(A):\n    pass\n"
    m = modules.create(v1)
    b = m.B()
    modules.write(m, "class A:\n    def f(self):\n        return 1\n\nclass B(A):\n    def f(self):\n        return super().f() + 1\n")
    hotfix.apply(m, probation=0)
    assert b.f() == 2


def test_removed_function_is_deleted_and_restored(modules):
    m = modules.create("def a():\n    return 1\n\ndef b():\n    return 2\n")
    b = m.b
    modules.write(m, "def a():\n    return 1\n")
    hotfix.apply(m, probation=0)
    assert not hasattr(m, "b")
    hotfix.rollback()
    assert m.b is b


def test_line_shift_updates_code_so_tracebacks_are_right(modules):
    m = modules.create("def f():\n    raise ValueError('x')\n")
    modules.write(m, "\n\n\ndef f():\n    raise ValueError('x')\n")
    report = hotfix.dry_run(m)
    assert [f.code for f in report.findings] == ["line-shift"]
    hotfix.apply(m, probation=0)
    assert m.f.__code__.co_firstlineno == 4
    import inspect

    assert inspect.getsource(m.f).startswith("def f")


def test_module_imported_before_install_is_compared_through_live_code(modules, tmp_path):
    hotfix.uninstall()
    try:
        m = modules.create("def f():\n    return 1\n\ndef g():\n    return 5\n")
    finally:
        hotfix.install()
    assert hotfix.dry_run(m).verdict == "unchanged"
    modules.write(m, "def f():\n    return 2\n\ndef g():\n    return 5\n")
    report = hotfix.dry_run(m)
    assert report.by_code("no-baseline") and report.by_code("body-changed")
    g = m.g
    hotfix.apply(m, probation=0)
    assert m.f() == 2 and m.g is g


def test_lru_cache_cleared_and_wrapped_function_patched(modules):
    m = modules.create("import functools\n\n@functools.lru_cache\ndef sq(x):\n    return x * x\n")
    assert m.sq(3) == 9
    modules.write(m, "import functools\n\n@functools.lru_cache\ndef sq(x):\n    return x * x + 1\n")
    patch = hotfix.apply(m, probation=0)
    assert m.sq(3) == 10
    assert any(e.action == "cache-clear" for e in patch.events)


def test_history_is_oldest_first(modules):
    m = modules.create("def f():\n    return 1\n")
    start = len(hotfix.history())
    modules.write(m, "def f():\n    return 2\n")
    p1 = hotfix.apply(m, probation=0)
    modules.write(m, "def f():\n    return 3\n")
    p2 = hotfix.apply(m, probation=0)
    r = hotfix.rollback()
    items = hotfix.history()[start:]
    assert [getattr(i, "id", None) or i.patch_id for i in items] == [p1.id, p2.id, p2.id]
    assert r.patch_id == p2.id and m.f() == 2


def test_rollback_with_nothing_applied_or_unknown_id():
    with pytest.raises(hotfix.PatchRejected):
        hotfix.rollback("hf-0-0-nope")


def test_sys_modules_entry_unchanged(modules):
    m = modules.create(V1)
    modules.write(m, V2)
    hotfix.apply(m, probation=0)
    assert sys.modules[m.__name__] is m


def test_module_inside_a_package_with_relative_imports_and_reexports(modules):
    import importlib
    import uuid

    pkg = f"hfpkg_{uuid.uuid4().hex[:8]}"
    root = modules.dir / pkg
    root.mkdir()
    (root / "__init__.py").write_text("from .rules import LIMIT, price\n")
    (root / "rules.py").write_text("LIMIT = 10\n\ndef price(q):\n    return q * 2\n")
    (root / "shop.py").write_text("from . import rules\nfrom .rules import price\n\ndef total(q):\n    return price(q) + rules.LIMIT\n")
    package = modules.load(pkg)
    shop = importlib.import_module(f"{pkg}.shop")
    modules.names.extend([f"{pkg}.rules", f"{pkg}.shop"])
    rules = sys.modules[f"{pkg}.rules"]
    (root / "rules.py").write_text("LIMIT = 20\n\ndef price(q):\n    return q * 3\n")
    patch = hotfix.apply(f"{pkg}.rules", probation=0)
    assert shop.total(1) == 23 and package.price(1) == 3 and package.LIMIT == 20
    assert package.price is rules.price is shop.price
    hotfix.rollback(patch.id)
    assert shop.total(1) == 12 and package.LIMIT == 10


@pytest.mark.parametrize(
    "header",
    ["import dataclasses\n\n@dataclasses.dataclass\nclass P:\n    x: int = 1\n",
     "import attrs\n\n@attrs.define\nclass P:\n    x: int = 1\n",
     "import enum\n\nclass P(enum.Enum):\n    A = 1\n"],
    ids=["dataclass", "attrs-slotted", "enum"],
)
def test_method_change_on_generated_classes_keeps_instances_and_identity(modules, header):
    body = "\n    def m(self):\n        return {v}\n\n    def s(self):\n        return super().__repr__() is not None\n"
    m = modules.create(header + body.replace("{v}", "1"))
    cls = m.P
    obj = next(iter(m.P)) if hasattr(m.P, "__members__") else m.P()
    modules.write(m, header + body.replace("{v}", "2"))
    report = hotfix.dry_run(m)
    assert report.verdict == "safe", str(report)
    hotfix.apply(m, probation=0)
    assert m.P is cls and obj.m() == 2 and obj.s() is True
