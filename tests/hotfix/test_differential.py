"""Generative differential test: random edit sequences, hot-patched process vs a fresh import.

A seeded generator builds a module (inside a package that re-exports it with
``from .mod import *``) out of the shapes real modules have: decorators of
every kind, registries and ``@x.register def _``, singledispatch, closures
and factories, aliases, properties/classmethods/staticmethods, nested
classes, Enums, dataclasses, NamedTuples, ``__init_subclass__``, computed
class attributes, constants used by functions, imports added and removed,
``__all__``, statements building on earlier ones, loops generating
functions, ``cached_property``, callable-object decorators, docstrings and
``__doc__`` descriptors, lambdas, ``global``. Each step edits one shape (or
moves lines), then checks the verdict's promise:

- SAFE: every probe of the patched module equals a fresh import's (except
  data a ``state-kept`` finding names);
- RISKY: every differing probe belongs to a shape some finding names;
- BLOCKED: nothing changes (the edit is reverted and the sequence goes on);
- rollback: behaviour and the identities of all top-level objects are as before.

CI runs a fixed set of seeds; ``HOTFIX_DIFF_ROUNDS=N`` runs N times as many
(read when the module is collected).
"""

from __future__ import annotations

import abc
import copy
import os
import random
import sys
import uuid

import pytest

import hotfix
from tests.helpers import FIXTURES

ROUNDS = int(os.environ.get("HOTFIX_DIFF_ROUNDS", "1"))
SEEDS = range(24 * ROUNDS)
STEPS = 14

HEADER = [
    "import dataclasses",
    "import enum",
    "import functools",
    "import operator",
    "from typing import NamedTuple",
    "",
]


class Shape(abc.ABC):
    """One piece of a generated module: parameters, source lines, probes, edits."""

    kinds: tuple[str, ...] = ("number",)

    def __init__(self, i: int, rng: random.Random) -> None:
        self.i = i
        self.p: dict[str, object] = {"a": rng.randint(1, 9), "b": rng.randint(1, 9), "c": rng.randint(1, 9)}
        self.init(rng)

    def init(self, rng: random.Random) -> None:  # noqa: B027 - an optional hook, not abstract
        pass

    def names(self) -> set[str]:
        return set()

    @abc.abstractmethod
    def lines(self) -> list[str]:
        """The shape's source lines in the generated module."""

    @abc.abstractmethod
    def probes(self) -> list[str]:
        """Expressions whose values a fresh import and the patched module must agree on."""

    def edit(self, rng: random.Random) -> str:
        key = rng.choice(sorted(k for k, v in self.p.items() if isinstance(v, int) and not isinstance(v, bool)))
        self.p[key] = int(self.p[key]) + rng.randint(1, 5)  # type: ignore[call-overload]
        return f"{type(self).__name__}.{key}"


class ConstFunc(Shape):
    def names(self):
        return {f"K{self.i}", f"use_k{self.i}"}

    def lines(self):
        p = self.p
        return [f"K{self.i} = {p['a']}", "", f"def use_k{self.i}(x):", f"    return x * {p['b']} + K{self.i}", ""]

    def probes(self):
        return [f"m.use_k{self.i}(3)", f"m.K{self.i}"]


class Decorated(Shape):
    """A stateless decorator (functools.wraps), its free variables sometimes renamed; stacked twice."""

    def init(self, rng):
        self.p["closure"] = rng.random() < 0.5
        self.p["stack"] = rng.random() < 0.5

    def names(self):
        return {f"deco{self.i}", f"g{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        if p["closure"]:
            body = [f"    k = {p['a']}", "    @functools.wraps(fn)", "    def wrapper(*args):", "        return fn(*args) + k"]
        else:
            body = ["    @functools.wraps(fn)", "    def wrapper(*args):", f"        return fn(*args) + {p['a']}"]
        stack = [f"@deco{i}"] if p["stack"] else []
        return [f"def deco{i}(fn):", *body, "    return wrapper", "", *stack, f"@deco{i}", f"def g{i}(x):",
                f"    return x * {p['b']}", ""]

    def probes(self):
        return [f"m.g{self.i}(2)", f"m.g{self.i}.__name__"]

    def edit(self, rng):
        if rng.random() < 0.3:
            self.p["closure"] = not self.p["closure"]
            return "Decorated.closure"
        if rng.random() < 0.2:
            self.p["stack"] = not self.p["stack"]
            return "Decorated.stack"
        return super().edit(rng)


class Registry(Shape):
    """A registry filled by ``@reg("key") def _``: the same name bound twice."""

    def names(self):
        return {f"REG{self.i}", f"reg{self.i}", "_"}

    def lines(self):
        p, i = self.p, self.i
        return [f"REG{i} = {{}}", "", f"def reg{i}(key):", "    def add(fn):", f"        REG{i}[key] = fn", "        return fn",
                "    return add", "", f'@reg{i}("x")', "def _(v):", f"    return v + {p['a']}", "",
                f'@reg{i}("y")', "def _(v):", f"    return v * {p['b']}", ""]

    def probes(self):
        return [f"sorted(m.REG{self.i})", f"m.REG{self.i}['x'](5)", f"m.REG{self.i}['y'](5)"]


class Dispatch(Shape):
    def names(self):
        return {f"show{self.i}", "_"}

    def lines(self):
        p, i = self.p, self.i
        return ["@functools.singledispatch", f"def show{i}(x):", f"    return 'obj{p['a']}'", "",
                f"@show{i}.register", "def _(x: int):", f"    return 'int{p['b']}'", "",
                f"@show{i}.register", "def _(x: str):", f"    return 'str{p['c']}'", ""]

    def probes(self):
        return [f"m.show{self.i}(1)", f"m.show{self.i}('s')", f"m.show{self.i}(1.5)"]


class Factory(Shape):
    """A factory and its product bound at import (``handler = make()``), the inner code or the outer code edited."""

    def init(self, rng):
        self.p["outer"] = rng.random() < 0.5

    def names(self):
        return {f"make{self.i}", f"h{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        pre = [f"    k = k + {p['c']}"] if p["outer"] else []
        return [f"def make{i}(k):", *pre, "    def inner(x):", f"        return x + k * {p['a']}", "    return inner", "",
                f"h{i} = make{i}({p['b']})", ""]

    def probes(self):
        return [f"m.h{self.i}(1)", f"m.make{self.i}(2)(1)"]

    def edit(self, rng):
        if rng.random() < 0.25:
            self.p["outer"] = not self.p["outer"]
            return "Factory.outer"
        return super().edit(rng)


class Members(Shape):
    """Methods, property, classmethod (sometimes decorated), staticmethod, aliases, a nested class, an instance."""

    def init(self, rng):
        self.p["incr"] = rng.random() < 0.5

    def names(self):
        return {f"C{self.i}", f"alias{self.i}", f"obj{self.i}", f"incr{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        incr = [f"    @incr{i}"] if p["incr"] else []
        return [f"def incr{i}(fn):", "    @functools.wraps(fn)", "    def w(cls):", "        return fn(cls) + 100", "    return w", "",
                f"class C{i}:", f"    A = {p['a']}", "",
                "    def m(self):", f"        return self.A + {p['b']}", "",
                "    @property", "    def p(self):", f"        return {p['c']}", "",
                "    @classmethod", *incr, "    def cm(cls):", f"        return cls.A * {p['b']}", "",
                "    @staticmethod", "    def sm():", f"        return {p['c']} * 2", "",
                "    class Inner:", "        def v(self):", f"            return {p['a']} - 1", "",
                f"alias{i} = C{i}.cm", f"obj{i} = C{i}()", ""]

    def probes(self):
        i = self.i
        return [f"m.C{i}().m()", f"m.C{i}().p", f"m.C{i}.cm()", f"m.C{i}.sm()", f"m.alias{i}()", f"m.obj{i}.m()",
                f"m.C{i}.Inner().v()", f"m.C{i}.A"]

    def edit(self, rng):
        if rng.random() < 0.25:
            self.p["incr"] = not self.p["incr"]
            return "Members.incr"
        return super().edit(rng)


class EnumShape(Shape):
    def init(self, rng):
        self.p["blue"] = False

    def names(self):
        return {f"E{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        blue = ["    BLUE = 3"] if p["blue"] else []
        return [f"class E{i}(enum.Enum):", "    RED = 1", "    GREEN = 2", *blue, "",
                "    def label(self):", f"        return self.name.lower() + '{p['a']}'", ""]

    def probes(self):
        i = self.i
        return [f"[x.name for x in m.E{i}]", f"m.E{i}.RED.label()", f"m.E{i}(2) is m.E{i}.GREEN", f"len(m.E{i})",
                f"[x.label() for x in m.E{i}]"]

    def edit(self, rng):
        if not self.p["blue"] and rng.random() < 0.4:
            self.p["blue"] = True
            return "EnumShape.blue"
        self.p["a"] = int(self.p["a"]) + 1  # type: ignore[call-overload]
        return "EnumShape.label"


class Records(Shape):
    """A dataclass and a NamedTuple: methods edited (safe) or a field added (blocked)."""

    def init(self, rng):
        self.p["z"] = False

    def names(self):
        return {f"D{self.i}", f"P{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        z = ["    z: int = 0"] if p["z"] else []
        return ["@dataclasses.dataclass", f"class D{i}:", "    x: int = 1", "", "    def total(self):",
                f"        return self.x + {p['a']}", "", f"class P{i}(NamedTuple):", "    x: int", "    y: int", *z, "",
                "    def s(self):", f"        return self.x + self.y + {p['b']}", ""]

    def probes(self):
        i = self.i
        return [f"m.D{i}().total()", f"m.P{i}(1, 2).s()", f"m.P{i}._fields"]

    def edit(self, rng):
        if rng.random() < 0.2:
            self.p["z"] = not self.p["z"]
            return "Records.z"
        return super().edit(rng)


class Hooks(Shape):
    """__init_subclass__ and a class attribute computed from a function at class creation."""

    def names(self):
        return {f"Base{self.i}", f"Sub{self.i}", f"compute{self.i}", f"CA{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        return [f"class Base{i}:", "    def __init_subclass__(cls, **kw):", "        super().__init_subclass__(**kw)",
                f"        cls.tag = {p['a']}", "", f"class Sub{i}(Base{i}):", "    pass", "",
                f"def compute{i}():", f"    return {p['b']}", "", f"class CA{i}:", f"    V = compute{i}() * 2", ""]

    def probes(self):
        return [f"m.Sub{self.i}.tag", f"m.CA{self.i}.V", f"m.compute{self.i}()"]


class Imports(Shape):
    def init(self, rng):
        self.p["json"] = rng.random() < 0.5

    def names(self):
        return {"json", f"dumps{self.i}"}

    def lines(self):
        if not self.p["json"]:
            return [f"def dumps{self.i}():", "    return None", ""]
        return ["import json", "", f"def dumps{self.i}():", f"    return json.dumps([{self.p['a']}])", ""]

    def probes(self):
        return [f"m.dumps{self.i}()"]

    def edit(self, rng):
        if rng.random() < 0.5:
            self.p["json"] = not self.p["json"]
            return "Imports.toggle"
        return super().edit(rng)


class Building(Shape):
    """Statements that build on earlier ones, a loop generating functions from a class attribute."""

    def names(self):
        return {f"T{self.i}", f"Gen{self.i}", f"gen{self.i}_1", f"gen{self.i}_2"}

    def lines(self):
        p, i = self.p, self.i
        return [f"T{i} = {{'a': {p['a']}}}", f"T{i}['b'] = T{i}['a'] * 2", f"T{i}.update(c={p['c']})", "",
                f"class Gen{i}:", f"    K = {p['b']}", "",
                "for _n in (1, 2):", f"    globals()[f'gen{i}_{{_n}}'] = functools.partial(operator.mul, _n * Gen{i}.K)", ""]

    def probes(self):
        i = self.i
        return [f"sorted(m.T{i}.items())", f"m.gen{i}_1(1)", f"m.gen{i}_2(1)"]


class Cached(Shape):
    """cached_property, a callable-object decorator, lru_cache."""

    def names(self):
        return {f"CP{self.i}", f"curry{self.i}", f"cf{self.i}", f"lru{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        return [f"class CP{i}:", "    @functools.cached_property", "    def v(self):", f"        return {p['a']}", "",
                f"class curry{i}:", "    def __init__(self, fn):", "        self.fn = fn", "",
                "    def __call__(self, *args):", f"        return self.fn(*args) + {p['c']}", "",
                f"@curry{i}", f"def cf{i}(x):", f"    return x * {p['b']}", "",
                "@functools.lru_cache", f"def lru{i}(x):", f"    return x + {p['b']}", ""]

    def probes(self):
        i = self.i
        return [f"m.CP{i}().v", f"m.cf{i}(2)", f"m.lru{i}(1)"]


class Docs(Shape):
    def names(self):
        return {f"doc{self.i}", f"DD{self.i}", f"DocDesc{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        return [f"def doc{i}():", f"    '''doc {p['a']}'''", "    return 1", "",
                f"class DocDesc{i}:", "    def __get__(self, obj, owner):", f"        return 'computed {p['c']}'", "",
                f"class DD{i}:", f"    '''text {p['b']}'''", f"    __doc__ = DocDesc{i}()", ""]

    def probes(self):
        i = self.i
        return [f"m.doc{i}.__doc__", f"m.DD{i}().__doc__"]


class Misc(Shape):
    """A lambda, a ``global`` statement, a module constant used by a method."""

    def names(self):
        return {f"lam{self.i}", f"G{self.i}", f"setg{self.i}"}

    def lines(self):
        p, i = self.p, self.i
        return [f"lam{i} = lambda x: x + {p['a']}", "", f"G{i} = 0", "", f"def setg{i}(v):", f"    global G{i}",
                f"    G{i} = v * {p['b']}", f"    return G{i}", ""]

    def probes(self):
        return [f"m.lam{self.i}(1)", f"m.setg{self.i}(2)"]


SHAPES = [ConstFunc, Decorated, Registry, Dispatch, Factory, Members, EnumShape, Records, Hooks, Imports, Building,
          Cached, Docs, Misc]


class Generated:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        kinds = rng.sample(SHAPES, k=rng.randint(4, 8))
        self.shapes = [kind(i, rng) for i, kind in enumerate(kinds)]
        self.shift = 0
        self.all = rng.random() < 0.3

    def render(self) -> str:
        lines = ["# generated", *(["# moved"] * self.shift), *HEADER]
        for s in self.shapes:
            lines += s.lines()
        if self.all:
            public = sorted(n for s in self.shapes for n in s.names() if not n.startswith("_") and n != "json")
            lines.append(f"__all__ = {public!r}")
        return "\n".join(lines) + "\n"

    def edit(self) -> str:
        r = self.rng.random()
        if r < 0.1:
            self.shift = (self.shift + self.rng.randint(1, 3)) % 5
            return "shift"
        if r < 0.15:
            self.all = not self.all
            return "__all__"
        return self.rng.choice(self.shapes).edit(self.rng)

    def probes(self) -> list[tuple[Shape | None, str]]:
        out: list[tuple[Shape | None, str]] = [(s, p) for s in self.shapes for p in s.probes()]
        out.append((None, "sorted(k for k in vars(pkg) if not k.startswith('_') and k != 'mod')"))
        return out


def observe(package, module, probes) -> dict[str, str]:
    out = {}
    for _, expr in probes:
        try:
            out[expr] = repr(eval(expr, {"m": module, "pkg": package}))  # test probes
        except Exception as exc:  # an exception is an observable outcome too
            out[expr] = f"raised {type(exc).__name__}"
    return out


class Packages:
    """Packages under tmp_path: ``<pkg>/__init__.py`` re-exports ``<pkg>/mod.py`` with a star import."""

    def __init__(self, root) -> None:
        self.root = root
        self.names: list[str] = []
        sys.path.insert(0, str(root))

    def make(self, text: str):
        name = f"hfdiff_{uuid.uuid4().hex[:10]}"
        d = self.root / name
        d.mkdir()
        (d / "__init__.py").write_text("from .mod import *\n")
        (d / "mod.py").write_text(text)
        import importlib

        importlib.invalidate_caches()
        package = importlib.import_module(name)
        self.names += [name, name + ".mod"]
        return package, sys.modules[name + ".mod"]

    def close(self) -> None:
        sys.path.remove(str(self.root))
        for n in self.names:
            sys.modules.pop(n, None)


def explained(report, shape: Shape | None, codes: set[str] | None = None) -> bool:
    """Some finding names the shape whose probe differs (for the package listing: any star-import finding)."""
    for f in report.findings:
        if codes is not None and f.code not in codes:
            continue
        if shape is None:
            if f.severity == "risky":
                return True
            continue
        text = f"{f.qualname or ''} {f.message} {f.detail or ''}"
        if any(name in text for name in shape.names() if name != "_"):
            return True
    return False


@pytest.mark.parametrize("seed", SEEDS)
def test_random_edits_keep_the_verdicts_promise(tmp_path, seed):
    rng = random.Random(seed)
    gen = Generated(rng)
    packages = Packages(tmp_path)
    try:
        text = gen.render()
        package, m = packages.make(text)
        path = m.__file__
        accepted: set[str] = set()  # probes a RISKY verdict explained: the difference stays (the operator took it)
        for step in range(STEPS):
            saved = copy.deepcopy(gen.shapes), gen.shift, gen.all
            what = gen.edit()
            new_text = gen.render()
            with open(path, "w") as fh:
                fh.write(new_text)
            report = hotfix.dry_run(m)
            probes = gen.probes()
            before = observe(package, m, probes)
            identities = {k: id(v) for k, v in vars(m).items()}
            where = f"seed {seed} step {step} ({what})\n{report}"
            if report.verdict == "blocked":
                with pytest.raises(hotfix.PatchRejected):
                    hotfix.apply(m, probation=0, allow_risky=True)
                assert observe(package, m, probes) == before, where
                gen.shapes, gen.shift, gen.all = saved
                with open(path, "w") as fh:
                    fh.write(text)
                continue
            applied = hotfix.apply(m, probation=0, allow_risky=True)
            fresh_pkg, fresh = packages.make(new_text)
            now, expected = observe(package, m, probes), observe(fresh_pkg, fresh, probes)
            for shape, expr in probes:
                if now[expr] == expected[expr]:
                    accepted.discard(expr)
                    continue
                if expr in accepted:
                    continue
                if report.verdict == "safe":
                    assert explained(report, shape, {"state-kept"}), f"{where}\nSAFE but {expr}: {now[expr]} != fresh {expected[expr]}"
                else:
                    assert explained(report, shape), f"{where}\nunexplained: {expr}: {now[expr]} != fresh {expected[expr]}"
                accepted.add(expr)
            if applied.status == "applied" and rng.random() < 0.35:
                hotfix.rollback(applied.id)
                assert observe(package, m, probes) == before, f"{where}\nafter rollback"
                assert {k: id(v) for k, v in vars(m).items()} == identities, f"{where}\nidentities after rollback"
                hotfix.apply(m, probation=0, allow_risky=True)
            text = new_text
    finally:
        packages.close()


# --------------------------------------------------------------------------- divergences found, kept as fixtures

DIVERGENCES = FIXTURES / "divergences"


@pytest.mark.parametrize("name", sorted(p.name.removesuffix(".before.py") for p in DIVERGENCES.glob("*.before.py")))
def test_divergence_fixture_matches_a_fresh_import_and_rolls_back(modules, name):
    """Each pair once diverged from a fresh import; ``__probe__()`` is what a user observes."""
    before = (DIVERGENCES / f"{name}.before.py").read_text()
    after = (DIVERGENCES / f"{name}.after.py").read_text()
    m = modules.create(before)
    seen_before = m.__probe__()
    identities = {k: id(v) for k, v in vars(m).items()}
    modules.write(m, after)
    report = hotfix.dry_run(m)
    assert report.verdict != "blocked", report
    applied = hotfix.apply(m, probation=0, allow_risky=True)
    assert m.__probe__() == modules.create(after, prefix="hffresh").__probe__(), report
    hotfix.rollback(applied.id)
    assert m.__probe__() == seen_before
    assert {k: id(v) for k, v in vars(m).items()} == identities
