"""``python -m hotfix``: the same as the ``hotfix`` command."""

from ._cli import main

raise SystemExit(main())
