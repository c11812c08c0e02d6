"""Entry points: verify a running module against its file, or two files offline.

``analyze`` reads the file, builds both versions' models (``_model``), runs
the differ (``_differ``), measures the runtime impact (``_impact``) and
hands back one ``Plan`` (``_plan``): the report plus everything hotfix needs
to carry the change out. ``compare_files`` classifies an edit between two
files with no process. Nothing here executes module code.

With a baseline (the source text the module was imported from) both sides
are compiled source. Without one (imported before ``hotfix.install()``),
the old side is the live namespace: functions are compared through their
live code objects, module-level statements cannot be compared and are left
alone, which the report says.
"""

from __future__ import annotations

import types

from ._changes import ModifyFunction, RemoveName, RetargetClosure, RunStatement, UpdateStarImport
from ._chunked import give_way
from ._differ import Differ
from ._findings import Finding
from ._holders import cached_values, held_old_objects, star_imports
from ._impact import (
    Impact,
    active_hooks,
    count_instances,
    dependents,
    suspended_generators,
    thread_impact,
)
from ._model import CodeSet, ModuleModel, build_model, cached_model, iter_code_tree, peek_model
from ._plan import Plan, SourceLookup, build_plan, empty_plan
from ._report import Report, SourceSection
from ._source import Baseline, SourceFile, SourceProblem, read_source


def module_source_path(module: types.ModuleType) -> str | Finding:
    """The ``.py`` file a module was loaded from, or a blocking finding."""
    name = module.__name__
    if name == "__main__":
        return Finding("main-module", None, "__main__ cannot be patched; move the code into an importable module")
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) if spec is not None else getattr(module, "__file__", None)
    if origin in (None, "built-in", "frozen") or not isinstance(origin, str):
        return Finding("not-a-source-module", None, f"{name} has no source file (builtin, frozen or namespace module)")
    if not origin.endswith((".py", ".pyw")):
        return Finding("not-a-source-module", None, f"{name} was loaded from {origin}, not from Python source")
    return origin


def analyze(module: types.ModuleType, baseline: Baseline | None, *,
            thread_states: dict[int, str] | None = None, heap_scan: bool = False,
            sources: SourceLookup | None = None) -> Plan:
    """Verify ``module`` against its file on disk. Executes no module code.

    ``thread_states`` maps registered worker thread ids to their safepoints
    state (threads not in it are reported as not covered). ``heap_scan``
    also counts suspended generators and live instances of changed classes
    (cost grows with the heap; done for an explicit dry run). ``sources``
    gives other modules' running source text (to tell whether a dependent
    imported a small shared constant from this module).
    """
    name = module.__name__
    path_or_problem = module_source_path(module)
    if isinstance(path_or_problem, Finding):
        report = Report.build(name, SourceSection(None, baseline.state if baseline else None, None), [path_or_problem])
        return empty_plan(module, report)
    path = path_or_problem
    base_state = baseline.state if baseline else None
    try:
        source = read_source(path)
    except SourceProblem as exc:
        report = Report.build(name, SourceSection(path, base_state, None), [Finding(exc.code, None, exc.message)])
        return empty_plan(module, report, path)
    give_way()
    section = SourceSection(path, base_state, source.state)
    if baseline is not None and baseline.state.sha256 == source.state.sha256:
        return empty_plan(module, Report.build(name, section, []), path, source.state, source.text)
    try:
        old, new = _models(baseline, source, path)
    except (SyntaxError, ValueError) as exc:
        where = f"line {exc.lineno}: " if isinstance(exc, SyntaxError) and exc.lineno else ""
        msg = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        finding = Finding("syntax-error", None, f"{path} does not compile: {where}{msg}")
        return empty_plan(module, Report.build(name, section, [finding]), path, source.state, source.text)
    except RecursionError:
        return empty_plan(module, Report.build(name, section, [_too_deep(path)]), path, source.state, source.text)
    give_way()
    differ = Differ(module, old, new, sources)
    try:
        differ.scope("", old.scope if old else None, new.scope, module)
        give_way()
        differ.closures(module)
    except RecursionError:
        return empty_plan(module, Report.build(name, section, [_too_deep(path)]), path, source.state, source.text)
    give_way()
    findings = differ.findings
    findings.extend(held_old_objects(differ))
    give_way()
    findings.extend(cached_values(differ))
    give_way()
    stars, star_findings = star_imports(module, new, differ.changes, sources)
    differ.changes.extend(stars)
    findings.extend(star_findings)
    if old is None and findings:
        findings.insert(0, Finding("no-baseline", None, REASON_NO_BASELINE))
    if not findings and baseline is not None:
        findings.append(Finding("source-only", None, "the text changed but every definition compiles to the same code"))
    give_way()
    impact, deps = _impact(module, differ, thread_states, heap_scan)
    give_way()
    for qualname, count in impact.instances or ():
        if count and any(isinstance(c, ModifyFunction) and not c.line_only and c.new.qualname == f"{qualname}.__init__"
                         for c in differ.changes):
            findings.append(Finding("init-changed-live-instances", f"{qualname}.__init__",
                                    f"{qualname}.__init__ changed while {count} instance(s) are alive; they keep what the old one built"))
    report = Report.build(name, section, findings, impact, deps)
    if report.verdict not in ("safe", "risky"):
        return empty_plan(module, report, path, source.state, source.text)
    give_way()
    return build_plan(module, report, source.state, source.text, old, new, tuple(differ.changes), sources)


_LAYOUT_CODES = ("slots-changed", "fields-changed")
_RESUMABLE = 0x20 | 0x80 | 0x100 | 0x200  # generator, coroutine, iterable coroutine, async generator


def _impact(module: types.ModuleType, differ: Differ, thread_states, heap_scan: bool) -> tuple[Impact, tuple]:
    replaced = CodeSet()
    changed_names: dict[str, str] = {}
    classes: dict[str, type] = {}
    caches = []
    for c in differ.changes:
        if isinstance(c, RetargetClosure):
            for f in c.live:
                replaced.update(iter_code_tree(f.__code__))
            continue
        if isinstance(c, UpdateStarImport):
            continue
        top = (c.scope.split(".", 1)[0] if c.scope else None)
        if isinstance(c, ModifyFunction):
            for f in c.live:
                replaced.update(iter_code_tree(f.__code__))
            if c.scope == "":
                changed_names[c.new.name] = "code"
                holder = vars(module).get(c.new.name)
                if callable(getattr(holder, "cache_clear", None)):
                    caches.append(c.new.qualname)
        elif isinstance(c, RunStatement) and c.scope == "":
            changed_names.update(dict.fromkeys(c.statement.names, "value"))
        elif isinstance(c, RemoveName) and c.scope == "":
            changed_names[c.name] = "removed"
        if top:
            changed_names.setdefault(top, "code")
            cls = vars(module).get(top)
            if isinstance(cls, type):
                classes[top] = cls
    layout = [f for f in differ.findings if f.code in _LAYOUT_CODES]
    inits = [c for c in differ.changes
             if isinstance(c, ModifyFunction) and c.new.name == "__init__" and c.scope and not c.line_only]
    for finding in layout:
        cls = vars(module).get((finding.qualname or "").split(".", 1)[0])
        if isinstance(cls, type):
            classes[cls.__qualname__] = cls
    # Heap scans only where they can find something: classes changed / generator code changed.
    instances = count_instances(classes.values()) if ((heap_scan and classes) or layout or inits) else None
    resumable = CodeSet(c for c in replaced if c.co_flags & _RESUMABLE)
    if not heap_scan:
        generators = None  # not looked for
    elif resumable:
        generators = suspended_generators(resumable)
    else:
        generators = ()  # no changed generator/coroutine code: none can be suspended in it
    impact = Impact(
        threads=thread_impact(replaced, thread_states),
        generators=generators,
        instances=instances,
        hooks=active_hooks(),
        caches=tuple(caches),
    )
    return impact, dependents(module, changed_names)


def _models(baseline: Baseline | None, source: SourceFile, path: str) -> tuple[ModuleModel | None, ModuleModel]:
    """The running and the disk version's models; raises ``SyntaxError`` for the disk version.

    Models are memoised by content. Whichever side is already known is the
    base for an incremental parse of the other: usually the running
    version's model exists (from an earlier dry run) and only the changed
    region of the new text is parsed. The first time, the new text is
    parsed in full (a broken file fails fast) and the running version is
    derived from it, reusing the code object kept at import.
    """
    new_sha = source.state.sha256
    if baseline is None:
        return None, cached_model(source.text, path, new_sha)
    old = peek_model(path, baseline.state.sha256)
    if old is not None or baseline.code is None:
        try:
            old = old or cached_model(baseline.text, path, baseline.state.sha256)
        except (SyntaxError, ValueError):  # the running source compiled once; be safe anyway
            old = None
        return old, cached_model(source.text, path, new_sha, previous=old)
    new = cached_model(source.text, path, new_sha)
    try:
        old = cached_model(baseline.text, path, baseline.state.sha256, previous=new,
                           code=baseline.code if isinstance(baseline.code, types.CodeType) else None)
    except (SyntaxError, ValueError):
        old = None
    return old, new


def _too_deep(path: str) -> Finding:
    return Finding("too-deep", None, f"{path} nests deeper than the analysis can follow; restart the process to load it")


REASON_NO_BASELINE = (
    "imported before hotfix.install(): live code objects were compared with the disk source;"
    " module-level statements were not compared and will not be re-run"
)


def compare_files(old_path: str, new_path: str, module: str | None = None) -> Report:
    """Classify the edit from ``old_path`` to ``new_path`` with no running process."""
    name = module or new_path.rsplit("/", 1)[-1].removesuffix(".py")
    findings: list[Finding] = []
    try:
        old_src = read_source(old_path)
    except SourceProblem as exc:
        return Report.build(name, SourceSection(old_path, None, None), [Finding(exc.code, None, "OLD: " + exc.message)])
    try:
        new_src = read_source(new_path)
    except SourceProblem as exc:
        return Report.build(name, SourceSection(new_path, old_src.state, None), [Finding(exc.code, None, exc.message)])
    section = SourceSection(new_path, old_src.state, new_src.state)
    if old_src.state.sha256 == new_src.state.sha256:
        return Report.build(name, section, [])
    try:
        old = build_model(old_src.text, new_path)
    except RecursionError:
        return Report.build(name, section, [_too_deep(old_path)])
    except (SyntaxError, ValueError) as exc:
        return Report.build(name, section, [Finding("syntax-error", None, f"OLD {old_path} does not compile: {exc}")])
    try:
        new = build_model(new_src.text, new_path)
    except RecursionError:
        return Report.build(name, section, [_too_deep(new_path)])
    except (SyntaxError, ValueError) as exc:
        where = f"line {exc.lineno}: " if isinstance(exc, SyntaxError) and exc.lineno else ""
        msg = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        return Report.build(name, section, [Finding("syntax-error", None, f"{new_path} does not compile: {where}{msg}")])
    differ = Differ(None, old, new)
    try:
        differ.scope("", old.scope, new.scope, None)
    except RecursionError:
        return Report.build(name, section, [_too_deep(new_path)])
    findings = differ.findings or [Finding("source-only", None, "the text changed but every definition compiles to the same code")]
    return Report.build(name, section, findings)
