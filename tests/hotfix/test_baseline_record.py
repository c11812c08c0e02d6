"""What a baseline keeps of a module imported after install(): the source once (compressed), a code index.

Memory is measured by benchmarks/bench_install_scope.py; these tests pin what is kept and that
nothing is lost by keeping less: the exact source text, the live code objects, a first dry run.
"""

from __future__ import annotations

import sys
import types

import pytest

import hotfix
from hotfix import _baseline


def _empty_module_bytecode() -> bytes:
    return compile("", "<empty>", "exec").co_code


def test_the_baseline_keeps_the_text_compressed_and_gives_it_back_exactly(modules):
    source = "".join(f"def f{i}(x):\n    return x + {i}  # a comment that repeats\n\n" for i in range(100))
    mod = modules.create(source)
    baseline = _baseline.get_baseline(mod.__name__)
    assert baseline.text == source
    assert baseline.kept_bytes < len(source.encode()) / 3
    assert baseline.state.size == len(source.encode()) and baseline.state.sha256 == baseline.sha256


def test_the_text_is_decoded_like_the_import_system(modules):
    mod = modules.create("# -*- coding: latin-1 -*-\nNAME = 'caf\xe9'\n")
    path = modules.path(mod.__name__)
    path.write_bytes(b"# -*- coding: latin-1 -*-\r\nNAME = 'caf\xe9'\r\ndef f():\r\n    return NAME\r\n")
    sys.modules.pop(mod.__name__)
    again = modules.load(mod.__name__)
    assert again.f() == "caf\xe9"
    assert _baseline.get_baseline(mod.__name__).text == "# -*- coding: latin-1 -*-\nNAME = 'caf\xe9'\ndef f():\n    return NAME\n"


def test_only_an_index_of_the_import_time_code_is_kept(modules):
    mod = modules.create("""
        X = [i * 2 for i in range(10)]

        def f():
            return 1

        class C:
            def m(self):
                return 2
    """)
    index = _baseline.get_baseline(mod.__name__).code
    assert isinstance(index, types.CodeType)
    assert index.co_code == _empty_module_bytecode()  # the module body's bytecode is not kept
    nested = [c for c in index.co_consts if isinstance(c, types.CodeType)]
    assert mod.f.__code__ in nested and any(c is mod.f.__code__ for c in nested)  # shared, not copied
    assert {c.co_qualname for c in nested} >= {"f", "C"}


def test_a_first_dry_run_and_apply_work_from_the_index(modules):
    source = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(30)) + "class K:\n    def m(self):\n        return 1\n"
    mod = modules.create(source)
    modules.write(mod, source.replace("x + 7\n", "x + 70\n"))
    report = hotfix.dry_run(mod)
    assert report.verdict == "safe", str(report)
    patch = hotfix.apply(mod, probation=0)
    assert patch.status == "applied" and mod.f7(1) == 71 and mod.K().m() == 1
    adopted = _baseline.get_baseline(mod.__name__)
    assert adopted.text == source.replace("x + 7\n", "x + 70\n")
    assert adopted.code is not None and adopted.code.co_code == _empty_module_bytecode()


def test_a_baseline_is_immutable(modules):
    mod = modules.create("def f():\n    return 1\n")
    baseline = _baseline.get_baseline(mod.__name__)
    with pytest.raises(AttributeError, match="immutable"):
        baseline.sha256 = "0" * 64
