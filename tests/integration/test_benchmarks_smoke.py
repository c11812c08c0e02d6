"""The new benchmark scripts run end to end at tiny sizes (no timing is checked: figures are information)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, "benchmarks")
    import _common as c, bench_import, bench_latency
    lat = bench_latency.build(bench_latency.collect(True, sizes=(50,), workers=(2,), rounds=1, patches=1))
    imp = bench_import.build(bench_import.collect(True, rounds=1, large=False))
    print(json.dumps({"latency": lat["data"], "import": imp["data"]["modules"],
                      "text": c.render_summary([lat, imp]) + c.render_section(lat)}, default=str))
""")


def test_latency_and_import_benchmarks_run():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    for engine in ("hotfix", "reload"):
        row = out["latency"][f"{engine}/50/2"]
        assert row["visible"] and row["failed_jobs"] == 0, out["text"]
    assert out["import"]["hotfix"] > 0 and out["import"]["stdlib"] > 0
    assert "longest worker gap during a patch, hotfix, N=50" in out["text"]
