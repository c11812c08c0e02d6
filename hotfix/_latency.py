"""Workers keep their turn on the GIL while hotfix computes.

CPython makes a thread that holds the GIL give it up to a waiting thread
only once per *switch interval* (5 ms by default). Verifying a change
(reading, hashing, parsing, comparing, planning re-binds) is CPU work in
the hotfix thread, so without care a worker that wakes up for its next
request waits up to a full interval for every turn: a service whose
workers answer in half a millisecond feels a 5 ms hiccup during a patch.

``responsive()`` lowers the switch interval for the duration of such a
phase and restores it afterwards. It is process-wide state, so:

* nested and concurrent phases (a dry run in one thread while an apply
  runs in another) share one lowering; the first one in saves the value,
  the last one out restores it (a counter under a lock);
* if something else changed the interval meanwhile (the application, a
  test), its value wins: we restore only what we set;
* an interval already at or below ours is left alone.

What it cannot shorten: one long call into C that holds the GIL for its
whole duration (``compile()`` or ``ast.parse()`` of a large file). Those
are bounded by keeping such calls small (see the README, Performance).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The switch interval while hotfix computes: a waiting worker gets the GIL within about this long.
RESPONSIVE_INTERVAL = 0.0002

_lock = threading.Lock()
_depth = 0
_saved: float | None = None  # the interval to restore, None if we did not change it
_ours: float | None = None  # what we set (as read back: the interpreter stores microseconds)


@contextmanager
def responsive() -> Iterator[None]:
    """Run the block with a short switch interval (nested- and thread-safe; restored in every case)."""
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    global _depth, _saved, _ours
    with _lock:
        if _depth == 0:
            current = sys.getswitchinterval()
            if current > RESPONSIVE_INTERVAL:
                sys.setswitchinterval(RESPONSIVE_INTERVAL)
                _saved, _ours = current, sys.getswitchinterval()
            else:
                _saved = _ours = None
        _depth += 1


def _exit() -> None:
    global _depth, _saved, _ours
    with _lock:
        _depth -= 1
        if _depth == 0:
            if _saved is not None and sys.getswitchinterval() == _ours:
                sys.setswitchinterval(_saved)
            _saved = _ours = None
