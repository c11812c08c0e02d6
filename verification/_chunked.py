"""Parsing a large module in small pieces, so that other threads keep running.

``ast.parse`` is one call into C that holds the GIL from start to end:
about 35 ms for a 4,000-line module, during which no other thread runs,
whatever the switch interval. When the module's compiled code is known
(kept at import), it tells where the top-level definitions start; each
such line begins a top-level statement, so the text can be cut there and
each piece parsed on its own, padded with blank lines so that every node
carries its true line number (the tokenizer skips blank lines at ~10 ns
each). The result equals ``ast.parse`` of the whole text; anything unusual
(a piece that does not parse on its own) falls back to one full parse.

Between pieces other threads may run: a caller that wants its thread to
give way sets a ``between`` callback for that thread (``yielding``). It is
called after each parsed piece and at every ``give_way()`` point: the long
loops of a verification (per definition compared, per module walked, per
code object rebased) call ``give_way()``, so that a thread verifying a
change under ``yielding`` can stop every fraction of a millisecond and let
waiting threads have the GIL (``hotfix._latency`` decides how: the
callback sees how long the thread has worked since it last gave way). With
no callback set, ``give_way()`` is one thread-local look-up.

``prebuild_model`` builds and caches the model of a running version that
way, for a background thread: the first dry run then finds it built.
"""

from __future__ import annotations
import __future__

import ast
import functools
import operator
import re
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._model import ModuleModel

#: A piece is cut at the first definition after this many lines: parsing it takes ~0.3 ms.
LINES_PER_PIECE = 150
_STARTS = ("def ", "async ", "class ", "@")


def definition_lines(text_lines: list[str], code: types.CodeType) -> list[int]:
    """Sorted 1-based lines where a top-level definition of ``code`` begins, at column 0."""
    starts = set()
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and "<" not in const.co_qualname and "." not in const.co_qualname:
            line = const.co_firstlineno
            if 1 < line <= len(text_lines) and text_lines[line - 1].startswith(_STARTS):
                starts.add(line)
    return sorted(starts)


_local = threading.local()


@contextmanager
def yielding(between: Callable[[], None]) -> Iterator[None]:
    """In this thread, call ``between()`` at every ``give_way()`` point (and after each parsed piece)."""
    previous = getattr(_local, "between", None)
    _local.between = between
    try:
        yield
    finally:
        _local.between = previous


def give_way() -> None:
    """A point where a long computation may let other threads run: calls this thread's ``between``, if any."""
    between = getattr(_local, "between", None)
    if between is not None:
        between()


_T = TypeVar("_T")


def paced(items: Iterable[_T], every: int = 32) -> Iterator[_T]:
    """``items``, with a ``give_way()`` point every ``every`` items (for loops of cheap steps)."""
    for i, item in enumerate(items):
        if not i % every:
            give_way()
        yield item


def prebuild_model(text: str, path: str, sha256: str, code: types.CodeType) -> bool:
    """Build and cache the model of the version ``text`` (compiled as ``code``); False if already cached."""
    from ._model import cached_model, peek_model

    if peek_model(path, sha256) is not None:
        return False
    cached_model(text, path, sha256, code=code)
    return True


def parse_in_pieces(text: str, path: str, code: types.CodeType) -> ast.Module:
    """``ast.parse(text, filename=path)``, done a few hundred lines at a time (see the module docstring).

    ``code``: the module code compiled from exactly ``text``.
    """
    lines = text.splitlines(keepends=True)
    cuts = []
    last = 1
    for line in definition_lines(lines, code):
        if line - last >= LINES_PER_PIECE:
            cuts.append(line)
            last = line
    if not cuts:
        return ast.parse(text, filename=path)
    bounds = [1, *cuts, len(lines) + 1]
    body: list[ast.stmt] = []
    try:
        for start, stop in zip(bounds, bounds[1:], strict=False):
            piece = "\n" * (start - 1) + "".join(lines[start - 1 : stop - 1])
            body.extend(ast.parse(piece, filename=path).body)
            give_way()
    except (SyntaxError, ValueError):
        return ast.parse(text, filename=path)  # a cut was not a statement boundary after all
    return ast.Module(body=body, type_ignores=[])


# --------------------------------------------------------------------------- compiling around an edit

_FUTURE_FLAGS = functools.reduce(operator.or_, (getattr(__future__, f).compiler_flag for f in __future__.all_feature_names))
#: statements whose meaning depends on the rest of the module: compile it all when the edit has one
_MODULE_WIDE = re.compile(r"^\s*(global|nonlocal)\b|__future__", re.MULTILINE)


def compile_around(previous: ModuleModel, new_lines: list[str], path: str, head: int, tail: int,
                   start: int, stop: int, delta: int) -> types.CodeType | None:
    """The code objects of the new version, compiling only the edited region; ``None``: compile it all.

    ``compile()`` of a whole module is one call into C that holds the GIL
    (~25 ms for 1,000 functions): nothing else runs meanwhile. A hot fix
    changes a few lines, so: the previous version's top-level entries before
    the edit (``entries[:head]``) keep their code objects, those after it
    (``entries[tail:]``) keep theirs moved by ``delta`` lines (``co_firstlineno``
    of the code and everything nested in it: line tables are relative to it),
    and only new lines ``start..stop`` are compiled, padded with blank lines
    so that their line numbers are right. A class body after the edit is
    compiled again on 3.13+ (it stores its first line as a constant).

    The result holds every top-level code object of the new version as a
    constant, so ``iter_code_tree`` finds each definition exactly as compiling
    the whole file would have made it (tests compare the two). It is an
    index, not a runnable module body: executing it does nothing.
    """
    import bisect  # here: not loaded by install()

    from ._model import first_line

    entries = previous.scope.entries
    middle = "".join(new_lines[start - 1 : stop]) if stop >= start else ""
    if _MODULE_WIDE.search(middle):
        return None
    flags = previous.code.co_flags & _FUTURE_FLAGS
    spans = [(first_line(e.node) + e.offset, (e.node.end_lineno or e.node.lineno) + e.offset) for e in paced(entries, 64)]
    top = sorted((c for c in previous.code.co_consts if isinstance(c, types.CodeType)), key=lambda c: c.co_firstlineno)
    give_way()
    lines = [c.co_firstlineno for c in top]
    codes: list[types.CodeType] = []
    head_end = spans[head - 1][1] if head > 0 else 0
    codes.extend(top[: bisect.bisect_right(lines, head_end)])
    try:
        if middle:
            fresh = compile("\n" * (start - 1) + middle, path, "exec", flags=flags, dont_inherit=True)
            codes.extend(c for c in fresh.co_consts if isinstance(c, types.CodeType))
        for a, b in spans[tail:]:
            give_way()
            inside = top[bisect.bisect_left(lines, a) : bisect.bisect_right(lines, b)]
            if not inside or not delta:
                codes.extend(inside)
            elif any("__firstlineno__" in k.co_names for c in inside for k in _tree(c)):
                piece = "\n" * (a + delta - 1) + "".join(new_lines[a + delta - 1 : b + delta])
                again = compile(piece, path, "exec", flags=flags, dont_inherit=True)
                codes.extend(c for c in again.co_consts if isinstance(c, types.CodeType))
            else:
                codes.extend(_shift(c, delta) for c in inside)
    except (SyntaxError, ValueError):
        return None  # the region was not a run of whole statements after all: let a full compile decide
    index = compile("", path, "exec", flags=flags, dont_inherit=True)
    return index.replace(co_consts=(*index.co_consts, *codes))


def _tree(code: types.CodeType) -> Iterator[types.CodeType]:
    stack = [code]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))


def _shift(code: types.CodeType, delta: int) -> types.CodeType:
    consts = tuple(_shift(k, delta) if isinstance(k, types.CodeType) else k for k in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + delta, co_consts=consts)
