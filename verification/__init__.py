"""Analysis of a candidate change to a running module, and its reports.

Depends on nothing else of ours. Nothing here executes module code.
"""

from ._analysis import (
    AddDefinition,
    Analysis,
    ModifyFunction,
    RemoveName,
    RetargetClosure,
    RunStatement,
    analyze,
    compare_files,
    module_source_path,
)
from ._findings import BLOCKED, REASONS, RISKY, SAFE, Finding
from ._impact import Dependent, Impact, ThreadImpact
from ._model import CodeSet, ModuleModel, build_model, iter_code_tree, same_semantics, strip_lines
from ._report import SCHEMA_VERSION, UNCHANGED, VERDICTS, Report, SourceSection
from ._source import (
    Baseline,
    FileState,
    SourceFile,
    SourceProblem,
    read_source,
    read_state,
    sha256_hex,
)

__all__ = [
    "AddDefinition",
    "Analysis",
    "BLOCKED",
    "CodeSet",
    "Baseline",
    "FileState",
    "Dependent",
    "Finding",
    "Impact",
    "ModifyFunction",
    "ModuleModel",
    "REASONS",
    "RISKY",
    "RemoveName",
    "RetargetClosure",
    "Report",
    "RunStatement",
    "SAFE",
    "SCHEMA_VERSION",
    "SourceFile",
    "SourceProblem",
    "SourceSection",
    "ThreadImpact",
    "UNCHANGED",
    "VERDICTS",
    "analyze",
    "compare_files",
    "build_model",
    "iter_code_tree",
    "module_source_path",
    "read_source",
    "read_state",
    "same_semantics",
    "sha256_hex",
    "strip_lines",
]
