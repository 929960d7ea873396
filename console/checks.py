"""System checks: configuration problems are reported by ``manage.py check``, not by crashes later."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for index, key in enumerate(settings.ENCRYPTION_KEYS):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(
                checks.Error(
                    f"TALLY_ENCRYPTION_KEYS entry {index + 1} is not a valid Fernet key.",
                    hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'",
                    id="console.E001",
                )
            )
    return errors


@checks.register(checks.Tags.compatibility, deploy=True)
def check_scalable_mode(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    if settings.PRODUCTION and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        messages.append(
            checks.Warning(
                "Production runs on the embedded SQLite database.",
                hint="Set DATABASE_URL to a PostgreSQL database.",
                id="console.W001",
            )
        )
    if settings.PRODUCTION and not settings.REDIS_URL:
        messages.append(
            checks.Warning(
                "Production has no REDIS_URL: no Celery worker, and websockets reach only this process.",
                hint="Set REDIS_URL and run the worker and beat services.",
                id="console.W002",
            )
        )
    return messages
