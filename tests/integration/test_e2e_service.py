"""End to end: run examples/jobservice/serve.py and drive it only through the endpoint and the CLI."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hotfix._cli import main
from tests.helpers import EXAMPLES

PATCHES = EXAMPLES / "patches"


class Service:
    """serve.py in a subprocess; its stdout lines arrive on a queue (so waits have deadlines)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "jobservice"
        shutil.copytree(EXAMPLES / "jobservice", self.dir)
        self.token_file = tmp_path / "token"
        self.audit = tmp_path / "audit.jsonl"
        self.stderr = open(tmp_path / "service.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFIX_")}
        self.proc = subprocess.Popen(
            [sys.executable, str(self.dir / "serve.py"), "--token-file", str(self.token_file), "--audit", str(self.audit)],
            stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True)
        self.lines: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self.wait_for("hotfix admin endpoint: ").split(": ", 1)[1]
        assert self.wait_for("token file: ").split(": ", 1)[1] == str(self.token_file)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = 30.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"serve.py printed no {prefix!r} line within {timeout}s")
            if line is None:
                pytest.fail(f"serve.py exited: {self.log()}")
            if line.startswith(prefix):
                return line

    def log(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text()[-3000:]

    def deploy(self, patch: str) -> None:
        shutil.copyfile(PATCHES / patch, self.dir / "billing.py")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.stderr.close()


@pytest.fixture
def service(tmp_path, monkeypatch):
    for name in ("HOTFIX_URL", "HOTFIX_SOCKET", "HOTFIX_TOKEN", "HOTFIX_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    svc = Service(tmp_path)
    monkeypatch.setenv("HOTFIX_URL", svc.url)
    monkeypatch.setenv("HOTFIX_TOKEN_FILE", str(svc.token_file))
    yield svc
    svc.stop()


def cli(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == code
    return code, doc


def test_jobservice_patched_through_the_endpoint_and_the_cli(service, capsys):
    code, doc = cli(capsys, "status")
    assert code == 0
    status = doc["result"]
    assert len(status["workers"]) == 4
    assert status["stale_modules"] == []
    assert status["checks"] == {"billing": ["main.<locals>.billing_smoke"]}

    # 1. the fix: dry run, then apply exactly the reviewed version
    service.deploy("billing_fixed.py")
    assert [m["module"] for m in cli(capsys, "status")[1]["result"]["stale_modules"]] == ["billing"]
    code, doc = cli(capsys, "dry-run", "billing")
    assert (code, doc["result"]["outcome"]) == (0, "safe")
    assert [f["code"] for f in doc["result"]["report"]["findings"]] == ["body-changed"]
    sha = doc["result"]["report"]["source"]["disk"]["sha256"]
    code, doc = cli(capsys, "apply", "billing", "--expect-sha256", sha, "--probation", "0.5")
    assert (code, doc["result"]["outcome"]) == (0, "applied"), doc
    fix_id = doc["result"]["patch"]["id"]
    assert cli(capsys, "dry-run", "billing")[1]["result"]["outcome"] == "unchanged"
    assert cli(capsys, "status")[1]["result"]["stale_modules"] == []

    # 2. a syntax error is rejected: nothing changes
    service.deploy("billing_syntax_error.py")
    assert cli(capsys, "dry-run", "billing")[0] == 3
    code, doc = cli(capsys, "apply", "billing", "--probation", "0.5")
    assert (code, doc["result"]["error"], doc["result"]["reason"]) == (3, "rejected", "blocked")

    # 3. a regression fails the service's own smoke check: rolled back by itself
    service.deploy("billing_regression.py")
    code, doc = cli(capsys, "apply", "billing", "--probation", "0.5")
    assert (code, doc["result"]["error"], doc["result"]["reason"]) == (1, "rolled-back", "check-failed"), doc

    # 4. a patch that crashes on live orders: probation sees it even though workers catch it
    service.deploy("billing_crashes.py")
    code, doc = cli(capsys, "apply", "billing", "--probation", "10")
    assert (code, doc["result"]["reason"]) == (1, "probation-failed"), doc
    assert "KeyError" in doc["result"]["failure"]

    # 5. the fix is still in effect; roll it back on request
    in_effect = [p["id"] for p in cli(capsys, "status")[1]["result"]["patches"] if p["in_effect"]]
    assert in_effect == [fix_id]
    code, doc = cli(capsys, "rollback")
    assert (code, doc["result"]["rollback"]["patch_id"]) == (0, fix_id)
    kinds = [(e["kind"], e.get("reason")) for e in cli(capsys, "history")[1]["result"]["entries"]]
    assert kinds[-1] == ("rollback", "requested")
    assert ("rollback", "check-failed") in kinds

    # 6. no token, no service
    assert main(["status", "--token", "not-the-token-0123456789"]) == 4
    capsys.readouterr()

    # every request was audited, never with the token
    token = service.token_file.read_text().strip()
    audit_text = service.audit.read_text()
    assert token not in audit_text
    records = [json.loads(line) for line in audit_text.splitlines()]
    assert {"dry-run", "apply", "rollback", "status", "history"} <= {r["route"] for r in records}
    assert any(r["status"] == 401 for r in records)
    assert service.stop() == 0
    assert "jobservice stopped" in service.wait_for("jobservice stopped")
    assert not service.token_file.exists()  # the generated token file went away with the service
