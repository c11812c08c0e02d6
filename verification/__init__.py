"""Analysis of a candidate change to a running module, and its reports.

Depends on nothing else of ours. Nothing here executes module code.
``analyze`` hands back one ``Plan``: the report and everything needed to
carry the change out (the change records, in source order).

Names load on first use (``__getattr__``): ``hotfix.install()`` needs only
the baseline records of ``_running``, not the differ, ``ast`` or ``dis``.
"""

import importlib as _importlib

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: ``hotfix.install()`` does not import typing
if TYPE_CHECKING:
    from typing import Any

    from ._analysis import analyze, compare_files, module_source_path
    from ._changes import (
        AddDefinition,
        AddEnumMembers,
        Change,
        ModifyFunction,
        RemoveName,
        RetargetClosure,
        RunStatement,
        UpdateStarImport,
    )
    from ._chunked import prebuild_model, yielding
    from ._findings import BLOCKED, REASONS, RISKY, SAFE, Finding
    from ._impact import Dependent, Impact, ThreadImpact
    from ._model import ClassDef, CodeSet, FunctionDef, build_model, iter_code_tree
    from ._plan import Plan, Probe, Rebind, verify_swap
    from ._report import SCHEMA_VERSION, UNCHANGED, VERDICTS, Report, SourceSection
    from ._running import Baseline, sha256_hex
    from ._source import FileState, SourceProblem, read_state
del TYPE_CHECKING

#: public name -> private module that defines it
_LAZY = {
    "AddDefinition": "_changes",
    "AddEnumMembers": "_changes",
    "BLOCKED": "_findings",
    "Baseline": "_running",
    "Change": "_changes",
    "ClassDef": "_model",
    "CodeSet": "_model",
    "Dependent": "_impact",
    "FileState": "_source",
    "Finding": "_findings",
    "FunctionDef": "_model",
    "Impact": "_impact",
    "ModifyFunction": "_changes",
    "Plan": "_plan",
    "Probe": "_plan",
    "REASONS": "_findings",
    "RISKY": "_findings",
    "Rebind": "_plan",
    "RemoveName": "_changes",
    "Report": "_report",
    "RetargetClosure": "_changes",
    "RunStatement": "_changes",
    "SAFE": "_findings",
    "SCHEMA_VERSION": "_report",
    "SourceProblem": "_source",
    "SourceSection": "_report",
    "ThreadImpact": "_impact",
    "UNCHANGED": "_report",
    "UpdateStarImport": "_changes",
    "VERDICTS": "_report",
    "analyze": "_analysis",
    "build_model": "_model",
    "compare_files": "_analysis",
    "iter_code_tree": "_model",
    "module_source_path": "_analysis",
    "prebuild_model": "_chunked",
    "read_state": "_source",
    "sha256_hex": "_running",
    "verify_swap": "_plan",
    "yielding": "_chunked",
}


def __getattr__(name: str) -> "Any":
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'verification' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AddDefinition",
    "AddEnumMembers",
    "BLOCKED",
    "Baseline",
    "Change",
    "ClassDef",
    "CodeSet",
    "Dependent",
    "FileState",
    "Finding",
    "FunctionDef",
    "Impact",
    "ModifyFunction",
    "Plan",
    "Probe",
    "REASONS",
    "RISKY",
    "Rebind",
    "RemoveName",
    "Report",
    "RetargetClosure",
    "RunStatement",
    "SAFE",
    "SCHEMA_VERSION",
    "SourceProblem",
    "SourceSection",
    "ThreadImpact",
    "UNCHANGED",
    "UpdateStarImport",
    "VERDICTS",
    "analyze",
    "build_model",
    "compare_files",
    "iter_code_tree",
    "module_source_path",
    "prebuild_model",
    "read_state",
    "sha256_hex",
    "verify_swap",
    "yielding",
]
