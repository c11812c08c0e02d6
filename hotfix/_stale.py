"""A module whose file on disk is not what runs (``hotfix._scope.staleness`` finds them).

Its own module so that ``install()``, which imports ``hotfix._scope``, does
not import ``attrs``.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class StaleModule:
    """A module whose file on disk is not what runs. ``problem`` names an unreadable file's error."""

    module: str
    path: str
    running_sha256: str
    disk_sha256: str | None
    problem: str | None = None
    disk_mtime_ns: int | None = None
    disk_size: int | None = None

    def to_dict(self) -> dict:
        return attrs.asdict(self)
