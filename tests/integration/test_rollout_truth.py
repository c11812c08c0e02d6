"""What ``hotfix rollout`` prints is exactly what happened, on plain processes started by ``hotfix run``.

Found by running the README as a new user would: a status that counted
processes without the module as running it; a second rollout (or an apply)
started during another one's probation reported UNCHANGED with exit 0; a
canary rolled back by the rollout was shown with the sha256 it no longer
runs, and the document said ``converged``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .service_helpers import hotfix_run, rollout, service_env

V1 = "def f():\n    return 1\n"
V2 = "def f():\n    return 2\n"
V3 = "def f():\n    return 3\n"

#: A process of the service: imports ``appmod`` when told to, then waits for stdin to close.
PROCESS = """
import sys
if "load" in sys.argv:
    import appmod
print("ready", flush=True)
sys.stdin.read()
"""

WAIT = 90.0


class Processes:
    """Plain Python processes, each started through ``hotfix run`` into one socket directory."""

    def __init__(self, tmp_path: Path, sockets: str) -> None:
        self.tmp_path = tmp_path
        self.sockets = sockets
        self.procs: list[subprocess.Popen] = []
        (tmp_path / "proc.py").write_text(PROCESS)

    def start(self, *args: str) -> int:
        proc = subprocess.Popen([*hotfix_run(self.sockets), sys.executable, "proc.py", *args], cwd=self.tmp_path,
                                env=service_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "ready", self.output()
        assert os.path.exists(os.path.join(self.sockets, f"{proc.pid}.sock")), self.output()
        return proc.pid

    def output(self) -> str:
        out = []
        for proc in self.procs:
            if proc.poll() is None:
                continue
            out.append(f"---- pid {proc.pid} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        return "\n".join(out)

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            err = proc.stderr.read() if proc.stderr else ""
            print(f"---- pid {proc.pid} (exit {proc.returncode}) ----\n{err[-3000:]}")


def start_rollout(sockets: str, *argv: str) -> subprocess.Popen:
    """``hotfix rollout ... --json`` in its own process (it runs while the test looks at the service)."""
    return subprocess.Popen([sys.executable, "-m", "hotfix", "rollout", "--socket-dir", sockets, *argv, "--json"],
                            env=service_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> tuple[int, dict]:
    out, err = proc.communicate(timeout=WAIT * 2)
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"no JSON from rollout (exit {proc.returncode}): {out}\n{err}") from None
    return proc.returncode, doc


def wait_in_transaction(sockets: str, pid: int, client: subprocess.Popen) -> dict:
    """Poll ``rollout status`` until process ``pid`` is in the middle of the transaction ``client`` asked for."""
    deadline = time.monotonic() + WAIT
    while True:
        if client.poll() is not None:
            out, err = client.communicate()
            raise AssertionError(f"the client exited ({client.returncode}) first: {out}\n{err}")
        code, doc = rollout("--socket-dir", sockets, "status", "appmod")
        row = next((p for p in doc["processes"] if p["pid"] == pid), None)
        if row and row["outcome"] == "in-transaction":
            return {"code": code, **doc}
        assert time.monotonic() < deadline, f"process {pid} never showed its transaction: {doc}"
        time.sleep(0.05)


def running(sockets: str) -> dict[int, str | None]:
    code, doc = rollout("--socket-dir", sockets, "status", "appmod")
    return {p["pid"]: p["sha256"] for p in doc["processes"]}


def sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_status_counts_only_the_processes_that_run_the_module(tmp_path, short_dir):
    sockets = short_dir("hfst-")
    (tmp_path / "appmod.py").write_text(V1)
    fleet = Processes(tmp_path, sockets)
    try:
        holder = fleet.start("load")
        other = fleet.start()
        code, doc = rollout("--socket-dir", sockets, "status", "appmod")
        assert (code, doc["converged"]) == (0, True), doc
        rows = {p["pid"]: p["outcome"] for p in doc["processes"]}
        assert rows == {holder: "current", other: "not-loaded"}, doc
        # not "2 live process(es) run the same code": one of them has never imported it
        assert "1 live process(es) with appmod loaded run" in doc["message"], doc["message"]
        assert "1 not-loaded" in doc["message"], doc["message"]
    finally:
        fleet.close()


def test_a_second_rollout_during_a_probation_changes_nothing_and_says_so(tmp_path, short_dir):
    sockets = short_dir("hfsb-")
    (tmp_path / "appmod.py").write_text(V1)
    fleet = Processes(tmp_path, sockets)
    try:
        pid = fleet.start("load")
        (tmp_path / "appmod.py").write_text(V2)
        first = start_rollout(sockets, "apply", "appmod", "--probation", "8")
        status = wait_in_transaction(sockets, pid, first)
        # mid-probation the process runs V2 only provisionally: not converged, exit 1
        assert (status["code"], status["converged"]) == (1, False), status
        code, doc = rollout("--socket-dir", sockets, "apply", "appmod")
        assert (code, doc["outcome"]) == (3, "aborted"), doc
        assert "another rollout" in doc["message"] and "nothing was changed" in doc["message"], doc
        code, doc = rollout("--socket-dir", sockets, "rollback")
        assert (code, doc["outcome"]) == (3, "aborted"), doc
        code, doc = finished(first)
        assert (code, doc["outcome"]) == (0, "applied"), doc

        # an apply sent to the process itself (not a rollout: no lock) is seen in its probation too
        (tmp_path / "appmod.py").write_text(V3)
        direct = subprocess.Popen([sys.executable, "-m", "hotfix", "--socket", os.path.join(sockets, f"{pid}.sock"),
                                   "apply", "appmod", "--probation", "8"], env=service_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_in_transaction(sockets, pid, direct)
            code, doc = rollout("--socket-dir", sockets, "apply", "appmod")
            # not "UNCHANGED - every live process already runs the disk version": it may still roll back
            assert (code, doc["outcome"]) == (3, "aborted"), doc
            row = next(p for p in doc["processes"] if p["pid"] == pid)
            assert row["outcome"] == "busy" and row["pending"], row
        finally:
            out, _ = direct.communicate(timeout=WAIT * 2)
        assert direct.returncode == 0, out
        assert running(sockets) == {pid: sha(V3)}
    finally:
        fleet.close()


def test_a_canary_undone_by_the_rollout_shows_the_code_it_runs_again(tmp_path, short_dir):
    """The file changes between the canary and the next process: the next one refuses (its pin no longer
    matches), the canary is rolled back, and every row shows what its process runs now."""
    sockets = short_dir("hfsc-")
    (tmp_path / "appmod.py").write_text(V1)
    fleet = Processes(tmp_path, sockets)
    try:
        first = fleet.start("load")
        second = fleet.start("load")
        (tmp_path / "appmod.py").write_text(V2)
        run = start_rollout(sockets, "--canary", str(first), "apply", "appmod", "--probation", "4")
        wait_in_transaction(sockets, first, run)
        (tmp_path / "appmod.py").write_text(V3)  # deployed again while the canary is in probation
        code, doc = finished(run)
        assert (code, doc["outcome"], doc["converged"], doc["consistent"]) == (3, "rolled-back", False, True), doc
        rows = {p["pid"]: p for p in doc["processes"]}
        assert (rows[first]["outcome"], rows[first]["sha256"]) == ("rolled-back", sha(V1)), rows[first]
        assert (rows[second]["outcome"], rows[second]["sha256"]) == ("rejected", sha(V1)), rows[second]
        assert running(sockets) == {first: sha(V1), second: sha(V1)}
    finally:
        fleet.close()


def test_a_blocked_change_says_what_to_do(tmp_path, short_dir):
    """A file that does not compile is not 'restart instead': a restart would not start either."""
    sockets = short_dir("hfsk-")
    (tmp_path / "appmod.py").write_text(V1)
    fleet = Processes(tmp_path, sockets)
    try:
        pid = fleet.start("load")
        (tmp_path / "appmod.py").write_text("def f(:\n    return 2\n")
        code, doc = rollout("--socket-dir", sockets, "apply", "appmod")
        assert (code, doc["outcome"]) == (3, "aborted"), doc
        assert "syntax-error" in doc["message"] and "does not compile: fix it" in doc["message"], doc["message"]
        assert "restart the service" not in doc["message"]
        assert doc["processes"][0]["findings"] == ["syntax-error"], doc
        assert running(sockets) == {pid: sha(V1)}
    finally:
        fleet.close()


#: A fork source: imports appmod, forks a child; on "hide" the child closes its endpoint for a while
#: (as if it had been forked an instant before the rollout looked), then serves it again.
FORK_SOURCE = """
import os, sys, time
import appmod
from hotfix._run import _bootstrap
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w)
    while os.read(r, 1) == b"h":
        _bootstrap.endpoint().close(timeout=1.0)
        time.sleep(3.0)
        _bootstrap._start_endpoint()
    os._exit(0)
os.close(r)
print(pid, flush=True)
for line in sys.stdin:
    os.write(w, b"h")
    print("hidden", flush=True)
os.close(w)
os.waitpid(pid, 0)
"""


def test_a_child_without_its_endpoint_yet_is_waited_for(tmp_path, short_dir):
    """APPLIED means every live process with the module runs it: a fork source's child that has not
    served its socket yet is waited for and patched, not missed."""
    sockets = short_dir("hfsf-")
    (tmp_path / "appmod.py").write_text(V1)
    (tmp_path / "source.py").write_text(FORK_SOURCE)
    proc = subprocess.Popen([*hotfix_run(sockets, "--probation", "0"), sys.executable, "source.py"], cwd=tmp_path,
                            env=service_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline()) if proc.stdout else 0
        deadline = time.monotonic() + WAIT
        while set(running(sockets)) != {proc.pid, child}:
            assert time.monotonic() < deadline and proc.poll() is None, "the child never served its endpoint"
            time.sleep(0.05)
        (tmp_path / "appmod.py").write_text(V2)
        assert proc.stdin and proc.stdout
        proc.stdin.write("hide\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "hidden"
        while os.path.exists(os.path.join(sockets, f"{child}.sock")):
            assert time.monotonic() < deadline, "the child kept its socket"
            time.sleep(0.02)
        code, doc = rollout("--socket-dir", sockets, "apply", "appmod")
        assert (code, doc["outcome"]) == (0, "applied"), doc
        rows = {p["pid"]: p for p in doc["processes"]}
        assert rows[child]["late"] and rows[child]["outcome"] == "applied", rows
        assert running(sockets) == {proc.pid: sha(V2), child: sha(V2)}
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(60)
        print(proc.stderr.read() if proc.stderr else "")
