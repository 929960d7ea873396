"""The console's HTTP side run exactly as deploy/systemd/tally-web.service runs it (command and
environment, tests/production.py), on the test PostgreSQL: each process keeps one database connection
across requests (TALLY_DB_PERSISTENT), the setting the unit's sizing and bench/publish_auth.py rely on."""

import urllib.error
import urllib.request

import psycopg
import pytest
from django.conf import settings

from tests.live_console import console_env
from tests.production import run_web, web_command, web_environment

APPLICATION_NAME = "tally-web-persistence-test"


@pytest.fixture
def web_port(db, tmp_path):
    with run_web(console_env(tmp_path, PGAPPNAME=APPLICATION_NAME, LOG_LEVEL="CRITICAL")) as port:
        yield port


def callback(port):
    """An on_publish_done for a server that does not exist: one database lookup, then 403."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/nginx-rtmp/999999/publish_done?secret=x",
                                     data=b"app=live&name=x&clientid=1&addr=127.0.0.1")  # fmt: skip
    try:
        urllib.request.urlopen(request, timeout=15)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def backends():
    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None,
                         dbname=db["NAME"], autocommit=True) as conn:  # fmt: skip
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME])
        return sorted(row[0] for row in rows)


def test_the_unit_sets_what_its_options_do_not():
    # uWSGI's --env does not reach the console (pip's uWSGI reads os.environ before applying it).
    assert "--env" not in web_command(8000)
    assert web_environment() == {"TALLY_DB_PERSISTENT": "1"}


def test_each_web_process_keeps_one_database_connection(web_port):
    assert [callback(web_port) for _ in range(5)] == [403] * 5
    first = backends()
    assert len(first) == 1, f"one web process, {len(first)} database connections"
    assert [callback(web_port) for _ in range(5)] == [403] * 5
    assert backends() == first
