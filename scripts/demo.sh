#!/usr/bin/env bash
# Set up a virtualenv and run the end-to-end demo service.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV=".venv-$VER"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e .
exec "$VENV/bin/python" examples/demo.py "$@"
