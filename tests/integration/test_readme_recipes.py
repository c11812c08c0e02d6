"""The README's service recipes are commands that work on the examples, and the service tests run them.

A user copies these lines: each must name files that exist in its example,
a check that exists, and be the command some service test starts (the test
reads it from the README, or spells every word of it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES

from .service_helpers import readme_recipe, readme_recipes

HERE = Path(__file__).resolve().parent
#: Every service the README has a recipe for (issue 14: Django/gunicorn, FastAPI/uvicorn and
#: gunicorn, Celery, a plain executor service).
EXPECTED = {"django_service gunicorn", "wsgi_service gunicorn", "asgi_service uvicorn", "asgi_service gunicorn",
            "celery_service celery", "executor_service python"}


def _app_module(recipe) -> str:
    """The module a recipe's server loads: ``wsgi`` for ``wsgi:application``, ``tasks`` for ``-A tasks``."""
    command = recipe.command
    if command[0] == "celery":
        return command[command.index("-A") + 1]
    if command[0] == "python":
        return Path(command[1]).stem
    return command[-1].split(":")[0]


def test_every_service_has_a_recipe():
    assert set(readme_recipes()) == EXPECTED


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_a_recipe_names_what_its_example_has(key):
    recipe = readme_recipe(*key.split())
    example = EXAMPLES / recipe.example
    assert example.is_dir(), example
    assert (example / f"{_app_module(recipe)}.py").is_file(), (key, recipe.command)
    if recipe.command[0] in ("gunicorn", "uvicorn"):
        module, _, attr = recipe.command[-1].partition(":")
        tree = ast.parse((example / f"{module}.py").read_text())
        names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)}
        names |= {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
        assert attr in names, f"{module}.py defines no {attr}"
    checks = [recipe.run_options[i + 1] for i, o in enumerate(recipe.run_options) if o == "--check"]
    assert checks, f"{key}: the recipe runs no check"
    for spec in checks:
        target, _, fn = spec.partition("=")[2].partition(":")
        patched = spec.partition("=")[0]
        assert (example / f"{patched}.py").is_file(), spec
        path = example / f"{target}.py"
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == fn for n in tree.body), spec
    for name in recipe.env:
        assert name in (example / f"{_app_module(recipe)}.py").read_text(), f"{key}: the app never reads {name}"


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_a_service_test_runs_the_recipe(key):
    recipe = readme_recipe(*key.split())
    example, program = key.split()
    call = f'readme_recipe("{example}", "{program}")'
    shared = (HERE / "service_helpers.py").read_text()  # greeting_hotfix_run(): the shared --check
    tests = {path.name: path.read_text() + shared for path in HERE.glob("test_service_*.py")}
    if any(call in text for text in tests.values()):
        return
    # or a test that spells each word of the command (extras aside), for the example it copies
    words = [w for w in recipe.command if w != "python"]
    spelled = [name for name, text in tests.items()
               if f'"{example}"' in text and all(f'"{w}"' in text for w in words)
               and all(f'"{o}"' in text for o in recipe.run_options)]
    assert spelled, f"no service test runs the README recipe for {key}: {recipe.command}"
