"""The contract between verification and hotfix: one frozen ``Plan`` per module.

A plan is everything the swap needs, worked out once, outside any pause:
the report, the exact disk version (state, text, compiled code, compiler
flags), the changes in source order, the code that stops running (threads
inside it must leave first), the code to watch during probation, the
dependents' names to re-bind, and whether a migration hook runs. hotfix
carries a plan out; it never re-derives what to change.

A plan whose verdict is ``unchanged`` or ``blocked`` has no changes; its
disk fields describe what was read (all empty when the file could not be
read, which is itself a blocking finding).
"""

from __future__ import annotations
import __future__

import ast
import functools
import operator
import sys
import types
from collections.abc import Callable

import attrs

from ._changes import AddDefinition, Change, ModifyFunction, RetargetClosure, RunStatement
from ._live import functions_named
from ._model import CodeSet, FunctionDef, ModuleModel, iter_code_tree
from ._report import Report
from ._source import FileState

#: Every ``from __future__`` flag: statements and definitions compiled for the swap get the module's own.
FUTURE_FLAGS = functools.reduce(operator.or_, (getattr(__future__, f).compiler_flag for f in __future__.all_feature_names))
_MISSING = object()
_SHARED_IMMUTABLES = (int, float, str, bytes, bool, type(None), tuple, frozenset)

#: name of a module -> the source text it runs (its baseline), or None when unknown.
SourceLookup = Callable[[str], "str | None"]


@attrs.frozen(eq=False)
class Rebind:
    """A dependent module that holds, under ``name``, an object the swap re-binds."""

    holder: str  # the dependent module's name
    namespace: dict = attrs.field(repr=False)
    name: str
    old: object = attrs.field(repr=False)


@attrs.frozen(eq=False)
class Probe:
    """A function whose code changes in place (what an instrumented probation twin is made from)."""

    scope: str
    definition: FunctionDef
    live: tuple[types.FunctionType, ...]

    @property
    def node(self) -> ast.FunctionDef | ast.AsyncFunctionDef:
        return self.definition.located  # copies only when asked (3.11 twins)

    @property
    def code(self) -> types.CodeType:
        return self.definition.code


@attrs.frozen(eq=False)
class Plan:
    """One module's verified change, ready to carry out. Building it changed nothing."""

    module: types.ModuleType
    report: Report
    path: str  # the source file ("" when the module has none)
    disk: FileState  # the version verified: the re-check under the pause compares with it
    text: str = attrs.field(repr=False)
    code: types.CodeType | None = attrs.field(repr=False)  # the compiled disk version
    lines: tuple[str, ...] = attrs.field(repr=False)  # disk text split, for linecache
    running_lines: tuple[str, ...] = attrs.field(repr=False)  # the running text ("()" when unknown)
    compile_flags: int  # ``from __future__`` flags to compile statements and definitions with
    changes: tuple[Change, ...] = attrs.field(repr=False)  # in source order
    replaced: CodeSet = attrs.field(repr=False)  # code that stops running (line-only moves excluded)
    watched: CodeSet = attrs.field(repr=False)  # code whose behaviour changes: probation watches it
    probes: tuple[Probe, ...] = attrs.field(repr=False)
    rebinds: tuple[Rebind, ...] = attrs.field(repr=False)
    migrate: bool  # the disk version defines ``__hotfix_migrate__``

    @property
    def verdict(self) -> str:
        return self.report.verdict

    @property
    def name(self) -> str:
        return self.module.__name__


def empty_plan(module: types.ModuleType, report: Report, path: str = "", disk: FileState | None = None,
               text: str = "") -> Plan:
    """A plan with nothing to carry out (unchanged or blocked)."""
    return Plan(module=module, report=report, path=path, disk=disk or FileState(path, 0, 0, ""), text=text,
                code=None, lines=(), running_lines=(), compile_flags=0, changes=(), replaced=CodeSet(),
                watched=CodeSet(), probes=(), rebinds=(), migrate=False)


def build_plan(module: types.ModuleType, report: Report, disk: FileState, text: str, old: ModuleModel | None,
               new: ModuleModel, changes: tuple[Change, ...], sources: SourceLookup | None) -> Plan:
    replaced, watched, probes = CodeSet(), CodeSet(), []
    for c in changes:
        if isinstance(c, RetargetClosure):
            for f in c.live:
                replaced.update(iter_code_tree(f.__code__))
            watched.update(iter_code_tree(c.code))
        elif isinstance(c, ModifyFunction) and not c.line_only:
            for f in c.live:
                replaced.update(iter_code_tree(f.__code__))
            running = [c.new.code] if (c.code_changed or c.replace) else [f.__code__ for f in c.live]
            for code in running:
                watched.update(iter_code_tree(code))
            if c.code_changed and not c.replace:
                probes.append(Probe(c.scope, c.new, c.live))
        elif isinstance(c, AddDefinition):
            watched.update(iter_code_tree(c.new.code))
    migrate = any(getattr(e, "name", None) == "__hotfix_migrate__" for e in new.scope.entries)
    return Plan(
        module=module, report=report, path=disk.path, disk=disk, text=text, code=new.code,
        lines=tuple(new.lines), running_lines=tuple(old.lines) if old is not None else (),
        compile_flags=new.code.co_flags & FUTURE_FLAGS, changes=changes, replaced=replaced, watched=watched,
        probes=tuple(probes), rebinds=tuple(_rebinds(module, changes, sources)), migrate=migrate,
    )


def _rebinds(module: types.ModuleType, changes: tuple[Change, ...], sources: SourceLookup | None) -> list[Rebind]:
    """Which other modules hold, under the same name, a value the swap may re-bind.

    One walk over ``sys.modules``. Small shared immutables (``10`` is the
    same object everywhere) count only where the other module's source
    imports from this one.
    """
    g = module.__dict__
    names: set[str] = set()
    for c in changes:
        if getattr(c, "scope", None) != "":
            continue
        if isinstance(c, RunStatement):
            names |= c.statement.names
        elif isinstance(c, AddDefinition) or (isinstance(c, ModifyFunction) and c.replace):
            names.add(c.new.name)
    current = {n: g[n] for n in names if n in g}
    if not current:
        return []
    found = []
    for other_name, other in list(sys.modules.items()):
        ns = getattr(other, "__dict__", None)
        if other is module or not isinstance(ns, dict):
            continue
        for n, value in current.items():
            if ns.get(n, _MISSING) is value and _imports_from(module.__name__, other_name, value, sources):
                found.append(Rebind(other_name, ns, n, value))
    return found


def _imports_from(target: str, other_name: str, value: object, sources: SourceLookup | None) -> bool:
    """Identity is enough for objects; small shared immutables need the import in the source."""
    if not isinstance(value, _SHARED_IMMUTABLES):
        return True
    text = sources(other_name) if sources is not None else None
    if text is None:
        return False
    relative = f"from .{target.rpartition('.')[2]} import"
    return f"from {target} import" in text or relative in text


def verify_swap(plan: Plan) -> list[str]:
    """After the swap: every function it touched runs exactly the compiled disk code."""
    problems = []
    for c in plan.changes:
        if isinstance(c, ModifyFunction) and not c.replace:
            stale = [f for f in c.live if f.__code__ is not c.new.code and f.__code__ != c.new.code]
            if stale:
                problems.append(f"{c.new.qualname} does not run the disk code")
        elif isinstance(c, RetargetClosure):
            if any(f.__code__ is not c.code for f in c.live):
                problems.append(f"{c.qualname} does not run the disk code")
        elif isinstance(c, ModifyFunction | AddDefinition) and isinstance(c.new, FunctionDef) and c.bind:
            scope: object = plan.module
            for part in filter(None, c.scope.split(".")):
                scope = vars(scope)[part]
            live = functions_named(vars(scope).get(c.new.name), c.new.qualname)
            if not any(f.__code__ is c.new.code for f in live):
                problems.append(f"{c.new.qualname} is not bound to a function running the disk code")
    return problems
