"""The content-addressed code cache: fast imports after install(), never stale."""

from __future__ import annotations

import os
import sys

import pytest

import hotfix
from hotfix import _baseline


@pytest.fixture
def cache(tmp_path):
    directory = tmp_path / "code-cache"
    hotfix.configure(code_cache=directory)
    yield directory
    hotfix.configure(code_cache=None)


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
    assert _baseline._code_cache is None
