"""The application code the rollout patches."""


def greet(name: str) -> str:
    return f"Hello {name}"
