"""Parsing in pieces and compiling only the edited region must give exactly what the whole file gives."""

from __future__ import annotations

import ast
import random
import sys

import pytest

from tests.verification.test_model_incremental import BLOCKS, edit
from verification import _chunked
from verification._model import _codes_by_position, build_model, build_model_incremental, peek_model

TAIL_BLOCKS = BLOCKS + [
    "class D:\n    '''doc'''\n    items = [i for i in range(3)]\n\n    def m(self, f=lambda: 1):\n"
    "        def inner():\n            return f\n        return inner\n",
    "V = sorted([lambda: 2, lambda: 3], key=id)\n",
]


def positions(code) -> dict:
    """Every definition's code object (not the module body) by (qualname, first line), with its locations."""
    codes = _codes_by_position(code)
    codes.pop(("<module>", 1), None)
    return {k: (c, list(c.co_positions()), c.co_linetable) for k, c in codes.items()}


@pytest.mark.parametrize("seed", range(8))
def test_parse_in_pieces_equals_ast_parse(seed, monkeypatch):
    monkeypatch.setattr(_chunked, "LINES_PER_PIECE", 3)  # many cuts even in a small text
    rng = random.Random(seed)
    text = "".join(rng.choice(TAIL_BLOCKS) for _ in range(30))
    code = compile(text, "m.py", "exec", dont_inherit=True)
    pieces = _chunked.parse_in_pieces(text, "m.py", code)
    assert ast.dump(pieces, include_attributes=True) == ast.dump(ast.parse(text, "m.py"), include_attributes=True)
    assert len(_chunked.definition_lines(text.splitlines(keepends=True), code)) > 3


def test_parse_in_pieces_ignores_definitions_that_are_not_at_the_top_level():
    text = 'S = """\ndef fake():\n    pass\n"""\nif S:\n    def h():\n        return 1\n' + "def g():\n    return 2\n" * 3
    code = compile(text, "m.py", "exec", dont_inherit=True)
    assert ast.dump(_chunked.parse_in_pieces(text, "m.py", code), include_attributes=True) == ast.dump(
        ast.parse(text, "m.py"), include_attributes=True)


@pytest.mark.parametrize("seed", range(10))
def test_compiling_the_edited_region_gives_the_code_objects_of_a_full_compile(seed):
    rng = random.Random(seed)
    blocks = [rng.choice(TAIL_BLOCKS) for _ in range(14)]
    previous = build_model("".join(blocks), "m.py")
    partial = 0
    for _ in range(30):
        blocks = edit(rng, blocks)
        text = "".join(blocks)
        try:
            full = compile(text, "m.py", "exec", dont_inherit=True)
        except SyntaxError:
            with pytest.raises(SyntaxError):
                build_model_incremental(text, "m.py", previous)
            continue
        model = build_model_incremental(text, "m.py", previous)
        partial += model.code is not full and model.code.co_code != full.co_code
        assert positions(model.code) == positions(full)
        assert model.code.co_flags == full.co_flags
        previous = model  # chains: a model built from a partial compile is the base of the next one
    assert partial > 10


def test_a_syntax_error_in_the_edited_region_is_reported_at_its_line():
    old = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(20))
    new = old.replace("    return 7\n", "    return (7\n")
    with pytest.raises(SyntaxError) as info:
        build_model_incremental(new, "m.py", build_model(old, "m.py"))
    assert info.value.lineno == compile_error_line(new)


def compile_error_line(text: str) -> int:
    try:
        compile(text, "m.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return exc.lineno
    raise AssertionError("expected a syntax error")


@pytest.mark.parametrize("added", ["from __future__ import annotations\n", "global X\n"])
def test_module_wide_statements_make_it_compile_everything(added):
    old = "X = 1\n\ndef f():\n    return 1\n"
    previous = build_model(old, "m.py")
    new = added + old
    lines = new.splitlines(keepends=True)
    assert _chunked.compile_around(previous, lines, "m.py", 0, len(previous.scope.entries), 1, len(lines), 1) is None
    model = build_model_incremental(new, "m.py", previous)
    assert positions(model.code) == positions(compile(new, "m.py", "exec", dont_inherit=True))


def test_the_index_of_code_objects_runs_nothing():
    old = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(5))
    model = build_model_incremental(old.replace("return 3", "return 33"), "m.py", build_model(old, "m.py"))
    namespace: dict = {}
    assert exec(model.code, namespace) is None  # proving that it defines nothing
    assert not any(k.startswith("f") for k in namespace)


@pytest.mark.skipif(sys.version_info < (3, 13), reason="class bodies store __firstlineno__ from 3.13 on")
def test_a_class_after_the_edit_is_compiled_again_on_3_13():
    old = "def f():\n    return 1\n\nclass C:\n    def m(self):\n        return 2\n"
    new = old.replace("    return 1\n", "    x = 1\n    return x\n")
    model = build_model_incremental(new, "m.py", build_model(old, "m.py"))
    body = next(c for c in model.code.co_consts if getattr(c, "co_name", None) == "C")
    assert body.co_firstlineno == 5 and 5 in body.co_consts


def test_prebuild_model_caches_the_running_version_once(tmp_path):
    text = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(400))
    path = str(tmp_path / "m.py")
    code = compile(text, path, "exec", dont_inherit=True)
    calls = []
    with _chunked.yielding(lambda: calls.append(1)):
        assert _chunked.prebuild_model(text, path, "sha-of-m", code)
    model = peek_model(path, "sha-of-m")
    assert model is not None and model.code is code and len(calls) > 1
    assert not _chunked.prebuild_model(text, path, "sha-of-m", code)
    assert [e.key for e in model.scope.entries] == [e.key for e in build_model(text, path).scope.entries]
