"""Finding the live function objects behind a module's definitions.

We never scan the heap: a definition's live functions are reached from the
module namespace (or a class ``__dict__``) through the ways Python wraps a
function: ``__wrapped__`` (functools.wraps, lru_cache), ``__func__``
(staticmethod, classmethod, bound methods), ``fget/fset/fdel`` (property),
``func`` (functools.partial) and closure cells (decorators without wraps).
The cost grows with the size of the module, not of the heap.
"""

from __future__ import annotations

import types
from collections.abc import Iterator

MAX_UNWRAP_DEPTH = 8


def unwrap_functions(value: object) -> Iterator[types.FunctionType]:
    """Every plain function reachable from ``value`` through wrapper links."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen or depth > MAX_UNWRAP_DEPTH:
            continue
        seen.add(id(obj))
        links: list[object] = []
        if isinstance(obj, types.FunctionType):
            yield obj
            links.extend(c.cell_contents for c in (obj.__closure__ or ()) if _cell_has(c))
        elif isinstance(obj, staticmethod | classmethod | types.MethodType):
            links.append(obj.__func__)
        elif isinstance(obj, property):
            links.extend((obj.fget, obj.fset, obj.fdel))
        try:
            wrapped = getattr(obj, "__wrapped__", None) if not isinstance(obj, type) else None
        except Exception:  # noqa: BLE001 - a hostile __getattr__ must not break analysis
            wrapped = None
        if wrapped is not None:
            links.append(wrapped)
        func = getattr(obj, "func", None) if type(obj).__name__ == "partial" else None
        if func is not None:
            links.append(func)
        stack.extend((link, depth + 1) for link in links if link is not None and _is_wrapper_like(link))


def _cell_has(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _is_wrapper_like(obj: object) -> bool:
    return callable(obj) or isinstance(obj, staticmethod | classmethod | property)


def functions_named(value: object, qualname: str) -> list[types.FunctionType]:
    return [f for f in unwrap_functions(value) if f.__code__.co_qualname == qualname]


def scope_dict(obj: object) -> dict:
    """The namespace of a module or class (read-only view for classes)."""
    return obj.__dict__ if isinstance(obj, types.ModuleType) else dict(vars(obj))
