"""Test settings: the scalable configuration (Postgres + Redis).

The placeholders below only select the Postgres engine and the Redis channel layer; the session
fixtures in conftest.py start real throwaway servers and point these settings at them.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:1/tally")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:1/0")

from console.settings import *  # noqa: F403

ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests only
