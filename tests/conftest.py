"""Fixtures for every layer. Helpers live in ``tests/helpers.py``; nothing here installs hotfix.

``tests/safepoints`` and ``tests/verification`` run without ``hotfix`` imported
(``scripts/test.sh`` runs them in their own pytest process); ``tests/hotfix``
and ``tests/integration`` call ``hotfix.install()`` in their conftest.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.helpers import ModuleFactory


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No test sees an operator's HOTFIX_* settings."""
    for name in list(os.environ):
        if name.startswith("HOTFIX_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def short_dir():
    """Directories under /tmp (Unix socket paths must stay short), removed afterwards."""
    made = []

    def make(prefix: str = "hf-") -> str:
        made.append(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
        return made[-1]

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def modules(tmp_path):
    factory = ModuleFactory(tmp_path)
    yield factory
    factory.cleanup()
