"""The incremental parse must give exactly the model a full parse gives."""

from __future__ import annotations

import ast
import random

import pytest

from verification._model import (
    ClassDef,
    FunctionDef,
    Statement,
    build_model,
    build_model_incremental,
    first_line,
)

BLOCKS = [
    "import os\n",
    "X = 1\n",
    "Y = [\n    1,\n    2,\n]\n",
    "# a comment\n",
    "\n",
    "def f(a, b=2):\n    return a + b\n",
    "@staticmethod\ndef g():\n    '''doc\n    spanning'''\n    return 3\n",
    "class C:\n    K = 1\n\n    def m(self):\n        return self.K\n\n    @property\n    def p(self):\n        return 2\n",
    "S = '''text\nthat spans\nlines'''\n",
    "if X:\n    def h():\n        return 4\n",
    "def outer():\n    def inner():\n        return 5\n    return inner\n",
    "T = (1 +\n     2)\n",
    "async def co():\n    return 6\n",
]


def shape(model) -> list:
    def walk(entries, out):
        for e in entries:
            line = first_line(e.node) + e.offset
            end = e.node.end_lineno + e.offset
            if isinstance(e, Statement):
                out.append(("stmt", e.dump, sorted(e.names), line, end, e.is_docstring))
            elif isinstance(e, FunctionDef):
                out.append(("def", e.key, line, end, e.code))
            elif isinstance(e, ClassDef):
                inner: list = []
                walk(e.body.entries, inner)
                out.append(("class", e.key, line, end, e.code, inner))
        return out

    return walk(model.scope.entries, [])


def edit(rng: random.Random, blocks: list[str]) -> list[str]:
    blocks = list(blocks)
    i = rng.randrange(len(blocks))
    kind = rng.choice(["replace", "insert", "delete", "tweak", "blank"])
    if kind == "replace":
        blocks[i] = rng.choice(BLOCKS)
    elif kind == "insert":
        blocks.insert(i, rng.choice(BLOCKS))
    elif kind == "delete" and len(blocks) > 1:
        del blocks[i]
    elif kind == "tweak":
        blocks[i] = blocks[i].replace("1", str(rng.randint(2, 99)), 1).replace("return", "return 0 or", 1)
    else:
        blocks.insert(i, "\n\n")
    return blocks


@pytest.mark.parametrize("seed", range(12))
def test_incremental_model_equals_full_parse(seed):
    rng = random.Random(seed)
    blocks = [rng.choice(BLOCKS) for _ in range(12)]
    previous = build_model("".join(blocks), "m.py")
    incremental_used = 0
    for _ in range(40):
        blocks = edit(rng, blocks)
        text = "".join(blocks)
        try:
            full = build_model(text, "m.py")
        except SyntaxError:
            continue  # random splices can make invalid code; both paths must refuse it
        model = build_model_incremental(text, "m.py", previous)
        incremental_used += model.incremental
        assert shape(model) == shape(full)
        for e in model.scope.entries:
            assert model.segment(e) == full.segment(next(x for x in full.scope.entries if x.node.lineno == e.node.lineno + e.offset))
            assert ast.dump(e.located, include_attributes=True) == ast.dump(
                next(x for x in full.scope.entries if x.node.lineno == e.node.lineno + e.offset).node, include_attributes=True)
        # the other direction, as the first dry run does it: the running version derived from the
        # new one, with the code object kept at import instead of a compile
        back_text = "".join(previous.lines)
        back = build_model_incremental(back_text, "m.py", model, compile(back_text, "m.py", "exec", dont_inherit=True))
        assert shape(back) == shape(build_model(back_text, "m.py"))
        previous = model  # chains of incremental models, offsets accumulating
    assert incremental_used > 10


def test_invalid_new_text_raises_like_a_full_parse():
    previous = build_model("def f():\n    return 1\n", "m.py")
    with pytest.raises(SyntaxError):
        build_model_incremental("def f(:\n    return 1\n", "m.py", previous)


def test_edit_inside_a_compound_statement_extends_it():
    old = "def f():\n    return 1\n\ndef g():\n    return 2\n"
    new = "def f():\n    x = 1\n    return x\n\ndef g():\n    return 2\n"
    previous = build_model(old, "m.py")
    assert shape(build_model_incremental(new, "m.py", previous)) == shape(build_model(new, "m.py"))
