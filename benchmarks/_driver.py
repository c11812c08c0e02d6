"""Child-process driver: one engine, one fresh interpreter, one JSON line on stdout.

``python _driver.py '<json config>'``. Modes:

``engine``
    Import a generated app (and a holder module that did ``from app import
    ...``) under one engine, then patch it with the variants of ``gen.py``
    and time each patch from "file rewritten" to "new behaviour visible":
    ``fix`` (no workers), ``fix2`` (8 busy worker threads: their longest gap
    is the stall), ``shift`` (a method gains a line; later lines move).
    Optional: extra live heap objects, call cost after the patch, probation
    overhead (hotfix). Correctness checks after every patch.
``modules``
    hotfix only: ``dry_run`` and ``apply`` time with few modules loaded, then
    with ~2,000 more.

Engines: ``hotfix`` (``hotfix.apply(probation=0)``, verification included),
``reload`` (``importlib.reload``), ``ipython`` (IPython's ``ModuleReloader``,
default algorithm), ``ipython-full`` (its ``superreload`` only), ``jurigged``
(``registry.get(file).refresh()``, what its file watcher calls).
"""

from __future__ import annotations

import abc
import bisect
import gc
import importlib
import json
import linecache
import os
import sys
import threading
import time
import traceback

import gen

pc = time.perf_counter

# --------------------------------------------------------------------------- engines


class Engine(abc.ABC):
    name = "?"

    def before_import(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Runs before the app is imported (hotfix.install())."""

    def after_import(self, module) -> None:  # noqa: B027 - optional hook, empty by default
        """Runs after the app is imported, before any edit."""

    def settle(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Runs after the settle time that follows the import (untimed)."""

    @abc.abstractmethod
    def apply(self, module) -> dict:
        """Adopt the file on disk; return extra facts (stall, verdict)."""


class Hotfix(Engine):
    name = "hotfix"

    def before_import(self) -> None:
        import hotfix

        self.hotfix = hotfix
        hotfix.install()

    def settle(self) -> None:
        # a patch comes long after import in real life: by then the running model is built
        from hotfix import _prebuild

        _prebuild.wait_idle(30)

    def apply(self, module) -> dict:
        patch = self.hotfix.apply(module.__name__, probation=0, timeout=5.0)
        return {"stall_seconds": patch.stall_seconds, "verdict": patch.report.verdict, "events": len(patch.events)}


class Reload(Engine):
    name = "reload"

    def apply(self, module) -> dict:
        importlib.reload(module)
        return {}


class IPythonAutoreload(Engine):
    name = "ipython"
    full = False

    def after_import(self, module) -> None:
        from IPython.extensions.autoreload import ModuleReloader

        self.reloader = r = ModuleReloader()  # records mtimes and sources of loaded modules
        r.enabled = True
        r.check_all = False
        r.hide_errors = True
        r.mark_module_reloadable(module.__name__)
        deduper = getattr(r, "deduper_reloader", None)  # IPython >= 9.? tries a source diff first
        if self.full and deduper is not None:
            deduper.enabled = False

    def apply(self, module) -> dict:
        self.reloader.check()
        if self.reloader.failed:
            raise RuntimeError(f"autoreload failed for {sorted(self.reloader.failed)}")
        return {}


class IPythonFull(IPythonAutoreload):
    name = "ipython-full"
    full = True


class Jurigged(Engine):
    name = "jurigged"

    def after_import(self, module) -> None:
        from jurigged import registry

        self.registry = registry
        self.errors: list[BaseException] = []
        registry.set_logger(lambda event: self.errors.append(event) if isinstance(event, BaseException) else None)
        registry.prepare(module.__name__)  # snapshot the source, as its import sniffer does

    def apply(self, module) -> dict:
        codefile = self.registry.get(module.__file__)
        codefile.refresh()
        if self.errors:
            raise self.errors[0]
        return {}


ENGINES = {e.name: e for e in (Hotfix, Reload, IPythonAutoreload, IPythonFull, Jurigged)}


# --------------------------------------------------------------------------- the app under test


class Blob:
    """One extra live, gc-tracked heap object."""

    __slots__ = ("v",)

    def __init__(self, v: int) -> None:
        self.v = v


class App:
    """The generated module, what the process held before the patch, and the checks."""

    CHECKS = (
        "module attribute sees fix",
        "`from` import holder sees fix",
        "old instance's method sees fix",
        "class identity kept",
        "dataclass/enum identity kept",
        "module state kept",
        "line numbers right",
    )

    def __init__(self, cfg: dict, engine: Engine) -> None:
        self.cfg = cfg
        self.n = cfg["n"]
        self.engine = engine
        self.name = cfg["app"]
        self.path = os.path.join(cfg["dir"], self.name + ".py")
        self.variant = "base"
        engine.before_import()
        self.mod = importlib.import_module(self.name)
        self.holder = importlib.import_module(cfg["holder"])
        engine.after_import(self.mod)
        m = self.mod
        self.old = {"Service": m.Service, "Point": m.Point, "Color": m.Color, "red": m.Color.RED,
                    "state": m.STATE, "instance": m.Service(), "point": m.Point(1, 2)}
        m.STATE["calls"] = 42  # live state a patch must keep
        self.checks: dict[str, bool] = {}
        self.failed_at: dict[str, str] = {}  # check -> the patch after which it first failed
        self.errors: list[str] = []

    def patch(self, variant: str) -> dict:
        """Rewrite the file and apply; timed up to the new behaviour being visible."""
        text = gen.render(self.n, variant)
        out: dict = {"variant": variant}
        t0 = pc()
        try:
            gen.write_source(self.path, text)
            out.update(self.engine.apply(self.mod))
            out["visible"] = sys.modules[self.name].target(1) == gen.TARGET_RESULT[variant]
        except BaseException as exc:  # a peer failing is a result, not a crash
            out["error"] = f"{type(exc).__name__}: {exc}"[:300]
            self.errors.append(f"{variant}: {out['error']}")
        out["seconds"] = pc() - t0
        self.variant = variant
        self.check(variant, text)
        return out

    def patch_again(self, k: int) -> dict:
        """Another one-line fix (``x + k``), timed like ``patch``; correctness checks are not repeated."""
        out: dict = {"variant": f"fix k={k}"}
        t0 = pc()
        try:
            gen.write_source(self.path, gen.render(self.n, "fix", k=k))
            out.update(self.engine.apply(self.mod))
            out["visible"] = sys.modules[self.name].target(1) == 1 + k
        except BaseException as exc:  # a peer failing is a result, not a crash
            out["error"] = f"{type(exc).__name__}: {exc}"[:300]
            self.errors.append(f"later: {out['error']}")
        out["seconds"] = pc() - t0
        return out

    def record(self, name: str, fn) -> None:
        try:
            ok = bool(fn())
        except Exception as exc:  # a check that raises failed
            ok = False
            self.failed_at.setdefault(name, f"{self.variant}: {type(exc).__name__}: {exc}"[:200])
        if not ok:
            self.failed_at.setdefault(name, self.variant)
        self.checks[name] = self.checks.get(name, True) and ok

    def check(self, variant: str, text: str) -> None:
        m = sys.modules[self.name]
        o = self.old
        want = gen.TARGET_RESULT[variant]
        self.record("module attribute sees fix", lambda: m.target(1) == want)
        self.record("`from` import holder sees fix", lambda: self.holder.call(1) == want and self.holder.target(1) == want)
        if variant == "shift":  # the method itself changed
            self.record("old instance's method sees fix", lambda: o["instance"].handle(1) == gen.HANDLE_RESULT[variant])
        self.record("class identity kept", lambda: m.Service is o["Service"] and self.holder.Service is m.Service)
        self.record("dataclass/enum identity kept", lambda: m.Point is o["Point"] and m.Color is o["Color"]
                    and m.Color.RED is o["red"] and isinstance(o["point"], m.Point))
        self.record("module state kept", lambda: m.STATE is o["state"] and m.STATE["calls"] == 42)
        self.record("line numbers right", lambda: self.lines_right(m, text))

    def lines_right(self, m, text: str) -> bool:
        last = f"f{self.n - 2:04d}"
        ok = (m.target.__code__.co_firstlineno == gen.line_of(text, "def target(")
              and getattr(m, last).__code__.co_firstlineno == gen.line_of(text, f"def {last}(")
              and m.Service.handle.__code__.co_firstlineno == gen.line_of(text, "def handle("))
        try:
            m.boom()
        except ValueError as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            ok = ok and frame.lineno == gen.line_of(text, 'raise ValueError("boom")')
            ok = ok and linecache.getline(frame.filename, frame.lineno).strip() == 'raise ValueError("boom")'
        return ok


# --------------------------------------------------------------------------- workers


def max_gap(stamps: list[list[float]], a: float, b: float) -> float:
    """Longest interval between consecutive jobs of any thread that overlaps [a, b]."""
    best = 0.0
    for s in stamps:
        j = max(bisect.bisect_left(s, a), 1)
        while j < len(s) and s[j - 1] <= b:
            best = max(best, s[j] - s[j - 1])
            j += 1
    return best


def with_workers(app: App, variant: str, count: int, idle_window: tuple[float, float]) -> dict:
    """Patch while ``count`` busy workers run; longest gap during the patch vs an idle window."""
    import safepoints

    stop = threading.Event()
    ready = threading.Barrier(count + 1)
    stamps: list[list[float]] = [[] for _ in range(count)]
    mod = app.mod

    failures: list[str] = []

    def loop(i: int) -> None:
        record = stamps[i].append
        k = 0
        with safepoints.worker(f"bench-{i}"):
            ready.wait()
            while not stop.is_set():
                safepoints.checkpoint()
                try:
                    with safepoints.critical():
                        mod.work(k)
                except Exception as exc:  # a job that failed during the patch is a result
                    failures.append(f"{type(exc).__name__}: {exc}")
                record(pc())
                k += 1

    threads = [threading.Thread(target=loop, args=(i,), name=f"bench-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.05)
    t0 = pc()
    out = app.patch(variant)
    t1 = pc()
    time.sleep(0.02)
    # the idle reference: as long as the patch took (within limits), no patch running
    a = pc()
    time.sleep(min(max(t1 - t0, idle_window[0]), idle_window[1]))
    b = pc()
    time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    jobs_idle = sum(bisect.bisect_left(s, b) - bisect.bisect_left(s, a) for s in stamps)
    out.update(idle_gap=max_gap(stamps, a, b), patch_gap=max_gap(stamps, t0, t1), idle_window=b - a,
               jobs_per_second_idle=jobs_idle / (b - a), failed_jobs=len(failures),
               failure_example=failures[0][:200] if failures else None)
    return out


def latency_mode(cfg: dict) -> dict:
    """What a worker feels: short-period workers, longest gap during each patch vs without.

    ``workers`` registered threads each loop: sleep ``period`` inside
    ``idle()`` (a worker waiting for its next request), one small job inside
    ``critical()``, a timestamp. The app is patched ``patches`` times (a new
    one-line fix each time); per patch the longest gap between two jobs of
    any worker that overlaps the patch, and the longest gap in a window of
    the same length with no patch (taken right after).
    """
    import safepoints

    sys.path.insert(0, cfg["dir"])
    if cfg.get("warmup", True):
        warm_up(cfg)
    engine = ENGINES[cfg["engine"]]()
    engine.before_import()
    name = cfg["app"]
    path = os.path.join(cfg["dir"], name + ".py")
    mod = importlib.import_module(name)
    engine.after_import(mod)
    count, period = cfg["workers"], cfg["period"]
    stop = threading.Event()
    ready = threading.Barrier(count + 1)
    stamps: list[list[float]] = [[] for _ in range(count)]
    failures: list[str] = []

    def loop(i: int) -> None:
        record = stamps[i].append
        k = 0
        with safepoints.worker(f"lat-{i}"):
            ready.wait()
            while not stop.is_set():
                with safepoints.idle():
                    time.sleep(period)
                try:
                    with safepoints.critical():
                        mod.work(k)
                except Exception as exc:  # a job that failed during the patch is a result
                    failures.append(f"{type(exc).__name__}: {exc}")
                record(pc())
                k += 1

    threads = [threading.Thread(target=loop, args=(i,), name=f"lat-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(cfg.get("settle", 0.3))  # workers in their rhythm (and any background work after import done)
    engine.settle()
    rounds = []
    for i in range(cfg["patches"]):
        want = 10 + i
        gen.write_source(path, gen.render(cfg["n"], "fix", k=want))
        t0 = pc()
        extra = engine.apply(mod)
        t1 = pc()
        ok = sys.modules[name].target(1) == 1 + want
        time.sleep(0.01)
        a = pc()
        time.sleep(t1 - t0)
        b = pc()
        time.sleep(0.01)
        rounds.append({"seconds": t1 - t0, "a": a, "b": b, "t0": t0, "t1": t1, "visible": ok,
                       "held": extra.get("stall_seconds")})
    stop.set()
    for t in threads:
        t.join()
    for r in rounds:
        r["patch_gap"] = max_gap(stamps, r.pop("t0"), r.pop("t1"))
        r["idle_gap"] = max_gap(stamps, r.pop("a"), r.pop("b"))
    jobs = sum(len(s) for s in stamps)
    prebuilt = sys.modules["hotfix._prebuild"].built() if "hotfix._prebuild" in sys.modules else None
    return {"engine": engine.name, "n": cfg["n"], "workers": count, "period": period, "patches": rounds, "built": prebuilt,
            "jobs": jobs, "failed_jobs": len(failures), "failure_example": failures[0][:200] if failures else None,
            "switch_interval": sys.getswitchinterval(), "python": sys.version.split()[0]}


# --------------------------------------------------------------------------- call cost


def _loop(f, n: int) -> float:
    t = pc()
    for _ in range(n):
        f(1)
    return pc() - t


def _loop_raise(f, n: int) -> float:
    t = pc()
    for _ in range(n):
        try:
            f()
        except ValueError:
            pass
    return pc() - t


def call_cost(app: App, reps: int, n: int) -> dict:
    """Patched function (and an old instance's method) vs the same source freshly imported."""
    fresh_name = app.name + "_fresh"
    gen.write_source(os.path.join(app.cfg["dir"], fresh_name + ".py"), gen.render(app.n, app.variant))
    fresh = importlib.import_module(fresh_name)
    m = sys.modules[app.name]
    pairs = {"function": (m.target, fresh.target),
             "method": (app.old["instance"].handle, fresh.Service().handle)}
    out = {}
    for label, (patched, new) in pairs.items():
        best_p = best_f = float("inf")
        for r in range(reps):
            order = (patched, new) if r % 2 == 0 else (new, patched)
            times = {id(f): _loop(f, n) for f in order}
            best_p = min(best_p, times[id(patched)])
            best_f = min(best_f, times[id(new)])
        out[label] = {"patched": best_p / n, "fresh": best_f / n, "ratio": best_p / best_f}
    return out


def probation_overhead(app: App, window: float, n: int) -> dict:
    """hotfix: a call and a raise-and-catch call during a probation window vs after it."""
    import hotfix

    variant = "fix"  # back from `shift`: target and the method change
    m = sys.modules[app.name]
    gen.write_source(app.path, gen.render(app.n, variant))
    result: list = []
    th = threading.Thread(target=lambda: result.append(
        hotfix.apply(app.name, probation=window, expected_exceptions=(ValueError,))), daemon=True)
    th.start()
    deadline = pc() + 10
    while m.target(1) != gen.TARGET_RESULT[variant] and pc() < deadline:
        time.sleep(0.001)
    time.sleep(0.02)  # the watch starts right after the swap
    t_end = pc() + window * 0.6
    during = {"call": float("inf"), "raise": float("inf")}
    reps = 0
    while pc() < t_end or reps < 2:
        during["call"] = min(during["call"], _loop(m.target, n))
        during["raise"] = min(during["raise"], _loop_raise(m.boom, n // 4))
        reps += 1
    in_window = th.is_alive()
    th.join()
    after = {"call": float("inf"), "raise": float("inf")}
    for _ in range(reps):
        after["call"] = min(after["call"], _loop(m.target, n))
        after["raise"] = min(after["raise"], _loop_raise(m.boom, n // 4))
    app.variant = variant
    return {"call_ratio": during["call"] / after["call"], "raise_ratio": during["raise"] / after["raise"],
            "measured_inside_window": in_window, "reps": reps,
            "mechanism": "sys.monitoring" if hasattr(sys, "monitoring") else "3.11 fallback, no sys.monitoring",
            "applied": bool(result and result[0].status == "applied")}


# --------------------------------------------------------------------------- modes


def warm_up(cfg: dict) -> None:
    """Patch a small separate module once: one-time costs (lazy imports) stay out of the figures."""
    engine = ENGINES[cfg["engine"]]()
    name = cfg["app"] + "_warm"
    path = os.path.join(cfg["dir"], name + ".py")
    # deliberately unlike the app: jurigged matches code objects by equality, and CodeType
    # equality ignores the file name, so identical definitions at identical lines in two
    # modules get confused (it then patches the wrong one)
    source = '"""Warm-up module."""\n\n\ndef warm(x):\n    return x * {}\n'
    gen.write_source(path, source.format(2))
    engine.before_import()
    module = importlib.import_module(name)
    engine.after_import(module)
    gen.write_source(path, source.format(3))
    engine.apply(module)
    if module.warm(1) != 3:
        raise RuntimeError(f"warm-up patch with {engine.name} did not take")


def engine_mode(cfg: dict) -> dict:
    sys.path.insert(0, cfg["dir"])
    heap = [Blob(i) for i in range(cfg.get("heap", 0))]
    if cfg.get("warmup", True):
        warm_up(cfg)
    engine = ENGINES[cfg["engine"]]()
    app = App(cfg, engine)
    if cfg.get("settle"):
        time.sleep(cfg["settle"])  # every engine alike: the process runs a while before a patch
        engine.settle()
    res: dict = {"engine": engine.name, "n": app.n, "heap": len(heap), "python": sys.version.split()[0]}
    text = gen.render(app.n, "fix")
    gc.collect()
    t0 = pc()
    compile(text, app.path, "exec", dont_inherit=True)
    res["compile_seconds"] = pc() - t0
    gc.collect()
    res["fix"] = app.patch("fix")
    if cfg.get("later"):
        gc.collect()
        res["later"] = app.patch_again(7)
    if cfg.get("dry_runs") and engine.name == "hotfix":
        import hotfix

        times = []
        for i in range(cfg["dry_runs"]):
            # a pending one-line change, new content each time (dry runs memoise by content)
            gen.write_source(app.path, gen.render(app.n, "fix", k=10 + i))
            t0 = pc()
            hotfix.dry_run(app.name)
            times.append(pc() - t0)
        res["dry_run"] = times
    if cfg.get("stall"):
        res["stall"] = with_workers(app, "fix2", cfg.get("workers", 8), tuple(cfg.get("idle_window", (0.2, 0.6))))
    if cfg.get("shift"):
        res["shift"] = app.patch("shift")
    if cfg.get("calls"):
        res["calls"] = call_cost(app, cfg.get("call_reps", 61), cfg.get("call_n", 10_000))
    if cfg.get("probation") and engine.name == "hotfix":
        res["probation"] = probation_overhead(app, cfg["probation"], cfg.get("call_n", 10_000))
    res["checks"] = {k: app.checks.get(k) for k in App.CHECKS}
    res["failed_at"] = app.failed_at
    res["errors"] = app.errors
    return res


def modules_mode(cfg: dict) -> dict:
    """dry_run and apply (a re-bound constant: dependents walk) with few vs ~2,000 modules loaded."""
    import hotfix

    d = cfg["dir"]
    sys.path.insert(0, d)
    hotfix.install()
    name = cfg["app"]
    mod = importlib.import_module(name)
    path = os.path.join(d, name + ".py")
    reps = cfg.get("reps", 5)
    versions = iter(range(100, 10_000))

    def measure() -> dict:
        dry, app_t = [], []
        for _ in range(reps):
            value = next(versions)  # new content each time: dry runs memoise by content
            gen.write_source(path, gen.render(cfg["n"], "limit", k=value))
            t = pc()
            hotfix.dry_run(name)
            dry.append(pc() - t)
            gen.write_source(path, gen.render(cfg["n"], "limit", k=value + 5000))
            t = pc()
            hotfix.apply(name, probation=0)
            app_t.append(pc() - t)
            if mod.LIMIT != value + 5000:
                raise RuntimeError("the constant was not re-bound")
            hotfix.rollback()
        return {"modules": len(sys.modules), "dry_run": dry, "apply": app_t}

    few = measure()
    t = pc()
    for i in range(cfg["extra_modules"]):
        importlib.import_module(f"{cfg['tiny_prefix']}{i:04d}")
    imported = pc() - t
    many = measure()
    return {"few": few, "many": many, "import_seconds": imported}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    mode = {"engine": engine_mode, "modules": modules_mode, "latency": latency_mode}[cfg["mode"]]
    result = mode(cfg)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (peers' atexit hooks, a 1M-object heap)


if __name__ == "__main__":
    raise SystemExit(main())
