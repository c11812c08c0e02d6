"""Units of work as safepoints, without changing the application.

``hotfix run`` installs these hooks by itself (gunicorn, uvicorn, Django,
Celery); for other servers each is a one-line opt-in::

    application = hotfix.integrations.WSGIMiddleware(application)
    app = hotfix.integrations.ASGIMiddleware(app)
    pool = hotfix.integrations.cover_executor(ThreadPoolExecutor(8))
    hotfix.integrations.connect_celery()
"""

from ._asgi import ASGIMiddleware
from ._celery import connect_celery
from ._executor import cover_executor, cover_executors, covered
from ._hooks import enable_hooks
from ._unit import UnitOfWork
from ._wsgi import WSGIMiddleware

__all__ = ["ASGIMiddleware", "UnitOfWork", "WSGIMiddleware", "connect_celery", "cover_executor",
           "cover_executors", "covered", "enable_hooks"]
