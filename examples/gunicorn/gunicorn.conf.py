"""gunicorn with 4 workers, each serving its own hotfix endpoint in a shared directory.

    HOTFIX_SOCKET_DIR=/run/myapp/hotfix gunicorn -c gunicorn.conf.py app:application
    # deploy the fixed greeting.py, then:
    hotfix rollout --socket-dir /run/myapp/hotfix dry-run greeting
    hotfix rollout --socket-dir /run/myapp/hotfix apply greeting

Every worker (``post_worker_init``) serves ``<dir>/<pid>.sock`` (0600, same-uid
peers only); they share the token in ``<dir>/token``, which the CLI reads by
default. ``hotfix rollout`` patches one worker (the canary), then the rest,
and rolls the patched ones back if any fails. A worker that gunicorn
restarts later imports the file on disk, so it runs the new code too.
"""

import os

import hotfix

hotfix.install()  # in the master, before any worker imports the app: workers inherit it

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
HOTFIX_SOCKET_DIR = os.environ.get("HOTFIX_SOCKET_DIR", "/run/myapp/hotfix")


def greeting_smoke() -> bool:
    import app  # the worker imported it already; this just looks it up

    return app.smoke()


#: Checks per module, run in the worker after each apply of that module.
HOTFIX_CHECKS = {"greeting": [greeting_smoke]}


def post_worker_init(worker):
    # Runs in each worker process once it has loaded the app (so the modules to
    # patch are imported when its socket appears). Not in the master: a thread
    # started there would not survive the fork. post_fork would also work, but
    # its socket would answer "not loaded" until the app is imported.
    import hotfix.admin

    worker.hotfix_admin = hotfix.admin.serve_socket_dir(
        HOTFIX_SOCKET_DIR, allowed_prefixes=["greeting", "app"], checks=HOTFIX_CHECKS)


def worker_exit(server, worker):
    admin = getattr(worker, "hotfix_admin", None)
    if admin is not None:
        admin.close()  # removes <pid>.sock
