"""Who keeps what the patch replaces: holders of re-created objects, cached values, star-import dependents.

Found through the module's reachable graph (``LiveIndex``) and the
namespaces of loaded modules, never by scanning the heap. A holder the
swap re-binds itself (the definition's own name, an alias that runs again,
a ``from m import x`` dependent) is not reported; any other is named, so an
operator can decide.
"""

from __future__ import annotations

import ast
import functools
import sys
import types

from ._changes import Change, ModifyFunction, RemoveName, RunStatement, UpdateStarImport
from ._differ import Differ
from ._findings import Finding
from ._model import ModuleModel, Statement

SourceLookup = object  # callable name -> text | None (see _plan.SourceLookup)


def held_old_objects(differ: Differ) -> list[Finding]:
    """Re-created definitions whose old object stays reachable somewhere the swap does not re-bind."""
    if not differ.recreated or differ.module is None:
        return []
    rebound = {c.scope + n for c in differ.changes if isinstance(c, RunStatement) for n in c.statement.names}
    rebound |= {c.scope + c.name for c in differ.changes if isinstance(c, RemoveName)}
    recreated_q = {q for q, _ in differ.recreated}
    found: dict[str, set[str]] = {}
    for q, fn in differ.recreated:
        scope, _, name = q.rpartition(".")
        owner = _resolve(differ.module, scope)
        objs = [fn]
        if owner is not None and name in vars(owner):
            objs.append(vars(owner)[name])
        for obj in objs:
            for path in differ.index.holders(obj):
                root = path.split("[", 1)[0].split(".<closure", 1)[0]
                if path == q or root in recreated_q or path in rebound or any(
                        path.startswith(r + ".") or path.startswith(r + "[") for r in recreated_q | rebound):
                    continue
                found.setdefault(q, set()).add(path)
    out = []
    for q, paths in found.items():
        listed = ", ".join(f"`{p}`" for p in sorted(paths)[:8])
        more = f" and {len(paths) - 8} more" if len(paths) > 8 else ""
        out.append(Finding("old-object-held", q, f"{len(paths)} holder(s) keep the old {q}: {listed}{more}",
                           "\n".join(sorted(paths))))
    return out


def cached_values(differ: Differ) -> list[Finding]:
    """Reachable instances holding a ``cached_property`` value computed by code the patch changes."""
    if differ.module is None:
        return []
    out = []
    for c in differ.changes:
        if not (isinstance(c, ModifyFunction) and c.scope and c.code_changed and not c.line_only):
            continue
        cls = _resolve(differ.module, c.scope.rstrip("."))
        if not isinstance(cls, type) or not isinstance(vars(cls).get(c.new.name), functools.cached_property):
            continue
        holders = [o for o in differ.index.instances.get(id(cls), ()) if c.new.name in vars(o)]
        if holders:
            paths = sorted({p for o in holders for p in differ.index.holders(o)})[:8]
            out.append(Finding("cached-values", c.new.qualname,
                               f"{len(holders)} instance(s) keep {c.new.name} computed by the old code: {', '.join(paths)}"))
    return out


def star_imports(module: types.ModuleType, new: ModuleModel, changes: list[Change], sources) -> tuple[list[Change], list[Finding]]:
    """Dependents that did ``from <module> import *`` gain and lose public names with the patch (``__all__`` respected)."""
    if sources is None:
        return [], []
    name = module.__name__
    short = name.rpartition(".")[2]
    holders = []
    for other_name, other in list(sys.modules.items()):
        ns = getattr(other, "__dict__", None)
        if other is module or not isinstance(ns, dict):
            continue
        text = sources(other_name)
        if text and (f"from {name} import *" in text or f"from .{short} import *" in text):
            holders.append((other_name, ns))
    if not holders:
        return [], []
    g = vars(module)
    old_public = _public(g.get("__all__"), g.keys())
    removed = {c.name for c in changes if isinstance(c, RemoveName) and c.scope == ""}
    after = (set(g) - removed) | new.scope.bound_names()
    new_all = _literal_all(new)
    if new_all is False:
        return [], [Finding("statement-with-call", "__all__", "__all__ is computed; star-import dependents are not updated")]
    new_public = _public(new_all, after)
    added, gone = sorted(new_public - old_public), sorted(old_public - new_public)
    if not added and not gone:
        return [], []
    out: list[Change] = []
    findings = []
    for other_name, ns in holders:
        out.append(UpdateStarImport(other_name, ns, tuple(added), tuple(gone)))
        what = "; ".join(x for x in (f"gains {', '.join(added)}" if added else "", f"loses {', '.join(gone)}" if gone else "") if x)
        findings.append(Finding("dependent-rerun", None, f"{other_name} did `from {name} import *`: it {what}"))
    return out, findings


def _public(all_names: object, names) -> set[str]:
    if isinstance(all_names, list | tuple):
        return {n for n in all_names if isinstance(n, str)}
    return {n for n in names if not n.startswith("_")}


def _literal_all(model: ModuleModel) -> object:
    """The new ``__all__`` if the source gives it literally; None if it has none; False if computed."""
    value: object = None
    for e in model.scope.entries:
        if isinstance(e, Statement) and "__all__" in e.names:
            node = e.node
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                try:
                    value = list(ast.literal_eval(node.value))
                    continue
                except ValueError:
                    pass
            return False
    return value


def _resolve(module: types.ModuleType, qualname: str) -> object:
    obj: object = module
    for part in filter(None, qualname.split(".")):
        try:
            obj = vars(obj).get(part)
        except TypeError:
            return None
    return obj
