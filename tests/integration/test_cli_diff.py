"""`hotfix diff OLD NEW` through the installed console script, as a deploy pipeline runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FIXTURES

REASONS = FIXTURES / "reasons"


def hotfix_command() -> list[str]:
    script = Path(sys.executable).with_name("hotfix")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hotfix"]


@pytest.mark.parametrize(
    ("pair", "code", "verdict"),
    [
        ("source-only", 0, "safe"),
        ("body-changed", 0, "safe"),
        ("signature-changed", 1, "risky"),
        ("bases-changed", 3, "blocked"),
        ("syntax-error", 3, "blocked"),  # a broken NEW file is a blocked edit, not a usage error
        ("undecodable-file", 3, "blocked"),
    ],
)
def test_diff_exit_codes_through_a_subprocess(pair, code, verdict, tmp_path):
    old = shutil.copy(REASONS / f"{pair}.before.py", tmp_path / "old.py")
    new = shutil.copy(REASONS / f"{pair}.after.py", tmp_path / "new.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFIX_")}
    done = subprocess.run([*hotfix_command(), "diff", str(old), str(new), "--json"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == code, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"] == verdict and "schema_version" in doc
    human = subprocess.run([*hotfix_command(), "diff", str(old), str(new)], capture_output=True, text=True,
                           timeout=60, env=env)
    assert human.returncode == code and verdict.upper() in human.stdout


def test_diff_usage_error_is_2(tmp_path):
    done = subprocess.run([*hotfix_command(), "diff", str(tmp_path / "nope.py")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == ""
