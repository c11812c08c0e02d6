"""A FastAPI (ASGI) app with the hotfix admin routes mounted at ``/ops``.

    cd examples/fastapi_app && HOTFIX_TOKEN=... uvicorn app:app
    hotfix --url http://127.0.0.1:8000/ops status

The admin app runs each request in the loop's default executor, so an apply
(synchronous, it returns after probation) never blocks the event loop. The
same works with plain Starlette: ``Mount("/ops", app=hotfix.admin.asgi_app())``.
"""

from __future__ import annotations

import types

from fastapi import FastAPI

import hotfix
import hotfix.admin

# After the framework (third-party code is not patched: no baseline needed, and imports after
# install() compile from source), before the application modules (their baselines are recorded).
hotfix.install()


def create_app(greetings: types.ModuleType | None = None, **admin_options) -> FastAPI:
    """The app; ``greetings`` is the module to serve (and patch), ``admin_options`` go to ``asgi_app``."""
    if greetings is None:
        import greetings
    app = FastAPI()

    @app.get("/")
    def index() -> dict:
        return {"greeting": greetings.greet("world")}

    def smoke() -> bool:  # registered server-side: the endpoint never accepts code
        return greetings.greet("x").endswith("x")

    admin_options.setdefault("allowed_prefixes", [greetings.__name__])
    admin_options.setdefault("checks", {greetings.__name__: [smoke]})
    admin = hotfix.admin.asgi_app(**admin_options)
    app.mount("/ops", admin)
    app.state.hotfix_admin = admin
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    """``uvicorn app:app`` builds the app on first access (tests call ``create_app`` instead)."""
    global _app
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = create_app()
    return _app
