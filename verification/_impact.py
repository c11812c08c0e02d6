"""Runtime impact of a change: who is running, holding or caching what changes.

Cheap parts (thread stacks, ``sys.modules`` namespaces, hooks, caches) are
always computed. Heap scans (suspended generators, live instance counts)
cost time proportional to the heap, so they run only for an explicit dry
run or when a finding depends on them (a class layout change), never on the
ordinary apply path: apply time must not grow with the heap.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
from collections.abc import Iterable

import attrs

from ._chunked import paced
from ._model import CodeSet


@attrs.frozen
class ThreadImpact:
    """A thread whose stack holds code that would be replaced."""

    thread_id: int
    name: str
    state: str | None  # safepoints state for registered workers, None when not covered
    function: str
    where: str

    @property
    def covered(self) -> bool:
        return self.state is not None

    def describe(self) -> str:
        if self.covered:
            return (f"{self.name} ({self.state} worker) is in {self.function} at {self.where}; "
                    "that frame keeps running the old code until it returns")
        return (f"{self.name} is NOT COVERED (not a registered worker) and is in {self.function} at {self.where}; "
                "apply waits for it to leave, then rejects")


@attrs.frozen
class Dependent:
    """A module that imports the target, and what the patch does to it."""

    module: str
    names: tuple[str, ...]  # names it holds from the target ("*" for the module object itself)
    effect: str

    def to_dict(self) -> dict:
        return {"module": self.module, "names": list(self.names), "effect": self.effect}


@attrs.frozen
class Impact:
    threads: tuple[ThreadImpact, ...] = ()
    generators: tuple[tuple[str, int], ...] | None = None  # None: not scanned
    instances: tuple[tuple[str, int], ...] | None = None  # None: not counted
    hooks: tuple[str, ...] = ()
    caches: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "threads": [attrs.asdict(t) | {"covered": t.covered} for t in self.threads],
            "generators": None if self.generators is None else [{"qualname": q, "count": n} for q, n in self.generators],
            "instances": None if self.instances is None else [{"class": q, "count": n} for q, n in self.instances],
            "hooks": list(self.hooks),
            "caches": list(self.caches),
        }

    def lines(self) -> list[str]:
        out = [t.describe() for t in self.threads]
        for q, n in self.generators or ():
            out.append(f"{n} suspended generator/coroutine(s) in {q} keep the old code until they finish")
        for q, n in self.instances or ():
            out.append(f"{n} live instance(s) of {q}")
        out.extend(f"active hook: {h}" for h in self.hooks)
        out.extend(f"cache of {c} will be cleared" for c in self.caches)
        return out


def thread_impact(codes: CodeSet, states: dict[int, str] | None) -> tuple[ThreadImpact, ...]:
    if not codes:
        return ()
    states = states or {}
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    found = []
    for tid, frame in sys._current_frames().items():
        if tid == me:
            continue
        f: types.FrameType | None = frame
        while f is not None:
            if f.f_code in codes:
                found.append(ThreadImpact(tid, names.get(tid, str(tid)), states.get(tid), f.f_code.co_qualname,
                                          f"{f.f_code.co_filename}:{f.f_lineno}"))
                break
            f = f.f_back
    return tuple(found)


def suspended_generators(codes: CodeSet) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
            code = getattr(obj, "gi_code", None) or getattr(obj, "cr_code", None) or getattr(obj, "ag_code", None)
            frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
            if isinstance(code, types.CodeType) and code in codes and frame is not None:
                counts[code.co_qualname] = counts.get(code.co_qualname, 0) + 1
    return tuple(sorted(counts.items()))


def count_instances(classes: Iterable[type]) -> tuple[tuple[str, int], ...]:
    wanted = {id(c): c for c in classes}
    if not wanted:
        return ()
    counts = dict.fromkeys(wanted, 0)
    for obj in gc.get_objects():
        k = id(type(obj))
        if k in counts:
            counts[k] += 1
    return tuple((wanted[k].__qualname__, n) for k, n in counts.items())


def active_hooks() -> tuple[str, ...]:
    hooks = []
    if sys.gettrace() is not None:
        hooks.append(f"sys.settrace: {sys.gettrace()!r}")
    if sys.getprofile() is not None:
        hooks.append(f"sys.setprofile: {sys.getprofile()!r}")
    if threading.gettrace() is not None:
        hooks.append(f"threading.settrace: {threading.gettrace()!r}")
    if threading.getprofile() is not None:
        hooks.append(f"threading.setprofile: {threading.getprofile()!r}")
    mon = getattr(sys, "monitoring", None)
    if mon is not None:
        for tool in range(6):
            name = mon.get_tool(tool)
            if name is not None:
                hooks.append(f"sys.monitoring tool {tool}: {name}")
    return tuple(hooks)


def dependents(module: types.ModuleType, changed: dict[str, str]) -> tuple[Dependent, ...]:
    """Modules in ``sys.modules`` holding the target or objects defined in it.

    ``changed`` maps the target's top-level names to what the patch does to
    them ("code", "value", "removed"). Cost: one pass over every loaded
    module's namespace, no source parsing.
    """
    name = module.__name__
    own = {id(v): k for k, v in vars(module).items()
           if not k.startswith("__") and getattr(v, "__module__", None) == name}
    values = {id(vars(module)[k]): k for k, what in changed.items() if what == "value" and k in vars(module)}
    interesting = set(own) | set(values) | {id(module)}
    out = []
    for other_name, other in paced(list(sys.modules.items()), 16):
        ns = getattr(other, "__dict__", None)
        if other is module or not isinstance(ns, dict):
            continue
        if interesting.isdisjoint(map(id, list(ns.values()))):  # C-speed filter: most modules hold nothing of ours
            continue
        held: list[str] = []
        effects: set[str] = set()
        for k, v in list(ns.items()):
            if v is module:
                held.append("*")
                effects.add("holds the module object: sees every change")
            elif id(v) in own or (id(v) in values and values[id(v)] == k):
                src = own.get(id(v)) or values.get(id(v)) or k
                held.append(k if k == src else f"{k} (= {src})")
                what = changed.get(src)
                if what == "code":
                    effects.add("shares changed functions/classes by identity: sees the new code")
                elif what == "value":
                    effects.add(f"{k} is re-bound to the new value")
                elif what == "removed":
                    effects.add(f"keeps {k}, which the new source removed")
                else:
                    effects.add("shares unchanged objects")
        if held:
            out.append(Dependent(other_name, tuple(held), "; ".join(sorted(effects))))
    return tuple(out)
