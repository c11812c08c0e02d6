"""A Flask (WSGI) app with the hotfix admin routes mounted at ``/ops``.

    cd examples/flask_app && HOTFIX_TOKEN=... flask --app app run
    curl -H "Authorization: Bearer $HOTFIX_TOKEN" http://127.0.0.1:5000/ops/hotfix/v1/status
    hotfix --url http://127.0.0.1:5000/ops dry-run greetings

The admin routes answer under ``<mount>/hotfix/v1/``. The hosting server's
bind and TLS apply; pass ``allowed_hosts`` for a Host check. Apply is
synchronous (it returns after probation), so run a threaded server.
"""

from __future__ import annotations

import types

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import hotfix
import hotfix.admin

# After the framework (third-party code is not patched: no baseline needed, and imports after
# install() compile from source), before the application modules (their baselines are recorded).
hotfix.install()


def create_app(greetings: types.ModuleType | None = None, **admin_options) -> Flask:
    """The app; ``greetings`` is the module to serve (and patch), ``admin_options`` go to ``wsgi_app``."""
    if greetings is None:
        import greetings
    app = Flask(__name__)

    @app.get("/")
    def index() -> dict:
        return {"greeting": greetings.greet("world")}

    def smoke() -> bool:  # registered server-side: the endpoint never accepts code
        return greetings.greet("x").endswith("x")

    admin_options.setdefault("allowed_prefixes", [greetings.__name__])
    admin_options.setdefault("checks", {greetings.__name__: [smoke]})
    admin = hotfix.admin.wsgi_app(**admin_options)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/ops": admin})  # type: ignore[method-assign]
    app.extensions["hotfix_admin"] = admin
    return app


if __name__ == "__main__":
    application = create_app()
    print(f"token file: {application.extensions['hotfix_admin'].token_file or '(HOTFIX_TOKEN)'}", flush=True)
    application.run(threaded=True)
