"""The application code a rollout patches."""


def greet(name: str) -> str:
    return f"Hello {name}"
