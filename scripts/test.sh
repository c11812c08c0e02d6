#!/usr/bin/env bash
# Set up a virtualenv for one Python and run the whole test suite in parallel.
# Usage: bash scripts/test.sh [PYTHON]   (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV=".venv-$VER"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
echo "== Python $("$VENV/bin/python" -V 2>&1): ruff + pytest -n auto"
"$VENV/bin/python" -m ruff check .
"$VENV/bin/python" -m pytest -n auto -q
