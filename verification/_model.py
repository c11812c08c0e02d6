"""A module's source seen as definitions: the unit hotfix compares and swaps.

A module body (and each class body inside it) becomes a *scope*: an ordered
list of function definitions, class definitions and plain statements. Each
definition is paired with the code object the compiler made for it, found by
``(co_qualname, co_firstlineno)`` in the compiled module, so the code that
gets swapped in is exactly what compiling the file on disk produces.
"""

from __future__ import annotations

import ast
import threading
import types
from collections.abc import Iterable, Iterator
from typing import cast

import attrs

from ._chunked import compile_around, give_way, paced, parse_in_pieces

CO_FUTURE_ANNOTATIONS = 0x1000000


@attrs.frozen(eq=False)
class FunctionDef:
    name: str
    qualname: str
    key: str  # qualname, suffixed with #N for the Nth same-named definition in a scope
    node: ast.FunctionDef | ast.AsyncFunctionDef = attrs.field(repr=False)
    code: types.CodeType = attrs.field(repr=False)
    offset: int = 0  # node line numbers + offset = lines in this version (see build_model_incremental)

    @property
    def located(self) -> ast.FunctionDef | ast.AsyncFunctionDef:
        return cast("ast.FunctionDef | ast.AsyncFunctionDef", located(self.node, self.offset))


@attrs.frozen(eq=False)
class ClassDef:
    name: str
    qualname: str
    key: str
    node: ast.ClassDef = attrs.field(repr=False)
    body: Scope = attrs.field(repr=False)
    code: types.CodeType = attrs.field(repr=False)  # the class body
    offset: int = 0

    @property
    def located(self) -> ast.ClassDef:
        return cast(ast.ClassDef, located(self.node, self.offset))


@attrs.frozen(eq=False)
class Statement:
    node: ast.stmt = attrs.field(repr=False)
    dump: str = attrs.field(repr=False)
    names: frozenset[str]
    has_call: bool
    is_docstring: bool = False
    is_import: bool = False
    offset: int = 0

    @property
    def lineno(self) -> int:
        return self.node.lineno + self.offset

    @property
    def located(self) -> ast.stmt:
        return cast(ast.stmt, located(self.node, self.offset))


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
    code: types.CodeType = attrs.field(repr=False)
    scope: Scope = attrs.field(repr=False)
    lines: list[str] = attrs.field(repr=False, factory=list)
    incremental: bool = False  # built by re-parsing only the changed region

    def segment(self, entry: Entry) -> str:
        """Source text of an entry, decorators included (cheap: no re-splitting)."""
        start = first_line(entry.node) + entry.offset
        return "".join(self.lines[start - 1 : _end(entry.node) + entry.offset])

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


def build_model(text: str, path: str, code: types.CodeType | None = None) -> ModuleModel:
    """Parse and compile ``text``. Raises ``SyntaxError`` (and ``ValueError`` for NULs).

    ``code``: the module code already compiled from exactly this text (kept
    by the import hook), so only the parse is needed.
    """
    tree = ast.parse(text, filename=path) if code is None else parse_in_pieces(text, path, code)
    if code is None:
        try:
            code = compile(tree, path, "exec", dont_inherit=True)
        except RecursionError:  # the AST compiler recurses deeper than the text one: compile the text
            code = compile(text, path, "exec", dont_inherit=True)
    scope = _build_scope(tree.body, "", _codes_by_position(code))
    return ModuleModel(path=path, text=text, code=code, scope=scope, lines=text.splitlines(keepends=True))


def _codes_by_position(code: types.CodeType) -> dict[tuple[str, int], types.CodeType]:
    codes: dict[tuple[str, int], types.CodeType] = {}
    for c in paced(iter_code_tree(code)):
        codes.setdefault((c.co_qualname, c.co_firstlineno), c)
    return codes


def peek_model(path: str, sha256: str) -> ModuleModel | None:
    """The memoised model of this content, if there is one (builds nothing)."""
    return _cache.get((path, sha256))


def build_model_incremental(text: str, path: str, previous: ModuleModel | None,
                            code: types.CodeType | None = None) -> ModuleModel:
    """Like ``build_model``, re-parsing only the top-level statements that changed.

    Building a Python AST (``ast.parse``) costs more than compiling the same
    source, and a hot fix usually touches a few lines of a large file. So:
    compile the whole new text (which also checks its syntax), find the
    lines it shares with ``previous`` at the start and at the end, keep the
    previous version's top-level statements that lie wholly in those shared
    regions (those after the change keep their nodes with a line ``offset``
    instead of being copied), and parse only the region in between. A kept
    statement is one whose neighbours also lie in the shared region, so the
    edit cannot have changed where it starts or ends. Anything unusual falls
    back to a full parse.
    """
    if previous is None:
        return build_model(text, path, code)
    give_way()
    new_lines = text.splitlines(keepends=True)
    give_way()
    old_lines = previous.lines
    n_old, n_new = len(old_lines), len(new_lines)
    limit = min(n_old, n_new)
    step = 256  # compare runs of lines at C speed, giving way between runs
    prefix = 0
    while prefix + step <= limit and old_lines[prefix : prefix + step] == new_lines[prefix : prefix + step]:
        prefix += step
        give_way()
    while prefix < limit and old_lines[prefix] == new_lines[prefix]:
        prefix += 1
    suffix = 0
    while (suffix + step <= limit - prefix
           and old_lines[n_old - suffix - step : n_old - suffix] == new_lines[n_new - suffix - step : n_new - suffix]):
        suffix += step
        give_way()
    while suffix < limit - prefix and old_lines[n_old - 1 - suffix] == new_lines[n_new - 1 - suffix]:
        suffix += 1
    delta = n_new - n_old
    entries = previous.scope.entries
    give_way()
    spans = [(first_line(e.node) + e.offset, _end(e.node) + e.offset) for e in paced(entries, 64)]
    # keep entry i at the front if the next entry also starts in the shared prefix
    head = 0
    while head < len(entries) - 1 and spans[head + 1][0] <= prefix:
        head += 1
    # keep entry j at the back if everything from the end of entry j-1 on is shared
    first_shared_old = n_old - suffix + 1
    tail = len(entries)
    while tail - 1 > head and spans[tail - 2][1] + 1 >= first_shared_old:
        tail -= 1
    give_way()
    start = spans[head - 1][1] + 1 if head > 0 else 1  # right after the last kept entry: the edit may be in between
    stop = (spans[tail][0] + delta - 1) if tail < len(entries) else n_new
    if code is None:  # compile only the edited region when that is exact, else all of it (checks the syntax)
        code = compile_around(previous, new_lines, path, head, tail, start, stop, delta) or compile(text, path, "exec", dont_inherit=True)
    give_way()
    try:
        middle = ast.parse("".join(new_lines[start - 1 : stop]), filename=path).body if stop >= start else []
    except (SyntaxError, ValueError):
        return build_model(text, path, code)  # region boundaries did not hold: parse it all
    for node in middle:
        ast.increment_lineno(node, start - 1)
    codes = _codes_by_position(code)
    kept_head = _rebase(entries[:head], 0, codes)
    kept_tail = _rebase(entries[tail:], delta, codes)
    fresh = _build_scope(middle, "", codes).entries
    if kept_head is None or kept_tail is None:
        return build_model(text, path, code)
    scope = _rekey(Scope("", tuple(kept_head) + fresh + tuple(kept_tail)))
    return ModuleModel(path=path, text=text, code=code, scope=scope, lines=new_lines, incremental=True)


def _rebase(entries: tuple[Entry, ...], delta: int, codes: dict) -> list[Entry] | None:
    """Previous entries moved by ``delta`` lines, paired with the new code objects."""
    out: list[Entry] = []
    for e in paced(entries):
        offset = e.offset + delta
        if isinstance(e, Statement):
            out.append(e if not delta else attrs.evolve(e, offset=offset))
            continue
        code = codes.get((e.qualname, first_line(e.node) + offset))
        if code is None:
            return None
        if isinstance(e, FunctionDef):
            out.append(FunctionDef(e.name, e.qualname, e.key, e.node, code, offset))
        else:
            inner = _rebase(e.body.entries, delta, codes)
            if inner is None:
                return None
            out.append(attrs.evolve(e, code=code, offset=offset, body=Scope(e.body.qualprefix, tuple(inner))))
    return out


def _rekey(scope: Scope) -> Scope:
    """Recompute the #N suffixes of same-named definitions after splicing."""
    seen: dict[str, int] = {}
    entries = []
    for e in paced(scope.entries):
        if isinstance(e, FunctionDef | ClassDef):
            seen[e.qualname] = seen.get(e.qualname, 0) + 1
            key = e.qualname if seen[e.qualname] == 1 else f"{e.qualname}#{seen[e.qualname]}"
            if key != e.key:
                e = attrs.evolve(e, key=key)
        entries.append(e)
    return Scope(scope.qualprefix, tuple(entries))


def located(node: ast.AST, offset: int) -> ast.AST:
    """``node`` with its true line numbers (a copy when it carries an offset)."""
    if not offset:
        return node
    import copy

    moved = copy.deepcopy(node)
    ast.increment_lineno(moved, offset)
    return moved


_cache: dict[tuple[str, str], ModuleModel] = {}
_cache_lock = threading.Lock()
#: A parsed model weighs about 100x its source text (the AST); the cache keeps recently
#: used models within this estimate, and always the two most recent (running + disk).
_CACHE_BUDGET = 64 * 1024 * 1024
_MODEL_WEIGHT = 100


def cached_model(text: str, path: str, sha256: str, previous: ModuleModel | None = None,
                 code: types.CodeType | None = None) -> ModuleModel:
    """A model memoised by content (a version does not change once hashed).

    ``previous`` (the model of the running version) lets a new version be
    parsed incrementally.
    """
    key = (path, sha256)
    with _cache_lock:  # dry runs, applies and the background prebuild may run at once
        model = _cache.pop(key, None)
    if model is None:
        if previous is not None:
            model = build_model_incremental(text, path, previous, code)
        else:
            model = build_model(text, path, code)
    with _cache_lock:
        _cache[key] = model  # most recently used last
        while len(_cache) > 2 and sum(len(m.text) for m in _cache.values()) * _MODEL_WEIGHT > _CACHE_BUDGET:
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
    """The line a definition starts on: its first decorator, if any."""
    decorators = getattr(node, "decorator_list", None)
    line = decorators[0].lineno if decorators else getattr(node, "lineno", 1)
    return int(line or 1)


def _end(node: ast.AST) -> int:
    end = getattr(node, "end_lineno", None) or getattr(node, "lineno", None) or 1
    return int(end)


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


class CodeSet:
    """A set of code objects by *identity*.

    ``CodeType.__eq__`` ignores the file name, so a plain set would treat an
    identical function in another module as the same code (and, say, refuse
    a patch because an unrelated thread runs that twin).
    """

    __slots__ = ("_codes",)

    def __init__(self, codes: Iterable[types.CodeType] = ()) -> None:
        self._codes: dict[int, types.CodeType] = {id(c): c for c in codes}  # values keep ids valid

    def add(self, code: types.CodeType) -> None:
        self._codes[id(code)] = code

    def update(self, codes: Iterable[types.CodeType]) -> None:
        for c in codes:
            self._codes[id(c)] = c

    def discard(self, code: types.CodeType) -> None:
        self._codes.pop(id(code), None)

    def __contains__(self, code: object) -> bool:
        return self._codes.get(id(code)) is code

    def __iter__(self) -> Iterator[types.CodeType]:
        return iter(list(self._codes.values()))

    def __len__(self) -> int:
        return len(self._codes)


def strip_lines(code: types.CodeType) -> types.CodeType:
    """``code`` with line information removed, recursively: compares semantics only."""
    consts = tuple(strip_lines(k) if isinstance(k, types.CodeType) else k for k in code.co_consts)
    return code.replace(co_firstlineno=1, co_linetable=b"", co_consts=consts)


def same_semantics(a: types.CodeType, b: types.CodeType) -> bool:
    """True when the two code objects differ at most in line numbers."""
    return a == b or strip_lines(a) == strip_lines(b)
