"""End-to-end demo: fix a bug in a running job service without restarting it.

Run:  bash scripts/demo.sh

What it shows, in order:
1. the bug happening (empty orders make jobs fail),
2. the dry-run report of the fix, before anything changes,
3. the fix applied while producers keep submitting jobs (none lost),
4. a rejected patch (a syntax error: nothing changes),
5. a patch that fails its check and is rolled back automatically,
6. a patch that crashes during probation and is rolled back by itself
   (the worker catches the error; probation still sees it leave patched code).
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import hotfix

HERE = Path(__file__).resolve().parent
RULE = "-" * 72


def banner(text: str) -> None:
    print(f"\n{RULE}\n{text}\n{RULE}", flush=True)


def make_orders(ids, empty_every: int = 5):
    rng = random.Random(7)
    for i in ids:
        items = [] if i % empty_every == 0 else [
            {"qty": rng.randint(1, 5), "unit_price": rng.choice([1.5, 2.0, 9.99])} for _ in range(rng.randint(1, 3))
        ]
        yield {"id": i, "items": items}


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="  log: %(name)s %(levelname)s %(message)s")
    hotfix.install()  # from here on, every imported module gets a baseline
    workdir = Path(tempfile.mkdtemp(prefix="hotfix-demo-"))
    shutil.copytree(HERE / "jobservice", workdir / "jobservice")
    live_file = workdir / "jobservice" / "billing.py"
    sys.path.insert(0, str(workdir / "jobservice"))
    import billing
    from service import JobService

    ids = itertools.count(1)
    service = JobService(workers=4).start()

    banner("1. The service is running with a bug")
    for order in make_orders(itertools.islice(ids, 50)):
        service.submit(order)
    service.drain()
    submitted, ok, failed = service.counts()
    sample = next(iter(service.errors.items()))
    print(f"jobs submitted {submitted}, succeeded {ok}, FAILED {failed}")
    print(f"e.g. job {sample[0]}: {sample[1]}")

    banner("2. The operator deploys the fix on disk and asks for a dry run")
    shutil.copyfile(HERE / "patches" / "billing_fixed.py", live_file)
    report = hotfix.dry_run("billing")
    print(report)

    banner("3. Apply it while producers keep submitting jobs")
    invoice_fn = billing.invoice
    old_code = billing.invoice.__code__
    stop = threading.Event()

    def producer() -> None:
        while not stop.is_set():
            for order in make_orders(itertools.islice(ids, 5)):
                service.submit(order)
            stop.wait(0.002)

    feeders = [threading.Thread(target=producer, daemon=True) for _ in range(2)]
    for t in feeders:
        t.start()
    failed_before = service.counts()[2]

    def smoke_check() -> bool:
        return billing.invoice({"id": 0, "items": []})["average"] == 0.0

    patch = hotfix.apply("billing", checks=[smoke_check], probation=1.0, expect_sha256=report.source.disk.sha256)
    print(f"patch {patch.id}: {patch.status}; {patch.hold}")
    print(f"swapped: {', '.join(sorted({e.qualname for e in patch.events if e.action == 'code'}))}")
    print(f"same function object: {billing.invoice is invoice_fn}; new code: {billing.invoice.__code__ is not old_code}")
    marker = service.counts()
    stop.wait(0.3)
    stop.set()
    for t in feeders:
        t.join()
    service.drain()
    submitted, ok, failed = service.counts()
    print(f"jobs submitted {submitted}, succeeded {ok}, failed {failed} "
          f"(new failures since the patch: {failed - marker[2]}; failures before it: {failed_before})")
    print(f"none lost: submitted == succeeded + failed -> {submitted == ok + failed}")

    banner("4. A broken file is refused; nothing changes")
    before = billing.invoice.__code__
    shutil.copyfile(HERE / "patches" / "billing_syntax_error.py", live_file)
    try:
        hotfix.apply("billing", probation=0)
    except hotfix.PatchRejected as exc:
        print(f"PatchRejected: {exc}")
        print(f"report verdict: {exc.report.verdict}; code unchanged: {billing.invoice.__code__ is before}")

    banner("5. A regression fails its check and is rolled back automatically")
    shutil.copyfile(HERE / "patches" / "billing_regression.py", live_file)

    def totals_check() -> bool:
        return billing.invoice({"id": 0, "items": [{"qty": 3, "unit_price": 2.0}]})["total"] == 7.2

    line_before = billing.line_total.__code__
    try:
        hotfix.apply("billing", checks=[totals_check], probation=0)
    except hotfix.PatchRolledBack as exc:
        print(f"PatchRolledBack: {exc}")
        print(f"previous code restored (same object): {billing.line_total.__code__ is line_before}")

    banner("6. A patch that crashes in production is rolled back during probation")
    shutil.copyfile(HERE / "patches" / "billing_crashes.py", live_file)
    stop.clear()
    feeder = threading.Thread(target=producer, daemon=True)
    feeder.start()
    try:
        hotfix.apply("billing", probation=5.0)
    except hotfix.PatchRolledBack as exc:
        print(f"PatchRolledBack: {exc}")
    finally:
        stop.set()
        feeder.join()
    print(f"previous code restored (same object): {billing.invoice.__code__ is before}")

    banner("History")
    for record in hotfix.history():
        if isinstance(record, hotfix.Patch):
            print(f"patch    {record.id} {record.status:9} {','.join(record.modules)} stall={record.stall_seconds * 1e3:.3f}ms")
        else:
            print(f"rollback {record.patch_id} {record.reason}: {record.detail}")
    service.drain()
    service.stop()
    submitted, ok, failed = service.counts()
    print(f"\nfinal: submitted {submitted}, succeeded {ok}, failed {failed}, lost {submitted - ok - failed}")
    shutil.rmtree(workdir, ignore_errors=True)
    return operator_demo()


def operator_demo() -> int:
    """The same through the admin endpoint and the CLI, against a separate service process."""
    import json
    import os
    import subprocess

    banner("7. The operator's way: a separate service, patched with the `hotfix` CLI")
    workdir = Path(tempfile.mkdtemp(prefix="hotfix-demo-svc-"))
    shutil.copytree(HERE / "jobservice", workdir / "jobservice")
    live_file = workdir / "jobservice" / "billing.py"
    token_file = workdir / "token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTFIX_")}
    service = subprocess.Popen(
        [sys.executable, str(workdir / "jobservice" / "serve.py"), "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = None
        for line in service.stdout:
            print(f"  service: {line.rstrip()}")
            if line.startswith("hotfix admin endpoint:"):
                url = line.split(":", 1)[1].strip()
            if line.startswith("token file:"):
                break
        if url is None:
            print("the service did not start")
            return 1
        env.update(HOTFIX_URL=url, HOTFIX_TOKEN_FILE=str(token_file))

        def cli(*args: str) -> tuple[int, str]:
            done = subprocess.run([sys.executable, "-m", "hotfix", *args], capture_output=True, text=True,
                                  env=env, timeout=120)
            return done.returncode, done.stdout

        def show(*args: str) -> int:
            code, out = cli(*args)
            print(f"$ hotfix {' '.join(args)}    (exit {code})")
            print("\n".join("  " + line for line in out.rstrip().splitlines()))
            return code

        shutil.copyfile(HERE / "patches" / "billing_fixed.py", live_file)
        show("dry-run", "billing")
        sha = json.loads(cli("dry-run", "billing", "--json")[1])["result"]["report"]["source"]["disk"]["sha256"]
        show("apply", "billing", "--expect-sha256", sha, "--probation", "1")
        shutil.copyfile(HERE / "patches" / "billing_syntax_error.py", live_file)
        show("apply", "billing", "--probation", "1")
        shutil.copyfile(HERE / "patches" / "billing_regression.py", live_file)
        show("apply", "billing", "--probation", "1")
        show("history")
    finally:
        service.terminate()
        service.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
