"""The swap: carry out a verified change in place, recording how to undo it.

The problem: a reloaded module normally gets *new* function and class
objects, while every reference the program already holds (``from m import
f``, callbacks in registries, bound methods, decorator wrappers, instances'
classes) keeps the old ones. ``importlib.reload`` also re-runs every
statement, resetting module state and re-running decorators.

What we do instead: work definition by definition (``verification`` lists
the changes in source order). A changed function keeps its identity and
receives the new ``__code__``, defaults, kwdefaults, annotations and
docstring, so every reference sees the fix. Classes keep their identity;
their methods are updated, added or removed in their ``__dict__``. Only
new or changed plain statements run, each in a scratch namespace whose
bindings are then copied in. Every mutation goes through ``UndoLog``,
which remembers the exact previous object, so a rollback restores
identities (``f.__code__ is old_code``) rather than recompiling.

Limits: a function whose closure variables change, or whose decorators
change, cannot keep its identity (``__closure__`` is read-only): it is
re-created and references held elsewhere keep the old object (the report
says ``closure-changed``/``decorators-changed``, both risky). Statements
with side effects outside their own bindings (``registry.append(...)``)
cannot be undone beyond their bindings; they are reported as risky.
Closures created at run time by an old function keep old code until they
are created again.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import functools
import linecache
import types
from collections.abc import Callable
from typing import Any

from verification import (
    AddDefinition,
    AddEnumMembers,
    Baseline,
    ClassDef,
    FunctionDef,
    ModifyFunction,
    Plan,
    RemoveName,
    RetargetClosure,
    RunStatement,
    UpdateStarImport,
)

from ._baseline import get_baseline, set_baseline
from ._records import SwapEvent

_MISSING = object()


class SwapError(Exception):
    """Internal: the swap failed; the undo log has everything to restore."""


class UndoIncomplete(Exception):
    """Internal: some undo entries failed; ``failures`` says which (the rest were restored)."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = tuple(failures)


class UndoLog:
    """Every mutation of the swap, in order, with the value it replaced."""

    def __init__(self) -> None:
        self._entries: list[tuple] = []

    def __len__(self) -> int:
        return len(self._entries)

    def set_attr(self, obj: object, name: str, value: object) -> None:
        old = vars(obj).get(name, _MISSING) if isinstance(obj, type) else getattr(obj, name, _MISSING)
        setattr(obj, name, value)
        self._entries.append(("attr", obj, name, old))

    def del_attr(self, obj: type, name: str) -> None:
        old = vars(obj)[name]
        delattr(obj, name)
        self._entries.append(("attr", obj, name, old))

    def set_item(self, mapping: dict, key: str, value: object) -> None:
        old = mapping.get(key, _MISSING)
        mapping[key] = value
        self._entries.append(("item", mapping, key, old))

    def del_item(self, mapping: dict, key: str) -> None:
        old = mapping.pop(key)
        self._entries.append(("item", mapping, key, old))

    def call(self, do: Callable[[], None], undo: Callable[[], None]) -> None:
        do()
        self._entries.append(("call", undo, None, None))

    def undo(self) -> None:
        """Restore everything, newest first. Each entry is restored even if another fails."""
        errors = []
        for kind, target, name, old in reversed(self._entries):
            try:
                if kind == "call":
                    target()
                elif kind == "attr":
                    if old is _MISSING:
                        if name in vars(target):
                            delattr(target, name)
                    else:
                        setattr(target, name, old)
                elif old is _MISSING:
                    target.pop(name, None)
                else:
                    target[name] = old
            except Exception as exc:  # keep restoring; report all at the end
                errors.append(f"{kind} {name}: {exc!r}")
        self._entries.clear()
        if errors:
            raise UndoIncomplete(errors)


class Swapper:
    """Carries out one module's ``Plan`` through an ``UndoLog``."""

    def __init__(self, plan: Plan, undo: UndoLog) -> None:
        self.plan = plan
        self.module = plan.module
        self.name = plan.module.__name__
        self.g = plan.module.__dict__
        self.path = plan.path
        self.undo = undo
        self.events: list[SwapEvent] = []
        self.future_annotations = bool(plan.compile_flags & __future__.annotations.compiler_flag)
        self.old_namespace = dict(self.g)  # what __hotfix_migrate__ receives
        self.snapshotted: set[int] = set()  # containers whose contents the undo log restores

    def event(self, action: str, qualname: str) -> None:
        self.events.append(SwapEvent(self.name, action, qualname))

    # -- scopes

    def resolve(self, prefix: str) -> object:
        obj: object = self.module
        for part in filter(None, prefix.split(".")):
            obj = vars(obj)[part]
        return obj

    def bind(self, scope: object, name: str, value: object) -> None:
        if isinstance(scope, types.ModuleType):
            self.undo.set_item(self.g, name, value)
        else:
            self.undo.set_attr(scope, name, value)

    def unbind(self, scope: object, name: str) -> None:
        if isinstance(scope, types.ModuleType):
            self.undo.del_item(self.g, name)
        elif isinstance(scope, type) and name in vars(scope):
            self.undo.del_attr(scope, name)

    def local_namespace(self, scope: object) -> dict | None:
        return None if isinstance(scope, types.ModuleType) else dict(vars(scope))

    # -- the run

    def run(self) -> list[SwapEvent]:
        for change in self.plan.changes:
            if isinstance(change, ModifyFunction):
                self.modify(change)
            elif isinstance(change, AddDefinition):
                scope = self.resolve(change.scope)
                value = self.build(change.new, scope)
                if change.bind:
                    self.bind(scope, change.new.name, value)
                self.event("define", change.new.qualname)
            elif isinstance(change, RunStatement):
                self.statement(change)
            elif isinstance(change, RemoveName):
                self.unbind(self.resolve(change.scope), change.name)
                self.event("remove", change.scope + change.name)
            elif isinstance(change, RetargetClosure):
                for f in change.live:
                    self.undo.set_attr(f, "__code__", change.code)
                self.event("code", change.qualname)
            elif isinstance(change, UpdateStarImport):
                self.star_import(change)
            elif isinstance(change, AddEnumMembers):
                self.enum_members(change)
        self.migrate()
        self.refresh_linecache()
        self.rebind_dependents()
        self.adopt_baseline()
        return self.events

    def modify(self, c: ModifyFunction) -> None:
        scope = self.resolve(c.scope)
        q = c.new.qualname
        if c.replace:
            value = self.build(c.new, scope)
            if c.bind:
                self.bind(scope, c.new.name, value)
            self.event("replace", q)
            return
        local = self.local_namespace(scope)
        for f in c.live:
            if c.code_changed:
                if len(c.new.code.co_freevars) != len(f.__closure__ or ()):
                    raise SwapError(f"{q}: closure size changed; cannot keep identity")
                self.undo.set_attr(f, "__code__", c.new.code)
                self.event("code", q)
            if c.defaults_changed:
                defaults, kwdefaults = self.eval_defaults(c.new.node, local)
                self.undo.set_attr(f, "__defaults__", defaults)
                self.undo.set_attr(f, "__kwdefaults__", kwdefaults)
                self.event("defaults", q)
            if c.annotations_changed:
                self.undo.set_attr(f, "__annotations__", self.eval_annotations(c.new.node, local))
                self.event("annotations", q)
            if c.doc_changed:
                self.undo.set_attr(f, "__doc__", _docstring(c.new))
                self.event("doc", q)
        holder = vars(scope).get(c.new.name)
        clear = getattr(holder, "cache_clear", None)
        if callable(clear) and (c.code_changed or c.defaults_changed):
            self.undo.call(clear, clear)  # results cached by the old code now; by the new code on rollback
            self.event("cache-clear", q)

    def statement(self, c: RunStatement) -> None:
        scope = self.resolve(c.scope)
        s = c.statement
        where = c.scope + (f"<line {s.lineno}>")
        if s.is_docstring:
            text = ast.get_docstring(ast.Module(body=[s.node], type_ignores=[]), clean=False)
            if isinstance(scope, types.ModuleType):
                self.bind(scope, "__doc__", text)
            else:
                self.undo.set_attr(scope, "__doc__", text)
            self.event("doc", c.scope.rstrip(".") or self.name)
            return
        node = s.located
        code = compile(ast.Module(body=[node], type_ignores=[]), self.path, "exec",
                       flags=self.compile_flags(), dont_inherit=True)
        annotates = any(isinstance(n, ast.AnnAssign) and n.simple for n in ast.walk(node))
        self.remember_items(node, scope)
        if isinstance(scope, types.ModuleType):
            if annotates and isinstance(self.g.get("__annotations__"), dict):
                self.bind(scope, "__annotations__", dict(self.g["__annotations__"]))  # the old dict stays intact
            # Run in the namespace itself (as the module body does); every binding it made goes into the undo log.
            before = dict(self.g)
            try:
                exec(code, self.g)  # code compiled from the verified file on disk
            finally:
                self.adopt_changes(before)
        else:
            before = dict(vars(scope))
            local = dict(before)
            if annotates and isinstance(local.get("__annotations__"), dict):
                local["__annotations__"] = dict(local["__annotations__"])
            exec(code, self.g, local)  # code compiled from the verified file on disk
            for name, value in local.items():
                if before.get(name, _MISSING) is not value:
                    self.bind(scope, name, value)
        self.event("run", where)

    def adopt_changes(self, before: dict) -> None:
        """Bindings made directly in the module namespace: put the old value back, then re-bind through the log."""
        after = dict(self.g)
        for name in before.keys() | after.keys():
            old, new = before.get(name, _MISSING), after.get(name, _MISSING)
            if old is new:
                continue
            if old is _MISSING:
                del self.g[name]
                self.bind(self.module, name, new)
            else:
                self.g[name] = old
                if new is _MISSING:
                    self.unbind(self.module, name)
                else:
                    self.bind(self.module, name, new)

    def remember_items(self, node: ast.AST, scope: object) -> None:
        """``NAME[const] = ...`` / ``NAME.attr = ...`` on objects that already exist: undone on rollback."""
        ns = self.g if isinstance(scope, types.ModuleType) else {**self.g, **vars(scope)}
        for n in ast.walk(node):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name):
                # ``NAME.update(...)``, ``NAME.append(...)``: a builtin container's contents come back on rollback
                obj = ns.get(n.func.value.id, _MISSING)
                if isinstance(obj, dict | list | set | bytearray) and id(obj) not in self.snapshotted:
                    self.snapshotted.add(id(obj))
                    self.undo.call(_nothing, functools.partial(_restore_contents, obj, obj.copy()))
                continue
            targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign | ast.AnnAssign) else []
            for t in targets:
                if not isinstance(t, ast.Subscript | ast.Attribute) or not isinstance(t.value, ast.Name):
                    continue
                obj = ns.get(t.value.id, _MISSING)
                if obj is _MISSING or isinstance(obj, types.ModuleType):
                    continue
                if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant) and isinstance(obj, dict):
                    key, old = t.slice.value, obj.get(t.slice.value, _MISSING)
                    self.undo.call(_nothing, functools.partial(_restore_item, obj, key, old))
                elif isinstance(t, ast.Attribute) and hasattr(obj, "__dict__") and not isinstance(obj, type):
                    old = vars(obj).get(t.attr, _MISSING)
                    self.undo.call(_nothing, functools.partial(_restore_item, vars(obj), t.attr, old))

    def enum_members(self, c: AddEnumMembers) -> None:
        """New members join the live Enum (existing members keep their identity), in the new source's order.

        A scratch copy of the new class makes the members exactly as a fresh
        import would (values, ``__init__``, ``_generate_next_value_``); each is
        then moved onto the live class. CPython's Enum keeps members in
        ``_member_map_``, ``_member_names_``, ``_value2member_map_`` and (3.12+)
        as class attributes; all four are written through the undo log.
        """
        scope = self.resolve(c.scope)
        cls = vars(scope)[c.new.name]
        scratch: Any = self.build(c.new, scope)
        for name in c.names:
            member = scratch._member_map_[name]
            canonical = member._name_ != name  # an alias of another member
            if canonical:
                member = cls._member_map_[member._name_]
            else:
                member.__class__ = cls
                if "__objclass__" in vars(member):
                    member.__objclass__ = cls
            type.__setattr__(cls, name, member)
            self.undo.call(_nothing, functools.partial(type.__delattr__, cls, name))
            self.undo.set_item(cls._member_map_, name, member)
            if not canonical:
                try:
                    self.undo.set_item(cls._value2member_map_, member._value_, member)
                except TypeError:  # unhashable value: Enum looks it up by scanning members
                    pass
            self.event("define", f"{c.new.qualname}.{name}")
        old_names = vars(cls)["_member_names_"]
        type.__setattr__(cls, "_member_names_", list(scratch._member_names_))
        self.undo.call(_nothing, functools.partial(type.__setattr__, cls, "_member_names_", old_names))

    def star_import(self, c: UpdateStarImport) -> None:
        """A ``from <module> import *`` dependent gains the new public names and loses the removed ones."""
        for n in c.added:
            if n in self.g:
                self.undo.set_item(c.namespace, n, self.g[n])
        for n in c.removed:
            if n in c.namespace and c.namespace[n] is self.old_namespace.get(n, _MISSING):
                self.undo.del_item(c.namespace, n)
        self.event("rebind", f"{c.holder}.*")

    # -- building new objects from verified code

    def compile_flags(self) -> int:
        return self.plan.compile_flags

    def evaluate(self, expr: ast.expr, local: dict | None) -> object:
        code = compile(ast.Expression(body=expr), self.path, "eval", flags=self.compile_flags(), dont_inherit=True)
        return eval(code, self.g, local)  # expression from the verified file on disk

    def eval_defaults(self, node: ast.FunctionDef | ast.AsyncFunctionDef, local: dict | None) -> tuple[tuple | None, dict | None]:
        defaults = tuple(self.evaluate(d, local) for d in node.args.defaults) or None
        kw = {a.arg: self.evaluate(d, local) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is not None}
        return defaults, kw or None

    def eval_annotations(self, node: ast.FunctionDef | ast.AsyncFunctionDef, local: dict | None) -> dict:
        a = node.args
        out = {}
        for arg in a.posonlyargs + a.args + ([a.vararg] if a.vararg else []) + a.kwonlyargs + ([a.kwarg] if a.kwarg else []):
            if arg.annotation is not None:
                out[arg.arg] = self.annotation(arg.annotation, local)
        if node.returns is not None:
            out["return"] = self.annotation(node.returns, local)
        return out

    def annotation(self, expr: ast.expr, local: dict | None) -> object:
        return ast.unparse(expr) if self.future_annotations else self.evaluate(expr, local)

    def build(self, d: FunctionDef | ClassDef, scope: object) -> object:
        local = self.local_namespace(scope)
        decorators: list[Any] = [self.evaluate(x, local) for x in d.node.decorator_list]
        if isinstance(d, ClassDef):
            bases = [self.evaluate(b, local) for b in d.node.bases]
            keywords = {str(k.arg): self.evaluate(k.value, local) for k in d.node.keywords}
            body = types.FunctionType(d.code, self.g, d.name)
            value: object = builtins.__build_class__(body, d.name, *bases, **keywords)
        else:
            closure = None
            if d.code.co_freevars:
                if d.code.co_freevars != ("__class__",) or not isinstance(scope, type):
                    raise SwapError(f"{d.qualname} needs closure variables {d.code.co_freevars}")
                closure = (types.CellType(scope),)  # zero-argument super() sees the live class
            defaults, kwdefaults = self.eval_defaults(d.node, local)
            fn = types.FunctionType(d.code, self.g, d.name, defaults, closure)
            fn.__kwdefaults__ = kwdefaults
            fn.__annotations__ = self.eval_annotations(d.node, local)
            fn.__qualname__ = d.qualname
            fn.__doc__ = _docstring(d)
            value = fn
        for decorator in reversed(decorators):
            value = decorator(value)
        return value

    # -- after the definitions

    def migrate(self) -> None:
        """Call the new source's ``__hotfix_migrate__(old_namespace)``, if it defines one.

        It receives a copy of the namespace as it was before this patch and
        may re-bind module state (through the module, which the undo log
        covers only for names the swap itself bound: document side effects).
        """
        hook = self.g.get("__hotfix_migrate__")
        if hook is None or not callable(hook) or not self.plan.migrate:
            return
        before = dict(self.g)
        try:
            hook(dict(self.old_namespace))
        except BaseException:
            # the hook's own re-binds are not in the undo log yet: put the namespace back as it was before it
            for name in [n for n in self.g if n not in before]:
                del self.g[name]
            self.g.update(before)
            raise
        after = dict(self.g)
        for name in before.keys() | after.keys():
            old, new = before.get(name, _MISSING), after.get(name, _MISSING)
            if old is new:
                continue
            # put the pre-hook value back, then re-apply through the undo log
            if old is _MISSING:
                del self.g[name]
            else:
                self.g[name] = old
            if new is _MISSING:
                self.unbind(self.module, name)
            else:
                self.bind(self.module, name, new)
        self.event("migrate", "__hotfix_migrate__")

    def refresh_linecache(self) -> None:
        """``linecache`` shows the *running* source: tracebacks and ``inspect`` stay right.

        Entries get ``mtime=None`` so ``linecache.checkcache`` never swaps in
        a newer disk file the process is not running. Rollback puts back the
        old running source (the baseline text) or the previous entry.
        """
        entry = (self.plan.disk.size, None, list(self.plan.lines), self.path)  # lines split outside the pause
        previous: Any = linecache.cache.get(self.path, _MISSING)
        base = get_baseline(self.name)
        if base is not None and self.plan.running_lines:
            previous = (base.state.size, None, list(self.plan.running_lines), self.path)

        def undo() -> None:
            if previous is _MISSING:
                linecache.cache.pop(self.path, None)
            else:
                linecache.cache[self.path] = previous

        self.undo.call(functools.partial(linecache.cache.__setitem__, self.path, entry), undo)

    def rebind_dependents(self) -> None:
        """Modules that did ``from <this> import NAME`` get the new value of NAME.

        The candidates were found before the pause (the plan's ``rebinds``);
        here each is only re-checked (still holding the old object) and re-bound.
        """
        for r in self.plan.rebinds:
            new = self.g.get(r.name, _MISSING)
            if new is not r.old and new is not _MISSING and r.namespace.get(r.name, _MISSING) is r.old:
                self.undo.set_item(r.namespace, r.name, new)
                self.event("rebind", f"{r.holder}.{r.name}")

    def adopt_baseline(self) -> None:
        old = get_baseline(self.name)
        new = Baseline(state=self.plan.disk, text=self.plan.text, code=self.plan.code)
        self.undo.call(functools.partial(set_baseline, self.name, new),
                       functools.partial(set_baseline, self.name, old))


def _restore_contents(obj: dict | list | set | bytearray, saved: dict | list | set | bytearray) -> None:
    obj.clear()
    if isinstance(obj, dict):
        obj.update(saved)  # type: ignore[arg-type]
    elif isinstance(obj, set):
        obj.update(saved)
    else:
        obj.extend(saved)  # type: ignore[arg-type]


def _nothing() -> None:
    pass


def _restore_item(mapping: dict, key: object, old: object) -> None:
    if old is _MISSING:
        mapping.pop(key, None)
    else:
        mapping[key] = old


def _docstring(d: FunctionDef) -> str | None:
    if ast.get_docstring(d.node, clean=False) is None:
        return None
    first = d.code.co_consts[0] if d.code.co_consts else None
    return first if isinstance(first, str) else ast.get_docstring(d.node)
