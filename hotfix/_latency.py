"""Workers keep their turn on the GIL while hotfix computes.

Verifying a change (reading, hashing, parsing, comparing, planning
re-binds) is CPU work in the hotfix thread, and a CPython thread that
holds the GIL gives it up to a waiting thread only once per *switch
interval* (5 ms by default), or when it blocks. Without care, a worker
that wakes up for its next request waits up to a full interval for every
turn: a service whose workers answer in half a millisecond feels a 5 ms
hiccup during a patch.

``responsive()`` makes the computing thread *give way*: verification's
long loops pass through ``give_way()`` points (``verification``'s
``paced``/``give_way``: per definition compared, per few code objects
rebased, per module walked, between the pieces of a parse), and at each
point, once the thread has worked ``PIECE`` seconds since it last gave
way, it sleeps ``AWAY`` times as long as it worked. Sleeping releases
the GIL *and* the CPU: every thread that was waiting runs, and the
verifying thread takes at most about ``1 / (1 + AWAY)`` of the GIL while
others want it.

Why not a shorter switch interval (what this module did before): with a
0.2 ms interval every thread waiting for the GIL wakes every 0.2 ms to
demand it, so with tens of worker threads the GIL thrashes between them
and the verifier; measured with 64 workers looping every 0.5 ms, a 10 ms
verification then added ~10 ms to the longest gap a worker saw, and with
8 workers ~2.4 ms, against ~0.3 ms for both when giving way by sleeping
(``benchmarks/README.md``). It also changed process-wide state.

When no other thread could be waiting (none alive but this one and
hotfix's own background threads, named ``hotfix-*``), nothing changes: the
computation runs at full speed. Under a ``safepoints`` pause held by this
thread it never sleeps (every worker is parked: sleeping would only
lengthen the pause). When the others turn out to be computing rather than
waiting for a quick turn (a give-way kept this thread away longer than two
switch intervals), the next piece lasts a switch interval (see
``_GiveWay``). Nested and concurrent uses are independent: the state
is per thread (``verification.yielding``).

What it cannot shorten: one call into C that holds the GIL for its whole
duration (``compile()`` or ``ast.parse()`` of a large text, a garbage
collection). Those are kept small elsewhere (only the edited region is
compiled; large files are parsed in pieces; see the README, Performance).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import safepoints

#: Work at most about this long between two turns given to waiting threads.
PIECE = 0.0002
#: Then sleep this many times as long as the piece took (0.5: at most ~2/3 of the GIL while others wait).
AWAY = 0.5

_now = time.perf_counter
_sleep = time.sleep
_get_ident = threading.get_ident


@contextmanager
def responsive() -> Iterator[None]:
    """Run the block giving way to other threads at verification's ``give_way()`` points."""
    if not _others_alive():
        yield
        return
    # imported here, not at the top: install() does not load verification's modules
    from verification import yielding

    with yielding(_GiveWay(_get_ident())):
        yield


def _others_alive() -> bool:
    """Is any thread alive that might be waiting for the GIL (not this one, not hotfix's own)?"""
    me = _get_ident()
    return any(t.ident != me and not t.name.startswith("hotfix-") for t in threading.enumerate())


class _GiveWay:
    """The ``between`` callback: sleep ``AWAY`` x the time worked once a piece is done.

    A piece is ``PIECE``, except after a give-way that kept this thread away
    longer than two switch intervals. Threads that only want a quick turn
    hand the GIL on within microseconds, and this thread's own timed wait
    for the GIL forces a switch after one interval; away for two means
    threads that keep the GIL for whole intervals, i.e. they are computing,
    and giving way again at once would only make this thread wait a whole
    round of them for every piece (measured: an apply next to 8 CPU-bound
    threads took 1.6-2.8 s instead of ~1 s at a load average of 8-13). The next piece then lasts one
    switch interval, which is when CPython makes this thread give way anyway.
    """

    __slots__ = ("_ident", "_mark", "_piece")

    def __init__(self, ident: int) -> None:
        self._ident = ident
        self._mark = _now()
        self._piece = PIECE

    def __call__(self) -> None:
        now = _now()
        worked = now - self._mark
        if worked < self._piece:
            return
        if safepoints.current_pause_holder() == self._ident:
            self._mark = now
            return
        _sleep(worked * AWAY)
        back = _now()
        interval = sys.getswitchinterval()
        self._piece = interval if back - now > 2 * interval else PIECE
        self._mark = back
