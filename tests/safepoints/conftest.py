"""This layer runs without hotfix: it must not import it (its own pytest process, see scripts/test.sh)."""

import sys


def pytest_collection_finish(session):
    assert "hotfix" not in sys.modules, "the safepoints layer must not import hotfix"
