"""Prometheus metrics: what hotfix did in this process, as counters, gauges and a histogram.

hotfix counts its own transactions (``record_*`` below, called from the
transaction's telemetry hooks) and renders them two ways from one snapshot:

* the Prometheus text format (version 0.0.4), written by hotfix itself so the
  admin endpoint's ``/hotfix/v1/metrics`` needs no dependency;
* a ``prometheus_client`` collector, registered once in the default registry
  when that library is importable, so an application's existing ``/metrics``
  shows the same series.

Series (names follow the Prometheus conventions: ``_total`` counters,
``_seconds`` units, ``_info``-style build gauge)::

    hotfix_patches_total{outcome}             applied | unchanged | rejected | rolled_back | rollback_incomplete
    hotfix_patches_rejected_total{reason}     blocked, risky, busy, pause-timeout, ...
    hotfix_rollbacks_total{reason}            requested, check-failed, probation-failed, ...
    hotfix_checks_failed_total
    hotfix_probation_failures_total
    hotfix_pauses_total, hotfix_pause_timeouts_total      (from safepoints.statistics())
    hotfix_worker_held_seconds                histogram of how long workers were held per pause
    hotfix_patches_in_effect, hotfix_stale_modules        gauges
    hotfix_build_info{version,python}         always 1

Labels carry only fixed vocabularies (outcomes, reasons, versions), never a
module name or a path, so a public scrape (``metrics_public=True``) reveals
counts and nothing about the code. The public form also leaves out the build
information.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ._version import __version__

#: Upper bounds of the held-seconds histogram: a pause is normally well under a millisecond.
HELD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
OUTCOMES = ("applied", "unchanged", "rejected", "rolled_back", "rollback_incomplete")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_lock = threading.Lock()


@attrs.define
class _Counts:
    patches: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(OUTCOMES, 0))
    rejected: dict[str, int] = attrs.field(factory=dict)
    rollbacks: dict[str, int] = attrs.field(factory=dict)
    checks_failed: int = 0
    probation_failures: int = 0
    held_buckets: list[int] = attrs.field(factory=lambda: [0] * len(HELD_BUCKETS))
    held_count: int = 0
    held_sum: float = 0.0


_counts = _Counts()
_probation_thread: int | None = None  # the transaction's thread, from the swap until it ends


def set_in_probation(value: bool) -> None:
    """Called by the transaction's own thread: on at the swap, off when the call ends."""
    global _probation_thread
    me = threading.get_ident()
    if value:
        _probation_thread = me
    elif _probation_thread == me:  # a refused concurrent call must not end another's probation
        _probation_thread = None


def in_probation() -> bool:
    """A patch is applied and its transaction (checks, probation window) has not ended yet."""
    return _probation_thread is not None


@attrs.frozen
class Sample:
    """One series: name, labels, value (histograms: expanded into their _bucket/_sum/_count)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@attrs.frozen
class Family:
    name: str
    kind: str  # counter | gauge | histogram
    help: str
    samples: tuple[Sample, ...]
    public: bool = True


# --------------------------------------------------------------------------- recording


def record_outcome(outcome: str, reason: str | None = None) -> None:
    """One apply ended: ``outcome`` is one of ``OUTCOMES``; ``reason`` for rejections and rollbacks."""
    with _lock:
        _counts.patches[outcome] = _counts.patches.get(outcome, 0) + 1
        if outcome == "rejected":
            key = reason or "unknown"
            _counts.rejected[key] = _counts.rejected.get(key, 0) + 1
        elif outcome == "rolled_back":
            _count_rollback(reason or "unknown")


def record_rollback(reason: str) -> None:
    """A rollback that was not an apply's own (``hotfix.rollback()``: reason ``requested``)."""
    with _lock:
        _count_rollback(reason)


def record_rollback_refused(reason: str) -> None:
    """A requested rollback that was refused (counted with the rejections, by reason)."""
    with _lock:
        key = f"rollback:{reason}"
        _counts.rejected[key] = _counts.rejected.get(key, 0) + 1


def _count_rollback(reason: str) -> None:
    _counts.rollbacks[reason] = _counts.rollbacks.get(reason, 0) + 1
    if reason in ("check-failed", "check-timeout"):
        _counts.checks_failed += 1
    elif reason == "probation-failed":
        _counts.probation_failures += 1


def record_held(seconds: float | None) -> None:
    """Workers were held for ``seconds`` (one pause of a swap or an undo)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return
    with _lock:
        for i, bound in enumerate(HELD_BUCKETS):
            if seconds <= bound:
                _counts.held_buckets[i] += 1
        _counts.held_count += 1
        _counts.held_sum += seconds


def reset() -> None:
    """Forget every count (tests)."""
    global _counts
    with _lock:
        _counts = _Counts()


# --------------------------------------------------------------------------- snapshot


def patch_ids_in_effect() -> list[str]:
    if "hotfix._transaction" not in sys.modules:
        return []  # nothing can have been patched yet
    from ._records import Patch, Rollback
    from ._transaction import history

    entries = history()
    undone = {h.patch_id for h in entries if isinstance(h, Rollback)}
    return [h.id for h in entries if isinstance(h, Patch) and h.status == "applied" and h.id not in undone]


def _default_stale_count() -> int | None:
    """Stale modules of the application (the default scope); the endpoint passes its own scope's count."""
    from ._scope import stale_modules

    return len(stale_modules())


def families(stale_count: Callable[[], int | None] | None = None) -> list[Family]:
    """Every series, as of now."""
    import safepoints

    stats = safepoints.statistics()
    with _lock:
        c = attrs.evolve(_counts, patches=dict(_counts.patches), rejected=dict(_counts.rejected),
                         rollbacks=dict(_counts.rollbacks), held_buckets=list(_counts.held_buckets))
    in_effect = len(patch_ids_in_effect())
    stale = (stale_count or _default_stale_count)()
    held: list[Sample] = []
    for bound, n in zip(HELD_BUCKETS, c.held_buckets, strict=True):
        held.append(Sample("hotfix_worker_held_seconds_bucket", (("le", _float(bound)),), n))
    held += [Sample("hotfix_worker_held_seconds_bucket", (("le", "+Inf"),), c.held_count),
             Sample("hotfix_worker_held_seconds_sum", (), c.held_sum),
             Sample("hotfix_worker_held_seconds_count", (), c.held_count)]
    out = [
        Family("hotfix_patches_total", "counter", "Apply transactions by how they ended.",
               tuple(Sample("hotfix_patches_total", (("outcome", k),), v) for k, v in sorted(c.patches.items()))),
        Family("hotfix_patches_rejected_total", "counter", "Refused transactions (nothing changed) by reason.",
               tuple(Sample("hotfix_patches_rejected_total", (("reason", k),), v) for k, v in sorted(c.rejected.items()))),
        Family("hotfix_rollbacks_total", "counter", "Patches undone, by reason (requested or automatic).",
               tuple(Sample("hotfix_rollbacks_total", (("reason", k),), v) for k, v in sorted(c.rollbacks.items()))),
        Family("hotfix_checks_failed_total", "counter", "Patches rolled back because a check failed.",
               (Sample("hotfix_checks_failed_total", (), c.checks_failed),)),
        Family("hotfix_probation_failures_total", "counter",
               "Patches rolled back because patched code raised during probation.",
               (Sample("hotfix_probation_failures_total", (), c.probation_failures),)),
        Family("hotfix_pauses_total", "counter", "Completed safepoint pauses in this process.",
               (Sample("hotfix_pauses_total", (), stats.pauses),)),
        Family("hotfix_pause_timeouts_total", "counter", "Safepoint pauses that timed out.",
               (Sample("hotfix_pause_timeouts_total", (), stats.pause_timeouts),)),
        Family("hotfix_worker_held_seconds", "histogram", "How long workers were held by a swap or an undo.",
               tuple(held)),
        Family("hotfix_patches_in_effect", "gauge", "Applied patches not rolled back.",
               (Sample("hotfix_patches_in_effect", (), in_effect),)),
    ]
    if stale is not None:
        out.append(Family("hotfix_stale_modules", "gauge", "Loaded modules whose file differs from the code running.",
                          (Sample("hotfix_stale_modules", (), stale),)))
    python = ".".join(map(str, sys.version_info[:3]))
    out.append(Family("hotfix_build_info", "gauge", "hotfix and Python versions (value 1).",
                      (Sample("hotfix_build_info", (("version", __version__), ("python", python)), 1),),
                      public=False))
    return out


# --------------------------------------------------------------------------- text format


def _float(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return f"{value:.1f}"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(*, public: bool = False, stale_count: Callable[[], int | None] | None = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of every series; ``public`` drops build info."""
    lines: list[str] = []
    for fam in families(stale_count):
        if public and not fam.public:
            continue
        lines.append(f"# HELP {fam.name} {fam.help}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for s in fam.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in s.labels)
            lines.append(f"{s.name}{{{labels}}} {_float(s.value)}" if labels else f"{s.name} {_float(s.value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- prometheus_client


class _Collector:
    """The same families for ``prometheus_client`` (its default registry)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for fam in families():
            if fam.kind == "histogram":
                buckets = [(dict(s.labels)["le"], s.value) for s in fam.samples if s.name.endswith("_bucket")]
                total = next(s.value for s in fam.samples if s.name.endswith("_sum"))
                yield HistogramMetricFamily(fam.name, fam.help, buckets=buckets, sum_value=total)
                continue
            label_names = [k for k, _ in fam.samples[0].labels] if fam.samples else []
            name = fam.name.removesuffix("_total")  # prometheus_client adds the suffix back to counters
            metric: Any
            if fam.kind == "counter":
                metric = CounterMetricFamily(name, fam.help, labels=label_names)
            else:
                metric = GaugeMetricFamily(fam.name, fam.help, labels=label_names)
            for s in fam.samples:
                metric.add_metric([v for _, v in s.labels], s.value)
            yield metric

    def describe(self) -> Iterator[Any]:
        return iter(())  # no describe(): the registry calls collect() only when scraped


_registered: object | None = None  # the collector, or False when prometheus_client is not installed


def register_default() -> bool:
    """Register the collector in ``prometheus_client``'s default registry, once; ``False`` without the library."""
    global _registered
    with _lock:
        if _registered is not None:
            return _registered is not False
        try:
            from prometheus_client import REGISTRY
        except ImportError:
            _registered = False
            return False
        collector = _Collector()
        REGISTRY.register(collector)
        _registered = collector
        return True
