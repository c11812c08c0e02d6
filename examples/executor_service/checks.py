"""`hotfix run --check pricing=checks:smoke`: run in each process after a patch of pricing."""

import pricing


def smoke() -> bool:
    return pricing.total(0) == 0 and pricing.total(1) > 0
