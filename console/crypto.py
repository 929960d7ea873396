"""Encryption at rest for server credentials (Fernet: AES-128-CBC + HMAC-SHA256).

Keys come from ``TALLY_ENCRYPTION_KEYS`` (first encrypts, all decrypt, so keys can be rotated), or are
derived from ``SECRET_KEY`` when that list is empty.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

PREFIX = "fernet:"


@cache
def _fernet() -> MultiFernet:
    keys = list(settings.ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(b"tally-credentials:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(key.encode()) for key in keys])


def encrypt_text(plain: str) -> str:
    return PREFIX + _fernet().encrypt(plain.encode()).decode()


def decrypt_text(stored: str) -> str:
    """Decrypt a stored value; raises ValueError when no configured key can read it."""
    if not stored.startswith(PREFIX):
        raise ValueError("value is not encrypted")
    try:
        return _fernet().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise ValueError("no configured encryption key can decrypt this value") from None


class EncryptedTextField(models.TextField):  # type: ignore[type-arg]
    """A text column whose value is encrypted in the database and plain in Python.

    Never filter on it: the ciphertext is randomised.
    """

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt_text(str(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value in (None, ""):
            return value
        try:
            return decrypt_text(value)
        except ValueError:
            # Unreadable after a key change: surface as empty rather than crash every page.
            return ""
