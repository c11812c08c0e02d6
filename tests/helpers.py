"""Shared test helpers (a module, not conftest): module factory, process-state snapshots, paths."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import uuid
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
EXAMPLES = REPO / "examples"


class ModuleFactory:
    """Writes sources under tmp_path, imports them under unique names, rewrites them."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / f"mods_{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self.names: list[str] = []

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.py"

    def create(self, source: str, *, prefix: str = "hfmod", name: str | None = None):
        name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.path(name).write_text(textwrap.dedent(source))
        return self.load(name)

    def load(self, name: str):
        sys.path.insert(0, str(self.dir))
        try:
            importlib.invalidate_caches()
            module = importlib.import_module(name)
        finally:
            sys.path.remove(str(self.dir))
        self.names.append(name)
        return module

    def write(self, module, source: str, *, keep_stat: bool = False) -> Path:
        """Rewrite a module's file; keep_stat restores the old mtime (same-size edits)."""
        path = Path(module.__file__)
        st = path.stat()
        path.write_text(textwrap.dedent(source))
        if keep_stat:
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return path

    def cleanup(self) -> None:
        for name in self.names:
            sys.modules.pop(name, None)


def fixture_source(name: str) -> str:
    return (FIXTURES / name).read_text()


def snapshot(module) -> dict:
    """Everything a failed patch must leave untouched: namespace values, code objects, class dicts."""
    state = {"sys.modules": sys.modules.get(module.__name__), "ns": dict(vars(module))}
    codes = {}
    classes = {}
    for key, value in vars(module).items():
        if callable(value) and hasattr(value, "__code__"):
            codes[key] = (value.__code__, value.__defaults__, value.__kwdefaults__, dict(value.__annotations__))
        if isinstance(value, type) and value.__module__ == module.__name__:
            classes[key] = dict(vars(value))
            for mname, member in vars(value).items():
                fn = getattr(member, "__func__", member)
                if hasattr(fn, "__code__"):
                    codes[f"{key}.{mname}"] = (fn.__code__, fn.__defaults__, fn.__kwdefaults__, dict(fn.__annotations__))
    state["codes"] = codes
    state["classes"] = classes
    return state


def assert_same(before: dict, after: dict) -> None:
    assert after["sys.modules"] is before["sys.modules"]
    assert after["ns"].keys() == before["ns"].keys()
    for key, value in before["ns"].items():
        assert after["ns"][key] is value, key
    assert after["codes"].keys() == before["codes"].keys()
    for key, (code, defaults, kwdefaults, annots) in before["codes"].items():
        now = after["codes"][key]
        assert now[0] is code, key
        assert now[1] is defaults, key
        assert now[2] is kwdefaults, key
        assert now[3] == annots, key
    assert after["classes"].keys() == before["classes"].keys()
    for key, members in before["classes"].items():
        assert after["classes"][key].keys() == members.keys(), key
        for m, v in members.items():
            assert after["classes"][key][m] is v, (key, m)
