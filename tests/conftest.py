"""Session harness: a real PostgreSQL and a real Redis, started on free loopback ports.

Every test that touches the database runs on that PostgreSQL; channels and Celery use that Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from pytest_postgresql import factories as pg_factories
from pytest_redis import factories as redis_factories

from tests import factories

TESTS_DIR = Path(__file__).resolve().parent
pytest_plugins = ["tests.nginx"]  # nginx_factory, ffmpeg_factory

postgresql_proc = pg_factories.postgresql_proc(
    executable=str(TESTS_DIR / "bin" / "pg_ctl"),
    host="127.0.0.1",
    port=None,
    postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
)
redis_proc = redis_factories.redis_proc(host="127.0.0.1", port=None)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgresql_proc: Any) -> None:
    settings.DATABASES["default"].update(
        HOST=postgresql_proc.host,
        PORT=postgresql_proc.port,
        USER=postgresql_proc.user,
        PASSWORD=postgresql_proc.password or "",
        NAME="tally",
    )


@pytest.fixture(scope="session", autouse=True)
def real_redis(redis_proc: Any) -> str:
    """Point the channel layer and the Celery broker at the throwaway Redis."""
    from channels.layers import channel_layers

    from console.celery import app

    url = f"redis://{redis_proc.host}:{redis_proc.port}/0"
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}
    }
    channel_layers.backends.clear()
    app.conf.broker_url = url
    return url


@pytest.fixture
def admin(db: Any) -> Any:
    return factories.make_user("admin", "admin")


@pytest.fixture
def operator(db: Any) -> Any:
    return factories.make_user("operator", "operator")


@pytest.fixture
def viewer(db: Any) -> Any:
    return factories.make_user("viewer", "viewer")


@pytest.fixture
def outsider(db: Any) -> Any:
    return factories.make_user("outsider", None)


@pytest.fixture(scope="session", autouse=True)
def _close_stray_connections(django_db_setup: Any, django_db_blocker: Any) -> Any:
    """Websocket and worker tests leave connections open in helper threads; end them before the
    test database is dropped."""
    yield
    from django.db import DatabaseError, connection

    if not connection.settings_dict["NAME"].startswith("test_"):
        return  # no test used the database
    try:
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    except DatabaseError:
        pass  # best effort: the worst case is a warning when the test database is dropped


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Browser tests last: Playwright's sync API leaves an event loop behind that async tests trip on."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Expose each phase's report on the test item (browser fixtures screenshot failures)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
