"""The differ: walks the disk version's scopes against the running ones and the live objects.

Two versions are compared definition by definition (see ``_model``): a
function by its code object (cheap equality with line information stripped
first; ``bytecode`` only to describe what differs), a class by its header
and then its body as a scope of its own, a plain statement by its AST dump
(which ignores line numbers). It yields findings (with reason codes) and the
ordered list of changes (``_changes``). Nothing here executes module code.
"""

from __future__ import annotations

import ast
import difflib
import dis
import functools
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterator

import attrs

from ._changes import (
    AddDefinition,
    AddEnumMembers,
    Change,
    ModifyFunction,
    RemoveName,
    RetargetClosure,
    RunStatement,
)
from ._chunked import give_way, paced
from ._findings import Finding
from ._live import LiveIndex, functions_named, unwrap_functions
from ._model import (
    ClassDef,
    FunctionDef,
    ModuleModel,
    Scope,
    Statement,
    iter_code_tree,
    same_semantics,
)

_DATACLASS_HINTS = ("dataclass", "attr.s", "attrs", "define", "frozen", "mutable")
_ENUM_HINTS = ("Enum", "Flag")
_RECORD_BASES = ("NamedTuple", "TypedDict")  # classes whose annotations are their fields
_LAYOUT_CODES = ("slots-changed", "fields-changed")
_DECLARATIVE = frozenset({"__all__", "__version__", "__author__"})  # data, but nobody mutates it: never "live state"
_SHARED_SMALL = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)


class _Dirty:
    """What the patch changes in one scope so far, in source order (later entries that use it re-run)."""

    def __init__(self, outer: _Dirty | None = None) -> None:
        self.rebound: set[str] = set()  # the name will hold a different object
        self.behaviour: set[str] = set()  # same object, new behaviour (code swapped in place, class members changed)
        self.factory: set[str] = set()  # a function whose own code (not only its inner functions) changed
        self.members: set[str] = set()  # a class some of whose members are re-created
        self.outer = outer

    def members_of(self, names: set[str]) -> set[str]:
        out = names & self.members
        return out | self.outer.members_of(names - out) if self.outer else out

    def rebound_of(self, names: set[str]) -> set[str]:
        out = names & self.rebound
        return out | self.outer.rebound_of(names - out) if self.outer else out

    def behaviour_of(self, names: set[str]) -> set[str]:
        out = names & (self.behaviour | self.rebound)
        return out | self.outer.behaviour_of(names - out) if self.outer else out

    def factory_of(self, names: set[str]) -> set[str]:
        out = names & (self.factory | self.rebound)
        return out | self.outer.factory_of(names - out) if self.outer else out


class Differ:
    """Walks the new source's scopes against the old ones (and the live objects).

    With ``module=None`` (offline: two files, no process) the old side is
    taken to be live exactly as its source says.

    Definitions are matched to live objects by the code object each live
    function carries (never by the name they leave bound: ``@x.register def
    _`` repeats a name). Unchanged entries that use, while the module body
    runs, something the patch re-creates are run again in source order, as
    a fresh import would; those whose result is module data computed by
    changed code keep their value and are named (``state-kept``).
    """

    def __init__(self, module: types.ModuleType | None, old: ModuleModel | None, new: ModuleModel,
                 sources: Callable[[str], str | None] | None = None) -> None:
        self.module = module
        self.sources = sources
        self.offline = module is None
        self.old_model = old
        self.new_model = new
        self.findings: list[Finding] = []
        self.changes: list[Change] = []
        self.scope_entries: dict[str, tuple] = {}
        self.future = new.future_annotations
        self._index: LiveIndex | None = None
        self.old_scopes: dict[str, Scope] = {}
        self.skip: set[str] = set()  # statement dumps handled otherwise (added enum members)
        self.recreated: list[tuple[str, object]] = []  # (qualname, old live object) a new object replaces

    def add(self, code: str, qualname: str | None, message: str, detail: str | None = None) -> None:
        self.findings.append(Finding(code, qualname, message, detail))

    @property
    def old_side(self) -> ModuleModel:
        """The running version's model (only asked for where a definition has an old side, so there is one)."""
        assert self.old_model is not None
        return self.old_model

    @property
    def index(self) -> LiveIndex:
        if self._index is None:
            assert self.module is not None
            self._index = LiveIndex(self.module)
        return self._index

    # -- scopes

    def scope(self, prefix: str, old: Scope | None, new: Scope, live: object, outer: _Dirty | None = None) -> None:
        self.scope_entries[prefix] = new.entries
        if old is not None:
            self.old_scopes[prefix] = old
        namespace = _OfflineNamespace() if self.offline else live.__dict__
        old_funcs = old.functions() if old else {}
        old_classes = old.classes() if old else {}
        old_statements = Counter(s.dump for s in old.statements()) if old else Counter()
        dirty = _Dirty(outer)
        first = len(self.changes)
        for entry in paced(new.entries, 8):
            start = len(self.changes)
            if isinstance(entry, FunctionDef):
                self.function(prefix, entry, old_funcs.get(entry.key), namespace, old is not None, dirty)
            elif isinstance(entry, ClassDef):
                self.klass(prefix, entry, old_classes.get(entry.key), namespace, old is not None, dirty)
                inner = [c for c in self.changes[start:] if getattr(c, "scope", "").startswith(entry.qualname + ".")]
                if inner:
                    dirty.behaviour.add(entry.name)
                if any(isinstance(c, RunStatement | AddDefinition | RemoveName) or (isinstance(c, ModifyFunction) and c.replace)
                       for c in inner):
                    dirty.members.add(entry.name)
            elif old is not None:
                if old_statements[entry.dump] > 0:
                    old_statements[entry.dump] -= 1
                    self.dependent_statement(prefix, entry, namespace, dirty)
                elif entry.dump in self.skip:
                    pass
                else:
                    self.statement(prefix, entry, namespace, dirty)
            elif not self.offline:
                self.unverified_statement(prefix, entry, namespace)
            for c in self.changes[start:]:
                _note(dirty, c, prefix)
        give_way()
        self.removals(prefix, old, new, namespace, old_statements)
        give_way()
        self.owned_bindings(prefix, new, first)

    def owned_bindings(self, prefix: str, new: Scope, first: int) -> None:
        """A re-created definition whose name a later definition binds does not take the name.

        The later definition (``@x.register def _`` repeated) owns the name, as
        in a fresh import; a later *statement* (``f = wrap(f)``) reads it, so
        the re-created object is bound first and the statement runs again.
        """
        position = {id(e): i for i, e in enumerate(new.entries)}
        later_defs: dict[str, int] = {}
        for i, e in enumerate(new.entries):
            if isinstance(e, FunctionDef | ClassDef):
                later_defs[e.name] = i
        for k in range(first, len(self.changes)):
            c = self.changes[k]
            if isinstance(c, AddDefinition | ModifyFunction) and c.scope == prefix and (
                    isinstance(c, AddDefinition) or c.replace):
                if later_defs.get(c.new.name, -1) > position.get(id(c.new), -1):
                    self.changes[k] = attrs.evolve(c, bind=False)

    def removals(self, prefix: str, old: Scope | None, new: Scope, namespace: dict, leftover: Counter) -> None:
        still_bound = new.bound_names()
        removed: dict[str, str] = {}
        if old is not None:
            new_keys = {e.key for e in new.entries if not isinstance(e, Statement)}
            for e in old.entries:
                if isinstance(e, FunctionDef | ClassDef) and e.key not in new_keys and e.name not in still_bound:
                    removed[e.name] = "function-removed" if isinstance(e, FunctionDef) else "class-removed"
            for s in old.statements():
                if leftover[s.dump] > 0:
                    leftover[s.dump] -= 1
                    gone = sorted(n for n in s.names if n not in still_bound)
                    for n in gone:
                        removed.setdefault(n, "statement-removed")
                    if not s.names:
                        self.add("statement-removed", None, f"removed statement at line {s.lineno} bound nothing; its effects stay")
        elif self.module is not None:
            owner = self.module.__name__
            for n, value in list(namespace.items()):
                if n in still_bound or n.startswith("__"):
                    continue
                if isinstance(value, type) and value.__module__ == owner and value.__qualname__ == prefix + n:
                    removed[n] = "class-removed"
                elif any(True for _ in functions_named(value, prefix + n)) and getattr(value, "__module__", None) == owner:
                    removed[n] = "function-removed"
        for n, code in removed.items():
            if n in namespace:
                referrers = self.referrers(prefix, n) if code != "statement-removed" or prefix == "" else []
                if referrers:
                    self.add("removed-but-referenced", prefix + n,
                             f"{prefix + n} is removed but still referred to by {', '.join(referrers)};"
                             " those calls will fail (NameError/AttributeError) where a fresh import fails at once")
                else:
                    self.add(code, prefix + n, f"{prefix + n} is no longer defined; it is removed from its namespace")
                self.changes.append(RemoveName(prefix, n))

    def referrers(self, prefix: str, name: str) -> list[str]:
        """Code of the new version that still loads ``name`` from the scope that loses it, and dependents holding it."""
        found: list[str] = []
        if prefix == "":
            for code in iter_code_tree(self.new_model.code):
                if name in code.co_names and _loads_global(code, name):
                    found.append(code.co_qualname if code.co_qualname != "<module>" else "module body")
        if not self.offline and prefix == "":
            value = vars(self.module).get(name)
            for other_name, other in list(sys.modules.items()):
                ns = getattr(other, "__dict__", None)
                if other is self.module or not isinstance(ns, dict):
                    continue
                if name in ns and ns[name] is value and not isinstance(value, _SHARED_SMALL):
                    found.append(f"{other_name}.{name}")
        return sorted(set(found))

    # -- functions

    def function(self, prefix: str, new: FunctionDef, old: FunctionDef | None, namespace: dict,
                 has_baseline: bool, dirty: _Dirty) -> None:
        q = new.qualname
        if old is not None and old.code == new.code and (
            old.node is new.node or self.old_side.segment(old) == self.new_model.segment(new)):
            self.dependent_function(prefix, new, old, namespace, dirty)
            return  # same text, same code, same lines: nothing to look up (the common case)
        if has_baseline and old is None:
            self.add("function-added", q, f"{q} is new")
            self.hooks(prefix, new, None)
            self.changes.append(AddDefinition(prefix, new))
            return
        live = [] if self.offline else self.live_functions(namespace, new, old)
        if not live and not self.offline:
            if old is not None and self.old_side.segment(old) == self.new_model.segment(new):
                return  # only moved, and nothing reachable runs it: nothing observable changes
            if any(isinstance(e, Statement) and new.name in e.names for e in self.scope_entries.get(prefix, ())):
                return  # a plain statement re-binds the name; the def's function is not what runs
            if has_baseline or new.name not in namespace:
                if has_baseline and new.name in namespace and old is not None:
                    self.add("no-live-object", q, f"{q}: the function made at import is not reachable from the module;"
                             " whatever holds it keeps the old code")
                    return
                code = "no-live-object" if has_baseline else "function-added"
                self.add(code, q, f"{q} has no live function to update; a new one is defined")
                self.changes.append(AddDefinition(prefix, new))
            return
        old_code = old.code if old is not None else live[0].__code__
        if old is not None and self.old_side.segment(old) == self.new_model.segment(new):
            # Same text: same code, defaults, decorators. At most the lines moved.
            if any(f.__code__ != new.code for f in live) or (self.offline and old.code != new.code):
                self.add("line-shift", q, f"{q} moved from line {old_code.co_firstlineno} to {new.code.co_firstlineno}")
                self.changes.append(ModifyFunction(prefix, new, old, tuple(live), True, False, False, False, False,
                                                   line_only=True))
            self.dependent_function(prefix, new, old, namespace, dirty)
            return
        code_changed = any(f.__code__ != new.code for f in live) or old_code != new.code
        semantic = not same_semantics(old_code, new.code)
        replace = False
        if old_code.co_freevars != new.code.co_freevars:
            replace = True
            self.add("closure-changed", q, f"{q} closure variables {old_code.co_freevars} -> {new.code.co_freevars}; a new function object replaces it")
        if _signature(old_code) != _signature(new.code):
            callers = self.outside_callers(prefix, new.name, live)
            if callers:
                self.add("signature-changed", q, f"{q} parameters changed: {_fmt_sig(old_code)} -> {_fmt_sig(new.code)};"
                         f" callers outside the module may pass the old ones: {', '.join(callers)}")
            else:
                self.add("signature-changed-local", q, f"{q} parameters changed: {_fmt_sig(old_code)} -> {_fmt_sig(new.code)};"
                         " no other loaded module refers to it, so every caller is the new code")
        defaults_changed = annotations_changed = doc_changed = False
        if old is not None:
            if _dumps(old.node.decorator_list) != _dumps(new.node.decorator_list):
                replace = True
                self.add("decorators-changed", q, f"{q} decorators changed; it is re-created with the new decorators")
            if _handlers(old.node) != _handlers(new.node):
                self.add("exception-handling-changed", q, f"{q} catches {_handlers(old.node) or 'nothing'} -> {_handlers(new.node) or 'nothing'}")
            defaults_changed = _defaults_dump(old.node) != _defaults_dump(new.node)
            annotations_changed = _annotations_dump(old.node) != _annotations_dump(new.node)
            doc_changed = ast.get_docstring(old.node, clean=False) != ast.get_docstring(new.node, clean=False)
        else:
            defaults_changed = _literal_defaults_differ(live[0], new.node)
            doc_changed = (live[0].__doc__ or None) != (ast.get_docstring(new.node) or None)
        if not replace:
            reads = _definition_reads(new.node, self.future)
            if dirty.factory_of(_decorator_reads(new.node)) or dirty.rebound_of(_names_loaded(new.node.decorator_list)):
                replace = True
                self.add("dependent-rerun", q, f"{q} is re-created: its decorator changed")
            elif dirty.rebound_of(reads):
                defaults_changed = True
        if defaults_changed:
            self.add("defaults-changed", q, f"{q} default values changed")
        if annotations_changed:
            self.add("annotations-changed", q, f"{q} annotations changed")
        if semantic:
            body_changed = old is None or _body_dump(old.node) != _body_dump(new.node)
            if doc_changed:
                self.add("docstring-changed", q, f"{q} docstring changed")
            if body_changed:
                self.add("body-changed", q, f"{q} body changed; the function keeps its identity",
                         self.describe(old, new, old_code))
                self.hooks(prefix, new, old)
        elif code_changed:
            self.add("line-shift", q, f"{q} moved from line {old_code.co_firstlineno} to {new.code.co_firstlineno}")
        if replace and not self.offline:
            self.recreated.extend((q, f) for f in live)
        if code_changed or defaults_changed or annotations_changed or doc_changed or replace:
            self.changes.append(ModifyFunction(prefix, new, old, tuple(live), code_changed, defaults_changed,
                                               annotations_changed, doc_changed, replace,
                                               line_only=code_changed and not semantic))

    def dependent_function(self, prefix: str, new: FunctionDef, old: FunctionDef, namespace: dict, dirty: _Dirty) -> None:
        """An unchanged definition whose decorators or defaults use something the patch re-creates."""
        if self.offline or not (dirty.rebound or dirty.factory or (dirty.outer and (dirty.outer.rebound or dirty.outer.factory))):
            return
        q = new.qualname
        via_decorator = dirty.factory_of(_decorator_reads(new.node)) | dirty.rebound_of(_names_loaded(new.node.decorator_list))
        via_defaults = dirty.rebound_of(_definition_reads(new.node, self.future) - _names_loaded(new.node.decorator_list))
        if not via_decorator and not via_defaults:
            return
        live = self.live_functions(namespace, new, old)
        if not live:
            return
        if via_decorator:
            self.add("dependent-rerun", q, f"{q} is re-created: its decorator {', '.join(sorted(via_decorator))} changed")
            self.recreated.extend((q, f) for f in live)
            self.changes.append(ModifyFunction(prefix, new, old, tuple(live), False, False, False, False, True))
        else:
            self.add("dependent-rerun", q, f"{q} default values use {', '.join(sorted(via_defaults))}, which the patch re-creates; they are evaluated again")
            self.changes.append(ModifyFunction(prefix, new, old, tuple(live), False, True, False, False, False))

    def outside_callers(self, prefix: str, name: str, live: list[types.FunctionType]) -> list[str]:
        """Loaded modules that may call ``name`` with the old parameters (offline: assume some do).

        A module holding the function itself (``from m import f``), or one
        holding this module or the class whose running source mentions the
        name. Without the other module's source, holding is enough to count.
        """
        if self.offline or self.module is None:
            return ["(offline: unknown)"]
        owner = vars(self.module).get(prefix.split(".", 1)[0]) if prefix else self.module
        held = {id(f) for f in live} | {id(vars(self.module).get(name))} if not prefix else {id(owner)}
        found = []
        for other_name, other in list(sys.modules.items()):
            ns = getattr(other, "__dict__", None)
            if other is self.module or not isinstance(ns, dict):
                continue
            values = {id(v) for v in list(ns.values())}
            holds_it = bool(values & held)
            holds_module = id(self.module) in values or (prefix and id(owner) in values)
            if not holds_it and not holds_module:
                continue
            text = self.sources(other_name) if self.sources is not None and not holds_it else None
            if holds_it or text is None or name in text:  # holding the function itself: imported to be used
                found.append(other_name)
        return sorted(found)

    def hooks(self, prefix: str, new: FunctionDef, old: FunctionDef | None) -> None:
        """Functions Python calls only while creating classes: changing them does not touch existing classes."""
        q = new.qualname
        name = new.name
        cls = prefix.rstrip(".")
        if not cls:
            return
        if old is None and any(_src([d]).endswith("abstractmethod") for d in new.node.decorator_list):
            self.add("abstract-method-added", q, f"{q} is a new abstract method; existing subclasses and instances are not re-checked")
        elif old is None:
            return
        elif name == "__init_subclass__":
            self.add("init-subclass-changed", q, f"{q} changed; subclasses created before keep what the old hook did")
        elif name == "__set_name__":
            self.add("set-name-changed", q, f"{q} changed; attributes of existing classes keep what the old hook set")
        elif name in ("__new__", "__init__", "__prepare__", "__call__") and self.is_metaclass(cls):
            self.add("metaclass-hook-changed", q, f"{q} changed; classes created with this metaclass keep what the old hook did")

    def is_metaclass(self, qualname: str) -> bool:
        if self.offline:
            node = next((e.node for e in self.scope_entries.get("", ()) if isinstance(e, ClassDef) and e.qualname == qualname), None)
            return node is not None and "type" in _src(node.bases)
        obj: object = self.module
        for part in qualname.split("."):
            obj = vars(obj).get(part) if hasattr(obj, "__dict__") else None
        return isinstance(obj, type) and issubclass(obj, type)

    def live_functions(self, namespace: dict, new: FunctionDef, old: FunctionDef | None) -> list[types.FunctionType]:
        """The live functions a definition made, by the code object they carry."""
        value = namespace.get(new.name)
        candidates = functions_named(value, new.qualname) if value is not None else []
        if old is not None:
            exact = [f for f in candidates if f.__code__ is old.code] or [f for f in candidates if f.__code__ == old.code]
            if exact:
                return exact
            return self.index.functions(old.code)  # not under its name (``@x.register def _``, wrappers)
        if len(candidates) > 1:  # a property's getter and setter share a qualname: match by line
            candidates.sort(key=lambda f: f.__code__.co_firstlineno)
            index = int(new.key.rpartition("#")[2]) - 1 if "#" in new.key else 0
            return candidates[index:index + 1]
        return candidates

    def describe(self, old: FunctionDef | None, new: FunctionDef, old_code: types.CodeType) -> str:
        parts = []
        if old is not None:
            a = self.old_side.segment(old).splitlines()
            b = self.new_model.segment(new).splitlines()
            diff = list(difflib.unified_diff(a, b, "running", "disk", n=1, lineterm=""))[2:]
            parts.extend(diff[:40])
            if len(diff) > 40:
                parts.append(f"... {len(diff) - 40} more diff lines")
        parts.append(_bytecode_summary(old_code, new.code))
        return "\n".join(parts)

    # -- closures made at run time

    def closures(self, module: types.ModuleType) -> None:
        """Inner functions reachable from the namespace (decorator wrappers, factories' products).

        Their code is a constant of the enclosing function; when only that
        constant changed (the enclosing function's own code is the same), the
        live inner function gets the new inner code: exactly what calling the
        new enclosing function would make. Reached through the namespace.
        """
        nested: dict[str, list[types.CodeType]] = {}
        for code in iter_code_tree(self.new_model.code):
            if "<locals>" in code.co_qualname:
                nested.setdefault(code.co_qualname, []).append(code)
        if not nested:
            return
        outer_changed = self.outer_changed()
        recreated = {id(f) for _, f in self.recreated}
        found: dict[str, list[types.FunctionType]] = {}
        for value in _namespace_values(module):
            for f in unwrap_functions(value):
                q = f.__code__.co_qualname
                if q in nested and f not in found.get(q, ()) and id(f) not in recreated:
                    found.setdefault(q, []).append(f)
        for q, funcs in found.items():
            candidates = nested[q]
            if len(candidates) != 1 or q.split(".<locals>.", 1)[0] in outer_changed:
                continue  # ambiguous, or made by code that changed: the products are re-made or reported
            new_code = candidates[0]
            stale = [f for f in funcs if f.__code__ != new_code and f.__code__.co_freevars == new_code.co_freevars]
            if stale:
                if not same_semantics(stale[0].__code__, new_code):
                    self.add("body-changed", q, f"{q} (a live closure) gets the new inner code")
                self.changes.append(RetargetClosure(q, tuple(stale), new_code))

    def outer_changed(self) -> set[str]:
        """Qualnames of changed functions whose own code changed, not only their inner functions'."""
        out = set()
        for c in self.changes:
            if isinstance(c, ModifyFunction) and c.code_changed and not c.line_only and c.old is not None:
                if not _same_outer(c.old.code, c.new.code):
                    out.add(c.new.qualname)
        return out

    # -- classes

    def klass(self, prefix: str, new: ClassDef, old: ClassDef | None, namespace: dict, has_baseline: bool,
              dirty: _Dirty) -> None:
        q = new.qualname
        live = _OFFLINE_CLASS if self.offline else namespace.get(new.name)
        if not isinstance(live, type) or (has_baseline and old is None):
            if has_baseline and old is None:
                self.add("class-added", q, f"class {q} is new")
            elif live is None or not isinstance(live, type):
                self.add("no-live-object" if has_baseline else "class-added", q, f"class {q} has no live class to update; it is defined anew")
            else:
                return
            self.changes.append(AddDefinition(prefix, new))
            return
        if old is not None:
            blocked = False
            if _dumps(old.node.bases) != _dumps(new.node.bases):
                self.add("bases-changed", q, f"class {q} bases changed: ({_src(old.node.bases)}) -> ({_src(new.node.bases)})")
                blocked = True
            elif not self.offline and (gone := dirty.rebound_of(_names_loaded(new.node.bases + [k.value for k in new.node.keywords]))):
                self.add("bases-changed", q, f"class {q} derives from {', '.join(sorted(gone))}, which the patch re-creates")
                blocked = True
            if _dumps(old.node.keywords) != _dumps(new.node.keywords):
                self.add("metaclass-changed", q, f"class {q} keywords/metaclass changed")
                blocked = True
            if _dumps(old.node.decorator_list) != _dumps(new.node.decorator_list):
                self.add("class-decorators-changed", q, f"class {q} decorators changed")
                blocked = True
            if blocked:
                return
            self.class_statements(q, old, new)
            if any(f.code in (*_LAYOUT_CODES, "enum-members-changed") and f.qualname == q for f in self.findings):
                return
        self.scope(q + ".", old.body if old else None, new.body, None if self.offline else live, outer=dirty)

    def class_statements(self, q: str, old: ClassDef, new: ClassDef) -> None:
        old_s = Counter(s.dump for s in old.body.statements() if not s.is_docstring)
        new_s = Counter(s.dump for s in new.body.statements() if not s.is_docstring)
        if old_s == new_s:
            return
        changed = (old_s - new_s) + (new_s - old_s)
        stmts = [s for s in old.body.statements() + new.body.statements() if s.dump in changed]
        names = set().union(*(s.names for s in stmts)) if stmts else set()
        decorators = _src(old.node.decorator_list)
        bases = _src(old.node.bases)
        if "__slots__" in names:
            self.add("slots-changed", q, f"class {q} __slots__ changed")
        fields = any(isinstance(s.node, ast.AnnAssign) for s in stmts)
        if (any(h in decorators for h in _DATACLASS_HINTS) and (fields or any(s.has_call for s in stmts))) or (
                fields and any(h in bases for h in _RECORD_BASES)):
            self.add("fields-changed", q, f"class {q} fields changed: {', '.join(sorted(names)) or '?'}")
        if any(h in bases for h in _ENUM_HINTS):
            self.enum_members(q, old, new, bases)

    def enum_members(self, q: str, old: ClassDef, new: ClassDef, bases: str) -> None:
        """Members only added (existing ones and their values unchanged): moved in exactly. Anything else blocks."""
        before, after = _enum_members(old.body), _enum_members(new.body)
        changed = sorted(n for n in before if after.get(n) != before[n])
        added = [n for n in after if n not in before]
        if not changed and not added:
            return
        if changed or "Flag" in bases:
            self.add("enum-members-changed", q, f"enum {q} members removed or changed: {', '.join(changed or added)}")
            return
        prefix = q.rpartition(".")[0]
        self.add("enum-member-added", q, f"enum {q} gains {', '.join(added)}; existing members keep their identity")
        self.changes.append(AddEnumMembers(prefix + "." if prefix else "", new, tuple(added)))
        self.skip.update(d for d, n in ((s.dump, s.names) for s in new.body.statements()) if n and n <= set(added))

    # -- statements

    def statement(self, prefix: str, s: Statement, namespace: dict, dirty: _Dirty) -> None:
        where = f"{prefix or 'module '}line {s.lineno}"
        text = ast.unparse(s.node)
        short = text if len(text) <= 80 else text[:77] + "..."
        names = ", ".join(prefix + n for n in sorted(s.names)) or None
        if s.is_docstring:
            self.add("docstring-changed", prefix.rstrip(".") or None, f"{prefix.rstrip('.') or 'module'} docstring changed")
            if prefix and "__doc__" in self.scope_bound_later(prefix):
                return  # the class body binds __doc__ itself (a descriptor): the docstring never shows
            self.changes.append(RunStatement(prefix, s))
            return
        if s.is_import:
            self.add("import-changed", names, f"{where}: `{short}` will run")
        elif s.has_call and not _pure(s.node, dirty):
            self.add("statement-with-call", names, f"{where}: `{short}` calls code when re-run")
        else:
            self.add("statement-added", names, f"{where}: `{short}` will run")
        if any(isinstance(n, ast.Lambda) for n in ast.walk(s.node)):
            lambdas = sorted(n for n in s.names if n in namespace)
            if lambdas:
                self.add("lambda-changed", ", ".join(prefix + n for n in lambdas),
                         f"{where}: a new lambda is bound to {', '.join(lambdas)}; {self.holders_text(namespace, lambdas, prefix)}")
        stateful = sorted(n for n in s.names if n in namespace and _holds_state(namespace[n]) and n not in _DECLARATIVE
                          and not self.as_imported(prefix, n, namespace[n])) \
            if not self.offline and not s.is_import else []
        if stateful:
            self.add("state-reset", ", ".join(prefix + n for n in stateful),
                     f"{where} re-binds {', '.join(stateful)}, which hold live state that will be replaced")
        self.changes.append(RunStatement(prefix, s))

    def as_imported(self, prefix: str, name: str, value: object) -> bool:
        """The live value is still exactly what the old source's literal made: no state accumulated to lose."""
        old_scope = self.old_scopes.get(prefix)
        binders = [e for e in old_scope.entries if isinstance(e, Statement) and name in e.names] if old_scope else []
        if len(binders) != 1 or not isinstance(binders[0].node, ast.Assign | ast.AnnAssign):
            return False
        node = binders[0].node
        if isinstance(node, ast.Assign) and not (len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            return False
        if node.value is None:
            return False
        try:
            literal = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            return False
        # Replay the old body's own edits of it (``TABLE['b'] = TABLE['a']``, ``X.update(k=1)``): plain data only.
        ns = {name: literal}
        after = False
        for e in old_scope.entries if old_scope is not None else ():
            if e is binders[0]:
                after = True
                continue
            if not after or not isinstance(e, Statement) or name not in _names_loaded([e.node]):
                continue
            if _names_loaded([e.node]) != {name} or not _data_only(e.node, name):
                return False
            try:
                exec(compile(ast.Module(body=[e.node], type_ignores=[]), "<replay>", "exec"), {"__builtins__": {}}, ns)  # literal data only
            except Exception:  # cannot replay: treat as live state
                return False
        return type(ns[name]) is type(value) and ns[name] == value

    def holders_text(self, namespace: dict, names: list[str], prefix: str) -> str:
        if self.offline:
            return "holders of the old one keep it"
        held = []
        for n in names:
            for path in self.index.holders(namespace[n]):
                if path != prefix + n:
                    held.append(path)
        return f"holders keep the old one: {', '.join(held)}" if held else "holders outside the module keep the old one"

    def scope_bound_later(self, prefix: str) -> set[str]:
        names: set[str] = set()
        for e in self.scope_entries.get(prefix, ())[1:]:
            names |= {e.name} if not isinstance(e, Statement) else set(e.names)
        return names

    def dependent_statement(self, prefix: str, s: Statement, namespace: dict, dirty: _Dirty) -> None:
        """An unchanged statement: run it again if it uses, while the module body runs, what the patch re-creates."""
        if self.offline or s.is_docstring or not (dirty.rebound or dirty.behaviour or dirty.members or dirty.outer):
            return
        reads, called = _statement_reads(s.node)
        rebound = dirty.rebound_of(reads) | dirty.members_of(reads)
        changed_calls = dirty.behaviour_of(called) if s.has_call else set()
        if not rebound and not changed_calls:
            return
        where = f"{prefix or 'module '}line {s.lineno}"
        text = ast.unparse(s.node)
        short = text if len(text) <= 80 else text[:77] + "..."
        names = ", ".join(prefix + n for n in sorted(s.names or _target_roots(s.node))) or None
        derived = prefix != "" or s.is_import or not s.names or all(
            _is_definition_like(namespace.get(n)) for n in s.names if n in namespace)
        if not rebound and not derived:
            self.add("state-kept", names, f"{where}: `{short}` is unchanged and keeps the value it computed with the"
                     f" old {', '.join(sorted(changed_calls))}; a fresh import would compute it again")
            return
        if not rebound:
            changed_calls = dirty.factory_of(called)
            if not changed_calls:
                return  # it made functions whose code is swapped in place (closures retargeted): nothing to re-make
        uses = ", ".join(sorted(rebound | changed_calls))
        if s.has_call and not _pure(s.node, dirty):
            self.add("statement-with-call", names, f"{where}: `{short}` is unchanged but uses {uses}, which the patch changes;"
                     " it runs again and calls code")
        else:
            self.add("dependent-rerun", names, f"{where}: `{short}` uses {uses}, which the patch changes; it runs again")
        self.changes.append(RunStatement(prefix, s))

    def unverified_statement(self, prefix: str, s: Statement, namespace: dict) -> None:
        """Without a baseline: a statement binding only names the module lacks is new; run it (imports first of all)."""
        if s.is_docstring or not s.names or any(n in namespace for n in s.names):
            return
        where = f"{prefix or 'module '}line {s.lineno}"
        names = ", ".join(prefix + n for n in sorted(s.names))
        text = ast.unparse(s.node)
        code = "import-changed" if s.is_import else ("statement-with-call" if s.has_call and not _pure(s.node, None) else "statement-added")
        self.add(code, names, f"{where}: `{text[:77]}` binds names the running module lacks; it will run")
        self.changes.append(RunStatement(prefix, s))


def _data_only(node: ast.stmt, name: str) -> bool:
    """A statement that only edits ``name`` with literals and its own container methods (safe to replay)."""
    if not isinstance(node, ast.Assign | ast.AugAssign | ast.Expr):
        return False
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            if not (isinstance(n.func, ast.Attribute) and _dotted(n.func.value) == name and n.func.attr in _MUTATORS):
                return False
        elif isinstance(n, ast.Lambda | ast.NamedExpr | ast.Await | ast.Yield | ast.YieldFrom | ast.Starred):
            return False
        elif isinstance(n, ast.Attribute) and not isinstance(getattr(n, "ctx", None), ast.Load):
            return False
    return True


def _target_roots(node: ast.stmt) -> set[str]:
    """Names whose objects a statement mutates through ``NAME[...] = `` / ``NAME.attr = ``."""
    out = set()
    for n in _walk_import_time(node):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign | ast.AnnAssign) else []
        for t in targets:
            while isinstance(t, ast.Subscript | ast.Attribute):
                t = t.value
            if isinstance(t, ast.Name):
                out.add(t.id)
    return out


def _enum_members(scope: Scope) -> dict[str, str]:
    """Member name -> value source, for plain ``NAME = value`` statements of an Enum body."""
    out = {}
    for st in scope.statements():
        node = st.node
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if not (name.startswith("_") or isinstance(node.value, ast.Lambda)):
                out[name] = ast.dump(node.value)
    return out


def _note(dirty: _Dirty, c: Change, prefix: str) -> None:
    if isinstance(c, RunStatement) and c.scope == prefix:
        dirty.rebound |= c.statement.names
    elif isinstance(c, AddDefinition) and c.scope == prefix:
        dirty.rebound.add(c.new.name)
        dirty.factory.add(c.new.name)
    elif isinstance(c, ModifyFunction) and c.scope == prefix:
        if c.replace:
            dirty.rebound.add(c.new.name)
            dirty.factory.add(c.new.name)
        elif c.code_changed and not c.line_only:
            dirty.behaviour.add(c.new.name)
            if c.old is not None and not _same_outer(c.old.code, c.new.code):
                dirty.factory.add(c.new.name)
    elif isinstance(c, RemoveName) and c.scope == prefix:
        dirty.rebound.add(c.name)



# --------------------------------------------------------------------------- offline


class _OfflineNamespace(dict):
    """Offline, every name the old source binds is taken to exist."""

    def __contains__(self, key: object) -> bool:
        return True


class _OfflineClass:
    pass


_OFFLINE_CLASS = _OfflineClass  # stands in for "a live class exists" offline



def _namespace_values(module: types.ModuleType):
    for value in list(vars(module).values()):
        yield value
        if isinstance(value, type) and value.__module__ == module.__name__:
            yield from list(vars(value).values())

_FLAG_VARARGS, _FLAG_VARKW = 0x04, 0x08
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range, type,
              types.FunctionType, types.BuiltinFunctionType, types.ModuleType)


def _holds_state(value: object) -> bool:
    return not isinstance(value, _IMMUTABLE)


def _signature(code: types.CodeType) -> tuple:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & _FLAG_VARARGS) + bool(code.co_flags & _FLAG_VARKW)
    return (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
            code.co_varnames[:n], code.co_flags & (_FLAG_VARARGS | _FLAG_VARKW))


def _fmt_sig(code: types.CodeType) -> str:
    return "(" + ", ".join(_signature(code)[3]) + ")"


def _dumps(nodes: list) -> list[str]:
    return [ast.dump(n) if n is not None else "None" for n in nodes]


def _src(nodes: list) -> str:
    return ", ".join(ast.unparse(n) for n in nodes)


def _defaults_dump(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple:
    return (_dumps(node.args.defaults), _dumps(node.args.kw_defaults))


def _annotations_dump(node: ast.FunctionDef | ast.AsyncFunctionDef) -> dict:
    a = node.args
    args = a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]
    out = {x.arg: ast.dump(x.annotation) for x in args if x.annotation}
    if node.returns:
        out["return"] = ast.dump(node.returns)
    return out


def _body_dump(node: ast.FunctionDef | ast.AsyncFunctionDef | None) -> str | None:
    if node is None:
        return None
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    return "\n".join(ast.dump(s) for s in body)


def _handlers(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple:
    """Exception types a function's own body catches (nested definitions excluded)."""
    found: list[str] = []

    def visit(n: ast.AST) -> None:
        for child in ast.iter_child_nodes(n):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                continue
            if isinstance(child, ast.ExceptHandler):
                found.append(ast.unparse(child.type) if child.type else "<bare except>")
            visit(child)

    for stmt in node.body:
        visit(ast.Module(body=[stmt], type_ignores=[]))
    return tuple(found)


def _literal_defaults_differ(func: types.FunctionType, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Without a baseline: compare literal defaults with the live ones."""
    try:
        new_defaults = tuple(ast.literal_eval(d) for d in node.args.defaults) or None
        new_kw = {a.arg: ast.literal_eval(d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d is not None} or None
    except ValueError:
        return False  # not literal: cannot be compared without running code; left as is
    return new_defaults != func.__defaults__ or new_kw != func.__kwdefaults__


def _bytecode_summary(old: types.CodeType, new: types.CodeType) -> str:
    """Describe a code change in instructions (line numbers ignored)."""
    import bytecode

    def listing(code: types.CodeType) -> list[str]:
        out = []
        for instr in bytecode.Bytecode.from_code(code):
            if isinstance(instr, bytecode.Instr):
                arg = instr.arg
                if isinstance(arg, types.CodeType):
                    arg = f"<code {arg.co_qualname}>"
                elif isinstance(arg, bytecode.Label | bytecode.BasicBlock):
                    arg = "<label>"
                elif isinstance(arg, tuple) and arg and isinstance(arg[-1], str) and instr.name == "LOAD_GLOBAL":
                    arg = arg[-1]
                out.append(f"{instr.name} {arg!r}" if instr.require_arg() else instr.name)
        return out

    try:
        a, b = listing(old), listing(new)
    except Exception as exc:  # description only; never fail the analysis
        return f"bytecode: could not be described ({type(exc).__name__})"
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag != "equal")
    consts_a = [k for k in old.co_consts if not isinstance(k, types.CodeType)]
    consts_b = [k for k in new.co_consts if not isinstance(k, types.CodeType)]
    extra = ""
    if consts_a != consts_b:
        gone = [repr(k) for k in consts_a if k not in consts_b][:4]
        came = [repr(k) for k in consts_b if k not in consts_a][:4]
        extra = f"; constants -{gone} +{came}" if gone or came else ""
    names = sorted(set(new.co_names) - set(old.co_names))
    if names:
        extra += f"; new names {names[:6]}"
    return f"bytecode: {changed} of {max(len(a), len(b))} instructions differ{extra}"



# --------------------------------------------------------------------------- what runs while a body runs


def _walk_import_time(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes evaluated when the enclosing body runs: not the bodies of functions and lambdas. Iterative."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            if not isinstance(n, ast.Lambda):
                stack.extend(n.decorator_list)
            stack.extend(n.args.defaults)
            stack.extend(d for d in n.args.kw_defaults if d is not None)
            continue
        stack.extend(ast.iter_child_nodes(n))


def _names_loaded(nodes: list) -> set[str]:
    return {n.id for node in nodes for n in _walk_import_time(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _decorator_reads(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names of decorators that are (or are made by calling) a function: ``@deco``, ``@deco(arg)``.

    ``@obj.register`` and ``@bus.on("k")`` use a method of an object; they
    are not re-run when the object's module-level function changes.
    """
    out = set()
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Name):
            out.add(target.id)
    return out


def _definition_reads(node: ast.FunctionDef | ast.AsyncFunctionDef, future_annotations: bool) -> set[str]:
    parts: list = [*node.decorator_list, *node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
    if not future_annotations:
        a = node.args
        parts.extend(x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs + [v for v in (a.vararg, a.kwarg) if v]
                     if x.annotation is not None)
        if node.returns is not None:
            parts.append(node.returns)
    return _names_loaded(parts)


def _statement_reads(node: ast.stmt) -> tuple[set[str], set[str]]:
    """Names a statement loads while it runs, and the roots of what it calls."""
    reads: set[str] = set()
    called: set[str] = set()
    for n in _walk_import_time(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            reads.add(n.id)
        elif isinstance(n, ast.Call):
            root = _dotted(n.func).split(".", 1)[0]
            if root:
                called.add(root)
    return reads, reads


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


#: Calls that only build a value (no effect outside what the statement binds): re-running them is exact.
_PURE_CALLS = frozenset({
    "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "complex", "bool", "len", "sorted",
    "reversed", "enumerate", "zip", "range", "min", "max", "sum", "any", "all", "abs", "round", "isinstance",
    "issubclass", "getattr", "hasattr", "repr", "type", "map", "filter", "iter", "chr", "ord", "hash", "divmod",
    "property", "staticmethod", "classmethod", "object", "slice", "format", "vars", "id",
    "functools.partial", "functools.wraps", "functools.lru_cache", "functools.cache", "functools.cached_property",
    "functools.total_ordering", "functools.singledispatch", "functools.reduce", "partial", "wraps", "lru_cache",
    "cache", "cached_property", "total_ordering", "re.compile", "compile", "logging.getLogger", "getLogger",
    "typing.TypeVar", "TypeVar", "typing.NewType", "NewType", "typing.cast", "cast", "collections.namedtuple",
    "namedtuple", "collections.OrderedDict", "OrderedDict", "collections.defaultdict", "defaultdict",
    "collections.deque", "deque", "collections.Counter", "Counter", "dataclasses.field", "field", "enum.auto",
    "auto", "os.path.join", "os.path.dirname", "os.path.abspath", "os.path.basename", "os.path.realpath",
    "os.environ.get", "os.getenv", "sys.intern", "threading.Lock", "threading.RLock", "threading.local",
    "threading.Event", "threading.Condition", "weakref.WeakKeyDictionary", "weakref.WeakValueDictionary",
    "weakref.WeakSet", "itertools.count", "itertools.chain", "operator.attrgetter", "operator.itemgetter",
    "operator.methodcaller", "types.MappingProxyType", "MappingProxyType", "decimal.Decimal", "Decimal",
    "fractions.Fraction", "Fraction", "datetime.timedelta", "timedelta", "datetime.date", "datetime.datetime",
    "pathlib.Path", "Path", "string.Template", "struct.Struct", "abc.abstractmethod", "abstractmethod",
    "contextlib.contextmanager", "contextmanager", "sys.version_info.__ge__", "platform.system", "globals",
})
_MUTATORS = frozenset({"update", "append", "extend", "add", "setdefault", "insert", "__setitem__", "discard", "remove",
                       "pop", "clear", "sort", "register"})


def _pure(node: ast.stmt, dirty: object | None) -> bool:
    """Every call in the statement only builds a value, or mutates an object this patch creates anew."""
    for n in _walk_import_time(node):
        if isinstance(n, ast.Await | ast.Yield | ast.YieldFrom):
            return False
        if not isinstance(n, ast.Call):
            continue
        name = _dotted(n.func)
        if name in _PURE_CALLS or (name and name.split(".", 1)[0] in _PURE_CALLS and isinstance(n.func, ast.Name)):
            continue
        root, _, method = name.rpartition(".")
        if root and method in _MUTATORS and isinstance(dirty, _Dirty) and dirty.rebound_of({root.split(".", 1)[0]}):
            continue  # mutates an object the patch just made
        if isinstance(n.func, ast.Subscript | ast.Call):
            return False
        return False
    return True


def _same_outer(a: types.CodeType, b: types.CodeType) -> bool:
    """The two functions' own code is the same; only the code of functions they define may differ."""
    def key(c: types.CodeType) -> types.CodeType:
        consts = tuple(("<code>", k.co_qualname) if isinstance(k, types.CodeType) else k for k in c.co_consts)
        return c.replace(co_consts=consts, co_firstlineno=1, co_linetable=b"")

    return key(a) == key(b)


def _is_definition_like(value: object) -> bool:
    return isinstance(value, types.FunctionType | types.MethodType | type | staticmethod | classmethod | property
                      | functools.partial | types.BuiltinFunctionType)


def _loads_global(code: types.CodeType, name: str) -> bool:
    return any(i.opname in ("LOAD_GLOBAL", "LOAD_NAME") and i.argval == name for i in dis.get_instructions(code))


