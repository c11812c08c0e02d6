"""The check `hotfix run --check greeting=checks:smoke` runs in each process after a patch of greeting."""

import greeting


def smoke() -> bool:
    return greeting.greet("x").endswith("x")
