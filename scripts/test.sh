#!/usr/bin/env bash
# Set up a virtualenv for one Python and run every check: ruff, then the tests by layer.
# Usage: bash scripts/test.sh [PYTHON]   (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV=".venv-$VER"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
echo "== Python $("$VENV/bin/python" -V 2>&1): ruff"
"$VENV/bin/python" -m ruff check .
# mypy over hotfix, safepoints and verification (config in pyproject.toml: check_untyped_defs, 3.11).
echo "== mypy"
"$VENV/bin/python" -m mypy
echo "== import-linter (layering contracts in pyproject.toml)"
"$VENV/bin/lint-imports" --no-cache
# safepoints and verification are tested on their own, in a process that never imports hotfix.
echo "== pytest: safepoints, verification (without hotfix)"
"$VENV/bin/python" -m pytest -n auto -q tests/safepoints tests/verification
echo "== pytest: hotfix, integration"
"$VENV/bin/python" -m pytest -n auto -q tests/hotfix tests/integration
