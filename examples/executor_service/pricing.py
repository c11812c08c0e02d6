"""The application code a rollout patches."""


def total(amount: int) -> int:
    return amount * 2
