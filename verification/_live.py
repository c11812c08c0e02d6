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
        except Exception:  # a hostile __getattr__ must not break analysis
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


# --------------------------------------------------------------------------- the module's reachable graph

#: Bounds of the walk from a module's namespace (it grows with what the module reaches, never the heap).
MAX_WALK_OBJECTS = 50_000
MAX_WALK_DEPTH = 8
MAX_CONTAINER_ITEMS = 5_000
_LEAVES = (int, float, complex, str, bytes, bytearray, bool, type(None), range, types.ModuleType,
           types.BuiltinFunctionType, types.CodeType, types.FrameType)


class LiveIndex:
    """Every function of one module reachable from its namespace, by code object, and where each is held.

    Reached the way a fresh import's objects are reached by the program:
    names, class members, wrappers (closures, ``__wrapped__``, ``__func__``,
    ``fget``, ``func``), containers (dicts, lists, tuples, sets, mapping
    proxies) and instances' ``__dict__``. Modules other than this one and
    classes defined elsewhere are not entered. ``complete`` is False when a
    bound was hit (a registry larger than the bounds may hide holders).
    """

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.g = module.__dict__
        self.by_code: dict[int, list[types.FunctionType]] = {}
        self.paths: dict[int, list[str]] = {}
        self.instances: dict[int, list[object]] = {}  # id(class of this module) -> its reachable instances
        self._keep: list[object] = []  # the ids above stay valid while the index lives
        self.complete = True
        self._walk()

    def functions(self, code: types.CodeType) -> list[types.FunctionType]:
        """Live functions of this module running ``code`` (by identity, else by equal code)."""
        found = self.by_code.get(id(code))
        if found:
            return list(found)
        return [f for fs in self.by_code.values() for f in fs if f.__code__ == code]

    def holders(self, obj: object) -> list[str]:
        """Where ``obj`` was found (``name``, ``Class.attr``, ``registry['key']``...)."""
        return list(self.paths.get(id(obj), ()))

    def all_functions(self) -> Iterator[types.FunctionType]:
        for fs in self.by_code.values():
            yield from fs

    def _walk(self) -> None:
        owner = self.module.__name__
        seen: set[int] = set()
        queue: list[tuple[object, str, int]] = [(v, k, 0) for k, v in list(self.g.items()) if not k.startswith("__")]
        head = 0
        while head < len(queue):
            obj, path, depth = queue[head]
            head += 1
            if isinstance(obj, _LEAVES):
                continue
            paths = self.paths.setdefault(id(obj), [])
            if len(paths) < 8:
                paths.append(path)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            self._keep.append(obj)
            if len(seen) > MAX_WALK_OBJECTS:
                self.complete = False
                return
            if depth >= MAX_WALK_DEPTH:
                self.complete = False
                continue
            d = depth + 1
            if isinstance(obj, types.FunctionType):
                if obj.__globals__ is self.g:
                    self.by_code.setdefault(id(obj.__code__), []).append(obj)
                    self._keep.append(obj.__code__)
                for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
                    if _cell_has(cell):
                        queue.append((cell.cell_contents, f"{path}.<closure {name}>", d))
                queue.extend((v, f"{path}.{k}", d) for k, v in list(vars(obj).items()))
            elif isinstance(obj, staticmethod | classmethod | types.MethodType):
                queue.append((obj.__func__, path, d))
            elif isinstance(obj, property):
                queue.extend((f, path, d) for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
            elif isinstance(obj, type):
                if obj.__module__ == owner:
                    queue.extend((v, f"{path}.{k}", d) for k, v in list(vars(obj).items())
                                 if k not in ("__dict__", "__weakref__", "__module__", "__doc__"))
            elif isinstance(obj, dict | types.MappingProxyType):
                items = list(obj.items())
                if len(items) > MAX_CONTAINER_ITEMS:
                    self.complete = False
                queue.extend((v, f"{path}[{k!r}]", d) for k, v in items[:MAX_CONTAINER_ITEMS])
            elif isinstance(obj, list | tuple | set | frozenset):
                items = list(obj)
                if len(items) > MAX_CONTAINER_ITEMS:
                    self.complete = False
                queue.extend((v, f"{path}[{i}]", d) for i, v in enumerate(items[:MAX_CONTAINER_ITEMS]))
            else:
                func = getattr(obj, "func", None) if type(obj).__name__ in ("partial", "cached_property") else None
                if func is not None:
                    queue.append((func, path, d))
                try:
                    attrs = vars(obj)
                except TypeError:
                    continue  # no __dict__ (slots, builtins): nothing we can see
                if type(obj).__module__ == owner:
                    self.instances.setdefault(id(type(obj)), []).append(obj)
                if isinstance(attrs, dict):
                    queue.extend((v, f"{path}.{k}", d) for k, v in list(attrs.items()))
