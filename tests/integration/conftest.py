"""This layer runs with ``hotfix.install()`` in effect (baselines for modules the tests import)."""

import shutil

import pytest

import hotfix

from .service_helpers import RedisServer

hotfix.install()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port, persistence off (the Celery services' broker)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)")
    server = RedisServer(tmp_path)
    yield server
    server.close()


@pytest.fixture
def celery_client(redis_server):
    """A Celery app that sends tasks to the service under test through ``redis_server``."""
    celery = pytest.importorskip("celery")
    app = celery.Celery("hotfix-tests", broker=redis_server.url, backend=redis_server.url)
    app.conf.broker_connection_retry_on_startup = True
    yield app
    app.close()
