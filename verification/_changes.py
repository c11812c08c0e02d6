"""The change records: one step of a swap each, listed in source order in a ``Plan``.

Each record says *what* to do to which definition of the running module;
``hotfix`` carries them out in order (through its undo log) and never works
out again what to change.
"""

from __future__ import annotations

import types

import attrs

from ._model import ClassDef, FunctionDef, Statement


@attrs.frozen(eq=False)
class ModifyFunction:
    """An existing definition whose function object(s) get new code and attributes."""

    scope: str  # qualified prefix of the enclosing scope: "" (module) or "C." (class C)
    new: FunctionDef
    old: FunctionDef | None
    live: tuple[types.FunctionType, ...]
    code_changed: bool
    defaults_changed: bool
    annotations_changed: bool
    doc_changed: bool
    replace: bool  # identity cannot be kept (closure or decorators changed): re-create
    line_only: bool = False  # same semantics, only line numbers moved
    bind: bool = True  # a re-created function is bound to its name (False: a later definition owns the name)


@attrs.frozen(eq=False)
class AddDefinition:
    """A function or class to create in its scope (decorators run: it is new)."""

    scope: str
    new: FunctionDef | ClassDef
    bind: bool = True  # bound to its name (False: a later definition owns the name, as in ``@x.register def _``)


@attrs.frozen(eq=False)
class RunStatement:
    """A new or changed plain statement, or an unchanged one that uses what the patch re-creates, run in its scope."""

    scope: str
    statement: Statement


@attrs.frozen(eq=False)
class RetargetClosure:
    """A live inner function (a closure made by a changed function) that gets the new inner code."""

    qualname: str
    live: tuple[types.FunctionType, ...]
    code: types.CodeType


@attrs.frozen(eq=False)
class RemoveName:
    """A name bound only by removed definitions or statements."""

    scope: str
    name: str


@attrs.frozen(eq=False)
class UpdateStarImport:
    """A dependent that did ``from <module> import *``: names it gains and loses with the patch."""

    holder: str
    namespace: dict = attrs.field(repr=False)
    added: tuple[str, ...]
    removed: tuple[str, ...]


@attrs.frozen(eq=False)
class AddEnumMembers:
    """Members added to a live Enum: made by a scratch copy of the new class, moved onto the live one."""

    scope: str
    new: ClassDef
    names: tuple[str, ...]  # the added members (and aliases)


Change = ModifyFunction | AddDefinition | RunStatement | RemoveName | RetargetClosure | UpdateStarImport | AddEnumMembers
