"""A module's source seen as definitions: the unit hotfix compares and swaps.

A module body (and each class body inside it) becomes a *scope*: an ordered
list of function definitions, class definitions and plain statements. Each
definition is paired with the code object the compiler made for it, found by
``(co_qualname, co_firstlineno)`` in the compiled module, so the code that
gets swapped in is exactly what compiling the file on disk produces.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Iterator

import attrs

CO_FUTURE_ANNOTATIONS = 0x1000000


@attrs.frozen(eq=False)
class FunctionDef:
    name: str
    qualname: str
    key: str  # qualname, suffixed with #N for the Nth same-named definition in a scope
    node: ast.FunctionDef | ast.AsyncFunctionDef = attrs.field(repr=False)
    code: types.CodeType = attrs.field(repr=False)


@attrs.frozen(eq=False)
class ClassDef:
    name: str
    qualname: str
    key: str
    node: ast.ClassDef = attrs.field(repr=False)
    body: Scope = attrs.field(repr=False)
    code: types.CodeType = attrs.field(repr=False)  # the class body


@attrs.frozen(eq=False)
class Statement:
    node: ast.stmt = attrs.field(repr=False)
    dump: str = attrs.field(repr=False)
    names: frozenset[str]
    has_call: bool
    is_docstring: bool = False
    is_import: bool = False


Entry = FunctionDef | ClassDef | Statement


@attrs.frozen(eq=False)
class Scope:
    qualprefix: str  # "" for the module, "C." for class C
    entries: tuple[Entry, ...]

    def functions(self) -> dict[str, FunctionDef]:
        return {e.key: e for e in self.entries if isinstance(e, FunctionDef)}

    def classes(self) -> dict[str, ClassDef]:
        return {e.key: e for e in self.entries if isinstance(e, ClassDef)}

    def statements(self) -> list[Statement]:
        return [e for e in self.entries if isinstance(e, Statement)]

    def bound_names(self) -> set[str]:
        names: set[str] = set()
        for e in self.entries:
            names |= {e.name} if not isinstance(e, Statement) else set(e.names)
        return names


@attrs.frozen(eq=False)
class ModuleModel:
    """Parsed and compiled source of one module. Building it runs no module code."""

    path: str
    text: str = attrs.field(repr=False)
    tree: ast.Module = attrs.field(repr=False)
    code: types.CodeType = attrs.field(repr=False)
    scope: Scope = attrs.field(repr=False)
    lines: list[str] = attrs.field(repr=False, factory=list)

    def segment(self, node: ast.AST) -> str:
        """Source text of a definition, decorators included (cheap: no re-splitting)."""
        return "".join(self.lines[first_line(node) - 1 : node.end_lineno])

    @property
    def future_annotations(self) -> bool:
        return bool(self.code.co_flags & CO_FUTURE_ANNOTATIONS)

    def iter_functions(self) -> Iterator[FunctionDef]:
        yield from _iter_functions(self.scope)


def _iter_functions(scope: Scope) -> Iterator[FunctionDef]:
    for e in scope.entries:
        if isinstance(e, FunctionDef):
            yield e
        elif isinstance(e, ClassDef):
            yield from _iter_functions(e.body)


def build_model(text: str, path: str) -> ModuleModel:
    """Parse and compile ``text``. Raises ``SyntaxError`` (and ``ValueError`` for NULs)."""
    tree = ast.parse(text, filename=path)
    code = compile(tree, path, "exec", dont_inherit=True)
    codes: dict[tuple[str, int], types.CodeType] = {}
    for c in iter_code_tree(code):
        codes.setdefault((c.co_qualname, c.co_firstlineno), c)
    scope = _build_scope(tree.body, "", codes)
    return ModuleModel(path=path, text=text, tree=tree, code=code, scope=scope,
                       lines=text.splitlines(keepends=True))


_cache: dict[tuple[str, str], ModuleModel] = {}
_CACHE_SIZE = 32


def cached_model(text: str, path: str, sha256: str) -> ModuleModel:
    """``build_model`` for a version that does not change (a baseline), memoised by content."""
    key = (path, sha256)
    model = _cache.pop(key, None)
    if model is None:
        model = build_model(text, path)
    _cache[key] = model  # most recently used last
    while len(_cache) > _CACHE_SIZE:
        del _cache[next(iter(_cache))]
    return model


def iter_code_tree(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and every code object nested in its constants, depth first."""
    stack = [code]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(k for k in reversed(c.co_consts) if isinstance(k, types.CodeType))


def first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno] + [d.lineno for d in decorators])


def _build_scope(body: list[ast.stmt], prefix: str, codes: dict) -> Scope:
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, node in enumerate(body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qualname = prefix + node.name
            seen[qualname] = seen.get(qualname, 0) + 1
            key = qualname if seen[qualname] == 1 else f"{qualname}#{seen[qualname]}"
            code = codes.get((qualname, first_line(node)))
            if code is None:  # pragma: no cover - the compiler always makes one
                raise RuntimeError(f"no code object for {qualname}")
            if isinstance(node, ast.ClassDef):
                inner = _build_scope(node.body, qualname + ".", codes)
                entries.append(ClassDef(node.name, qualname, key, node, inner, code))
            else:
                entries.append(FunctionDef(node.name, qualname, key, node, code))
        else:
            entries.append(
                Statement(
                    node=node,
                    dump=ast.dump(node),
                    names=frozenset(bound_names(node)),
                    has_call=any(isinstance(n, ast.Call | ast.Await) for n in ast.walk(node)),
                    is_docstring=index == 0 and _is_docstring(node),
                    is_import=isinstance(node, ast.Import | ast.ImportFrom),
                )
            )
    return Scope(prefix, tuple(entries))


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def bound_names(node: ast.stmt) -> set[str]:
    """Names a statement binds in its own scope (not inside nested scopes)."""
    names: set[str] = set()

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            names.add(n.id)
        elif isinstance(n, ast.alias):
            if n.name != "*":
                names.add(n.asname or n.name.split(".")[0])
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
            return  # its body is another scope
        elif isinstance(n, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            return
        elif isinstance(n, ast.NamedExpr):
            visit(n.target)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.MatchAs | ast.MatchStar) and n.name:
            names.add(n.name)
        for child in ast.iter_child_nodes(n):
            visit(child)

    visit(node)
    return names


def strip_lines(code: types.CodeType) -> types.CodeType:
    """``code`` with line information removed, recursively: compares semantics only."""
    consts = tuple(strip_lines(k) if isinstance(k, types.CodeType) else k for k in code.co_consts)
    return code.replace(co_firstlineno=1, co_linetable=b"", co_consts=consts)


def same_semantics(a: types.CodeType, b: types.CodeType) -> bool:
    """True when the two code objects differ at most in line numbers."""
    return a == b or strip_lines(a) == strip_lines(b)
