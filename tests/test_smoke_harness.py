from django.db import connection


def test_database_is_real_postgres(db):
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW fsync")
        assert cursor.fetchone()[0] == "off"
