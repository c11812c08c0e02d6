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
import types
from collections import Counter

from ._changes import (
    AddDefinition,
    Change,
    ModifyFunction,
    RemoveName,
    RetargetClosure,
    RunStatement,
)
from ._findings import Finding
from ._live import functions_named, unwrap_functions
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


class Differ:
    """Walks the new source's scopes against the old ones (and the live objects).

    With ``module=None`` (offline: two files, no process) the old side is
    taken to be live exactly as its source says.
    """

    def __init__(self, module: types.ModuleType | None, old: ModuleModel | None, new: ModuleModel) -> None:
        self.module = module
        self.offline = module is None
        self.old_model = old
        self.new_model = new
        self.findings: list[Finding] = []
        self.changes: list[Change] = []
        self.scope_entries: dict[str, tuple] = {}

    def add(self, code: str, qualname: str | None, message: str, detail: str | None = None) -> None:
        self.findings.append(Finding(code, qualname, message, detail))

    # -- scopes

    def scope(self, prefix: str, old: Scope | None, new: Scope, live: object) -> None:
        self.scope_entries[prefix] = new.entries
        namespace = _OfflineNamespace() if self.offline else live.__dict__
        old_funcs = old.functions() if old else {}
        old_classes = old.classes() if old else {}
        old_statements = Counter(s.dump for s in old.statements()) if old else Counter()
        for entry in new.entries:
            if isinstance(entry, FunctionDef):
                self.function(prefix, entry, old_funcs.get(entry.key), namespace, has_baseline=old is not None)
            elif isinstance(entry, ClassDef):
                self.klass(prefix, entry, old_classes.get(entry.key), namespace, has_baseline=old is not None)
            elif old is not None:
                if old_statements[entry.dump] > 0:
                    old_statements[entry.dump] -= 1
                else:
                    self.statement(prefix, entry, namespace)
        self.removals(prefix, old, new, namespace, old_statements)

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
        else:
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
                self.add(code, prefix + n, f"{prefix + n} is no longer defined; it is removed from its namespace")
                self.changes.append(RemoveName(prefix, n))

    # -- functions

    def function(self, prefix: str, new: FunctionDef, old: FunctionDef | None, namespace: dict, has_baseline: bool) -> None:
        q = new.qualname
        if old is not None and old.code == new.code and (
            old.node is new.node or self.old_model.segment(old) == self.new_model.segment(new)):
            return  # same text, same code, same lines: nothing to look up (the common case)
        live = [] if self.offline else self.live_functions(namespace.get(new.name), new, old)
        if has_baseline and old is None:
            self.add("function-added", q, f"{q} is new")
            self.changes.append(AddDefinition(prefix, new))
            return
        if not live and not self.offline:
            if any(isinstance(e, Statement) and new.name in e.names for e in self.scope_entries.get(prefix, ())):
                return  # a plain statement re-binds the name; the def's function is not what runs
            if has_baseline or new.name not in namespace:
                code = "no-live-object" if has_baseline else "function-added"
                self.add(code, q, f"{q} has no live function to update; a new one is defined")
                self.changes.append(AddDefinition(prefix, new))
            return
        old_code = old.code if old is not None else live[0].__code__
        live = live or []
        if old is not None and self.old_model.segment(old) == self.new_model.segment(new):
            # Same text: same code, defaults, decorators. At most the lines moved.
            if any(f.__code__ != new.code for f in live) or (self.offline and old.code != new.code):
                self.add("line-shift", q, f"{q} moved from line {old_code.co_firstlineno} to {new.code.co_firstlineno}")
                self.changes.append(ModifyFunction(prefix, new, old, tuple(live), True, False, False, False, False,
                                                   line_only=True))
            return
        code_changed = any(f.__code__ != new.code for f in live) or old_code != new.code
        semantic = not same_semantics(old_code, new.code)
        replace = False
        if old_code.co_freevars != new.code.co_freevars:
            replace = True
            self.add("closure-changed", q, f"{q} closure variables {old_code.co_freevars} -> {new.code.co_freevars}; a new function object replaces it")
        if _signature(old_code) != _signature(new.code):
            self.add("signature-changed", q, f"{q} parameters changed: {_fmt_sig(old_code)} -> {_fmt_sig(new.code)}")
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
        elif code_changed:
            self.add("line-shift", q, f"{q} moved from line {old_code.co_firstlineno} to {new.code.co_firstlineno}")
        if code_changed or defaults_changed or annotations_changed or doc_changed or replace:
            self.changes.append(ModifyFunction(prefix, new, old, tuple(live), code_changed, defaults_changed,
                                               annotations_changed, doc_changed, replace,
                                               line_only=code_changed and not semantic))

    def live_functions(self, value: object, new: FunctionDef, old: FunctionDef | None) -> list[types.FunctionType]:
        if value is None:
            return []
        candidates = functions_named(value, new.qualname)
        if old is not None:
            exact = [f for f in candidates if f.__code__ == old.code]
            if exact:
                return exact
        if len(candidates) > 1:  # a property's getter and setter share a qualname: match by line
            candidates.sort(key=lambda f: f.__code__.co_firstlineno)
            index = int(new.key.rpartition("#")[2]) - 1 if "#" in new.key else 0
            return candidates[index:index + 1]
        return candidates

    def describe(self, old: FunctionDef | None, new: FunctionDef, old_code: types.CodeType) -> str:
        parts = []
        if old is not None:
            a = self.old_model.segment(old).splitlines()
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

        Their code is a constant of the enclosing function; when that changed,
        the live inner function gets the new inner code, if its closure
        variables are the same. Reached through the namespace, never the heap.
        """
        nested = {}
        for code in iter_code_tree(self.new_model.code):
            if "<locals>" in code.co_qualname:
                nested.setdefault(code.co_qualname, []).append(code)
        if not nested:
            return
        found: dict[str, list[types.FunctionType]] = {}
        for value in _namespace_values(module):
            for f in unwrap_functions(value):
                q = f.__code__.co_qualname
                if q in nested and f not in found.get(q, ()):
                    found.setdefault(q, []).append(f)
        for q, funcs in found.items():
            candidates = nested[q]
            if len(candidates) != 1:
                continue  # ambiguous (two inner functions of the same name): leave them alone
            new_code = candidates[0]
            stale = [f for f in funcs if f.__code__ != new_code and f.__code__.co_freevars == new_code.co_freevars]
            if stale:
                if not same_semantics(stale[0].__code__, new_code):
                    self.add("body-changed", q, f"{q} (a live closure) gets the new inner code")
                self.changes.append(RetargetClosure(q, tuple(stale), new_code))

    # -- classes

    def klass(self, prefix: str, new: ClassDef, old: ClassDef | None, namespace: dict, has_baseline: bool) -> None:
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
            if _dumps(old.node.keywords) != _dumps(new.node.keywords):
                self.add("metaclass-changed", q, f"class {q} keywords/metaclass changed")
                blocked = True
            if _dumps(old.node.decorator_list) != _dumps(new.node.decorator_list):
                self.add("class-decorators-changed", q, f"class {q} decorators changed")
                blocked = True
            if blocked:
                return
            self.class_statements(q, old, new)
        self.scope(q + ".", old.body if old else None, new.body, None if self.offline else live)

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
        if any(h in decorators for h in _DATACLASS_HINTS) and any(
            isinstance(s.node, ast.AnnAssign) or s.has_call for s in stmts
        ):
            self.add("fields-changed", q, f"class {q} fields changed: {', '.join(sorted(names)) or '?'}")
        if any(h in bases for h in _ENUM_HINTS):
            self.add("enum-members-changed", q, f"enum {q} members changed: {', '.join(sorted(names)) or '?'}")

    # -- statements

    def statement(self, prefix: str, s: Statement, namespace: dict) -> None:
        where = f"{prefix or 'module '}line {s.lineno}"
        text = ast.unparse(s.node)
        short = text if len(text) <= 80 else text[:77] + "..."
        names = ", ".join(prefix + n for n in sorted(s.names)) or None
        if s.is_docstring:
            self.add("docstring-changed", prefix.rstrip(".") or None, f"{prefix.rstrip('.') or 'module'} docstring changed")
        elif s.is_import:
            self.add("import-changed", names, f"{where}: `{short}` will run")
        elif s.has_call:
            self.add("statement-with-call", names, f"{where}: `{short}` calls code when re-run")
        else:
            self.add("statement-added", names, f"{where}: `{short}` will run")
        stateful = sorted(n for n in s.names if n in namespace and _holds_state(namespace[n])) if not self.offline else []
        if stateful and not s.is_docstring:
            self.add("state-reset", ", ".join(prefix + n for n in stateful),
                     f"{where} re-binds {', '.join(stateful)}, which hold live state that will be replaced")
        self.changes.append(RunStatement(prefix, s))


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


def _defaults_dump(node: ast.AST) -> tuple:
    return (_dumps(node.args.defaults), _dumps(node.args.kw_defaults))


def _annotations_dump(node: ast.AST) -> dict:
    a = node.args
    args = a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]
    out = {x.arg: ast.dump(x.annotation) for x in args if x.annotation}
    if node.returns:
        out["return"] = ast.dump(node.returns)
    return out


def _body_dump(node: ast.AST | None) -> str | None:
    if node is None:
        return None
    body = node.body[1:] if ast.get_docstring(node, clean=False) is not None else node.body
    return "\n".join(ast.dump(s) for s in body)


def _handlers(node: ast.AST) -> tuple:
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


def _literal_defaults_differ(func: types.FunctionType, node: ast.AST) -> bool:
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
    except Exception as exc:  # noqa: BLE001 - description only; never fail the analysis
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

