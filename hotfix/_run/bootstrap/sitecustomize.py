"""hotfix bootstrap: ``hotfix run`` puts this directory first on PYTHONPATH.

Every Python process of the service (and every Python child it starts)
imports it at startup: it sets hotfix up from the ``HOTFIX_*`` environment
(``HOTFIX_DISABLED=1``: nothing), then runs the ``sitecustomize`` that this
one shadows, if there is one.
"""

import os
import sys


def _boot() -> None:
    if os.environ.get("HOTFIX_DISABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    try:
        from hotfix._run._bootstrap import boot

        boot()
    except Exception as exc:  # never stop the service from starting
        sys.stderr.write(f"hotfix: bootstrap failed in pid {os.getpid()}: {type(exc).__name__}: {exc}\n")


def _chain() -> None:
    """Run the next ``sitecustomize`` on sys.path (the one this file hides)."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    ours = sys.modules.get("sitecustomize")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # as site.py does: report and go on
        sys.stderr.write(f"Error in sitecustomize {spec.origin}: {type(exc).__name__}: {exc}\n")
        if ours is not None:
            sys.modules["sitecustomize"] = ours


_boot()
_chain()
