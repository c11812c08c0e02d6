"""The Ansible collection and playbook (``ansible/``) against three managed hosts.

Each host is an inventory host with ``ansible_connection: local`` and its own
variables: its own copy of the application (``pricing.py``), its own service
under ``hotfix run`` with no hotfix code in it (two processes: a parent and a
forked worker, each serving a hotfix endpoint in the host's socket directory
and answering pricing requests on its own socket), and its own restart script. ``ansible-playbook`` from the venv runs
``ansible/deploy-hotfix.yml`` exactly as the README shows it, offline, with a
private ANSIBLE_HOME and temp directories under tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

from hotfix.admin import Client
from tests.helpers import REPO

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
HOTFIX = Path(sys.executable).parent / "hotfix"
PLAYBOOK = REPO / "ansible" / "deploy-hotfix.yml"
COLLECTIONS = REPO / "ansible" / "collections"
HOSTS = {"web1": "EUR", "web2": "JPY", "web3": "USD"}  # the second host prices in yen

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed (test extra)")

V1 = '''
"""Prices as customers see them."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Price:
    cents: int
    currency: str


def label(cents, currency):
    return f"{cents // 100} {currency}"
'''
# the fix: show the cents
V2 = V1.replace('f"{cents // 100} {currency}"', 'f"{cents / 100:.2f} {currency}"')
# a "fix" that only knows two currencies: its check fails on the host that prices in yen
V3 = V1.replace('''def label(cents, currency):
    return f"{cents // 100} {currency}"''', '''DECIMALS = {"EUR": 2, "USD": 2}


def label(cents, currency):
    digits = DECIMALS[currency]
    return f"{cents / 10 ** digits:.{digits}f} {currency}"''')
# a new dataclass field: hotfix cannot apply it in place (blocked), a restart can
V4 = V2.replace("    currency: str\n", "    currency: str\n    tax_cents: int = 0\n").replace(
    '{currency}"', '{currency} incl. tax"')

CHECKS = '''
"""The service's smoke check, run by hotfix in each process after a patch."""
import json
import os

import pricing

CURRENCY = json.load(open(os.path.join(os.path.dirname(__file__), "host.json")))["currency"]


def smoke():
    return pricing.label(1999, CURRENCY).split()[1] == CURRENCY
'''

SERVICE = '''
"""A host's service: a parent and one forked worker, each answering pricing requests on its own socket."""
import os
import socketserver
import sys

import pricing
from checks import CURRENCY

APP_SOCKETS = sys.argv[1]


class Quote(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(f"{os.getpid()} {pricing.label(1999, CURRENCY)}\\n".encode())


os.fork()
with socketserver.UnixStreamServer(os.path.join(APP_SOCKETS, f"app-{os.getpid()}.sock"), Quote) as server:
    server.serve_forever()
'''

RESTART = '''#!/usr/bin/env bash
# Restart this host's service: stop its process group, start it again, wait until both
# processes serve their hotfix endpoint and their pricing socket.
set -uo pipefail
cd "{app}"
if [[ -f "{home}/service.pid" ]]; then
  pgid="$(cat "{home}/service.pid")"
  kill -TERM -- "-$pgid" 2>/dev/null
  for _ in $(seq 600); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.05; done
  kill -KILL -- "-$pgid" 2>/dev/null
fi
rm -f "{sockets}"/*.sock "{app_sockets}"/*.sock
setsid "{hotfix}" run --socket-dir "{sockets}" --root "{app}" --check pricing=checks:smoke \\
    -- "{python}" service.py "{app_sockets}" >>"{home}/service.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"{home}/service.pid"
for _ in $(seq 1200); do
  endpoints=$(find "{sockets}" -name '*.sock' | wc -l)
  quotes=$(find "{app_sockets}" -name 'app-*.sock' | wc -l)
  if [[ $endpoints -ge 2 && $quotes -ge 2 ]]; then exit 0; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
echo "the service did not start:" >&2
tail -n 40 "{home}/service.log" >&2
exit 1
'''


def sha(text: str) -> str:
    return hashlib.sha256(textwrap.dedent(text).encode()).hexdigest()


@attrs.define
class Host:
    name: str
    currency: str
    home: Path  # the host's own directory: app, scripts, pid file, log
    sockets: str  # hotfix endpoints: <pid>.sock and token
    app_sockets: str  # the service's own sockets: app-<pid>.sock

    @property
    def app(self) -> Path:
        return self.home / "app"

    @property
    def module_file(self) -> Path:
        return self.app / "pricing.py"

    def pids(self) -> list[int]:
        return sorted(int(n[:-5]) for n in os.listdir(self.sockets) if n.endswith(".sock") and n[:-5].isdigit())

    def client(self, pid: int) -> Client:
        token = Path(self.sockets, "token").read_text().strip()
        return Client(socket_path=os.path.join(self.sockets, f"{pid}.sock"), token=token, timeout=60)

    def quotes(self) -> dict[int, str]:
        """What every process of the service answers now: the code it really runs."""
        out = {}
        for name in os.listdir(self.app_sockets):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(30)
                s.connect(os.path.join(self.app_sockets, name))
                pid, text = s.makefile().readline().strip().split(" ", 1)
                out[int(pid)] = text
        return out

    def running(self) -> dict[int, str]:
        """sha256 of the pricing version each process runs (hotfix's baseline)."""
        return {pid: self.client(pid).dry_run("pricing").body["report"]["source"]["baseline"]["sha256"]
                for pid in self.pids()}

    def history(self) -> dict[int, list[tuple[str, str]]]:
        return {pid: [(e["kind"], e.get("status") or e.get("reason")) for e in self.client(pid).history().body["entries"]]
                for pid in self.pids()}

    def assert_runs(self, version: str, currency_label: str) -> None:
        """The file, every process's running code and its answers are this version."""
        assert self.module_file.read_text() == textwrap.dedent(version), self.name
        assert set(self.running().values()) == {sha(version)}, self.name
        quotes = self.quotes()
        assert sorted(quotes) == self.pids() and len(quotes) == 2, (self.name, quotes)
        assert set(quotes.values()) == {currency_label}, (self.name, quotes)


@attrs.define
class Fleet:
    hosts: list[Host]
    tmp: Path

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def playbook(self, version: str, *extra: str, check: bool = False) -> tuple[int, str, dict[str, dict[str, int]]]:
        """Run deploy-hotfix.yml with VERSION as the reviewed file; (rc, output, recap per host)."""
        src = self.tmp / f"review-{sha(version)[:12]}" / "pricing.py"
        src.parent.mkdir(exist_ok=True)
        src.write_text(textwrap.dedent(version))
        argv = [str(ANSIBLE_PLAYBOOK), "-i", str(self.tmp / "inventory.yml"), str(PLAYBOOK),
                "-e", "hotfix_module=pricing", "-e", f"hotfix_src={src}",
                "-e", "hotfix_probation=0.2", "-e", "hotfix_timeout=30", *extra]
        if check:
            argv.append("--check")
        done = subprocess.run(argv, cwd=self.tmp, env=ansible_env(self.tmp), capture_output=True, text=True,
                              timeout=300)
        output = f"$ {' '.join(argv)}\n(exit {done.returncode})\n{done.stdout}\n{done.stderr}"
        print(output)  # pytest shows it when the test fails
        counts = recap(done.stdout)
        assert counts.pop("localhost", {}).get("failed", 0) == 0, output  # the play that pins the version
        return done.returncode, output, counts


    def module(self, host: str, **args: object) -> tuple[str, dict]:
        """Run hotfix.ops.hotfix_patch ad hoc on one host: (status word, the module's result)."""
        argv = [str(ANSIBLE_PLAYBOOK.with_name("ansible")), host, "-i", str(self.tmp / "inventory.yml"),
                "-m", "hotfix.ops.hotfix_patch", "-a", json.dumps(args), "-o"]
        done = subprocess.run(argv, cwd=self.tmp, env=ansible_env(self.tmp), capture_output=True, text=True,
                              timeout=300)
        print(f"$ {' '.join(argv)}\n(exit {done.returncode})\n{done.stdout}\n{done.stderr}")
        match = re.search(r"^\S+ \| (\w+)!? => (\{.*\})$", done.stdout, re.M)
        assert match, done.stdout + done.stderr
        return match[1], json.loads(match[2])


def ansible_env(tmp: Path) -> dict[str, str]:
    """Offline, private, quiet: nothing from ~/.ansible, /etc/ansible or the operator's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "HOTFIX_"))}
    config = tmp / "ansible.cfg"
    config.touch()
    env.update({
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote-tmp"),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_PIPELINING": "true",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_FORCE_COLOR": "false",
        "ANSIBLE_GATHERING": "explicit",
        "LC_ALL": "C.UTF-8",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters per host."""
    tail = stdout.rsplit("PLAY RECAP", 1)[-1]
    return {m[1]: {k: int(v) for k, v in (kv.split("=") for kv in m[2].split())} for m in RECAP.finditer(tail)}


@pytest.fixture
def fleet(tmp_path, short_dir):
    hosts = []
    inventory: dict = {"all": {"children": {"app": {"hosts": {}}}}}
    for name, currency in HOSTS.items():
        base = short_dir(f"hf{name}-")
        host = Host(name, currency, tmp_path / name, os.path.join(base, "hotfix"), os.path.join(base, "app"))
        host.app.mkdir(parents=True)
        os.mkdir(host.app_sockets, 0o700)
        host.module_file.write_text(textwrap.dedent(V1))
        (host.app / "checks.py").write_text(textwrap.dedent(CHECKS))
        (host.app / "service.py").write_text(textwrap.dedent(SERVICE))
        (host.app / "host.json").write_text(json.dumps({"currency": currency}))
        restart = host.home / "restart.sh"
        restart.write_text(RESTART.format(app=host.app, home=host.home, sockets=host.sockets,
                                          app_sockets=host.app_sockets, python=sys.executable, hotfix=HOTFIX))
        inventory["all"]["children"]["app"]["hosts"][name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "hotfix_executable": str(HOTFIX),
            "hotfix_dest": str(host.module_file),
            "hotfix_socket_dir": host.sockets,
            "hotfix_restart_command": f"bash {restart}",
        }
        hosts.append(host)
    (tmp_path / "inventory.yml").write_text(json.dumps(inventory, indent=2))
    try:
        for host in hosts:
            started = subprocess.run(["bash", str(host.home / "restart.sh")], capture_output=True, text=True,
                                     timeout=120)
            assert started.returncode == 0, f"{host.name}: {started.stdout}{started.stderr}"
        yield Fleet(hosts, tmp_path)
    finally:
        for host in hosts:
            stop(host)


def stop(host: Host) -> None:
    pid_file = host.home / "service.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
    log = host.home / "service.log"
    if log.exists() and log.stat().st_size:
        print(f"--- {host.name} service.log\n{log.read_text()[-3000:]}")
    shutil.rmtree(host.sockets, ignore_errors=True)


# --------------------------------------------------------------------------- the scenarios


def test_good_fix_rolled_out_host_by_host_then_nothing_to_do(fleet):
    for host in fleet.hosts:
        host.assert_runs(V1, f"19 {host.currency}")
    pids = {h.name: h.pids() for h in fleet.hosts}

    # check mode (one host): a dry run, nothing written, nothing patched
    rc, out, counts = fleet.playbook(V2, "--limit", "web1", check=True)
    assert rc == 0, out
    assert list(counts) == ["web1"] and counts["web1"]["failed"] == 0, counts
    for host in fleet.hosts:
        host.assert_runs(V1, f"19 {host.currency}")

    rc, out, counts = fleet.playbook(V2)
    assert rc == 0, out
    assert sorted(counts) == sorted(HOSTS)
    for host in fleet.hosts:
        assert counts[host.name]["failed"] == 0 and counts[host.name]["changed"] == 2, (host.name, counts)  # copy, apply
        host.assert_runs(V2, f"19.99 {host.currency}")
        assert host.pids() == pids[host.name]  # patched in place, not restarted
        assert {tuple(h) for h in host.history().values()} == {(("patch", "applied"),)}
    # one host at a time, the first one first
    order = [out.index(f"changed: [{name}]") for name in HOSTS]
    assert order == sorted(order)

    rc, out, counts = fleet.playbook(V2)
    assert rc == 0, out
    assert {name: c["changed"] for name, c in counts.items()} == dict.fromkeys(HOSTS, 0)
    for host in fleet.hosts:
        host.assert_runs(V2, f"19.99 {host.currency}")
        assert {tuple(h) for h in host.history().values()} == {(("patch", "applied"),)}


def test_check_failing_on_the_second_host_rolls_back_the_first_and_spares_the_third(fleet):
    web1, web2, web3 = fleet.hosts
    web3_stat = web3.module_file.stat()

    rc, out, counts = fleet.playbook(V3)
    assert rc != 0, out
    assert "web2: " in out and "reason rolled-back, hotfix exit 1" in out, out
    assert counts["web1"]["failed"] == 0 and counts["web2"]["failed"] == 1 and "web3" not in counts, counts
    # web1 was patched, then rolled back with its previous file put back
    web1.assert_runs(V1, "19 EUR")
    assert {tuple(h) for h in web1.history().values()} == {(("patch", "applied"), ("rollback", "requested"))}
    # web2: the canary's check failed, hotfix undid it; the other process was never touched
    web2.assert_runs(V1, "19 JPY")
    assert sorted(len(h) for h in web2.history().values()) == [0, 2]
    # web3 untouched, its file not even rewritten
    web3.assert_runs(V1, "19 USD")
    assert web3.module_file.stat().st_mtime_ns == web3_stat.st_mtime_ns
    assert set(map(tuple, web3.history().values())) == {()}

    # the module's failures carry a typed reason and the CLI's exit code; nothing changes
    status, result = fleet.module("web3", module="pricing", socket_dir=web3.sockets, expect_sha256="0" * 64,
                                  executable=str(HOTFIX), probation=0)
    assert (status, result["reason"], result["rc"], result["outcome"]) == ("FAILED", "sha256-mismatch", 3, "aborted")
    status, result = fleet.module("web3", module="pricing", socket_dir=web3.sockets, state="rolled_back",
                                  executable=str(HOTFIX))
    assert (status, result["changed"]) == ("SUCCESS", False), result  # no rollout to undo on web3
    status, result = fleet.module("web3", module="pricing", socket_dir=web3.sockets + "-gone", executable=str(HOTFIX))
    assert (status, result["reason"], result["rc"]) == ("FAILED", "unreachable", 4)
    web3.assert_runs(V1, "19 USD")
    assert set(map(tuple, web3.history().values())) == {()}

    # the other policy: keep the hosts already patched
    rc, out, counts = fleet.playbook(V3, "-e", "hotfix_on_failure=keep")
    assert rc != 0, out
    assert "Kept the fix on: web1" in out, out
    web1.assert_runs(V3, "19.99 EUR")
    web2.assert_runs(V1, "19 JPY")
    web3.assert_runs(V1, "19 USD")
    assert web3.module_file.stat().st_mtime_ns == web3_stat.st_mtime_ns


def test_blocked_change_restarts_each_host_then_nothing_to_do(fleet):
    before = {h.name: h.pids() for h in fleet.hosts}
    rc, out, counts = fleet.playbook(V4)
    assert rc == 0, out
    assert "restarting the service" in out
    for host in fleet.hosts:
        assert counts[host.name]["failed"] == 0, counts
        assert not set(host.pids()) & set(before[host.name]), host.name  # new processes
        host.assert_runs(V4, f"19.99 {host.currency} incl. tax")
    after = {h.name: h.pids() for h in fleet.hosts}

    rc, out, counts = fleet.playbook(V4)
    assert rc == 0, out
    assert {name: c["changed"] for name, c in counts.items()} == dict.fromkeys(HOSTS, 0)
    assert {h.name: h.pids() for h in fleet.hosts} == after


def test_readme_shows_the_playbook_the_tests_run():
    """README "Across hosts": its YAML is deploy-hotfix.yml word for word, except the `# ...` elisions."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Across hosts"):]
    shown = section[section.index("```yaml\n") + len("```yaml\n"):]
    shown = shown[:shown.index("```")]
    playbook = PLAYBOOK.read_text()
    at = 0
    chunks = re.split(r"^[ \t]*# \.\.\.\n", shown, flags=re.M)
    assert len(chunks) > 3
    for chunk in chunks:
        found = playbook.find(chunk, at)
        assert found >= 0, f"not in {PLAYBOOK.name} (in this order):\n{chunk}"
        at = found + len(chunk)
