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
# mypy (config in pyproject.toml). Gating: the modules listed here must be clean. The whole run over
# hotfix, safepoints and verification is printed but does not fail the build yet; to make it gate,
# replace the two mypy lines by:  "$VENV/bin/python" -m mypy
MYPY_GATED="hotfix/_transaction.py hotfix/_probation.py hotfix/_audit.py hotfix/_events.py hotfix/_outcomes.py
  hotfix/_exceptions.py hotfix/_records.py hotfix/_cli.py hotfix/admin/_audit.py hotfix/admin/_router.py
  safepoints/_core.py"
echo "== mypy (gating: the transaction core and its outcome mapping)"
# shellcheck disable=SC2086
"$VENV/bin/python" -m mypy --follow-imports=silent $MYPY_GATED
echo "== mypy (all three packages; not gating yet)"
"$VENV/bin/python" -m mypy || echo "== mypy: the errors above are outside the gated modules (not gating yet)"
echo "== import-linter (layering contracts in pyproject.toml)"
"$VENV/bin/lint-imports" --no-cache
# safepoints and verification are tested on their own, in a process that never imports hotfix.
echo "== pytest: safepoints, verification (without hotfix)"
"$VENV/bin/python" -m pytest -n auto -q tests/safepoints tests/verification
echo "== pytest: hotfix, integration"
"$VENV/bin/python" -m pytest -n auto -q tests/hotfix tests/integration
