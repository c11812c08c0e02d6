"""``hotfix run -- python script.py``: a plain asyncio script with no hotfix code has its event loops
registered (the main thread's ``asyncio.run`` and a loop in a background thread) and takes patches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from hotfix.admin import Client

from .service_helpers import READY_TIMEOUT, hotfix_run, rollout, service_env

SCRIPT = r"""
import asyncio, os, sys, threading
import appmod

stdin_closed = threading.Event()  # the test closes stdin: stop
threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()

async def report(where):
    last = None
    while True:
        value = appmod.value()
        if value != last:
            os.write(1, f"{where} {value}\n".encode())  # one write: the two loops' lines never mix
            last = value
        if stdin_closed.is_set():
            return
        await asyncio.sleep(0.005)

background = threading.Thread(target=lambda: asyncio.run(report("background")), name="bg-loop")
background.start()
asyncio.run(report("main"))
background.join()
os.write(1, f"pid {os.getpid()}\n".encode())
"""


class Lines:
    """The script's stdout, line by line, read by a thread; ``wait_for`` blocks on a condition."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for(self, *wanted: str) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: set(wanted) <= set(self.lines) or "<eof>" in self.lines, READY_TIMEOUT)
            assert ok and set(wanted) <= set(self.lines), (wanted, self.lines)


def test_a_plain_asyncio_script_has_its_loops_registered_and_takes_patches(tmp_path, short_dir):
    sockets = short_dir("hfra-")
    (tmp_path / "appmod.py").write_text("def value():\n    return 'one'\n")
    (tmp_path / "main.py").write_text(SCRIPT)
    proc = subprocess.Popen([*hotfix_run(sockets), sys.executable, "main.py"], cwd=tmp_path, env=service_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = Lines(proc.stdout)
        lines.wait_for("main one", "background one")
        with open(os.path.join(sockets, "token")) as f:
            token = f.read().strip()
        status = Client(socket_path=os.path.join(sockets, f"{proc.pid}.sock"), token=token).status()
        assert status.status == 200
        workers = {w["name"]: w for w in status.body["workers"]}
        assert set(workers) == {"asyncio loop (MainThread)", "asyncio loop (bg-loop)"}, status.body["workers"]
        assert all(w["loop"] and w["units"] == 0 for w in workers.values())

        (tmp_path / "appmod.py").write_text("def value():\n    return 'two'\n")
        code, doc = rollout("--socket-dir", sockets, "apply", "appmod", "--probation", "0")
        assert (code, doc["outcome"]) == (0, "applied"), json.dumps(doc)
        lines.wait_for("main two", "background two")

        (tmp_path / "appmod.py").write_text("def value():\n    return 'three'\n")
        code, doc = rollout("--socket-dir", sockets, "apply", "appmod", "--probation", "0")
        assert (code, doc["outcome"]) == (0, "applied"), json.dumps(doc)
        lines.wait_for("main three", "background three")
        proc.stdin.close()
        assert proc.wait(READY_TIMEOUT) == 0
        lines.wait_for(f"pid {proc.pid}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        print(proc.stderr.read())


def test_the_kill_switch_leaves_loops_alone(tmp_path, short_dir):
    sockets = short_dir("hfrk-")
    (tmp_path / "main.py").write_text(
        "import asyncio, json, sys\n"
        "async def main():\n"
        "    import safepoints\n"
        "    return [w.name for w in safepoints.statistics().workers]\n"
        "print(json.dumps([asyncio.run(main()), 'hotfix' in sys.modules]))\n")
    for extra_env, option, expected in (({}, (), [["asyncio loop (MainThread)"], True]),
                                         ({}, ("--no-integrations",), [[], True]),
                                         ({"HOTFIX_DISABLED": "1"}, (), [[], False])):
        done = subprocess.run([*hotfix_run(sockets, *option), sys.executable, "main.py"], cwd=tmp_path,
                              env=service_env(**extra_env), capture_output=True, text=True, timeout=120)
        assert (done.returncode, json.loads(done.stdout)) == (0, expected), done.stderr
