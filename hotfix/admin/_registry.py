"""Where local endpoints can be found: one small file per running server, for ``hotfix ps``.

``serve()`` writes ``<runtime dir>/endpoints/<pid>-<n>.json`` (0600, in the
private 0700 runtime directory of ``_auth``) holding the pid, the URL or
socket path, and the *path* of the token file if hotfix wrote one (never a
token). ``close()`` removes it; files of processes that died are skipped and
cleaned up by the next reader.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from ._auth import runtime_dir

_ids = itertools.count(1)


def registry_dir(create: bool = False) -> str:
    """``<runtime dir>/endpoints``; reading never creates directories."""
    base = runtime_dir(create=create)  # the same choice as writers, squatted directories skipped
    path = os.path.join(base, "endpoints")
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def register(url: str, socket_path: str | None, token_file: str | None) -> str | None:
    """Record a running endpoint; returns the file to pass to ``unregister`` (``None`` if it failed)."""
    entry = {"pid": os.getpid(), "url": url, "socket_path": socket_path, "token_file": token_file,
             "argv": list(sys.argv), "started": time.time()}
    try:
        directory = registry_dir(create=True)
        path = os.path.join(directory, f"{os.getpid()}-{next(_ids)}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
    except OSError:
        return None  # discovery is a convenience: never fail serve() for it
    return path


def unregister(path: str | None) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def entries() -> Iterator[dict[str, Any]]:
    """Registered endpoints of live processes (files of dead ones are removed)."""
    from ._server import pid_alive

    try:
        directory = registry_dir()
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as fh:
                entry = json.load(fh)
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        yield entry
