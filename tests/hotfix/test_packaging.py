"""Packaging: metadata, licence, typing marker, version, and the sdist/wheel contents.

The build runs on a copy of the repository's tracked files (what a fresh clone has), with
``python -m build --no-isolation`` (setuptools and build come with the test extra), and
must print no deprecation warning about the project's own metadata.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import hotfix
from tests.helpers import REPO

pytest.importorskip("build")


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [line for line in out.splitlines() if line and (REPO / line).is_file()]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    src = tmp_path_factory.mktemp("src")
    for rel in _tracked_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"log": proc.stdout + proc.stderr, "sdist": next(out.glob("*.tar.gz")), "wheel": next(out.glob("*.whl"))}


def test_build_prints_no_deprecation_warning(built):
    assert "deprecat" not in built["log"].lower(), built["log"]
    # a Python warning category (SetuptoolsWarning, ...); setuptools' plain "warning:" notes are not about metadata
    assert not re.search(r"\b[A-Z]\w*Warning\b", built["log"]), built["log"]


def test_wheel_metadata(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(whl.read(meta_name).decode())
    assert meta["Name"] == "hotfix-runtime"  # "hotfix" is taken on PyPI; the import names stay
    assert meta["Version"] == hotfix.__version__
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not meta.get_all("Project-URL")  # none until the real address exists (see pyproject.toml)
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers and "Programming Language :: Python :: 3.13" in classifiers
    for package in ("hotfix", "safepoints", "verification"):
        assert f"{package}/py.typed" in names, package
        assert f"{package}/__init__.py" in names
    assert "hotfix/admin/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
    extras = set(meta.get_all("Provides-Extra"))
    assert {"metrics", "tracing", "completion", "test"} <= extras


def test_sdist_has_the_library_and_no_tests(built):
    """The tests need the examples, benchmarks and a checkout: the sdist leaves them all out."""
    with tarfile.open(built["sdist"]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert {"LICENSE", "README.md", "pyproject.toml", "hotfix/__init__.py", "hotfix/py.typed",
            "safepoints/py.typed", "verification/py.typed"} <= set(names)
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/", "scripts/", ".ci/"))]


def test_version_everywhere():
    assert re.search(r'^__version__ = "([^"]+)"$', (REPO / "hotfix" / "_version.py").read_text(), re.M)[1] == hotfix.__version__
    proc = subprocess.run([sys.executable, "-m", "hotfix", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"hotfix {hotfix.__version__} ")
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert Path(hotfix.__file__).with_name("py.typed").exists()
