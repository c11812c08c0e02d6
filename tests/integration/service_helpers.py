"""Real services under ``hotfix run``: start, wait until ready, drive load, run the CLI.

Everything talks over Unix sockets in short private /tmp directories. Waits
are bounded loops on observable state (sockets, endpoint answers), never
sleeps standing in for synchronisation.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hotfix._cli import main as cli_main

READY_TIMEOUT = 90.0


def hotfix_run(socket_dir: str, *options: str) -> list[str]:
    """The launcher's command line (``python -m hotfix run``: the venv's ``hotfix`` need not be on PATH)."""
    return [sys.executable, "-m", "hotfix", "run", "--socket-dir", socket_dir, *options, "--"]


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFIX_") and k != "PYTHONPATH"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


class Service:
    """A service process tree started through ``hotfix run``; ``close()`` stops it and prints its log on failure."""

    def __init__(self, argv: Sequence[str], cwd: Path, log: Path, socket_dir: str, env: dict[str, str] | None = None):
        self.cwd = cwd
        self.log_path = log
        self.socket_dir = socket_dir
        self._log = open(log, "wb")  # closed in close()
        self.proc = subprocess.Popen(list(argv), cwd=cwd, env=env or service_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the service exited ({self.proc.returncode}):\n{self.log()}")

    def wait_for(self, what: str, predicate: Callable[[], object], timeout: float = READY_TIMEOUT) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            self.check_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log()}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        else:
            try:  # children the main process left behind
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        # pytest shows captured output only for a failed test: the service's log then
        print(f"---- {self.log_path.name} (last lines) ----\n{self.log()}")


def rollout(*argv: str) -> tuple[int, dict]:
    """``hotfix rollout ARGV --json`` in this process: (exit code, document)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["rollout", *argv, "--json"])
    doc = json.loads(out.getvalue())
    assert doc["exit_code"] == code
    return code, doc


def loaded(socket_dir: str, module: str, count: int) -> Callable[[], dict | None]:
    """Predicate: ``count`` live processes have ``module`` loaded (status answers from each)."""

    def check() -> dict | None:
        code, doc = rollout("--socket-dir", socket_dir, "status", module)
        holders = [p for p in doc.get("processes", []) if p["sha256"]]
        return doc if len(holders) >= count and not any(p["outcome"] == "unreachable" for p in doc.get("processes", [])) else None

    return check


def unix_get(path: str, url: str = "/", timeout: float = 10.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    conn.sock = sock
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


class Load:
    """Requests in a loop from one thread until stopped: every answer (status, body) or error is kept."""

    def __init__(self, call: Callable[[], tuple[int, dict]], limit: int = 20000) -> None:
        self.call = call
        self.limit = limit
        self.results: list[tuple[float, int, dict]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.results) + len(self.errors) < self.limit:
            try:
                status, body = self.call()
            except Exception as exc:  # counted as a failed request
                self.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            self.results.append((time.monotonic(), status, body))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def failed(self) -> list[tuple[float, int, dict]]:
        return [r for r in self.results if r[1] != 200]

    def grown_by(self, count: int) -> Callable[[], bool]:
        """A predicate: ``count`` answers more than now (so the last answer came after this moment)."""
        start = len(self.results)
        return lambda: len(self.results) >= start + count


def copy_example(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """Debian's ``redis-server`` on a free loopback port, persistence off, in its own directory."""

    def __init__(self, directory: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = directory / "redis.log"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(directory), "--logfile", str(self.log_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"redis-server did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def answers(http: str) -> Callable[[], bool]:
    """Predicate: the service answers HTTP on its Unix socket (servers may bind before they listen)."""

    def check() -> bool:
        try:
            return unix_get(http)[0] == 200
        except OSError:
            return False

    return check


#: The greeting module the gunicorn, Django and uvicorn examples share: a good and a bad edit.
GREETING_GOOD = 'def greet(name: str) -> str:\n    return f"Hi {name}"\n'
GREETING_BAD = 'def greet(name: str) -> str:\n    raise RuntimeError("regression")\n'


def greeting_hotfix_run(sockets: str) -> list[str]:
    """``hotfix run`` with the examples' smoke check on ``greeting`` and a short probation."""
    return hotfix_run(sockets, "--check", "greeting=checks:smoke", "--probation", "0.3")


README = Path(__file__).resolve().parents[2] / "README.md"


class Recipe:
    """One of the README's service recipes (section "Whole services"): what a user types."""

    def __init__(self, example: str, env: dict[str, str], run_options: list[str], command: list[str]) -> None:
        self.example = example
        self.env = env
        self.run_options = run_options  # hotfix run's options, without --socket-dir
        self.command = command  # after ``--``; ``python`` is the interpreter running the tests

    def argv(self, socket_dir: str, *run_extra: str, command_extra: Sequence[str] = ()) -> list[str]:
        """``hotfix run`` with this recipe, the socket directory and the documented test extras."""
        command = [sys.executable if arg == "python" else arg for arg in self.command]
        return [*hotfix_run(socket_dir, *self.run_options, *run_extra), *command, *command_extra]


def readme_recipes() -> dict[str, Recipe]:
    """The recipes of the README's ``sh`` block under "Recipes", as ``"<example> <program>"``."""
    import re
    import shlex

    text = README.read_text(encoding="utf-8")
    block = text.split("Recipes (the integration tests run exactly these", 1)[1].split("```sh\n", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
    recipes: dict[str, Recipe] = {}
    example = None
    for line in block.splitlines():
        title = re.search(r"\(examples/(\w+)\)", line)
        if line.startswith("#"):
            example = title.group(1) if title else None
            continue
        words = shlex.split(line)
        if example is None or "run" not in words:
            continue
        env = {}
        while words and "=" in words[0] and not words[0].startswith("-"):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        assert words[:2] == ["hotfix", "run"], line
        split = words.index("--")
        options = words[2:split]
        i = options.index("--socket-dir")
        del options[i:i + 2]
        command = words[split + 1:]
        recipes[f"{example} {command[0]}"] = Recipe(example, env, options, command)
        example = None
    return recipes


def readme_recipe(example: str, program: str) -> Recipe:
    """The README's recipe for ``examples/<example>`` run by ``program`` (gunicorn, uvicorn, celery, python)."""
    recipes = readme_recipes()
    key = f"{example} {program}"
    assert key in recipes, f"no README recipe for examples/{example} under {program}: {sorted(recipes)}"
    return recipes[key]
