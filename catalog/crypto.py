"""Encryption at rest for upstream provider secrets (Fernet: AES-128-CBC + HMAC-SHA256)."""

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretDecryptionError(Exception):
    pass


@lru_cache(maxsize=4)
def _fernet(material: str) -> Fernet:
    try:
        return Fernet(material.encode())
    except ValueError:
        # Not a Fernet key: derive one, so any secret string (or SECRET_KEY) serves as the key.
        digest = hashlib.sha256(b"ruapi-field-encryption:" + material.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))


def _current() -> Fernet:
    return _fernet(settings.RUAPI_FIELD_ENCRYPTION_KEY or settings.SECRET_KEY)


def encrypt_secret(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError("stored secret cannot be decrypted with the configured key") from exc


def mask_secret(plaintext: str) -> str:
    """What may be shown of a secret: its last four characters."""
    return f"…{plaintext[-4:]}" if len(plaintext) > 8 else "…"
