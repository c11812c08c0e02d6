"""The content-addressed code cache: fast imports after install(), never stale."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

import hotfix
from hotfix import _baseline


@pytest.fixture
def cache(tmp_path):
    directory = tmp_path / "code-cache"
    hotfix.configure(code_cache=directory)
    yield directory
    hotfix.configure(code_cache=None)  # back to the default: beside the source


@pytest.fixture
def beside(monkeypatch):
    """The default cache, with Python allowed to write bytecode (the test environment may forbid it)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert _baseline._code_cache is _baseline._BESIDE
    return lambda module: Path(_baseline._beside_file(module.__file__))


def test_second_import_of_the_same_content_does_not_compile(modules, cache, monkeypatch):
    m = modules.create("def f():\n    return 1\n")
    assert len(list(cache.iterdir())) == 1
    code = m.f.__code__
    sys.modules.pop(m.__name__)

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled although the cache had this content")

    monkeypatch.setattr(_baseline.BaselineLoader, "source_to_code", no_compile)
    again = modules.load(m.__name__)
    assert again.f() == 1 and again.f.__code__ == code
    assert _baseline.get_baseline(m.__name__).code is not None


def test_same_mtime_same_size_edit_is_never_served_stale(modules, cache):
    m = modules.create("def f():\n    return 1\n")
    modules.write(m, "def f():\n    return 2\n", keep_stat=True)  # the .pyc check would miss this
    sys.modules.pop(m.__name__)
    again = modules.load(m.__name__)
    assert again.f() == 2
    assert len(list(cache.iterdir())) == 2


def test_corrupt_cache_entry_falls_back_to_compiling(modules, cache):
    m = modules.create("def f():\n    return 1\n")
    (entry,) = cache.iterdir()
    entry.write_bytes(b"not marshal data")
    sys.modules.pop(m.__name__)
    assert modules.load(m.__name__).f() == 1


def test_cache_directory_open_to_others_is_refused(tmp_path):
    directory = tmp_path / "open"
    directory.mkdir()
    os.chmod(directory, 0o777)
    with pytest.raises(ValueError, match="not writable by group or others"):
        hotfix.configure(code_cache=directory)
    assert _baseline._code_cache is _baseline._BESIDE  # the setting did not change


def test_relative_cache_directory_is_refused():
    with pytest.raises(ValueError, match="absolute"):
        hotfix.configure(code_cache="__pycache__")
    assert _baseline._code_cache is _baseline._BESIDE


def _forbid_compiling(monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled although the cache had this content")

    monkeypatch.setattr(_baseline.BaselineLoader, "source_to_code", no_compile)


def test_default_cache_beside_the_source_serves_the_next_import(modules, beside, monkeypatch):
    m = modules.create("def f():\n    return 1\n")
    entry = beside(m)
    assert entry.parent.name == "__pycache__" and entry.name.endswith(".hotfix") and entry.is_file()
    assert entry.stat().st_mode & 0o077 == 0
    code = m.f.__code__
    sys.modules.pop(m.__name__)
    _forbid_compiling(monkeypatch)
    again = modules.load(m.__name__)
    assert again.f() == 1 and again.f.__code__ == code
    assert _baseline.get_baseline(m.__name__).text == "def f():\n    return 1\n"


def test_default_cache_never_serves_a_same_mtime_same_size_edit(modules, beside):
    m = modules.create("def f():\n    return 1\n")
    modules.write(m, "def f():\n    return 2\n", keep_stat=True)  # the .pyc check would miss this
    sys.modules.pop(m.__name__)
    again = modules.load(m.__name__)
    assert again.f() == 2
    sys.modules.pop(m.__name__)
    assert modules.load(m.__name__).f() == 2  # the entry was replaced by the new content's


def test_default_cache_entry_of_another_file_is_not_used(modules, beside):
    a = modules.create("def f():\n    return 'a'\n")
    b = modules.create("def f():\n    return 'b'\n")
    shutil.copyfile(beside(a), beside(b))  # b's entry now holds a's code
    sys.modules.pop(b.__name__)
    assert modules.load(b.__name__).f() == "b"


def test_default_cache_entry_writable_by_others_is_not_loaded(modules, beside):
    m = modules.create("def f():\n    return 1\n")
    entry = beside(m)
    # forge an entry with the right key but other code, then open it to everyone: it must be ignored
    key, _code, packed = __import__("marshal").loads(entry.read_bytes())
    forged = compile("def f():\n    return 'forged'\n", m.__file__, "exec")
    entry.write_bytes(__import__("marshal").dumps((key, forged, packed)))
    os.chmod(entry, 0o666)
    sys.modules.pop(m.__name__)
    assert modules.load(m.__name__).f() == 1


def test_default_cache_writes_nothing_when_python_writes_no_bytecode(modules, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    m = modules.create("def f():\n    return 1\n")
    assert not Path(_baseline._beside_file(m.__file__)).exists()


def test_cache_off_compiles_every_import(modules, beside):
    hotfix.configure(code_cache=False)
    try:
        m = modules.create("def f():\n    return 1\n")
        assert not beside(m).exists()
    finally:
        hotfix.configure(code_cache=None)


def test_no_cache_tag_means_no_cache_file_and_a_normal_import(modules, beside, monkeypatch):
    """An interpreter without a cache tag writes no .pyc; hotfix writes no entry either and still imports."""
    monkeypatch.setattr(sys.implementation, "cache_tag", None)
    m = modules.create("def f():\n    return 1\n")
    assert m.f() == 1
    assert _baseline._beside_file(m.__file__) is None
    assert not (Path(m.__file__).parent / "__pycache__").exists()
