"""This layer runs with ``hotfix.install()`` in effect (baselines for modules the tests import)."""

import hotfix

hotfix.install()
