"""Seeded differential test: random edit sequences, hot-patched vs fresh import."""

from __future__ import annotations

import random

import pytest

import hotfix


class Source:
    """A generated module: constants, functions (some calling others), a class with methods."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.consts = {f"K{i}": rng.randint(0, 9) for i in range(3)}
        self.funcs = {f"f{i}": rng.randint(0, 9) for i in range(4)}
        self.methods = {f"m{i}": rng.randint(0, 9) for i in range(3)}
        self.next_id = 10

    def render(self) -> str:
        lines = ["STATE = {'calls': 0}", ""]
        lines += [f"{k} = {v}" for k, v in self.consts.items()]
        lines.append("")
        const_names = list(self.consts) or ["0"]
        for i, (name, v) in enumerate(self.funcs.items()):
            other = const_names[i % len(const_names)]
            lines += [f"def {name}(x):", "    STATE['calls'] += 1", f"    return x * {v} + {other}", ""]
        lines += ["class Box:", "    def __init__(self, v):", "        self.v = v", ""]
        for name, v in self.methods.items():
            lines += [f"    def {name}(self):", f"        return self.v + {v}", ""]
        return "\n".join(lines) + "\n"

    def edit(self) -> str:
        choices = ["body", "const", "add_func", "remove_func", "add_method", "remove_method", "method_body"]
        kind = self.rng.choice(choices)
        if kind == "body" and self.funcs:
            self.funcs[self.rng.choice(list(self.funcs))] = self.rng.randint(10, 99)
        elif kind == "const" and self.consts:
            self.consts[self.rng.choice(list(self.consts))] = self.rng.randint(10, 99)
        elif kind == "add_func":
            self.funcs[f"f{self.next_id}"] = self.rng.randint(0, 9)
            self.next_id += 1
        elif kind == "remove_func" and len(self.funcs) > 1:
            del self.funcs[self.rng.choice(list(self.funcs))]
        elif kind == "add_method":
            self.methods[f"m{self.next_id}"] = self.rng.randint(0, 9)
            self.next_id += 1
        elif kind == "remove_method" and len(self.methods) > 1:
            del self.methods[self.rng.choice(list(self.methods))]
        elif kind == "method_body" and self.methods:
            self.methods[self.rng.choice(list(self.methods))] = self.rng.randint(10, 99)
        return kind


def behaviour(module, box) -> dict:
    out = {}
    for name, value in sorted(vars(module).items()):
        if name.startswith("f") and callable(value):
            out[name] = value(3)
        elif name.startswith("K"):
            out[name] = value
    for name in sorted(vars(module.Box)):
        if name.startswith("m"):
            out[f"Box.{name}"] = getattr(box, name)()
    return out


def fresh_behaviour(modules, source: str) -> dict:
    fresh = modules.create(source, prefix="hffresh")
    return behaviour(fresh, fresh.Box(5))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_edit_sequences_match_a_fresh_import(modules, seed):
    rng = random.Random(seed)
    src = Source(rng)
    text = src.render()
    m = modules.create(text)
    box = m.Box(5)  # an instance that lives through every patch
    box_class = m.Box
    state = m.STATE
    history = [text]
    for step in range(25):
        kind = src.edit()
        text = src.render()
        modules.write(m, text)
        patch = hotfix.apply(m, probation=0, allow_risky=True)
        assert patch.status in ("applied", "unchanged"), (step, kind)
        assert behaviour(m, box) == fresh_behaviour(modules, text), (seed, step, kind)
        assert m.Box is box_class and m.STATE is state  # identity and module state kept
        if rng.random() < 0.3 and patch.status == "applied":
            hotfix.rollback(patch.id)
            assert behaviour(m, box) == fresh_behaviour(modules, history[-1]), (seed, step, "rollback")
            hotfix.apply(m, probation=0, allow_risky=True)  # and forward again
            assert behaviour(m, box) == fresh_behaviour(modules, text)
        history.append(text)
