"""The application code this example patches."""


def greet(name: str) -> str:
    return f"Hello {name}"
