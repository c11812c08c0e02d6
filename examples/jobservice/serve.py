"""The job service, patchable through the hotfix admin endpoint, until SIGTERM.

    python examples/jobservice/serve.py [--port 0] [--token-file PATH] [--socket PATH] [--audit PATH]

It starts the worker pool from ``service.py``, a producer that keeps
submitting orders (every fifth one empty, which the buggy ``billing.py``
cannot handle), and the admin endpoint. It prints the endpoint address and
where the token is, then runs until SIGTERM or Ctrl-C. Drive it with the CLI:

    export HOTFIX_URL=http://127.0.0.1:PORT HOTFIX_TOKEN_FILE=PATH
    cp examples/patches/billing_fixed.py examples/jobservice/billing.py
    hotfix status
    hotfix dry-run billing
    hotfix apply billing --expect-sha256 SHA

Checks cannot come over the wire (the endpoint never accepts code), so the
service registers them itself: ``checks={"billing": [billing_smoke]}`` runs
after every apply of ``billing`` and rolls the patch back if it fails.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import signal
import sys
import threading

import hotfix
import hotfix.admin

HERE = os.path.dirname(os.path.abspath(__file__))


def make_order(i: int) -> dict:
    items = [] if i % 5 == 0 else [{"qty": 1 + i % 3, "unit_price": 2.5} for _ in range(1 + i % 2)]
    return {"id": i, "items": items}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free one)")
    parser.add_argument("--socket", help="serve on this Unix socket instead of TCP")
    parser.add_argument("--token-file", help="where to write the generated token (unless HOTFIX_TOKEN is set)")
    parser.add_argument("--audit", help="append one JSON line per admin request to this file")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=50.0, help="orders submitted per second")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    hotfix.install()  # before importing billing: its baseline is recorded at import
    sys.path.insert(0, HERE)
    import billing
    from service import JobService

    def billing_smoke() -> bool:
        """Runs in this process after every apply of billing; False rolls the patch back."""
        if billing.line_total({"qty": 2, "unit_price": 1.5}) != 3.0:
            return False
        return billing.invoice({"id": -1, "region": "eu", "items": [{"qty": 2, "unit_price": 1.5}]})["total"] == 3.6

    service = JobService(workers=args.workers).start()
    stop = threading.Event()
    ids = itertools.count(1)

    def producer() -> None:
        while not stop.wait(1.0 / args.rate):
            service.submit(make_order(next(ids)))

    threading.Thread(target=producer, name="producer", daemon=True).start()
    server = hotfix.admin.serve(
        host=args.host, port=args.port, unix_socket=args.socket, token_file=args.token_file,
        allowed_prefixes=["billing", "service"], checks={"billing": [billing_smoke]}, audit=args.audit)
    print(f"jobservice running (pid {os.getpid()})", flush=True)
    print(f"hotfix admin endpoint: {server.url}", flush=True)
    print(f"token file: {server.token_file or '(token from HOTFIX_TOKEN)'}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log = logging.getLogger("jobservice")
    while not stop.wait(5.0):
        submitted, ok, failed = service.counts()
        log.info("jobs submitted %d in total; in the last 5 s: succeeded %d, failed %d", submitted, ok, failed)
        with service.lock:  # keep memory flat in a long run
            service.results.clear()
            service.errors.clear()
    server.close()
    service.stop()
    print("jobservice stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
