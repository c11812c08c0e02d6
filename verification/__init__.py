"""Analysis of a candidate change to a running module, and its reports.

Depends on nothing else of ours. Nothing here executes module code.
``analyze`` hands back one ``Plan``: the report and everything needed to
carry the change out (the change records, in source order).
"""

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
from ._source import Baseline, FileState, SourceProblem, read_state, sha256_hex

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
